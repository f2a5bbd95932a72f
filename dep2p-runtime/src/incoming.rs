//! One incoming call, from its accepted header to its final frame: the serving functions
//! generated servers call, the handler run under the call's deadline, and the answer.

mod probe;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::Either;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::connection::Connection;
use crate::context::CallContext;
use crate::deadline::Deadline;
use crate::error::{peer_text, Error};
use crate::metadata::MetadataSlot;
use crate::outcome::Outcome;
use crate::stream::{Receiver, Sender};
use crate::wire::{self, FrameReader, IncomingHeader, Kind, TAG_RESULT};

/// The future that serves one call, resolving to how the call ended.
pub type CallFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// One call that arrived at this node and passed header checks, waiting for its method to
/// serve it. Generated servers pass it to the method's serving function.
pub struct IncomingCall {
    /// The call's context, and its response stream until a serving function takes it.
    answer: Unanswered,
    kind: Kind,
    args: Bytes,
    reader: Option<FrameReader>,
    /// For the streaming kinds, completes when the caller stops reading responses.
    stopped: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The call's time bounds, as this node grants them.
    deadline: Deadline,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingCall")
            .field("context", &self.answer.context)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl IncomingCall {
    pub(crate) fn new(
        connection: Connection,
        header: IncomingHeader,
        args: Bytes,
        reader: FrameReader,
        send: Option<quinn::SendStream>,
        permit: OwnedSemaphorePermit,
        deadline: Deadline,
    ) -> Self {
        IncomingCall {
            kind: header.kind,
            answer: Unanswered {
                context: CallContext::new(connection, header, deadline.instant()),
                send,
            },
            args,
            reader: Some(reader),
            stopped: None,
            deadline,
            _permit: permit,
        }
    }

    /// The method the caller asked for.
    pub fn method(&self) -> &str {
        self.answer.context.method()
    }

    /// The call's context.
    pub fn context(&self) -> &CallContext {
        &self.answer.context
    }

    /// The kind of method the caller called.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn config(&self) -> &crate::config::Config {
        self.answer.context.connection().config()
    }

    /// Checks the kind and decodes the arguments. A `Deserialize` that panics fails the call
    /// like a panicking handler.
    fn start<A: DeserializeOwned>(&mut self, kind: Kind) -> Result<A, Error> {
        if self.kind != kind {
            return Err(Error::UnknownMethod(format!(
                "`{}.{}` is a {} method here, called as {}",
                peer_text(self.answer.context.service()),
                peer_text(self.answer.context.method()),
                kind.name(),
                self.kind.name()
            )));
        }
        let args = &self.args;
        match std::panic::catch_unwind(AssertUnwindSafe(|| wire::decode::<A>(args))) {
            Ok(decoded) => Ok(decoded?),
            Err(panic) => {
                let err = self.panicked("decoding the arguments", &panic);
                Err(err)
            }
        }
    }

    /// Logs a panic while serving this call; the error its caller gets.
    fn panicked(&self, during: &str, panic: &Panic) -> Error {
        panicked(&self.answer.context, during, panic)
    }

