//! A connection between two nodes: who is at the other end, its streams, closing it, and who
//! keeps it open.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::hold::{Claimed, Hold};
use crate::id::NodeId;
use crate::shared::Shared;
use crate::state::StateMap;
use crate::wire::{self, Budget, FrameReader};

/// A mutually authenticated QUIC connection to another node.
///
/// Cheap to clone. Either side can call over it: build a generated client with
/// `{Trait}Client::new(connection)`. Calls the peer makes on it are served by this node's
/// services, whichever side dialed.
///
/// # When it closes
///
/// A connection this node dialed ([`Node::connect`](crate::Node::connect)) closes once
/// nothing uses it any more: every `Connection` handle is dropped (clones, generated clients
/// made from it, contexts of calls served on it) and no call is in flight on it in either
/// direction. A streaming call keeps it open while its `Receiver` or `Response` lives
/// (dropping both cancels the call); a call the peer makes on it keeps it open until its
/// answer has arrived; a notification, until the peer has it. The peer sees the connection
/// close with the normal code, and calls it makes later fail with
/// [`Error::ConnectionLost`].
///
/// A connection another node dialed to this one belongs to this node: it stays open while
/// the peer keeps it, whatever handles this side holds: until the peer closes it or falls
/// silent for the idle timeout, [`close`](Self::close) is called or the node closes.
///
/// [`close`](Self::close) closes either kind at once. A clone of the [`quic`](Self::quic)
/// connection does not keep a connection open.
///
/// # One connection per peer
///
/// A node keeps one connection per peer: [`Node::connect`](crate::Node::connect) returns the
/// live connection to the peer if there is one, whichever side dialed it. When both nodes
/// dial each other at the same time, the connection dialed by the node with the smaller
/// [`NodeId`] is kept and the other is retired: it is no longer handed out, its handles keep
/// working, and its dialer closes it once its last handle is gone (`docs/PROTOCOL.md`,
/// section 12).
///
/// # State
///
/// A connection carries at most one value of each type for the application
/// ([`state`](Self::state), [`set_state`](Self::set_state)): what a session knows about its
/// peer, shared by every call on the connection. A handler reaches it through
/// [`CallContext::connection`](crate::CallContext::connection).
pub struct Connection {
    // A clone costs one reference count (and for a dialed connection, one count of its
    // users): every call clones its connection.
    link: Arc<Link>,
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        self.link.acquire();
        Connection {
            link: Arc::clone(&self.link),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.link.release();
    }
}

/// A connection's state: what its handles and the engine serving it share. The engine holds
/// it for as long as the connection lives, which does not keep the connection open, and
/// makes a [`Connection`] handle for each call the peer makes, which does.
pub(crate) struct Link {
    quic: quinn::Connection,
    remote: NodeId,
    shared: Arc<Shared>,
    /// Room for the bytes of incoming frames this connection holds: its own budget and the
    /// node's.
    budget: Budget,
    /// Whether this node dialed the connection, and so closes it when unused.
    dialed: bool,
    /// For a dialed connection: its handles, and the [`Hold`]s of calls in flight.
    users: AtomicUsize,
    /// Whether another connection to the same peer replaced this one: a dialed connection
    /// then closes as a duplicate once unused.
    retired: AtomicBool,
    /// The application's state for this connection.
    state: StateMap,
    /// The protocol version both sides agreed on in the handshake.
    version: u8,
    /// Streams read to their last frame whose end (the peer's FIN) had not arrived yet: see
    /// [`Connection::linger`].
    lingering: std::sync::Mutex<Vec<FrameReader>>,
}

/// The most streams a connection keeps waiting for their end ([`Connection::linger`]).
const LINGERING: usize = 16;

