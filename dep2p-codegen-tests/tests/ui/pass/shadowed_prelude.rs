//! The generated code does not depend on the names in scope: every prelude name it could
//! use is shadowed here.
#![allow(dead_code, non_camel_case_types)]

struct Result;
struct Ok;
struct Err;
struct Option;
struct Some;
struct None;
struct Box;
struct Vec;
struct String;
struct Send;
struct Sync;
struct Sized;
struct Clone;
struct Debug;
struct Default;
struct Fn;
struct FnOnce;
struct Future;
struct IntoFuture;
struct Into;
struct From;
struct Arc;
struct PhantomData;
struct Connection;
struct Service;
struct Unary;
struct Notify;
struct assert_message;
mod core {}
mod serde {}
mod dep2p_runtime {}
mod __private {}

use ::dep2p_runtime::{service, Receiver, Sender};

#[service]
pub trait Shadowed {
    async fn get(&self, key: ::std::string::String) -> ::std::option::Option<u64>;
    #[notify]
    async fn note(&self, what: u8);
    #[server_stream]
    async fn list(&self, out: Sender<u8>) -> ::std::result::Result<(), ::std::string::String>;
    #[client_stream]
    async fn push(&self, items: Receiver<u8>) -> u64;
    #[bidi]
    async fn both(&self, incoming: Receiver<u8>, out: Sender<u8>);
}

struct Impl;

impl Shadowed for Impl {
    async fn get(&self, _key: ::std::string::String) -> ::std::option::Option<u64> {
        ::std::option::Option::None
    }
    async fn note(&self, _what: u8) {}
    async fn list(&self, _out: Sender<u8>) -> ::std::result::Result<(), ::std::string::String> {
        ::std::result::Result::Ok(())
    }
    async fn push(&self, _items: Receiver<u8>) -> u64 {
        0
    }
    async fn both(&self, _incoming: Receiver<u8>, _out: Sender<u8>) {}
}

fn main() {
    let _server = ShadowedServer::new(Impl);
}
