use dep2p_runtime::{service, Sender};

#[service]
pub trait Chat {
    #[server_stream]
    #[idempotent]
    async fn history(&self, out: Sender<String>);
}

fn main() {}
