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
/// memory a stream's sending side holds.
const QUEUE_BUDGET: usize = 256 * 1024;

/// Frames queued together are written as one buffer of up to this many bytes: one write per
/// small message costs quinn far more than one per batch.
const BATCH: usize = 64 * 1024;

/// The room a frame takes in a sender's queue. A frame larger than the whole budget waits
/// for an empty queue.
fn queue_cost(frame: &Bytes) -> u32 {
    // QUEUE_BUDGET fits in u32.
    frame.len().min(QUEUE_BUDGET) as u32
}

enum Command {
    Frame(Bytes),
    Finish,
}

/// What a sender and its writer share.
struct Outbound {
    /// Bytes queued and not yet written: the sender waits for room.
    room: tokio::sync::Semaphore,
    /// Why the stream can take no more, once it can't.
    error: Mutex<Option<Error>>,
}

impl Outbound {
    fn error(&self) -> Error {
        let error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        error.clone().unwrap_or(Error::Cancelled)
    }

    fn fail(&self, err: Error) {
        let mut error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        error.get_or_insert(err);
        self.room.close();
    }
}

/// The sending end of a stream of `T`s.
///
/// On the calling side, [`finish`](Sender::finish) ends the stream cleanly (the receiver sees
/// the end); dropping a `Sender` without finishing it aborts the stream, and the receiver sees
/// [`Error::Cancelled`] rather than a clean end. In a handler, the stream ends when the handler
/// returns (and its `Sender` is gone), followed by the handler's result.
///
/// Messages are written in order by a task of the stream's own, which gathers what is queued
/// into few large writes. [`send`](Sender::send) waits while 256 KiB are queued ahead of it
/// and the receiver's flow-control window is full, so a fast sender never buffers without
/// bound.
pub struct Sender<T> {
    queue: Option<tokio::sync::mpsc::UnboundedSender<Command>>,
    outbound: Arc<Outbound>,
    max_message: usize,
    idle: Duration,
    deadline: Option<Instant>,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("open", &self.queue.is_some())
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
        let outbound = Arc::new(Outbound {
            room: tokio::sync::Semaphore::new(QUEUE_BUDGET),
            error: Mutex::new(None),
        });
        let queue = stream.map(|stream| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let writer = Writer {
                stream,
                commands: rx,
                outbound: Arc::clone(&outbound),
                idle,
                deadline,
            };
            tokio::spawn(writer.run(end));
            tx
        });
        Sender {
            queue,
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
        let frame = wire::encode(TAG_ITEM, &item, self.max_message)?;
        let Some(queue) = &self.queue else {
            return Err(self.outbound.error());
        };
        let cost = queue_cost(&frame);
        let room = &self.outbound.room;
        let permit = match room.try_acquire_many(cost) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(self.outbound.error()),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                bounded(self.deadline, self.idle, async {
                    room.acquire_many(cost)
                        .await
                        .map_err(|_| self.outbound.error())
                })
                .await?
            }
        };
        // The writer gives the room back once the frame is written.
        permit.forget();
        queue
            .send(Command::Frame(frame))
            .map_err(|_| self.outbound.error())
    }

    /// Ends the stream cleanly: the receiver sees the end after the messages already sent.
    ///
    /// In a handler this only says "no more items"; the call itself ends when the handler
    /// returns.
    pub fn finish(mut self) -> Result<(), Error> {
        match self.queue.take() {
            Some(queue) => queue
                .send(Command::Finish)
                .map_err(|_| self.outbound.error()),
            None => Err(self.outbound.error()),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Closing the queue without `Finish` tells the writer: abort (a caller's stream) or
        // hand the stream back after what is queued (a handler's).
        self.queue.take();
    }
}

/// Writes a [`Sender`]'s queued frames, gathering what is ready into one write.
struct Writer {
    stream: quinn::SendStream,
    commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    outbound: Arc<Outbound>,
    idle: Duration,
    deadline: Option<Instant>,
}

impl Writer {
    async fn run(mut self, end: SenderEnd) {
        let mut finish = false;
        while let Some(command) = self.commands.recv().await {
            let first = match command {
                Command::Frame(frame) => frame,
                Command::Finish => {
                    finish = true;
                    break;
                }
            };
            let mut queued = first.len();
            let mut cost = queue_cost(&first);
            let mut batch: Option<bytes::BytesMut> = None;
            while queued < BATCH {
                match self.commands.try_recv() {
                    Ok(Command::Frame(frame)) => {
                        let buf = batch.get_or_insert_with(|| {
                            let mut buf = bytes::BytesMut::with_capacity(BATCH.max(queued));
                            buf.extend_from_slice(&first);
                            buf
                        });
                        queued += frame.len();
                        cost += queue_cost(&frame);
                        buf.extend_from_slice(&frame);
                    }
                    Ok(Command::Finish) => {
                        finish = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let chunk = match batch {
                Some(buf) => buf.freeze(),
                None => first,
            };
            let written = {
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
            };
            if let Err(err) = written {
                self.outbound.fail(err);
                let _ = self.stream.reset(wire::STREAM_CANCELLED.into());
                return;
            }
            self.outbound.room.add_permits(cost as usize);
            if finish {
                break;
            }
        }
        self.outbound.fail(Error::Cancelled);
        match end {
            SenderEnd::Caller if finish => {
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
    /// An item the response side read ahead of the receiver, waiting to be taken.
    peeked: Option<Bytes>,
    /// How the stream ended: the RESULT payload (empty for a stream without one) or why it
    /// failed. Set once.
    end: Option<Result<Bytes, Error>>,
    /// Whether a RESULT or STATUS frame ends the stream.
    expects_result: bool,
}

impl InboundState {
    /// The next item, or `None` once `end` is set.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(item) = self.peeked.take() {
            return Poll::Ready(Some(item));
        }
        if self.end.is_some() {
            return Poll::Ready(None);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Poll::Ready(None);
        };
        let end = match ready!(reader.poll_frame(cx)) {
            Ok(Some((TAG_ITEM, payload))) => return Poll::Ready(Some(payload)),
            Ok(Some((TAG_RESULT, payload))) if self.expects_result => Ok(payload),
            Ok(Some((TAG_STATUS, payload))) if self.expects_result => {
                Err(wire::decode_status(&payload))
            }
            Ok(Some((tag, _))) => Err(Error::Protocol(format!(
                "unexpected frame tag {tag:#04x} in a message stream"
            ))),
            Ok(None) if self.expects_result => Err(Error::Protocol(
                "stream ended without the call's result".into(),
            )),
            Ok(None) => Ok(Bytes::new()),
            Err(err) => Err(err),
        };
        self.finish(end);
        Poll::Ready(None)
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
        self.peeked = None;
        self.end = Some(end);
    }
}

impl Inbound {
    fn new(reader: FrameReader, expects_result: bool) -> Arc<Self> {
        Arc::new(Inbound {
            state: Mutex::new(InboundState {
                reader: Some(reader),
                peeked: None,
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
            if state.peeked.is_some() {
                return Poll::Pending;
            }
            match state.poll_item(&mut both) {
                Poll::Ready(Some(item)) => {
                    state.peeked = Some(item);
                    self.wakers.receiver.wake();
                    return Poll::Pending;
                }
                Poll::Ready(None) => continue,
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
            Poll::Ready(Some(payload)) => {
                this.waiting = false;
                match wire::decode(&payload) {
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
            Poll::Ready(None) => match &state.end {
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

/// Reads the RESULT or STATUS frame that ends a call.
pub(crate) async fn read_result<R: DeserializeOwned>(reader: &mut FrameReader) -> Result<R, Error> {
    match reader.frame().await? {
        Some((TAG_RESULT, payload)) => wire::decode(&payload),
        Some((TAG_STATUS, payload)) => Err(wire::decode_status(&payload)),
        Some((tag, _)) => Err(Error::Protocol(format!(
            "expected the call's result, got frame tag {tag:#04x}"
        ))),
        None => Err(Error::Protocol(
            "stream ended without the call's result".into(),
        )),
    }
}

impl<R> Future for Response<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}
