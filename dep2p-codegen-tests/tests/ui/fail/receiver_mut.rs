use dep2p_runtime::service;

#[service]
pub trait Chat {
    async fn login(&mut self, user: String) -> u64;
}

fn main() {}