    /// Serves a request-response method.
    pub fn unary<A, R, F, Fut>(mut self, handler: F) -> CallFuture
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: FnOnce(A) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        match self.start::<A>(Kind::Unary) {
            Ok(args) => {
                let send = self.answer.send.take();
                respond(self, send, None, move || handler(args))
            }
            Err(err) => self.refuse(err),
        }
    }

    /// Serves a notification method: there is no one to answer, so failures are logged.
    pub fn notify<A, F, Fut>(mut self, handler: F) -> CallFuture
    where
        A: DeserializeOwned + Send + 'static,
        F: FnOnce(A) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Box::pin(async move {
            let args = match self.start::<A>(Kind::Notify) {
                Ok(args) => args,
                Err(err) => {
                    // A caller that used another kind (an older or newer peer) waits on a
                    // bidirectional stream for an answer: it gets one.
                    tracing::debug!(method = %peer_text(self.method()), %err, "notification refused");
                    let send = self.answer.send.take();
                    return reject(self.answer.context.connection(), send, err).await;
                }
            };
            let run = self
                .answer
                .context
                .clone()
                .scope(Guarded::new(move || handler(args)));
            match self.deadline.within(run).await {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(panic)) => {
                    Outcome::Failed(self.panicked("running a notification handler", &panic))
                }
                Err(_) => {
                    tracing::debug!(
                        method = %peer_text(self.method()),
                        "notification deadline passed"
                    );
                    Outcome::Failed(Error::Timeout)
                }
            }
        })
    }

    /// Serves a server-streaming method: `handler` gets the arguments and a [`Sender`].
    pub fn server_stream<A, T, R, F, Fut>(mut self, handler: F) -> CallFuture
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + Send + 'static,
        R: Serialize + Send + 'static,
        F: FnOnce(A, Sender<T>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        match self.start::<A>(Kind::ServerStream) {
            Ok(args) => {
                let (out, back) = self.handler_sender::<T>();
                respond(self, None, back, move || handler(args, out))
            }
            Err(err) => self.refuse(err),
        }
    }

    /// Serves a client-streaming method: `handler` gets the arguments and a [`Receiver`].
    pub fn client_stream<A, T, R, F, Fut>(mut self, handler: F) -> CallFuture
    where
        A: DeserializeOwned + Send + 'static,
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: FnOnce(A, Receiver<T>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        match self.start::<A>(Kind::ClientStream) {
            Ok(args) => {
                let send = self.answer.send.take();
                let incoming = self.handler_receiver::<T>();
                respond(self, send, None, move || handler(args, incoming))
            }
            Err(err) => self.refuse(err),
        }
    }

    /// Serves a bidirectional method: `handler` gets the arguments, a [`Receiver`] of what the
    /// caller sends and a [`Sender`] to the caller.
    pub fn bidi<A, I, O, R, F, Fut>(mut self, handler: F) -> CallFuture
    where
        A: DeserializeOwned + Send + 'static,
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        R: Serialize + Send + 'static,
        F: FnOnce(A, Receiver<I>, Sender<O>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        match self.start::<A>(Kind::Bidi) {
            Ok(args) => {
                let incoming = self.handler_receiver::<I>();
                let (out, back) = self.handler_sender::<O>();
                respond(self, None, back, move || handler(args, incoming, out))
            }
            Err(err) => self.refuse(err),
        }
    }

    /// Answers a call to a method this service does not have.
    pub fn unknown_method(self) -> CallFuture {
        let err = Error::UnknownMethod(format!(
            "service `{}` has no method `{}`",
            peer_text(self.answer.context.service()),
            peer_text(self.answer.context.method())
        ));
        self.refuse(err)
    }

    /// Answers the call with `err`'s status instead of serving it: what a server-side layer
    /// does to refuse a call (an unauthenticated caller, a rate limit). The caller's call
    /// fails with `err`, as its status carries it (`docs/PROTOCOL.md`, section 8: errors
    /// without a status of their own arrive as [`Error::HandlerFailed`]); the handler never
    /// runs. The future resolves to [`Outcome::Failed`]`(err)` once the status is on its
    /// way. A notification's sender learns nothing of it.
    ///
    /// ```
    /// use dep2p_runtime::{CallFuture, Error, IncomingCall};
    ///
    /// fn guard(call: IncomingCall, serve: impl FnOnce(IncomingCall) -> CallFuture) -> CallFuture {
    ///     if call.context().metadata("token") != Some("let me in") {
    ///         return call.refuse(Error::PermissionDenied("bad token".into()));
    ///     }
    ///     serve(call)
    /// }
    /// ```
    pub fn refuse(mut self, err: Error) -> CallFuture {
        let send = self.answer.send.take();
        let conn = self.answer.context.connection().clone();
        Box::pin(async move { reject(&conn, send, err).await })
    }

    /// The handler's [`Sender`], and where the stream comes back when it is dropped.
    fn handler_sender<T>(&mut self) -> (Sender<T>, Option<HandBack>) {
        let max = self.config().max_message_size;
        let (tx, rx) = oneshot::channel();
        match self.answer.send.take() {
            Some(send) => {
                self.stopped = Some(Box::pin(send.stopped().map(|_| ())));
                let metadata = self.answer.context.response_metadata().cloned();
                let sender =
                    Sender::handler(send, tx, max, self.deadline, metadata).packing(self.pack());
                (sender, Some(rx))
            }
            // Only notifications lack a send stream, and `start` checked the kind. A sender
            // with nowhere to go fails its first send with `Cancelled`.
            None => (Sender::detached(max, self.deadline), None),
        }
    }

    /// How the messages this node sends for the call are compressed.
    fn pack(&self) -> wire::Pack {
        pack(&self.answer.context)
    }

    fn handler_receiver<T>(&mut self) -> Receiver<T> {
        match self.reader.take() {
            Some(reader) => Receiver::new(reader, self.deadline),
            None => Receiver::ended(),
        }
    }
}

