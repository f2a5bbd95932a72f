//! Outgoing calls: builders that generated clients return, to be configured and awaited.

use futures::FutureExt;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::connection::Connection;
use crate::context::CallContext;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::hold::Hold;
use crate::intercept::{CallInfo, ClientLayers, RequestMetadata};
use crate::metadata::{MetadataReader, MetadataResult, ResponseMetadata};
use crate::outcome::Outcome;
use crate::stream::{self, Receiver, Response, Sender};
use crate::target::{Retries, Target};
use crate::trace;
use crate::wire::{self, CallHeader, FrameReader, Kind, TAG_STATUS};

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
    target: Target,
    service: &'static str,
    method: &'static str,
    args: A,
    timeout: Option<Duration>,
    metadata: Vec<(String, String)>,
    /// Whether the call may be retried after a transport failure (request-response only).
    idempotent: bool,
    /// Whether its messages are compressed, whatever its method's setting.
    compress: Option<bool>,
    _kind: PhantomData<fn() -> K>,
}

impl<K, A> fmt::Debug for Call<K, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .field("metadata", &self.metadata)
            .field("idempotent", &self.idempotent)
            .field("compress", &self.compress)
            .finish_non_exhaustive()
    }
}

impl<K, A> Call<K, A> {
    /// A call of `service.method` on `target` (a [`Connection`], a [`Target`] or a
    /// [`Peer`](crate::Peer)) with `args` (the method's non-stream arguments as a tuple).
    /// Generated clients call this; users call the generated methods.
    pub fn new<T>(target: &T, service: &'static str, method: &'static str, args: A) -> Self
    where
        T: Clone + Into<Target>,
    {
        Call {
            target: target.clone().into(),
            service,
            method,
            args,
            timeout: None,
            metadata: Vec::new(),
            idempotent: false,
            compress: None,
            _kind: PhantomData,
        }
    }

    /// Sets this call's deadline, `timeout` from when it is awaited. The peer's handler is
    /// stopped when it passes.
    ///
    /// Default: the node's request timeout for request-response calls and notifications;
    /// none for the streaming kinds.
    ///
    /// # Inside a handler
    ///
    /// A call made while serving a call (where [`CallContext::current`] is set) never
    /// outlives the call being served: its deadline is the earlier of its own (this timeout,
    /// or the default above) and the handler's deadline
    /// ([`CallContext::deadline`]). A shorter timeout still wins; a longer one is cut to the
    /// time the handler has left, since the handler's caller has stopped waiting by then and
    /// the handler is stopped anyway. A task the handler spawns has no context, so calls made
    /// there keep their own deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Attaches a metadata entry, which the handler reads with
    /// [`CallContext::metadata`](crate::CallContext::metadata).
    ///
    /// A call whose header breaks the node's header bounds (see
    /// [`NodeBuilder::max_header_size`](crate::NodeBuilder::max_header_size)) fails with
    /// [`Error::MessageTooLarge`] before a stream is opened for it.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Compresses this call's arguments and request stream items (`true`) or not (`false`),
    /// whatever the node's [`Compression`](crate::Compression) says for its method. As
    /// always, only on a protocol version 2 connection, only messages of at least the node's
    /// [`min_size`](crate::Compression::min_size), and only if that saves bytes. The
    /// response is compressed as the callee's node decides.
    ///
    /// Default: the node's setting for the method
    /// ([`NodeBuilder::compression`](crate::NodeBuilder::compression)).
    pub fn compress(mut self, compress: bool) -> Self {
        self.compress = Some(compress);
        self
    }
}

/// A call resolved to the connection it goes over.
struct Outgoing<A> {
    conn: Connection,
    service: &'static str,
    method: &'static str,
    args: A,
    metadata: Vec<(String, String)>,
    compress: Option<bool>,
}

impl<K, A> Call<K, A> {
    /// The call's span; the peer is recorded once the call has a connection. With the
    /// `opentelemetry` feature, the span's trace context joins the call's metadata.
    fn span(&mut self, kind: Kind) -> tracing::Span {
        let span = tracing::debug_span!(
            "call",
            side = "client",
            service = self.service,
            method = self.method,
            kind = kind.name(),
            peer = tracing::field::Empty,
        );
        #[cfg(feature = "opentelemetry")]
        crate::otel::inject(&span, &mut self.metadata);
        span
    }
}

impl<K, A> Call<K, A> {
    /// Runs the `before` hooks of the client layers of the call's node and target; gives
    /// what runs their `after` hooks, if there are any. A hook that fails the call fails it
    /// here, after the `after` hooks of the layers whose `before` ran.
    fn intercept(&mut self, kind: Kind) -> Result<Option<Observer>, Error> {
        let node = &self.target.config().client_layers;
        let own = self.target.layers();
        if node.is_empty() && own.is_empty() {
            return Ok(None);
        }
        let observer = Observer {
            node: node.clone(),
            own: own.clone(),
            info: CallInfo {
                service: self.service,
                method: self.method,
                kind,
                peer: self.target.as_connection().map(Connection::remote_id),
                timeout: self.timeout,
            },
            started: Instant::now(),
            ran: 0,
        };
        let mut observer = observer;
        let mut failed = None;
        let layers = observer.node.as_slice().iter();
        for layer in layers.chain(observer.own.as_slice()) {
            let mut metadata = RequestMetadata::new(&mut self.metadata);
            if let Err(err) = layer.before(&observer.info, &mut metadata) {
                failed = Some(err);
                break;
            }
            observer.ran += 1;
        }
        match failed {
            None => Ok(Some(observer)),
            Some(err) => {
                observer.finish(Outcome::Failed(err.clone()));
                Err(err)
            }
        }
    }
}

