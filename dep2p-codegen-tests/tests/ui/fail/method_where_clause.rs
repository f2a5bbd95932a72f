use dep2p_runtime::service;

#[service]
pub trait Store {
    async fn get(&self, key: String) -> Option<String>
    where
        Self: Sized;
}

fn main() {}
