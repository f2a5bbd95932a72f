//! Reaching a node without keeping it alive: [`WeakNode`], and the node that serves a call.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::context::CallContext;

use super::{Node, NodeInner};

/// A handle on a [`Node`] that does not keep it alive; [`upgrade`](Self::upgrade) it to use
/// the node.
///
/// A node holds the services it serves, so a service that held a [`Node`] would keep its own
/// node alive after the application dropped every handle: the node would never close. A
/// service that needs its node — to dial other peers, say — holds a `WeakNode` instead (or
/// asks [`CallContext::node`] for the node serving the call).
///
/// ```no_run
/// # async fn run() -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::{Node, WeakNode};
///
/// let node = Node::builder().bind("127.0.0.1:0").await?;
/// let weak: WeakNode = node.downgrade();
/// assert_eq!(weak.upgrade().map(|n| n.id()), Some(node.id()));
///
/// drop(node);
/// assert!(weak.upgrade().is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WeakNode {
    inner: Weak<NodeInner>,
}

impl WeakNode {
    /// The node, unless it has closed because every [`Node`] handle was dropped.
    ///
    /// A node that was shut down or closed, but still has handles, is returned; its calls and
    /// connections then fail with [`Error::Closed`](crate::Error::Closed) or
    /// [`Error::ShuttingDown`](crate::Error::ShuttingDown).
    pub fn upgrade(&self) -> Option<Node> {
        self.inner.upgrade().map(|inner| Node { inner })
    }
}

impl fmt::Debug for WeakNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.upgrade() {
            Some(node) => f.debug_tuple("WeakNode").field(&node.id()).finish(),
            None => f.write_str("WeakNode(dropped)"),
        }
    }
}

impl Node {
    /// A handle on this node that does not keep it alive.
    pub fn downgrade(&self) -> WeakNode {
        WeakNode {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

impl CallContext {
    /// The node serving this call, to make calls of its own (dial another peer, say), unless
    /// it has closed because every [`Node`] handle was dropped. Handlers need not keep a
    /// [`Node`] of their own, which would keep the node alive.
    ///
    /// The returned handle keeps the node alive while it is held: drop it when the handler
    /// is done with it.
    ///
    /// ```
    /// use dep2p_runtime::{service, CallContext, Error};
    ///
    /// #[service]
    /// pub trait Relay {
    ///     /// Calls `Relay.hello` on the node at `to`, and returns its answer.
    ///     async fn forward(&self, to: std::net::SocketAddr, id: String) -> Result<String, String>;
    ///
    ///     async fn hello(&self) -> String;
    /// }
    ///
    /// struct Forwarder;
    ///
    /// impl Relay for Forwarder {
    ///     async fn forward(&self, to: std::net::SocketAddr, id: String) -> Result<String, String> {
    ///         let ctx = CallContext::current().ok_or("outside a call")?;
    ///         let node = ctx.node().ok_or("the node has closed")?;
    ///         let id = id.parse().map_err(|e| format!("{e}"))?;
    ///         let conn = node.connect(to, id).await.map_err(|e: Error| e.to_string())?;
    ///         RelayClient::new(conn).hello().await.map_err(|e| e.to_string())
    ///     }
    ///
    ///     async fn hello(&self) -> String {
    ///         "hello".into()
    ///     }
    /// }
    /// ```
    pub fn node(&self) -> Option<Node> {
        let node = self.connection().shared().node()?;
        Arc::downcast::<NodeInner>(node)
            .ok()
            .map(|inner| Node { inner })
    }
}