/// Runs the `after` hooks of a call's client layers once the call has ended; with
/// [`Error::Cancelled`] if it is dropped before.
struct Observer {
    node: ClientLayers,
    own: ClientLayers,
    info: CallInfo,
    started: Instant,
    /// How many layers ran `before`: those whose `after` runs, in reverse.
    ran: usize,
}

impl Observer {
    fn finish(&mut self, outcome: Outcome) {
        let elapsed = self.started.elapsed();
        let ran = std::mem::take(&mut self.ran);
        let (node, own) = (self.node.as_slice(), self.own.as_slice());
        let own = &own[..ran.saturating_sub(node.len()).min(own.len())];
        let node = &node[..ran.min(node.len())];
        for layer in own.iter().rev().chain(node.iter().rev()) {
            layer.after(&self.info, &outcome, elapsed);
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if self.ran > 0 {
            self.finish(Outcome::Failed(Error::Cancelled));
        }
    }
}

/// Runs `fut`, then the `after` hooks of `observer` with its outcome.
async fn observed<T>(
    observer: Option<Observer>,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let Some(mut observer) = observer else {
        return fut.await;
    };
    let result = fut.await;
    observer.finish(match &result {
        Ok(_) => Outcome::Ok,
        Err(err) => Outcome::Failed(err.clone()),
    });
    result
}

/// What awaiting a streaming call gives: the handles of an open call, whose [`Response`]
/// ends it.
trait Opened {
    /// The same handles, the response running `observer`'s `after` hooks at the call's end.
    fn observed(self, observer: Observer) -> Self;

    /// The same handles, the response ending the call's span at the call's end.
    fn traced(self, ending: trace::Ending) -> Self;
}

/// A response that logs the call's end in its span and closes it (see [`trace::Ending`]).
fn trace_response<R: Send + 'static>(response: Response<R>, ending: trace::Ending) -> Response<R> {
    response.wrap(|fut| async move {
        let (result, metadata) = fut.instrument(ending.span().clone()).await;
        ending.end(&result);
        (result, metadata)
    })
}

/// A response that runs `observer`'s `after` hooks with the call's result, or with
/// [`Error::Cancelled`] if it is dropped first.
fn observe_response<R: Send + 'static>(response: Response<R>, observer: Observer) -> Response<R> {
    response.wrap(|fut| async move {
        let mut metadata = None;
        let result = observed(Some(observer), async {
            let (result, received) = fut.await;
            metadata = Some(received);
            result
        })
        .await;
        (result, metadata.unwrap_or_default())
    })
}

impl<T, R: Send + 'static> Opened for (Receiver<T>, Response<R>) {
    fn observed(self, observer: Observer) -> Self {
        (self.0, observe_response(self.1, observer))
    }

    fn traced(self, ending: trace::Ending) -> Self {
        (self.0, trace_response(self.1, ending))
    }
}

impl<T, R: Send + 'static> Opened for (Sender<T>, Response<R>) {
    fn observed(self, observer: Observer) -> Self {
        (self.0, observe_response(self.1, observer))
    }

    fn traced(self, ending: trace::Ending) -> Self {
        (self.0, trace_response(self.1, ending))
    }
}

impl<I, O, R: Send + 'static> Opened for (Sender<I>, Receiver<O>, Response<R>) {
    fn observed(self, observer: Observer) -> Self {
        (self.0, self.1, observe_response(self.2, observer))
    }

    fn traced(self, ending: trace::Ending) -> Self {
        (self.0, self.1, trace_response(self.2, ending))
    }
}

/// Runs the opening of a streaming call; once open, its response carries `observer` to the
/// call's end. A call that fails to open ends there.
async fn observed_stream<T: Opened>(
    observer: Option<Observer>,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let Some(mut observer) = observer else {
        return fut.await;
    };
    match fut.await {
        Ok(opened) => Ok(opened.observed(observer)),
        Err(err) => {
            observer.finish(Outcome::Failed(err.clone()));
            Err(err)
        }
    }
}

/// An outgoing call's future: `fut` in the call's span, observed by its client layers.
fn traced<T: Send + 'static>(
    span: tracing::Span,
    observer: Option<Observer>,
    fut: Pin<Box<impl Future<Output = Result<T, Error>> + Send + 'static>>,
) -> CallResult<T> {
    // With nothing to trace or observe, the call's future is returned as it is; otherwise it
    // moves through the wrappers as a pointer.
    if span.is_disabled() {
        return match observer {
            None => fut,
            // Layers without a span: a small future around the call's, rather than the
            // tracing wrapper's state.
            Some(observer) => Box::pin(Observed { fut, observer }),
        };
    }
    Box::pin(trace::called(span, observed(observer, fut)))
}

