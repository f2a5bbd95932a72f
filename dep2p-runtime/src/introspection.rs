//! The services every node serves unless told not to: reflection (`dep2p.reflection.v1`, which
//! services and methods the node serves) and health (`dep2p.health.v1`, whether it serves).
//!
//! Both are ordinary `#[service]` traits, called like any other (`docs/PROTOCOL.md`, section
//! 14). Their generated code reaches the runtime through `crate::__private`, as it would from
//! another crate.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::health::{could_be_served, HealthState, HealthStatus};
use crate::service::{ServiceInfo, Services};
use crate::stream::Sender;

/// What a node serves: `dep2p.reflection.v1`. Served by every node unless turned off with
/// [`NodeBuilder::reflection`](crate::NodeBuilder::reflection); call it with
/// [`ReflectionClient`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::{Node, ReflectionClient};
///
/// let server = Node::builder().bind("127.0.0.1:0").await?;
/// let client = Node::builder().bind("127.0.0.1:0").await?;
/// let conn = client.connect(server.local_addr(), server.id()).await?;
///
/// for service in ReflectionClient::new(conn).list().await? {
///     println!("{}: {} methods", service.name(), service.methods().len());
/// }
/// # Ok(()) }
/// ```
#[crate::service(crate = "crate", name = "dep2p.reflection.v1")]
pub trait Reflection {
    /// Every service the node serves, sorted by name, each with its methods in declaration
    /// order (none for a service that does not describe itself).
    #[idempotent]
    async fn list(&self) -> Vec<ServiceInfo>;
}

/// Whether a node and its services are serving: `dep2p.health.v1`, in the spirit of gRPC's
/// health checking protocol. Served by every node unless turned off with
/// [`NodeBuilder::health_service`](crate::NodeBuilder::health_service); call it with
/// [`HealthClient`], and set what it reports with [`Node::health`](crate::Node::health).
///
/// The service name `""` stands for the node as a whole.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::{HealthClient, HealthStatus, Node};
///
/// let server = Node::builder().bind("127.0.0.1:0").await?;
/// let client = Node::builder().bind("127.0.0.1:0").await?;
/// let conn = client.connect(server.local_addr(), server.id()).await?;
///
/// let health = HealthClient::new(conn);
/// assert_eq!(health.check(String::new()).await?, HealthStatus::Serving);
/// assert_eq!(health.check("no.such.service".into()).await?, HealthStatus::Unknown);
/// # Ok(()) }
/// ```
#[crate::service(crate = "crate", name = "dep2p.health.v1")]
pub trait Health {
    /// The status of `service` (`""`: the node as a whole) now.
    #[idempotent]
    async fn check(&self, service: String) -> HealthStatus;

    /// The status of `service` (`""`: the node) now, then each time it changes, until the
    /// caller drops the stream. Once the node is shutting down it sends `NotServing` and
    /// ends the stream, so that a watch never holds up a graceful shutdown. For a name longer
    /// than 256 bytes, which no service can have, it sends `Unknown` and ends.
    ///
    /// While the status does not change, the node sends it again every 60 s (or every half
    /// of its own idle-stream timeout, if that is shorter), so that the caller's idle bound
    /// (`NodeBuilder::idle_stream_timeout`, 5 minutes by default) does not end a quiet watch:
    /// a status equal to the last one means no change.
    #[server_stream]
    async fn watch(&self, service: String, out: Sender<HealthStatus>);
}

/// The reflection service of a node.
pub(crate) struct NodeReflection {
    /// Weak: the registry holds this service.
    services: Weak<Services>,
}

impl NodeReflection {
    pub(crate) fn new(services: &Arc<Services>) -> Self {
        NodeReflection {
            services: Arc::downgrade(services),
        }
    }
}

impl Reflection for NodeReflection {
    async fn list(&self) -> Vec<ServiceInfo> {
        self.services
            .upgrade()
            .map_or_else(Vec::new, |services| services.list())
    }
}

/// The longest a watch goes without sending the status.
const MAX_REPEAT: Duration = Duration::from_secs(60);

/// The health service of a node.
pub(crate) struct NodeHealth {
    state: Arc<HealthState>,
    /// How long a watch goes without sending the status before it sends it again.
    repeat: Duration,
}

impl NodeHealth {
    /// The health service reporting `state`, of a node whose idle-stream timeout is
    /// `idle_stream_timeout`.
    pub(crate) fn new(state: Arc<HealthState>, idle_stream_timeout: Duration) -> Self {
        NodeHealth {
            state,
            // Never zero: an idle bound of a nanosecond must not make a watch spin.
            repeat: MAX_REPEAT
                .min(idle_stream_timeout / 2)
                .max(Duration::from_millis(1)),
        }
    }
}

impl Health for NodeHealth {
    async fn check(&self, service: String) -> HealthStatus {
        self.state.status(&service)
    }

    async fn watch(&self, service: String, mut out: Sender<HealthStatus>) {
        if !could_be_served(&service) {
            // Unknown for good: no need to keep the name for the length of a watch.
            drop(service);
            let _ = out.send(HealthStatus::Unknown).await;
            let _ = out.finish();
            return;
        }
        // Subscribed before the first status is read, so no change is missed.
        let mut changes = self.state.subscribe();
        let mut last = None;
        let mut quiet = false;
        loop {
            let status = self.state.status(&service);
            if last != Some(status) || quiet {
                if out.send(status).await.is_err() {
                    return;
                }
                last = Some(status);
            }
            if self.state.is_shutting_down() {
                break;
            }
            quiet = match tokio::time::timeout(self.repeat, changes.changed()).await {
                Ok(Ok(())) => false,
                Ok(Err(_)) => break,
                Err(_) => true,
            };
        }
        let _ = out.finish();
    }
}
