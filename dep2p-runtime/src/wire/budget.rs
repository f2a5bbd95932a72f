//! The memory budgets for bytes a peer sends: its connection's and the whole node's.
//!
//! A frame over [`SMALL_FRAME`] takes room from both before it is read, waiting for it if
//! need be. The room travels with the frame: a frame handed on from its reader is bytes that
//! keep the room taken for as long as any part of them is alive, however many slices of it
//! are kept and by whom. A call's first frame counts even when small, from the moment its call
//! is accepted: taking its room never waits, and a call that finds no room is refused.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{WireError, FRAME_HEAD};

/// Frames up to this size (head included) are read without taking room from the budgets: the
/// QUIC stream limit already bounds how many such frames can be in progress.
pub(crate) const SMALL_FRAME: usize = 64 * 1024;

/// Where the room for a connection's frames comes from: the connection's own budget and the
/// node's, shared by all its connections.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    connection: Arc<Semaphore>,
    node: Arc<Semaphore>,
}

/// Room taken from both budgets, given back when dropped.
#[derive(Debug)]
pub(crate) struct Room {
    _connection: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
}

/// Which budget had no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Connection,
    Node,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Full::Connection => "this connection is over its memory budget",
            Full::Node => "the node is over its memory budget",
        })
    }
}

impl Budget {
    /// A budget of `connection` bytes of its own, within the node's `node`.
    pub(crate) fn new(connection: usize, node: Arc<Semaphore>) -> Self {
        Budget {
            connection: Arc::new(Semaphore::new(connection)),
            node,
        }
    }

    /// Waits for room for `bytes`: first in the connection's budget, then in the node's, so
    /// that a connection waiting for its own room holds none of the node's.
    pub(crate) async fn take(self, bytes: u32) -> Result<Room, WireError> {
        let connection = self
            .connection
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| WireError::Closed)?;
        let node = self
            .node
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| WireError::Closed)?;
        Ok(Room {
            _connection: connection,
            _node: node,
        })
    }

    /// Room for `bytes` if both budgets have it now. A budget with frames waiting for room
    /// has none to give.
    pub(crate) fn try_take(&self, bytes: u32) -> Result<Room, Full> {
        let connection = Arc::clone(&self.connection)
            .try_acquire_many_owned(bytes)
            .map_err(|_| Full::Connection)?;
        let node = Arc::clone(&self.node)
            .try_acquire_many_owned(bytes)
            .map_err(|_| Full::Node)?;
        Ok(Room {
            _connection: connection,
            _node: node,
        })
    }

    /// The payload of a call's first frame, holding room for the frame while any part of it
    /// is kept. A large frame came from a reader, which took its room before reading it: it
    /// is returned as it is. A small one takes room now, or is refused.
    pub(crate) fn try_hold(&self, payload: Bytes) -> Result<Bytes, Full> {
        let total = FRAME_HEAD + payload.len();
        if total > SMALL_FRAME {
            return Ok(payload);
        }
        // Small: fits in u32.
        let room = self.try_take(total as u32)?;
        Ok(hold(payload, room))
    }
}

/// Bytes kept together with the room they take.
struct Held<B> {
    bytes: B,
    _room: Room,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Held<B> {
    fn as_ref(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}

/// `bytes`, keeping `room` taken until the last slice of them is dropped.
pub(crate) fn hold<B>(bytes: B, room: Room) -> Bytes
where
    B: AsRef<[u8]> + Send + 'static,
{
    Bytes::from_owner(Held { bytes, _room: room })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(connection: usize, node: usize) -> (Budget, Arc<Semaphore>) {
        let node = Arc::new(Semaphore::new(node));
        (Budget::new(connection, Arc::clone(&node)), node)
    }

    #[test]
    fn room_comes_back_with_the_last_slice() {
        let (budget, node) = budget(1000, 1000);
        let held = budget.try_hold(Bytes::from(vec![7u8; 95])).unwrap();
        assert_eq!(node.available_permits(), 900);
        assert_eq!(budget.connection.available_permits(), 900);
        let head = held.slice(..10);
        let tail = held.slice(90..);
        drop(held);
        assert_eq!(node.available_permits(), 900);
        drop(head);
        assert_eq!(node.available_permits(), 900);
        assert_eq!(&tail[..], &[7; 5]);
        drop(tail);
        assert_eq!(node.available_permits(), 1000);
        assert_eq!(budget.connection.available_permits(), 1000);
    }

    #[test]
    fn a_full_budget_refuses_and_says_which() {
        let (budget, node) = budget(1000, 150);
        let first = budget.try_hold(Bytes::from(vec![0u8; 95])).unwrap();
        assert_eq!(
            budget.try_hold(Bytes::from(vec![0u8; 95])).unwrap_err(),
            Full::Node
        );
        // A refusal takes nothing from either budget.
        assert_eq!(budget.connection.available_permits(), 900);
        drop(first);
        assert_eq!(node.available_permits(), 150);
        let (small, _node) = self::budget(50, 1000);
        assert_eq!(
            small.try_hold(Bytes::from(vec![0u8; 95])).unwrap_err(),
            Full::Connection
        );
    }

    #[test]
    fn a_large_frame_keeps_the_room_its_reader_took() {
        let (budget, node) = budget(1 << 20, 1 << 20);
        let payload = Bytes::from(vec![0u8; SMALL_FRAME]);
        let held = budget.try_hold(payload).unwrap();
        assert_eq!(node.available_permits(), 1 << 20);
        drop(held);
    }

    #[tokio::test]
    async fn waiters_hold_back_new_room_until_served() {
        let (budget, node) = budget(1000, 300);
        let first = budget.clone().take(200).await.unwrap();
        let waiting = tokio::spawn(budget.clone().take(200));
        tokio::task::yield_now().await;
        // The node's budget has 100 left, all promised to the waiting frame.
        assert_eq!(budget.try_take(10).unwrap_err(), Full::Node);
        drop(first);
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(node.available_permits(), 100);
        assert!(budget.try_take(10).is_ok());
        drop(second);
    }
}
