//! The dep2p side: a `#[service]` trait, its handlers, and the client workloads, written as an
//! application would write them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dep2p_runtime::{service, ClientLayer, Connection, Node, NodeId, Receiver, Sender};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_bytes::ByteBuf;
use tokio::task::JoinHandle;

use crate::work::{self, ServerState};

/// The benchmark service.
#[service]
pub(crate) trait Bench {
    /// Returns its argument.
    async fn echo(&self, data: ByteBuf) -> ByteBuf;

    /// Streams `count` messages of `size` bytes; returns how many it sent.
    #[server_stream]
    async fn download(&self, count: u32, size: u32, out: Sender<ByteBuf>) -> Result<u64, String>;

    /// Returns the number of bytes received.
    #[client_stream]
    async fn upload(&self, chunks: Receiver<ByteBuf>) -> Result<u64, String>;

    /// Sends back every message it receives; returns how many.
    #[bidi]
    async fn ping_pong(
        &self,
        pings: Receiver<ByteBuf>,
        pongs: Sender<ByteBuf>,
    ) -> Result<u64, String>;

    /// Waits until the server is told to release held calls, then returns `token`.
    async fn hold(&self, token: u64) -> u64;
}

/// The server's handlers.
#[derive(Debug)]
pub(crate) struct Handlers {
    state: Arc<ServerState>,
}

impl Bench for Handlers {
    async fn echo(&self, data: ByteBuf) -> ByteBuf {
        data
    }

    async fn download(
        &self,
        count: u32,
        size: u32,
        mut out: Sender<ByteBuf>,
    ) -> Result<u64, String> {
        let size = size as usize;
        if size > work::MAX_MESSAGE {
            return Err(format!("message size {size} over {}", work::MAX_MESSAGE));
        }
        for i in 0..count {
            let msg = ByteBuf::from(work::payload(u64::from(i), size));
            out.send(msg).await.map_err(|e| e.to_string())?;
        }
        Ok(u64::from(count))
    }

    async fn upload(&self, mut chunks: Receiver<ByteBuf>) -> Result<u64, String> {
        let mut total = 0u64;
        while let Some(chunk) = chunks.next().await {
            total += chunk.map_err(|e| e.to_string())?.len() as u64;
        }
        Ok(total)
    }

    async fn ping_pong(
        &self,
        mut pings: Receiver<ByteBuf>,
        mut pongs: Sender<ByteBuf>,
    ) -> Result<u64, String> {
        let mut n = 0u64;
        while let Some(ping) = pings.next().await {
            let ping = ping.map_err(|e| e.to_string())?;
            pongs.send(ping).await.map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(n)
    }

    async fn hold(&self, token: u64) -> u64 {
        self.state.hold().await;
        token
    }
}

/// A client layer that does nothing: what the hooks cost by themselves.
struct NoopLayer;

impl ClientLayer for NoopLayer {}

/// Binds the benchmark server; `limit` raises the concurrent calls and streams allowed per
/// connection; `inline_limit` replaces the node's default; `layered` serves through one
/// no-op layer. Returns the node (which must be
/// kept) and its id.
pub(crate) async fn serve(
    addr: SocketAddr,
    limit: Option<u32>,
    fast_loopback: bool,
    inline_limit: Option<Duration>,
    state: Arc<ServerState>,
    layered: bool,
) -> (Node, SocketAddr, String) {
    let mut builder = Node::builder()
        .fast_loopback(fast_loopback)
        .serve(BenchServer::new(Handlers { state }));
    if let Some(limit) = inline_limit {
        builder = builder.inline_limit(Some(limit));
    }
    if layered {
        // A pass-through layer: each call goes through a layered service, not its handler
        // directly.
        builder = builder.layer(dep2p_runtime::tower_layer::Identity::new());
    }
    if let Some(limit) = limit {
        // That many streams need small stream windows for a connection window that holds
        // them all (the node refuses one that streams nobody reads could fill).
        let window = 16 * 1024;
        builder = builder
            .max_concurrent_calls(limit as usize)
            .max_concurrent_streams(limit)
            .stream_window(window)
            .connection_window(limit.saturating_mul(2 * window));
    }
    let node = builder.bind(addr).await.expect("bind the dep2p server");
    let (addr, id) = (node.local_addr(), node.id().to_string());
    (node, addr, id)
}

/// A client node with one connection to the server.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    _node: Node,
    bench: BenchClient,
}

async fn client_node_with(fast_loopback: bool, layered: bool) -> Node {
    let builder = Node::builder().fast_loopback(fast_loopback);
    let builder = if layered {
        builder.client_layer(NoopLayer)
    } else {
        builder
    };
    builder
        .bind("127.0.0.1:0")
        .await
        .expect("bind the dep2p client")
}

