//! What every connection and call of a node shares: its identity, its configuration, whether
//! it is shutting down or closed, the tasks that serve calls, and a weak way back to the node.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::id::NodeId;

/// The state of a node that its connections and calls reach.
#[derive(Debug)]
pub(crate) struct Shared {
    id: NodeId,
    config: Config,
    shutting_down: AtomicBool,
    /// Cancelled once the node has closed.
    closed: CancellationToken,
    tracker: TaskTracker,
    /// The node itself, without keeping it alive (its type belongs to a layer above).
    node: Weak<dyn Any + Send + Sync>,
    /// The node's memory budget, shared by all its connections: bytes of the frames peers
    /// send that this node holds.
    memory: Arc<Semaphore>,
}

impl Shared {
    pub(crate) fn new(id: NodeId, config: Config, node: Weak<dyn Any + Send + Sync>) -> Self {
        Shared {
            memory: Arc::new(Semaphore::new(config.memory_budget())),
            id,
            config,
            shutting_down: AtomicBool::new(false),
            closed: CancellationToken::new(),
            tracker: TaskTracker::new(),
            node,
        }
    }

    /// The node, while anything else keeps it alive.
    pub(crate) fn node(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.node.upgrade()
    }

    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The node's memory budget.
    pub(crate) fn memory(&self) -> &Arc<Semaphore> {
        &self.memory
    }

    /// The tasks serving calls, which a graceful shutdown waits for.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Marks the node as shutting down: it takes no new calls. Whether this call did it.
    pub(crate) fn begin_shutdown(&self) -> bool {
        !self.shutting_down.swap(true, Ordering::Relaxed)
    }

    /// Marks the node as closed, waking whoever waits for it.
    pub(crate) fn set_closed(&self) {
        self.closed.cancel();
    }

    /// Completes once the node has closed.
    pub(crate) fn closed(&self) -> WaitForCancellationFutureOwned {
        self.closed.clone().cancelled_owned()
    }
}
