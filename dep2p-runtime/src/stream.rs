//! The two ends of a message stream: [`Sender`] and [`Receiver`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::error::Error;
use crate::wire::{self, FrameReader, TAG_ITEM, TAG_RESULT, TAG_STATUS};

/// Runs `fut` under the call's deadline and the stream's idle timeout.
pub(crate) async fn bounded<F: Future<Output = Result<T, Error>>, T>(
    deadline: Option<Instant>,
    idle: Duration,
    fut: F,
) -> Result<T, Error> {
    let idle_at = Instant::now() + idle;
    match deadline {
        Some(deadline) if deadline <= idle_at => tokio::time::timeout_at(deadline, fut)
            .await
            .unwrap_or(Err(Error::Timeout)),
        _ => tokio::time::timeout_at(idle_at, fut)
            .await
            .unwrap_or(Err(Error::IdleTimeout)),
    }
}

/// What happens to the QUIC stream when a [`Sender`] goes away.
enum SenderEnd {
    /// The caller's end: dropping it without [`Sender::finish`] aborts the stream.
    Caller,
    /// A handler's end: the stream goes back to the runtime, which writes the handler's result.
    Handler(Option<oneshot::Sender<quinn::SendStream>>),
}

/// The sending end of a stream of `T`s.
///
/// On the calling side, [`finish`](Sender::finish) ends the stream cleanly (the receiver sees
/// the end); dropping a `Sender` without finishing it aborts the stream, and the receiver sees
/// [`Error::Cancelled`] rather than a clean end. In a handler, the stream ends when the handler
/// returns (and its `Sender` is gone), followed by the handler's result.
///
/// Each [`send`](Sender::send) waits while the receiver's flow-control window is full, so a
/// fast sender never buffers without bound.
pub struct Sender<T> {
    stream: Option<quinn::SendStream>,
    end: SenderEnd,
    max_message: usize,
    idle: Duration,
    deadline: Option<Instant>,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("open", &self.stream.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<T> Sender<T> {
    pub(crate) fn caller(
        stream: quinn::SendStream,
        max_message: usize,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        Sender {
            stream: Some(stream),
            end: SenderEnd::Caller,
            max_message,
            idle,
            deadline,
            _item: PhantomData,
        }
    }

    pub(crate) fn handler(
        stream: quinn::SendStream,
        back: oneshot::Sender<quinn::SendStream>,
        max_message: usize,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        Sender {
            stream: Some(stream),
            end: SenderEnd::Handler(Some(back)),
            max_message,
            idle,
            deadline,
            _item: PhantomData,
        }
    }

    /// A sender with no stream behind it: its first send fails with [`Error::Cancelled`].
    pub(crate) fn detached(max_message: usize, idle: Duration, deadline: Option<Instant>) -> Self {
        Sender {
            stream: None,
            end: SenderEnd::Caller,
            max_message,
            idle,
            deadline,
            _item: PhantomData,
        }
    }
}

impl<T: Serialize> Sender<T> {
    /// Sends one message, waiting while the receiver's window is full.
    ///
    /// Fails with [`Error::Cancelled`] once the receiver has gone away, with
    /// [`Error::MessageTooLarge`] (sending nothing) if the encoded message exceeds the limit,
    /// and with [`Error::Timeout`] or [`Error::IdleTimeout`] if the peer stops reading.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped, part of the message may have been written,
    /// and the stream is then aborted.
    pub async fn send(&mut self, item: T) -> Result<(), Error> {
        let frame = wire::encode(TAG_ITEM, &item, self.max_message)?;
        let stream = self.stream.as_mut().ok_or(Error::Cancelled)?;
        let written = bounded(self.deadline, self.idle, async {
            stream.write_chunk(frame).await.map_err(Error::from_write)
        })
        .await;
        if written.is_err() {
            if let Some(mut stream) = self.stream.take() {
                let _ = stream.reset(wire::STREAM_CANCELLED.into());
            }
        }
        written
    }

    /// Ends the stream cleanly: the receiver sees the end after the messages already sent.
    ///
    /// In a handler this only says "no more items"; the call itself ends when the handler
    /// returns.
    pub fn finish(mut self) -> Result<(), Error> {
        match &mut self.end {
            SenderEnd::Caller => {
                let mut stream = self.stream.take().ok_or(Error::Cancelled)?;
                stream.finish().map_err(|_| Error::Cancelled)
            }
            SenderEnd::Handler(_) => Ok(()),
        }
    }

    /// Completes when the receiver has stopped reading (dropped its end or was cancelled).
    pub async fn closed(&self) {
        if let Some(stream) = &self.stream {
            let _ = stream.stopped().await;
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        match &mut self.end {
            SenderEnd::Caller => {
                let _ = stream.reset(wire::STREAM_CANCELLED.into());
            }
            SenderEnd::Handler(back) => {
                if let Some(back) = back.take() {
                    if let Err(mut stream) = back.send(stream) {
                        let _ = stream.reset(wire::STREAM_CANCELLED.into());
                    }
                }
            }
        }
    }
}

/// Where a receiving end delivers the final result of its call.
pub(crate) type Trailer = oneshot::Sender<Result<Bytes, Error>>;

/// The receiving end of a stream of `T`s: a [`Stream`] of `Result<T, Error>`.
///
/// Yields each message in order, then `None` at a clean end. A stream that ends because the
/// peer failed, cancelled or broke the protocol yields one `Err` first, so a failure is never
/// mistaken for the end. Dropping a `Receiver` tells the sender to stop: its next `send` fails
/// with [`Error::Cancelled`], and a handler blocked on it is cancelled.
pub struct Receiver<T> {
    reader: Option<FrameReader>,
    /// On the calling side of server-streaming and bidirectional calls, the stream ends with the
    /// handler's result, which goes here.
    trailer: Option<Trailer>,
    expects_trailer: bool,
    idle: Duration,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    timer_armed: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("open", &self.reader.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<T> Receiver<T> {
    pub(crate) fn new(
        reader: FrameReader,
        trailer: Option<Trailer>,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        Receiver {
            reader: Some(reader),
            expects_trailer: trailer.is_some(),
            trailer,
            idle,
            deadline,
            timer: None,
            timer_armed: false,
            _item: PhantomData,
        }
    }

    /// A receiver whose stream has already ended.
    pub(crate) fn ended() -> Self {
        Receiver {
            reader: None,
            trailer: None,
            expects_trailer: false,
            idle: Duration::ZERO,
            deadline: None,
            timer: None,
            timer_armed: false,
            _item: PhantomData,
        }
    }

    /// Ends the stream with `outcome` for the trailer; returns what to yield.
    fn end(&mut self, outcome: Result<Bytes, Error>) -> Option<Result<T, Error>> {
        if let Some(mut reader) = self.reader.take() {
            let code = match outcome {
                Err(Error::Protocol(_)) | Err(Error::Decode(_)) => wire::STREAM_PROTOCOL,
                _ => wire::STREAM_CANCELLED,
            };
            reader.stop(code);
        }
        let yielded = match &outcome {
            Ok(_) => None,
            Err(e) => Some(Err(e.clone())),
        };
        if let Some(trailer) = self.trailer.take() {
            let _ = trailer.send(outcome);
        }
        yielded
    }

    /// Polls the timer that ends a stalled read: the deadline or the idle timeout, whichever
    /// comes first. Armed when a read first waits, re-armed after each message.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        if !self.timer_armed {
            self.timer_armed = true;
            let idle_at = Instant::now() + self.idle;
            let at = match self.deadline {
                Some(deadline) if deadline <= idle_at => deadline,
                _ => idle_at,
            };
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let fired = match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if !fired {
            return Poll::Pending;
        }
        Poll::Ready(match self.deadline {
            Some(deadline) if deadline <= Instant::now() => Error::Timeout,
            _ => Error::IdleTimeout,
        })
    }
}

impl<T: DeserializeOwned> Stream for Receiver<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(reader) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match reader.poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                return match this.poll_timer(cx) {
                    Poll::Ready(err) => Poll::Ready(this.end(Err(err))),
                    Poll::Pending => Poll::Pending,
                };
            }
        };
        this.timer_armed = false;
        Poll::Ready(match frame {
            Ok(Some((TAG_ITEM, payload))) => match wire::decode(&payload) {
                Ok(item) => Some(Ok(item)),
                Err(err) => this.end(Err(err)),
            },
            Ok(Some((TAG_RESULT, payload))) if this.expects_trailer => this.end(Ok(payload)),
            Ok(Some((TAG_STATUS, payload))) if this.expects_trailer => {
                this.end(Err(wire::decode_status(&payload)))
            }
            Ok(Some((tag, _))) => this.end(Err(Error::Protocol(format!(
                "unexpected frame tag {tag:#04x} in a message stream"
            )))),
            Ok(None) if this.expects_trailer => this.end(Err(Error::Protocol(
                "stream ended without the call's result".into(),
            ))),
            Ok(None) => this.end(Ok(Bytes::new())),
            Err(err) => this.end(Err(err)),
        })
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if let Some(trailer) = self.trailer.take() {
            let _ = trailer.send(Err(Error::Cancelled));
        }
    }
}

