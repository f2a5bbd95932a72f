//! Reconnecting peers: calls through a `Peer` fail while its node is down and succeed again
//! once it is back, with nothing in the caller's path but the calls themselves. The node runs
//! in a process of its own, killed outright and restarted on the same port with the same key.

#[path = "endpoint/child.rs"]
mod child;
mod common;

use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use child::NodeProcess;
use common::*;
use dep2p_runtime::{Error, Node, NodeBuilder, Peer, PeerState, SecretKey, Unary};

/// The test service's `echo`, called through a peer: what a generated client does.
fn echo_via(peer: &Peer, s: &str) -> Unary<(String,), String> {
    Unary::new(peer, SERVICE, "echo", (s.to_string(),))
}

/// A key saved where a child process can load it; the directory goes with the value.
struct KeyFile {
    key: SecretKey,
    dir: PathBuf,
    path: PathBuf,
}

impl KeyFile {
    fn new(name: &str) -> KeyFile {
        let key = SecretKey::generate();
        let dir = std::env::temp_dir().join(format!(
            "dep2p-{name}-{}-{}",
            std::process::id(),
            key.public().fmt_short()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        key.save(&path).unwrap();
        KeyFile { key, dir, path }
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every state the peer reports, in order, from now on.
fn record(peer: &Peer) -> Arc<Mutex<Vec<PeerState>>> {
    let seen = Arc::new(Mutex::new(vec![peer.state()]));
    let mut watch = peer.watch();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            let state = watch.borrow_and_update().clone();
            log.lock().unwrap().push(state);
        }
    });
    seen
}

/// Waits up to `within` for the peer to report a state that `want` accepts.
async fn wait_for(peer: &Peer, within: Duration, want: impl Fn(&PeerState) -> bool) {
    let mut watch = peer.watch();
    let wait = watch.wait_for(|state| want(state));
    tokio::time::timeout(within, wait)
        .await
        .unwrap_or_else(|_| panic!("still {:?} after {within:?}", peer.state()))
        .unwrap();
}

fn is_backing_off(state: &PeerState) -> bool {
    matches!(state, PeerState::BackingOff { .. })
}

async fn client(builder: NodeBuilder) -> Node {
    node(builder).await
}

#[test]
fn calls_through_a_peer_fail_while_it_is_down_and_succeed_after_a_restart() {
    const TEST: &str = "calls_through_a_peer_fail_while_it_is_down_and_succeed_after_a_restart";
    child::run_if_child();
    let key = KeyFile::new("reconnect-down");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let first = NodeProcess::start(TEST, &key.path, 0);
        let addr = first.addr;
        // A short idle timeout, so that the dead process is noticed in about a second.
        let client = client(
            Node::builder()
                .idle_connection_timeout(Duration::from_secs(1))
                .keep_alive_interval(Duration::from_millis(250)),
        )
        .await;
        let peer = client.peer(dep2p_runtime::NodeAddr::new(key.key.public()).with_addr(addr));
        assert_eq!(peer.state(), PeerState::Idle, "dialed before first use");
        let seen = record(&peer);

        assert_eq!(echo_via(&peer, "first").await.unwrap(), "first");
        assert_eq!(peer.state(), PeerState::Ready);

        // The process dies without a word.
        first.kill();
        let err = echo_via(&peer, "down")
            .timeout(Duration::from_millis(500))
            .await
            .expect_err("a call reached a dead process");
        assert!(
            matches!(
                err,
                Error::Timeout | Error::ConnectionLost(_) | Error::Unreachable { .. }
            ),
            "{err:?}"
        );
        // The loss is noticed, and dials fail: calls fail at their deadline as Unreachable.
        wait_for(&peer, Duration::from_secs(5), is_backing_off).await;
        let started = Instant::now();
        let err = echo_via(&peer, "still down")
            .timeout(Duration::from_millis(300))
            .await
            .expect_err("a call reached a dead process");
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));

        // Back on the same port with the same key: the very next call gets through.
        let second = NodeProcess::start(TEST, &key.path, addr.port());
        assert_eq!(second.addr, addr);
        let back = echo_via(&peer, "back")
            .timeout(Duration::from_secs(8))
            .await
            .unwrap();
        assert_eq!(back, "back");
        assert_eq!(peer.state(), PeerState::Ready);

        let seen = seen.lock().unwrap().clone();
        eprintln!("states: {seen:?}");
        let first_ready = seen.iter().position(|s| *s == PeerState::Ready).unwrap();
        let backing_off = seen.iter().position(is_backing_off).unwrap();
        assert_eq!(seen[0], PeerState::Idle);
        assert_eq!(seen[1], PeerState::Connecting);
        assert!(first_ready < backing_off, "{seen:?}");
        assert_eq!(seen.last(), Some(&PeerState::Ready), "{seen:?}");
        drop(second);
    });
}

