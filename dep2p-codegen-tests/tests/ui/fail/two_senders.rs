use dep2p_runtime::{service, Receiver, Sender};

#[service]
pub trait Chat {
    #[bidi]
    async fn talk(&self, incoming: Receiver<String>, out: Sender<String>, more: Sender<u32>);
}

fn main() {}
