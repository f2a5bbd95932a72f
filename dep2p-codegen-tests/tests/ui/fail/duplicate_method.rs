use dep2p_runtime::service;

#[service]
pub trait Chat {
    async fn login(&self, user: String) -> u64;
    async fn r#login(&self, user: String, password: String) -> u64;
}

fn main() {}
