//! Resources that end with their owner: connections no handle uses, nodes no application
//! holds, shutdowns begun from a handler or abandoned, over real QUIC.

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dep2p_runtime::{
    CallContext, CallFuture, Connection, Error, IncomingCall, Node, NodeId, Service, Unary,
    WeakNode,
};
use futures::StreamExt;
use tokio::sync::Notify;

/// How long a peer may take to see a close: far more than loopback needs.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A service that lets tests reach the connections calls arrive on.
#[derive(Clone, Default)]
struct Keeper {
    state: Arc<KeeperState>,
}

#[derive(Default)]
struct KeeperState {
    /// The connection of the last `keep` call.
    kept: Mutex<Option<Connection>>,
    /// `wait` handlers that have started.
    waiting: AtomicUsize,
    /// Lets `wait` handlers return.
    release: Notify,
}

const KEEPER: &str = "Keeper";

impl Keeper {
    fn take(&self) -> Option<Connection> {
        self.state.kept.lock().unwrap().take()
    }
}

impl Service for Keeper {
    fn name(&self) -> &str {
        KEEPER
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        let state = Arc::clone(&self.state);
        match call.method() {
            "keep" => call.unary(move |(): ()| async move {
                let ctx = CallContext::current().expect("inside a handler");
                *state.kept.lock().unwrap() = Some(ctx.connection().clone());
            }),
            "wait" => call.unary(move |(): ()| async move {
                state.waiting.fetch_add(1, Ordering::SeqCst);
                state.release.notified().await;
                "released".to_string()
            }),
            "echo" => call.unary(|(s,): (String,)| async move { s }),
            _ => call.unknown_method(),
        }
    }
}

fn keep(conn: &Connection) -> Unary<(), ()> {
    Unary::new(conn, KEEPER, "keep", ())
}

fn wait(conn: &Connection) -> Unary<(), String> {
    Unary::new(conn, KEEPER, "wait", ())
}

fn keeper_echo(conn: &Connection, s: &str) -> Unary<(String,), String> {
    Unary::new(conn, KEEPER, "echo", (s.to_string(),))
}

/// A server serving `keeper` and a client connected to it; the server's side of the
/// connection, from a `keep` call.
async fn kept_pair(keeper: &Keeper, client: Node) -> (Node, Node, Connection, Connection) {
    let server = node(Node::builder().serve(keeper.clone())).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .expect("connect");
    keep(&conn).await.expect("keep");
    let server_side = keeper.take().expect("the server's side");
    (server, client, conn, server_side)
}

/// Waits for `conn` to close; the application close code its peer sent.
async fn close_code(conn: &Connection) -> u64 {
    let err = tokio::time::timeout(PROMPTLY, conn.closed())
        .await
        .expect("the connection to close promptly");
    assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    match conn.quic().close_reason() {
        Some(dep2p_runtime::quinn::ConnectionError::ApplicationClosed(close)) => {
            close.error_code.into_inner()
        }
        other => panic!("closed by the application, not {other:?}"),
    }
}

/// Whether `quic` is still open after a while.
async fn still_open(quic: &dep2p_runtime::quinn::Connection) -> bool {
    tokio::time::sleep(Duration::from_millis(100)).await;
    quic.close_reason().is_none()
}

#[tokio::test]
async fn dropping_every_handle_closes_a_dialed_connection_on_both_sides() {
    let keeper = Keeper::default();
    let client = node(Node::builder()).await;
    let (_server, _client, conn, server_side) = kept_pair(&keeper, client).await;
    // A generated client holds a clone, like this one.
    let client_handle = conn.clone();
    let quic = conn.quic().clone();
    drop(conn);
    assert_eq!(keeper_echo(&client_handle, "one").await.unwrap(), "one");
    assert!(still_open(&quic).await, "a handle is left");

    drop(client_handle);
    // The peer sees the normal close code, at once; holding the accepting side's handle
    // keeps nothing open.
    assert_eq!(close_code(&server_side).await, 0);
    assert!(matches!(
        quic.close_reason(),
        Some(dep2p_runtime::quinn::ConnectionError::LocallyClosed)
    ));
}

