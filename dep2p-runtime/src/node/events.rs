//! Connection events: a node's connections opening and closing, as they happen.

use std::net::SocketAddr;

use tokio::sync::broadcast;

use crate::connection::Direction;
use crate::error::Error;
use crate::id::NodeId;

/// Events a subscriber that reads none may fall behind by before it loses the oldest.
pub(crate) const EVENTS_CAPACITY: usize = 1024;

/// A connection of the node opened or closed. Each connection gives one `Connected` and,
/// once it has closed, one `Disconnected`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A connection is established and served.
    Connected {
        /// The peer.
        id: NodeId,
        /// Which side dialed it.
        direction: Direction,
        /// The peer's address when it connected.
        addr: SocketAddr,
    },
    /// A connection closed.
    Disconnected {
        /// The peer.
        id: NodeId,
        /// Which side dialed it.
        direction: Direction,
        /// Why it closed, as calls on it would report it.
        reason: Error,
    },
    /// The subscriber fell behind: this many events, the oldest it had not read, are lost.
    Lagged {
        /// How many events were lost.
        missed: u64,
    },
}

/// A subscription to a node's [`ConnectionEvent`]s, from [`Node::events`](crate::Node::events).
///
/// Events are kept for the subscriber until it reads them, up to 1,024: a subscriber further
/// behind loses the oldest and reads one [`ConnectionEvent::Lagged`] in their place, then the
/// events after them. Reading late never slows the node.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<ConnectionEvent>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<ConnectionEvent>) -> Self {
        Events { rx }
    }

    /// The next event; `None` once the node is gone and every event has been read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is only taken when the future completes with it.
    pub async fn recv(&mut self) -> Option<ConnectionEvent> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(ConnectionEvent::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_subscriber_is_told_what_it_lost() {
        let (tx, rx) = broadcast::channel(2);
        let mut events = Events::new(rx);
        for missed in [Error::Closed, Error::Timeout, Error::Cancelled] {
            let id = crate::identity::SecretKey::generate().public();
            let _ = tx.send(ConnectionEvent::Disconnected {
                id,
                direction: Direction::Dialed,
                reason: missed,
            });
        }
        assert!(matches!(
            events.recv().await,
            Some(ConnectionEvent::Lagged { missed: 1 })
        ));
        assert!(matches!(
            events.recv().await,
            Some(ConnectionEvent::Disconnected {
                reason: Error::Timeout,
                ..
            })
        ));
        assert!(events.recv().await.is_some());
        drop(tx);
        assert!(events.recv().await.is_none());
    }
}
