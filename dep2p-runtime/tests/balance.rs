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
    try_serve(index, key, addr).await.unwrap()
}

async fn try_serve(index: u32, key: SecretKey, addr: SocketAddr) -> Result<Running, Error> {
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
        .await?;
    let addr = node.local_addr();
    Ok(Running {
        node,
        key,
        addr,
        held,
        release,
    })
}

/// [`serve`] on the port of a node that has just closed, once the port is free.
async fn rebind(index: u32, key: SecretKey, addr: SocketAddr) -> Running {
    let started = Instant::now();
    loop {
        match try_serve(index, key.clone(), addr).await {
            Ok(running) => return running,
            Err(err) => assert!(started.elapsed() < Duration::from_secs(2), "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    down.node.closed().await;
    drop(down);
    wait_for(&set, id, |s| *s != PeerState::Ready).await;
    let answered = spread(&client, 60, 3).await;
    assert_eq!(answered[0], 0, "{answered:?}");
    assert!(answered[1] > 0 && answered[2] > 0, "{answered:?}");

    // It comes back on the same port with the same key: it is redialed and gets calls again.
    let back = rebind(0, key, addr).await;
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

/// Names the key file, port and index of the server a child process runs.
const CHILD: &str = "DEP2P_BALANCE_TEST_SERVER";
/// The line a child prints once its node is bound, followed by its port.
const BOUND: &str = "dep2p-balance-test-server-bound";

/// A server in a process of its own, which the test kills outright: the test binary runs
/// itself again, selecting the test, with [`CHILD`] set.
struct ServerProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// If this process is a server started by [`ServerProcess::start`], serves until the
    /// parent closes its standard input, then exits; otherwise returns at once.
    fn run_if_child() {
        let Ok(spec) = std::env::var(CHILD) else {
            return;
        };
        let mut parts = spec.split('|');
        let (Some(key), Some(port), Some(index)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("{CHILD}: key file|port|index");
        };
        let key = SecretKey::load(key).unwrap();
        let port: u16 = port.parse().unwrap();
        let index: u32 = index.parse().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let any = SocketAddr::from(([127, 0, 0, 1], port));
            let server = serve(index, key, any).await;
            println!("\n{BOUND} {}", server.addr.port());
            let _ = tokio::task::spawn_blocking(|| {
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
            })
            .await;
        });
        std::process::exit(0);
    }

    /// Runs the test `test` in a new process as server `index` with the key in `key`, bound
    /// to 127.0.0.1:`port` (0: any), and waits until it is bound.
    fn start(test: &str, key: &std::path::Path, port: u16, index: u32) -> ServerProcess {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD, format!("{}|{port}|{index}", key.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("the server ended before it was bound")
                .unwrap();
            if let Some((_, port)) = line.split_once(BOUND) {
                break port.trim().parse::<u16>().unwrap();
            }
        };
        ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL on Unix: no close reaches the client.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_killed_member_is_routed_around_and_gets_calls_again_after_a_restart() {
    const TEST: &str = "a_killed_member_is_routed_around_and_gets_calls_again_after_a_restart";
    ServerProcess::run_if_child();
    let dir = std::env::temp_dir().join(format!("dep2p-balance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys: Vec<(SecretKey, std::path::PathBuf)> = (0..3)
        .map(|i| {
            let key = SecretKey::generate();
            let path = dir.join(format!("server-{i}.key"));
            key.save(&path).unwrap();
            (key, path)
        })
        .collect();
    let mut processes: Vec<Option<ServerProcess>> = (0..3u32)
        .map(|i| Some(ServerProcess::start(TEST, &keys[i as usize].1, 0, i)))
        .collect();
    let addrs: Vec<NodeAddr> = processes
        .iter()
        .zip(&keys)
        .map(|(p, (key, _))| NodeAddr::new(key.public()).with_addr(p.as_ref().unwrap().addr))
        .collect();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A short idle timeout, so that a killed server is noticed in about a second.
        let node = Node::builder()
            .idle_connection_timeout(Duration::from_secs(1))
            .keep_alive_interval(Duration::from_millis(250))
            .connect_timeout(Duration::from_millis(300))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let set = node.peer_set(addrs.clone());
        for addr in &addrs {
            wait_for(&set, addr.id(), ready).await;
        }
        let client = NamedClient::new(set.clone());
        let answered = spread(&client, 30, 3).await;
        assert!(answered.iter().all(|&n| n > 0), "{answered:?}");

        // Server 0 dies without a word. Once its loss is noticed, every call is answered by
        // the others.
        let killed = processes[0].take().unwrap();
        let port = killed.addr.port();
        drop(killed);
        wait_for(&set, addrs[0].id(), |s| *s != PeerState::Ready).await;
        let answered = spread(&client, 60, 3).await;
        assert_eq!(answered[0], 0, "{answered:?}");

        // Back on the same port with the same key: it is redialed and gets calls again.
        processes[0] = Some(ServerProcess::start(TEST, &keys[0].1, port, 0));
        wait_for(&set, addrs[0].id(), ready).await;
        let answered = spread(&client, 90, 3).await;
        assert!(answered[0] >= 15, "{answered:?}");
    });
    drop(processes);
    let _ = std::fs::remove_dir_all(&dir);
}
