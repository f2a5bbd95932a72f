//! The memory budget for bytes a peer sends on a connection.
//!
//! A frame over [`SMALL_FRAME`] takes room from it before it is read, waiting for it if need
//! be. The room travels with the frame: a frame handed on from its reader is bytes that keep
//! the room taken for as long as any part of them is alive, however many slices of it are
//! kept and by whom.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::WireError;

/// Frames up to this size (head included) are read without taking room from the budgets: the
/// QUIC stream limit already bounds how many such frames can be in progress.
pub(crate) const SMALL_FRAME: usize = 64 * 1024;

/// Where the room for a connection's frames comes from.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    connection: Arc<Semaphore>,
}

/// Room taken from a budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Room {
    _connection: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `connection` bytes.
    pub(crate) fn new(connection: usize) -> Self {
        Budget {
            connection: Arc::new(Semaphore::new(connection)),
        }
    }

    /// Waits for room for `bytes`.
    pub(crate) async fn take(self, bytes: u32) -> Result<Room, WireError> {
        let connection = self
            .connection
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| WireError::Closed)?;
        Ok(Room {
            _connection: connection,
        })
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

    #[tokio::test]
    async fn room_comes_back_with_the_last_slice() {
        let budget = Budget::new(1000);
        let room = budget.clone().take(100).await.unwrap();
        let held = hold(Bytes::from(vec![7u8; 95]), room);
        assert_eq!(budget.connection.available_permits(), 900);
        let head = held.slice(..10);
        let tail = held.slice(90..);
        drop(held);
        assert_eq!(budget.connection.available_permits(), 900);
        drop(head);
        assert_eq!(budget.connection.available_permits(), 900);
        assert_eq!(&tail[..], &[7; 5]);
        drop(tail);
        assert_eq!(budget.connection.available_permits(), 1000);
    }
}
