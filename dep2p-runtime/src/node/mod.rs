//! Nodes: an identity bound to a UDP socket, the services it serves and the connections it
//! makes.

mod address;
mod admission;
mod builder;
mod confirm;
mod dial;
mod endpoint;
mod events;
mod registry;
mod reset;
mod shutdown;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod socket;
mod transport;
mod weak;

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use builder::Builtins;
pub use builder::NodeBuilder;
pub use events::{ConnectionEvent, Events};
pub use weak::WeakNode;

use crate::config::Config;
use crate::connection::Connection;
use crate::deadline::Deadline;
use crate::dispatch;
use crate::error::Error;
use crate::gate::Gate;
use crate::health::{HealthReporter, HealthState};
use crate::id::NodeId;
use crate::identity::SecretKey;
use crate::introspection::{HealthServer, NodeHealth, NodeReflection, ReflectionServer};
use crate::layer::NodeLayers;
use crate::service::{Service, Services};
use crate::shared::Shared;
use crate::tls::{self, ExpectedPeer};
use crate::wire;
use admission::Admission;
use endpoint::ServerConfigs;
use futures::FutureExt;
use registry::{Registered, Registry};
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
    /// The layers every service is served through.
    layers: NodeLayers,
    /// The live connection to each peer, dials in progress and connection events.
    registry: Arc<Registry>,
    /// The health statuses the node reports.
    health: Arc<HealthState>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
        self.health.shutting_down();
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
        builtins: Builtins,
        layers: NodeLayers,
        addr: SocketAddr,
        gate: Option<Gate>,
    ) -> Result<Node, Error> {
        let transports = Transports::new(&config)?;
        let (cert, private) = key.certificate()?;
        let crypto = Arc::new(tls::server_config(
            &cert,
            &private,
            None,
            config.protocol_version,
        )?);
        let server_config = |transport: &Arc<quinn::TransportConfig>| {
            let mut server = quinn::ServerConfig::with_crypto(crypto.clone());
            server.transport_config(Arc::clone(transport));
            Arc::new(server)
        };
        let servers = ServerConfigs {
            wan: server_config(&transports.wan),
            loopback: server_config(&transports.loopback),
            gate: gate.map(|gate| endpoint::Gated {
                gate,
                certificate: cert.clone(),
                private: private.clone_key(),
                wan: Arc::clone(&transports.wan),
                loopback: Arc::clone(&transports.loopback),
                version: config.protocol_version,
            }),
        };

        let mut endpoint_config = reset::endpoint_config(&key);
        endpoint_config
            .max_udp_payload_size(MAX_UDP_PAYLOAD)
            .map_err(|e| Error::Config(e.to_string()))?;
        let socket = transport::udp_socket(addr)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(quinn::ServerConfig::clone(&servers.wan)),
            transport::async_socket(socket)?,
            Arc::new(quinn::TokioRuntime),
        )?;
        let local_addr = endpoint.local_addr()?;
        let admission = Admission::new(&config);
        let services_registry = Arc::new(Services::default());
        let health = HealthState::new(&services_registry);
        for service in services {
            services_registry.add(layers.wrap(service))?;
        }
        // Then the built-in services, unless the application serves its own under their
        // names. The node's layers cover them too.
        if builtins.reflection {
            let reflection = ReflectionServer::new(NodeReflection::new(&services_registry));
            if !services_registry.contains(reflection.name()) {
                services_registry.add(layers.wrap(Arc::new(reflection)))?;
            }
        }
        if builtins.health {
            let service = NodeHealth::new(Arc::clone(&health), config.idle_stream_timeout);
            let service = HealthServer::new(service);
            if !services_registry.contains(service.name()) {
                services_registry.add(layers.wrap(Arc::new(service)))?;
            }
        }
        let connections = Registry::new(key.public());
        // Calls reach their node through a weak pointer, which a handler may upgrade.
        let inner = Arc::new_cyclic(|node: &Weak<NodeInner>| {
            let node: Weak<dyn Any + Send + Sync> = node.clone();
            let shared = Arc::new(Shared::new(key.public(), config, node));
            tokio::spawn(endpoint::accept(
                endpoint.clone(),
                servers,
                Arc::clone(&shared),
                Arc::clone(&services_registry),
                admission,
                Arc::clone(&connections),
            ));
            NodeInner {
                endpoint,
                local_addr,
                key,
                certificate: cert,
                private,
                transports,
                shared,
                services: services_registry,
                layers,
                registry: connections,
                health,
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

    /// Serves `service` on every connection, current and future, through the node's layers
    /// ([`NodeBuilder::layer`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the node already serves a service of the same name (see
    /// [`Service::name`]), built-in ones included; the node keeps serving that one.
    pub fn serve(&self, service: impl Service) -> Result<(), Error> {
        let service = self.inner.layers.wrap(Arc::new(service));
        self.inner.services.add(service)?;
        self.inner.health.changed();
        Ok(())
    }

    /// Sets the health statuses this node reports to its peers' health checks (see
    /// [`HealthReporter`] for what it reports with nothing set, and
    /// [`Health`](crate::Health) for the service). The statuses are kept, and reported by
    /// [`HealthReporter::status`], even if the node does not serve the health service.
    pub fn health(&self) -> HealthReporter {
        HealthReporter::new(Arc::clone(&self.inner.health))
    }

    /// Connects to the node `id` at `addr`, or returns the live connection to it.
    ///
    /// A node keeps one connection per peer. If it has a live connection to `id`, dialed or
    /// accepted, this returns a handle to it and `addr` is not used. If a dial to `id` is in
    /// progress, this waits for it and shares its outcome (whatever address it was given).
    /// Otherwise it dials `addr`. If the peer dials this node at the same time, both nodes
    /// keep the connection dialed by the node with the smaller [`NodeId`] (see
    /// [`Connection`]).
    ///
    /// A dial completes once the peer has confirmed the handshake, about one round trip after
    /// the TLS handshake, so that a refusal is reported here and not by the first call.
    ///
    /// Fails with [`Error::WrongNodeId`] if the peer proves another identity, with
    /// [`Error::Refused`] at once if the peer's [`accept_if`](NodeBuilder::accept_if) rule
    /// does not let this node in, with [`Error::Unreachable`] if no connection can be made
    /// within the connect timeout or the peer refuses it for its limits (or because it is
    /// shutting down), and with [`Error::Closed`] once this node is shutting down or closed.
    ///
    /// A connection this node dialed closes when its last handle is dropped and no call is in
    /// flight on it (see [`Connection`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes abandons the handshake unless
    /// another `connect` to the same peer awaits it too, and no connection is left open.
    pub async fn connect(&self, addr: SocketAddr, id: NodeId) -> Result<Connection, Error> {
        let inner = &self.inner;
        if inner.shared.is_shutting_down() {
            return Err(Error::Closed);
        }
        if let Some(conn) = inner.registry.live(id) {
            return Ok(conn);
        }
        let dial = inner.registry.dial(id, || {
            let node = self.clone();
            async move {
                let outcome = node.dial_once(addr, id).await;
                node.inner.registry.dial_ended(id);
                outcome
            }
            .boxed()
        });
        dial.await
    }

    /// Dials the node `id` at `addr` and serves the new connection, unless it turns out to
    /// duplicate one that is kept.
    async fn dial_once(&self, addr: SocketAddr, id: NodeId) -> Result<Connection, Error> {
        let inner = &self.inner;
        let verifier = Arc::new(ExpectedPeer::new(id));
        let crypto = tls::client_config(
            &inner.certificate,
            &inner.private,
            verifier.clone(),
            inner.shared.config().protocol_version,
        )?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(inner.transports.for_peer(addr));

        let unreachable = |reason: String| Error::Unreachable { addr, reason };
        let failed = |err: quinn::ConnectionError| {
            let presented = verifier.presented.lock().ok().and_then(|p| *p);
            match (presented, &err) {
                (Some(presented), _) if presented != id => Error::WrongNodeId {
                    expected: id,
                    presented,
                },
                (_, quinn::ConnectionError::ConnectionClosed(close))
                    if close.error_code
                        == quinn::TransportErrorCode::crypto(tls::REFUSED_ALERT) =>
                {
                    Error::Refused {
                        addr,
                        reason: "the peer does not accept connections from this node".into(),
                    }
                }
                _ => unreachable(err.to_string()),
            }
        };
        let connecting = inner
            .endpoint
            .connect_with(config, addr, "dep2p")
            .map_err(|e| unreachable(e.to_string()))?;
        let timeout = inner.shared.config().connect_timeout;
        let deadline = Deadline::after(timeout);
        let late = || unreachable(format!("no handshake within {timeout:?}"));
        let quic = match deadline.within(connecting).await {
            Ok(Ok(quic)) => quic,
            Ok(Err(err)) => return Err(failed(err)),
            Err(_) => return Err(late()),
        };
        match deadline.within(confirm::confirmed(&quic)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(failed(err)),
            Err(_) => {
                quic.close(wire::CLOSE_NORMAL.into(), b"handshake not confirmed");
                return Err(late());
            }
        }
        let conn = Connection::dialed(quic, id, Arc::clone(&inner.shared));
        match inner.registry.register(&conn.link()) {
            Registered::Entry(entry) => {
                dispatch::spawn(conn.link(), Arc::clone(&inner.services), entry);
                Ok(conn)
            }
            Registered::Duplicate(kept) => {
                conn.quic()
                    .close(wire::CLOSE_DUPLICATE.into(), b"duplicate connection");
                Ok(kept)
            }
        }
    }

    /// Handles on the live connection to each peer (one per peer), dialed and accepted.
    ///
    /// A handle keeps a dialed connection open while it lives (see [`Connection`]).
    pub fn connections(&self) -> Vec<Connection> {
        self.inner.registry.snapshot().0
    }

    /// The connection events from now on: connections established and closed.
    ///
    /// ```no_run
    /// # async fn run(node: dep2p_runtime::Node) {
    /// use dep2p_runtime::ConnectionEvent;
    ///
    /// let mut events = node.events();
    /// while let Some(event) = events.recv().await {
    ///     if let ConnectionEvent::Connected { id, direction, addr } = event {
    ///         println!("{id} at {addr} ({direction:?})");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> Events {
        self.inner.registry.subscribe()
    }

    /// [`connections`](Self::connections) and [`events`](Self::events) taken together: every
    /// connection established after the list was taken is reported by the events, and none
    /// listed is reported again as connected, so a caller tracking the node's peers misses
    /// nothing.
    pub fn connections_and_events(&self) -> (Vec<Connection>, Events) {
        self.inner.registry.snapshot()
    }
}
