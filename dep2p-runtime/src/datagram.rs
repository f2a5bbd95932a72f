//! `#[datagram]` methods: the call a generated client makes ([`Datagram`]), the datagram a
//! generated server serves ([`IncomingDatagram`]), what its handler knows about it
//! ([`DatagramContext`]) and the counts a connection keeps ([`DatagramStats`], [`PathStats`]).
//!
//! A datagram call is one QUIC DATAGRAM frame (RFC 9221): sent once, never retransmitted,
//! unordered, never blocked behind a stream. Its format is in `docs/PROTOCOL.md`.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::connection::Connection;
use crate::deadline::Deadline;
use crate::error::{peer_text, Error};
use crate::incoming::CallFuture;
use crate::outcome::Outcome;
use crate::target::Target;
use crate::wire::{self, DatagramHead};

tokio::task_local! {
    static CONTEXT: DatagramContext;
}

/// A connection's datagram state, kept in its state map under this private type: the
/// sequence numbers it sends, the newest it received, its clock reference, its counts.
pub(crate) struct Datagrams {
    /// The instant send times count from, and receive times are measured against.
    epoch: Instant,
    /// Per method id: the sequence number of the next datagram sent.
    next: Mutex<HashMap<u32, u64>>,
    /// Per method id: one past the highest sequence number received.
    newest: Mutex<HashMap<u32, u64>>,
    /// The smallest difference seen between a datagram's arrival (in this node's clock) and
    /// its send time (in the peer's), in microseconds: the peer's clock offset plus the
    /// fastest one-way delay seen.
    base: Mutex<Option<i64>>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
    handled: AtomicU64,
    dropped_busy: AtomicU64,
    dropped_unknown: AtomicU64,
    dropped_undecodable: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while these locks are held.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Datagrams {
    fn new() -> Self {
        Datagrams {
            epoch: Instant::now(),
            next: Mutex::default(),
            newest: Mutex::default(),
            base: Mutex::default(),
            counts: Counts::default(),
        }
    }

    /// The state of the connection whose state map is `state`.
    pub(crate) fn of(state: &crate::state::StateMap) -> Arc<Datagrams> {
        state.get_or_insert_with(Datagrams::new)
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    pub(crate) fn received(&self) {
        count(&self.counts.received);
    }

    pub(crate) fn dropped_busy(&self) {
        count(&self.counts.dropped_busy);
    }

    pub(crate) fn dropped_unknown(&self) {
        count(&self.counts.dropped_unknown);
    }

    pub(crate) fn dropped_undecodable(&self) {
        count(&self.counts.dropped_undecodable);
    }

    /// What a handler may know of a datagram with `head` that arrived at `received_at`:
    /// whether it is the newest of its method so far, and its estimated age.
    pub(crate) fn arrival(
        &self,
        head: &DatagramHead,
        received_at: Instant,
        rtt: Duration,
    ) -> (bool, Duration) {
        let newest = {
            let mut newest = lock(&self.newest);
            let highest = newest.entry(head.method).or_insert(0);
            let is_newest = head.sequence >= *highest;
            if is_newest {
                *highest = head.sequence.saturating_add(1);
            }
            is_newest
        };
        let delta = i64::try_from(self.micros(received_at))
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(head.sent_us).unwrap_or(i64::MAX));
        let base = {
            let mut base = lock(&self.base);
            let now = base.map_or(delta, |base| base.min(delta));
            *base = Some(now);
            now
        };
        let late = u64::try_from(delta.saturating_sub(base)).unwrap_or(0);
        (newest, Duration::from_micros(late) + rtt / 2)
    }
}

/// Sends one datagram call of `service.method` with `args` on `conn`.
fn send<A: Serialize>(
    conn: &Connection,
    service: &str,
    method: &str,
    args: &A,
) -> Result<(), Error> {
    if conn.protocol_version() < 2 {
        return Err(Error::Unsupported(format!(
            "`{service}.{method}` is a datagram method, and datagrams need protocol version 2; \
             this connection speaks version {}",
            conn.protocol_version()
        )));
    }
    let Some(max) = conn.quic().max_datagram_size() else {
        return Err(Error::Unsupported(format!(
            "`{service}.{method}` is a datagram method, and the peer does not accept QUIC \
             datagrams on this connection"
        )));
    };
    let state = conn.datagrams();
    let method_id = wire::method_id(service, method);
    // Held while the datagram is encoded and queued, so that sequence numbers leave in order
    // and one refused for its size takes none.
    let mut next = lock(&state.next);
    let sequence = next.get(&method_id).copied().unwrap_or(0);
    let head = DatagramHead {
        method: method_id,
        sequence,
        sent_us: state.micros(Instant::now()),
    };
    let bytes = match std::panic::catch_unwind(AssertUnwindSafe(|| {
        wire::encode_datagram(&head, args, max)
    })) {
        Ok(bytes) => bytes?,
        Err(_) => return Err(Error::Decode("encoding the datagram panicked".into())),
    };
    conn.quic().send_datagram(bytes).map_err(|err| match err {
        quinn::SendDatagramError::TooLarge => Error::MessageTooLarge(format!(
            "the datagram does not fit the path's current maximum datagram size ({:?} bytes)",
            conn.quic().max_datagram_size()
        )),
        quinn::SendDatagramError::ConnectionLost(err) => Error::from_connection(&err),
        other => Error::Unsupported(format!("`{service}.{method}`: {other}")),
    })?;
    next.insert(method_id, sequence.wrapping_add(1));
    count(&state.counts.sent);
    Ok(())
}

impl Connection {
    /// This connection's datagram state.
    fn datagrams(&self) -> Arc<Datagrams> {
        self.state_or_insert_with(Datagrams::new)
    }

