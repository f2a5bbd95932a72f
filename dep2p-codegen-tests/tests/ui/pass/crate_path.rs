//! A crate that re-exports the runtime points the generated code at its re-export.
#![no_implicit_prelude]

mod my_framework {
    pub use ::dep2p_runtime as rpc;
}

mod plain {
    #![no_implicit_prelude]

    #[crate::my_framework::rpc::service(crate = "crate::my_framework::rpc")]
    pub trait Renamed {
        async fn get(&self, key: u32) -> u64;
    }
}

mod absolute {
    #![no_implicit_prelude]

    extern crate dep2p_runtime as renamed_runtime;

    #[renamed_runtime::service(crate = "renamed_runtime", name = "renamed.v2")]
    pub trait Absolute {
        #[notify]
        async fn tell(&self, what: u32);
    }
}

struct Impl;

impl plain::Renamed for Impl {
    async fn get(&self, key: u32) -> u64 {
        ::core::convert::From::from(key)
    }
}

impl absolute::Absolute for Impl {
    async fn tell(&self, _what: u32) {}
}

fn main() {
    let _ = plain::RenamedServer::new(Impl);
    let _ = absolute::AbsoluteServer::new(Impl);
    ::std::assert_eq!(absolute::AbsoluteClient::SERVICE_NAME, "renamed.v2");
}
