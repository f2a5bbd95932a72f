use dep2p_runtime::{service, Sender};

#[service]
pub trait Chat {
    async fn history(&self, room: String, out: Sender<String>);
}

fn main() {}
