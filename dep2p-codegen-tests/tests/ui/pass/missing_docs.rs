//! Every public generated item is documented, whether or not the user's methods are.
#![deny(missing_docs)]

//! A documented crate.

use dep2p_runtime::{service, Sender};

/// A documented service.
#[service]
pub trait Documented {
    /// A documented method.
    async fn documented(&self, x: u32) -> u32;
    #[allow(missing_docs)]
    async fn undocumented(&self);
    #[allow(missing_docs)]
    #[server_stream]
    async fn stream(&self, out: Sender<u32>);
}

/// A documented generic service.
#[service]
pub trait DocumentedGeneric<T> {
    /// A documented method.
    async fn get(&self) -> T;
}

fn main() {}
