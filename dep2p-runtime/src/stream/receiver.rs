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
use crate::metadata::{Metadata, MetadataReader, MetadataResult, ResponseMetadata};
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
    /// The response metadata read so far (on the calling side).
    meta: MetadataReader,
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
        let mut polled = ready!(reader.poll_ready(cx));
        // On the calling side, metadata frames come before the items and the final frame.
        while let (Ok(Some(tag)), true) = (&polled, self.expects_result) {
            match self
                .meta
                .frame(*tag, reader.payload(), reader.metadata_limits())
            {
                Ok(true) => {
                    reader.consume();
                    polled = ready!(reader.poll_ready(cx));
                }
                Ok(false) => break,
                Err(err) => {
                    polled = Err(err);
                    break;
                }
            }
        }
        let end = match polled {
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
                meta: MetadataReader::default(),
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
    /// The response headers, kept once the stream has ended.
    headers: Metadata,
    /// The response trailers, once the stream has ended.
    trailers: Option<Metadata>,
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
                let meta = result.lock().meta.received().clone();
                // The stream is done with: let go of it, and of its connection, now.
                drop(result);
                let decoded = payload.and_then(|payload| Ok(wire::decode(&payload)?));
                (decoded, meta)
            }),
        };
        (Self::from_inbound(Some(inbound), deadline), response)
    }

    fn from_inbound(inbound: Option<Arc<Inbound>>, deadline: Deadline) -> Self {
        Receiver {
            inbound,
            timer: deadline.timer(),
            headers: Metadata::default(),
            trailers: None,
            _item: PhantomData,
        }
    }

    /// A receiver whose stream has already ended.
    pub(crate) fn ended() -> Self {
        Self::from_inbound(None, Deadline::after(std::time::Duration::ZERO))
    }
}

impl<T> Receiver<T> {
    /// The response headers of a server-streaming or bidirectional call: the metadata its
    /// handler set with [`CallContext::set_header`](crate::CallContext::set_header), sent
    /// before its first item or its final frame.
    ///
    /// Waits until they arrive, or until the first item or the end of the stream shows that
    /// the handler sent none (then they are empty); an item that arrives is left for the
    /// stream to yield. Empty too on a connection that speaks protocol version 1, for a
    /// handler's view of its caller's items, and if the stream fails first (the stream and
    /// the [`Response`] report why). Waiting is bounded like waiting for an item.
    ///
    /// ```no_run
    /// # async fn run(conn: dep2p_runtime::Connection) -> Result<(), dep2p_runtime::Error> {
    /// # let call = dep2p_runtime::ServerStreaming::<(), u32, ()>::new(&conn, "Feed", "watch", ());
    /// let (mut items, response) = call.await?;
    /// let headers = items.headers().await;
    /// println!("feed served by {:?}", headers.get("server"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing; the headers and any item stay.
    pub async fn headers(&mut self) -> Metadata {
        std::future::poll_fn(|cx| self.poll_headers(cx)).await
    }

    /// The response trailers of a server-streaming or bidirectional call, once its stream
    /// has ended (the stream yielded `None` or its error): what the handler set with
    /// [`CallContext::set_trailer`](crate::CallContext::set_trailer), empty if it set none
    /// or the call failed before its final frame. `None` while the stream runs.
    ///
    /// The [`Response`] gives them too, with the result:
    /// [`Response::with_metadata`].
    pub fn trailers(&self) -> Option<&Metadata> {
        self.trailers.as_ref()
    }

    /// Keeps the metadata of a stream that has ended.
    fn keep_metadata(&mut self, state: &InboundState) {
        self.headers = state.meta.received().headers().clone();
        self.trailers = Some(state.meta.received().trailers().clone());
    }

