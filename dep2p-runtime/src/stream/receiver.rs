//! The receiving end of a message stream: [`Receiver`], and the [`Response`] that ends a
//! streaming call.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::task::{self, ArcWake, AtomicWaker};
use futures::Stream;
use serde::de::DeserializeOwned;

use crate::deadline::{Deadline, IdleTimer};
use crate::error::Error;
use crate::hold::Hold;
use crate::wire::{self, FrameReader, TAG_ITEM, TAG_RESULT, TAG_STATUS};

/// The receiving half of a stream, shared by a [`Receiver`] and, on the calling side of
/// server-streaming and bidirectional calls, the [`Response`] that ends it.
struct Inbound {
    state: Mutex<InboundState>,
    wakers: Arc<Wakers>,
    /// On the calling side, keeps the call's connection open while the stream is read.
    _hold: Option<Hold>,
}

/// Whoever polls the QUIC stream wakes both the receiver and the response.
#[derive(Default)]
struct Wakers {
    receiver: AtomicWaker,
    response: AtomicWaker,
}

impl ArcWake for Wakers {
    fn wake_by_ref(arc: &Arc<Self>) {
        arc.receiver.wake();
        arc.response.wake();
    }
}

struct InboundState {
    reader: Option<FrameReader>,
    /// How the stream ended: the RESULT payload (empty for a stream without one) or why it
    /// failed. Set once.
    end: Option<Result<Bytes, Error>>,
    /// Whether a RESULT or STATUS frame ends the stream.
    expects_result: bool,
    /// Items taken so far: the response side sees progress in it.
    taken: u64,
}

impl InboundState {
    /// Waits until an item is at the front of the reader (`true`; it stays there until
    /// [`take_item`](Self::take_item)) or the stream has ended (`false`, with `end` set).
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.end.is_some() {
            return Poll::Ready(false);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Poll::Ready(false);
        };
        let end = match ready!(reader.poll_ready(cx)) {
            Ok(Some(TAG_ITEM)) => return Poll::Ready(true),
            Ok(Some(tag @ (TAG_RESULT | TAG_STATUS))) if self.expects_result => {
                let end = match tag {
                    TAG_RESULT => Ok(Bytes::copy_from_slice(reader.payload())),
                    _ => Err(Error::from_status_payload(reader.payload())),
                };
                reader.consume();
                let end = reader.check_end().map_err(Error::from).and(end);
                self.finish(end);
                return Poll::Ready(false);
            }
            Ok(Some(tag)) => Err(Error::Protocol(format!(
                "unexpected frame tag {tag:#04x} in a message stream"
            ))),
            Ok(None) if self.expects_result => Err(Error::Protocol(
                "stream ended without the call's result".into(),
            )),
            Ok(None) => Ok(Bytes::new()),
            Err(err) => Err(err.into()),
        };
        reader.consume();
        self.finish(end);
        Poll::Ready(false)
    }

    /// Decodes the item at the front of the reader and moves past it.
    fn take_item<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        let reader = self.reader.as_mut().ok_or(Error::Cancelled)?;
        let item = wire::decode(reader.payload()).map_err(Error::from);
        reader.consume();
        self.taken += 1;
        item
    }

    /// Ends the stream with `end`, unless it has ended already.
    fn finish(&mut self, end: Result<Bytes, Error>) {
        if self.end.is_some() {
            return;
        }
        if let Some(mut reader) = self.reader.take() {
            reader.try_finish();
            let code = match end {
                Err(Error::Protocol(_)) | Err(Error::Decode(_)) => wire::STREAM_PROTOCOL,
                _ => wire::STREAM_CANCELLED,
            };
            reader.stop(code);
        }
        self.end = Some(end);
    }
}

