use dep2p_runtime::service;

#[service(name = chat)]
pub trait Chat {
    async fn login(&self, user: String) -> u64;
}

fn main() {}
