//! Outgoing calls: builders that generated clients return, to be configured and awaited.

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::connection::Connection;
use crate::error::Error;
use crate::stream::{self, Receiver, Response, Sender};
use crate::wire::{self, CallHeader, FrameReader, Kind};

/// The future an awaited call becomes.
pub type CallResult<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'static>>;

/// One outgoing call, not yet sent. Set a deadline or metadata, then `.await` it.
///
/// `K` says which kind of call it is and what awaiting it gives; the aliases [`Unary`],
/// [`Notify`], [`ServerStreaming`], [`ClientStreaming`] and [`Bidi`] name the five kinds.
/// Dropping the call (or the future it becomes) cancels it: the handler on the peer is
/// stopped.
#[must_use = "a call does nothing until it is awaited"]
pub struct Call<K, A> {
    conn: Connection,
    service: &'static str,
    method: &'static str,
    args: A,
    timeout: Option<Duration>,
    metadata: Vec<(String, String)>,
    _kind: PhantomData<fn() -> K>,
}

impl<K, A> fmt::Debug for Call<K, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl<K, A> Call<K, A> {
    /// A call of `service.method` on `conn` with `args` (the method's non-stream arguments as
    /// a tuple). Generated clients call this; users call the generated methods.
    pub fn new(conn: &Connection, service: &'static str, method: &'static str, args: A) -> Self {
        Call {
            conn: conn.clone(),
            service,
            method,
            args,
            timeout: None,
            metadata: Vec::new(),
            _kind: PhantomData,
        }
    }

    /// Sets this call's deadline, `timeout` from when it is awaited. The peer's handler is
    /// stopped when it passes.
    ///
    /// Default: the node's request timeout for request-response calls and notifications;
    /// none for the streaming kinds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Attaches a metadata entry, which the handler reads with
    /// [`CallContext::metadata`](crate::CallContext::metadata).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }
}

impl<K, A: Serialize> Call<K, A> {
    /// Encodes the CALL frame, with `remaining` as the time the handler has.
    fn frame(&self, kind: Kind, remaining: Option<Duration>) -> Result<Bytes, Error> {
        let header = CallHeader {
            service: Cow::Borrowed(self.service),
            method: Cow::Borrowed(self.method),
            kind,
            timeout_us: remaining.map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
            metadata: self.metadata.clone(),
        };
        Ok(wire::encode_call(
            &header,
            &self.args,
            self.conn.config().max_message_size,
        )?)
    }

    /// The call's time bounds: its own timeout or `default`, from now.
    fn bounds(&self, default: Option<Duration>) -> Bounds {
        let timeout = self.timeout.or(default);
        Bounds {
            timeout,
            deadline: timeout.map(|t| Instant::now() + t),
            idle: self.conn.config().idle_stream_timeout,
        }
    }

    /// Opens the call's stream and writes its CALL frame, within the deadline.
    async fn open(self, kind: Kind, default_timeout: Option<Duration>) -> Result<Started, Error> {
        let bounds = self.bounds(default_timeout);
        bounds.run(self.start(kind, bounds)).await
    }

    /// Opens the call's stream and writes its CALL frame. The caller bounds the time.
    async fn start(self, kind: Kind, bounds: Bounds) -> Result<Started, Error> {
        let max_message = self.conn.config().max_message_size;
        // Encoding first fails an oversized call before it takes a stream.
        let mut frame = self.frame(kind, bounds.timeout)?;
        let conn = self.conn.quic();
        let open = async {
            if kind == Kind::Notify {
                Ok::<_, quinn::ConnectionError>((conn.open_uni().await?, None))
            } else {
                let (send, recv) = conn.open_bi().await?;
                Ok((send, Some(recv)))
            }
        };
        let mut open = std::pin::pin!(open);
        let (mut send, recv) =
            match std::future::poll_fn(|cx| Poll::Ready(open.as_mut().poll(cx))).await {
                Poll::Ready(opened) => opened?,
                Poll::Pending => {
                    let opened = open.await?;
                    // Waiting for a stream (the peer's stream limit) used up part of the
                    // deadline: the header must carry the time actually left.
                    if let Some(deadline) = bounds.deadline {
                        let left = deadline.saturating_duration_since(Instant::now());
                        frame = self.frame(kind, Some(left))?;
                    }
                    opened
                }
            };
        send.write_chunk(frame).await.map_err(Error::from_write)?;
        if matches!(kind, Kind::Unary | Kind::Notify | Kind::ServerStream) {
            let _ = send.finish();
        }
        Ok(Started {
            send,
            reader: recv.map(|recv| self.conn.reader(recv)),
            bounds,
            max_message,
        })
    }
}

/// How long a call may take: its timeout, the deadline that makes, and the idle-stream
/// timeout.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    idle: Duration,
}

impl Bounds {
    /// Runs `fut` within these bounds, with one timer.
    async fn run<T>(self, fut: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        match (self.timeout, self.deadline) {
            // The deadline comes first: the idle timeout need not be worked out.
            (Some(timeout), Some(deadline)) if timeout <= self.idle => {
                tokio::time::timeout_at(deadline, fut)
                    .await
                    .unwrap_or(Err(Error::Timeout))
            }
            _ => crate::deadline::bounded(self.deadline, self.idle, fut).await,
        }
    }
}

/// A call whose stream is open and whose CALL frame is written.
struct Started {
    send: quinn::SendStream,
    /// The response stream, for every kind but notifications.
    reader: Option<FrameReader>,
    bounds: Bounds,
    max_message: usize,
}