/// A call's future that runs its client layers' `after` hooks when it completes (and, through
/// the [`Observer`]'s drop, when it is dropped first).
struct Observed<F> {
    fut: Pin<Box<F>>,
    observer: Observer,
}

impl<T, F: Future<Output = Result<T, Error>>> Future for Observed<F> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.fut.as_mut().poll(cx));
        self.observer.finish(match &result {
            Ok(_) => Outcome::Ok,
            Err(err) => Outcome::Failed(err.clone()),
        });
        Poll::Ready(result)
    }
}

/// [`traced`] for a streaming call, observed until its response completes.
fn traced_stream<T: Opened + Send + 'static>(
    span: tracing::Span,
    observer: Option<Observer>,
    fut: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> CallResult<T> {
    if span.is_disabled() && observer.is_none() {
        return Box::pin(fut);
    }
    let fut = Box::pin(fut);
    Box::pin(async move {
        let (opened, ending) = trace::opening(span, observed_stream(observer, fut)).await?;
        Ok(match ending {
            Some(ending) => opened.traced(ending),
            None => opened,
        })
    })
}

/// Records the peer of the call being made in its span.
fn record_peer(conn: &Connection) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record(
            "peer",
            tracing::field::display(conn.remote_id().fmt_short()),
        );
    }
}

impl<K, A: Serialize> Call<K, A> {
    /// The call's time bounds: its own timeout or `default`, from now, but never past the
    /// deadline of the call the current task is serving.
    fn deadline(&self, default: Option<Duration>) -> Deadline {
        let idle = self.target.config().idle_stream_timeout;
        let own = self
            .timeout
            .or(default)
            .and_then(|t| Instant::now().checked_add(t));
        let at = match (own, CallContext::current_deadline()) {
            (Some(own), Some(served)) => Some(own.min(served)),
            (own, served) => own.or(served),
        };
        Deadline::until(at, idle)
    }

    /// The call with the connection it goes over: at once for a connection, within
    /// `deadline` for a peer.
    async fn resolve(self, deadline: &Deadline) -> Result<Outgoing<A>, Error> {
        let Call {
            target,
            service,
            method,
            args,
            metadata,
            compress,
            ..
        } = self;
        Ok(Outgoing {
            conn: target.connection(deadline).await?,
            service,
            method,
            args,
            metadata,
            compress,
        })
    }

    /// [`resolve`](Self::resolve), also giving what to retry the call with, if its target
    /// retries.
    async fn resolve_with_retries(
        self,
        deadline: &Deadline,
    ) -> Result<(Outgoing<A>, Retries), Error> {
        let Call {
            target,
            service,
            method,
            args,
            metadata,
            compress,
            ..
        } = self;
        let (conn, retries) = target.connection_and_retries(deadline).await?;
        let call = Outgoing {
            conn,
            service,
            method,
            args,
            metadata,
            compress,
        };
        Ok((call, retries))
    }

    /// Opens the call's stream and writes its CALL frame, within the deadline (or, for a call
    /// without one, the idle bound).
    async fn open(self, kind: Kind, default_timeout: Option<Duration>) -> Result<Started<A>, Error>
    where
        A: Send + 'static,
    {
        let deadline = self.deadline(default_timeout);
        let open = async { self.resolve(&deadline).await?.start(kind, deadline).await };
        deadline.answer(open).await
    }
}

impl<A> Outgoing<A> {
    /// How the messages of the call's request direction are compressed.
    fn pack(&self) -> wire::Pack {
        (self.conn).pack(self.service, self.method, self.compress)
    }
}

impl<A: Serialize> Outgoing<A> {
    /// Encodes the CALL frame, with `remaining` as the time the handler has.
    fn frame(&self, kind: Kind, remaining: Option<Duration>) -> Result<Bytes, Error> {
        let header = CallHeader {
            service: self.service,
            method: self.method,
            kind,
            timeout_us: remaining.map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
            metadata: &self.metadata,
        };
        let config = self.conn.config();
        Ok(wire::encode_call(
            &header,
            &self.args,
            config.max_message_size,
            &config.header,
            self.pack(),
        )?)
    }

    /// Opens the call's stream and writes its CALL frame. The caller bounds the time.
    async fn start(self, kind: Kind, deadline: Deadline) -> Result<Started<A>, Error>
    where
        A: Send + 'static,
    {
        let result = match self.attempt(kind, deadline) {
            Attempt::Done(result) => result,
            Attempt::Waiting(rest) => rest.await,
        };
        result.map_err(|failed| failed.err)
    }

