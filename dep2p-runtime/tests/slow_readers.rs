//! Slow readers and floods: streams nobody reads never stall the other calls of their
//! connection, and a notification the sender saw succeed is always handled.

mod common;

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dep2p_runtime::{Error, Node};
use futures::{StreamExt, TryStreamExt};

/// Calls held unread: as many as is safe with the default `max_concurrent_streams` of 128,
/// 7/8 of it less one. quinn returns a peer's stream credit in batches of an eighth of the
/// limit, so the calls that remain must be more than an eighth for credit to flow.
const STREAMS: usize = 128 - 128 / 8 - 1;

/// Size of each flooding item.
const ITEM: u32 = 64 * 1024;

/// The default stream window: what each unread stream holds.
const WINDOW: usize = 512 * 1024;

/// Time allowed for a call that should complete at once.
const PROMPT: Duration = Duration::from_secs(3);

/// Waits until `sent` stops growing for a while: every flooding sender is held by flow
/// control.
async fn until_quiet(sent: &AtomicUsize) {
    let mut last = sent.load(Ordering::SeqCst);
    let mut still = 0;
    let start = std::time::Instant::now();
    while still < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the flooding senders never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = sent.load(Ordering::SeqCst);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

/// Unary, server-streaming (more than a stream window's worth, read to its end) and
/// client-streaming calls on `conn` complete promptly.
async fn other_calls_work(conn: &dep2p_runtime::Connection) {
    let echoed = tokio::time::timeout(PROMPT, echo(conn, "still here").into_future())
        .await
        .expect("a unary call stalled behind unread streams")
        .unwrap();
    assert_eq!(echoed, "still here");

    let bulk = async {
        let (rx, done) = flood(conn, ITEM, 64).await?;
        let items: Vec<String> = rx.try_collect().await?;
        done.await?;
        Ok::<_, Error>(items.len())
    };
    let items = tokio::time::timeout(PROMPT, bulk)
        .await
        .expect("a 4 MiB server stream stalled behind unread streams")
        .unwrap();
    assert_eq!(items, 64);

    let upload = async {
        let (mut tx, total) = sum(conn, 1).await?;
        for i in 0..100 {
            tx.send(i).await?;
        }
        tx.finish()?;
        total.await
    };
    let total = tokio::time::timeout(PROMPT, upload)
        .await
        .expect("a client stream stalled behind unread streams")
        .unwrap();
    assert_eq!(total, Ok(1 + 4950));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_server_streams_leave_room_for_other_calls() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    // Server-streaming calls whose handlers send without end, and whose receivers the caller
    // holds without reading: each fills its stream's window.
    let mut held = Vec::new();
    for _ in 0..STREAMS {
        held.push(flood(&conn, ITEM, u32::MAX).await.unwrap());
    }
    eventually("every flooding handler to run", || {
        probe.running.load(Ordering::SeqCst) == STREAMS
    })
    .await;
    until_quiet(&probe.sent).await;
    // Each handler sent at least its stream's window; the rest waits in its queue.
    assert!(probe.sent.load(Ordering::SeqCst) >= STREAMS * WINDOW);

    other_calls_work(&conn).await;

    // Reading one of the held streams still works.
    let (rx, _) = &mut held[0];
    let item = tokio::time::timeout(PROMPT, rx.next())
        .await
        .expect("a held stream stalled")
        .unwrap()
        .unwrap();
    assert_eq!(item.len(), ITEM as usize);
    drop(held);
    eventually("the flooding handlers to be cancelled", || {
        probe.running.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_client_streams_leave_room_for_other_calls() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    // Client-streaming calls whose handlers never read, and whose callers send without end.
    let sent = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..STREAMS {
        let (mut tx, done) = ignore(&conn).await.unwrap();
        let sent = Arc::clone(&sent);
        senders.push(tokio::spawn(async move {
            let item = "y".repeat(ITEM as usize);
            while tx.send(item.clone()).await.is_ok() {
                sent.fetch_add(item.len(), Ordering::SeqCst);
            }
            drop(done);
        }));
    }
    eventually("every ignoring handler to run", || {
        probe.running.load(Ordering::SeqCst) == STREAMS
    })
    .await;
    until_quiet(&sent).await;
    assert!(sent.load(Ordering::SeqCst) >= STREAMS * WINDOW);

    other_calls_work(&conn).await;

    for sender in &senders {
        sender.abort();
    }
    probe.release.notify_waiters();
}

/// Sends `count` notifications at once, each with `timeout` if given, to a handler that
/// sleeps 1 ms on a server running at most `limit` calls; returns the ids whose send succeeded
/// and the ids handled.
async fn flood_notifications(
    limit: usize,
    count: u32,
    timeout: Option<Duration>,
) -> (HashSet<u32>, HashSet<u32>) {
    let probe = probe();
    let (_server, _client, conn) =
        pair_with(Node::builder().max_concurrent_calls(limit), &probe).await;
    let sends: Vec<_> = (0..count)
        .map(|id| {
            let mut note = slow_note(&conn, id, 1);
            if let Some(timeout) = timeout {
                note = note.timeout(timeout);
            }
            tokio::spawn(async move { (id, note.await) })
        })
        .collect();
    let mut succeeded = HashSet::new();
    for send in sends {
        let (id, result) = send.await.unwrap();
        match result {
            Ok(()) => {
                succeeded.insert(id);
            }
            Err(err) => assert!(err.is_timeout(), "notification {id} failed: {err:?}"),
        }
    }
    let handled = |probe: &Probe| -> HashSet<u32> {
        let ids = probe.handled.lock().unwrap();
        ids.iter().copied().collect()
    };
    eventually("every notification that was sent to be handled", || {
        handled(&probe).is_superset(&succeeded)
    })
    .await;
    // Sleep past any stragglers: nothing is handled twice.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ids = probe.handled.lock().unwrap().clone();
    let unique: HashSet<u32> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "a notification was handled twice");
    (succeeded, unique)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_flood_waits_for_a_slow_handler() {
    let (succeeded, handled) = flood_notifications(4, 2000, None).await;
    // Nothing timed out: the flood was held back, not refused.
    assert_eq!(succeeded.len(), 2000);
    assert_eq!(handled, succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_that_cannot_be_taken_fail_on_the_sender() {
    // Too short a deadline to wait for a place behind 2,000 notifications handled one at a
    // time: some fail with a timeout on the sender; every one that did not was handled.
    let (succeeded, handled) = flood_notifications(1, 2000, Some(Duration::from_millis(150))).await;
    assert!(succeeded.len() < 2000, "no notification had to wait");
    assert!(
        handled.is_superset(&succeeded),
        "{} notifications sent but never handled",
        succeeded.difference(&handled).count()
    );
}

#[tokio::test]
async fn windows_that_unread_streams_could_fill_are_refused() {
    let bind = |builder: dep2p_runtime::NodeBuilder| async move {
        builder.bind("127.0.0.1:0").await.map(drop)
    };
    // More streams, or larger stream windows, than the default connection window holds.
    let more_streams = bind(Node::builder().max_concurrent_streams(256)).await;
    assert!(
        matches!(more_streams, Err(Error::Config(_))),
        "{more_streams:?}"
    );
    let larger = bind(Node::builder().stream_window(1024 * 1024)).await;
    assert!(matches!(larger, Err(Error::Config(_))), "{larger:?}");
    // Unread streams would leave less than an eighth of the window.
    let tight = Node::builder()
        .max_concurrent_streams(64)
        .stream_window(64 * 1024)
        .connection_window(64 * 64 * 1024 + 256 * 1024);
    assert!(matches!(bind(tight).await, Err(Error::Config(_))));
    // Fewer streams, or a larger connection window, make room.
    bind(
        Node::builder()
            .max_concurrent_streams(256)
            .stream_window(256 * 1024),
    )
    .await
    .unwrap();
    bind(
        Node::builder()
            .stream_window(1024 * 1024)
            .connection_window(160 * 1024 * 1024),
    )
    .await
    .unwrap();
}
