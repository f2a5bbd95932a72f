use dep2p_runtime::service;

#[service]
pub trait Chat {
    async fn login(&self, user: &str, tags: Vec<&'static [u8]>) -> u64;
}

fn main() {}
