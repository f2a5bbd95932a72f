//! Memory a peer can make a node hold: call headers are bounded before anything of them is
//! kept, a frame's bytes count against the budgets for as long as any part of it is held, and
//! a node-wide budget spans all connections.
//!
//! The measured test runs the serving node in a child process (this test binary, run again
//! with `DEP2P_MEMORY_SERVER` set) and reads its resident memory from `/proc`, while a raw peer
//! sends the worst frames the limits allow.

mod common;

use std::future::IntoFuture;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wire::*;
use common::{eventually, node, probe, TestService};
use dep2p_runtime::{
    CallContext, CallFuture, Connection, Error, IncomingCall, Node, NodeBuilder, NodeId, Outcome,
    Service, Unary,
};
use serde::de::{Deserializer, Visitor};
use serde::Deserialize;
use tokio::sync::Notify;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// A service whose calls hold their frames and nothing else.

/// An argument of bytes whose decoded form keeps only their number: a call of it holds its
/// frame and no copy of the bytes.
struct Len(usize);

impl<'de> Deserialize<'de> for Len {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Counting;
        impl Visitor<'_> for Counting {
            type Value = Len;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Len, E> {
                Ok(Len(v.len()))
            }
        }
        d.deserialize_bytes(Counting)
    }
}

/// "Mem": `keep` and `park` hold their call until released (or the call's deadline), `len`
/// answers at once, `meta` with the number and size of the metadata entries it got.
#[derive(Clone, Default)]
struct Mem {
    kept: Arc<AtomicUsize>,
    parked: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

impl Service for Mem {
    fn name(&self) -> &str {
        "Mem"
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        let this = self.clone();
        match call.method() {
            "len" => call.unary(|(len,): (Len,)| async move { len.0 as u64 }),
            "keep" => call.unary(move |(len,): (Len,)| async move {
                this.kept.fetch_add(1, Ordering::SeqCst);
                this.release.notified().await;
                len.0 as u64
            }),
            "park" => call.notify(move |(_,): (Len,)| async move {
                this.parked.fetch_add(1, Ordering::SeqCst);
                this.release.notified().await;
            }),
            "meta" => call.unary(|(): ()| async move {
                let ctx = CallContext::current().unwrap();
                let entries = ctx.metadata_entries();
                entries.fold((0u64, 0u64), |(n, bytes), (k, v)| {
                    (n + 1, bytes + (k.len() + v.len()) as u64)
                })
            }),
            _ => call.unknown_method(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frames a hostile peer sends.

/// Bytes of the header of a CALL payload (everything before the arguments).
fn header_len(service: &str, method: &str, kind: u64, metadata: &[(&str, &str)]) -> usize {
    call_payload(service, method, kind, None, metadata, &[]).len()
}

/// Metadata of `entries` entries that makes the header of a call of `service.method` exactly
/// `size` bytes.
fn filling(service: &str, method: &str, kind: u64, entries: usize, size: usize) -> Vec<String> {
    let keys: Vec<String> = (0..entries).map(|i| format!("k{i:02}")).collect();
    let mut values = vec![String::new(); entries];
    loop {
        let pairs: Vec<(&str, &str)> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let len = header_len(service, method, kind, &pairs);
        if len >= size {
            assert_eq!(len, size, "a header of exactly {size} bytes");
            let mut out = Vec::new();
            for (k, v) in keys.into_iter().zip(values) {
                out.push(k);
                out.push(v);
            }
            return out;
        }
        // Grow the shortest value by a byte.
        let shortest = (0..entries).min_by_key(|&i| values[i].len()).unwrap();
        values[shortest].push('v');
    }
}

fn pairs(flat: &[String]) -> Vec<(&str, &str)> {
    flat.chunks(2)
        .map(|pair| (pair[0].as_str(), pair[1].as_str()))
        .collect()
}

/// Postcard bytes of `n` bytes: the `Len` argument.
fn bytes_arg(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, n as u64);
    out.resize(out.len() + n, 0xab);
    out
}

/// A CALL frame of `max` payload bytes whose header is nothing but empty metadata entries:
/// two bytes each on the wire.
fn empty_entries_call(max: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(max);
    string(&mut payload, "Mem");
    string(&mut payload, "len");
    varint(&mut payload, UNARY);
    payload.push(0);
    let fixed = payload.len() + 4 + 1;
    let entries = (max - fixed) / 2;
    varint(&mut payload, entries as u64);
    payload.resize(payload.len() + 2 * entries, 0);
    payload.extend(bytes_arg(0));
    assert!(payload.len() <= max);
    frame(CALL, &payload)
}

/// Writes `bytes` on a new stream and reads the answer, with time for a large frame.
async fn send_and_read(conn: &Connection, bytes: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(MIB))
        .await
        .expect("an answer in time")
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Call headers are bounded, field by field, before anything of them is kept.

/// A server of "Mem" and the common test service, and a connection to it.
async fn mem_pair(server: NodeBuilder, client: NodeBuilder) -> (Node, Node, Connection) {
    let server = node(
        server
            .serve(Mem::default())
            .serve(TestService { probe: probe() }),
    )
    .await;
    let client = node(client).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    (server, client, conn)
}

/// The CALL frame of `Mem.meta` with `metadata`.
fn meta_call(service: &str, method: &str, metadata: &[(&str, &str)]) -> Vec<u8> {
    frame(
        CALL,
        &call_payload(service, method, UNARY, None, metadata, &[]),
    )
}

/// The STATUS code that answers `call`, checking the request was stopped with Protocol.
async fn refused(conn: &Connection, call: &[u8]) -> u64 {
    let (code, message, send) = expect_status(conn, call, false).await;
    assert_eq!(stop_code(&send).await, Some(STREAM_PROTOCOL), "{message}");
    code
}

#[tokio::test]
async fn a_header_at_its_bounds_is_served_and_one_beyond_them_refused() {
    let (_server, _client, conn) = mem_pair(Node::builder(), Node::builder()).await;

    // 64 entries, 16 KiB in all: served, and the handler sees every entry.
    let full = filling("Mem", "meta", UNARY, 64, 16 * KIB);
    let (_, answer) = exchange(&conn, &meta_call("Mem", "meta", &pairs(&full)), true).await;
    let bytes: usize = full.iter().map(String::len).sum();
    let mut expected = Vec::new();
    varint(&mut expected, 64);
    varint(&mut expected, bytes as u64);
    assert_eq!(answer, frame(RESULT, &expected));

    // One byte more, in the last value.
    let mut over = full.clone();
    over.last_mut().unwrap().push('v');
    let code = refused(&conn, &meta_call("Mem", "meta", &pairs(&over))).await;
    assert_eq!(code, MESSAGE_TOO_LARGE);

    // 65 entries, however small.
    let many: Vec<String> = (0..130).map(|i| (i % 2).to_string()).collect();
    assert_eq!(
        refused(&conn, &meta_call("Mem", "meta", &pairs(&many))).await,
        MESSAGE_TOO_LARGE
    );
    let (_, answer) = exchange(&conn, &meta_call("Mem", "meta", &pairs(&many[2..])), true).await;
    assert_eq!(answer, frame(RESULT, &[64, 0x80, 0x01]));

    // One entry of 8 KiB, then of 8 KiB and a byte.
    let value = "v".repeat(8 * KIB - 1);
    let (_, answer) = exchange(&conn, &meta_call("Mem", "meta", &[("k", &value)]), true).await;
    assert_eq!(answer, frame(RESULT, &[1, 0x80, 0x40]));
    let value = "v".repeat(8 * KIB);
    assert_eq!(
        refused(&conn, &meta_call("Mem", "meta", &[("k", &value)])).await,
        MESSAGE_TOO_LARGE
    );

    // Names of 256 bytes are looked up; of 257 bytes, refused before.
    let name = "n".repeat(256);
    let (code, _, _) = expect_status(&conn, &meta_call(&name, "meta", &[]), true).await;
    assert_eq!(code, UNKNOWN_SERVICE);
    let (code, _, _) = expect_status(&conn, &meta_call("Mem", &name, &[]), true).await;
    assert_eq!(code, UNKNOWN_METHOD);
    let name = "n".repeat(257);
    let code = refused(&conn, &meta_call(&name, "meta", &[])).await;
    assert_eq!(code, MESSAGE_TOO_LARGE);
    let code = refused(&conn, &meta_call("Mem", &name, &[])).await;
    assert_eq!(code, MESSAGE_TOO_LARGE);

    still_serves(&conn).await;
}

#[tokio::test]
async fn a_largest_message_of_empty_metadata_entries_is_refused() {
    let (_server, _client, conn) = mem_pair(Node::builder(), Node::builder()).await;
    let flood = empty_entries_call(16 * MIB);
    let answer = send_and_read(&conn, &flood).await;
    let frames = frames(&answer);
    assert_eq!(frames.len(), 1, "{frames:02x?}");
    assert_eq!(frames[0].0, STATUS);
    let (code, message) = status(&frames[0].1);
    assert_eq!(code, MESSAGE_TOO_LARGE, "{message}");
    assert!(message.contains("metadata entries"), "{message}");
    still_serves(&conn).await;
}

#[tokio::test]
async fn bounds_are_configurable_and_callers_keep_them_before_opening_a_stream() {
    let (_server, _client, conn) = mem_pair(
        Node::builder()
            .max_metadata_entries(100)
            .max_metadata_entry_size(20 * KIB)
            .max_header_size(64 * KIB),
        Node::builder(),
    )
    .await;
    let meta = |conn: &Connection| Unary::<(), (u64, u64)>::new(conn, "Mem", "meta", ());
    let sent = || conn.quic().stats().frame_tx.stream;

    // Over this caller's bounds (the defaults), within the server's: refused here, before
    // anything is sent.
    let before = sent();
    let mut call = meta(&conn);
    for i in 0..65 {
        call = call.metadata(i.to_string(), "");
    }
    let err = call.await.unwrap_err();
    assert!(
        matches!(&err, Error::MessageTooLarge(m) if m.contains("65 metadata entries")),
        "{err}"
    );
    let err = meta(&conn)
        .metadata("k", "v".repeat(8 * KIB))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::MessageTooLarge(m) if m.contains("metadata entry")),
        "{err}"
    );
    let mut call = meta(&conn);
    for i in 0..3 {
        call = call.metadata(i.to_string(), "v".repeat(6 * KIB));
    }
    let err = call.await.unwrap_err();
    assert!(
        matches!(&err, Error::MessageTooLarge(m) if m.contains("bytes, the limit is 16384")),
        "{err}"
    );
    let long: &'static str = "n".repeat(257).leak();
    let err = Unary::<(), ()>::new(&conn, "Mem", long, ())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::MessageTooLarge(m) if m.contains("method name")),
        "{err}"
    );
    assert_eq!(sent(), before, "no stream frame sent");