    /// [`start`](Self::start), which gives the call back with the error and says whether it
    /// may be tried again: always when it provably never reached a handler (no stream could
    /// be opened, or the callee refused the call — overloaded, shutting down — before serving
    /// it), if it is idempotent when the transport failed under it.
    ///
    /// Most attempts take a stream that is free now and write their frame at once: that part
    /// runs here, without a future. The rest (a wait for a stream, a write the stream's window
    /// holds up, a refusal to read) runs boxed, out of every call's future.
    fn attempt(self, kind: Kind, deadline: Deadline) -> Attempt<A>
    where
        A: Send + 'static,
    {
        let max_message = self.conn.config().max_message_size;
        // Encoding first fails an oversized call before it takes a stream.
        let frame = match self.frame(kind, deadline.remaining()) {
            Ok(frame) => frame,
            Err(err) => return Attempt::Done(Err(Failed::new(err, self, Retry::Never))),
        };
        let opened = match open_stream(self.conn.quic(), kind).now_or_never() {
            Some(opened) => opened,
            None => return Attempt::Waiting(Box::pin(self.open_waiting(kind, deadline))),
        };
        let (mut send, recv) = match opened {
            Ok(opened) => opened,
            // No stream: nothing reached the peer.
            Err(err) => {
                let failed = Failed::new(Error::from_connection(&err), self, Retry::Safe);
                return Attempt::Done(Err(failed));
            }
        };
        let reader = recv.map(|recv| self.conn.reader(recv));
        let mut write = wire::write_frame(&mut send, frame);
        match (&mut write).now_or_never() {
            Some(Ok(())) => {
                let started = self.started(kind, deadline, send, reader, max_message);
                Attempt::Done(Ok(started))
            }
            Some(Err(err)) => Attempt::Waiting(Box::pin(self.write_failed(deadline, reader, err))),
            None => {
                let rest = write.into_rest();
                let rest = self.write_rest(kind, deadline, send, reader, rest, max_message);
                Attempt::Waiting(Box::pin(rest))
            }
        }
    }

    /// An attempt that waits for a stream (the peer's stream limit).
    async fn open_waiting(self, kind: Kind, deadline: Deadline) -> Result<Started<A>, Failed<A>> {
        let max_message = self.conn.config().max_message_size;
        let (mut send, recv) = match open_stream(self.conn.quic(), kind).await {
            Ok(opened) => opened,
            // No stream: nothing reached the peer.
            Err(err) => return Err(Failed::new(Error::from_connection(&err), self, Retry::Safe)),
        };
        // The wait used up part of the deadline: the header must carry the time actually
        // left. With none left, the call fails here: the peer would drop it unread, and a
        // notification's sender would never learn of it.
        let left = deadline.remaining();
        if left.is_some_and(|left| left.is_zero()) {
            let _ = send.reset(wire::STREAM_CANCELLED.into());
            return Err(Failed::new(Error::Timeout, self, Retry::Never));
        }
        let frame = match self.frame(kind, left) {
            Ok(frame) => frame,
            Err(err) => return Err(Failed::new(err, self, Retry::Never)),
        };
        let reader = recv.map(|recv| self.conn.reader(recv));
        self.write_rest(kind, deadline, send, reader, frame, max_message)
            .await
    }

    /// The rest of an attempt whose frame (`rest` of it) waits for the stream's window.
    async fn write_rest(
        self,
        kind: Kind,
        deadline: Deadline,
        mut send: quinn::SendStream,
        reader: Option<FrameReader>,
        rest: Bytes,
        max_message: usize,
    ) -> Result<Started<A>, Failed<A>> {
        match wire::write_frame(&mut send, rest).await {
            Ok(()) => Ok(self.started(kind, deadline, send, reader, max_message)),
            Err(err) => self.write_failed(deadline, reader, err).await,
        }
    }

    /// An attempt whose frame could not be written: the callee may have said why.
    async fn write_failed(
        self,
        deadline: Deadline,
        mut reader: Option<FrameReader>,
        err: quinn::WriteError,
    ) -> Result<Started<A>, Failed<A>> {
        let err = Error::from_write(err);
        let refusal = match (&err, reader.as_mut()) {
            // The callee stopped the request: it says why in a STATUS, which wins.
            (Error::Protocol(_) | Error::Cancelled | Error::ShuttingDown, Some(reader)) => {
                self.conn.refusal(reader, deadline).await
            }
            _ => None,
        };
        Err(match refusal {
            Some(refusal) if is_refusal(&refusal) => Failed::new(refusal, self, Retry::Safe),
            // The callee answered.
            Some(other) => Failed::new(other, self, Retry::Never),
            None => {
                let retry = Retry::after_transport_failure(&err);
                Failed::new(err, self, retry)
            }
        })
    }

    /// An attempt whose frame is written: the request direction finishes with it, except
    /// for the kinds that stream requests.
    fn started(
        self,
        kind: Kind,
        deadline: Deadline,
        mut send: quinn::SendStream,
        reader: Option<FrameReader>,
        max_message: usize,
    ) -> Started<A> {
        if matches!(kind, Kind::Unary | Kind::Notify | Kind::ServerStream) {
            let _ = send.finish();
        }
        Started {
            send,
            reader,
            deadline,
            max_message,
            call: self,
        }
    }
}

/// How an attempt ends: the call started, or why not.
type AttemptResult<A> = Result<Started<A>, Failed<A>>;

