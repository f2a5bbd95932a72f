//! Outgoing calls: builders that generated clients return, to be configured and awaited.

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
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
    /// Encodes the call frame and works out the deadline.
    fn prepare(&self, kind: Kind, default_timeout: Option<Duration>) -> Result<Opened, Error> {
        let timeout = self.timeout.or(default_timeout);
        let header = CallHeader {
            service: Cow::Borrowed(self.service),
            method: Cow::Borrowed(self.method),
            kind,
            timeout_us: timeout.map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
            metadata: self.metadata.clone(),
        };
        let config = self.conn.config();
        let frame = wire::encode_call(&header, &self.args, config.max_message_size)?;
        Ok(Opened {
            frame,
            deadline: timeout.map(|t| Instant::now() + t),
            max_message: config.max_message_size,
            idle: config.idle_stream_timeout,
        })
    }

    /// Opens a bidirectional stream and writes the call frame, within the deadline.
    async fn open_bi(
        self,
        kind: Kind,
        default_timeout: Option<Duration>,
    ) -> Result<(Opened, quinn::SendStream, FrameReader), Error> {
        let opened = self.prepare(kind, default_timeout)?;
        let conn = self.conn.quic().clone();
        drop(self);
        let (mut send, recv) = stream::bounded(opened.deadline, opened.idle, async {
            let (mut send, recv) = conn.open_bi().await?;
            let written = send.write_chunk(opened.frame.clone()).await;
            if let Err(err) = written {
                return Err(Error::from_write(err));
            }
            Ok((send, recv))
        })
        .await?;
        if kind == Kind::Unary || kind == Kind::ServerStream {
            let _ = send.finish();
        }
        let reader = FrameReader::new(recv, opened.max_message);
        Ok((opened, send, reader))
    }
}

struct Opened {
    frame: bytes::Bytes,
    deadline: Option<Instant>,
    max_message: usize,
    idle: Duration,
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
            let default = self.conn.config().request_timeout;
            let opened = self.prepare(Kind::Unary, Some(default))?;
            let conn = self.conn.quic();
            stream::bounded(opened.deadline, opened.idle, async {
                let (mut send, recv) = conn.open_bi().await?;
                send.write_chunk(opened.frame.clone())
                    .await
                    .map_err(Error::from_write)?;
                let _ = send.finish();
                let mut reader = FrameReader::new(recv, opened.max_message);
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
            let opened = self.prepare(Kind::Notify, Some(default))?;
            let conn = self.conn.quic();
            stream::bounded(opened.deadline, opened.idle, async {
                let mut send = conn.open_uni().await?;
                send.write_chunk(opened.frame.clone())
                    .await
                    .map_err(Error::from_write)?;
                send.finish().map_err(|_| Error::Cancelled)
            })
            .await
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
            let (opened, _send, reader) = self.open_bi(Kind::ServerStream, None).await?;
            let (trailer, result) = oneshot::channel();
            let receiver = Receiver::new(reader, Some(trailer), opened.idle, opened.deadline);
            Ok((receiver, Response::from_trailer(result)))
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
            let (opened, send, reader) = self.open_bi(Kind::ClientStream, None).await?;
            let sender = Sender::caller(send, opened.max_message, opened.idle, opened.deadline);
            let response = Response::from_reader(reader, opened.idle, opened.deadline);
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
            let (opened, send, reader) = self.open_bi(Kind::Bidi, None).await?;
            let sender = Sender::caller(send, opened.max_message, opened.idle, opened.deadline);
            let (trailer, result) = oneshot::channel();
            let receiver = Receiver::new(reader, Some(trailer), opened.idle, opened.deadline);
            Ok((sender, receiver, Response::from_trailer(result)))
        })
    }
}
