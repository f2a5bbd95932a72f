use dep2p_runtime::service;

#[service]
pub trait Store {
    async fn put<T: serde::Serialize>(&self, value: T);
}

fn main() {}
