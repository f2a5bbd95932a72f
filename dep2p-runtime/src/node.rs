//! Nodes: an identity, a UDP socket, the services served and the connections made.

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio_util::task::TaskTracker;

use crate::config::{Config, MAX_UDP_PAYLOAD, SOCKET_BUFFER};
use crate::connection::Connection;
use crate::error::Error;
use crate::identity::{self, AnyPeer, ExpectedPeer, NodeId, SecretKey};
use crate::server::Service;
use crate::wire;

/// What every connection and call of a node shares.
pub(crate) struct Shared {
    id: NodeId,
    config: Config,
    services: RwLock<HashMap<String, Arc<dyn Service>>>,
    shutting_down: AtomicBool,
    tracker: TaskTracker,
    /// Accepted connections open or in their handshake.
    accepted: AtomicUsize,
}

/// One place among a node's accepted connections, given back when dropped.
pub(crate) struct AcceptedSlot(Arc<Shared>);

impl AcceptedSlot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.config.max_connections;
        shared
            .accepted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| AcceptedSlot(Arc::clone(shared)))
    }
}

impl Drop for AcceptedSlot {
    fn drop(&mut self) {
        self.0.accepted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub(crate) fn service(&self, name: &str) -> Option<Arc<dyn Service>> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        services.get(name).cloned()
    }

    fn add_service(&self, service: Arc<dyn Service>) {
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        services.insert(service.name().to_string(), service);
    }
}

/// A dep2p node: an identity bound to a UDP socket, serving its services to any peer that
/// connects and calling peers it connects to.
///
/// Cheap to clone. Dropping the last handle closes the node's socket and every connection.
///
/// ```no_run
/// # async fn run() -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::Node;
///
/// let server = Node::builder().bind("127.0.0.1:0").await?;
/// let client = Node::builder().bind("127.0.0.1:0").await?;
/// let conn = client.connect(server.local_addr(), server.id()).await?;
/// assert_eq!(conn.remote_id(), server.id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    key: SecretKey,
    /// The node's certificate and key in rustls' form, made once.
    certificate: rustls::pki_types::CertificateDer<'static>,
    private: rustls::pki_types::PrivateKeyDer<'static>,
    transports: Transports,
    shared: Arc<Shared>,
}

/// Transport settings for peers elsewhere and for peers on this machine.
#[derive(Clone)]
struct Transports {
    wan: Arc<quinn::TransportConfig>,
    loopback: Arc<quinn::TransportConfig>,
}

impl Transports {
    fn new(config: &Config) -> Result<Self, Error> {
        Ok(Transports {
            wan: Arc::new(config.transport(false)?),
            loopback: Arc::new(config.transport(true)?),
        })
    }

    fn for_peer(&self, addr: SocketAddr) -> Arc<quinn::TransportConfig> {
        if addr.ip().is_loopback() {
            Arc::clone(&self.loopback)
        } else {
            Arc::clone(&self.wan)
        }
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.endpoint
            .close(wire::CLOSE_NORMAL.into(), b"node dropped");
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.shared.id)
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This node's identity.
    pub fn id(&self) -> NodeId {
        self.inner.shared.id
    }