    /// Statistics of the connection's path and of its `#[datagram]` calls, in both
    /// directions.
    ///
    /// ```
    /// # fn show(conn: &dep2p_runtime::Connection) {
    /// let stats = conn.path_stats();
    /// println!(
    ///     "rtt {:?}, {:.1}% of packets lost, {} datagrams dropped here",
    ///     stats.rtt,
    ///     stats.loss() * 100.0,
    ///     stats.datagrams.dropped(),
    /// );
    /// # }
    /// ```
    pub fn path_stats(&self) -> PathStats {
        let quic = self.quic().stats();
        let state = self.datagrams();
        let counts = &state.counts;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (sent, received) = (get(&counts.sent), get(&counts.received));
        PathStats {
            rtt: quic.path.rtt,
            min_rtt: quic.path.min_rtt,
            sent_packets: quic.path.sent_packets,
            lost_packets: quic.path.lost_packets,
            current_mtu: quic.path.current_mtu,
            max_datagram_size: self.quic().max_datagram_size(),
            datagrams: DatagramStats {
                sent,
                unsent: sent.saturating_sub(quic.frame_tx.datagram),
                received,
                unread: quic.frame_rx.datagram.saturating_sub(received),
                handled: get(&counts.handled),
                dropped_busy: get(&counts.dropped_busy),
                dropped_unknown: get(&counts.dropped_unknown),
                dropped_undecodable: get(&counts.dropped_undecodable),
            },
            streams_stopped: quic.frame_tx.stop_sending,
            streams_reset: quic.frame_tx.reset_stream,
        }
    }
}

/// Statistics of a connection's path: [`Connection::path_stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PathStats {
    /// The current (smoothed) round-trip time estimate.
    pub rtt: Duration,
    /// The smallest round-trip time seen.
    pub min_rtt: Duration,
    /// QUIC packets sent on the path.
    pub sent_packets: u64,
    /// Of them, the ones QUIC declared lost.
    pub lost_packets: u64,
    /// The largest UDP payload the path currently carries.
    pub current_mtu: u16,
    /// The largest datagram call, header included, the path currently carries; `None` if
    /// the peer accepts no datagrams.
    pub max_datagram_size: Option<usize>,
    /// The connection's `#[datagram]` calls.
    pub datagrams: DatagramStats,
    /// Streams this side told the peer to stop sending on (QUIC STOP_SENDING frames sent):
    /// calls dropped before their answer, requests refused unread. A call that completes
    /// stops nothing.
    pub streams_stopped: u64,
    /// Streams this side ended without finishing them (QUIC RESET_STREAM frames sent):
    /// cancelled calls, answers the peer stopped reading. A call that completes resets
    /// nothing.
    pub streams_reset: u64,
}

