//! A program that only calls services builds with every warning denied: the trait it never
//! implements is not reported unused, and deprecated methods and traits warn only where the
//! program uses them, not in the generated code.
#![deny(warnings, unused)]

use dep2p_runtime::service;

#[service]
trait Greeter {
    async fn hello(&self, name: String) -> String;
    /// Deprecated: the client method is too, so a caller is warned.
    #[deprecated(note = "use `hello`")]
    async fn hi(&self, name: String) -> String;
}

/// A deprecated service: its client and server types are deprecated too.
#[deprecated(note = "use `Greeter`")]
#[service]
trait Old {
    async fn hello(&self, name: String) -> String;
}

fn main() {
    let _ = GreeterClient::hello;
    #[allow(deprecated)]
    let _ = (GreeterClient::hi, OldClient::hello);
}
