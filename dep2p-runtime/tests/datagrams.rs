//! `#[datagram]` methods (protocol version 2): every datagram that arrives is handled once
//! with its sequence number, both sides serve them, an oversize one is refused at the caller,
//! a receiver that cannot keep up drops and counts, a peer without datagrams (or a version 1
//! connection) gets a clear error, and two datagram methods with one id are refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dep2p_runtime::{
    service, Datagram, DatagramContext, Error, Kind, MethodInfo, Node, NodeBuilder,
    ReflectionClient, Unary,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub x: f32,
    pub y: f32,
}

#[service]
pub trait Telemetry {
    /// One position update.
    #[datagram]
    async fn position(&self, index: u32, p: Position);

    /// A blob, to test sizes.
    #[datagram]
    async fn blob(&self, data: Vec<u8>);

    /// Answered with a `pong` datagram on the connection it came on.
    #[datagram]
    async fn ping(&self, n: u32);

    /// The answer to `ping`.
    #[datagram]
    async fn pong(&self, n: u32);

    /// Ordinary calls keep working alongside.
    async fn echo(&self, s: String) -> String;
}

/// One datagram as its handler saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: &'static str,
    value: u32,
    sequence: u64,
    age: Duration,
    newest: bool,
    context: DatagramContext,
}

#[derive(Clone)]
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
    /// Handlers wait for a permit here before they return.
    gate: Arc<Semaphore>,
}

impl Recorder {
    async fn record(&self, method: &'static str, value: u32) {
        let context = DatagramContext::current().expect("a datagram handler has its context");
        let _ = self.seen.send(Seen {
            method,
            value,
            sequence: context.sequence(),
            age: context.age(),
            newest: context.is_newest(),
            context,
        });
        let _permit = self.gate.acquire().await;
    }
}

impl Telemetry for Recorder {
    async fn position(&self, index: u32, _p: Position) {
        self.record("position", index).await;
    }

    async fn blob(&self, data: Vec<u8>) {
        self.record("blob", data.len() as u32).await;
    }

    async fn ping(&self, n: u32) {
        let context = DatagramContext::current().expect("context");
        TelemetryClient::new(context.connection().clone())
            .pong(n)
            .await
            .expect("pong sent");
        self.record("ping", n).await;
    }

    async fn pong(&self, n: u32) {
        self.record("pong", n).await;
    }

    async fn echo(&self, s: String) -> String {
        s
    }
}

fn recorder(open: bool) -> (Recorder, mpsc::UnboundedReceiver<Seen>) {
    let (seen, rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(if open {
        Semaphore::MAX_PERMITS
    } else {
        0
    }));
    (Recorder { seen, gate }, rx)
}

async fn bind(builder: NodeBuilder) -> Node {
    builder.bind("127.0.0.1:0").await.expect("bind")
}

/// Waits until `cond` holds, for up to five seconds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn every_datagram_that_arrives_is_handled_once_in_sequence() {
    let (service, mut seen) = recorder(true);
    let server = bind(Node::builder().serve(TelemetryServer::new(service))).await;
    let client = bind(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let telemetry = TelemetryClient::new(conn.clone());
    const N: u32 = 200;
    for index in 0..N {
        let p = Position {
            x: index as f32,
            y: 0.0,
        };
        telemetry.position(index, p).await.unwrap();
        if index % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Another method counts its own sequence from 0.
    telemetry.blob(vec![1, 2, 3]).await.unwrap();
    assert_eq!(telemetry.echo("still".into()).await.unwrap(), "still");
    let server_side = server
        .connect(client.local_addr(), client.id())
        .await
        .unwrap();
    eventually("every datagram read", || {
        server_side.path_stats().datagrams.received == u64::from(N) + 1
    })
    .await;
    let mut got = Vec::new();
    while got.len() < N as usize + 1 {
        let item = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("handled")
            .unwrap();
        got.push(item);
    }
    let blob = got.iter().find(|s| s.method == "blob").unwrap();
    assert_eq!((blob.value, blob.sequence), (3, 0));
    let mut indices: Vec<u32> = got
        .iter()
        .filter(|s| s.method == "position")
        .map(|s| {
            // The sequence number is exactly the sender's count of earlier datagrams.
            assert_eq!(s.sequence, u64::from(s.value));
            assert!(s.age < Duration::from_secs(2), "age {:?}", s.age);
            assert_eq!(s.context.method(), "position");
            assert_eq!(s.context.service(), "Telemetry");
            assert_eq!(s.context.connection().remote_id(), client.id());
            s.value
        })
        .collect();
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..N).collect::<Vec<_>>(),
        "each handled exactly once"
    );
    // The first to arrive is the newest so far.
    assert!(got[0].newest);
    let stats = server_side.path_stats().datagrams;
    assert_eq!(
        (stats.received, stats.handled, stats.dropped()),
        (201, 201, 0)
    );
    assert_eq!(conn.path_stats().datagrams.sent, 201);
    assert!(seen.try_recv().is_err(), "nothing handled twice");
}