/// The final result of a streaming call: a future of `Result<R, Error>`.
///
/// For server-streaming and bidirectional calls it completes once the [`Receiver`] of the same
/// call has reached the end of the stream (or was dropped, giving [`Error::Cancelled`]): keep
/// polling the receiver. For client-streaming calls it completes when the handler returns.
pub struct Response<R> {
    fut: Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>,
}

impl<R> fmt::Debug for Response<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response").finish_non_exhaustive()
    }
}

impl<R: DeserializeOwned + Send + 'static> Response<R> {
    /// The result arrives through a receiver's trailer.
    pub(crate) fn from_trailer(rx: oneshot::Receiver<Result<Bytes, Error>>) -> Self {
        Response {
            fut: Box::pin(async move {
                match rx.await {
                    Ok(Ok(payload)) => wire::decode(&payload),
                    Ok(Err(err)) => Err(err),
                    Err(_) => Err(Error::Cancelled),
                }
            }),
        }
    }

    /// The result is the one frame left to read on `reader`.
    pub(crate) fn from_reader(
        mut reader: FrameReader,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        Response {
            fut: Box::pin(async move {
                bounded(deadline, idle, async move { read_result(&mut reader).await }).await
            }),
        }
    }
}

/// Reads the RESULT or STATUS frame that ends a call.
pub(crate) async fn read_result<R: DeserializeOwned>(reader: &mut FrameReader) -> Result<R, Error> {
    match reader.frame().await? {
        Some((TAG_RESULT, payload)) => wire::decode(&payload),
        Some((TAG_STATUS, payload)) => Err(wire::decode_status(&payload)),
        Some((tag, _)) => Err(Error::Protocol(format!(
            "expected the call's result, got frame tag {tag:#04x}"
        ))),
        None => Err(Error::Protocol("stream ended without the call's result".into())),
    }
}

impl<R> Future for Response<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}
