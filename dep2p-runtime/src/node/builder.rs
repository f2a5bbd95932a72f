//! [`NodeBuilder`]: a node's key, services and limits, and binding it to a socket.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::Error;
use crate::gate::Gate;
use crate::id::NodeId;
use crate::identity::SecretKey;
use crate::intercept::ClientLayer;
use crate::layer::{Handler, Layered, NodeLayers};
use crate::service::Service;

use super::Node;

/// Configures and binds a [`Node`]. Every setter documents its default.
#[derive(Default)]
pub struct NodeBuilder {
    config: Config,
    key: Option<SecretKey>,
    services: Vec<Arc<dyn Service>>,
    builtins: Builtins,
    layers: NodeLayers,
    gate: Option<Gate>,
}

/// Which built-in services a node serves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Builtins {
    pub(super) reflection: bool,
    pub(super) health: bool,
}

impl Default for Builtins {
    fn default() -> Self {
        Builtins {
            reflection: true,
            health: true,
        }
    }
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .field("key", &self.key)
            .field("services", &self.services.len())
            .field("builtins", &self.builtins)
            .field("layers", &self.layers)
            .field("client_layers", &self.config.client_layers)
            .field("accept_if", &self.gate.is_some())
            .finish()
    }
}

impl NodeBuilder {
    /// The node's key, and so its identity. Default: a newly generated key.
    pub fn secret_key(mut self, key: SecretKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Serves `service` from the start. Each service needs its own name (see
    /// [`Service::name`]): [`bind`](Self::bind) fails with [`Error::Config`] if two have the
    /// same.
    pub fn serve(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Whether the node serves the reflection service, `dep2p.reflection.v1`
    /// ([`Reflection`](crate::Reflection)), which lists the services the node serves and
    /// their methods to any peer that may connect. Default: true, so that any node can be
    /// inspected (the `dep2p` command-line tool does). Turn it off for a node whose list of
    /// services is nobody's business; a peer can still learn whether a method of a name it
    /// guesses exists by calling it.
    pub fn reflection(mut self, serve: bool) -> Self {
        self.builtins.reflection = serve;
        self
    }

    /// Whether the node serves the health service, `dep2p.health.v1`
    /// ([`Health`](crate::Health)), which reports whether the node and each of its services
    /// are serving (set with [`Node::health`]). Default: true.
    pub fn health_service(mut self, serve: bool) -> Self {
        self.builtins.health = serve;
        self
    }

    /// Serves every service of this node (those given to [`serve`](Self::serve), before or
    /// after, and to [`Node::serve`], and the built-in reflection and health services)
    /// through `layer`: a tower [`Layer`](tower_layer::Layer)
    /// whose service sees each incoming call before its method does, may refuse it
    /// ([`IncomingCall::refuse`](crate::IncomingCall::refuse)), and learns its
    /// [`Outcome`](crate::Outcome). See [`Layered`] for what the layer's service must be.
    ///
    /// Order: the first layer added is the outermost (it sees a call first and its outcome
    /// last), as with tower's `ServiceBuilder`; a node's layers are outside the layers of a
    /// [`Layered`] service. Calls the node refuses before routing them (unknown service,
    /// over a limit, shutting down, malformed) reach no layer. Default: none, and then a call
    /// costs nothing more.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<Handler> + Send + Sync + 'static,
        Layered<L::Service>: Service,
    {
        self.layers.push(layer);
        self
    }

    /// Runs `layer`'s hooks around every call this node makes, on any connection or peer:
    /// before the call is sent (to add metadata, or fail it) and once it has ended. Layers run
    /// `before` in the order added and `after` in the reverse order; a node's layers run
    /// outside those of a target ([`Target::with_layer`](crate::Target::with_layer)).
    /// Default: none, and then a call costs nothing more.
    pub fn client_layer(mut self, layer: impl ClientLayer) -> Self {
        self.config.client_layers = self.config.client_layers.with(Arc::new(layer));
        self
    }

    /// Decides who may connect: a connection another node dials to this one is accepted only
    /// if `allow` returns true for the dialer's verified node id and its address. Connections
    /// this node dials are not checked. Replaces an earlier rule
    /// ([`allow_only`](Self::allow_only) sets one too). Default: every node may connect.
    ///
    /// The rule runs during the TLS handshake, once the dialer has proved its key, on the
    /// node's accept path: keep it quick and do not block in it. A refused dialer's handshake
    /// fails with the TLS alert `access_denied` (`docs/PROTOCOL.md`, section 11) and its
    /// [`Node::connect`] with [`Error::Refused`] at once. Refused attempts count against
    /// [`max_handshakes`](Self::max_handshakes) only while their handshake lasts.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), dep2p_runtime::Error> {
    /// use dep2p_runtime::Node;
    ///
    /// // Only nodes on this machine may connect.
    /// let node = Node::builder()
    ///     .accept_if(|_id, addr| addr.ip().is_loopback())
    ///     .bind("0.0.0.0:0")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn accept_if(
        mut self,
        allow: impl Fn(NodeId, SocketAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.gate = Some(Gate::new(allow));
        self
    }

    /// Lets only the nodes `ids` connect, from any address: an allow-list form of
    /// [`accept_if`](Self::accept_if), which it replaces. An empty list lets no node connect.
    /// Default: every node may connect.
    pub fn allow_only(self, ids: impl IntoIterator<Item = NodeId>) -> Self {
        let ids: HashSet<NodeId> = ids.into_iter().collect();
        self.accept_if(move |id, _| ids.contains(&id))
    }

    /// Deadline of request-response calls and notifications that set none themselves, on
    /// both sides: calls this node makes, and calls of those kinds that arrive without a
    /// deadline. Streaming calls have no default deadline (the idle-stream timeout bounds each
    /// of their waits). `Duration::MAX` means no deadline. Default: 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Time allowed to establish a connection, for the handshake of connections this node
    /// dials and accepts. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Largest encoded message (arguments, stream item or result) sent or accepted. A larger
    /// incoming one is refused before any memory is set aside for it. Default: 16 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Bytes of incoming messages one connection may have this node hold: large messages
    /// (over 64 KiB each) from the moment they start to arrive, and every call's first frame
    /// (its header and arguments) for as long as the call keeps any of it. A stream whose
    /// large message does not fit waits for room, and QUIC flow control makes its sender wait;
    /// a new call that does not fit is refused with [`Error::Overloaded`]. Never less than one
    /// message of `max_message_size`. Default: 64 MiB.
    pub fn connection_buffer(mut self, bytes: usize) -> Self {
        self.config.connection_buffer = bytes;
        self
    }

    /// Bytes of incoming messages all of this node's connections together may have it hold,
    /// counted as for [`connection_buffer`](Self::connection_buffer): a large message takes
    /// room from its connection's buffer and from this budget before it is read. While the
    /// node is over its budget, large messages wait and new calls are refused with
    /// [`Error::Overloaded`]. Never less than one message of `max_message_size`.
    ///
    /// Default: 256 MiB: four connections' worth of large messages at once, or sixteen of the
    /// largest size, which a small server can hold beside its application.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.config.memory_budget = bytes;
        self
    }

    /// Largest call header (service and method names, deadline and metadata; not the
    /// arguments), in encoded bytes, sent or accepted. A larger incoming header is refused with
    /// [`Error::MessageTooLarge`], checked as it is decoded, before any of it is kept; a call
    /// this node would send with a larger one fails the same way before it opens a stream. At
    /// least 1,024 bytes. Service and method names are limited to 256 bytes each.
    ///
    /// This bound and the two metadata bounds below also hold for response metadata, the
    /// headers and the trailers each: what a handler sets
    /// ([`CallContext::set_header`](crate::CallContext::set_header)) and what a caller accepts.
    ///
    /// Default: 16 KiB, the order of the header lists HTTP/2 servers accept
    /// (`SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.config.header.max_size = bytes;
        self
    }

    /// Most metadata entries in one call header, sent or accepted; more fail as for
    /// [`max_header_size`](Self::max_header_size). Default: 64.
    pub fn max_metadata_entries(mut self, entries: usize) -> Self {
        self.config.header.max_entries = entries;
        self
    }

    /// Largest metadata entry, key and value bytes together, sent or accepted; a larger one
    /// fails as for [`max_header_size`](Self::max_header_size). Default: 8 KiB.
    pub fn max_metadata_entry_size(mut self, bytes: usize) -> Self {
        self.config.header.max_entry = bytes;
        self
    }

    /// Connections from other nodes this node keeps open at once. A connection takes its place
    /// when its handshake completes, so handshakes in progress (bounded by
    /// [`max_handshakes`](Self::max_handshakes)) never hold places. An attempt that finds every
    /// place taken is refused at the QUIC level and its dialer gets [`Error::Unreachable`]; a
    /// handshake that completes after the last place was taken is closed at once: its dialer's
    /// `connect` fails with [`Error::Unreachable`] if it is still waiting for the node's
    /// confirmation, and calls on the connection fail with [`Error::ConnectionLost`] otherwise. Connections this node dials do not count.
    /// Default: 4,096.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections;
        self
    }

