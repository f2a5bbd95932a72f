//! What every connection and call of a node shares: its identity, its configuration, whether
//! it is shutting down, and the tasks that serve calls.

use std::sync::atomic::{AtomicBool, Ordering};

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
}

impl Shared {
    pub(crate) fn new(id: NodeId, config: Config) -> Self {
        Shared {
            id,
            config,
            shutting_down: AtomicBool::new(false),
            tracker: TaskTracker::new(),
        }
    }

    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
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