impl PathStats {
    /// The share of packets sent that were lost, from 0 to 1.
    pub fn loss(&self) -> f64 {
        if self.sent_packets == 0 {
            return 0.0;
        }
        self.lost_packets as f64 / self.sent_packets as f64
    }
}

/// Counts of a connection's `#[datagram]` calls since it opened (see
/// [`Connection::path_stats`]).
///
/// Sending: `sent` were handed to QUIC; of those, `unsent` have not left (QUIC drops the oldest
/// waiting datagrams when its send buffer is full) or are waiting still. Whatever left may
/// still be lost on the path, which no one counts per datagram: see [`PathStats::loss`].
///
/// Receiving: `unread` arrived but were not read (QUIC drops the oldest when its receive
/// buffer is full) or are waiting still; of the `received`, `handled` went to a handler and
/// the others were dropped, each counted once under its reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramStats {
    /// Datagram calls this node made on the connection.
    pub sent: u64,
    /// Of them, those that have not left this node.
    pub unsent: u64,
    /// Datagrams read from the connection.
    pub received: u64,
    /// Datagrams that arrived but were not read: dropped by QUIC's receive buffer, or still
    /// in it.
    pub unread: u64,
    /// Datagrams given to a handler, once each.
    pub handled: u64,
    /// Dropped because every handler place of the connection was taken
    /// ([`NodeBuilder::max_datagram_handlers`](crate::NodeBuilder::max_datagram_handlers)),
    /// or because the node is shutting down.
    pub dropped_busy: u64,
    /// Dropped for naming no datagram method this node serves, or arriving on a protocol
    /// version 1 connection.
    pub dropped_unknown: u64,
    /// Dropped for being malformed or for arguments that did not decode.
    pub dropped_undecodable: u64,
}

impl DatagramStats {
    /// Every datagram this node dropped on receipt, for any reason (`unread` included).
    pub fn dropped(&self) -> u64 {
        self.unread + self.dropped_busy + self.dropped_unknown + self.dropped_undecodable
    }
}

/// One `#[datagram]` call, not yet sent: what a generated client's datagram method returns.
/// Awaiting it sends one datagram.
///
/// Awaiting returns as soon as the datagram is handed to QUIC (on a [`Connection`], at once;
/// through a [`Peer`](crate::Peer), once there is a connection, within the node's request
/// timeout). `Ok` means sent, not delivered: a datagram may be lost, arrive late or out of
/// order, and nothing tells the caller.
///
/// It fails, before anything is sent, with [`Error::Unsupported`] if the peer accepts no
/// datagrams or the connection speaks protocol version 1, and with
/// [`Error::MessageTooLarge`] if the datagram does not fit the path's current maximum
/// datagram size (the error says the limit; [`PathStats::max_datagram_size`] tells it
/// beforehand).
///
/// # Cancel safety
///
/// Cancel safe: the only wait is for a connection (through a `Peer` or a `PeerSet`), and
/// dropping the future then sends nothing. Once it has a connection it sends without waiting.
#[must_use = "a datagram call does nothing until it is awaited"]
pub struct Datagram<A> {
    target: Target,
    service: &'static str,
    method: &'static str,
    args: A,
}

