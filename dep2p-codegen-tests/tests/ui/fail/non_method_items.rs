use dep2p_runtime::service;

#[service]
pub trait Chat {
    const LIMIT: usize;
    type Message;
    async fn login(&self, user: String) -> u64;
}

fn main() {}
