//! [`PeerSet`]: several nodes serving the same thing behind one call target. Each call goes
//! to a connected peer of the set, chosen by load; the set follows changes at run time.
//!
//! # How a peer is chosen
//!
//! Power of two random choices: two connected peers are drawn at random and the call goes to
//! the one with fewer calls in flight. What counts as in flight: a request-response call,
//! from the moment its peer is chosen until it has its answer (retries included); a
//! notification or a streaming call, only while its connection is being provided. The
//! streaming kinds are still spread evenly by the random draw; they only do not weigh on
//! later choices. The count rides on the per-call provider a [`Target`] hands out
//! ([`Provide::for_call`]), which a request-response call keeps until its answer (it retries
//! through it) and the other kinds drop once they have their connection.
//!
//! # Why not tower's `balance` and `discover`
//!
//! Tower's balancer is a `Service` polled for readiness through `&mut self`: sharing it
//! between cheap clones needs a buffer and a worker task in front of it, and every call would
//! go through a channel. A member whose readiness fails is dropped from its set for good,
//! while a member here is a [`Peer`] that reconnects by itself and must come back once it
//! does. Calls here wait for a connected member within their own deadline, which a
//! `poll_ready` has no notion of. Readiness is already published by each [`Peer`]
//! ([`Peer::watch`]), so the set reads it rather than adapting peers into services.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::addr::NodeAddr;
use crate::connection::Connection;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::id::NodeId;
use crate::node::{Node, WeakNode};
use crate::peer::{Peer, PeerState};
use crate::retry::{Retries, RetryPolicy};
use crate::shared::Shared;
use crate::target::{Provide, Target};

/// A change to the members of a [`PeerSet`], as a discovery source reports it; see
/// [`PeerSet::from_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// A node joins the set (or, if one with the same id is in it, moves to this address).
    Insert(NodeAddr),
    /// The node with this id leaves the set.
    Remove(NodeId),
}

/// Several nodes serving the same services, called through one target: build a generated
/// client from it like from a [`Peer`]: `{Trait}Client::new(set)`.
///
/// * **Each member is a [`Peer`]**, dialed as soon as it joins and redialed after a loss
///   with the peer's backoff.
/// * **Balanced by load**: each call goes to the less busy of two connected members drawn at
///   random (the power of two choices), by their calls in flight through this set. A
///   request-response call counts from the moment its member is chosen until it has its
///   answer, retries included; a notification or a streaming call counts only while its
///   connection is being provided, so those kinds are spread by the random draw but do not
///   weigh on later choices.
/// * **Failures are routed around**: a member whose peer is not [`PeerState::Ready`]
///   (connecting, backing off after failed dials) gets no calls; it gets them again once it
///   is connected. A call made while no member is connected waits for one within its
///   deadline (a call without a deadline: up to the node's connect timeout) and fails with
///   [`Error::Unreachable`] if none comes. A call in flight on a member whose connection is
///   lost fails with [`Error::ConnectionLost`], as it would through a [`Peer`].
/// * **Retries go elsewhere**: a request-response call that provably never reached a
///   handler (see [`RetryPolicy`]) is tried again on another connected member, if there is
///   one, as the set's policy allows ([`set_retry_policy`](Self::set_retry_policy)).
/// * **Changing at run time**: [`insert`](Self::insert), [`remove`](Self::remove), or a
///   stream of [`PeerChange`]s ([`from_stream`](Self::from_stream)) fed by DNS, a
///   service registry or any discovery.
///
/// Cheap to clone: clones share the members. It does not keep its node alive: once the
/// application drops every [`Node`] handle, its calls fail with [`Error::Closed`]. When the
/// last clone (or client made from one) is dropped, its members' connections are released
/// and a task following a change stream ends.
///
/// ```no_run
/// # async fn run(a: dep2p_runtime::NodeAddr, b: dep2p_runtime::NodeAddr)
/// #     -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::{Node, PeerSet};
///
/// let node = Node::builder().bind("127.0.0.1:0").await?;
/// let set: PeerSet = node.peer_set([a, b]);
/// // `GreeterClient::new(set.clone())` spreads its calls over both nodes.
/// assert_eq!(set.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PeerSet {
    inner: Arc<Set>,
}