#[test]
fn a_peer_redials_at_once_when_a_restart_resets_its_connection() {
    const TEST: &str = "a_peer_redials_at_once_when_a_restart_resets_its_connection";
    child::run_if_child();
    let key = KeyFile::new("reconnect-reset");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let first = NodeProcess::start(TEST, &key.path, 0);
        let addr = first.addr;
        // Default timeouts: the old connection ends by a stateless reset, not by silence.
        let client = client(Node::builder()).await;
        let peer = client.peer(dep2p_runtime::NodeAddr::new(key.key.public()).with_addr(addr));
        assert_eq!(echo_via(&peer, "first").await.unwrap(), "first");
        let old = peer.connection(Duration::from_secs(1)).await.unwrap();

        first.kill();
        let second = NodeProcess::start(TEST, &key.path, addr.port());
        let restarted = Instant::now();
        // The next keep-alive on the old connection draws a reset; the peer redials at once.
        tokio::time::timeout(Duration::from_secs(5), old.closed())
            .await
            .expect("the old connection outlived the restart");
        wait_for(&peer, Duration::from_secs(3), |s| *s == PeerState::Ready).await;
        eprintln!("ready again {:?} after the restart", restarted.elapsed());
        assert!(restarted.elapsed() < Duration::from_secs(5));
        assert_eq!(echo_via(&peer, "again").await.unwrap(), "again");
        let new = peer.connection(Duration::from_secs(1)).await.unwrap();
        assert!(old.close_reason().is_some() && new.close_reason().is_none());
        drop(second);
    });
}

#[tokio::test]
async fn a_peer_does_not_keep_its_node_alive() {
    let server = node(Node::builder().serve(TestService { probe: probe() })).await;
    let client = node(Node::builder()).await;
    let peer = client.peer(server.node_addr());
    assert_eq!(echo_via(&peer, "hi").await.unwrap(), "hi");
    let weak = client.downgrade();
    drop(client);
    // Gone at once, though the peer and its connection live on.
    assert!(weak.upgrade().is_none());
    wait_for(&peer, Duration::from_secs(3), |s| *s == PeerState::Closed).await;
    let err = echo_via(&peer, "after")
        .await
        .expect_err("called from a closed node");
    assert!(matches!(err, Error::Closed), "{err:?}");
}

#[tokio::test]
async fn a_peer_that_never_answers_is_unreachable_at_the_calls_deadline() {
    // A bound UDP socket that reads nothing: dials to it get no answer.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = node(Node::builder()).await;
    let peer = client.peer(
        dep2p_runtime::NodeAddr::new(SecretKey::generate().public())
            .with_addr(silent.local_addr().unwrap()),
    );
    let started = Instant::now();
    let err = echo_via(&peer, "anyone")
        .timeout(Duration::from_millis(300))
        .await
        .expect_err("a silent socket answered");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

/// The test service's `sleep`, called through a peer.
fn sleep_via(peer: &Peer, ms: u64) -> Unary<(u64,), u64> {
    Unary::new(peer, SERVICE, "sleep", (ms,))
}

/// Starts a `sleep` of `ms` through a peer of a node in a child process, kills that process
/// while the handler sleeps and restarts it on the same port: what the call gives.
async fn sleep_across_a_restart(test: &str, key: &KeyFile, idempotent: bool) -> Result<u64, Error> {
    let first = NodeProcess::start(test, &key.path, 0);
    let addr = first.addr;
    let client = client(
        Node::builder()
            .idle_connection_timeout(Duration::from_secs(1))
            .keep_alive_interval(Duration::from_millis(250)),
    )
    .await;
    let peer = client.peer(dep2p_runtime::NodeAddr::new(key.key.public()).with_addr(addr));
    peer.connection(Duration::from_secs(5)).await.unwrap();
    let call = sleep_via(&peer, 1_000).timeout(Duration::from_secs(10));
    let call = if idempotent { call.idempotent() } else { call };
    let call = tokio::spawn(call.into_future());
    // The handler is asleep when the process dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill();
    let second = NodeProcess::start(test, &key.path, addr.port());
    assert_eq!(second.addr, addr);
    let result = call.await.unwrap();
    drop(second);
    result
}

#[test]
fn an_idempotent_call_lost_with_a_killed_process_is_retried_after_the_restart() {
    const TEST: &str = "an_idempotent_call_lost_with_a_killed_process_is_retried_after_the_restart";
    child::run_if_child();
    let key = KeyFile::new("reconnect-idempotent");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let slept = sleep_across_a_restart(TEST, &key, true).await.unwrap();
        assert_eq!(slept, 1_000);
        eprintln!("answered {:?} after the call", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}

#[test]
fn a_call_not_marked_idempotent_lost_with_a_killed_process_fails() {
    const TEST: &str = "a_call_not_marked_idempotent_lost_with_a_killed_process_fails";
    child::run_if_child();
    let key = KeyFile::new("reconnect-not-idempotent");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let err = sleep_across_a_restart(TEST, &key, false)
            .await
            .expect_err("a call that may have reached its handler was sent again");
        assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    });
}
