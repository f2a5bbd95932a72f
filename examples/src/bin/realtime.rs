//! Real-time updates over a lossy path: 60 position updates a second, sent once as
//! `#[datagram]` calls and once as a `#[server_stream]`, through a small UDP proxy that drops
//! and delays packets. The receiver prints the age of the updates for both: median and 99th
//! percentile.
//!
//! A stream is reliable and ordered: a lost packet is sent again, and every update behind it
//! waits (head-of-line blocking). A datagram is neither: a lost one is gone, a late one does
//! not hold up the others, and the receiver keeps only the newest.
//!
//! Both nodes run in this process, so the age printed is measured with one clock: from the
//! moment the sender built the update to the moment the receiver's handler saw it. The
//! runtime's own estimate for datagrams (`DatagramContext::age`, which cannot share a clock
//! with the sender) is printed next to it.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p dep2p-examples --bin realtime
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dep2p_runtime::{service, DatagramContext, Node, Sender};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Updates a second.
const RATE: u32 = 60;
/// Updates sent each way.
const COUNT: u32 = 150;
/// The proxy drops this share of packets, in each direction.
const LOSS: f64 = 0.05;
/// The proxy delays each packet by this much, plus up to `JITTER`.
const DELAY: Duration = Duration::from_millis(15);
const JITTER: Duration = Duration::from_millis(10);

/// One position update, with the instant it was built (microseconds from the process's
/// start: both nodes are in this process, so they share the clock).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Update {
    pub index: u32,
    pub built_us: u64,
    pub x: f32,
    pub y: f32,
}

/// The receiving side: takes updates as datagrams.
#[service]
pub trait Tracker {
    /// One update; lost or late ones are simply not seen.
    #[datagram]
    async fn position(&self, update: Update);
}

/// The sending side: streams updates to whoever asks.
#[service]
pub trait Feed {
    /// `count` updates at `rate` a second, reliably and in order.
    #[server_stream]
    async fn positions(&self, rate: u32, count: u32, out: Sender<Update>);
}

fn clock() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    clock().elapsed().as_micros() as u64
}

fn update(index: u32) -> Update {
    let t = index as f32 / RATE as f32;
    Update {
        index,
        built_us: now_us(),
        x: t.cos(),
        y: t.sin(),
    }
}

/// What the tracker saw of one datagram.
struct Seen {
    index: u32,
    sequence: u64,
    age: Duration,
    estimate: Duration,
    newest: bool,
}

struct Receiving {
    seen: mpsc::UnboundedSender<Seen>,
}

impl Tracker for Receiving {
    async fn position(&self, update: Update) {
        let age = Duration::from_micros(now_us().saturating_sub(update.built_us));
        let ctx = DatagramContext::current().expect("in a datagram handler");
        let _ = self.seen.send(Seen {
            index: update.index,
            sequence: ctx.sequence(),
            age,
            estimate: ctx.age(),
            newest: ctx.is_newest(),
        });
    }
}

struct Sending;

impl Feed for Sending {
    async fn positions(&self, rate: u32, count: u32, mut out: Sender<Update>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        for index in 0..count {
            tick.tick().await;
            if out.send(update(index)).await.is_err() {
                return;
            }
        }
    }
}