    // Within the server's larger bounds, from a caller with larger ones still: served.
    let client = node(
        Node::builder()
            .max_metadata_entries(200)
            .max_metadata_entry_size(20 * KIB)
            .max_header_size(64 * KIB),
    )
    .await;
    let wide = client
        .connect(conn.remote_address(), conn.remote_id())
        .await
        .unwrap();
    let mut call = meta(&wide);
    for i in 0..100 {
        call = call.metadata(i.to_string(), "v".repeat(500));
    }
    let (entries, _) = call.await.unwrap();
    assert_eq!(entries, 100);
    // Beyond the server's: its answer.
    let before = wide.quic().stats().frame_tx.stream;
    let mut call = meta(&wide);
    for i in 0..101 {
        call = call.metadata(i.to_string(), "");
    }
    let err = call.await.unwrap_err();
    assert!(
        matches!(&err, Error::MessageTooLarge(m) if m.contains("101 metadata entries")),
        "{err}"
    );
    assert!(
        wide.quic().stats().frame_tx.stream > before,
        "sent, and refused by the server"
    );
}

// ---------------------------------------------------------------------------------------------
// A frame counts for as long as any part of it is held; the node's budget spans connections.

/// "Park": `echo` answers with the length of its argument; any other method's call is kept,
/// unanswered, until the test drops it.
#[derive(Clone, Default)]
struct Parking {
    calls: Arc<Mutex<Vec<IncomingCall>>>,
    arrived: Arc<AtomicUsize>,
}