impl Inbound {
    fn new(reader: FrameReader, expects_result: bool, hold: Option<Hold>) -> Arc<Self> {
        Arc::new(Inbound {
            state: Mutex::new(InboundState {
                reader: Some(reader),
                end: None,
                expects_result,
                taken: 0,
            }),
            wakers: Arc::new(Wakers::default()),
            _hold: hold,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboundState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The response side: the call's result, once the stream has ended. Reads ahead one item
    /// at most, and leaves it for the receiver.
    ///
    /// `timer` bounds the wait for the peer: it restarts whenever the receiver takes an item
    /// (`seen` counts those already accounted for). While an item waits for the receiver, the
    /// wait is the application's, not the peer's, and no timer runs.
    fn poll_result(
        &self,
        cx: &mut Context<'_>,
        timer: &mut IdleTimer,
        seen: &mut u64,
    ) -> Poll<Result<Bytes, Error>> {
        self.wakers.response.register(cx.waker());
        let waker = task::waker_ref(&self.wakers);
        let mut both = Context::from_waker(&waker);
        let mut state = self.lock();
        loop {
            if let Some(end) = &state.end {
                return Poll::Ready(end.clone());
            }
            if state.taken != *seen {
                *seen = state.taken;
                timer.progress();
            }
            match state.poll_item(&mut both) {
                // An item is waiting for the receiver: leave it there.
                Poll::Ready(true) => {
                    self.wakers.receiver.wake();
                    timer.progress();
                    return Poll::Pending;
                }
                Poll::Ready(false) => continue,
                Poll::Pending => {
                    let Poll::Ready(err) = timer.poll_expired(cx) else {
                        return Poll::Pending;
                    };
                    state.finish(Err(err.clone()));
                    drop(state);
                    self.wakers.receiver.wake();
                    return Poll::Ready(Err(err));
                }
            }
        }
    }
}

/// The receiving end of a stream of `T`s: a [`Stream`] of `Result<T, Error>`.
///
/// Yields each message in order, then `None` at a clean end. A stream that ends because the
/// peer failed, cancelled or broke the protocol yields one `Err` first, so a failure is never
/// mistaken for the end. Dropping a `Receiver` before the end tells the sender to stop: its
/// next `send` fails with [`Error::Cancelled`], and a handler blocked on it is cancelled.
pub struct Receiver<T> {
    inbound: Option<Arc<Inbound>>,
    /// Ends a stalled stream: the deadline, or the idle bound since the last message.
    timer: IdleTimer,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("open", &self.inbound.is_some())
            .field("deadline", &self.timer.deadline().instant())
            .finish()
    }
}

impl<T> Receiver<T> {
    /// A receiver of a stream that simply ends (a handler's view of the caller's messages).
    pub(crate) fn new(reader: FrameReader, deadline: Deadline) -> Self {
        Self::from_inbound(Some(Inbound::new(reader, false, None)), deadline)
    }

    /// A receiver of a stream that ends with the call's result, and the [`Response`] that
    /// delivers that result. Either keeps `hold` while it lives.
    pub(crate) fn with_response<R: DeserializeOwned + Send + 'static>(
        reader: FrameReader,
        deadline: Deadline,
        hold: Hold,
    ) -> (Self, Response<R>) {
        let inbound = Inbound::new(reader, true, Some(hold));
        let result = Arc::clone(&inbound);
        let response = Response {
            fut: Box::pin(async move {
                let (mut timer, mut seen) = (deadline.timer(), 0);
                let payload =
                    std::future::poll_fn(|cx| result.poll_result(cx, &mut timer, &mut seen)).await;
                // The stream is done with: let go of it, and of its connection, now.
                drop(result);
                Ok(wire::decode(&payload?)?)
            }),
        };
        (Self::from_inbound(Some(inbound), deadline), response)
    }

    fn from_inbound(inbound: Option<Arc<Inbound>>, deadline: Deadline) -> Self {
        Receiver {
            inbound,
            timer: deadline.timer(),
            _item: PhantomData,
        }
    }

    /// A receiver whose stream has already ended.
    pub(crate) fn ended() -> Self {
        Self::from_inbound(None, Deadline::after(std::time::Duration::ZERO))
    }
}

impl<T: DeserializeOwned> Stream for Receiver<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inbound) = this.inbound.clone() else {
            return Poll::Ready(None);
        };
        inbound.wakers.receiver.register(cx.waker());
        let waker = task::waker_ref(&inbound.wakers);
        let mut both = Context::from_waker(&waker);
        let mut state = inbound.lock();
        let polled = state.poll_item(&mut both);
        let yielded = match polled {
            Poll::Ready(true) => {
                this.timer.progress();
                match state.take_item() {
                    Ok(item) => {
                        drop(state);
                        // The response side may be waiting for this item to be taken.
                        inbound.wakers.response.wake();
                        return Poll::Ready(Some(Ok(item)));
                    }
                    Err(err) => {
                        state.finish(Err(err.clone()));
                        Some(Err(err))
                    }
                }
            }
            Poll::Ready(false) => match &state.end {
                Some(Err(err)) => Some(Err(err.clone())),
                _ => None,
            },
            Poll::Pending => {
                drop(state);
                match this.timer.poll_expired(cx) {
                    Poll::Ready(err) => {
                        inbound.lock().finish(Err(err.clone()));
                        Some(Err(err))
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        // The stream has ended (`yielded` is its error, if any): later polls yield `None`.
        this.inbound = None;
        inbound.wakers.response.wake();
        Poll::Ready(yielded)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if let Some(inbound) = self.inbound.take() {
            inbound.lock().finish(Err(Error::Cancelled));
            inbound.wakers.response.wake();
        }
    }
}

/// The final result of a streaming call: a future of `Result<R, Error>`.
///
/// For server-streaming and bidirectional calls it completes once the stream has ended:
/// read the [`Receiver`] of the same call to its end (or drop it, which cancels the call and
/// gives [`Error::Cancelled`]). Awaiting the response while messages are still unread waits
/// for them to be read; a failure of the call completes it at once. For client-streaming
/// calls it completes when the handler returns.
pub struct Response<R> {
    fut: Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>,
}

impl<R> fmt::Debug for Response<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response").finish_non_exhaustive()
    }
}

