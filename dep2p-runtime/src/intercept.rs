//! Client layers: hooks a node, or a target, runs around each outgoing call.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::id::NodeId;
use crate::outcome::Outcome;
use crate::wire::Kind;

/// Hooks run around each outgoing call: before it is sent, to add metadata or fail it, and
/// once it has ended, to observe its outcome. Install one for every call a node makes with
/// [`NodeBuilder::client_layer`](crate::NodeBuilder::client_layer), or for the calls through
/// one target with [`Target::with_layer`](crate::Target::with_layer).
///
/// Both methods run inline on the caller's task: keep them quick and do not block in them.
/// With none installed, a call costs nothing more.
///
/// # When `after` runs
///
/// For a request-response call, once the result (or the error) is in; for a notification,
/// once it is handed to QUIC; for the streaming kinds, when the call's
/// [`Response`](crate::Response) completes (or, if the call fails to open, then). A call
/// (or a streaming call's `Response`) dropped before that ends with
/// [`Outcome::Failed`]`(`[`Error::Cancelled`]`)`. When a layer's `before` fails a call, the
/// layers after it are not asked, and those before it see the failure in `after`. A
/// request-response call retried through a [`Peer`](crate::Peer) is one call to its layers:
/// `before` runs once, and its metadata goes with every attempt.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use dep2p_runtime::{CallInfo, ClientLayer, Error, Outcome, RequestMetadata};
///
/// /// Signs every call with a token, and logs the slow ones.
/// struct Token(String);
///
/// impl ClientLayer for Token {
///     fn before(&self, _call: &CallInfo, metadata: &mut RequestMetadata<'_>) -> Result<(), Error> {
///         metadata.push("token", self.0.clone());
///         Ok(())
///     }
///
///     fn after(&self, call: &CallInfo, outcome: &Outcome, elapsed: Duration) {
///         if elapsed > Duration::from_secs(1) {
///             eprintln!("{}.{} took {elapsed:?}: {}", call.service(), call.method(), outcome.name());
///         }
///     }
/// }
/// ```
pub trait ClientLayer: Send + Sync + 'static {
    /// Runs before the call is sent: may add metadata, or fail the call with an error, which
    /// its caller gets (nothing is sent). Default: does nothing.
    fn before(&self, call: &CallInfo, metadata: &mut RequestMetadata<'_>) -> Result<(), Error> {
        let _ = (call, metadata);
        Ok(())
    }

    /// Runs once the call has ended (see the trait's description for when), with the time
    /// since `before`. Default: does nothing.
    fn after(&self, call: &CallInfo, outcome: &Outcome, elapsed: Duration) {
        let _ = (call, outcome, elapsed);
    }
}

/// What a [`ClientLayer`] sees of an outgoing call.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo {
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
    pub(crate) kind: Kind,
    pub(crate) peer: Option<NodeId>,
    pub(crate) timeout: Option<Duration>,
}

impl CallInfo {
    /// The service called.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The method called.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The method's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The node called, when the call's target is a [`Connection`](crate::Connection); `None`
    /// for a [`Peer`](crate::Peer) or a [`PeerSet`](crate::PeerSet), whose connection is
    /// found later.
    pub fn peer(&self) -> Option<NodeId> {
        self.peer
    }

    /// The timeout the caller set with [`Call::timeout`](crate::Call::timeout); `None` for
    /// the default.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// The metadata of an outgoing call, which a [`ClientLayer`] may add to.
#[derive(Debug)]
pub struct RequestMetadata<'a> {
    entries: &'a mut Vec<(String, String)>,
}

impl<'a> RequestMetadata<'a> {
    pub(crate) fn new(entries: &'a mut Vec<(String, String)>) -> Self {
        RequestMetadata { entries }
    }

    /// Attaches an entry, after those already there. The header bounds of
    /// [`Call::metadata`](crate::Call::metadata) apply.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.push((key.into(), value.into()));
    }

    /// The value of the first entry with `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A list of client layers, cheap to clone; empty by default.
#[derive(Clone, Default)]
pub(crate) struct ClientLayers(Option<Arc<[Arc<dyn ClientLayer>]>>);

impl fmt::Debug for ClientLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} client layers", self.len())
    }
}

impl ClientLayers {
    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The layers, in the order they run `before`.
    pub(crate) fn as_slice(&self) -> &[Arc<dyn ClientLayer>] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// These layers, then `layer`.
    pub(crate) fn with(&self, layer: Arc<dyn ClientLayer>) -> Self {
        let all: Vec<_> = self
            .as_slice()
            .iter()
            .cloned()
            .chain(std::iter::once(layer))
            .collect();
        ClientLayers(Some(all.into()))
    }
}
