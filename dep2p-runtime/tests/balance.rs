//! Sets of peers: calls spread over connected members by load, go around a member that is
//! down and back to it once it returns, and follow members joining and leaving at run time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dep2p_runtime::{service, Error, Node, NodeAddr, PeerChange, PeerSet, PeerState, SecretKey};
use tokio::sync::Notify;

#[service]
pub trait Named {
    /// The index of the server that answers.
    async fn name(&self) -> u32;
    /// The index of the server, once released.
    async fn hold(&self) -> u32;
}

struct Server {
    index: u32,
    held: Arc<AtomicU32>,
    release: Arc<Notify>,
}

impl Named for Server {
    async fn name(&self) -> u32 {
        self.index
    }

    async fn hold(&self) -> u32 {
        self.held.fetch_add(1, Ordering::SeqCst);
        self.release.notified().await;
        self.index
    }
}

/// A running server: its node, and what it needs to come back on the same port with the same
/// key.
struct Running {
    node: Node,
    key: SecretKey,
    addr: SocketAddr,
    held: Arc<AtomicU32>,
    release: Arc<Notify>,
}

async fn serve(index: u32, key: SecretKey, addr: SocketAddr) -> Running {
    let (held, release) = (Arc::new(AtomicU32::new(0)), Arc::new(Notify::new()));
    let server = Server {
        index,
        held: Arc::clone(&held),
        release: Arc::clone(&release),
    };
    let node = Node::builder()
        .secret_key(key.clone())
        .serve(NamedServer::new(server))
        .bind(addr)
        .await
        .unwrap();
    let addr = node.local_addr();
    Running {
        node,
        key,
        addr,
        held,
        release,
    }
}

async fn servers(count: u32) -> Vec<Running> {
    let mut servers = Vec::new();
    for index in 0..count {
        let any = "127.0.0.1:0".parse().unwrap();
        servers.push(serve(index, SecretKey::generate(), any).await);
    }
    servers
}