impl<A> fmt::Debug for Datagram<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagram")
            .field("service", &self.service)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl<A> Datagram<A> {
    /// A datagram call of `service.method` on `target` with `args` (the method's arguments
    /// as a tuple). Generated clients call this; users call the generated methods.
    pub fn new<T>(target: &T, service: &'static str, method: &'static str, args: A) -> Self
    where
        T: Clone + Into<Target>,
    {
        Datagram {
            target: target.clone().into(),
            service,
            method,
            args,
        }
    }
}

impl<A> IntoFuture for Datagram<A>
where
    A: Serialize + Send + 'static,
{
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let conn = match self.target.as_connection() {
                Some(conn) => conn.clone(),
                None => {
                    let bound = Deadline::after(self.target.config().request_timeout);
                    self.target.connection(&bound).await?
                }
            };
            send(&conn, self.service, self.method, &self.args)
        })
    }
}

/// What a `#[datagram]` handler can know about the datagram it serves: the connection it
/// came on, its sequence number, its estimated age, and whether it is the newest of its
/// method so far.
///
/// Reach it from inside the handler with [`DatagramContext::current`]. (A datagram handler
/// has no [`CallContext`](crate::CallContext).)
#[derive(Debug, Clone)]
pub struct DatagramContext {
    connection: Connection,
    service: Arc<str>,
    method: &'static str,
    sequence: u64,
    age: Duration,
    received_at: Instant,
    newest: bool,
}

impl DatagramContext {
    /// The context of the datagram the current task is serving; `None` outside a datagram
    /// handler (and in the tasks it spawns).
    pub fn current() -> Option<DatagramContext> {
        CONTEXT.try_with(DatagramContext::clone).ok()
    }

    /// The connection the datagram came on: build a client from it to answer.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The service the datagram named, as this node serves it.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method the datagram named.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The sender's count of the datagrams it sent for this method on this connection before
    /// this one: 0, 1, 2... Exact, so gaps show loss and a smaller number than one seen
    /// before shows reordering.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether no datagram of this method with a higher sequence number arrived on the
    /// connection before this one. A handler that wants only the newest state drops the
    /// others: `if !ctx.is_newest() { return; }`.
    pub fn is_newest(&self) -> bool {
        self.newest
    }

    /// When the datagram was read from the connection.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// An estimate of the time from the datagram's sending to its arrival.
    ///
    /// The two nodes' clocks are not synchronized, so this is not a difference of clocks:
    /// it is how much later this datagram arrived, relative to its send time in the sender's
    /// clock, than the fastest datagram of the connection so far, plus half the round-trip
    /// time. That counts the queueing and delay a datagram met beyond the fastest path seen
    /// exactly (to the microsecond, apart from the clocks' drift); the path's own one-way
    /// delay is estimated as half the round trip. The first datagram of a connection has
    /// an age of half the round-trip time.
    pub fn age(&self) -> Duration {
        self.age
    }
}

/// One datagram that arrived for a method this node serves, waiting for the method's
/// handler. Generated servers pass it to [`serve`](IncomingDatagram::serve).
pub struct IncomingDatagram {
    context: DatagramContext,
    args: Bytes,
    state: Arc<Datagrams>,
    _place: OwnedSemaphorePermit,
}

impl fmt::Debug for IncomingDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingDatagram")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// What the receive loop knows of a datagram that arrived.
pub(crate) struct Arrived {
    pub(crate) connection: Connection,
    pub(crate) service: Arc<str>,
    pub(crate) method: &'static str,
    pub(crate) head: DatagramHead,
    pub(crate) args: Bytes,
    pub(crate) received_at: Instant,
    pub(crate) state: Arc<Datagrams>,
    pub(crate) place: OwnedSemaphorePermit,
}

