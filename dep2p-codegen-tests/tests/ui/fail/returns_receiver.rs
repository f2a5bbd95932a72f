use dep2p_runtime::{service, Receiver};

#[service]
pub trait Feed {
    async fn follow(&self, topic: String) -> Receiver<String>;
}

fn main() {}
