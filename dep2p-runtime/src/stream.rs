//! The two ends of a message stream: [`Sender`] and [`Receiver`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::task::{self, ArcWake, AtomicWaker};
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
    Handler(oneshot::Sender<quinn::SendStream>),
}

/// Bytes a [`Sender`] may have queued ahead of its writer: beyond the QUIC windows, the most
/// memory a stream's sending side holds (plus one message).
const QUEUE_BUDGET: usize = 256 * 1024;

/// The queue between a [`Sender`] and its stream's writer: encoded frames, back to back.
/// The sender encodes each message straight into it; the writer takes everything queued as
/// one buffer and writes it at once.
struct Outbound {
    state: Mutex<Queue>,
    /// Wakes the writer when the queue stops being empty or the sender is done.
    to_writer: tokio::sync::Notify,
    /// Wakes the sender when the writer has taken the queue.
    to_sender: tokio::sync::Notify,
}

#[derive(Default)]
struct Queue {
    frames: bytes::BytesMut,
    /// The sender is gone: `finished` says whether cleanly.
    closed: bool,
    finished: bool,
    /// Why the stream can take no more, once it can't.
    error: Option<Error>,
}

impl Outbound {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, err: Error) {
        self.lock().error.get_or_insert(err);
        self.to_sender.notify_one();
    }

    /// Encodes `item` onto the queue unless the queue is full (`Ok(false)`).
    fn push<T: Serialize>(&self, item: &T, max: usize) -> Result<bool, Error> {
        let mut queue = self.lock();
        if let Some(err) = &queue.error {
            return Err(err.clone());
        }
        if queue.frames.len() >= QUEUE_BUDGET {
            return Ok(false);
        }
        let was_empty = queue.frames.is_empty();
        encode_into(&mut queue.frames, item, max)?;
        drop(queue);
        if was_empty {
            self.to_writer.notify_one();
        }
        Ok(true)
    }

    /// Marks the sender gone and wakes the writer.
    fn close(&self, finished: bool) {
        let mut queue = self.lock();
        queue.closed = true;
        queue.finished = finished;
        drop(queue);
        self.to_writer.notify_one();
    }
}

/// Appends one frame holding `value` to `frames`, sized exactly, or leaves `frames` as it was.
fn encode_into<T: Serialize>(
    frames: &mut bytes::BytesMut,
    value: &T,
    max: usize,
) -> Result<(), Error> {
    let size = postcard::experimental::serialized_size(value)
        .map_err(|e| Error::Decode(format!("could not encode: {e}")))?;
    if size > max {
        return Err(Error::MessageTooLarge(format!(
            "{size} bytes to send, the limit is {max}"
        )));
    }
    let start = frames.len();
    frames.reserve(wire::FRAME_HEAD + size);
    // `size + 1` fits in u32: `max` is kept below 2^32 - 1 by the node's configuration.
    frames.extend_from_slice(&((size + 1) as u32).to_be_bytes());
    frames.extend_from_slice(&[TAG_ITEM]);
    frames.resize(start + wire::FRAME_HEAD + size, 0);
    if let Err(e) = postcard::to_slice(value, &mut frames[start + wire::FRAME_HEAD..]) {
        frames.truncate(start);
        return Err(Error::Decode(format!("could not encode: {e}")));
    }
    Ok(())
}

