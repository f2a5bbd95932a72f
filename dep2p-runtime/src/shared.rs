//! What every connection and call of a node shares: its identity, its configuration, whether
//! it is shutting down, and the tasks that serve calls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::id::NodeId;

/// The state of a node that its connections and calls reach.
#[derive(Debug)]
pub(crate) struct Shared {
    id: NodeId,
    config: Config,
    shutting_down: AtomicBool,
    tracker: TaskTracker,
    /// Accepted connections open or in their handshake.
    pub(crate) accepted: AtomicUsize,
    /// The node's memory budget, shared by all its connections: bytes of the frames peers
    /// send that this node holds.
    memory: Arc<Semaphore>,
}

impl Shared {
    pub(crate) fn new(id: NodeId, config: Config) -> Self {
        Shared {
            memory: Arc::new(Semaphore::new(config.memory_budget())),
            id,
            config,
            shutting_down: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            accepted: AtomicUsize::new(0),
        }
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

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}