impl Parking {
    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Drops the calls kept so far; their callers get `HandlerFailed`.
    fn release(&self) {
        self.calls.lock().unwrap().clear();
    }
}

impl Service for Parking {
    fn name(&self) -> &str {
        "Park"
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        if call.method() == "echo" {
            return call.unary(|(s,): (String,)| async move { s.len() as u64 });
        }
        self.calls.lock().unwrap().push(call);
        self.arrived.fetch_add(1, Ordering::SeqCst);
        // Parked: answered (or dropped) by the test later.
        Box::pin(async { Outcome::Ok })
    }
}

fn kept(conn: &Connection, bytes: usize) -> Unary<(String,), ()> {
    Unary::new(conn, "Park", "keep", ("x".repeat(bytes),))
}

fn park_echo(conn: &Connection) -> Unary<(String,), u64> {
    Unary::new(conn, "Park", "echo", ("small".to_string(),))
}

/// Long enough for a frame that had room to reach its service.
const SETTLE: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_kept_call_keeps_its_frames_room() {
    // Room for one 150 KiB message on the connection, not two.
    let park = Parking::default();
    let builder = Node::builder()
        .max_message_size(200 * KIB)
        .connection_buffer(256 * KIB)
        .serve(park.clone());
    let server = node(builder).await;
    let client = node(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();

    let first = tokio::spawn(kept(&conn, 150 * KIB).into_future());
    eventually("the first call to arrive", || park.arrived() == 1).await;
    let second = tokio::spawn(kept(&conn, 150 * KIB).into_future());
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        park.arrived(),
        1,
        "the second message waits while the first call keeps its frame"
    );
    park.release();
    assert!(matches!(first.await.unwrap(), Err(Error::HandlerFailed(_))));
    eventually("the second call to arrive", || park.arrived() == 2).await;
    park.release();
    assert!(matches!(
        second.await.unwrap(),
        Err(Error::HandlerFailed(_))
    ));
}

