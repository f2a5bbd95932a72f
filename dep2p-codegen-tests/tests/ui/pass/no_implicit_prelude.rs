//! Generated code compiles in a module without the implicit prelude.

mod service {
    #![no_implicit_prelude]

    #[::dep2p_runtime::service]
    pub trait Plain {
        async fn get(&self, key: ::std::string::String) -> ::std::option::Option<u64>;
        #[notify]
        async fn note(&self, what: u8);
        #[server_stream]
        async fn list(&self, out: ::dep2p_runtime::Sender<u8>);
        #[client_stream]
        async fn push(&self, items: ::dep2p_runtime::Receiver<u8>) -> u64;
        #[bidi]
        async fn both(
            &self,
            incoming: ::dep2p_runtime::Receiver<u8>,
            out: ::dep2p_runtime::Sender<u8>,
        );
    }
}

struct Impl;

impl service::Plain for Impl {
    async fn get(&self, _key: String) -> Option<u64> {
        None
    }
    async fn note(&self, _what: u8) {}
    async fn list(&self, _out: dep2p_runtime::Sender<u8>) {}
    async fn push(&self, _items: dep2p_runtime::Receiver<u8>) -> u64 {
        0
    }
    async fn both(&self, _incoming: dep2p_runtime::Receiver<u8>, _out: dep2p_runtime::Sender<u8>) {}
}

fn main() {
    let _server = service::PlainServer::new(Impl);
}
