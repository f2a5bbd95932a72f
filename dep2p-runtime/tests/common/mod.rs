//! A service written by hand against the runtime API (what `#[service]` generates), and
//! helpers to start nodes on loopback.
#![allow(dead_code, unreachable_pub)]

pub mod raw;
pub mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dep2p_runtime::{
    Bidi, CallContext, CallFuture, ClientStreaming, Connection, IncomingCall, Node, NodeBuilder,
    Notify, Receiver, Sender, ServerStreaming, Service, Unary,
};
use futures::StreamExt;
use tokio::sync::{mpsc, Notify as TokioNotify};

/// What the test service's handlers report to the test.
#[derive(Default)]
pub struct Probe {
    /// Handlers that started and have not yet finished or been dropped.
    pub running: AtomicUsize,
    /// Handlers dropped before finishing (cancelled).
    pub cancelled: AtomicUsize,
    /// Notifications received.
    pub notes: Option<mpsc::UnboundedSender<String>>,
    /// Released by tests to let `hold` handlers finish.
    pub release: TokioNotify,
    /// Bytes of items `flood` handlers have queued.
    pub sent: AtomicUsize,
    /// Ids of the `slow_note` notifications whose handler ran.
    pub handled: std::sync::Mutex<Vec<u32>>,
    /// `block` handlers blocking their thread now, and the most there were at once.
    pub blocking: AtomicUsize,
    pub most_blocking: AtomicUsize,
}

/// Counts a handler as running until dropped; counts it as cancelled unless `done`.
pub struct Running {
    probe: Arc<Probe>,
    pub done: bool,
}

