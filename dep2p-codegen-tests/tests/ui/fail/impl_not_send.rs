//! The futures of a service are `Send`, so the server can run them on any thread.

use std::rc::Rc;

use dep2p_runtime::service;

#[service]
pub trait Chat {
    async fn login(&self, user: String) -> u64;
}

struct Impl;

impl Chat for Impl {
    async fn login(&self, user: String) -> u64 {
        let rc = Rc::new(user);
        std::future::ready(()).await;
        rc.len() as u64
    }
}

fn main() {}
