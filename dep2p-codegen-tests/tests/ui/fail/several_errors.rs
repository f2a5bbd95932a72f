//! Every mistake is reported in one compile, and the trait itself is kept: the impl below
//! compiles against it.

use dep2p_runtime::service;

#[service(version = 2)]
pub trait Chat {
    fn login(&self, user: String) -> u64;

    #[notify]
    async fn typing(&mut self, user: String) -> bool;

    async fn new(&self);
}

struct Impl;

impl Chat for Impl {
    fn login(&self, _user: String) -> u64 {
        0
    }
    async fn typing(&mut self, _user: String) -> bool {
        true
    }
    async fn new(&self) {}
}

fn main() {}