/// A UDP proxy between one client and `server`: drops `LOSS` of the packets each way and
/// delays the others by `DELAY` plus up to `JITTER` (so some overtake others). Returns its
/// address.
async fn lossy_proxy(server: SocketAddr) -> std::io::Result<SocketAddr> {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        // A fixed seed: the same losses on every run.
        let mut random = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            (random >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let to = if from == server {
                match client {
                    Some(client) => client,
                    None => continue,
                }
            } else {
                client = Some(from);
                server
            };
            if next() < LOSS {
                continue;
            }
            let delay = DELAY + JITTER.mul_f64(next());
            let packet = buf[..len].to_vec();
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&packet, to).await;
            });
        }
    });
    Ok(addr)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn report(what: &str, mut ages: Vec<Duration>) {
    ages.sort();
    println!(
        "{what:<22} {:>4} updates   age median {:>6.1} ms   p99 {:>6.1} ms",
        ages.len(),
        percentile(&ages, 0.5).as_secs_f64() * 1e3,
        percentile(&ages, 0.99).as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    clock();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let tracker = Node::builder()
        .serve(TrackerServer::new(Receiving { seen: seen_tx }))
        .bind("127.0.0.1:0")
        .await?;
    let game = Node::builder()
        .serve(FeedServer::new(Sending))
        .bind("127.0.0.1:0")
        .await?;
    let proxy = lossy_proxy(tracker.local_addr()).await?;
    println!(
        "{COUNT} updates at {RATE}/s each way, through a proxy that drops {:.0}% of packets \
         and delays them {}-{} ms",
        LOSS * 100.0,
        DELAY.as_millis(),
        (DELAY + JITTER).as_millis()
    );
    let conn = game.connect(proxy, tracker.id()).await?;

    // 1. Datagrams, game to tracker.
    let client = TrackerClient::new(conn.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    for index in 0..COUNT {
        tick.tick().await;
        client.position(update(index)).await?;
    }

    // 2. A server stream over the same connection, the tracker calling the game.
    let back = tracker
        .connections()
        .into_iter()
        .find(|c| c.remote_id() == game.id())
        .ok_or("no connection back to the game")?;
    let (mut updates, response) = FeedClient::new(back.clone()).positions(RATE, COUNT).await?;
    let mut streamed = Vec::new();
    while let Some(update) = updates.next().await {
        let update = update?;
        streamed.push((
            update.index,
            Duration::from_micros(now_us().saturating_sub(update.built_us)),
        ));
    }
    response.await?;
    // Every datagram still on its way has arrived by now, well past the proxy's delay.
    let mut datagrams = Vec::new();
    while let Ok(s) = seen.try_recv() {
        datagrams.push(s);
    }

    // Functional checks: each datagram handled once, with its exact sequence number; the
    // stream complete and in order.
    let indices: HashSet<u32> = datagrams.iter().map(|s| s.index).collect();
    assert_eq!(
        indices.len(),
        datagrams.len(),
        "a datagram was handled twice"
    );
    assert!(
        datagrams.iter().all(|s| s.sequence == u64::from(s.index)),
        "sequence numbers count the datagrams sent"
    );
    assert!(
        datagrams.len() as u32 > COUNT / 2,
        "most datagrams arrive: {}",
        datagrams.len()
    );
    let order: Vec<u32> = streamed.iter().map(|(index, _)| *index).collect();
    assert_eq!(
        order,
        (0..COUNT).collect::<Vec<_>>(),
        "the stream is complete and in order"
    );

    report(
        "#[datagram]",
        datagrams.iter().map(|s| s.age).collect::<Vec<_>>(),
    );
    report(
        "  (runtime's estimate)",
        datagrams.iter().map(|s| s.estimate).collect::<Vec<_>>(),
    );
    report(
        "#[server_stream]",
        streamed.iter().map(|(_, age)| *age).collect(),
    );
    let overtaken = datagrams.iter().filter(|s| !s.newest).count();
    println!(
        "datagrams: {} of {COUNT} arrived, {overtaken} overtaken by a newer one (a \
         newest-only receiver drops those)",
        datagrams.len()
    );
    let sent = conn.path_stats();
    let received = back.path_stats();
    println!(
        "path: rtt {:.1} ms, {:.1}% of the game's packets lost; datagrams sent {}, \
         dropped at the tracker {}",
        sent.rtt.as_secs_f64() * 1e3,
        sent.loss() * 100.0,
        sent.datagrams.sent,
        received.datagrams.dropped(),
    );
    assert_eq!(sent.datagrams.sent, u64::from(COUNT));
    assert_eq!(received.datagrams.handled, datagrams.len() as u64);
    Ok(())
}
