//! Methods without arguments or return values.

use dep2p_runtime::{service, Sender};

#[service]
pub trait Health {
    async fn ping(&self);
    #[notify]
    async fn poke(&self);
    #[server_stream]
    async fn watch(&self, out: Sender<u32>);
}

struct Impl;

impl Health for Impl {
    async fn ping(&self) {}
    async fn poke(&self) {}
    async fn watch(&self, _out: Sender<u32>) {}
}

fn main() {
    let _server = HealthServer::new(Impl);
    let _: fn(&HealthClient) -> dep2p_runtime::Unary<(), ()> = HealthClient::ping;
}
