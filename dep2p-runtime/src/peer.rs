//! [`Peer`]: a remote node an application calls, reached over whichever connection is current:
//! dialed on first use, redialed after a loss with jittered exponential backoff.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::addr::NodeAddr;
use crate::connection::Connection;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::id::NodeId;
use crate::node::{Node, WeakNode};
use crate::retry::{backoff, Retries, RetryPolicy};
use crate::shared::Shared;
use crate::target::{Provide, Target};

/// The first wait after a failed dial.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between dials.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A connection that lasted less than this before it was lost does not reset the backoff: a
/// peer that accepts and drops connections at once is not dialed in a tight loop.
const STABLE: Duration = Duration::from_secs(1);

/// Where a [`Peer`] stands, as [`Peer::state`] and [`Peer::watch`] report it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerState {
    /// Not used yet: nothing has been dialed.
    Idle,
    /// A dial is in progress.
    Connecting,
    /// A connection is up; calls go over it.
    Ready,
    /// The last dial failed; the next starts after `delay`.
    BackingOff {
        /// Dials failed in a row.
        failures: u32,
        /// The wait before the next dial.
        delay: Duration,
        /// Why the last dial failed.
        error: String,
    },
    /// The node this peer was made from has closed: no more dials.
    Closed,
}

/// A remote node, by address and [`NodeId`], that calls reach over whichever connection is
/// current. Build a generated client from it like from a connection:
/// `{Trait}Client::new(peer)`.
///
/// * **Lazy**: nothing is dialed until the first call.
/// * **Reconnecting**: when the connection ends (the peer closed it, went silent for the
///   idle timeout, or was restarted and answered with a stateless reset), the peer is
///   redialed at once; a failed dial is retried after a backoff of 100 ms doubling up to
///   10 s, with equal jitter (a random wait between half the step and the full step). A
///   connection lost within a second of being made does not reset the backoff.
/// * **Calls wait within their deadline**: a call made while no connection is up waits for
///   one until its deadline (a call without a deadline, a streaming call say: up to the
///   node's connect timeout) and fails with [`Error::Unreachable`] if none comes. A call
///   already in flight when the connection is lost fails with
///   [`Error::ConnectionLost`]; it is not retried, since it may have reached its handler,
///   unless it is idempotent.
/// * **Retrying only what is safe**: a request-response call that provably never reached a
///   handler (no stream could be opened, or the peer refused it as overloaded or shutting
///   down) is tried again within its deadline, as [`RetryPolicy`] allows; see
///   [`set_retry_policy`](Self::set_retry_policy). An idempotent call
///   ([`Unary::idempotent`](crate::Call::idempotent), `#[idempotent]` methods) is also tried
///   again after a transport failure before any answer.
/// * **Observable**: [`state`](Self::state) and [`watch`](Self::watch) report
///   [`PeerState`].
///
/// Cheap to clone: clones share the connection and its state. It does not keep its node
/// alive (only a dial in progress holds it, for at most the node's connect timeout): once the
/// application drops every [`Node`] handle, the peer turns [`PeerState::Closed`] and its
/// calls fail with [`Error::Closed`]. When the last clone (or client made from one) is
/// dropped, its background task ends and its connection is released (closed, unless
/// something else still uses it).
///
/// ```no_run
/// # async fn run(server: std::net::SocketAddr, id: dep2p_runtime::NodeId)
/// #     -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::{Node, Peer, PeerState};
///
/// let node = Node::builder().bind("127.0.0.1:0").await?;
/// let peer: Peer = node.peer(dep2p_runtime::NodeAddr::new(id).with_addr(server));
/// assert_eq!(peer.state(), PeerState::Idle);
/// // `GreeterClient::new(peer.clone())` would call over it; dialing starts with the first
/// // call, or with `connection`:
/// let conn = peer.connection(std::time::Duration::from_secs(5)).await?;
/// assert_eq!(conn.remote_id(), id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