impl Started {
    /// Splits a call on a bidirectional stream into its request and response halves.
    fn halves(self) -> Result<(quinn::SendStream, FrameReader), Error> {
        let reader = self
            .reader
            .ok_or_else(|| Error::Protocol("no response stream".into()))?;
        Ok((self.send, reader))
    }

    /// The caller's sender of stream items, the response reader and the call's bounds.
    fn into_sender<T>(self) -> Result<(Sender<T>, FrameReader, Bounds), Error> {
        let (bounds, max_message) = (self.bounds, self.max_message);
        let (send, reader) = self.halves()?;
        let sender = Sender::caller(send, max_message, bounds.idle, bounds.deadline);
        Ok((sender, reader, bounds))
    }
}

/// Marks a request-response call returning `R`.
#[derive(Debug)]
pub enum UnaryKind<R> {
    #[doc(hidden)]
    _Never(std::convert::Infallible, PhantomData<R>),
}
/// Marks a notification.
#[derive(Debug)]
pub enum NotifyKind {}
/// Marks a server-streaming call yielding `T`s, then `R`.
#[derive(Debug)]
pub enum ServerStreamingKind<T, R> {
    #[doc(hidden)]
    _Never(std::convert::Infallible, PhantomData<(T, R)>),
}
/// Marks a client-streaming call taking `T`s, then returning `R`.
#[derive(Debug)]
pub enum ClientStreamingKind<T, R> {
    #[doc(hidden)]
    _Never(std::convert::Infallible, PhantomData<(T, R)>),
}
/// Marks a bidirectional call sending `I`s, receiving `O`s, then returning `R`.
#[derive(Debug)]
pub enum BidiKind<I, O, R> {
    #[doc(hidden)]
    _Never(std::convert::Infallible, PhantomData<(I, O, R)>),
}

/// A request-response call. Awaiting it gives `Result<R, Error>`.
pub type Unary<A, R> = Call<UnaryKind<R>, A>;
/// A notification. Awaiting it gives `Ok(())` once the message is handed to QUIC; nothing
/// comes back from the peer.
pub type Notify<A> = Call<NotifyKind, A>;
/// A server-streaming call. Awaiting it sends the request and gives the [`Receiver`] of the
/// peer's messages and the [`Response`] that ends them.
pub type ServerStreaming<A, T, R> = Call<ServerStreamingKind<T, R>, A>;
/// A client-streaming call. Awaiting it sends the request and gives the [`Sender`] of the
/// stream (finish it with [`Sender::finish`]) and the handler's [`Response`].
pub type ClientStreaming<A, T, R> = Call<ClientStreamingKind<T, R>, A>;
/// A bidirectional call. Awaiting it sends the request and gives the [`Sender`] to the peer,
/// the [`Receiver`] of the peer's messages and the [`Response`] that ends them.
pub type Bidi<A, I, O, R> = Call<BidiKind<I, O, R>, A>;

impl<A, R> IntoFuture for Call<UnaryKind<R>, A>
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = Result<R, Error>;
    type IntoFuture = CallResult<R>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let bounds = self.bounds(Some(self.conn.config().request_timeout));
            // One timer for the whole call.
            bounds
                .run(async move {
                    let (_send, mut reader) = self.start(Kind::Unary, bounds).await?.halves()?;
                    let result = stream::read_result(&mut reader).await;
                    reader.try_finish();
                    result
                })
                .await
        })
    }
}

impl<A> IntoFuture for Call<NotifyKind, A>
where
    A: Serialize + Send + 'static,
{
    type Output = Result<(), Error>;
    type IntoFuture = CallResult<()>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let default = self.conn.config().request_timeout;
            self.open(Kind::Notify, Some(default)).await.map(drop)
        })
    }
}

impl<A, T, R> IntoFuture for Call<ServerStreamingKind<T, R>, A>
where
    A: Serialize + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = Result<(Receiver<T>, Response<R>), Error>;
    type IntoFuture = CallResult<(Receiver<T>, Response<R>)>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let started = self.open(Kind::ServerStream, None).await?;
            let bounds = started.bounds;
            let (_send, reader) = started.halves()?;
            Ok(Receiver::with_response(
                reader,
                bounds.idle,
                bounds.deadline,
            ))
        })
    }
}

impl<A, T, R> IntoFuture for Call<ClientStreamingKind<T, R>, A>
where
    A: Serialize + Send + 'static,
    T: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = Result<(Sender<T>, Response<R>), Error>;
    type IntoFuture = CallResult<(Sender<T>, Response<R>)>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let started = self.open(Kind::ClientStream, None).await?;
            let (sender, reader, bounds) = started.into_sender()?;
            let response = Response::from_reader(reader, bounds.idle, bounds.deadline);
            Ok((sender, response))
        })
    }
}

impl<A, I, O, R> IntoFuture for Call<BidiKind<I, O, R>, A>
where
    A: Serialize + Send + 'static,
    I: Serialize + Send + 'static,
    O: DeserializeOwned + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = Result<(Sender<I>, Receiver<O>, Response<R>), Error>;
    type IntoFuture = CallResult<(Sender<I>, Receiver<O>, Response<R>)>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let started = self.open(Kind::Bidi, None).await?;
            let (sender, reader, bounds) = started.into_sender()?;
            let (receiver, response) =
                Receiver::with_response(reader, bounds.idle, bounds.deadline);
            Ok((sender, receiver, response))
        })
    }
}