impl<R: DeserializeOwned + Send + 'static> Response<R> {
    /// The result is the one frame left to read on `reader`.
    ///
    /// Waiting for it is waiting for an answer: bounded by the call's deadline or, for a call
    /// without one, by the idle bound from when it is first awaited. The response keeps
    /// `hold` until it completes or is dropped.
    pub(crate) fn from_reader(mut reader: FrameReader, deadline: Deadline, hold: Hold) -> Self {
        Response {
            fut: Box::pin(async move {
                let result = deadline.answer(read_result(&mut reader)).await;
                reader.try_finish();
                drop(hold);
                result
            }),
        }
    }
}

/// Reads the RESULT or STATUS frame that ends a call, decoding it where it lies.
pub(crate) async fn read_result<R: DeserializeOwned>(reader: &mut FrameReader) -> Result<R, Error> {
    let tag = std::future::poll_fn(|cx| reader.poll_ready(cx)).await?;
    let result = match tag {
        Some(TAG_RESULT) => wire::decode(reader.payload()).map_err(Error::from),
        Some(TAG_STATUS) => Err(Error::from_status_payload(reader.payload())),
        Some(tag) => Err(Error::Protocol(format!(
            "expected the call's result, got frame tag {tag:#04x}"
        ))),
        None => Err(Error::Protocol(
            "stream ended without the call's result".into(),
        )),
    };
    reader.consume();
    reader.check_end()?;
    result
}

impl<R: 'static> Response<R> {
    /// This response, completing as `wrap` of its future does.
    pub(crate) fn wrap<F>(self, wrap: impl FnOnce(ResponseFuture<R>) -> F) -> Self
    where
        F: Future<Output = Result<R, Error>> + Send + 'static,
    {
        Response {
            fut: Box::pin(wrap(self.fut)),
        }
    }
}

/// The future inside a [`Response`].
pub(crate) type ResponseFuture<R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

impl<R> Future for Response<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}
