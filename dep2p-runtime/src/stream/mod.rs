//! The two ends of a message stream: [`Sender`] and [`Receiver`], and the [`Response`] that
//! ends a streaming call.

mod receiver;
mod sender;

pub(crate) use receiver::poll_result;
pub use receiver::{Receiver, Response};
pub use sender::Sender;

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    /// Handlers run on any thread: the futures of both stream ends must be `Send`.
    #[allow(dead_code)]
    fn stream_futures_are_send(mut tx: Sender<u8>, mut rx: Receiver<u8>, response: Response<u8>) {
        use futures::StreamExt;
        is_send(&tx.send(1));
        is_send(&rx.next());
        is_send(&response);
    }
}
