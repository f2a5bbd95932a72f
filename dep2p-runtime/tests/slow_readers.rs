//! Slow readers and floods: a notification the sender saw succeed is always handled.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use dep2p_runtime::Node;

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
