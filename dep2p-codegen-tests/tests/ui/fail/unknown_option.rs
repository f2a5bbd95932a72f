use dep2p_runtime::service;

#[service(nmae = "chat.v1")]
pub trait Chat {
    async fn login(&self, user: String) -> u64;
}

fn main() {}