/// The sending end of a stream of `T`s.
///
/// On the calling side, [`finish`](Sender::finish) ends the stream cleanly (the receiver sees
/// the end); dropping a `Sender` without finishing it aborts the stream, and the receiver sees
/// [`Error::Cancelled`] rather than a clean end. In a handler, the stream ends when the handler
/// returns (and its `Sender` is gone), followed by the handler's result.
///
/// Messages are written in order by a task of the stream's own, which writes everything
/// queued at once. [`send`](Sender::send) waits while 256 KiB are queued and the writer is
/// still writing what it took before (at most as much again), which it does as fast as the
/// receiver's flow-control window allows: a fast sender never buffers without bound.
pub struct Sender<T> {
    outbound: Option<Arc<Outbound>>,
    max_message: usize,
    idle: Duration,
    deadline: Option<Instant>,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("open", &self.outbound.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<T> Sender<T> {
    fn start(
        stream: Option<quinn::SendStream>,
        end: SenderEnd,
        max_message: usize,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        let outbound = stream.map(|stream| {
            let outbound = Arc::new(Outbound {
                state: Mutex::new(Queue::default()),
                to_writer: tokio::sync::Notify::new(),
                to_sender: tokio::sync::Notify::new(),
            });
            let writer = Writer {
                stream,
                outbound: Arc::clone(&outbound),
                idle,
                deadline,
            };
            tokio::spawn(writer.run(end));
            outbound
        });
        Sender {
            outbound,
            max_message,
            idle,
            deadline,
            _item: PhantomData,
        }
    }

    pub(crate) fn caller(
        stream: quinn::SendStream,
        max_message: usize,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        Self::start(Some(stream), SenderEnd::Caller, max_message, idle, deadline)
    }

    pub(crate) fn handler(
        stream: quinn::SendStream,
        back: oneshot::Sender<quinn::SendStream>,
        max_message: usize,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        let end = SenderEnd::Handler(back);
        Self::start(Some(stream), end, max_message, idle, deadline)
    }

    /// A sender with no stream behind it: its first send fails with [`Error::Cancelled`].
    pub(crate) fn detached(max_message: usize, idle: Duration, deadline: Option<Instant>) -> Self {
        Self::start(None, SenderEnd::Caller, max_message, idle, deadline)
    }
}

impl<T: Serialize> Sender<T> {
    /// Queues one message, waiting while the stream's queue is full.
    ///
    /// Fails with [`Error::Cancelled`] once the receiver has gone away, with
    /// [`Error::MessageTooLarge`] (sending nothing) if the encoded message exceeds the limit,
    /// and with [`Error::Timeout`] or [`Error::IdleTimeout`] if the peer stops reading.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the message was not queued.
    pub async fn send(&mut self, item: T) -> Result<(), Error> {
        let outbound = self.outbound.as_ref().ok_or(Error::Cancelled)?;
        let mut waited = false;
        loop {
            if outbound.push(&item, self.max_message)? {
                return Ok(());
            }
            // The queue is full: wait for the writer to take it. A wake-up may be left over
            // from an earlier take; the loop checks again.
            let room = outbound.to_sender.notified();
            let mut room = std::pin::pin!(room);
            // Most waits are short: the first wait in a row tries once without a timer.
            if !waited {
                waited = true;
                let ready = std::future::poll_fn(|cx| Poll::Ready(room.as_mut().poll(cx))).await;
                if ready.is_ready() {
                    continue;
                }
            }
            bounded(self.deadline, self.idle, async {
                room.await;
                Ok(())
            })
            .await?;
        }
    }

    /// Ends the stream cleanly: the receiver sees the end after the messages already sent.
    ///
    /// In a handler this only says "no more items"; the call itself ends when the handler
    /// returns.
    pub fn finish(mut self) -> Result<(), Error> {
        let outbound = self.outbound.take().ok_or(Error::Cancelled)?;
        if let Some(err) = &outbound.lock().error {
            return Err(err.clone());
        }
        outbound.close(true);
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Gone without `finish`: the writer aborts a caller's stream, or hands a handler's
        // back to the runtime after what is queued.
        if let Some(outbound) = self.outbound.take() {
            outbound.close(false);
        }
    }
}

/// Writes a [`Sender`]'s queued frames, everything queued at once.
struct Writer {
    stream: quinn::SendStream,
    outbound: Arc<Outbound>,
    idle: Duration,
    deadline: Option<Instant>,
}

impl Writer {
    async fn run(mut self, end: SenderEnd) {
        let finished = loop {
            let (chunk, closed, finished) = {
                let mut queue = self.outbound.lock();
                (queue.frames.split().freeze(), queue.closed, queue.finished)
            };
            if chunk.is_empty() {
                if closed {
                    break finished;
                }
                self.outbound.to_writer.notified().await;
                continue;
            }
            self.outbound.to_sender.notify_one();
            if let Err(err) = self.write(chunk).await {
                self.outbound.fail(err);
                let _ = self.stream.reset(wire::STREAM_CANCELLED.into());
                return;
            }
        };
        self.outbound.fail(Error::Cancelled);
        match end {
            SenderEnd::Caller if finished => {
                let _ = self.stream.finish();
            }
            SenderEnd::Caller => {
                let _ = self.stream.reset(wire::STREAM_CANCELLED.into());
            }
            SenderEnd::Handler(back) => {
                if let Err(mut stream) = back.send(self.stream) {
                    let _ = stream.reset(wire::STREAM_CANCELLED.into());
                }
            }
        }
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        let write = self.stream.write_chunk(chunk);
        let mut write = std::pin::pin!(write);
        // Most writes complete at once; a timer is armed only for one that waits.
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(done) => done.map_err(Error::from_write),
            Poll::Pending => {
                bounded(self.deadline, self.idle, async {
                    write.await.map_err(Error::from_write)
                })
                .await
            }
        }
    }
}

/// The receiving half of a stream, shared by a [`Receiver`] and, on the calling side of
/// server-streaming and bidirectional calls, the [`Response`] that ends it.
struct Inbound {
    state: Mutex<InboundState>,
    wakers: Arc<Wakers>,
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
            Ok(Some(TAG_RESULT)) if self.expects_result => {
                Ok(Bytes::copy_from_slice(reader.payload()))
            }
            Ok(Some(TAG_STATUS)) if self.expects_result => {
                Err(wire::decode_status(reader.payload()))
            }
            Ok(Some(tag)) => Err(Error::Protocol(format!(
                "unexpected frame tag {tag:#04x} in a message stream"
            ))),
            Ok(None) if self.expects_result => Err(Error::Protocol(
                "stream ended without the call's result".into(),
            )),
            Ok(None) => Ok(Bytes::new()),
            Err(err) => Err(err),
        };
        reader.consume();
        self.finish(end);
        Poll::Ready(false)
    }

    /// Decodes the item at the front of the reader and moves past it.
    fn take_item<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        let reader = self.reader.as_mut().ok_or(Error::Cancelled)?;
        let item = wire::decode(reader.payload());
        reader.consume();
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
    fn new(reader: FrameReader, expects_result: bool) -> Arc<Self> {
        Arc::new(Inbound {
            state: Mutex::new(InboundState {
                reader: Some(reader),
                end: None,
                expects_result,
            }),
            wakers: Arc::new(Wakers::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboundState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The response side: the call's result, once the stream has ended. Reads ahead one item
    /// at most, and leaves it for the receiver.
    fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, Error>> {
        self.wakers.response.register(cx.waker());
        let waker = task::waker_ref(&self.wakers);
        let mut both = Context::from_waker(&waker);
        let mut state = self.lock();
        loop {
            if let Some(end) = &state.end {
                return Poll::Ready(end.clone());
            }
            match state.poll_item(&mut both) {
                // An item is waiting for the receiver: leave it there.
                Poll::Ready(true) => {
                    self.wakers.receiver.wake();
                    return Poll::Pending;
                }
                Poll::Ready(false) => continue,
                Poll::Pending => return Poll::Pending,
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
    idle: Duration,
    deadline: Option<Instant>,
    /// Ends a stalled stream: armed at the first wait, moved on only when it fires early.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the receiver started waiting for the next message.
    last_progress: Instant,
    /// Whether it is waiting now (no message since `last_progress`).
    waiting: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("open", &self.inbound.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<T> Receiver<T> {
    /// A receiver of a stream that simply ends (a handler's view of the caller's messages).
    pub(crate) fn new(reader: FrameReader, idle: Duration, deadline: Option<Instant>) -> Self {
        Self::from_inbound(Inbound::new(reader, false), idle, deadline)
    }

    /// A receiver of a stream that ends with the call's result, and the [`Response`] that
    /// delivers that result.
    pub(crate) fn with_response<R: DeserializeOwned + Send + 'static>(
        reader: FrameReader,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> (Self, Response<R>) {
        let inbound = Inbound::new(reader, true);
        let result = Arc::clone(&inbound);
        let response = Response {
            fut: Box::pin(async move {
                let payload =
                    with_deadline(deadline, std::future::poll_fn(|cx| result.poll_result(cx)))
                        .await?;
                wire::decode(&payload)
            }),
        };
        (Self::from_inbound(inbound, idle, deadline), response)
    }

    fn from_inbound(inbound: Arc<Inbound>, idle: Duration, deadline: Option<Instant>) -> Self {
        Receiver {
            inbound: Some(inbound),
            idle,
            deadline,
            timer: None,
            last_progress: Instant::now(),
            waiting: false,
            _item: PhantomData,
        }
    }

    /// A receiver whose stream has already ended.
    pub(crate) fn ended() -> Self {
        Receiver {
            inbound: None,
            idle: Duration::ZERO,
            deadline: None,
            timer: None,
            last_progress: Instant::now(),
            waiting: false,
            _item: PhantomData,
        }
    }

    /// Polls the timer that ends a stalled read: the deadline, or the idle timeout counted
    /// from when the receiver started waiting, whichever comes first. The timer is not reset for every
    /// message; when it fires early it moves to the new due time.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        loop {
            let idle_at = self.last_progress + self.idle;
            let due = match self.deadline {
                Some(deadline) if deadline <= idle_at => deadline,
                _ => idle_at,
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= due {
                return Poll::Ready(match self.deadline {
                    Some(deadline) if deadline <= Instant::now() => Error::Timeout,
                    _ => Error::IdleTimeout,
                });
            }
            timer.as_mut().reset(due);
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
                this.waiting = false;
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
                if !this.waiting {
                    this.waiting = true;
                    this.last_progress = Instant::now();
                }
                match this.poll_timer(cx) {
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
    pub(crate) fn from_reader(
        mut reader: FrameReader,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        Response {
            fut: Box::pin(async move {
                let result = match deadline {
                    Some(_) => bounded(deadline, idle, read_result(&mut reader)).await,
                    None => read_result(&mut reader).await,
                };
                reader.try_finish();
                result
            }),
        }
    }
}

async fn with_deadline<F: Future<Output = Result<T, Error>>, T>(
    deadline: Option<Instant>,
    fut: F,
) -> Result<T, Error> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, fut)
            .await
            .unwrap_or(Err(Error::Timeout)),
        None => fut.await,
    }
}

/// Reads the RESULT or STATUS frame that ends a call, decoding it where it lies.
pub(crate) async fn read_result<R: DeserializeOwned>(reader: &mut FrameReader) -> Result<R, Error> {
    let tag = std::future::poll_fn(|cx| reader.poll_ready(cx)).await?;
    let result = match tag {
        Some(TAG_RESULT) => wire::decode(reader.payload()),
        Some(TAG_STATUS) => Err(wire::decode_status(reader.payload())),
        Some(tag) => Err(Error::Protocol(format!(
            "expected the call's result, got frame tag {tag:#04x}"
        ))),
        None => Err(Error::Protocol(
            "stream ended without the call's result".into(),
        )),
    };
    reader.consume();
    result
}

impl<R> Future for Response<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

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
