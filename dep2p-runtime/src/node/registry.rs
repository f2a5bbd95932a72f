//! The registry: a node's live connection to each peer, the dials in progress, and the events
//! of connections opening and closing.
//!
//! It holds connections weakly: a dialed connection still closes when its last handle goes.
//!
//! When two connections to one peer are established (both nodes dialed each other at once),
//! both nodes keep the one dialed by the node with the smaller [`NodeId`]; the other is
//! retired. A dialed connection found to be a duplicate as its dial completes is closed at
//! once; one already handed out is closed by its dialer when its last handle goes. Both close
//! with the code `0x03`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use tokio::sync::broadcast;

use crate::connection::{Connection, Link};
use crate::error::Error;
use crate::id::NodeId;

use super::events::{ConnectionEvent, Events, EVENTS_CAPACITY};

/// A dial in progress, shared by every `connect` to its peer.
pub(crate) type Dial = Shared<BoxFuture<'static, Result<Connection, Error>>>;

pub(crate) struct Registry {
    local: NodeId,
    inner: Mutex<Inner>,
    events: broadcast::Sender<ConnectionEvent>,
}

#[derive(Default)]
struct Inner {
    /// The connection kept to each peer.
    links: HashMap<NodeId, Weak<Link>>,
    /// The dial in progress to each peer, while someone awaits it.
    dials: HashMap<NodeId, WeakShared<BoxFuture<'static, Result<Connection, Error>>>>,
}

/// What became of a newly established connection.
pub(crate) enum Registered {
    /// It is served; the entry reports its closing when dropped.
    Entry(Entry),
    /// It is a dialed duplicate of this live connection, which is kept instead.
    Duplicate(Connection),
}

impl Registry {
    pub(crate) fn new(local: NodeId) -> Arc<Registry> {
        Arc::new(Registry {
            local,
            inner: Mutex::default(),
            events: broadcast::channel(EVENTS_CAPACITY).0,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A handle on the live connection kept to `id`.
    pub(crate) fn live(&self, id: NodeId) -> Option<Connection> {
        let link = self.inner().links.get(&id)?.upgrade()?;
        link.try_connection()
    }

    /// The dial in progress to `id`, or a new one made by `dial`.
    pub(crate) fn dial(
        &self,
        id: NodeId,
        dial: impl FnOnce() -> BoxFuture<'static, Result<Connection, Error>>,
    ) -> Dial {
        let mut inner = self.inner();
        if let Some(pending) = inner.dials.get(&id).and_then(WeakShared::upgrade) {
            return pending;
        }
        let pending = dial().shared();
        if let Some(weak) = pending.downgrade() {
            inner.dials.insert(id, weak);
        }
        pending
    }

    /// Forgets the dial to `id`, which has ended.
    pub(crate) fn dial_ended(&self, id: NodeId) {
        self.inner().dials.remove(&id);
    }

    /// Whether the connection `link` is kept over `other` to the same peer: the one dialed by
    /// the node with the smaller id; between two dialed by the same node, the older.
    fn preferred(&self, link: &Link, other: &Link) -> bool {
        let dialer = |l: &Link| {
            if l.direction() == crate::connection::Direction::Dialed {
                self.local
            } else {
                l.remote()
            }
        };
        dialer(link) < dialer(other)
    }

    /// Records a newly established connection and reports it as connected, unless it is a
    /// dialed duplicate of a live connection, which is then returned.
    pub(crate) fn register(self: &Arc<Self>, link: &Arc<Link>) -> Registered {
        let id = link.remote();
        let mut inner = self.inner();
        let kept = inner.links.get(&id).and_then(Weak::upgrade);
        let listed = match kept {
            // A node that dials itself has both ends of each connection: neither is kept.
            _ if id == self.local => false,
            Some(old) if old.is_open() => {
                if self.preferred(link, &old) {
                    old.retire();
                    true
                } else if link.direction() == crate::connection::Direction::Dialed {
                    match old.try_connection() {
                        Some(conn) => return Registered::Duplicate(conn),
                        None => true,
                    }
                } else {
                    // The peer dialed a duplicate: it closes it.
                    false
                }
            }
            _ => true,
        };
        if listed {
            inner.links.insert(id, Arc::downgrade(link));
        }
        let _ = self.events.send(ConnectionEvent::Connected {
            id,
            direction: link.direction(),
            addr: link.quic().remote_address(),
        });
        Registered::Entry(Entry {
            registry: Arc::clone(self),
            link: Arc::downgrade(link),
            id,
            direction: link.direction(),
            quic: link.quic().clone(),
        })
    }

    /// Handles on the live connection to each peer, and a subscription to the events after
    /// them.
    pub(crate) fn snapshot(&self) -> (Vec<Connection>, Events) {
        let inner = self.inner();
        let connections = inner
            .links
            .values()
            .filter_map(Weak::upgrade)
            .filter_map(|link| link.try_connection())
            .collect();
        (connections, Events::new(self.events.subscribe()))
    }

    pub(crate) fn subscribe(&self) -> Events {
        Events::new(self.events.subscribe())
    }
}

/// A served connection's place in the registry: dropped when the connection has closed, it
/// removes the connection and reports it as disconnected.
pub(crate) struct Entry {
    registry: Arc<Registry>,
    link: Weak<Link>,
    id: NodeId,
    direction: crate::connection::Direction,
    quic: quinn::Connection,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut inner = self.registry.inner();
        if inner
            .links
            .get(&self.id)
            .is_some_and(|kept| Weak::ptr_eq(kept, &self.link))
        {
            inner.links.remove(&self.id);
        }
        let reason = self
            .quic
            .close_reason()
            .map_or(Error::Closed, |e| Error::from_connection(&e));
        let _ = self.registry.events.send(ConnectionEvent::Disconnected {
            id: self.id,
            direction: self.direction,
            reason,
        });
    }
}