    /// This node's key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.inner.key
    }

    /// The UDP address the node is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Serves `service` on every connection, current and future. A service of the same name
    /// is replaced.
    pub fn serve(&self, service: impl Service) {
        self.inner.shared.add_service(Arc::new(service));
    }

    /// Connects to the node `id` at `addr`.
    ///
    /// Fails with [`Error::WrongNodeId`] if the peer proves another identity, and with
    /// [`Error::Unreachable`] if no connection can be made within the connect timeout.
    pub async fn connect(&self, addr: SocketAddr, id: NodeId) -> Result<Connection, Error> {
        let inner = &self.inner;
        if inner.shared.is_shutting_down() {
            return Err(Error::Closed);
        }
        let verifier = Arc::new(ExpectedPeer::new(id));
        let (cert, key) = (inner.certificate.clone(), inner.private.clone_key());
        let mut crypto = rustls::ClientConfig::builder_with_provider(identity::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(vec![cert], key)
            .map_err(|e| Error::InvalidKey(e.to_string()))?;
        crypto.alpn_protocols = vec![wire::ALPN.to_vec()];
        let crypto =
            QuicClientConfig::try_from(crypto).map_err(|e| Error::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(inner.transports.for_peer(addr));

        let unreachable = |reason: String| Error::Unreachable { addr, reason };
        let connecting = inner
            .endpoint
            .connect_with(config, addr, "dep2p")
            .map_err(|e| unreachable(e.to_string()))?;
        let timeout = inner.shared.config.connect_timeout;
        let quic = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(quic)) => quic,
            Ok(Err(err)) => {
                let presented = verifier.presented.lock().ok().and_then(|p| *p);
                return Err(match presented {
                    Some(presented) if presented != id => Error::WrongNodeId {
                        expected: id,
                        presented,
                    },
                    _ => unreachable(err.to_string()),
                });
            }
            Err(_) => return Err(unreachable(format!("no handshake within {timeout:?}"))),
        };
        Ok(Connection::start(quic, id, Arc::clone(&inner.shared), None))
    }

    /// Stops taking new calls and connections, lets the calls in flight finish for up to
    /// `grace`, then closes every connection.
    ///
    /// Calls that arrive meanwhile fail with [`Error::ShuttingDown`] on the caller's side, as
    /// do calls still running when the grace period ends.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.shared.shutting_down.store(true, Ordering::Relaxed);
        inner.endpoint.set_server_config(None);
        inner.shared.tracker.close();
        let _ = tokio::time::timeout(grace, inner.shared.tracker.wait()).await;
        inner
            .endpoint
            .close(wire::CLOSE_SHUTDOWN.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), inner.endpoint.wait_idle()).await;
    }

    /// Closes every connection at once, failing the calls in flight.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.shared.shutting_down.store(true, Ordering::Relaxed);
        inner.endpoint.close(wire::CLOSE_SHUTDOWN.into(), b"closed");
    }
}

/// Configures and binds a [`Node`]. Every setter documents its default.
#[derive(Default)]
pub struct NodeBuilder {
    config: Config,
    key: Option<SecretKey>,
    services: Vec<Arc<dyn Service>>,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .field("key", &self.key)
            .field("services", &self.services.len())
            .finish()
    }
}

impl NodeBuilder {
    /// The node's key, and so its identity. Default: a newly generated key.
    pub fn secret_key(mut self, key: SecretKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Serves `service` from the start.
    pub fn serve(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Deadline of request-response calls and notifications that set none themselves.
    /// Streaming calls have no default deadline (the idle-stream timeout bounds them).
    /// Default: 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Time allowed to establish a connection. Default: 10 s.
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

    /// Bytes of large incoming messages (over 64 KiB each) one connection may have in memory
    /// while they arrive. A stream whose message does not fit waits for room, and QUIC flow
    /// control makes its sender wait: memory stays bounded whatever the peer sends. Never less
    /// than one message of `max_message_size`. Default: 64 MiB.
    pub fn connection_buffer(mut self, bytes: usize) -> Self {
        self.config.connection_buffer = bytes;
        self
    }

    /// Connections from other nodes this node keeps open (or in their handshake) at once;
    /// more are refused at the QUIC level, and their dialer gets
    /// [`Error::Unreachable`]. Connections this node dials do not count. Default: 4,096.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections;
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
    /// state for every stream a peer may open, so this is also a memory cost per connection.
    /// Default: 128.
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

    /// A stream on which nothing arrives (or nothing can be sent) for this long fails with
    /// [`Error::IdleTimeout`]. Default: 5 minutes.
    pub fn idle_stream_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_stream_timeout = timeout;
        self
    }

    /// Flow-control window of one stream: bytes a peer may send before this node reads them.
    /// Default: 1 MiB.
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes;
        self
    }

