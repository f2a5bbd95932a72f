//! The sending end of a message stream: [`Sender`] and the task that writes its queue.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::deadline::Deadline;
use crate::error::Error;
use crate::metadata::MetadataSlot;
use crate::wire::{self, TAG_ITEM};

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
    /// A handler's response metadata, whose headers go out before the first item.
    metadata: Option<Arc<MetadataSlot>>,
}

#[derive(Default)]
struct Queue {
    frames: bytes::BytesMut,
    /// The sender is gone: `finished` says whether cleanly.
    closed: bool,
    finished: bool,
    /// Why the stream can take no more, once it can't.
    error: Option<Error>,
    /// The response headers have gone out, ahead of the first item.
    headers_sent: bool,
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
    fn push<T: Serialize>(&self, item: &T, max: usize, pack: wire::Pack) -> Result<bool, Error> {
        let mut queue = self.lock();
        if let Some(err) = &queue.error {
            return Err(err.clone());
        }
        if queue.frames.len() >= QUEUE_BUDGET {
            return Ok(false);
        }
        let was_empty = queue.frames.is_empty();
        if !queue.headers_sent {
            if let Some(metadata) = &self.metadata {
                metadata.headers_into(&mut queue.frames)?;
            }
            queue.headers_sent = true;
        }
        wire::encode_into(&mut queue.frames, TAG_ITEM, item, max, pack)?;
        drop(queue);
        if was_empty {
            self.to_writer.notify_one();
        }
        Ok(true)
    }

    /// Queues the response headers, unless they have gone out already.
    fn push_headers(&self) -> Result<(), Error> {
        let mut queue = self.lock();
        if let Some(err) = &queue.error {
            return Err(err.clone());
        }
        if queue.headers_sent {
            return Ok(());
        }
        let was_empty = queue.frames.is_empty();
        if let Some(metadata) = &self.metadata {
            metadata.headers_into(&mut queue.frames)?;
        }
        queue.headers_sent = true;
        drop(queue);
        if was_empty {
            self.to_writer.notify_one();
        }
        Ok(())
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
    /// How its messages are compressed.
    pack: wire::Pack,
    deadline: Deadline,
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
        deadline: Deadline,
        metadata: Option<Arc<MetadataSlot>>,
    ) -> Self {
        let outbound = stream.map(|stream| {
            let outbound = Arc::new(Outbound {
                state: Mutex::new(Queue::default()),
                to_writer: tokio::sync::Notify::new(),
                to_sender: tokio::sync::Notify::new(),
                metadata,
            });
            let writer = Writer {
                stream,
                outbound: Arc::clone(&outbound),
                deadline,
            };
            tokio::spawn(writer.run(end));
            outbound
        });
        Sender {
            outbound,
            max_message,
            pack: wire::Pack::OFF,
            deadline,
            _item: PhantomData,
        }
    }

    pub(crate) fn caller(
        stream: quinn::SendStream,
        max_message: usize,
        deadline: Deadline,
    ) -> Self {
        Self::start(Some(stream), SenderEnd::Caller, max_message, deadline, None)
    }

    /// A handler's sender, which sends the response headers in `metadata` (if any) before
    /// its first item.
    pub(crate) fn handler(
        stream: quinn::SendStream,
        back: oneshot::Sender<quinn::SendStream>,
        max_message: usize,
        deadline: Deadline,
        metadata: Option<Arc<MetadataSlot>>,
    ) -> Self {
        let end = SenderEnd::Handler(back);
        Self::start(Some(stream), end, max_message, deadline, metadata)
    }

    /// Compresses its messages as `pack` asks.
    pub(crate) fn packing(mut self, pack: wire::Pack) -> Self {
        self.pack = pack;
        self
    }

    /// A sender with no stream behind it: its first send fails with [`Error::Cancelled`].
    pub(crate) fn detached(max_message: usize, deadline: Deadline) -> Self {
        Self::start(None, SenderEnd::Caller, max_message, deadline, None)
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
            if outbound.push(&item, self.max_message, self.pack)? {
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
            self.deadline
                .progress(async {
                    room.await;
                    Ok(())
                })
                .await?;
        }
    }

    /// Sends a handler's response headers now, rather than with its first item: those set so
    /// far with [`CallContext::set_header`](crate::CallContext::set_header), so that the
    /// caller's [`Receiver::headers`](crate::Receiver::headers) completes before any item is ready. Headers set after
    /// this are not sent.
    ///
    /// Does nothing if the headers have gone out already, if none were set, on the calling
    /// side, and on a protocol version 1 connection. Fails with [`Error::MessageTooLarge`]
    /// (sending nothing) if the headers break the node's header bounds, and with
    /// [`Error::Cancelled`] once the receiver has gone away.
    ///
    /// ```no_run
    /// # use dep2p_runtime::{CallContext, Error, Sender};
    /// async fn watch(mut out: Sender<u64>) -> Result<(), Error> {
    ///     let ctx = CallContext::current().expect("inside a handler");
    ///     ctx.set_header("watching-since", "1700000000");
    ///     out.send_headers()?;
    ///     // ... the first event may take a while ...
    ///     out.send(1).await
    /// }
    /// ```
    pub fn send_headers(&mut self) -> Result<(), Error> {
        match &self.outbound {
            Some(outbound) => outbound.push_headers(),
            None => Err(Error::Cancelled),
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
    deadline: Deadline,
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
                self.deadline
                    .progress(async { write.await.map_err(Error::from_write) })
                    .await
            }
        }
    }
}
