//! The serving engine: the loops that accept the streams a peer opens on a connection, and
//! the checks that turn each stream's header into an [`IncomingCall`] for its service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::connection::{Connection, Link};
use crate::deadline::Deadline;
use crate::error::{peer_text, Error};
use crate::id::Short;
use crate::incoming::{reject, CallFuture, IncomingCall};
use crate::service::Services;
use crate::trace;
use crate::wire::{self, FrameReader, Kind, WireError, TAG_CALL, TAG_CALL_PACKED};

/// Serves the calls `link`'s peer makes, in a task of its own, until the connection closes;
/// then `on_close` is dropped.
///
/// The engine holds the connection's [`Link`], which does not keep it open: each call the
/// peer makes gets a [`Connection`] handle of its own, which does while the call is served.
///
/// The task runs in the connection's DEBUG span, which logs why the connection closed.
pub(crate) fn spawn<T: Send + 'static>(link: Arc<Link>, services: Arc<Services>, on_close: T) {
    let span = tracing::debug_span!(
        "connection",
        remote = %Short(link.remote()),
        direction = ?link.direction(),
        address = %link.quic().remote_address(),
    );
    crate::receive::spawn(&link, &services);
    let run = async move {
        serve(Arc::clone(&link), services).await;
        if let Some(reason) = link.quic().close_reason() {
            tracing::debug!(reason = %Error::from_connection(&reason), "connection closed");
        }
        drop(on_close);
    };
    tokio::spawn(run.instrument(span));
}

/// Accepts the streams the peer opens and serves each as a call, until the connection closes.
async fn serve(link: Arc<Link>, services: Arc<Services>) {
    // The connection's span, parent of every call span on it (disabled, and free to clone,
    // when nothing listens).
    let parent = tracing::Span::current();
    let limit = Arc::new(Semaphore::new(link.config().max_concurrent_calls));
    // Notifications arrive on unidirectional streams, every other call on a bidirectional
    // one; each kind has its own accept loop, so neither polls the other's.
    let uni = tokio::spawn(serve_notifications(
        Arc::clone(&link),
        Arc::clone(&services),
        Arc::clone(&limit),
        parent.clone(),
    ));
    let mut inline = Inline::new(&link);
    while let Ok((send, recv)) = link.quic().accept_bi().await {
        let stream = Opened {
            conn: link.connection(),
            send: Some(send),
            recv,
            place: Place::Try(Arc::clone(&limit)),
        };
        if let Some(call) = inline.serve(stream, &services, &parent).await {
            call.spawn(link.shared().tracker());
        }
    }
    // The connection is gone: a notification loop waiting for a place stops.
    limit.close();
    let _ = uni.await;
}

/// Accepts notification streams and serves each once a place in the concurrent-call limit is
/// free.
///
/// A notification is never refused for want of a place: its sender has finished the stream
/// and would not learn of the refusal. Until a place frees, the stream accepted last waits
/// unread and those after it unaccepted; each keeps its QUIC stream credit, so once the peer
/// has used up its allowance of unidirectional streams (`max_concurrent_streams`), its next
/// notification waits to open a stream, within its deadline.
async fn serve_notifications(
    link: Arc<Link>,
    services: Arc<Services>,
    limit: Arc<Semaphore>,
    parent: tracing::Span,
) {
    let mut inline = Inline::new(&link);
    while let Ok(recv) = link.quic().accept_uni().await {
        // Fails only once the limit is closed, with the connection.
        let Ok(place) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let stream = Opened {
            conn: link.connection(),
            send: None,
            recv,
            place: Place::Held(place),
        };
        if let Some(call) = inline.serve(stream, &services, &parent).await {
            call.spawn(link.shared().tracker());
        }
    }
}

/// How many calls an accept loop spawns without polling them after a call kept it too long.
const SPAWN_AFTER_SLOW: u32 = 64;

/// Where an accept loop serves its calls: in its own task while they are done in their
/// first poll, spawned once they wait (see [`NodeBuilder::inline_limit`]).
///
/// A call whose header is there when its stream is accepted is admitted here, without a
/// future of its own around it: the future polled here is the service's, already boxed, and
/// it is that future that a task takes over if the call has to wait.
///
/// [`NodeBuilder::inline_limit`]: crate::NodeBuilder::inline_limit
struct Inline {
    /// How long a first poll here may take; `None`: calls are all spawned.
    limit: Option<Duration>,
    /// Calls still to spawn without a first poll here.
    spawn: u32,
}

/// A stream a peer opened, to serve as a call.
struct Opened {
    conn: Connection,
    send: Option<quinn::SendStream>,
    recv: quinn::RecvStream,
    place: Place,
}

impl Inline {
    fn new(conn: &Link) -> Self {
        Inline {
            limit: conn.config().inline_limit,
            spawn: 0,
        }
    }