    /// Handshakes of connections from other nodes in progress at once; further attempts are
    /// refused at the QUIC level ([`Error::Unreachable`] for their dialer). A handshake lasts
    /// about a round trip, or until the [connect timeout](Self::connect_timeout) for a peer
    /// that never finishes it.
    ///
    /// Once a quarter of this many handshakes are in progress, the node answers an attempt
    /// from an address it has not yet validated with a QUIC Retry: the dialer must prove it
    /// receives packets at its address, at the cost of one more round trip, before the node
    /// spends a signature on it or sends it more than it received. Below that, as in normal
    /// operation, no attempt pays the extra round trip. Default: 1,024 (Retry from 256).
    pub fn max_handshakes(mut self, handshakes: usize) -> Self {
        self.config.max_handshakes = handshakes;
        self
    }

    /// Connections from one IP address this node keeps open at once, handshakes in progress
    /// included; further attempts from that address are refused at the QUIC level
    /// ([`Error::Unreachable`] for their dialer). IPv4 addresses mapped into IPv6 count as the
    /// IPv4 address; other IPv6 addresses count one by one.
    ///
    /// Default: 2,048: room for a host that legitimately keeps many connections (a benchmark
    /// opening 1,000, a gateway), while one address never takes more than half of the
    /// default [`max_connections`](Self::max_connections).
    pub fn max_connections_per_ip(mut self, connections: usize) -> Self {
        self.config.max_connections_per_ip = connections;
        self
    }