#[tokio::test]
async fn the_node_budget_spans_connections_and_refuses_calls_while_full() {
    // Each connection has room for several 150 KiB messages; the node for one.
    let park = Parking::default();
    let builder = Node::builder()
        .max_message_size(200 * KIB)
        .connection_buffer(MIB)
        .memory_budget(256 * KIB)
        .serve(park.clone());
    let server = node(builder).await;
    let dial = || async {
        let client = node(Node::builder()).await;
        let conn = client
            .connect(server.local_addr(), server.id())
            .await
            .unwrap();
        (client, conn)
    };
    let (_a, one) = dial().await;
    let (_b, two) = dial().await;

    assert_eq!(park_echo(&two).await.unwrap(), 5);
    let first = tokio::spawn(kept(&one, 150 * KIB).into_future());
    eventually("the first call to arrive", || park.arrived() == 1).await;
    // Within the node's budget: a small call is served beside it.
    assert_eq!(park_echo(&two).await.unwrap(), 5);
    let second = tokio::spawn(kept(&two, 150 * KIB).into_future());
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        park.arrived(),
        1,
        "the second message waits for the node's room"
    );
    // While a message waits for room, the node is over its budget: new calls are refused, on
    // every connection.
    for conn in [&one, &two] {
        let err = park_echo(conn).await.unwrap_err();
        assert!(
            matches!(&err, Error::Overloaded(m) if m.contains("node is over its memory budget")),
            "{err:?}"
        );
    }
    park.release();
    assert!(matches!(first.await.unwrap(), Err(Error::HandlerFailed(_))));
    eventually("the second call to arrive", || park.arrived() == 2).await;
    assert_eq!(park_echo(&one).await.unwrap(), 5);
    park.release();
    assert!(matches!(
        second.await.unwrap(),
        Err(Error::HandlerFailed(_))
    ));
}

#[tokio::test]
async fn small_calls_count_while_they_run() {
    // A node budget of one 64 KiB message: a few small calls kept at once fill it.
    let park = Parking::default();
    let builder = Node::builder()
        .max_message_size(64 * KIB)
        .memory_budget(64 * KIB + 5)
        .serve(park.clone());
    let server = node(builder).await;
    let client = node(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(kept(&conn, 20 * KIB).into_future()))
        .collect();
    eventually("three calls to arrive", || park.arrived() == 3).await;
    let err = kept(&conn, 10 * KIB).await.unwrap_err();
    assert!(matches!(err, Error::Overloaded(_)), "{err:?}");
    park.release();
    for call in calls {
        assert!(matches!(call.await.unwrap(), Err(Error::HandlerFailed(_))));
    }
    assert_eq!(park_echo(&conn).await.unwrap(), 5);
}