    /// Serves `stream` here as far as it goes without a wait, unless calls are to be spawned
    /// for now. What is left to spawn, if the call is not done.
    fn serve<'a>(
        &'a mut self,
        stream: Opened,
        services: &'a Arc<Services>,
        parent: &'a tracing::Span,
    ) -> impl Future<Output = Option<Serve>> + 'a {
        let mut stream = Some(stream);
        std::future::poll_fn(move |cx| {
            let stream = stream.take();
            Poll::Ready(stream.and_then(|stream| self.run(stream, services, parent, cx)))
        })
    }

    fn run(
        &mut self,
        stream: Opened,
        services: &Arc<Services>,
        parent: &tracing::Span,
        cx: &mut Context<'_>,
    ) -> Option<Serve> {
        let Opened {
            conn,
            send,
            recv,
            place,
        } = stream;
        let mut reader = conn.reader(recv);
        let later = |conn, reader, send, place| {
            let later = serve_stream(
                conn,
                Arc::clone(services),
                send,
                reader,
                place,
                parent.clone(),
            );
            Some(Serve::Stream(Box::pin(later)))
        };
        let Some(limit) = self.limit.filter(|_| self.spawn == 0) else {
            self.spawn = self.spawn.saturating_sub(1);
            return later(conn, reader, send, place);
        };
        let started = Instant::now();
        // A header not here yet is waited for by a task of the call's own.
        let Poll::Ready(first) = reader.poll_frame(cx) else {
            return later(conn, reader, send, place);
        };
        let mut serve = match admit(&conn, services, send, reader, Ok(first), place, parent) {
            Ok((span, call)) => Serve::Call(trace::served(span, call)),
            Err(refused) => Serve::Stream(Box::pin(async move { refuse(&conn, refused).await })),
        };
        let polled = match &mut serve {
            Serve::Call(call) => Pin::new(call).poll(cx),
            Serve::Stream(rest) => rest.as_mut().poll(cx),
        };
        if started.elapsed() > limit {
            self.spawn = SPAWN_AFTER_SLOW;
        }
        // The call now waits on wakers of this loop's task; the task it is spawned as polls
        // it again at once, and from then on it wakes that task instead.
        polled.is_pending().then_some(serve)
    }
}

