//! A bounded soak: thousands of calls of every kind, with random cancellations, deadlines and
//! early drops, on one connection, then a check that nothing was left behind — no handler
//! running, no task alive beyond the idle baseline, no heap growth beyond a small slack.

mod common;

use std::alloc::System;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use dep2p_runtime::{Bidi, ClientStreaming, Connection, ServerStreaming};
use futures::StreamExt;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes on the heap now.
fn live_bytes() -> isize {
    let stats = ALLOCATOR.stats();
    // Reallocations are already counted in both (growth as allocated, shrinking as freed).
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

/// A small deterministic generator: the soak is the same on every run.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// One random call; it may be cut short by a deadline or dropped part-way.
async fn one_call(conn: &Connection, dice: &mut Dice) {
    let patience = Duration::from_millis(1 + dice.roll(20));
    match dice.roll(7) {
        0 => {
            let _ = echo(conn, "soak").await;
        }
        1 => {
            // A deadline that often passes while the handler sleeps.
            let _ = sleep(conn, dice.roll(15))
                .timeout(Duration::from_millis(1 + dice.roll(10)))
                .await;
        }
        2 => {
            // Dropped mid-flight: the handler is cancelled.
            let _ = tokio::time::timeout(patience, sleep(conn, 50)).await;
        }
        3 => {
            let _ = note(conn, "soak").await;
        }
        4 => {
            let n = dice.roll(50) as u32;
            let call: ServerStreaming<(u32,), u32, Result<u32, String>> =
                ServerStreaming::new(conn, SERVICE, "count", (n,));
            if let Ok((rx, result)) = call.await {
                let take = dice.roll(60) as usize;
                let read: Vec<_> = rx.take(take).collect().await;
                if read.len() as u32 >= n {
                    let _ = result.await;
                }
            }
        }
        5 => {
            let call: ClientStreaming<(u64,), u64, Result<u64, String>> =
                ClientStreaming::new(conn, SERVICE, "sum", (1,));
            if let Ok((mut tx, result)) = call.await {
                for i in 0..dice.roll(20) {
                    if tx.send(i).await.is_err() {
                        break;
                    }
                }
                if dice.roll(2) == 0 {
                    let _ = tx.finish();
                    let _ = tokio::time::timeout(patience, result).await;
                }
                // Otherwise the dropped sender aborts the upload.
            }
        }
        _ => {
            let call: Bidi<(String,), String, String, Result<u32, String>> =
                Bidi::new(conn, SERVICE, "upper", ("> ".into(),));
            if let Ok((mut tx, mut rx, result)) = call.await {
                for _ in 0..dice.roll(5) {
                    if tx.send("x".into()).await.is_err() || rx.next().await.is_none() {
                        break;
                    }
                }
                let _ = tx.finish();
                if dice.roll(2) == 0 {
                    while rx.next().await.is_some() {}
                    let _ = result.await;
                }
            }
        }
    }
}

async fn round(conn: &Connection, seed: u64, calls: usize) {
    let mut dice = Dice(seed);
    for _ in 0..calls {
        one_call(conn, &mut dice).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_of_every_kind_leaves_nothing_behind() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let runtime = tokio::runtime::Handle::current();

    // Warm up: connection state, buffers and pools reach their working size.
    let warm: Vec<_> = (0..8)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move { round(&conn, 1 + i, 60).await })
        })
        .collect();
    for task in warm {
        task.await.unwrap();
    }
    eventually("handlers of the warm-up end", || {
        probe.running.load(Ordering::SeqCst) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tasks_before = runtime.metrics().num_alive_tasks();
    let heap_before = live_bytes();

    // The soak: 8 concurrent callers, bounded in calls and in time.
    let started = Instant::now();
    let soak: Vec<_> = (0..8)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut dice = Dice(1_000 + i);
                let mut calls = 0;
                while calls < 400 && started.elapsed() < Duration::from_secs(8) {
                    one_call(&conn, &mut dice).await;
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut total = 0;
    for task in soak {
        total += task.await.unwrap();
    }
    assert!(total >= 400, "the soak made {total} calls");

    eventually("every handler ends", || {
        probe.running.load(Ordering::SeqCst) == 0
    })
    .await;
    // Tasks of cancelled calls and stream writers wind down shortly after their calls.
    let deadline = Instant::now() + Duration::from_secs(5);
    while runtime.metrics().num_alive_tasks() > tasks_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tasks_after = runtime.metrics().num_alive_tasks();
    assert!(
        tasks_after <= tasks_before,
        "{tasks_after} tasks alive after the soak, {tasks_before} before"
    );
    let growth = live_bytes() - heap_before;
    eprintln!(
        "soak: {total} calls in {:?}; tasks {tasks_before} -> {tasks_after}; heap {growth:+} bytes",
        started.elapsed()
    );
    assert!(
        growth < 256 << 10,
        "the heap grew by {growth} bytes over {total} calls"
    );
    still_serves(&conn).await;
}

async fn still_serves(conn: &Connection) {
    assert_eq!(echo(conn, "alive").await.unwrap(), "alive");
}