// ---------------------------------------------------------------------------------------------
// The serving node in a process of its own.

const SERVER_ENV: &str = "DEP2P_MEMORY_SERVER";
const SERVER_LINE: &str = "dep2p-memory-server";
const STATS_LINE: &str = "dep2p-memory-stats";

/// The node budget the measured server runs with.
const BUDGET: usize = 64 * MIB;
/// Its connection flow-control window: what QUIC may buffer per connection before it is read.
const WINDOW: usize = 4 * MIB;
/// Connections the peer opens.
const CONNECTIONS: usize = 4;

/// Not a test of its own: the serving process of the measured test, which runs this binary
/// again with `DEP2P_MEMORY_SERVER` set. It serves until its standard input closes, and
/// answers each line it reads there with the number of calls its handlers hold.
#[test]
#[ignore = "run by the measured memory test as its server process"]
fn serving_process() {
    if std::env::var_os(SERVER_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mem = Mem::default();
        let node = Node::builder()
            .memory_budget(BUDGET)
            .connection_window(WINDOW as u32)
            // Small enough that every stream a peer may open fits in the connection window.
            .stream_window(16 * 1024)
            .serve(mem.clone())
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        println!("{SERVER_LINE} {} {}", node.local_addr(), node.id());
        let _ = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                let kept = mem.kept.load(Ordering::SeqCst);
                let parked = mem.parked.load(Ordering::SeqCst);
                println!("{STATS_LINE} {kept} {parked}");
            }
        })
        .await;
    });
}

/// The server process; killed when dropped.
struct ServerProcess {
    child: Child,
    addr: std::net::SocketAddr,
    id: NodeId,
    stats: std::sync::mpsc::Receiver<(usize, usize)>,
}

impl ServerProcess {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["serving_process", "--exact", "--ignored", "--nocapture"])
            .env(SERVER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let line = lines
            .find(|line| line.starts_with(SERVER_LINE))
            .expect("the server's address");
        let mut words = line.split_whitespace().skip(1);
        let addr = words.next().unwrap().parse().unwrap();
        let id = words.next().unwrap().parse().unwrap();
        // Its answers to `stats`; whatever else it prints goes to this test's output.
        let (tx, stats) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines {
                let mut words = line.split_whitespace();
                if words.next() == Some(STATS_LINE) {
                    let mut n = words.filter_map(|w| w.parse().ok());
                    let _ = tx.send((n.next().unwrap_or(0), n.next().unwrap_or(0)));
                } else {
                    eprintln!("server: {line}");
                }
            }
        });
        ServerProcess {
            child,
            addr,
            id,
            stats,
        }
    }

    /// Calls of `Mem.keep` and `Mem.park` being held.
    fn stats(&mut self) -> (usize, usize) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin).unwrap();
        let answer = || self.stats.recv_timeout(Duration::from_secs(5));
        tokio::task::block_in_place(answer).unwrap()
    }

    /// A field of `/proc/<pid>/status`, in bytes.
    fn status(&self, field: &str) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with(field))
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
        let kib: usize = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib * KIB
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The measurement.