/// A call's context and response stream. Kept apart from the rest of the [`IncomingCall`],
/// which its serving function takes to pieces: only this part answers if it is dropped.
struct Unanswered {
    context: CallContext,
    send: Option<quinn::SendStream>,
}

impl Drop for Unanswered {
    /// A call dropped without an answer (a hand-written [`Service`](crate::Service) that
    /// neither served nor refused it) still tells its caller why nothing comes.
    fn drop(&mut self) {
        if let Some(send) = self.send.take() {
            let conn = self.context.connection().clone();
            let err = Error::HandlerFailed(format!(
                "service `{}` dropped the call to `{}` without answering",
                peer_text(self.context.service()),
                peer_text(self.context.method())
            ));
            // Outside a runtime (it is being dropped) there is nothing left to answer with.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let tracker = conn.shared().tracker().clone();
                let answer = async move {
                    reject(&conn, Some(send), err).await;
                };
                runtime.spawn(tracker.track_future(answer));
            }
        }
    }
}

type HandBack = oneshot::Receiver<quinn::SendStream>;

type Panic = Box<dyn Any + Send + 'static>;

pin_project_lite::pin_project! {
    /// Runs `make` and the future it returns, catching a panic in either. A plain future
    /// rather than an `async fn`, which would hold the handler's future twice.
    #[project = GuardedProj]
    #[project_replace = GuardedOwn]
    enum Guarded<F, Fut> {
        Make { make: F },
        Run { #[pin] fut: Fut },
        Done,
    }
}

impl<F, Fut> Guarded<F, Fut> {
    fn new(make: F) -> Self {
        Guarded::Make { make }
    }
}

impl<F, Fut> Future for Guarded<F, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    type Output = Result<Fut::Output, Panic>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let GuardedProj::Make { .. } = self.as_mut().project() {
            let GuardedOwn::Make { make } = self.as_mut().project_replace(Guarded::Done) else {
                return Poll::Pending;
            };
            match std::panic::catch_unwind(AssertUnwindSafe(make)) {
                Ok(fut) => self.set(Guarded::Run { fut }),
                Err(panic) => return Poll::Ready(Err(panic)),
            }
        }
        let GuardedProj::Run { fut } = self.as_mut().project() else {
            // Polled after it completed.
            return Poll::Pending;
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx)));
        let out = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(value)) => Ok(value),
            Err(panic) => Err(panic),
        };
        // The handler's future goes as soon as it is done, as it would in an `async` block.
        self.set(Guarded::Done);
        Poll::Ready(out)
    }
}

/// How a handler's run ended.
enum Handled<T> {
    /// It completed (or panicked).
    Done(T),
    /// The call's deadline passed first.
    TimedOut,
    /// The caller stopped reading the response: it dropped the call.
    CallerGone,
}

pin_project_lite::pin_project! {
    /// A handler run under its call's deadline while watching for the caller going away. The
    /// deadline's timer and the watch start only once the handler waits: most handlers
    /// complete on their first poll.
    struct Handling<'a, H, G> {
        #[pin]
        run: H,
        caller_gone: Pin<&'a mut G>,
        deadline: Option<tokio::time::Instant>,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
    }
}

impl<H, G> Future for Handling<'_, H, G>
where
    H: Future,
    G: Future<Output = ()>,
{
    type Output = Handled<H::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.run.poll(cx) {
            return Poll::Ready(Handled::Done(out));
        }
        if let (None, Some(at)) = (this.sleep.as_ref().as_pin_ref(), *this.deadline) {
            this.sleep.set(Some(tokio::time::sleep_until(at)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(Handled::TimedOut);
            }
        }
        if this.caller_gone.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Handled::CallerGone);
        }
        Poll::Pending
    }
}

/// How the messages this node sends for the call of `context` are compressed.
fn pack(context: &CallContext) -> wire::Pack {
    let conn = context.connection();
    // The names are read (each read checks them as UTF-8 again) only if some method has a
    // setting of its own.
    if !conn.config().compression.per_method() {
        return conn.pack("", "", None);
    }
    conn.pack(context.service(), context.method(), None)
}

/// Logs a panic while serving the call of `context`; the error its caller gets.
fn panicked(context: &CallContext, during: &str, panic: &Panic) -> Error {
    panic_error(context.connection(), context.method(), during, panic)
}

/// What a panic carried, if it is text.
fn panic_text(panic: &Panic) -> Option<&str> {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
}

