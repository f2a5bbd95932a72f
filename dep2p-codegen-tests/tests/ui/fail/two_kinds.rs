use dep2p_runtime::{service, Sender};

#[service]
pub trait Chat {
    #[notify]
    #[server_stream]
    async fn history(&self, out: Sender<String>);
}

fn main() {}
