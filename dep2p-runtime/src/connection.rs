//! A connection between two nodes: who is at the other end, its streams, closing it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::id::NodeId;
use crate::shared::Shared;
use crate::wire::{self, Budget, FrameReader};

/// A mutually authenticated QUIC connection to another node.
///
/// Cheap to clone. Either side can call over it: build a generated client with
/// `{Trait}Client::new(connection)`. Calls the peer makes on it are served by this node's
/// services, whichever side dialed.
#[derive(Clone)]
pub struct Connection {
    // One reference count for a clone: every call clones its connection.
    inner: Arc<Inner>,
}

struct Inner {
    quic: quinn::Connection,
    remote: NodeId,
    shared: Arc<Shared>,
    /// Room for the bytes of incoming frames this connection holds: its own budget and the
    /// node's.
    budget: Budget,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("remote_id", &self.inner.remote)
            .field("remote_address", &self.inner.quic.remote_address())
            .finish()
    }
}

impl Connection {
    /// Wraps an established QUIC connection to `remote`.
    pub(crate) fn new(quic: quinn::Connection, remote: NodeId, shared: Arc<Shared>) -> Self {
        let budget = Budget::new(
            shared.config().connection_buffer(),
            Arc::clone(shared.memory()),
        );
        Connection {
            inner: Arc::new(Inner {
                quic,
                remote,
                shared,
                budget,
            }),
        }
    }

    /// The verified node id of the peer.
    pub fn remote_id(&self) -> NodeId {
        self.inner.remote
    }

    /// The peer's current UDP address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.quic.remote_address()
    }

    /// The current round-trip time estimate.
    pub fn rtt(&self) -> std::time::Duration {
        self.inner.quic.rtt()
    }

    /// Closes the connection at once. Calls in flight on it fail with [`Error::Closed`] here
    /// and [`Error::ConnectionLost`] on the peer.
    pub fn close(&self) {
        self.inner.quic.close(wire::CLOSE_NORMAL.into(), b"closed");
    }

    /// Completes when the connection is closed, with the reason.
    pub async fn closed(&self) -> Error {
        Error::from_connection(&self.inner.quic.closed().await)
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<Error> {
        self.inner
            .quic
            .close_reason()
            .map(|e| Error::from_connection(&e))
    }

    /// The underlying QUIC connection.
    ///
    /// Every stream the peer opens on it is read as a dep2p call, so open streams on it
    /// directly only to speak the protocol of `docs/PROTOCOL.md` yourself.
    pub fn quic(&self) -> &quinn::Connection {
        &self.inner.quic
    }

    pub(crate) fn config(&self) -> &Config {
        self.inner.shared.config()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.inner.shared.is_shutting_down()
    }

    /// A frame reader for a stream of this connection.
    pub(crate) fn reader(&self, recv: quinn::RecvStream) -> FrameReader {
        let max = self.config().max_message_size;
        FrameReader::new(recv, max, self.inner.budget.clone())
    }

    /// Room for the bytes of incoming frames this connection holds.
    pub(crate) fn budget(&self) -> &Budget {
        &self.inner.budget
    }
}