/// Logs a panic that happened `during` the serving of `method`, and makes the error its
/// caller gets: the panic's message only if the node opted in to sending it.
fn panic_error(conn: &Connection, method: &str, during: &str, panic: &Panic) -> Error {
    let text = panic_text(panic).unwrap_or("(no message)");
    tracing::warn!(method = %peer_text(method), "panic while {during}: {text}");
    if conn.config().send_panic_messages {
        Error::HandlerFailed(format!("panic while {during}: {text}"))
    } else {
        Error::HandlerFailed(format!("panic while {during}"))
    }
}

/// Writes a call's last frame and finishes the stream. While the node shuts down, or on a
/// connection this node dialed (which closes once nothing uses it), it then waits until the
/// peer has received all of it (or stopped reading, or the connection is gone): the wait keeps
/// the call counted as in flight, so neither the shutdown nor the last handle going closes the
/// connection under an answer still on its way. (Otherwise the wait would cost every call a
/// wakeup when the acknowledgement arrives.)
///
/// A caller that reads nothing holds the write up for the idle-stream timeout at most; then
/// the stream is reset.
///
/// Not an `async fn`, which would keep its arguments twice in the future of every call.
#[allow(clippy::manual_async_fn)]
fn end_stream(
    conn: &Connection,
    mut send: quinn::SendStream,
    frame: Bytes,
) -> impl Future<Output = ()> + '_ {
    async move {
        let bound = Deadline::until(None, conn.config().idle_stream_timeout);
        let write = wire::write_frame(&mut send, frame).map(|r| r.map_err(Error::from_write));
        let written = bound.progress(write).await;
        match written {
            Ok(()) => {
                if send.finish().is_ok() && (conn.is_shutting_down() || conn.is_dialed()) {
                    // Boxed: most calls are served on connections their callers dialed.
                    let _ = Box::pin(bound.progress(send.stopped().map(Ok))).await;
                }
            }
            Err(Error::IdleTimeout) => {
                tracing::debug!("caller read nothing for the idle-stream timeout: stream reset");
                let _ = send.reset(wire::STREAM_CANCELLED.into());
            }
            Err(_) => {}
        }
    }
}

/// Answers a call that will not be served with the status for `err`.
pub(crate) async fn reject(
    conn: &Connection,
    send: Option<quinn::SendStream>,
    err: Error,
) -> Outcome {
    if let Some(send) = send {
        let mut code = err.status_code();
        if code == wire::StatusCode::PermissionDenied && conn.protocol_version() < 2 {
            // Version 1 has no such code (`docs/PROTOCOL.md`, section 8).
            code = wire::StatusCode::HandlerFailed;
        }
        let frame = wire::encode_status(code, &err.status_message());
        end_stream(conn, send, frame).await;
    }
    Outcome::Failed(err)
}

/// Runs a handler (the future `make` returns) to completion under the call's deadline,
/// watching for the caller going away, and writes its result (or why there is none) as the
/// stream's last frame.
///
/// `send` is the response stream when the handler does not own it; otherwise `back` yields
/// the stream once the handler's `Sender` is gone.
///
/// Not an `async fn`: its arguments would be kept twice in the future, which is allocated
/// and moved for every call. The block uses `call` where it lies, and the handler's future
/// is made inside the run that polls it.
fn respond<R, F, Fut>(
    call: IncomingCall,
    send: Option<quinn::SendStream>,
    back: Option<HandBack>,
    make: F,
) -> CallFuture
where
    R: Serialize + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    // Taken to pieces: the future keeps only what it uses (the arguments were decoded).
    let IncomingCall {
        answer,
        reader,
        stopped,
        deadline,
        _permit: permit,
        ..
    } = call;
    // A request of the non-streaming kinds was read whole. Read to its end, it is let go now;
    // if its end has not arrived yet, it waits for it on the connection rather than being
    // stopped, which would cost the caller a needless STOP_SENDING.
    if let Some(reader) = reader {
        answer.context.connection().linger(reader);
    }
    Box::pin(async move {
        // Completes when the caller stops reading the response: it dropped the call. Built
        // from combinators rather than an `async` block, which would hold both options and
        // the future it awaits.
        let mut caller_gone = std::pin::pin!(match (send.as_ref(), stopped) {
            (Some(send), _) => Either::Left(send.stopped().map(|_| ())),
            (None, Some(handed_over)) => Either::Right(Either::Left(handed_over)),
            (None, None) => Either::Right(Either::Right(std::future::pending())),
        });
        let handling = Handling {
            run: answer.context.clone().scope(Guarded::new(make)),
            caller_gone: caller_gone.as_mut(),
            deadline: deadline.instant(),
            sleep: None,
        };
        // A handler stopped at its deadline is gone by now, and with it a `Sender` it held,
        // so that its stream comes back for the status.
        let outcome = match handling.await {
            Handled::Done(outcome) => Ok(outcome),
            Handled::TimedOut => Err(Error::Timeout),
            Handled::CallerGone => return Outcome::Failed(Error::Cancelled),
        };
        let failed = !matches!(outcome, Ok(Ok(_)));
        // The message limit, and how a result is compressed.
        let max = (
            answer.context.connection().config().max_message_size,
            pack(&answer.context),
        );
        let (frame, ended) = result_frame(&answer.context, outcome, max);
        // Without the stream back there is nothing to write the result on: the caller went
        // away (or the stream was lost), or the deadline passed while a `Sender` was kept
        // elsewhere.
        let cancelled = || Outcome::Failed(Error::Cancelled);
        let send = match (send, back) {
            (Some(send), _) => Ok(send),
            // The handler is gone, and with it its `Sender`, unless it moved the `Sender`
            // into another task: then the call stays open until that `Sender` is dropped,
            // the caller goes away or the deadline passes.
            // Once the handler has failed there is no deadline left to keep: what it queued
            // is still written (the stream's writer bounds that by the idle timeout), then
            // the status.
            (None, Some(back)) if failed => tokio::select! {
                send = back => send.map_err(|_| cancelled()),
                () = &mut caller_gone => Err(cancelled()),
            },
            (None, Some(back)) => tokio::select! {
                send = deadline.within(back) => match send {
                    Ok(send) => send.map_err(|_| cancelled()),
                    Err(_) => Err(Outcome::Failed(Error::Timeout)),
                },
                () = &mut caller_gone => Err(cancelled()),
            },
            (None, None) => Err(cancelled()),
        };
        let send = match send {
            Ok(send) => send,
            Err(outcome) => return outcome,
        };
        let conn = answer.context.connection().clone();
        let metadata = answer.context.response_metadata().cloned();
        // The call no longer counts against the connection's limit while its last frame is
        // written.
        drop(permit);
        drop(answer);
        let (frame, ended) = with_metadata(metadata, frame, ended);
        end_stream(&conn, send, frame).await;
        ended
    })
}