/// What is left of a call for a task of its own.
enum Serve {
    /// An admitted call: its service's future, in its span.
    Call(trace::Served<CallFuture>),
    /// A stream whose header is still to come, or a refusal still to write.
    Stream(Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl Serve {
    fn spawn(self, tracker: &tokio_util::task::TaskTracker) {
        match self {
            Serve::Call(call) => drop(tracker.spawn(call)),
            Serve::Stream(rest) => drop(tracker.spawn(rest)),
        }
    }
}

/// A call's place in the connection's concurrent-call limit.
enum Place {
    /// Taken before the stream was read.
    Held(OwnedSemaphorePermit),
    /// To be taken once the header is read, if one is free.
    Try(Arc<Semaphore>),
}

/// Reads one call's header and hands the call to its service.
///
/// This is the future of a task per call, moved whole as the task is spawned and completed:
/// it keeps only the stream and what it was given while it waits for the header (a header
/// already there is taken without a timer), and the rare refusals run boxed, so that their
/// writes do not add to its size.
// Not an `async fn`: that would keep each argument twice in the task's future.
#[allow(clippy::manual_async_fn)]
fn serve_stream(
    conn: Connection,
    services: Arc<Services>,
    send: Option<quinn::SendStream>,
    mut reader: FrameReader,
    place: Place,
    parent: tracing::Span,
) -> impl Future<Output = ()> + Send {
    async move {
        let admitted = {
            let first = match std::future::poll_fn(|cx| Poll::Ready(reader.poll_frame(cx))).await {
                Poll::Ready(first) => Ok(first),
                // Boxed: most headers are here when their stream is accepted.
                Poll::Pending => {
                    let wait = std::future::poll_fn(|cx| reader.poll_frame(cx));
                    Box::pin(Deadline::after(conn.config().header_timeout).within(wait)).await
                }
            };
            admit(&conn, &services, send, reader, first, place, &parent)
        };
        match admitted {
            Ok((span, call)) => trace::served(span, call).await,
            Err(refused) => Box::pin(refuse(&conn, refused)).await,
        }
    }
}

/// A stream that will not be served, and why.
struct Refused {
    reader: FrameReader,
    send: Option<quinn::SendStream>,
    err: Error,
}

/// Checks a call's header (`first`, the stream's first frame, or the header timeout's
/// expiry); gives the call's span and its service's future, or why the stream is refused.
fn admit(
    conn: &Connection,
    services: &Services,
    send: Option<quinn::SendStream>,
    reader: FrameReader,
    first: Result<Result<Option<(u8, Bytes)>, WireError>, Error>,
    place: Place,
    parent: &tracing::Span,
) -> Result<(tracing::Span, CallFuture), Box<Refused>> {
    let config = conn.config();

    let refused = |reader, send, err| Err(Box::new(Refused { reader, send, err }));
    let (packed, payload) = match first {
        Ok(Ok(Some((TAG_CALL, payload)))) => (false, payload),
        Ok(Ok(Some((TAG_CALL_PACKED, payload)))) if conn.protocol_version() >= 2 => (true, payload),
        Ok(Ok(Some((tag, _)))) => {
            let err = Error::Protocol(format!("expected a call header, got frame tag {tag:#04x}"));
            return refused(reader, send, err);
        }
        // The peer opened a stream and finished it without a call: nothing to answer.
        Ok(Ok(None)) => return refused(reader, send, Error::Protocol("empty stream".into())),
        Ok(Err(err)) => return refused(reader, send, err.into()),
        Err(_) => {
            let err = Error::Protocol(format!("no call header within {:?}", config.header_timeout));
            return refused(reader, send, err);
        }
    };
    // The frame counts against the budgets for as long as the call keeps any of it; a small
    // one takes its room now. A node (or connection) over its budget takes no new calls.
    let payload = match conn.budget().try_hold(payload) {
        Ok(payload) => payload,
        Err(full) => return refused(reader, send, Error::Overloaded(full.to_string())),
    };
    // Checked against the header's bounds before any of it is kept.
    let (header, args) = match wire::decode_call(&payload, &config.header) {
        Ok(call) => call,
        Err(err) => return refused(reader, send, err.into()),
    };
    let args = match packed {
        true => match unpack_args(conn, &args) {
            Ok(args) => args,
            Err(err) => return refused(reader, send, err),
        },
        false => args,
    };
    // The header and the arguments keep what they need of it.
    drop(payload);
    if send.is_none() != (header.kind == Kind::Notify) {
        let err =
            Error::Protocol("notifications, and only they, use unidirectional streams".into());
        return refused(reader, send, err);
    }
    if conn.is_shutting_down() {
        return refused(reader, send, Error::ShuttingDown);
    }
    let permit = match place {
        Place::Held(permit) => permit,
        Place::Try(limit) => match limit.try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let err = Error::Overloaded(format!(
                    "more than {} calls in flight on this connection",
                    config.max_concurrent_calls
                ));
                return refused(reader, send, err);
            }
        },
    };
    let Some(service) = services.get(header.service()) else {
        let err = Error::UnknownService(peer_text(header.service()).into_owned());
        return refused(reader, send, err);
    };
    // The deadline counts from the complete CALL frame (`docs/PROTOCOL.md`, section 10). A
    // call whose time is already up is not given to its handler.
    let requested = header.timeout_us.map(Duration::from_micros);
    let granted = config.granted_deadline(header.kind, requested);
    let deadline = Deadline::new(granted, config.idle_stream_timeout);
    if deadline.is_expired() {
        return refused(reader, send, Error::Timeout);
    }
    // No field is formatted unless something takes the span.
    let span = tracing::debug_span!(
        parent: parent,
        "call",
        side = "server",
        service = %peer_text(header.service()),
        method = %peer_text(header.method()),
        kind = header.kind.name(),
        peer = %Short(conn.remote_id()),
    );
    #[cfg(feature = "opentelemetry")]
    crate::otel::extract(&span, header.metadata());
    let call = IncomingCall::new(conn.clone(), header, args, reader, send, permit, deadline);
    // A method decodes its arguments as it takes the call: in the call's span, where what it
    // logs belongs.
    let serving = span.in_scope(|| service.call(call));
    Ok((span, serving))
}

/// The arguments of a compressed CALL frame, decompressed. Their announced size is checked
/// against the message limit before anything is set aside for them, and they take room from
/// the budgets, as the frame does, for as long as the call keeps them: a call that finds none
/// is refused.
fn unpack_args(conn: &Connection, packed: &[u8]) -> Result<bytes::Bytes, Error> {
    let (len, skip) = wire::unpacked_len(packed, conn.config().max_message_size)?;
    // At most the message limit, which fits in u32.
    let room = u32::try_from(wire::FRAME_HEAD + len).unwrap_or(u32::MAX);
    let room =
        (conn.budget().try_take(room)).map_err(|full| Error::Overloaded(full.to_string()))?;
    let mut args = vec![0; len];
    wire::unpack_into(&packed[skip..], &mut args)?;
    Ok(wire::hold(args, room))
}

/// Answers a stream that will not be served, telling the peer to stop sending on it.
async fn refuse(conn: &Connection, refused: Box<Refused>) {
    let Refused {
        mut reader,
        send,
        err,
    } = *refused;
    tracing::debug!(%err, "call refused");
    let code = match err {
        Error::ShuttingDown => wire::STREAM_REFUSED,
        Error::Protocol(_) | Error::MessageTooLarge(_) => wire::STREAM_PROTOCOL,
        _ => wire::STREAM_CANCELLED,
    };
    reader.try_finish();
    reader.stop(code);
    reject(conn, send, err).await;
}