#[tokio::test]
async fn a_dropped_connection_frees_its_place_on_the_accepting_node() {
    let probe = probe();
    let server = node(Node::builder().max_connections(1).serve(TestService {
        probe: probe.clone(),
    }))
    .await;
    let first = node(Node::builder()).await;
    let conn = first
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_eq!(echo(&conn, "first").await.unwrap(), "first");
    drop(conn);
    // The client node lives on; only its connection went, and with it the place.
    let second = node(Node::builder()).await;
    let mut connected = None;
    for _ in 0..40 {
        if let Ok(conn) = second.connect(server.local_addr(), server.id()).await {
            connected = Some(conn);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conn = connected.expect("the place of the dropped connection");
    assert_eq!(echo(&conn, "second").await.unwrap(), "second");
    drop(first);
}

#[tokio::test]
async fn calls_in_flight_keep_a_connection_without_handles_open() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let quic = conn.quic().clone();
    let unary = tokio::spawn(sleep(&conn, 200).into_future());
    let (mut numbers, total) = sum(&conn, 10).await.unwrap();
    let (mut lines, mut shouted, shouts) = upper(&conn, "> ").await.unwrap();
    let (mut counted, count_total) = count(&conn, 3).await.unwrap();
    drop(conn);

    assert!(still_open(&quic).await, "calls are in flight");
    assert_eq!(unary.await.unwrap().unwrap(), 200);
    numbers.send(5).await.unwrap();
    numbers.finish().unwrap();
    assert_eq!(total.await.unwrap(), Ok(15));
    lines.send("hi".into()).await.unwrap();
    assert_eq!(shouted.next().await.unwrap().unwrap(), "> HI");
    lines.finish().unwrap();
    assert!(shouted.next().await.is_none());
    assert_eq!(shouts.await.unwrap(), Ok(1));
    assert!(still_open(&quic).await, "a receiver is left");
    let mut seen = Vec::new();
    while let Some(n) = counted.next().await {
        seen.push(n.unwrap());
    }
    assert_eq!(seen, [0, 1, 2]);
    drop(counted);
    assert_eq!(count_total.await.unwrap(), Ok(3));

    // The last call is over: the connection goes.
    tokio::time::timeout(PROMPTLY, quic.closed())
        .await
        .expect("the connection to close once its calls are over");
}

#[tokio::test]
async fn a_call_the_peer_makes_keeps_a_dialed_connection_open_until_answered() {
    // The dialing node serves too: its peer calls it back on the same connection.
    let at_client = Keeper::default();
    let client = node(Node::builder().serve(at_client.clone())).await;
    let keeper = Keeper::default();
    let (_server, _client, conn, server_side) = kept_pair(&keeper, client).await;
    let quic = conn.quic().clone();

    let callback = tokio::spawn(wait(&server_side).into_future());
    eventually("the callback's handler to start", || {
        at_client.state.waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(conn);
    assert!(still_open(&quic).await, "a call is being served");
    at_client.state.release.notify_one();
    assert_eq!(callback.await.unwrap().unwrap(), "released");
    assert_eq!(close_code(&server_side).await, 0);
}

#[tokio::test]
async fn a_handler_holding_its_calls_connection_keeps_it_open() {
    let at_client = Keeper::default();
    let client = node(Node::builder().serve(at_client.clone())).await;
    let keeper = Keeper::default();
    let (_server, _client, conn, server_side) = kept_pair(&keeper, client).await;
    let quic = conn.quic().clone();

    // The server calls the client, whose handler keeps the connection it came in on.
    keep(&server_side).await.unwrap();
    drop(conn);
    assert!(
        still_open(&quic).await,
        "the client's handler kept a handle"
    );
    assert_eq!(keeper_echo(&server_side, "back").await.unwrap(), "back");
    let kept = at_client.take().expect("the kept handle");
    assert_eq!(keeper_echo(&kept, "there").await.unwrap(), "there");

    drop(kept);
    assert_eq!(close_code(&server_side).await, 0);
}

#[tokio::test]
async fn an_accepted_connection_lives_while_its_peer_uses_it() {
    let keeper = Keeper::default();
    let client = node(Node::builder()).await;
    let (_server, _client, conn, server_side) = kept_pair(&keeper, client).await;
    // The accepting side drops every handle it had: the node keeps serving the connection.
    drop(server_side);
    assert!(still_open(conn.quic()).await);
    for i in 0..3 {
        let text = format!("call {i}");
        assert_eq!(keeper_echo(&conn, &text).await.unwrap(), text);
    }
    // And calls on it can still reach back.
    keep(&conn).await.unwrap();
    let server_side = keeper.take().expect("the server's side");
    drop(server_side);
    assert_eq!(keeper_echo(&conn, "still").await.unwrap(), "still");
}

#[tokio::test]
async fn notifications_sent_before_the_last_handle_goes_arrive() {
    // Sending returns once a notification is handed to QUIC; the connection closing when its
    // last handle goes right after does not lose it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        notes: Some(tx),
        ..Probe::default()
    });
    let (_server, _client, conn) = pair(&probe).await;
    let quic = conn.quic().clone();
    let big = "n".repeat(100 * 1024);
    for i in 0..5 {
        note(&conn, &format!("{i}{big}")).await.unwrap();
    }
    drop(conn);
    for i in 0..5 {
        let got = tokio::time::timeout(PROMPTLY, rx.recv())
            .await
            .expect("the notification to arrive")
            .unwrap();
        assert!(got.starts_with(&i.to_string()) && got.len() == big.len() + 1);
    }
    tokio::time::timeout(PROMPTLY, quic.closed())
        .await
        .expect("the connection to close once its notifications arrived");
}

/// A service that calls a third node for its callers, through the node serving it, reached
/// without keeping that node alive.
#[derive(Clone)]
struct Relay {
    node: WeakNode,
    target: (SocketAddr, NodeId),
    /// Contexts of `context` calls.
    contexts: Arc<Mutex<Vec<CallContext>>>,
}

const RELAY: &str = "Relay";

/// Calls `echo` on `target` through `node`.
async fn echo_through(node: Option<Node>, target: (SocketAddr, NodeId), s: String) -> String {
    let node = node.expect("the serving node");
    let conn = node.connect(target.0, target.1).await.expect("connect");
    echo(&conn, &s).await.expect("echo")
}

impl Service for Relay {
    fn name(&self) -> &str {
        RELAY
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        let this = self.clone();
        match call.method() {
            "via_weak" => call.unary(move |(s,): (String,)| async move {
                echo_through(this.node.upgrade(), this.target, s).await
            }),
            "via_context" => call.unary(move |(s,): (String,)| async move {
                let ctx = CallContext::current().expect("inside a handler");
                echo_through(ctx.node(), this.target, s).await
            }),
            "context" => call.unary(move |(): ()| async move {
                let ctx = CallContext::current().expect("inside a handler");
                this.contexts.lock().unwrap().push(ctx);
            }),
            _ => call.unknown_method(),
        }
    }
}

fn relay(conn: &Connection, method: &'static str, s: &str) -> Unary<(String,), String> {
    Unary::new(conn, RELAY, method, (s.to_string(),))
}

/// Binds a node to `addr` once its previous owner has let go of it.
async fn rebind(addr: SocketAddr) -> Node {
    for _ in 0..100 {
        if let Ok(node) = Node::builder().bind(addr).await {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} still taken");
}

#[tokio::test]
async fn a_node_whose_service_reaches_it_weakly_closes_when_dropped() {
    let probe = probe();
    let target = node(Node::builder().serve(TestService {
        probe: probe.clone(),
    }))
    .await;
    let server = node(Node::builder()).await;
    let service = Relay {
        node: server.downgrade(),
        target: (target.local_addr(), target.id()),
        contexts: Arc::default(),
    };
    server.serve(service.clone()).unwrap();
    let addr = server.local_addr();
    let client = node(Node::builder()).await;
    let conn = client.connect(addr, server.id()).await.unwrap();

    // The service reaches its node both ways, and calls the third node through it.
    assert_eq!(relay(&conn, "via_weak", "weak").await.unwrap(), "weak");
    assert_eq!(relay(&conn, "via_context", "ctx").await.unwrap(), "ctx");
    Unary::<(), ()>::new(&conn, RELAY, "context", ())
        .await
        .unwrap();

    // The application drops its last handle: the node closes, though its service and a
    // kept call context can still name it.
    let weak = server.downgrade();
    drop(server);
    let err = tokio::time::timeout(PROMPTLY, conn.closed())
        .await
        .expect("the peer to see the node close");
    assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    assert!(weak.upgrade().is_none());
    assert!(service.node.upgrade().is_none());
    let kept = service.contexts.lock().unwrap().pop().expect("a context");
    assert!(kept.node().is_none());
    drop(kept);
    // Its socket is released.
    let again = rebind(addr).await;
    assert_eq!(again.local_addr(), addr);
}

/// A service whose `stop` call shuts its own node down.
#[derive(Clone)]
struct Admin;

const ADMIN: &str = "Admin";

impl Service for Admin {
    fn name(&self) -> &str {
        ADMIN
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        match call.method() {
            // Answers how long the shutdown call took, in milliseconds.
            "stop" => call.unary(|(grace_ms,): (u64,)| async move {
                let ctx = CallContext::current().expect("inside a handler");
                let node = ctx.node().expect("the serving node");
                let started = Instant::now();
                node.shutdown(Duration::from_millis(grace_ms)).await;
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
            }),
            _ => call.unknown_method(),
        }
    }
}

fn stop(conn: &Connection, grace_ms: u64) -> Unary<(u64,), u64> {
    Unary::new(conn, ADMIN, "stop", (grace_ms,))
}

#[tokio::test]
async fn shutdown_from_a_handler_returns_promptly_and_its_answer_arrives() {
    let probe = probe();
    // `pair_with` adds the test service.
    let server = Node::builder().serve(Admin);
    let (server, _client, conn) = pair_with(server, &probe).await;
    let other = tokio::spawn(sleep(&conn, 300).into_future());
    eventually("the other call to start", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;

    let started = Instant::now();
    let took = stop(&conn, 5_000).await.expect("the stop call's answer");
    assert!(took < 1_000, "shutdown took {took} ms in the handler");
    assert!(started.elapsed() < PROMPTLY);
    // The other call still finishes, then the node closes, well within the grace period.
    assert_eq!(other.await.unwrap().unwrap(), 300);
    let err = tokio::time::timeout(PROMPTLY, conn.closed())
        .await
        .expect("the node to close once its calls are done");
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
    tokio::time::timeout(PROMPTLY, server.closed())
        .await
        .expect("closed() to complete");
}

#[tokio::test]
async fn a_dropped_shutdown_goes_on_in_the_background() {
    let probe = probe();
    let (server, _client, conn) = pair(&probe).await;
    let in_flight = tokio::spawn(sleep(&conn, 300).into_future());
    eventually("the call to start", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;
    let abandoned =
        tokio::time::timeout(Duration::from_millis(50), server.shutdown(PROMPTLY * 5)).await;
    assert!(abandoned.is_err(), "the shutdown waits for the call");

    // The node goes on shutting down: new calls are refused, the one in flight finishes...
    let err = echo(&conn, "late").await.unwrap_err();
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
    assert_eq!(in_flight.await.unwrap().unwrap(), 300);
    // ...and then it closes, without anyone waiting for the shutdown.
    let err = tokio::time::timeout(PROMPTLY, conn.closed())
        .await
        .expect("the node to close once its calls are done");
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
    tokio::time::timeout(PROMPTLY, server.closed())
        .await
        .expect("closed() to complete");
    let err = server
        .connect(conn.remote_address(), conn.remote_id())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
    // A later shutdown returns at once.
    tokio::time::timeout(PROMPTLY, server.shutdown(PROMPTLY * 5))
        .await
        .expect("shutdown of a closed node");
}

#[tokio::test]
async fn closed_completes_when_the_node_ends() {
    use futures::FutureExt;

    // Closed at once.
    let node_a = node(Node::builder()).await;
    let closed = node_a.closed();
    node_a.close();
    tokio::time::timeout(PROMPTLY, closed).await.unwrap();
    assert!(node_a.closed().now_or_never().is_some(), "already closed");

    // Shut down: closed by the time the shutdown returns.
    let node_b = node(Node::builder()).await;
    let closed = node_b.closed();
    node_b.shutdown(Duration::from_millis(100)).await;
    assert!(closed.now_or_never().is_some());

    // Its last handle dropped: the future keeps no handle itself.
    let node_c = node(Node::builder()).await;
    let closed = node_c.closed();
    let other = node_c.clone();
    drop(node_c);
    let mut closed = Box::pin(closed);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut closed)
            .await
            .is_err(),
        "a handle is left"
    );
    drop(other);
    tokio::time::timeout(PROMPTLY, closed).await.unwrap();
}