/// A boxed future, for the rare paths of a call.
type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An attempt: done already, or the rest of it, boxed.
// The result is kept as it is: boxing it would cost every call an allocation, to spare the
// rare waiting attempt a few hundred bytes.
#[allow(clippy::large_enum_variant)]
enum Attempt<A> {
    Done(AttemptResult<A>),
    Waiting(Boxed<AttemptResult<A>>),
}

/// Opens a call's stream: unidirectional for a notification, bidirectional otherwise.
async fn open_stream(
    conn: &quinn::Connection,
    kind: Kind,
) -> Result<(quinn::SendStream, Option<quinn::RecvStream>), quinn::ConnectionError> {
    if kind == Kind::Notify {
        Ok((conn.open_uni().await?, None))
    } else {
        let (send, recv) = conn.open_bi().await?;
        Ok((send, Some(recv)))
    }
}

/// A failed attempt: the error, the call back, and whether it may be tried again.
struct Failed<A> {
    err: Error,
    call: Outgoing<A>,
    retry: Retry,
}

impl<A> Failed<A> {
    fn new(err: Error, call: Outgoing<A>, retry: Retry) -> Self {
        Failed { err, call, retry }
    }
}

/// Whether a failed attempt of a request-response call may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// It provably never reached a handler: any call may be retried.
    Safe,
    /// The transport failed under it: it may have reached its handler, but no answer came.
    /// Only an idempotent call is retried.
    IfIdempotent,
    /// It was answered, timed out or failed locally: never retried.
    Never,
}

impl Retry {
    /// How a transport error met before any answer counts: the connection lost or closed by
    /// a peer shutting down, the stream reset (a restarting peer), no connection in time.
    fn after_transport_failure(err: &Error) -> Retry {
        match err {
            Error::ConnectionLost(_)
            | Error::Cancelled
            | Error::ShuttingDown
            | Error::Unreachable { .. } => Retry::IfIdempotent,
            _ => Retry::Never,
        }
    }

    /// Whether a call that is (or is not) idempotent is tried again.
    fn allows(self, idempotent: bool) -> bool {
        match self {
            Retry::Safe => true,
            Retry::IfIdempotent => idempotent,
            Retry::Never => false,
        }
    }
}

/// Whether a STATUS a callee answered with refuses the call before any handler ran: it is
/// over its limits or shutting down (`docs/PROTOCOL.md`, section 9). A handler's run never
/// ends with either.
fn is_refusal(status: &Error) -> bool {
    matches!(status, Error::Overloaded(_) | Error::ShuttingDown)
}

impl Connection {
    /// The reason a callee gave for stopping a call's request direction: the STATUS it sent on
    /// the response direction, if one arrives within a few round trips (it is sent with, or
    /// just after, the STOP_SENDING).
    async fn refusal(&self, reader: &mut FrameReader, deadline: Deadline) -> Option<Error> {
        let wait = self.rtt().saturating_mul(4) + Duration::from_millis(200);
        let wait = deadline.remaining().map_or(wait, |left| left.min(wait));
        let status = async {
            match std::future::poll_fn(|cx| reader.poll_ready(cx)).await {
                Ok(Some(TAG_STATUS)) => Some(Error::from_status_payload(reader.payload())),
                _ => None,
            }
        };
        Deadline::after(wait).within(status).await.ok().flatten()
    }
}

/// A call whose stream is open and whose CALL frame is written.
struct Started<A> {
    send: quinn::SendStream,
    /// The response stream, for every kind but notifications.
    reader: Option<FrameReader>,
    deadline: Deadline,
    max_message: usize,
    /// The call, whose handle on its connection keeps a dialed connection open while the
    /// call is in flight, even when the caller keeps no other handle.
    call: Outgoing<A>,
}

impl<A> Started<A> {
    /// Splits a call on a bidirectional stream into its request and response halves.
    fn halves(self) -> Result<(quinn::SendStream, FrameReader), Error> {
        let reader = self
            .reader
            .ok_or_else(|| Error::Protocol("no response stream".into()))?;
        Ok((self.send, reader))
    }

    /// The caller's sender of stream items, the response reader and the call's bounds.
    fn into_sender<T>(self) -> Result<(Sender<T>, FrameReader, Deadline), Error> {
        let (deadline, max_message, pack) = (self.deadline, self.max_message, self.call.pack());
        let (send, reader) = self.halves()?;
        let sender = Sender::caller(send, max_message, deadline).packing(pack);
        Ok((sender, reader, deadline))
    }
}