impl IncomingDatagram {
    pub(crate) fn new(arrived: Arrived) -> Self {
        let rtt = arrived.connection.rtt();
        let (newest, age) = arrived
            .state
            .arrival(&arrived.head, arrived.received_at, rtt);
        IncomingDatagram {
            context: DatagramContext {
                connection: arrived.connection,
                service: arrived.service,
                method: arrived.method,
                sequence: arrived.head.sequence,
                age,
                received_at: arrived.received_at,
                newest,
            },
            args: arrived.args,
            state: arrived.state,
            _place: arrived.place,
        }
    }

    /// The method the datagram named.
    pub fn method(&self) -> &str {
        self.context.method
    }

    /// The datagram's context.
    pub fn context(&self) -> &DatagramContext {
        &self.context
    }

    /// Serves the datagram: decodes its arguments and runs `handler` on them, within the
    /// node's request timeout. A datagram whose arguments do not decode is dropped and
    /// counted; a handler that panics is logged.
    pub fn serve<A, F, Fut>(self, handler: F) -> CallFuture
    where
        A: DeserializeOwned + Send + 'static,
        F: FnOnce(A) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Box::pin(async move {
            let decoded =
                std::panic::catch_unwind(AssertUnwindSafe(|| wire::decode::<A>(&self.args)));
            let Ok(Ok(args)) = decoded else {
                self.state.dropped_undecodable();
                tracing::debug!(method = %peer_text(self.method()), "undecodable datagram dropped");
                return Outcome::Failed(Error::Decode("undecodable datagram".into()));
            };
            count(&self.state.counts.handled);
            let timeout = self.context.connection.config().request_timeout;
            let context = self.context.clone();
            let run = CONTEXT.scope(context, async move {
                let fut = std::panic::catch_unwind(AssertUnwindSafe(|| handler(args)))?;
                AssertUnwindSafe(fut).catch_unwind().await
            });
            let outcome = match tokio::time::timeout(timeout, run).await {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(_)) => {
                    tracing::warn!(method = %peer_text(self.method()), "datagram handler panicked");
                    Outcome::Failed(Error::HandlerFailed("the handler panicked".into()))
                }
                Err(_) => {
                    tracing::debug!(
                        method = %peer_text(self.method()),
                        "datagram handler stopped at the request timeout"
                    );
                    Outcome::Failed(Error::Timeout)
                }
            };
            drop(self);
            outcome
        })
    }

    /// Drops a datagram for a method the service does not have, counting it.
    pub fn unknown_method(self) -> CallFuture {
        self.state.dropped_unknown();
        tracing::debug!(method = %peer_text(self.method()), "datagram for an unknown method dropped");
        let method = peer_text(self.method()).into_owned();
        Box::pin(async move { Outcome::Failed(Error::UnknownMethod(method)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(sequence: u64, sent_us: u64) -> DatagramHead {
        DatagramHead {
            method: 7,
            sequence,
            sent_us,
        }
    }

    #[test]
    fn age_counts_from_the_fastest_datagram_plus_half_the_round_trip() {
        let state = Datagrams::new();
        let at = |ms: u64| state.epoch + Duration::from_millis(ms);
        let rtt = Duration::from_millis(4);
        // The first datagram: half the round trip.
        assert_eq!(state.arrival(&head(0, 0), at(10), rtt), (true, rtt / 2));
        // Sent 20 ms later, arrived 40 ms later: 20 ms more than the fastest.
        let (newest, age) = state.arrival(&head(1, 20_000), at(50), rtt);
        assert_eq!((newest, age), (true, Duration::from_millis(22)));
        // A faster one lowers the reference; an older sequence number is not the newest.
        let (newest, age) = state.arrival(&head(0, 45_000), at(51), rtt);
        assert_eq!((newest, age), (false, rtt / 2));
        let (newest, age) = state.arrival(&head(5, 46_000), at(60), rtt);
        assert_eq!((newest, age), (true, Duration::from_millis(8) + rtt / 2));
    }
}