/// A client node that notices a lost server quickly.
async fn client() -> Node {
    Node::builder()
        .connect_timeout(Duration::from_millis(300))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// Waits until the member `id` of `set` is in a state `want` accepts.
async fn wait_for(set: &PeerSet, id: dep2p_runtime::NodeId, want: impl Fn(&PeerState) -> bool) {
    let peer = set
        .peers()
        .into_iter()
        .find(|p| p.id() == id)
        .expect("a member");
    let mut watch = peer.watch();
    tokio::time::timeout(Duration::from_secs(3), async {
        while !want(&watch.borrow_and_update()) {
            watch.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("member never reached the state; it is {:?}", peer.state()));
}

fn ready(state: &PeerState) -> bool {
    *state == PeerState::Ready
}

/// Makes `calls` calls one after another; how many each server answered.
async fn spread(client: &NamedClient, calls: usize, servers: usize) -> Vec<usize> {
    let mut answered = vec![0; servers];
    for _ in 0..calls {
        let index = client.name().await.expect("every call is answered");
        answered[index as usize] += 1;
    }
    answered
}

#[tokio::test]
async fn calls_spread_over_every_member() {
    let servers = servers(3).await;
    let node = client().await;
    let set = node.peer_set(servers.iter().map(|s| s.node.node_addr()));
    for server in &servers {
        wait_for(&set, server.node.id(), ready).await;
    }
    let answered = spread(&NamedClient::new(set), 300, 3).await;
    for (index, count) in answered.iter().enumerate() {
        assert!(
            *count >= 45,
            "server {index} got {count} of 300: {answered:?}"
        );
    }
}

#[tokio::test]
async fn a_call_goes_to_the_member_with_fewer_calls_in_flight() {
    let servers = servers(2).await;
    let node = client().await;
    let set = node.peer_set(servers.iter().map(|s| s.node.node_addr()));
    for server in &servers {
        wait_for(&set, server.node.id(), ready).await;
    }
    let client = NamedClient::new(set);
    // With two members, both are drawn every time: each held call goes to the one with
    // fewer, so they alternate.
    let mut held = Vec::new();
    for n in 1..=10 {
        let client = client.clone();
        held.push(tokio::spawn(async move { client.hold().await }));
        let started = Instant::now();
        while servers
            .iter()
            .map(|s| s.held.load(Ordering::SeqCst))
            .sum::<u32>()
            < n
        {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "call {n} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for server in &servers {
        assert_eq!(server.held.load(Ordering::SeqCst), 5);
    }
    for server in &servers {
        server.release.notify_waiters();
    }
    for call in held {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_member_that_is_down_gets_no_calls_and_gets_them_again_once_back() {
    let mut servers = servers(3).await;
    let node = client().await;
    let set = node.peer_set(servers.iter().map(|s| s.node.node_addr()));
    for server in &servers {
        wait_for(&set, server.node.id(), ready).await;
    }
    let client = NamedClient::new(set.clone());

    // Server 0 goes down: once its member has seen it, every call goes to the others.
    let down = servers.remove(0);
    let (id, key, addr) = (down.node.id(), down.key.clone(), down.addr);
    down.node.close();
    drop(down);
    wait_for(&set, id, |s| *s != PeerState::Ready).await;
    let answered = spread(&client, 60, 3).await;
    assert_eq!(answered[0], 0, "{answered:?}");
    assert!(answered[1] > 0 && answered[2] > 0, "{answered:?}");

    // It comes back on the same port with the same key: it is redialed and gets calls again.
    let back = serve(0, key, addr).await;
    assert_eq!(back.node.id(), id);
    wait_for(&set, id, ready).await;
    let answered = spread(&client, 90, 3).await;
    assert!(answered[0] >= 15, "{answered:?}");
}

#[tokio::test]
async fn members_follow_the_change_stream() {
    let servers = servers(3).await;
    let node = client().await;
    let (changes, stream) = futures::channel::mpsc::unbounded();
    let set = PeerSet::from_stream(&node, stream);
    let client = NamedClient::new(set.clone());
    let addr = |i: usize| servers[i].node.node_addr();
    let id = |i: usize| servers[i].node.id();

    for i in 0..2 {
        changes.unbounded_send(PeerChange::Insert(addr(i))).unwrap();
    }
    // A call made before any member is connected waits for one.
    assert!(client.name().timeout(Duration::from_secs(3)).await.unwrap() < 2);
    for i in 0..2 {
        wait_for(&set, id(i), ready).await;
    }
    let answered = spread(&client, 60, 3).await;
    assert!(
        answered[0] > 0 && answered[1] > 0 && answered[2] == 0,
        "{answered:?}"
    );

    // Server 2 joins.
    changes.unbounded_send(PeerChange::Insert(addr(2))).unwrap();
    while set.len() < 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_for(&set, id(2), ready).await;
    let answered = spread(&client, 90, 3).await;
    assert!(answered.iter().all(|&n| n > 0), "{answered:?}");

    // Server 0 leaves.
    changes.unbounded_send(PeerChange::Remove(id(0))).unwrap();
    while set.len() > 2 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let answered = spread(&client, 60, 3).await;
    assert!(
        answered[0] == 0 && answered[1] > 0 && answered[2] > 0,
        "{answered:?}"
    );

    // Inserting a member twice changes nothing; removing an absent one neither.
    assert!(!set.insert(addr(1)));
    assert!(!set.remove(id(0)));
}

#[tokio::test]
async fn with_no_member_connected_a_call_fails_at_its_deadline() {
    let node = client().await;
    let set = node.peer_set([]);
    let started = Instant::now();
    let err = NamedClient::new(set.clone())
        .name()
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(190));

    // A member nobody answers at: still unreachable, at the deadline.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr =
        NodeAddr::new(SecretKey::generate().public()).with_addr(silent.local_addr().unwrap());
    assert!(set.insert(addr));
    let started = Instant::now();
    let err = NamedClient::new(set)
        .name()
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_set_does_not_keep_its_node_alive() {
    let servers = servers(1).await;
    let node = client().await;
    let set = node.peer_set([servers[0].node.node_addr()]);
    wait_for(&set, servers[0].node.id(), ready).await;
    let client = NamedClient::new(set);
    drop(node);
    let err = client
        .name()
        .timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
}
