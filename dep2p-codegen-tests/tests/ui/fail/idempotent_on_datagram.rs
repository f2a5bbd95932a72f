use dep2p_runtime::service;

#[service]
pub trait Game {
    #[datagram]
    #[idempotent]
    async fn position(&self, x: f32);
}

fn main() {}
