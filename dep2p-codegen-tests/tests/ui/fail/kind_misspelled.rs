use dep2p_runtime::{service, Sender};

#[service]
pub trait Feed {
    #[server_streaming]
    async fn follow(&self, topic: String, out: Sender<String>);
    #[notifiy]
    async fn poke(&self);
}

fn main() {}