impl Link {
    fn new(quic: quinn::Connection, remote: NodeId, shared: Arc<Shared>, dialed: bool) -> Self {
        let budget = Budget::new(
            shared.config().connection_buffer(),
            Arc::clone(shared.memory()),
        );
        // The handshake only completes with an identifier both sides speak; a connection
        // without one (impossible past the handshake) is treated as the oldest version.
        let version = quic
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| data.protocol.as_deref().and_then(wire::alpn_version))
            .unwrap_or(1);
        Link {
            version,
            quic,
            remote,
            shared,
            budget,
            dialed,
            users: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            state: StateMap::default(),
            lingering: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A connection another node dialed, which this node keeps while the peer does.
    pub(crate) fn accepted(
        quic: quinn::Connection,
        remote: NodeId,
        shared: Arc<Shared>,
    ) -> Arc<Self> {
        Arc::new(Link::new(quic, remote, shared, false))
    }

    /// A handle on the connection, for a call the peer makes: it keeps a dialed connection
    /// open while the call is served.
    pub(crate) fn connection(self: &Arc<Self>) -> Connection {
        self.acquire();
        Connection {
            link: Arc::clone(self),
        }
    }

    /// A handle on the connection for a new user, unless it is closed or closing (a dialed
    /// connection whose last user has gone closes).
    pub(crate) fn try_connection(self: &Arc<Self>) -> Option<Connection> {
        if self.dialed {
            let mut users = self.users.load(Ordering::Relaxed);
            loop {
                if users == 0 {
                    return None;
                }
                match self.users.compare_exchange_weak(
                    users,
                    users + 1,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => users = now,
                }
            }
            let conn = Connection {
                link: Arc::clone(self),
            };
            return self.is_open().then_some(conn);
        }
        self.is_open().then(|| self.connection())
    }

    /// Whether the connection has not closed.
    pub(crate) fn is_open(&self) -> bool {
        self.quic.close_reason().is_none()
    }

    /// Marks the connection as replaced by another to the same peer.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    pub(crate) fn remote(&self) -> NodeId {
        self.remote
    }

    pub(crate) fn direction(&self) -> Direction {
        if self.dialed {
            Direction::Dialed
        } else {
            Direction::Accepted
        }
    }

