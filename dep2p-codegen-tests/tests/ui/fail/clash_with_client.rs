use dep2p_runtime::service;

#[service]
pub trait Factory {
    async fn new(&self, name: String) -> u64;
    async fn connection(&self) -> String;
    async fn target(&self) -> String;
    #[allow(non_snake_case)]
    async fn SERVICE_NAME(&self) -> String;
}

fn main() {}