    /// Calls one connection may have running on this node at once; further calls fail with
    /// [`Error::Overloaded`]. Default: 1,024.
    pub fn max_concurrent_calls(mut self, calls: usize) -> Self {
        self.config.max_concurrent_calls = calls;
        self
    }

    /// QUIC streams a peer may have open towards this node at once, per direction. A caller
    /// past this limit waits for a stream to free up rather than failing. QUIC sets aside
    /// state for every stream a peer may open, so this is also a memory cost per connection;
    /// and the connection window must hold a stream window for each of them (see
    /// [`connection_window`](Self::connection_window)). Default: 128.
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.config.max_concurrent_streams = streams;
        self
    }

    /// Time allowed between a peer opening a stream and its call header arriving; past it the
    /// stream is refused. Default: 10 s.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_timeout = timeout;
        self
    }

    /// The idle bound of every call: a wait for the peer's progress (the next message, room
    /// in the stream's flow-control window, a write to complete) that lasts this long fails
    /// with [`Error::IdleTimeout`], and the stream is abandoned. It restarts on every
    /// message. A call's deadline bounds its waits too, whichever comes first; a call without
    /// a deadline also waits this long at most for an answer (a result, a response).
    /// `Duration::MAX` means no idle bound. Default: 5 minutes.
    pub fn idle_stream_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_stream_timeout = timeout;
        self
    }

    /// Flow-control window of one stream: bytes a peer may send on a stream before this node
    /// reads them, and so the most a stream nobody reads holds. A larger window speeds up a
    /// single bulk stream on a path with a long round trip; it must fit
    /// `max_concurrent_streams` times in the connection window (see
    /// [`connection_window`](Self::connection_window)). Default: 512 KiB.
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes;
        self
    }

    /// Flow-control window of a whole connection: bytes a peer may send on all streams
    /// together before this node reads them, and so the most a peer can make this node hold
    /// in QUIC's receive buffers per connection.
    ///
    /// Streams whose data nobody reads (a `Receiver` held but not read, a handler that does not
    /// read its stream) each hold up to a stream window of it. So that they never stall the
    /// other calls of their connection, it must be at least
    /// `max_concurrent_streams × stream_window × 8/7` and at least
    /// `(max_concurrent_streams + 1) × stream_window`; binding fails with
    /// [`Error::Config`] otherwise. Default: 80 MiB (128 streams × 512 KiB, plus 16 MiB).
    pub fn connection_window(mut self, bytes: u32) -> Self {
        self.config.connection_window = bytes;
        self
    }

    /// A connection on which nothing is received for this long is closed. Default: 7 s.
    ///
    /// QUIC uses the shorter of the two sides' values. A peer that vanishes without closing
    /// (its process killed, its network gone) is noticed within this timeout plus one
    /// [`keep_alive_interval`](Self::keep_alive_interval): 9 s with the defaults. Calls on
    /// the connection then fail with [`Error::ConnectionLost`].
    pub fn idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_connection_timeout = timeout;
        self
    }

    /// Interval of keep-alive packets on idle connections. Default: 2 s.
    ///
    /// Must be shorter than the idle-connection timeout. An idle connection costs about 62
    /// packets (about 2.3 KB of UDP payload) a minute in each direction with the defaults.
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.config.keep_alive_interval = interval;
        self
    }

    /// Whether connections to peers on this machine (loopback addresses) start with datagrams
    /// of nearly 64 KiB instead of 1,200 bytes. On loopback that carries bulk data two to
    /// four times faster for a fraction of the CPU, and costs about 150 KiB more memory per
    /// such connection (buffers sized for the datagrams). Connections to other addresses
    /// always start small and discover the path's MTU. Default: true.
    pub fn fast_loopback(mut self, enabled: bool) -> Self {
        self.config.fast_loopback = enabled;
        self
    }

    /// The longest deadline this node grants a call a peer makes: a call asking for more, or
    /// (for the streaming kinds) for none, gets this one, and its handler is stopped when it
    /// passes. The caller is not told; it learns of the deadline from the
    /// [`Error::Timeout`] it gets. Default: no cap (a handler may run as long as its caller
    /// allows; a streaming call without a deadline is bounded by the idle-stream timeout on
    /// each of its waits).
    pub fn max_call_deadline(mut self, deadline: Duration) -> Self {
        self.config.max_call_deadline = Some(deadline);
        self
    }

    /// Whether the message of a handler's panic is sent to the caller inside
    /// [`Error::HandlerFailed`]. It is always logged on this node (a `tracing` warning); it
    /// may name internals a peer should not learn. Default: false.
    pub fn send_panic_messages(mut self, send: bool) -> Self {
        self.config.send_panic_messages = send;
        self
    }

    /// The newest protocol version the node speaks: it offers versions 1 to `version` on
    /// every connection, newest first, and each connection speaks the newest both sides offer
    /// ([`Connection::protocol_version`](crate::Connection::protocol_version)). Lower it to
    /// behave exactly as an older peer would, e.g. to test a mixed deployment. Binding fails
    /// with [`Error::Config`] for a version this crate does not speak. Default: 2, the newest.
    ///
    /// Version 2 adds response metadata and compression (`docs/PROTOCOL.md`); on a version 1
    /// connection neither is sent.
    pub fn protocol_version(mut self, version: u8) -> Self {
        self.config.protocol_version = version;
        self
    }

    /// Whether the node accepts QUIC datagrams, and so serves `#[datagram]` methods. A node
    /// that does not says so in its transport parameters; a peer calling a datagram method on
    /// it gets [`Error::Unsupported`](crate::Error::Unsupported) at once. Its own datagram
    /// calls still work towards peers that accept them. Default: true (quinn's receive buffer
    /// of 1,250,000 bytes of datagrams not yet read, oldest dropped first).
    pub fn datagrams(mut self, accept: bool) -> Self {
        self.config.datagrams = accept;
        self
    }

    /// `#[datagram]` handlers a connection may have running at once. A datagram that arrives
    /// when all are busy is dropped, not queued, and counted in
    /// [`DatagramStats::dropped_busy`](crate::DatagramStats::dropped_busy). Default: 64.
    pub fn max_datagram_handlers(mut self, handlers: usize) -> Self {
        self.config.max_datagram_handlers = handlers;
        self
    }

    /// How long a call may keep its connection's accept loop.
    ///
    /// Most calls are done the first time they are polled: the header came with the
    /// stream, the handler does not wait, the answer fits the stream's window. The node
    /// serves such a call in the task that accepted its stream, without a task of its own,
    /// and spawns a call as a task only once it has to wait. That spares each call a spawn,
    /// its scheduling and often the wake-up of another worker thread.
    ///
    /// A handler that computes for long before its first `.await` would hold up the next
    /// calls on its connection. After a first poll that took longer than `limit`, the
    /// connection's next 64 calls are spawned without being polled there, so that such
    /// handlers run side by side on the runtime's worker threads; then the node tries again.
    /// Long computations belong in [`tokio::task::spawn_blocking`] all the same. `None`
    /// spawns every call as a task of its own.
    ///
    /// Default: `Some(200 µs)`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// // Handlers that compute before they wait: every call in a task of its own.
    /// let builder = dep2p_runtime::Node::builder().inline_limit(None);
    /// # let _ = builder;
    /// ```
    pub fn inline_limit(mut self, limit: Option<Duration>) -> Self {
        self.config.inline_limit = limit;
        self
    }

    /// Which messages the node compresses before sending them, per method and from which
    /// size (see [`Compression`](crate::Compression)); a single call can override its
    /// method's setting with [`Call::compress`](crate::Call::compress). Only connections
    /// speaking protocol version 2 carry compressed messages; every node accepts them there,
    /// whatever this setting. Default: [`Compression::off`](crate::Compression::off).
    pub fn compression(mut self, compression: crate::wire::Compression) -> Self {
        self.config.compression = compression;
        self
    }

    /// Adds an address at which other nodes reach this one: listed, in the order added,
    /// before the bound address in [`Node::node_addr`] (and so in the node's ticket). For a
    /// node bound to `0.0.0.0` or `[::]`, which cannot tell its reachable addresses itself, or
    /// behind a NAT that forwards a port: its public address. Default: none.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), dep2p_runtime::Error> {
    /// use dep2p_runtime::Node;
    ///
    /// let node = Node::builder()
    ///     .advertise("203.0.113.5:4433".parse().unwrap())
    ///     .bind("0.0.0.0:4433")
    ///     .await?;
    /// println!("{}", node.node_addr()); // <node id>@203.0.113.5:4433
    /// # Ok(()) }
    /// ```
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        if !self.config.advertise.contains(&addr) {
            self.config.advertise.push(addr);
        }
        self
    }

    /// Binds the node to a free port on every interface, for a node that mostly dials: the
    /// dual-stack `[::]:0`, which reaches IPv6 and IPv4 peers alike, or `0.0.0.0:0` (IPv4
    /// only) on a machine without IPv6. Like [`bind`](Self::bind), the node serves as well.
    ///
    /// A node bound to `127.0.0.1` instead can only reach peers on the same machine.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dep2p_runtime::Error> {
    /// let client = dep2p_runtime::Node::builder().bind_any().await?;
    /// assert!(client.local_addr().ip().is_unspecified());
    /// # Ok(()) }
    /// ```
    pub async fn bind_any(self) -> Result<Node, Error> {
        let dual_stack = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        // A machine without IPv6 refuses the socket or its address; that costs one
        // throwaway socket to learn.
        let addr = if std::net::UdpSocket::bind(dual_stack).is_ok() {
            dual_stack
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        };
        self.bind(addr).await
    }

    /// Binds the node to `addr` (port 0 picks a free port) and starts accepting connections.
    /// Must be called within a tokio runtime.
    ///
    /// A name in `addr` is resolved here, blocking: give a socket address, or see
    /// [`bind_any`](Self::bind_any) for a node that does not care where it listens.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Node, Error> {
        let NodeBuilder {
            config,
            key,
            services,
            builtins,
            layers,
            gate,
        } = self;
        config.validate()?;
        crate::service::unique_names(&services)?;
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| Error::Config("no address to bind".into()))?;
        let key = key.unwrap_or_else(SecretKey::generate);
        Node::start(config, key, services, builtins, layers, addr, gate)
    }
}
