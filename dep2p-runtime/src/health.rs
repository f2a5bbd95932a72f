//! The health a node reports: [`HealthStatus`], the statuses an application sets through a
//! [`HealthReporter`], and the changes a watcher waits for.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::service::Services;
use crate::wire::MAX_NAME;

/// Whether a node, or one of its services, is serving: the answer of the health service
/// (see [`HealthClient`](crate::HealthClient)).
///
/// On the wire, a postcard enum: a varint, 0 for `Unknown`, 1 for `Serving`, 2 for
/// `NotServing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    /// The node does not serve a service of that name, and no status was set for it.
    Unknown,
    /// It serves.
    Serving,
    /// It does not serve now: set so by the application, or the node is shutting down.
    NotServing,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Serving => "serving",
            HealthStatus::NotServing => "not serving",
        })
    }
}

/// The health statuses of a node and its services, and a signal of their changes.
pub(crate) struct HealthState {
    /// The statuses the application set, by service name; `""` is the node as a whole.
    /// Only the application adds entries, so a peer cannot make it grow.
    set: Mutex<HashMap<String, HealthStatus>>,
    /// The node's services (weakly: they hold the health service, which holds this).
    services: Weak<Services>,
    /// Whether the node is shutting down (or closed), as its node tells it.
    shutting_down: AtomicBool,
    /// Bumped on every change a watcher may care for.
    changes: watch::Sender<()>,
}

impl HealthState {
    pub(crate) fn new(services: &Arc<Services>) -> Arc<HealthState> {
        Arc::new(HealthState {
            set: Mutex::default(),
            services: Arc::downgrade(services),
            shutting_down: AtomicBool::new(false),
            changes: watch::Sender::new(()),
        })
    }

    fn set_statuses(&self) -> MutexGuard<'_, HashMap<String, HealthStatus>> {
        // Nothing panics while the lock is held.
        self.set.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The status of `service` (`""`: the node) now.
    pub(crate) fn status(&self, service: &str) -> HealthStatus {
        if !could_be_served(service) {
            return HealthStatus::Unknown;
        }
        let set = self.set_statuses().get(service).copied();
        let served = service.is_empty()
            || self
                .services
                .upgrade()
                .is_some_and(|services| services.contains(service));
        let known = set.is_some() || served;
        if !known {
            HealthStatus::Unknown
        } else if self.is_shutting_down() {
            HealthStatus::NotServing
        } else {
            set.unwrap_or(HealthStatus::Serving)
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// The node has begun to shut down: from now on every name it knows is not serving.
    pub(crate) fn shutting_down(&self) {
        if !self.shutting_down.swap(true, Ordering::Relaxed) {
            self.changed();
        }
    }

    /// A receiver woken by every later change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Wakes the watchers: a status may have changed (a status set, a service served).
    pub(crate) fn changed(&self) {
        self.changes.send_replace(());
    }
}

/// Whether a service of this name could be served: its name fits in a call header. Any
/// other name is always `Unknown`.
pub(crate) fn could_be_served(service: &str) -> bool {
    service.len() <= MAX_NAME
}

/// Sets the health statuses a node reports, for the node as a whole (the service name `""`)
/// and for each service. Get it with [`Node::health`](crate::Node::health); cheap to clone.
///
/// What a node reports for a name, with nothing set: `Serving` for the node (`""`) and for
/// every service it serves, `Unknown` for any other name. A status set here replaces that
/// until [`clear`](Self::clear)ed; the node's status and its services' are independent. Once
/// the node is shutting down, it reports `NotServing` for every name it knows, whatever was
/// set.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::{HealthStatus, Node};
///
/// let node = Node::builder().bind("127.0.0.1:0").await?;
/// let health = node.health();
/// assert_eq!(health.status(""), HealthStatus::Serving);
///
/// // The database is gone: tell the peers watching before they call.
/// health.set("", HealthStatus::NotServing);
/// assert_eq!(health.status(""), HealthStatus::NotServing);
/// health.clear("");
/// assert_eq!(health.status("no.such.service"), HealthStatus::Unknown);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HealthReporter {
    state: Arc<HealthState>,
}

impl fmt::Debug for HealthReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.state.set_statuses().iter())
            .finish()
    }
}

impl HealthReporter {
    pub(crate) fn new(state: Arc<HealthState>) -> Self {
        HealthReporter { state }
    }

    /// Reports `status` for `service` (`""`: the node as a whole) from now on, until set
    /// again or cleared. Peers watching it are told at once. A name longer than 256 bytes,
    /// which no service can have (call headers refuse it), is always reported `Unknown`.
    pub fn set(&self, service: &str, status: HealthStatus) {
        let old = self
            .state
            .set_statuses()
            .insert(service.to_string(), status);
        if old != Some(status) {
            self.state.changed();
        }
    }

    /// Forgets the status set for `service`: the node reports what it would with nothing set.
    pub fn clear(&self, service: &str) {
        if self.state.set_statuses().remove(service).is_some() {
            self.state.changed();
        }
    }

    /// The status the node reports for `service` (`""`: the node as a whole) now.
    pub fn status(&self, service: &str) -> HealthStatus {
        self.state.status(service)
    }
}
