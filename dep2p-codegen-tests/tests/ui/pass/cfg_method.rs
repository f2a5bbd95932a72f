//! `#[cfg]` on a method carries over to its generated counterparts.

use dep2p_runtime::{service, Kind, MethodInfo, Service};

#[service]
pub trait Configured {
    async fn always(&self) -> u32;

    #[cfg(any())]
    async fn never(&self, x: NotEvenAType) -> u32;

    #[cfg(all())]
    #[notify]
    async fn enabled(&self);
}

struct Impl;

impl Configured for Impl {
    async fn always(&self) -> u32 {
        1
    }
    async fn enabled(&self) {}
}

fn main() {
    let server = ConfiguredServer::new(Impl);
    // The methods listed for reflection are the methods compiled in.
    assert_eq!(
        server.methods(),
        [
            MethodInfo::new("always", Kind::Unary),
            MethodInfo::new("enabled", Kind::Notify),
        ]
    );
    let _ = ConfiguredClient::always;
    let _ = ConfiguredClient::enabled;
}
