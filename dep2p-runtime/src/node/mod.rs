//! Nodes: an identity bound to a UDP socket, the services it serves and the connections it
//! makes.

mod admission;
mod builder;
mod endpoint;
mod reset;
mod shutdown;
mod transport;
mod weak;

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

pub use builder::NodeBuilder;
pub use weak::WeakNode;

use crate::config::Config;
use crate::connection::Connection;
use crate::deadline::Deadline;
use crate::dispatch;
use crate::error::Error;
use crate::id::NodeId;
use crate::identity::SecretKey;
use crate::service::{Service, Services};
use crate::shared::Shared;
use crate::tls::{self, ExpectedPeer};
use crate::wire;
use admission::Admission;
use endpoint::ServerConfigs;
use transport::{Transports, MAX_UDP_PAYLOAD};

/// A dep2p node: an identity bound to a UDP socket, serving its services to any peer that
/// connects and calling peers it connects to.
///
/// Cheap to clone. Dropping the last handle closes every connection and the node's socket
/// (released once no `Connection` or `CallContext` of the node is left either).
/// A service that needs its node (to dial other peers) holds a [`WeakNode`] or reaches it with
/// [`CallContext::node`](crate::CallContext::node): a `Node` it held would keep the node
/// alive, since the node holds its services.
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
    services: Arc<Services>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
        self.endpoint
            .close(wire::CLOSE_NORMAL.into(), b"node dropped");
        self.shared.set_closed();
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.shared.id())
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Binds a node with a validated configuration and starts its accept loop.
    fn start(
        config: Config,
        key: SecretKey,
        services: Vec<Arc<dyn Service>>,
        addr: SocketAddr,
    ) -> Result<Node, Error> {
        let transports = Transports::new(&config)?;
        let (cert, private) = key.certificate()?;
        let crypto = Arc::new(tls::server_config(&cert, &private)?);
        let server_config = |transport: &Arc<quinn::TransportConfig>| {
            let mut server = quinn::ServerConfig::with_crypto(crypto.clone());
            server.transport_config(Arc::clone(transport));
            Arc::new(server)
        };
        let servers = ServerConfigs {
            wan: server_config(&transports.wan),
            loopback: server_config(&transports.loopback),
        };

        let mut endpoint_config = reset::endpoint_config(&key);
        endpoint_config
            .max_udp_payload_size(MAX_UDP_PAYLOAD)
            .map_err(|e| Error::Config(e.to_string()))?;
        let socket = transport::udp_socket(addr)?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(quinn::ServerConfig::clone(&servers.wan)),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let local_addr = endpoint.local_addr()?;
        let admission = Admission::new(&config);
        let registry = Arc::new(Services::default());
        for service in services {
            registry.add(service);
        }
        // Calls reach their node through a weak pointer, which a handler may upgrade.
        let inner = Arc::new_cyclic(|node: &Weak<NodeInner>| {
            let node: Weak<dyn Any + Send + Sync> = node.clone();
            let shared = Arc::new(Shared::new(key.public(), config, node));
            tokio::spawn(endpoint::accept(
                endpoint.clone(),
                servers,
                Arc::clone(&shared),
                Arc::clone(&registry),
                admission,
            ));
            NodeInner {
                endpoint,
                local_addr,
                key,
                certificate: cert,
                private,
                transports,
                shared,
                services: registry,
            }
        });
        Ok(Node { inner })
    }

    /// This node's identity.
    pub fn id(&self) -> NodeId {
        self.inner.shared.id()
    }

    /// What this node's connections and calls share: its settings among them.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
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
        self.inner.services.add(Arc::new(service));
    }

    /// Connects to the node `id` at `addr`.
    ///
    /// Fails with [`Error::WrongNodeId`] if the peer proves another identity, with
    /// [`Error::Unreachable`] if no connection can be made within the connect timeout or the
    /// peer refuses it (at its connection limits, or shutting down), and with
    /// [`Error::Closed`] once this node is shutting down or closed.
    ///
    /// The connection closes when its last handle is dropped and no call is in flight on it
    /// (see [`Connection`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes abandons the handshake, and no
    /// connection is left open.
    pub async fn connect(&self, addr: SocketAddr, id: NodeId) -> Result<Connection, Error> {
        let inner = &self.inner;
        if inner.shared.is_shutting_down() {
            return Err(Error::Closed);
        }
        let verifier = Arc::new(ExpectedPeer::new(id));
        let crypto = tls::client_config(&inner.certificate, &inner.private, verifier.clone())?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(inner.transports.for_peer(addr));

        let unreachable = |reason: String| Error::Unreachable { addr, reason };
        let connecting = inner
            .endpoint
            .connect_with(config, addr, "dep2p")
            .map_err(|e| unreachable(e.to_string()))?;
        let timeout = inner.shared.config().connect_timeout;
        let quic = match Deadline::after(timeout).within(connecting).await {
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
        let conn = Connection::dialed(quic, id, Arc::clone(&inner.shared));
        dispatch::spawn(conn.link(), Arc::clone(&inner.services), ());
        Ok(conn)
    }
}
