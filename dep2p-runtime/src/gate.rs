//! Who may connect: the rule a node applies to every connection another node dials to it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::id::NodeId;

/// Decides, from a dialer's verified node id and its address, whether its connection is
/// accepted. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Gate(Arc<dyn Fn(NodeId, SocketAddr) -> bool + Send + Sync>);

impl Gate {
    pub(crate) fn new(allow: impl Fn(NodeId, SocketAddr) -> bool + Send + Sync + 'static) -> Self {
        Gate(Arc::new(allow))
    }

    /// Whether the node `id`, dialing from `addr`, may connect.
    pub(crate) fn allows(&self, id: NodeId, addr: SocketAddr) -> bool {
        (self.0)(id, addr)
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gate")
    }
}