impl Running {
    pub fn new(probe: &Arc<Probe>) -> Self {
        probe.running.fetch_add(1, Ordering::SeqCst);
        Running {
            probe: Arc::clone(probe),
            done: false,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.probe.running.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.probe.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The test service, "Test".
#[derive(Clone)]
pub struct TestService {
    pub probe: Arc<Probe>,
}

pub const SERVICE: &str = "Test";

impl Service for TestService {
    fn name(&self) -> &str {
        SERVICE
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        let probe = Arc::clone(&self.probe);
        match call.method() {
            "echo" => call.unary(|(s,): (String,)| async move { s }),
            "add" => call.unary(|(a, b): (i64, i64)| async move {
                a.checked_add(b).ok_or_else(|| "overflow".to_string())
            }),
            "whoami" => call.unary(|(): ()| async move {
                let ctx = CallContext::current().expect("inside a handler");
                (
                    ctx.remote_id().to_string(),
                    ctx.metadata("k").map(str::to_string),
                    ctx.deadline().is_some(),
                )
            }),
            "panic" => call.unary(|(): ()| async move {
                if true {
                    panic!("boom");
                }
                0u8
            }),
            "sleep" => call.unary(move |(ms,): (u64,)| async move {
                let mut guard = Running::new(&probe);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                guard.done = true;
                ms
            }),
            "hold" => call.unary(move |(): ()| async move {
                let mut guard = Running::new(&probe);
                probe.release.notified().await;
                guard.done = true;
            }),
            "block" => call.unary(move |(ms,): (u64,)| async move {
                // Blocks its thread, without a wait, as a handler that computes does.
                let now = probe.blocking.fetch_add(1, Ordering::SeqCst) + 1;
                probe.most_blocking.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(ms));
                probe.blocking.fetch_sub(1, Ordering::SeqCst);
                ms
            }),
            "bytes" => call.unary(|(n,): (usize,)| async move { vec![7u8; n] }),
            "note" => call.notify(move |(s,): (String,)| async move {
                if let Some(tx) = &probe.notes {
                    let _ = tx.send(s);
                }
            }),
            "count" => call.server_stream(move |(n,): (u32,), mut out: Sender<u32>| async move {
                let mut guard = Running::new(&probe);
                for i in 0..n {
                    if let Err(e) = out.send(i).await {
                        return Err(e.to_string());
                    }
                }
                guard.done = true;
                Ok::<u32, String>(n)
            }),
            "count_fail" => call.server_stream(|(n,): (u32,), mut out: Sender<u32>| async move {
                if n == u32::MAX {
                    return;
                }
                for i in 0..n {
                    let _ = out.send(i).await;
                }
                panic!("failed after {n}");
            }),
            "sum" => call.client_stream(move |(base,): (u64,), mut rx: Receiver<u64>| async move {
                let mut guard = Running::new(&probe);
                let mut total = base;
                while let Some(item) = rx.next().await {
                    match item {
                        Ok(v) => total += v,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                guard.done = true;
                Ok::<u64, String>(total)
            }),
            "upper" => {
                call.bidi(
                    move |(prefix,): (String,),
                          mut rx: Receiver<String>,
                          mut out: Sender<String>| async move {
                        let mut guard = Running::new(&probe);
                        let mut n = 0u32;
                        while let Some(item) = rx.next().await {
                            let Ok(s) = item else {
                                return Err("input failed".to_string());
                            };
                            if out
                                .send(format!("{prefix}{}", s.to_uppercase()))
                                .await
                                .is_err()
                            {
                                return Err("output failed".to_string());
                            }
                            n += 1;
                        }
                        guard.done = true;
                        Ok::<u32, String>(n)
                    },
                )
            }
            "stall" => call.client_stream(move |(): (), rx: Receiver<Vec<u8>>| async move {
                let mut guard = Running::new(&probe);
                probe.release.notified().await;
                drop(rx);
                guard.done = true;
            }),
            "flood" => call.server_stream(
                move |(size, n): (u32, u32), mut out: Sender<String>| async move {
                    // `n` items of `size` bytes; `u32::MAX` for as many as the caller takes.
                    let mut guard = Running::new(&probe);
                    let item = "x".repeat(size as usize);
                    let mut i = 0;
                    while n == u32::MAX || i < n {
                        if out.send(item.clone()).await.is_err() {
                            return;
                        }
                        probe.sent.fetch_add(item.len(), Ordering::SeqCst);
                        i += 1;
                    }
                    guard.done = true;
                },
            ),
            "ignore" => call.client_stream(move |(): (), rx: Receiver<String>| async move {
                // Holds the caller's stream without reading it.
                let mut guard = Running::new(&probe);
                probe.release.notified().await;
                drop(rx);
                guard.done = true;
            }),
            "slow_note" => call.notify(move |(id, ms): (u32, u64)| async move {
                probe
                    .handled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(id);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }),
            "pause_stream" => call.server_stream(move |(): (), out: Sender<u8>| async move {
                // Holds the stream open without sending anything.
                let mut guard = Running::new(&probe);
                probe.release.notified().await;
                drop(out);
                guard.done = true;
            }),
            _ => call.unknown_method(),
        }
    }
}

pub fn probe() -> Arc<Probe> {
    Arc::new(Probe::default())
}

pub async fn node(builder: NodeBuilder) -> Node {
    builder.bind("127.0.0.1:0").await.expect("bind")
}

/// A server serving the test service and a client connected to it.
pub async fn pair_with(server: NodeBuilder, probe: &Arc<Probe>) -> (Node, Node, Connection) {
    let server = node(server.serve(TestService {
        probe: Arc::clone(probe),
    }))
    .await;
    let client = node(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .expect("connect");
    (server, client, conn)
}

pub async fn pair(probe: &Arc<Probe>) -> (Node, Node, Connection) {
    pair_with(Node::builder(), probe).await
}

pub fn echo(conn: &Connection, s: &str) -> Unary<(String,), String> {
    Unary::new(conn, SERVICE, "echo", (s.to_string(),))
}

pub fn sleep(conn: &Connection, ms: u64) -> Unary<(u64,), u64> {
    Unary::new(conn, SERVICE, "sleep", (ms,))
}

/// A call whose handler blocks its thread for `ms` milliseconds before it returns.
pub fn block(conn: &Connection, ms: u64) -> Unary<(u64,), u64> {
    Unary::new(conn, SERVICE, "block", (ms,))
}

pub fn hold(conn: &Connection) -> Unary<(), ()> {
    Unary::new(conn, SERVICE, "hold", ())
}

pub fn note(conn: &Connection, s: &str) -> Notify<(String,)> {
    Notify::new(conn, SERVICE, "note", (s.to_string(),))
}

/// `n` items of `size` bytes (`u32::MAX`: until the caller stops reading).
pub fn flood(conn: &Connection, size: u32, n: u32) -> ServerStreaming<(u32, u32), String, ()> {
    ServerStreaming::new(conn, SERVICE, "flood", (size, n))
}

/// A client stream whose handler never reads it.
pub fn ignore(conn: &Connection) -> ClientStreaming<(), String, ()> {
    ClientStreaming::new(conn, SERVICE, "ignore", ())
}

/// A notification whose handler records `id`, then sleeps `ms` milliseconds.
pub fn slow_note(conn: &Connection, id: u32, ms: u64) -> Notify<(u32, u64)> {
    Notify::new(conn, SERVICE, "slow_note", (id, ms))
}

pub fn count(conn: &Connection, n: u32) -> ServerStreaming<(u32,), u32, Result<u32, String>> {
    ServerStreaming::new(conn, SERVICE, "count", (n,))
}

pub fn sum(conn: &Connection, base: u64) -> ClientStreaming<(u64,), u64, Result<u64, String>> {
    ClientStreaming::new(conn, SERVICE, "sum", (base,))
}

pub fn upper(
    conn: &Connection,
    prefix: &str,
) -> Bidi<(String,), String, String, Result<u32, String>> {
    Bidi::new(conn, SERVICE, "upper", (prefix.to_string(),))
}

/// Waits until `cond` holds, for up to five seconds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