    /// Flow-control window of a whole connection. Default: 16 MiB.
    pub fn connection_window(mut self, bytes: u32) -> Self {
        self.config.connection_window = bytes;
        self
    }

    /// A connection on which nothing is received for this long is closed. Default: 30 s.
    pub fn idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_connection_timeout = timeout;
        self
    }

    /// Interval of keep-alive packets on idle connections. Default: 10 s.
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

    /// Binds the node to `addr` (port 0 picks a free port) and starts accepting connections.
    /// Must be called within a tokio runtime.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Node, Error> {
        let NodeBuilder {
            config,
            key,
            services,
        } = self;
        config.validate()?;
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| Error::Config("no address to bind".into()))?;
        let key = key.unwrap_or_else(SecretKey::generate);
        let transports = Transports::new(&config)?;

        let (cert, private) = key.certificate()?;
        let mut crypto = rustls::ServerConfig::builder_with_provider(identity::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AnyPeer::new()))
            .with_single_cert(vec![cert.clone()], private.clone_key())
            .map_err(|e| Error::InvalidKey(e.to_string()))?;
        crypto.alpn_protocols = vec![wire::ALPN.to_vec()];
        let crypto =
            Arc::new(QuicServerConfig::try_from(crypto).map_err(|e| Error::Config(e.to_string()))?);
        let server_config = |transport: &Arc<quinn::TransportConfig>| {
            let mut server = quinn::ServerConfig::with_crypto(crypto.clone());
            server.transport_config(Arc::clone(transport));
            Arc::new(server)
        };
        let servers = ServerConfigs {
            wan: server_config(&transports.wan),
            loopback: server_config(&transports.loopback),
        };

        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(MAX_UDP_PAYLOAD)
            .map_err(|e| Error::Config(e.to_string()))?;
        let socket = udp_socket(addr)?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(quinn::ServerConfig::clone(&servers.wan)),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let local_addr = endpoint.local_addr()?;
        let shared = Arc::new(Shared {
            id: key.public(),
            config,
            services: RwLock::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            accepted: AtomicUsize::new(0),
        });
        for service in services {
            shared.add_service(service);
        }
        tokio::spawn(accept(endpoint.clone(), servers, Arc::clone(&shared)));
        Ok(Node {
            inner: Arc::new(NodeInner {
                endpoint,
                local_addr,
                key,
                certificate: cert,
                private,
                transports,
                shared,
            }),
        })
    }
}

/// Server settings for peers elsewhere and for peers on this machine.
struct ServerConfigs {
    wan: Arc<quinn::ServerConfig>,
    loopback: Arc<quinn::ServerConfig>,
}

/// A UDP socket bound to `addr`, with buffers large enough for bulk transfers.
fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4 peers too where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the system may cap the sizes, which only costs speed.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Accepts connections until the endpoint closes.
async fn accept(endpoint: quinn::Endpoint, servers: ServerConfigs, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.is_shutting_down() {
            incoming.refuse();
            continue;
        }
        let Some(slot) = AcceptedSlot::take(&shared) else {
            tracing::debug!("connection refused: max_connections reached");
            incoming.refuse();
            continue;
        };
        let server = if incoming.remote_address().ip().is_loopback() {
            Arc::clone(&servers.loopback)
        } else {
            Arc::clone(&servers.wan)
        };
        let connecting = match incoming.accept_with(server) {
            Ok(connecting) => connecting,
            Err(err) => {
                tracing::debug!(%err, "incoming connection failed");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let timeout = shared.config.connect_timeout;
            let quic = match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(quic)) => quic,
                Ok(Err(err)) => {
                    tracing::debug!(%err, "incoming connection failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("incoming connection timed out in its handshake");
                    return;
                }
            };
            match identity::remote_node_id(&quic) {
                Some(remote) => {
                    Connection::start(quic, remote, shared, Some(slot));
                }
                None => quic.close(wire::CLOSE_NORMAL.into(), b"no node id"),
            }
        });
    }
}