impl<A, R> Call<UnaryKind<R>, A> {
    /// Marks this call idempotent: running its handler more than once for it does no harm.
    ///
    /// Through a [`Peer`](crate::Peer), an idempotent call is then retried, as its
    /// [`RetryPolicy`](crate::RetryPolicy) allows, not only when it provably never reached a
    /// handler but also after a transport failure before any answer: its connection lost or
    /// closed while it was in flight ([`Error::ConnectionLost`], [`Error::ShuttingDown`]), its
    /// stream reset by a restarting peer ([`Error::Cancelled`]), no connection in time
    /// ([`Error::Unreachable`]). It is never retried once answered — with its result, or any
    /// error the peer sent other than the refusals every call is retried after — nor after
    /// [`Error::Timeout`]: its one deadline spans every attempt. Through a
    /// [`Connection`] nothing is retried.
    ///
    /// Methods marked `#[idempotent]` in a `#[service]` trait return their calls marked so.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
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

/// A request-response call. Awaiting it gives `Result<R, Error>`;
/// [`with_metadata`](Call::with_metadata) gives the response metadata too.
pub type Unary<A, R> = Call<UnaryKind<R>, A>;
/// A notification. Awaiting it gives `Ok(())` once the message is handed to QUIC; nothing
/// comes back from the peer.
///
/// A peer busy with its limit of calls holds notifications back rather than refusing them:
/// once it holds as many as its stream limit allows, awaiting waits for a stream, and fails
/// with [`Error::Timeout`] if none frees before the deadline. A notification that completed
/// `Ok` is handled unless the connection is lost, the peer shuts down, or it cannot serve the
/// method at all.
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

    fn into_future(mut self) -> Self::IntoFuture {
        let span = self.span(Kind::Unary);
        let observer = match self.intercept(Kind::Unary) {
            Ok(observer) => observer,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        // Boxed where it is made, without a block of its own around it (that would hold the
        // call once more): each function it passed through by value would copy it whole.
        traced(
            span,
            observer,
            Box::pin(self.answer(MetadataReader::default())),
        )
    }
}

impl<A, R> Call<UnaryKind<R>, A>
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    /// Awaits the call together with the [`ResponseMetadata`](crate::ResponseMetadata) its handler sent: headers and
    /// trailers, for a failure (an [`Error`] the peer sent as a status, such as
    /// [`Error::HandlerFailed`] or [`Error::Timeout`]) as for a success.
    ///
    /// Call it last, after [`timeout`](Call::timeout) and [`metadata`](Call::metadata): it
    /// gives the future to await. Through a [`Peer`](crate::Peer) that retries, the metadata
    /// is that of the attempt that was answered.
    ///
    /// ```no_run
    /// # async fn run(conn: dep2p_runtime::Connection) {
    /// # let call = dep2p_runtime::Unary::<(String,), String>::new(&conn, "Test", "echo", ("hi".to_string(),));
    /// // With a generated client: `client.echo("hi".into()).with_metadata().await`.
    /// let (result, metadata) = call.with_metadata().await;
    /// println!("{result:?} from {:?}", metadata.headers().get("server"));
    /// if let Some(retry) = metadata.trailers().get("retry-after-ms") {
    ///     println!("the peer asks to retry after {retry} ms");
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the call, as dropping the call's own future does.
    pub fn with_metadata(mut self) -> MetadataResult<R> {
        let span = self.span(Kind::Unary);
        let observer = match self.intercept(Kind::Unary) {
            Ok(observer) => observer,
            Err(err) => {
                return Box::pin(std::future::ready((Err(err), ResponseMetadata::default())))
            }
        };
        Box::pin(async move {
            let mut meta = MetadataReader::default();
            let answer = observed(observer, self.answer(&mut meta));
            let result = trace::called(span, answer).await;
            (result, meta.take())
        })
    }

    /// Makes the call and reads its answer, and the metadata before it into `meta` (owned,
    /// or borrowed by a caller that reads it afterwards).
    #[inline(always)]
    fn answer<M>(self, meta: M) -> impl Future<Output = Result<R, Error>>
    where
        M: std::borrow::BorrowMut<MetadataReader> + Send,
    {
        let deadline = self.deadline(Some(self.target.config().request_timeout));
        let idempotent = self.idempotent;
        // One timer for the whole call: it waits for an answer, however long the handler
        // takes within the deadline.
        deadline.answer_with(|| Answering {
            deadline,
            meta,
            retries: None,
            attempts: 1,
            idempotent,
            step: match self.resolve_now() {
                Ok(outgoing) => Step::Ready(outgoing),
                // A target that provides connections (a peer): waited for, boxed.
                Err(call) => Step::Resolving(Box::pin(async move {
                    call.resolve_with_retries(&deadline).await
                })),
            },
            result: PhantomData,
        })
    }
}

impl<K, A> Call<K, A> {
    /// The call with its connection, if its target is one; the call back otherwise.
    fn resolve_now(self) -> Result<Outgoing<A>, Self> {
        let Call {
            target,
            service,
            method,
            args,
            timeout,
            metadata,
            idempotent,
            compress,
            _kind,
        } = self;
        match target.into_connection() {
            Ok(conn) => Ok(Outgoing {
                conn,
                service,
                method,
                args,
                metadata,
                compress,
            }),
            Err(target) => Err(Call {
                target,
                service,
                method,
                args,
                timeout,
                metadata,
                idempotent,
                compress,
                _kind,
            }),
        }
    }
}

/// A request-response call in flight, from its first attempt to its answer, trying again
/// through a target that retries.
///
/// Written out as a state machine rather than as an `async` block: the block kept the call,
/// its attempt and its started stream side by side in every state, 1,816 bytes in all, and
/// each call's future is copied whole on its way into its box. Every state but the usual
/// two (a call ready to attempt, a call reading its answer) is boxed where it is entered.
struct Answering<A, R, M> {
    deadline: Deadline,
    /// Where the metadata before the answer goes.
    meta: M,
    /// What the target retries with, once resolved: `None` for a connection.
    retries: Retries,
    attempts: u32,
    idempotent: bool,
    step: Step<A>,
    result: PhantomData<fn() -> R>,
}

