use dep2p_runtime::service;

#[service(name = "chat.v1", name = "chat.v2")]
pub trait Chat {
    async fn login(&self, user: String) -> u64;
}

fn main() {}
