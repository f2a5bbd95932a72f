use dep2p_runtime::service;

#[service]
pub trait Chat {
    async fn login(&self, user: impl Into<String>) -> u64;
}

fn main() {}