#[tokio::test]
async fn both_sides_serve_and_call_datagrams() {
    let (server_service, mut server_seen) = recorder(true);
    let (client_service, mut client_seen) = recorder(true);
    let server = bind(Node::builder().serve(TelemetryServer::new(server_service))).await;
    let client = bind(Node::builder().serve(TelemetryServer::new(client_service))).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let telemetry = TelemetryClient::new(conn.clone());
    // Loopback rarely loses one, but a datagram may be lost: ping until a pong comes back.
    let pong = async {
        for n in 0.. {
            telemetry.ping(n).await.unwrap();
            if let Ok(Some(pong)) =
                tokio::time::timeout(Duration::from_millis(200), client_seen.recv()).await
            {
                return pong;
            }
        }
        unreachable!()
    };
    let pong = tokio::time::timeout(Duration::from_secs(5), pong)
        .await
        .unwrap();
    assert_eq!(pong.method, "pong");
    assert_eq!(pong.sequence, 0, "the server's first pong");
    let ping = server_seen.recv().await.unwrap();
    assert_eq!(
        (ping.method, ping.context.connection().remote_id()),
        ("ping", client.id())
    );
    assert_eq!(pong.context.connection().remote_id(), server.id());
}

#[tokio::test]
async fn an_oversize_datagram_is_refused_before_sending() {
    let (service, _seen) = recorder(true);
    let server = bind(Node::builder().serve(TelemetryServer::new(service))).await;
    let client = bind(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let max = conn
        .path_stats()
        .max_datagram_size
        .expect("datagrams accepted");
    let telemetry = TelemetryClient::new(conn.clone());
    let err = telemetry.blob(vec![0; max]).await.unwrap_err();
    match &err {
        Error::MessageTooLarge(message) => {
            assert!(
                message.contains(&max.to_string()),
                "says the limit: {message}"
            )
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert_eq!(conn.path_stats().datagrams.sent, 0, "nothing sent");
    // One that fits (at most 15 bytes of header, 3 of vector length) is sent.
    telemetry.blob(vec![0; max - 18]).await.unwrap();
    assert_eq!(conn.path_stats().datagrams.sent, 1);
}

#[tokio::test]
async fn a_receiver_that_cannot_keep_up_drops_and_counts() {
    // Handlers wait for the gate: one place, so every datagram after the first is dropped.
    let (service, mut seen) = recorder(false);
    let gate = Arc::clone(&service.gate);
    let server = bind(
        Node::builder()
            .max_datagram_handlers(1)
            .serve(TelemetryServer::new(service)),
    )
    .await;
    let client = bind(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let telemetry = TelemetryClient::new(conn.clone());
    telemetry
        .position(0, Position { x: 0.0, y: 0.0 })
        .await
        .unwrap();
    let first = seen.recv().await.unwrap();
    let server_side = first.context.connection().clone();
    for index in 1..20 {
        telemetry
            .position(index, Position { x: 0.0, y: 0.0 })
            .await
            .unwrap();
    }
    let stats = Arc::new(Mutex::new(server_side.path_stats().datagrams));
    eventually("every datagram read", || {
        let now = server_side.path_stats().datagrams;
        *stats.lock().unwrap() = now;
        now.received == 20
    })
    .await;
    let stats = *stats.lock().unwrap();
    assert_eq!((stats.handled, stats.dropped_busy), (1, 19));
    assert_eq!(stats.dropped(), 19);
    gate.add_permits(1);
    // The place is free again: the next datagram is handled.
    loop {
        telemetry
            .position(100, Position { x: 0.0, y: 0.0 })
            .await
            .unwrap();
        if let Ok(Some(next)) = tokio::time::timeout(Duration::from_millis(200), seen.recv()).await
        {
            assert_eq!(next.value, 100);
            break;
        }
    }
    assert!(conn.path_stats().datagrams.sent >= 21);
}

#[tokio::test]
async fn a_peer_without_datagrams_gets_a_clear_error() {
    let (service, _seen) = recorder(true);
    let server = bind(
        Node::builder()
            .datagrams(false)
            .serve(TelemetryServer::new(service)),
    )
    .await;
    let client = bind(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_eq!(conn.path_stats().max_datagram_size, None);
    let telemetry = TelemetryClient::new(conn.clone());
    let err = telemetry.ping(1).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("does not accept QUIC datagrams")),
        "{err:?}"
    );
    // Nothing else about the connection changed.
    assert_eq!(telemetry.echo("ok".into()).await.unwrap(), "ok");
}

#[tokio::test]
async fn a_version_1_connection_gets_a_clear_error() {
    let (service, _seen) = recorder(true);
    let server = bind(
        Node::builder()
            .protocol_version(1)
            .serve(TelemetryServer::new(service)),
    )
    .await;
    let client = bind(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_eq!(conn.protocol_version(), 1);
    let err = TelemetryClient::new(conn).ping(1).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("protocol version 2")),
        "{err:?}"
    );
}

#[tokio::test]
async fn datagrams_for_unknown_methods_are_dropped_and_counted() {
    let (service, mut seen) = recorder(true);
    let server = bind(Node::builder().serve(TelemetryServer::new(service))).await;
    let client = bind(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let server_side = server
        .connect(client.local_addr(), client.id())
        .await
        .unwrap();
    Datagram::new(&conn, "Telemetry", "missing", (1u32,))
        .await
        .unwrap();
    Datagram::new(&conn, "Nobody", "position", (1u32,))
        .await
        .unwrap();
    // Arguments of the wrong shape: the datagram is dropped, the connection stays.
    Datagram::new(&conn, "Telemetry", "position", ("not", "a position"))
        .await
        .unwrap();
    // Bytes that are no dep2p datagram at all: an unknown format, a truncated head.
    for raw in [&[0x09, 1, 2, 3][..], &[0x01, 0, 0]] {
        conn.quic()
            .send_datagram(bytes::Bytes::copy_from_slice(raw))
            .unwrap();
    }
    eventually("five datagrams read", || {
        server_side.path_stats().datagrams.received == 5
    })
    .await;
    let stats = server_side.path_stats().datagrams;
    assert_eq!(
        (
            stats.dropped_unknown,
            stats.dropped_undecodable,
            stats.handled
        ),
        (2, 3, 0)
    );
    assert!(seen.try_recv().is_err());
    assert_eq!(
        TelemetryClient::new(conn)
            .echo("alive".into())
            .await
            .unwrap(),
        "alive"
    );
}

#[service]
pub trait Clash {
    /// FNV-1a of "Clash/m40168" and of "Clash/m131206" are the same, 0x9e4f20ff.
    #[datagram(name = "m40168")]
    async fn one(&self);
    #[datagram(name = "m131206")]
    async fn two(&self);
}

struct Clashing;

impl Clash for Clashing {
    async fn one(&self) {}
    async fn two(&self) {}
}

#[tokio::test]
async fn two_datagram_methods_with_one_id_are_refused() {
    let err = Node::builder()
        .serve(ClashServer::new(Clashing))
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("0x9e4f20ff") && m.contains("m131206")),
        "{err:?}"
    );
}

#[tokio::test]
async fn reflection_lists_datagram_methods_and_a_call_cannot_reach_one() {
    let (service, mut seen) = recorder(true);
    let server = bind(Node::builder().serve(TelemetryServer::new(service))).await;
    let client = bind(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let listed = ReflectionClient::new(conn.clone()).list().await.unwrap();
    let telemetry = listed.iter().find(|s| s.name() == "Telemetry").unwrap();
    assert!(telemetry
        .methods()
        .contains(&MethodInfo::new("position", Kind::Datagram)));
    // A datagram method is reached by datagrams only: a call of that name is unknown.
    let call: Unary<(u32, Position), ()> = Unary::new(
        &conn,
        "Telemetry",
        "position",
        (1, Position { x: 0.0, y: 0.0 }),
    );
    assert!(matches!(call.await, Err(Error::UnknownMethod(_))));
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn a_peer_target_sends_once_connected() {
    let (service, mut seen) = recorder(true);
    let server = bind(Node::builder().serve(TelemetryServer::new(service))).await;
    let client = bind(Node::builder()).await;
    let telemetry = TelemetryClient::new(client.peer(server.node_addr()));
    // The first datagram waits for the connection the peer dials; loopback may still lose
    // one, so send until one is handled.
    let handled = async {
        for index in 0.. {
            telemetry
                .position(index, Position { x: 1.0, y: 2.0 })
                .await
                .unwrap();
            if let Ok(Some(seen)) =
                tokio::time::timeout(Duration::from_millis(200), seen.recv()).await
            {
                return seen;
            }
        }
        unreachable!()
    };
    let first = tokio::time::timeout(Duration::from_secs(5), handled)
        .await
        .unwrap();
    assert_eq!(first.sequence, u64::from(first.value));
    assert_eq!(first.context.connection().remote_id(), client.id());
}

#[tokio::test]
async fn a_loopback_connection_keeps_its_datagram_size_without_probing_for_more() {
    let (service, _seen) = recorder(true);
    let server = bind(Node::builder().serve(TelemetryServer::new(service))).await;
    let client = bind(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let telemetry = TelemetryClient::new(conn.clone());
    assert_eq!(telemetry.echo("ok".into()).await.unwrap(), "ok");
    let before = conn.path_stats();
    assert_eq!(before.current_mtu, 65_000, "starts with large datagrams");
    // Time for MTU discovery to run, had it anything to look for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = conn.path_stats();
    assert_eq!(after.current_mtu, 65_000, "no larger size probed");
    assert_eq!(after.max_datagram_size, before.max_datagram_size);
    // The largest datagram the path takes still goes out.
    let max = after.max_datagram_size.expect("datagrams accepted");
    telemetry.blob(vec![0; max - 18]).await.unwrap();
    assert_eq!(conn.path_stats().datagrams.sent, 1);
}