struct Inner {
    /// This peer, weakly, for the background task to hold.
    me: Weak<Inner>,
    node: WeakNode,
    /// The node's settings and state, which outlive the node handles without keeping the node.
    shared: Arc<Shared>,
    /// Where the peer is dialed: its id and addresses (see [`Node::dial`]).
    addr: NodeAddr,
    id: NodeId,
    /// The connection calls go over, while one is up.
    current: Mutex<Option<Connection>>,
    state: watch::Sender<PeerState>,
    /// Whether the background task that dials has started.
    started: AtomicBool,
    /// Dropped with the last handle: tells the background task to end.
    _alive: oneshot::Sender<()>,
    /// When calls are retried, and the budget of retries.
    retries: Retries,
    /// Taken by the background task when it starts.
    gone: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Node {
    /// A reconnecting handle on the node `addr` names (its id and where to find it, a
    /// ticket); see [`Peer`]. Nothing is dialed until it is used.
    pub fn peer(&self, addr: NodeAddr) -> Peer {
        Peer::new(self, addr)
    }
}

impl Peer {
    /// A reconnecting handle on the node `addr` names, dialed from `node` with
    /// [`Node::dial`] (every address it lists is tried). Nothing is dialed until it is used.
    /// The same as [`Node::peer`].
    pub fn new(node: &Node, addr: NodeAddr) -> Peer {
        let id = addr.id();
        let (alive, gone) = oneshot::channel();
        Peer {
            inner: Arc::new_cyclic(|me| Inner {
                me: me.clone(),
                node: node.downgrade(),
                shared: Arc::clone(node.shared()),
                addr,
                id,
                current: Mutex::new(None),
                state: watch::Sender::new(PeerState::Idle),
                started: AtomicBool::new(false),
                _alive: alive,
                gone: Mutex::new(Some(gone)),
                retries: Retries::new(RetryPolicy::default()),
            }),
        }
    }

    /// Sets when request-response calls through this peer (and its clones) are retried; see
    /// [`RetryPolicy`]. Default: [`RetryPolicy::default`], which only ever retries calls that
    /// provably never reached a handler, and idempotent calls whose transport failed before
    /// any answer. [`RetryPolicy::never`] turns retries off.
    pub fn set_retry_policy(&self, policy: RetryPolicy) {
        self.inner.retries.set(policy);
    }

    /// The peer's node id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the peer is dialed at: its id and where to find it.
    pub fn addr(&self) -> &NodeAddr {
        &self.inner.addr
    }

    /// Where the peer stands now.
    pub fn state(&self) -> PeerState {
        self.inner.state.borrow().clone()
    }

    /// A receiver of the peer's state, which sees every change from now on
    /// (`changed().await`, then `borrow()`).
    pub fn watch(&self) -> watch::Receiver<PeerState> {
        self.inner.state.subscribe()
    }

    /// The peer's current connection, dialing it (or waiting for the redial in progress or
    /// backing off) for up to `timeout`. Starts dialing if nothing was dialed yet.
    ///
    /// Fails with [`Error::Unreachable`] if no connection comes within `timeout`, and with
    /// [`Error::Closed`] once the node has closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting; dialing goes on in the
    /// background.
    pub async fn connection(&self, timeout: Duration) -> Result<Connection, Error> {
        let until = Instant::now().checked_add(timeout);
        self.inner.wait(until).await
    }
}

impl From<Peer> for Target {
    fn from(peer: Peer) -> Self {
        Target::provider(peer.inner)
    }
}

impl From<&Peer> for Target {
    fn from(peer: &Peer) -> Self {
        Target::from(peer.clone())
    }
}

impl Provide for Inner {
    fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn connection<'a>(
        &'a self,
        deadline: &'a Deadline,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Connection, Error>> + Send + 'a>>
    {
        let until = match deadline.instant() {
            Some(at) => Some(at),
            None => Instant::now().checked_add(self.shared.config().connect_timeout),
        };
        Box::pin(self.wait(until))
    }

    fn retry_after(&self, attempts: u32) -> Option<Duration> {
        self.retries.after_refusal(attempts)
    }

    fn succeeded(&self) {
        self.retries.answered();
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.inner, f)
    }
}