/// Where an [`Answering`] call is.
// The usual states are kept as they are: boxing them would cost every call an allocation.
#[allow(clippy::large_enum_variant)]
enum Step<A> {
    /// Resolved to its connection: attempted when next polled.
    Ready(Outgoing<A>),
    /// Waiting for a connection from its target.
    Resolving(Boxed<Result<(Outgoing<A>, Retries), Error>>),
    /// An attempt that waits for a stream, or for the stream's window.
    Attempting(Boxed<AttemptResult<A>>),
    /// The request is out: reading the answer. `answered` once a first frame has come that
    /// is not a refusal; from then on a failure is the call's and is not retried.
    Reading { started: Started<A>, answered: bool },
    /// Waiting to try again: the delay, then a connection.
    Retrying(Boxed<Result<Outgoing<A>, Error>>),
    /// Answered (or failed); polled again, it stays pending.
    Done,
}

// Nothing in it is pinned: its futures are boxed, the rest is moved at will.
impl<A, R, M> Unpin for Answering<A, R, M> {}

impl<A, R, M> Future for Answering<A, R, M>
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned,
    M: std::borrow::BorrowMut<MetadataReader>,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let failed = match &mut this.step {
                Step::Ready(_) => {
                    // Matched just above: the else branch is never taken.
                    let Step::Ready(call) = std::mem::replace(&mut this.step, Step::Done) else {
                        continue;
                    };
                    match this.attempt(call) {
                        Some(failed) => failed,
                        None => continue,
                    }
                }
                Step::Resolving(resolving) => match resolving.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => return this.finish(Err(err)),
                    Poll::Ready(Ok((call, retries))) => {
                        this.retries = retries;
                        match this.attempt(call) {
                            Some(failed) => failed,
                            None => continue,
                        }
                    }
                },
                Step::Attempting(attempt) => match attempt.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(started)) => {
                        this.step = Step::Reading {
                            started,
                            answered: false,
                        };
                        continue;
                    }
                    Poll::Ready(Err(failed)) => failed,
                },
                Step::Reading { started, answered } => {
                    match read_answer(started, answered, this.meta.borrow_mut(), cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(result)) => {
                            if result.is_ok() {
                                if let Some(retries) = &this.retries {
                                    retries.succeeded();
                                }
                                // The stream's end may follow in a packet of its own: it
                                // waits for it on the connection.
                                if let Some(reader) = started.reader.take() {
                                    started.call.conn.linger(reader);
                                }
                            }
                            return this.finish(result);
                        }
                        Poll::Ready(Err((err, retry))) => {
                            // Matched just above: the else branch is never taken.
                            let Step::Reading { started, .. } =
                                std::mem::replace(&mut this.step, Step::Done)
                            else {
                                continue;
                            };
                            Failed::new(err, started.call, retry)
                        }
                    }
                }
                Step::Retrying(retrying) => match retrying.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => return this.finish(Err(err)),
                    Poll::Ready(Ok(call)) => match this.attempt(call) {
                        Some(failed) => failed,
                        None => continue,
                    },
                },
                Step::Done => return Poll::Pending,
            };
            if let Some(err) = this.retry(failed) {
                return this.finish(Err(err));
            }
        }
    }
}

impl<A, R, M> Answering<A, R, M>
where
    A: Serialize + Send + 'static,
{
    /// Attempts the call: its stream opened and its frame written at once in the usual
    /// case, the rest of the attempt boxed otherwise. The failure, if it failed at once.
    fn attempt(&mut self, call: Outgoing<A>) -> Option<Failed<A>> {
        record_peer(&call.conn);
        match call.attempt(Kind::Unary, self.deadline) {
            Attempt::Done(Ok(started)) => {
                self.step = Step::Reading {
                    started,
                    answered: false,
                };
                None
            }
            Attempt::Done(Err(failed)) => Some(failed),
            Attempt::Waiting(rest) => {
                self.step = Step::Attempting(rest);
                None
            }
        }
    }

    /// After a failed attempt: tries again if the call never reached a handler, or is
    /// idempotent and its transport failed, through a target that retries, while the
    /// policy and its budget allow. The error to end with otherwise.
    fn retry(&mut self, failed: Failed<A>) -> Option<Error> {
        let Failed {
            err,
            mut call,
            retry,
        } = failed;
        let Some(retries) = self
            .retries
            .as_ref()
            .filter(|_| retry.allows(self.idempotent))
        else {
            return Some(err);
        };
        let Some(delay) = retries.retry_after(self.attempts) else {
            return Some(err);
        };
        let attempts = self.attempts;
        tracing::debug!(%err, attempts, ?delay, ?retry, "call not answered: retrying");
        let (retries, deadline) = (retries.clone(), self.deadline);
        self.step = Step::Retrying(Box::pin(async move {
            tokio::time::sleep(delay).await;
            call.conn = retries.connection(&deadline).await?;
            Ok(call)
        }));
        self.attempts += 1;
        None
    }

    /// Ends the call with `result`.
    fn finish<T>(&mut self, result: Result<T, Error>) -> Poll<Result<T, Error>> {
        self.step = Step::Done;
        Poll::Ready(result)
    }
}

