//! Deprecation on a method or a trait reaches the client a caller uses.
#![deny(deprecated)]

use dep2p_runtime::service;

#[service]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
    #[deprecated(note = "use `hello`")]
    async fn hi(&self, name: String) -> String;
}

#[deprecated(note = "use `Greeter`")]
#[service]
pub trait Old {
    async fn hello(&self, name: String) -> String;
}

fn main() {
    let _ = GreeterClient::hello;
    let _ = GreeterClient::hi;
    let _ = OldClient::hello;
}
