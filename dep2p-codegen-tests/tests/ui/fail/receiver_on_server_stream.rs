use dep2p_runtime::{service, Receiver, Sender};

#[service]
pub trait Chat {
    #[server_stream]
    async fn history(&self, out: Sender<String>, incoming: Receiver<String>);
}

fn main() {}