/// The final frame for a handler's outcome (`Err` if it was stopped at its deadline): its
/// result, or the status saying why there is none; and how the call ended.
///
/// A plain function: what it works with stays out of the call's future.
fn result_frame<R: Serialize>(
    context: &CallContext,
    outcome: Result<Result<R, Panic>, Error>,
    max: (usize, wire::Pack),
) -> (Bytes, Outcome) {
    let encoded = match &outcome {
        Ok(Ok(value)) => {
            std::panic::catch_unwind(AssertUnwindSafe(|| wire::packed(TAG_RESULT, value, max)))
                .map_err(|panic| panicked(context, "encoding the result", &panic))
                .and_then(|encoded| {
                    encoded.map_err(|err| {
                        let err = Error::from(err);
                        match err {
                            Error::MessageTooLarge(m) => {
                                Error::MessageTooLarge(format!("result: {m}"))
                            }
                            Error::Decode(m) => Error::Decode(format!("result: {m}")),
                            other => other,
                        }
                    })
                })
        }
        Ok(Err(panic)) => Err(panicked(context, "running the handler", panic)),
        Err(_) => Err(Error::Timeout),
    };
    match encoded {
        Ok(frame) => {
            let ended = match &outcome {
                Ok(Ok(value)) if probe::is_err(value) => Outcome::ApplicationError,
                _ => Outcome::Ok,
            };
            (frame, ended)
        }
        Err(err) => {
            let message = match err {
                Error::Timeout => "deadline exceeded".to_string(),
                ref other => other.status_message(),
            };
            (
                wire::encode_status(err.status_code(), &message),
                Outcome::Failed(err),
            )
        }
    }
}

/// The handler's metadata goes just before the final frame: its headers, if no item took
/// them out already, then its trailers. Metadata over the bounds fails the call instead.
fn with_metadata(
    metadata: Option<Arc<MetadataSlot>>,
    frame: Bytes,
    ended: Outcome,
) -> (Bytes, Outcome) {
    match metadata.map(|metadata| metadata.finish()) {
        Some(Ok(Some(before))) => {
            let mut frames = bytes::BytesMut::with_capacity(before.len() + frame.len());
            frames.extend_from_slice(&before);
            frames.extend_from_slice(&frame);
            (frames.freeze(), ended)
        }
        Some(Err(err)) => {
            let err = Error::from(err);
            let status = wire::encode_status(err.status_code(), &err.status_message());
            (status, Outcome::Failed(err))
        }
        Some(Ok(None)) | None => (frame, ended),
    }
}
