//! Many arguments of many types, and an explicit `-> ()` on a notification.

use std::collections::HashMap;

use dep2p_runtime::{service, Receiver, Sender};

#[service]
pub trait Many {
    async fn all(
        &self,
        a: u8,
        b: String,
        c: Vec<u64>,
        d: Option<(i32, bool)>,
        e: HashMap<String, Vec<u8>>,
        f: [u16; 4],
        g: (),
        _: char,
    ) -> Result<Vec<String>, String>;

    #[notify]
    async fn unit(&self, a: u8, b: u8) -> ();

    #[bidi]
    async fn streams(&self, a: u8, incoming: Receiver<(u8, String)>, b: u8, out: Sender<Vec<u8>>);
}

struct Impl;

impl Many for Impl {
    async fn all(
        &self,
        _a: u8,
        _b: String,
        _c: Vec<u64>,
        _d: Option<(i32, bool)>,
        _e: HashMap<String, Vec<u8>>,
        _f: [u16; 4],
        _g: (),
        _h: char,
    ) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    async fn unit(&self, _a: u8, _b: u8) {}

    async fn streams(
        &self,
        _a: u8,
        _incoming: Receiver<(u8, String)>,
        _b: u8,
        _out: Sender<Vec<u8>>,
    ) {
    }
}

fn main() {
    let _server = ManyServer::new(Impl);
    let _ = ManyClient::all;
    let _ = ManyClient::unit;
    let _ = ManyClient::streams;
}
