use dep2p_runtime::{service, Receiver, Sender};

#[service]
pub trait Game {
    #[datagram]
    async fn positions(&self, out: Sender<f32>);

    #[datagram]
    async fn moves(&self, input: Receiver<f32>);
}

fn main() {}
