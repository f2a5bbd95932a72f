//! Typed, symmetric RPC over QUIC.
//!
//! A service is a Rust trait annotated with [`#[service]`](service). The attribute generates a
//! typed client (`{Trait}Client`) and a server (`{Trait}Server`) that a [`Node`] serves. Every
//! call travels on its own QUIC stream of a mutually authenticated connection, encoded with
//! postcard; either side of a connection can call the other.
//!
//! ```
//! use dep2p_runtime::{service, Node};
//!
//! #[service]
//! pub trait Greeter {
//!     /// Says hello.
//!     async fn hello(&self, name: String) -> String;
//! }
//!
//! struct Polite;
//!
//! impl Greeter for Polite {
//!     async fn hello(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dep2p_runtime::Error> {
//! let server = Node::builder()
//!     .serve(GreeterServer::new(Polite))
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let client = Node::builder().bind("127.0.0.1:0").await?;
//! let conn = client.connect(server.local_addr(), server.id()).await?;
//!
//! let greeter = GreeterClient::new(conn);
//! assert_eq!(greeter.hello("Ada".into()).await?, "Hello, Ada!");
//! # Ok(())
//! # }
//! ```
//!
//! The six kinds of method, their errors, deadlines, cancellation and limits are described in
//! the crate's README; the wire protocol in `docs/PROTOCOL.md`.
#![warn(missing_docs)]

// Layers, each importing only those above it in this list (`docs` of the crate's layout):
// wire; addresses, errors, ids, response metadata and call outcomes; config, keys, TLS and
// client hooks; deadlines and streams; the connection; calling and serving (with datagrams,
// server layers and the built-in reflection and health services); the node; reconnecting
// peers, sets of peers, retries and the metrics layer.
mod wire;

mod addr;
mod error;
mod id;
mod metadata;
mod outcome;

mod config;
mod gate;
mod identity;
mod intercept;
mod key_file;
mod tls;

mod deadline;
mod hold;
mod state;
mod stream;

mod connection;
mod shared;

mod call;
mod context;
mod datagram;
mod dispatch;
mod health;
mod incoming;
mod introspection;
mod layer;
#[cfg(feature = "opentelemetry")]
mod otel;
mod receive;
mod service;
mod target;
mod trace;

mod node;

mod balance;
#[cfg(feature = "metrics")]
pub mod metrics;
mod peer;
mod retry;

#[cfg(test)]
mod proptests;

pub use addr::{NodeAddr, ParseNodeAddrError};
pub use balance::{PeerChange, PeerSet};
pub use call::{
    Bidi, BidiKind, Call, CallResult, ClientStreaming, ClientStreamingKind, Notify, NotifyKind,
    ServerStreaming, ServerStreamingKind, Unary, UnaryKind,
};
pub use connection::{Connection, Direction};
pub use context::CallContext;
pub use datagram::{Datagram, DatagramContext, DatagramStats, IncomingDatagram, PathStats};
pub use error::Error;
pub use health::{HealthReporter, HealthStatus};
pub use id::{NodeId, ParseNodeIdError};
pub use identity::SecretKey;
pub use incoming::{CallFuture, IncomingCall};
pub use intercept::{CallInfo, ClientLayer, RequestMetadata};
pub use introspection::{
    Health, HealthClient, HealthServer, Reflection, ReflectionClient, ReflectionServer,
};
pub use layer::{Handler, InfallibleCall, Layered};
pub use metadata::{Metadata, MetadataResult, ResponseMetadata};
pub use node::{ConnectionEvent, Events, Node, NodeBuilder, WeakNode};
pub use outcome::Outcome;
pub use peer::{Peer, PeerState};
pub use retry::RetryPolicy;
pub use service::{MethodInfo, Renamed, Service, ServiceInfo};
pub use stream::{Receiver, Response, Sender};
pub use target::Target;
pub use wire::{Compression, Kind, ALPN, ALPN_V1};

/// The QUIC implementation underneath, for naming its types (see [`Connection::quic`]).
pub use quinn;

/// tower's `Layer` trait, which server-side layers implement (see [`Layered`]).
pub use tower_layer;
/// tower's `Service` trait, which the services of server-side layers implement (see
/// [`Layered`]).
pub use tower_service;

/// Turns a trait into a typed client and server. See the crate's README for the full
/// description of what it accepts and generates.
pub use dep2p_macros::service;

/// What generated code needs. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use ::serde;
    pub use ::std::sync::Arc;

    pub use crate::call::{Bidi, ClientStreaming, Notify, ServerStreaming, Unary};
    pub use crate::datagram::{Datagram, IncomingDatagram};
    pub use crate::incoming::{CallFuture, IncomingCall};
    pub use crate::service::{MethodInfo, Service};
    pub use crate::wire::Kind;
    pub use crate::{Connection, Error, Receiver, Sender, Target};

    /// What a message is. A type that is not gets one error, at the type in the trait,
    /// rather than one per missing bound.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel as a dep2p message",
        label = "not `Serialize + DeserializeOwned + Send + 'static`",
        note = "messages are serialized with serde: derive `serde::Serialize` and \
                `serde::Deserialize` for the type and the types it contains, and make them \
                `Send` and owned; stream ends (`Sender<T>`, `Receiver<T>`) are parameters of \
                `#[server_stream]`, `#[client_stream]` and `#[bidi]` methods only"
    )]
    pub trait Message: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static {}

    #[diagnostic::do_not_recommend]
    impl<T> Message for T where T: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static {}

    /// Checks, at compile time, that `T` can travel as a message.
    pub fn assert_message<T: Message>() {}

    /// `Checked<S, T>` is `T`. A server's `Service` impl bounds `Checked<S, T>: Message` for
    /// each message type `T`: a bound that names the impl's parameter `S` is assumed by the
    /// impl rather than checked where it is written, so a type that is not a message is
    /// reported once, by `assert_message`, not again by the server's code.
    pub type Checked<S, T> = <S as Same<T>>::Type;

    /// Every type is the same as itself; see [`Checked`].
    pub trait Same<T: ?Sized> {
        /// `T`.
        type Type: ?Sized;
    }

    impl<S: ?Sized, T: ?Sized> Same<T> for S {
        type Type = T;
    }
}
