use dep2p_runtime::service;

#[service]
pub trait Game {
    #[datagram]
    async fn position(&self, x: f32, y: f32) -> bool;
}

fn main() {}