    fn poll_headers(&mut self, cx: &mut Context<'_>) -> Poll<Metadata> {
        let Some(inbound) = self.inbound.clone() else {
            return Poll::Ready(self.headers.clone());
        };
        inbound.wakers.receiver.register(cx.waker());
        let waker = task::waker_ref(&inbound.wakers);
        let mut both = Context::from_waker(&waker);
        let mut state = inbound.lock();
        let polled = state.poll_item(&mut both);
        if polled.is_ready() || state.meta.past_headers() {
            return Poll::Ready(state.meta.received().headers().clone());
        }
        drop(state);
        match self.timer.poll_expired(cx) {
            Poll::Ready(err) => {
                inbound.lock().finish(Err(err));
                inbound.wakers.response.wake();
                Poll::Ready(Metadata::default())
            }
            Poll::Pending => Poll::Pending,
        }
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
                        this.keep_metadata(&state);
                        Some(Err(err))
                    }
                }
            }
            Poll::Ready(false) => {
                this.keep_metadata(&state);
                match &state.end {
                    Some(Err(err)) => Some(Err(err.clone())),
                    _ => None,
                }
            }
            Poll::Pending => {
                drop(state);
                match this.timer.poll_expired(cx) {
                    Poll::Ready(err) => {
                        let mut state = inbound.lock();
                        state.finish(Err(err.clone()));
                        this.keep_metadata(&state);
                        Some(Err(err))
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        // The stream has ended (`yielded` is its error, if any): later polls yield `None`; the
        // headers are kept.
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
    fut: MetadataResult<R>,
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
                let mut meta = MetadataReader::default();
                let result = deadline.answer(read_result(&mut reader, &mut meta)).await;
                reader.try_finish();
                drop(hold);
                (result, meta.take())
            }),
        }
    }
}

impl<R> Response<R> {
    /// Awaits the result together with the [`ResponseMetadata`](crate::ResponseMetadata) the handler sent: headers and
    /// trailers, for a failure (a [`Error`] the peer sent as a status, such as
    /// [`Error::HandlerFailed`] or [`Error::Timeout`]) as for a success.
    ///
    /// ```no_run
    /// # async fn run(conn: dep2p_runtime::Connection) -> Result<(), dep2p_runtime::Error> {
    /// # let call = dep2p_runtime::ClientStreaming::<(), u64, u64>::new(&conn, "Stats", "sum", ());
    /// let (mut values, response) = call.await?;
    /// values.send(1).await?;
    /// values.finish()?;
    /// let (total, metadata) = response.with_metadata().await;
    /// println!("{:?}, took {:?}", total, metadata.trailers().get("elapsed-ms"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the response, as dropping the [`Response`] does.
    pub fn with_metadata(self) -> MetadataResult<R> {
        self.fut
    }
}

/// Reads the RESULT or STATUS frame that ends a call, decoding it where it lies, and the
/// metadata frames before it into `meta`.
pub(crate) async fn read_result<R: DeserializeOwned>(
    reader: &mut FrameReader,
    meta: &mut MetadataReader,
) -> Result<R, Error> {
    std::future::poll_fn(|cx| poll_result(reader, meta, cx)).await
}

/// [`read_result`], polled by hand.
pub(crate) fn poll_result<R: DeserializeOwned>(
    reader: &mut FrameReader,
    meta: &mut MetadataReader,
    cx: &mut Context<'_>,
) -> Poll<Result<R, Error>> {
    let tag = loop {
        let tag = std::task::ready!(reader.poll_ready(cx))?;
        match tag {
            Some(tag) if meta.frame(tag, reader.payload(), reader.metadata_limits())? => {
                reader.consume()
            }
            tag => break tag,
        }
    };
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
    Poll::Ready(result)
}

impl<R: 'static> Response<R> {
    /// This response, completing as `wrap` of its future does.
    pub(crate) fn wrap<F>(self, wrap: impl FnOnce(MetadataResult<R>) -> F) -> Self
    where
        F: Future<Output = (Result<R, Error>, ResponseMetadata)> + Send + 'static,
    {
        Response {
            fut: Box::pin(wrap(self.fut)),
        }
    }
}

impl<R> Future for Response<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx).map(|(result, _)| result)
    }
}
