use dep2p_runtime::service;

#[service]
pub trait Files {
    #[client_stream]
    async fn upload(&self, name: String, chunk: Vec<u8>) -> u64;
}

fn main() {}
