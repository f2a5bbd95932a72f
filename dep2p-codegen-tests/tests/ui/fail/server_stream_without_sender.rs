use dep2p_runtime::service;

#[service]
pub trait Chat {
    #[server_stream]
    async fn history(&self, room: String) -> Vec<String>;
}

fn main() {}
