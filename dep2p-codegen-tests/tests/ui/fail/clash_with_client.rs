use dep2p_runtime::service;

#[service]
pub trait Factory {
    async fn new(&self, name: String) -> u64;
    async fn connection(&self) -> String;
}

fn main() {}
