//! Writing whole frames to a QUIC send stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

/// Writes `frame` whole to `send`.
///
/// The same as quinn's `SendStream::write_chunk`, as a plain future of a reference and the
/// frame (40 bytes): quinn's is an `async fn` of about 200 bytes, which every call's future
/// would hold and move.
///
/// # Cancel safety
///
/// Dropped before it completes, part of the frame may have been written.
pub(crate) fn write_frame(send: &mut quinn::SendStream, frame: Bytes) -> WriteFrame<'_> {
    WriteFrame { send, frame }
}

/// The future of [`write_frame`].
#[derive(Debug)]
pub(crate) struct WriteFrame<'a> {
    send: &'a mut quinn::SendStream,
    /// What is left to write.
    frame: Bytes,
}

impl WriteFrame<'_> {
    /// What is left to write, letting go of the stream.
    pub(crate) fn into_rest(self) -> Bytes {
        self.frame
    }
}

impl Future for WriteFrame<'_> {
    type Output = Result<(), quinn::WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        while !this.frame.is_empty() {
            // `write_chunks` writes what the stream's window takes at once and leaves the
            // rest in `frame`; a write that cannot start writes nothing and registers for
            // the window, so a new one can be made on each poll.
            let write = this
                .send
                .write_chunks(std::slice::from_mut(&mut this.frame));
            match std::pin::pin!(write).poll(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}