fn parse_id(id: &str) -> NodeId {
    id.parse().expect("the server printed a valid node id")
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr, id: &str, layered: bool) -> Client {
        Client::connect_with(addr, id, true, layered).await
    }

    /// As [`connect`](Self::connect), with the client node's `fast_loopback` setting.
    pub(crate) async fn connect_with(
        addr: SocketAddr,
        id: &str,
        fast_loopback: bool,
        layered: bool,
    ) -> Client {
        let node = client_node_with(fast_loopback, layered).await;
        let conn = node
            .connect(addr, parse_id(id))
            .await
            .expect("connect to the dep2p server");
        Client {
            _node: node,
            bench: BenchClient::new(conn),
        }
    }

    /// `calls` sequential echo calls of `size` bytes, numbered from `first`; each call's
    /// duration goes to `samples` (which must have room, so recording allocates nothing).
    pub(crate) async fn echo_sequential(
        &self,
        first: u64,
        calls: usize,
        size: usize,
        mut samples: Option<&mut Vec<u64>>,
    ) {
        for i in first..first + calls as u64 {
            let start = Instant::now();
            let reply = self
                .bench
                .echo(ByteBuf::from(work::payload(i, size)))
                .await
                .expect("echo call");
            let took = start.elapsed();
            assert!(
                work::is_payload(&reply, i, size),
                "echo {i} came back wrong"
            );
            if let Some(samples) = samples.as_deref_mut() {
                samples.push(took.as_nanos() as u64);
            }
        }
    }

    /// `calls` echo calls made by `callers` tasks sharing the connection.
    pub(crate) async fn echo_concurrent(
        &self,
        callers: usize,
        calls: usize,
        size: usize,
    ) -> Duration {
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<JoinHandle<()>> = (0..callers)
            .map(|_| {
                let bench = self.bench.clone();
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= calls {
                            break;
                        }
                        let i = i as u64;
                        let reply = bench
                            .echo(ByteBuf::from(work::payload(i, size)))
                            .await
                            .expect("echo call");
                        assert!(
                            work::is_payload(&reply, i, size),
                            "echo {i} came back wrong"
                        );
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("caller task");
        }
        start.elapsed()
    }

    /// One server-streaming call of `count` messages of `size` bytes.
    pub(crate) async fn download(&self, count: usize, size: usize) -> Duration {
        let count32 = u32::try_from(count).expect("message count fits in u32");
        let size32 = u32::try_from(size).expect("message size fits in u32");
        let start = Instant::now();
        let (mut messages, response) = self
            .bench
            .download(count32, size32)
            .await
            .expect("start download");
        let mut n = 0u64;
        while let Some(msg) = messages.next().await {
            let msg = msg.expect("download message");
            assert!(
                work::looks_like_payload(&msg, n, size),
                "message {n} came wrong"
            );
            n += 1;
        }
        let sent = response
            .await
            .expect("download result")
            .expect("download handler");
        let took = start.elapsed();
        assert_eq!(
            (n, sent),
            (count as u64, count as u64),
            "messages received, sent"
        );
        took
    }

    /// One client-streaming call of `total` bytes in `size`-byte messages.
    pub(crate) async fn upload(&self, total: usize, size: usize) -> Duration {
        assert_eq!(total % size, 0, "upload size is a multiple of message size");
        let start = Instant::now();
        let (mut chunks, response) = self.bench.upload().await.expect("start upload");
        for i in 0..(total / size) as u64 {
            chunks
                .send(ByteBuf::from(work::payload(i, size)))
                .await
                .expect("upload message");
        }
        chunks.finish().expect("finish upload");
        let received = response
            .await
            .expect("upload result")
            .expect("upload handler");
        let took = start.elapsed();
        assert_eq!(received, total as u64, "bytes the server counted");
        took
    }

    /// `trips` round trips on one bidirectional call; each one's duration goes to `samples`.
    pub(crate) async fn ping_pong(&self, trips: usize, size: usize, samples: &mut Vec<u64>) {
        let (mut pings, mut pongs, response) =
            self.bench.ping_pong().await.expect("start ping-pong");
        for i in 0..trips as u64 {
            let start = Instant::now();
            pings
                .send(ByteBuf::from(work::payload(i, size)))
                .await
                .expect("send ping");
            let pong = pongs
                .next()
                .await
                .expect("a pong for every ping")
                .expect("receive pong");
            samples.push(start.elapsed().as_nanos() as u64);
            assert!(work::is_payload(&pong, i, size), "pong {i} came back wrong");
        }
        pings.finish().expect("finish pings");
        assert!(pongs.next().await.is_none(), "no pong after the last ping");
        let n = response
            .await
            .expect("ping-pong result")
            .expect("ping-pong handler");
        assert_eq!(n, trips as u64, "round trips the server counted");
    }

    /// Starts `n` calls that the server holds until released; the task ends once all have
    /// returned their tokens.
    pub(crate) fn start_holds(&self, n: usize) -> JoinHandle<()> {
        let bench = self.bench.clone();
        tokio::spawn(async move {
            let mut calls: FuturesUnordered<_> = (0..n as u64)
                .map(|token| {
                    let call = bench.hold(token);
                    async move { (token, call.await) }
                })
                .collect();
            let mut returned = 0;
            while let Some((token, reply)) = calls.next().await {
                assert_eq!(reply.expect("held call"), token, "held call's token");
                returned += 1;
            }
            assert_eq!(returned, n, "held calls returned");
        })
    }
}

/// Connections kept open (and idle) until dropped.
#[derive(Debug)]
pub(crate) struct Idle {
    _conns: Vec<(Node, Connection)>,
}

/// Opens `n` connections, each from a client node of its own (a node keeps one connection
/// per peer), checking each with one echo call.
pub(crate) async fn open_idle(
    addr: SocketAddr,
    id: &str,
    n: usize,
    size: usize,
    layered: bool,
) -> Idle {
    let id = parse_id(id);
    let conns: Vec<(Node, Connection)> = futures::stream::iter(0..n as u64)
        .map(|i| async move {
            let node = client_node_with(true, layered).await;
            let conn = node.connect(addr, id).await.expect("connect");
            let bench = BenchClient::new(conn.clone());
            let reply = bench
                .echo(ByteBuf::from(work::payload(i, size)))
                .await
                .expect("echo on a new connection");
            assert!(
                work::is_payload(&reply, i, size),
                "echo {i} came back wrong"
            );
            (node, conn)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    Idle { _conns: conns }
}
