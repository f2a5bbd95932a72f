//! Names the generated code introduces cannot clash with the user's: arguments named like
//! its variables, a message type named like the server's type parameter, and client and
//! server types renamed because the default names are taken.

use dep2p_runtime::service;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct S(pub u32);

/// Taken: the generated client is named `Hello` instead.
pub struct GreeterClient;
/// Taken: the generated server is named `HelloService` instead.
pub struct GreeterServer;

#[service(client = "Hello", server = "HelloService")]
pub trait Greeter {
    async fn greet(&self, __svc: String, __call: u32, _: u8, __arg2: S) -> S;
    #[notify]
    async fn tell(&self, _: S, __arg1: u8);
}

struct Impl;

impl Greeter for Impl {
    async fn greet(&self, svc: String, call: u32, _: u8, arg: S) -> S {
        S(svc.len() as u32 + call + arg.0)
    }

    async fn tell(&self, _: S, _: u8) {}
}

fn main() {
    let _builder = dep2p_runtime::Node::builder().serve(HelloService::new(Impl));
    let _ = (Hello::greet, Hello::tell, Hello::SERVICE_NAME);
    let _ = (GreeterClient, GreeterServer);
}
