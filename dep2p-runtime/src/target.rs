//! [`Target`]: what a call is made on — a connection, or something that provides one when a
//! call needs it (a reconnecting [`Peer`](crate::Peer)).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::connection::Connection;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::intercept::{ClientLayer, ClientLayers};
use crate::shared::Shared;

/// What a call is made on: the argument of a generated client's `new`.
///
/// * A [`Connection`]: every call goes over it; when it is lost, calls fail with
///   [`Error::ConnectionLost`]. Calling through it costs what calling the connection directly
///   does: no allocation, no wait.
/// * A [`Peer`](crate::Peer): each call waits, within its deadline, for the peer's current
///   connection (dialing it, or redialing after a loss) and fails with
///   [`Error::Unreachable`] if none comes in time.
/// * A [`PeerSet`](crate::PeerSet): each call goes to one of its peers that is connected,
///   the less busy of two picked at random, and waits within its deadline for one if none is.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Target {
    route: Route,
    /// Hooks run around each call through this target, inside the node's.
    layers: ClientLayers,
}

#[derive(Clone)]
enum Route {
    Connection(Connection),
    Provider(Arc<dyn Provide>),
}

/// A source of connections for calls: what a reconnecting peer and a set of peers give a
/// [`Target`].
pub(crate) trait Provide: Send + Sync + 'static {
    /// The provider one call uses, made as the call starts. A request-response call keeps it
    /// (as its [`Retries`]) until it has its answer, so a provider that counts calls in
    /// flight counts while it lives; other calls keep it while their connection is provided.
    /// Default: `None`, for this provider itself.
    fn for_call(&self) -> Option<Arc<dyn Provide>> {
        None
    }

    /// The node whose settings calls through this target use.
    fn shared(&self) -> &Arc<Shared>;

    /// A connection to call over, waited for until `deadline` (a call without one: a bound
    /// of the provider's choosing). Fails with [`Error::Unreachable`] if none comes in time.
    fn connection<'a>(
        &'a self,
        deadline: &'a Deadline,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, Error>> + Send + 'a>>;

    /// After `attempts` attempts of a request-response call, the last of which provably never
    /// reached a handler, or, for an idempotent call, failed in transport before any answer
    /// (see [`RetryPolicy`](crate::RetryPolicy)): how long to wait before
    /// the next one, or `None` to give up. Counts the failure against any retry budget.
    fn retry_after(&self, attempts: u32) -> Option<Duration>;

    /// Records a request-response call that was answered, which refills any retry budget.
    fn succeeded(&self);

    /// Describes the provider for `Debug`.
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl Target {
    /// A target served by `provider`.
    pub(crate) fn provider(provider: Arc<dyn Provide>) -> Self {
        Target {
            route: Route::Provider(provider),
            layers: ClientLayers::default(),
        }
    }

    /// The connection every call goes over, if this target is one.
    pub fn as_connection(&self) -> Option<&Connection> {
        match &self.route {
            Route::Connection(conn) => Some(conn),
            Route::Provider(_) => None,
        }
    }

    /// This target, running `layer`'s hooks around each call made through it (by every
    /// client made from it), inside the layers of the node
    /// ([`NodeBuilder::client_layer`](crate::NodeBuilder::client_layer)) and of the target
    /// it was made from. Layers run `before` in the order added and `after` in the reverse
    /// order.
    ///
    /// ```no_run
    /// # async fn run(conn: dep2p_runtime::Connection) {
    /// use dep2p_runtime::{CallInfo, ClientLayer, Error, RequestMetadata, Target};
    ///
    /// struct Tenant;
    ///
    /// impl ClientLayer for Tenant {
    ///     fn before(&self, _: &CallInfo, metadata: &mut RequestMetadata<'_>) -> Result<(), Error> {
    ///         metadata.push("tenant", "blue");
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let target = Target::from(conn).with_layer(Tenant);
    /// // `SomeClient::new(target)` now sends `tenant: blue` with every call.
    /// # }
    /// ```
    pub fn with_layer(mut self, layer: impl ClientLayer) -> Self {
        self.layers = self.layers.with(Arc::new(layer));
        self
    }

    /// The layers of this target's own, without the node's.
    pub(crate) fn layers(&self) -> &ClientLayers {
        &self.layers
    }

    /// The settings of the node calls through this target are made from.
    pub(crate) fn config(&self) -> &Config {
        match &self.route {
            Route::Connection(conn) => conn.config(),
            Route::Provider(provider) => provider.shared().config(),
        }
    }

    /// The connection to make a call on: this one, at once, or the provider's, waited for
    /// until `deadline`.
    pub(crate) async fn connection(self, deadline: &Deadline) -> Result<Connection, Error> {
        match self.route {
            Route::Connection(conn) => Ok(conn),
            Route::Provider(provider) => {
                let provider = provider.for_call().unwrap_or(provider);
                provider.connection(deadline).await
            }
        }
    }
}

/// Where a request-response call retries: the provider of its connections, when it has one.
pub(crate) type Retries = Option<Arc<dyn Provide>>;

impl Target {
    /// The connection itself, for a target that is one; the target back otherwise.
    pub(crate) fn into_connection(self) -> Result<Connection, Self> {
        match self.route {
            Route::Connection(conn) => Ok(conn),
            route => Err(Target {
                route,
                layers: self.layers,
            }),
        }
    }

    /// The connection to make a call on, and, for a provider, the provider to retry with.
    pub(crate) async fn connection_and_retries(
        self,
        deadline: &Deadline,
    ) -> Result<(Connection, Retries), Error> {
        match self.route {
            Route::Connection(conn) => Ok((conn, None)),
            Route::Provider(provider) => {
                let provider = provider.for_call().unwrap_or(provider);
                let conn = provider.connection(deadline).await?;
                Ok((conn, Some(provider)))
            }
        }
    }
}

impl From<Connection> for Target {
    fn from(conn: Connection) -> Self {
        Target {
            route: Route::Connection(conn),
            layers: ClientLayers::default(),
        }
    }
}

impl From<&Connection> for Target {
    fn from(conn: &Connection) -> Self {
        Target::from(conn.clone())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Route::Connection(conn) => fmt::Debug::fmt(conn, f),
            Route::Provider(provider) => provider.describe(f),
        }
    }
}