/// A call whose transport failed before any answer, with how it may be retried.
fn transport_failure(err: Error) -> (Error, Retry) {
    let retry = Retry::after_transport_failure(&err);
    (err, retry)
}

/// Reads a started call's answer: the metadata frames before it into `meta`, then its RESULT
/// or STATUS. `Err` with how it may be retried if the call failed before any answer: refused
/// by the callee, or its transport failed.
fn read_answer<A, R: DeserializeOwned>(
    started: &mut Started<A>,
    answered: &mut bool,
    meta: &mut MetadataReader,
    cx: &mut Context<'_>,
) -> Poll<Result<Result<R, Error>, (Error, Retry)>> {
    let Some(reader) = started.reader.as_mut() else {
        return Poll::Ready(Ok(Err(Error::Protocol("no response stream".into()))));
    };
    if !*answered {
        let failed = match std::task::ready!(reader.poll_ready(cx)) {
            Ok(Some(TAG_STATUS)) => {
                let status = Error::from_status_payload(reader.payload());
                is_refusal(&status).then_some((status, Retry::Safe))
            }
            Ok(Some(_)) => None,
            // No answer came: the transport failed under the call.
            Ok(None) => Some(transport_failure(Error::Protocol(
                "stream ended without the call's result".into(),
            ))),
            Err(err) => Some(transport_failure(err.into())),
        };
        if let Some(failed) = failed {
            return Poll::Ready(Err(failed));
        }
        *answered = true;
    }
    stream::poll_result(reader, meta, cx).map(Ok)
}

impl<A> IntoFuture for Call<NotifyKind, A>
where
    A: Serialize + Send + 'static,
{
    type Output = Result<(), Error>;
    type IntoFuture = CallResult<()>;

    fn into_future(mut self) -> Self::IntoFuture {
        let span = self.span(Kind::Notify);
        let observer = match self.intercept(Kind::Notify) {
            Ok(observer) => observer,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        traced(
            span,
            observer,
            Box::pin(async move {
                let config = self.target.config();
                let (default, idle) = (config.request_timeout, config.idle_stream_timeout);
                let started = self.open(Kind::Notify, Some(default)).await?;
                record_peer(&started.call.conn);
                // A connection this node dialed closes once nothing uses it: the notification keeps
                // it open until the peer has it.
                let hold = started
                    .call
                    .conn
                    .is_dialed()
                    .then(|| started.call.conn.hold());
                if let Some(hold) = hold {
                    deliver(started.send, hold, idle);
                }
                Ok(())
            }),
        )
    }
}

/// Keeps `hold` until the peer has received all that was written on `send` (or stopped
/// reading it, or the idle bound passed), in a task of its own.
fn deliver(send: quinn::SendStream, hold: Hold, idle: Duration) {
    tokio::spawn(async move {
        let bound = Deadline::until(None, idle);
        let _ = bound.progress(async { Ok(send.stopped().await) }).await;
        drop(hold);
    });
}

impl<A, T, R> IntoFuture for Call<ServerStreamingKind<T, R>, A>
where
    A: Serialize + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = Result<(Receiver<T>, Response<R>), Error>;
    type IntoFuture = CallResult<(Receiver<T>, Response<R>)>;

    fn into_future(mut self) -> Self::IntoFuture {
        let span = self.span(Kind::ServerStream);
        let observer = match self.intercept(Kind::ServerStream) {
            Ok(observer) => observer,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        traced_stream(span, observer, async move {
            let started = self.open(Kind::ServerStream, None).await?;
            record_peer(&started.call.conn);
            let hold = started.call.conn.hold();
            let deadline = started.deadline;
            let (_send, reader) = started.halves()?;
            Ok(Receiver::with_response(reader, deadline, hold))
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

    fn into_future(mut self) -> Self::IntoFuture {
        let span = self.span(Kind::ClientStream);
        let observer = match self.intercept(Kind::ClientStream) {
            Ok(observer) => observer,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        traced_stream(span, observer, async move {
            let started = self.open(Kind::ClientStream, None).await?;
            record_peer(&started.call.conn);
            let hold = started.call.conn.hold();
            let (sender, reader, deadline) = started.into_sender()?;
            let response = Response::from_reader(reader, deadline, hold);
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

    fn into_future(mut self) -> Self::IntoFuture {
        let span = self.span(Kind::Bidi);
        let observer = match self.intercept(Kind::Bidi) {
            Ok(observer) => observer,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        traced_stream(span, observer, async move {
            let started = self.open(Kind::Bidi, None).await?;
            record_peer(&started.call.conn);
            let hold = started.call.conn.hold();
            let (sender, reader, deadline) = started.into_sender()?;
            let (receiver, response) = Receiver::with_response(reader, deadline, hold);
            Ok((sender, receiver, response))
        })
    }
}