/// Writes `bytes` on a new stream of `conn`, `piece` bytes at a time with `pause` between
/// them, then holds the stream open until the task is aborted.
fn send_slowly(
    conn: &Connection,
    bytes: &bytes::Bytes,
    piece: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let conn = conn.clone();
    let bytes = bytes.clone();
    tokio::spawn(async move {
        let Ok((mut send, recv)) = conn.quic().open_bi().await else {
            return;
        };
        for piece in bytes.chunks(piece) {
            if send.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
        std::future::pending::<()>().await;
        drop((send, recv));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_make_a_node_hold_more_than_its_budget() {
    let start = Instant::now();
    let mut server = ServerProcess::start();
    let client = Node::builder().bind("127.0.0.1:0").await.unwrap();
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        let conn = client.connect(server.addr, server.id).await.unwrap();
        conns.push(conn);
    }
    for conn in &conns {
        let len = Unary::<(Vec<u8>,), u64>::new(conn, "Mem", "len", (vec![1, 2],));
        assert_eq!(len.await.unwrap(), 2);
    }
    let baseline = server.status("VmRSS:");

    // 1. A CALL frame of the largest size whose header is nothing but empty metadata entries,
    //    on every connection in turn.
    let flood = empty_entries_call(16 * MIB);
    let mut flood_answers = Vec::new();
    for conn in &conns {
        flood_answers.push(send_and_read(conn, &flood).await);
    }
    drop(flood);
    let after_flood = server.status("VmHWM:");

    // 2. Notifications with the largest header allowed (64 entries, 16 KiB), each held by its
    //    handler, as many as the server lets the peer open (streams and calls per connection).
    let metadata = filling("Mem", "park", NOTIFY, 64, 16 * KIB);
    let park = frame(
        CALL,
        &call_payload(
            "Mem",
            "park",
            NOTIFY,
            None,
            &pairs(&metadata),
            &bytes_arg(0),
        ),
    );
    let notes = conns.iter().map(|conn| {
        let conn = conn.clone();
        let park = park.clone();
        tokio::spawn(async move {
            for _ in 0..1024 {
                let open = tokio::time::timeout(Duration::from_millis(300), conn.quic().open_uni());
                let Ok(Ok(mut send)) = open.await else {
                    return;
                };
                let _ = send.write_all(&park).await;
                let _ = send.finish();
            }
        })
    });
    futures::future::join_all(notes).await;

    // 3. On every connection, a CALL frame of the largest size, sent whole, to a method that
    //    keeps its call (and so its frame) until the test ends.
    let body = bytes_arg(16 * MIB - header_len("Mem", "keep", UNARY, &[]) - 4);
    let big = call_payload("Mem", "keep", UNARY, None, &[], &body);
    assert_eq!(
        big.len(),
        16 * MIB,
        "the argument's length takes four bytes"
    );
    let big = bytes::Bytes::from(frame(CALL, &big));
    let mut streams = Vec::new();
    for conn in &conns {
        streams.push(send_slowly(conn, &big, big.len(), Duration::ZERO));
    }
    let waiting = Instant::now();
    while server.stats().0 < CONNECTIONS && waiting.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 4. On every connection, many more streams announcing CALL frames of the largest size and
    //    trickling their bytes.
    for conn in &conns {
        for _ in 0..16 {
            streams.push(send_slowly(
                conn,
                &big,
                256 * KIB,
                Duration::from_millis(20),
            ));
        }
    }
    // Until the server's memory stops growing.
    let mut last = 0;
    let mut still = 0;
    while still < 5 && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = server.status("VmRSS:");
        if now <= last + 256 * KIB {
            still += 1;
        } else {
            still = 0;
        }
        last = now;
    }
    let peak = server.status("VmHWM:");
    let (kept, parked) = server.stats();
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "server memory: baseline {} KiB, peak after the header flood {} KiB, peak {} KiB \
         (+{} KiB); {kept} calls holding a 16 MiB frame, {parked} notifications with a \
         16 KiB header held; {:.1} s",
        baseline / KIB,
        after_flood / KIB,
        peak / KIB,
        grown / KIB,
        start.elapsed().as_secs_f64()
    );
    for stream in streams {
        stream.abort();
    }

    // The documented bound: the node's budget, plus what QUIC buffers per connection before it
    // is read, plus the state of the streams and calls (README, "Limits and defaults").
    let bound = BUDGET + CONNECTIONS * WINDOW + 16 * MIB;
    assert!(
        grown <= bound,
        "the server grew by {} KiB, over its bound of {} KiB",
        grown / KIB,
        bound / KIB
    );
    assert!(kept > 0 && parked > 0, "the peer's calls were held");
    for answer in &flood_answers {
        let frames = frames(answer);
        assert_eq!(frames.len(), 1, "{frames:02x?}");
        assert_eq!(frames[0].0, STATUS);
        assert_eq!(status(&frames[0].1).0, MESSAGE_TOO_LARGE);
    }
}