struct Set {
    node: WeakNode,
    /// The node's settings and state, which outlive the node handles without keeping the node.
    shared: Arc<Shared>,
    members: watch::Sender<Vec<Member>>,
    /// When calls are retried, and the budget of retries, shared by all members.
    retries: Retries,
    random: RandomState,
    draws: AtomicU64,
    /// Cancelled when the set is dropped: ends the task following a change stream.
    dropped: CancellationToken,
}

impl Drop for Set {
    fn drop(&mut self) {
        self.dropped.cancel();
    }
}

/// A peer of the set and its count of calls in flight.
#[derive(Clone)]
struct Member {
    peer: Peer,
    in_flight: Arc<AtomicUsize>,
}

impl Member {
    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn is_ready(&self) -> bool {
        matches!(self.peer.state(), PeerState::Ready)
    }
}

/// One call in flight on a member: counted while it lives.
struct InFlight {
    id: NodeId,
    count: Arc<AtomicUsize>,
}

impl InFlight {
    fn new(member: &Member) -> Self {
        member.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            id: member.peer.id(),
            count: Arc::clone(&member.in_flight),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Node {
    /// A set of peers, one per address in `addrs`, that calls are spread over; see
    /// [`PeerSet`]. Each is dialed at once. The same as [`PeerSet::new`].
    pub fn peer_set(&self, addrs: impl IntoIterator<Item = NodeAddr>) -> PeerSet {
        PeerSet::new(self, addrs)
    }
}

impl PeerSet {
    /// A set of peers dialed from `node`, one per address in `addrs` (a later address with
    /// the same id replaces an earlier one). Each is dialed at once. An empty set is fine:
    /// members can join later.
    ///
    /// Must be called within a Tokio runtime, as everything of a node.
    pub fn new(node: &Node, addrs: impl IntoIterator<Item = NodeAddr>) -> PeerSet {
        let set = PeerSet {
            inner: Arc::new(Set {
                node: node.downgrade(),
                shared: Arc::clone(node.shared()),
                members: watch::Sender::new(Vec::new()),
                retries: Retries::new(RetryPolicy::default()),
                random: RandomState::new(),
                draws: AtomicU64::new(0),
                dropped: CancellationToken::new(),
            }),
        };
        for addr in addrs {
            set.insert(addr);
        }
        set
    }

    /// An empty set whose members come from `changes`: a task applies each change as it
    /// arrives, until the stream ends, the set (every clone and client made from one) is
    /// dropped, or the node closes.
    ///
    /// Must be called within a Tokio runtime, as everything of a node.
    ///
    /// ```no_run
    /// # async fn run(node: dep2p_runtime::Node, a: dep2p_runtime::NodeAddr) {
    /// use dep2p_runtime::{PeerChange, PeerSet};
    ///
    /// let (changes, stream) = futures::channel::mpsc::unbounded();
    /// let set = PeerSet::from_stream(&node, stream);
    /// // Whatever discovers the servers sends what changed:
    /// changes.unbounded_send(PeerChange::Insert(a.clone())).unwrap();
    /// changes.unbounded_send(PeerChange::Remove(a.id())).unwrap();
    /// # }
    /// ```
    pub fn from_stream<S>(node: &Node, changes: S) -> PeerSet
    where
        S: Stream<Item = PeerChange> + Send + 'static,
    {
        let set = PeerSet::new(node, []);
        let weak = Arc::downgrade(&set.inner);
        let dropped = set.inner.dropped.clone();
        let closed = set.inner.shared.closed();
        tokio::spawn(async move {
            let mut changes = std::pin::pin!(changes);
            let mut closed = std::pin::pin!(closed);
            loop {
                let change = tokio::select! {
                    change = changes.next() => change,
                    () = dropped.cancelled() => return,
                    () = &mut closed => return,
                };
                let (Some(change), Some(set)) = (change, weak.upgrade()) else {
                    return;
                };
                PeerSet { inner: set }.apply(change);
            }
        });
        set
    }

    /// Applies one change: [`insert`](Self::insert) or [`remove`](Self::remove). Whether the
    /// set changed.
    pub fn apply(&self, change: PeerChange) -> bool {
        match change {
            PeerChange::Insert(addr) => self.insert(addr),
            PeerChange::Remove(id) => self.remove(id),
        }
    }

    /// Adds the node `addr` names and starts dialing it; it takes calls once connected. A
    /// member with the same id and address is kept as it is; one with the same id and
    /// another address is replaced by a peer dialed at the new address. Whether the set
    /// changed (false as well once the node has closed).
    ///
    /// Must be called within a Tokio runtime, as everything of a node.
    pub fn insert(&self, addr: NodeAddr) -> bool {
        let Some(node) = self.inner.node.upgrade() else {
            return false;
        };
        let id = addr.id();
        let mut joined = None;
        self.inner.members.send_if_modified(|members| {
            let slot = members.iter_mut().find(|m| m.peer.id() == id);
            if slot.as_ref().is_some_and(|m| *m.peer.addr() == addr) {
                return false;
            }
            let member = Member {
                peer: node.peer(addr),
                in_flight: Arc::new(AtomicUsize::new(0)),
            };
            joined = Some(member.peer.clone());
            match slot {
                Some(slot) => *slot = member,
                None => members.push(member),
            }
            true
        });
        let Some(peer) = joined else { return false };
        // Starts the dial; a connection already there needs none.
        let _ = peer.connection(Duration::ZERO).now_or_never();
        true
    }

    /// Removes the node `id` from the set: it gets no new calls; calls in flight on it go
    /// on. Whether it was there.
    pub fn remove(&self, id: NodeId) -> bool {
        self.inner.members.send_if_modified(|members| {
            let before = members.len();
            members.retain(|m| m.peer.id() != id);
            members.len() != before
        })
    }

    /// The members, in the order they joined.
    pub fn peers(&self) -> Vec<Peer> {
        self.inner
            .members
            .borrow()
            .iter()
            .map(|m| m.peer.clone())
            .collect()
    }

    /// How many members the set has, connected or not.
    pub fn len(&self) -> usize {
        self.inner.members.borrow().len()
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.inner.members.borrow().is_empty()
    }

    /// Sets when request-response calls through this set (and its clones) are retried; see
    /// [`RetryPolicy`]. A retry goes to another connected member when there is one. Default:
    /// [`RetryPolicy::default`]; one budget is shared by all members. The members' own
    /// policies ([`Peer::set_retry_policy`]) apply to calls made through them directly.
    pub fn set_retry_policy(&self, policy: RetryPolicy) {
        self.inner.retries.set(policy);
    }
}

impl Set {
    /// A random number for a draw.
    fn random(&self) -> u64 {
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        self.random.hash_one(draw)
    }

    /// A connected member for a call, by the power of two choices, leaving out `skip` and,
    /// when another is connected, `avoid`.
    fn choose(&self, skip: &[NodeId], avoid: Option<NodeId>) -> Option<Member> {
        let members = self.members.borrow();
        let mut ready: Vec<&Member> = members
            .iter()
            .filter(|m| !skip.contains(&m.peer.id()) && m.is_ready())
            .collect();
        if let Some(avoid) = avoid {
            if ready.iter().any(|m| m.peer.id() != avoid) {
                ready.retain(|m| m.peer.id() != avoid);
            }
        }
        let count = ready.len() as u64;
        let chosen = match ready.len() {
            0 => return None,
            1 => ready[0],
            _ => {
                let first = (self.random() % count) as usize;
                let mut second = (self.random() % (count - 1)) as usize;
                if second >= first {
                    second += 1;
                }
                let (a, b) = (ready[first], ready[second]);
                if b.load() < a.load() {
                    b
                } else {
                    a
                }
            }
        };
        Some(chosen.clone())
    }

    /// Why no call can be made: the node closed, or nothing connected in time.
    fn unreachable(&self) -> Error {
        let members = self.members.borrow();
        if !members.is_empty() && members.iter().all(|m| m.peer.state() == PeerState::Closed) {
            return Error::Closed;
        }
        let addr = members
            .iter()
            .find_map(|m| m.peer.addr().addrs().first().copied())
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let reason = if members.is_empty() {
            "the peer set has no members".to_string()
        } else {
            format!(
                "none of the {} peers of the set was connected in time",
                members.len()
            )
        };
        Error::Unreachable { addr, reason }
    }

    /// A connection to a connected member and the count of the call on it, waiting until
    /// `until` for a member to connect if none is. Goes elsewhere than `avoid` if it can.
    async fn pick(
        &self,
        until: Option<Instant>,
        avoid: Option<NodeId>,
    ) -> Result<(Connection, InFlight), Error> {
        // Members that looked connected but had no connection: left out until something
        // changes.
        let mut skip = Vec::new();
        loop {
            if self.node.upgrade().is_none() {
                return Err(Error::Closed);
            }
            if let Some(member) = self.choose(&skip, avoid) {
                let in_flight = InFlight::new(&member);
                match member.peer.connection(Duration::ZERO).now_or_never() {
                    Some(Ok(conn)) => return Ok((conn, in_flight)),
                    _ => {
                        skip.push(member.peer.id());
                        continue;
                    }
                }
            }
            // Nothing connected: wait for a change to the set or to a member's state. The
            // receivers are made first, then the states read again, so no change is missed.
            let mut set = self.members.subscribe();
            let mut states: Vec<watch::Receiver<PeerState>> = set
                .borrow_and_update()
                .iter()
                .map(|m| m.peer.watch())
                .collect();
            let members: Vec<NodeId> = set.borrow().iter().map(|m| m.peer.id()).collect();
            let ready = states.iter_mut().zip(&members).any(|(state, id)| {
                matches!(*state.borrow_and_update(), PeerState::Ready) && !skip.contains(id)
            });
            if ready {
                continue;
            }
            let changed = async {
                let mut any: FuturesUnordered<_> =
                    states.iter_mut().map(|state| state.changed()).collect();
                tokio::select! {
                    _ = set.changed() => {}
                    Some(_) = any.next() => {}
                    () = self.shared.closed() => {}
                }
            };
            match until {
                Some(at) => {
                    if tokio::time::timeout_at(at, changed).await.is_err() {
                        return Err(self.unreachable());
                    }
                }
                None => changed.await,
            }
            skip.clear();
        }
    }

    /// How long a call waits for a connected member: its deadline, or for a call without
    /// one, the node's connect timeout.
    fn until(&self, deadline: &Deadline) -> Option<Instant> {
        match deadline.instant() {
            Some(at) => Some(at),
            None => Instant::now().checked_add(self.shared.config().connect_timeout),
        }
    }
}

impl From<PeerSet> for Target {
    fn from(set: PeerSet) -> Self {
        Target::provider(Arc::new(set))
    }
}

impl From<&PeerSet> for Target {
    fn from(set: &PeerSet) -> Self {
        Target::from(set.clone())
    }
}

impl Provide for PeerSet {
    fn for_call(&self) -> Option<Arc<dyn Provide>> {
        Some(Arc::new(Pick {
            set: Arc::clone(&self.inner),
            chosen: Mutex::new(None),
        }))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    fn connection<'a>(
        &'a self,
        deadline: &'a Deadline,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, Error>> + Send + 'a>> {
        Box::pin(async move {
            let until = self.inner.until(deadline);
            let (conn, _in_flight) = self.inner.pick(until, None).await?;
            Ok(conn)
        })
    }

    fn retry_after(&self, attempts: u32) -> Option<Duration> {
        self.inner.retries.after_refusal(attempts)
    }

    fn succeeded(&self) {
        self.inner.retries.answered();
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The member one call goes to, counted against it while the call holds this.
struct Pick {
    set: Arc<Set>,
    chosen: Mutex<Option<InFlight>>,
}

impl Provide for Pick {
    fn shared(&self) -> &Arc<Shared> {
        &self.set.shared
    }

    fn connection<'a>(
        &'a self,
        deadline: &'a Deadline,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, Error>> + Send + 'a>> {
        Box::pin(async move {
            // A retry goes to another member if it can.
            let before = self
                .chosen
                .lock()
                .ok()
                .and_then(|mut chosen| chosen.take())
                .map(|in_flight| in_flight.id);
            let until = self.set.until(deadline);
            let (conn, in_flight) = self.set.pick(until, before).await?;
            if let Ok(mut chosen) = self.chosen.lock() {
                *chosen = Some(in_flight);
            }
            Ok(conn)
        })
    }

    fn retry_after(&self, attempts: u32) -> Option<Duration> {
        self.set.retries.after_refusal(attempts)
    }

    fn succeeded(&self) {
        self.set.retries.answered();
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(
            &PeerSet {
                inner: Arc::clone(&self.set),
            },
            f,
        )
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.peer.id())
            .field("state", &self.peer.state())
            .field("in_flight", &self.load())
            .finish()
    }
}

impl fmt::Debug for PeerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerSet")
            .field("members", &*self.inner.members.borrow())
            .finish()
    }
}
