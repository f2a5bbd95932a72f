use dep2p_runtime::service;

#[service]
pub trait Store {
    #[idempotnet]
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