impl Inner {
    /// The current connection, if it is still open.
    fn current(&self) -> Option<Connection> {
        let current = self.current.lock().ok()?;
        current
            .as_ref()
            .filter(|conn| conn.close_reason().is_none())
            .cloned()
    }

    fn set_current(&self, conn: Option<Connection>) {
        if let Ok(mut current) = self.current.lock() {
            *current = conn;
        }
    }

    fn unreachable(&self, reason: String) -> Error {
        Error::Unreachable {
            addr: self
                .addr
                .addrs()
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            reason,
        }
    }

    /// Waits until a connection is up, until `until` (none: no bound).
    async fn wait(&self, until: Option<Instant>) -> Result<Connection, Error> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut state = self.state.subscribe();
        self.start();
        loop {
            // The state is read before the connection: a connection made in between is seen
            // as a change.
            let why = match &*state.borrow_and_update() {
                PeerState::Closed => return Err(Error::Closed),
                PeerState::BackingOff { error, .. } => error.clone(),
                _ => "no connection yet".to_string(),
            };
            if let Some(conn) = self.current() {
                return Ok(conn);
            }
            let changed = state.changed();
            let changed = match until {
                Some(at) => match tokio::time::timeout_at(at, changed).await {
                    Ok(changed) => changed,
                    Err(_) => {
                        return Err(self.unreachable(format!("no connection in time: {why}")));
                    }
                },
                None => changed.await,
            };
            if changed.is_err() {
                return Err(Error::Closed);
            }
        }
    }
}

impl Inner {
    /// Starts the background task that dials, once.
    fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let gone = self.gone.lock().ok().and_then(|mut gone| gone.take());
        let Some(gone) = gone else { return };
        // The task holds the peer weakly: it ends when the last handle is dropped.
        tokio::spawn(drive(self.me.clone(), gone));
    }

    /// Publishes a new state.
    fn set_state(&self, state: PeerState) {
        self.state.send_replace(state);
    }
}

/// The background task of a peer: dials, watches the connection, redials after a loss, backs
/// off after a failure. Ends when the last handle on the peer is dropped (`gone`) or the node
/// has closed. It holds the node only while a dial is in progress.
async fn drive(peer: Weak<Inner>, mut gone: oneshot::Receiver<()>) {
    let random = RandomState::new();
    let mut failures: u32 = 0;
    loop {
        let Some(inner) = peer.upgrade() else { return };
        let (addr, id) = (inner.addr.clone(), inner.id);
        let Some(node) = inner.node.upgrade() else {
            inner.set_state(PeerState::Closed);
            return;
        };
        inner.set_state(PeerState::Connecting);
        drop(inner);
        let dialed = tokio::select! {
            dialed = node.dial(&addr) => dialed,
            _ = &mut gone => return,
        };
        drop(node);
        let Some(inner) = peer.upgrade() else { return };
        let error = match dialed {
            Ok(conn) => {
                let quic = conn.quic().clone();
                inner.set_current(Some(conn));
                inner.set_state(PeerState::Ready);
                drop(inner);
                let since = Instant::now();
                let reason = tokio::select! {
                    reason = quic.closed() => reason,
                    _ = &mut gone => return,
                };
                let Some(inner) = peer.upgrade() else { return };
                inner.set_current(None);
                tracing::debug!(peer = %id, %reason, "connection to peer lost");
                if since.elapsed() >= STABLE {
                    // A connection that lasted: redial at once.
                    failures = 0;
                    continue;
                }
                format!("connection lost at once: {reason}")
            }
            Err(Error::Closed) => {
                inner.set_state(PeerState::Closed);
                return;
            }
            Err(err) => err.to_string(),
        };
        let Some(inner) = peer.upgrade() else { return };
        failures = failures.saturating_add(1);
        let delay = backoff(
            INITIAL_BACKOFF,
            MAX_BACKOFF,
            failures,
            random.hash_one(failures),
        );
        tracing::debug!(peer = %id, failures, ?delay, %error, "dial failed; backing off");
        inner.set_state(PeerState::BackingOff {
            failures,
            delay,
            error,
        });
        drop(inner);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = &mut gone => return,
        }
    }
}
