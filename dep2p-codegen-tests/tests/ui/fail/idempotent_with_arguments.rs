use dep2p_runtime::service;

#[service]
pub trait Store {
    #[idempotent(always)]
    async fn get(&self, key: String) -> Option<String>;
    #[idempotent]
    #[idempotent]
    async fn len(&self) -> u64;
}

fn main() {}