    pub(crate) fn quic(&self) -> &quinn::Connection {
        &self.quic
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn config(&self) -> &Config {
        self.shared.config()
    }

    /// The connection's typed state (the application's, and the runtime's own under private
    /// types).
    pub(crate) fn state(&self) -> &StateMap {
        &self.state
    }
}

impl Claimed for Link {
    fn acquire(&self) {
        if self.dialed {
            self.users.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The last user of a dialed connection closes it. (A call the peer opens at that moment
    /// meets the close, as one arriving just after it would.)
    fn release(&self) {
        if self.dialed && self.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            if self.retired.load(Ordering::Relaxed) {
                self.quic
                    .close(wire::CLOSE_DUPLICATE.into(), b"duplicate connection");
            } else {
                self.quic
                    .close(wire::CLOSE_NORMAL.into(), b"no handle left");
            }
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("remote_id", &self.link_ref().remote)
            .field("remote_address", &self.link_ref().quic.remote_address())
            .finish()
    }
}

impl Connection {
    /// Wraps a QUIC connection this node dialed to `remote`: the first of its handles.
    pub(crate) fn dialed(quic: quinn::Connection, remote: NodeId, shared: Arc<Shared>) -> Self {
        let link = Arc::new(Link::new(quic, remote, shared, true));
        link.connection()
    }

    /// The connection's state, for the engine that serves it.
    pub(crate) fn link(&self) -> Arc<Link> {
        Arc::clone(&self.link)
    }

    /// A claim that keeps the connection open, for the parts of a call that outlive it.
    pub(crate) fn hold(&self) -> Hold {
        Hold::new(Arc::clone(&self.link) as Arc<dyn Claimed>)
    }

    fn link_ref(&self) -> &Link {
        &self.link
    }

    /// The verified node id of the peer.
    pub fn remote_id(&self) -> NodeId {
        self.link_ref().remote
    }

    /// Which side dialed the connection.
    pub fn direction(&self) -> Direction {
        self.link_ref().direction()
    }

    /// The peer's current UDP address.
    pub fn remote_address(&self) -> SocketAddr {
        self.link_ref().quic.remote_address()
    }

    /// The current round-trip time estimate.
    pub fn rtt(&self) -> std::time::Duration {
        self.link_ref().quic.rtt()
    }

    /// The protocol version the connection speaks: the newest both nodes offered in the
    /// handshake (2 between two nodes of this release, 1 with a node that speaks only
    /// `dep2p/1`). Features of a newer version (response metadata, compression) are simply
    /// not used on an older connection.
    pub fn protocol_version(&self) -> u8 {
        self.link_ref().version
    }

    /// Closes the connection at once. Calls in flight on it fail with [`Error::Closed`] here
    /// and [`Error::ConnectionLost`] on the peer.
    pub fn close(&self) {
        self.link_ref()
            .quic
            .close(wire::CLOSE_NORMAL.into(), b"closed");
    }

    /// Completes when the connection is closed, with the reason.
    ///
    /// Awaiting it uses a handle, so a connection this node dialed is not closed for want of
    /// handles while it is awaited.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the future only watches the connection.
    pub async fn closed(&self) -> Error {
        Error::from_connection(&self.link_ref().quic.closed().await)
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<Error> {
        self.link_ref()
            .quic
            .close_reason()
            .map(|e| Error::from_connection(&e))
    }

    /// The connection's value of type `T`, if one was set.
    ///
    /// ```
    /// # fn session(conn: &dep2p_runtime::Connection) {
    /// struct User(String);
    /// if conn.state::<User>().is_none() {
    ///     conn.set_state(User("ada".into()));
    /// }
    /// assert_eq!(conn.state::<User>().map(|u| u.0.clone()).as_deref(), Some("ada"));
    /// # }
    /// ```
    pub fn state<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.link_ref().state.get::<T>()
    }

    /// Sets the connection's value of type `T`, returning the one it replaces. Every handle of
    /// the connection sees it, on this node only; it is dropped with the connection's last
    /// handle and engine, after the connection closes.
    pub fn set_state<T: Any + Send + Sync>(&self, value: T) -> Option<Arc<T>> {
        self.link_ref().state.set(value)
    }

    /// The connection's value of type `T`, made with `make` and set first if there is none.
    /// When two calls race, one value is kept and both get it; `make` runs without a lock held.
    pub fn state_or_insert_with<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        self.link_ref().state.get_or_insert_with(make)
    }

    /// Removes the connection's value of type `T`, returning it.
    pub fn remove_state<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.link_ref().state.remove::<T>()
    }

    /// The underlying QUIC connection.
    ///
    /// Every stream the peer opens on it is read as a dep2p call, so open streams on it
    /// directly only to speak the protocol of `docs/PROTOCOL.md` yourself.
    pub fn quic(&self) -> &quinn::Connection {
        &self.link_ref().quic
    }

    pub(crate) fn config(&self) -> &Config {
        self.link_ref().shared.config()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.link_ref().shared
    }

    /// Whether this node dialed the connection, which it then closes once nothing uses it.
    pub(crate) fn is_dialed(&self) -> bool {
        self.link_ref().dialed
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.link_ref().shared.is_shutting_down()
    }

    /// A frame reader for a stream of this connection.
    pub(crate) fn reader(&self, recv: quinn::RecvStream) -> FrameReader {
        let max = self.config().max_message_size;
        let reader = FrameReader::new(recv, max, self.link_ref().budget.clone())
            .unpacking(self.protocol_version() >= 2);
        if self.protocol_version() >= 2 {
            reader.with_metadata(self.config().header)
        } else {
            reader
        }
    }

    /// How this node compresses the messages it sends for `service.method` on this
    /// connection: never on a version 1 connection; `force`, if set, overrides the method's
    /// setting.
    pub(crate) fn pack(&self, service: &str, method: &str, force: Option<bool>) -> wire::Pack {
        let compression = &self.config().compression;
        match force {
            _ if self.protocol_version() < 2 => wire::Pack::OFF,
            Some(true) => compression.forced(),
            Some(false) => wire::Pack::OFF,
            None => compression.pack(service, method),
        }
    }

    /// Room for the bytes of incoming frames this connection holds.
    pub(crate) fn budget(&self) -> &Budget {
        &self.link_ref().budget
    }

    /// Lets go of `reader`, a stream whose last frame was read, once the peer's end of it (its
    /// FIN) has arrived.
    ///
    /// The FIN often follows the last frame in a packet of its own (quinn may send a stream's
    /// data before the writer finishes it). Dropping the stream before it arrives would tell
    /// the peer to stop sending, and the peer would answer with a reset: two packets for
    /// nothing. So a stream whose end has not arrived is kept, and checked, without waiting,
    /// the next time a stream lingers here; at most [`LINGERING`] are kept, the oldest let go
    /// first (as before: with STOP_SENDING).
    pub(crate) fn linger(&self, mut reader: FrameReader) {
        reader.try_finish();
        // Finished: dropped cleanly. Bytes after the last frame (a protocol violation): not
        // kept, the peer is told to stop.
        if reader.is_finished() || reader.has_buffered() {
            return;
        }
        let mut lingering = (self.link_ref().lingering.lock()).unwrap_or_else(|e| e.into_inner());
        lingering.retain_mut(|kept| {
            kept.try_finish();
            !kept.is_finished() && !kept.has_buffered()
        });
        if lingering.len() >= LINGERING {
            lingering.remove(0);
        }
        lingering.push(reader);
    }
}

/// Which side of a connection dialed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This node dialed it ([`Node::connect`](crate::Node::connect)); it closes when unused.
    Dialed,
    /// The peer dialed it; it stays open while the peer keeps it.
    Accepted,
}
