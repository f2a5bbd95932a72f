//! Retries through a `Peer`: calls that provably never reached a handler are tried again, all
//! within the call's one deadline; a call that reached its handler never runs twice, unless it
//! is idempotent and its connection failed before any answer. No call is retried once
//! answered.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dep2p_runtime::{service, CallContext, Error, Node, Peer, RetryPolicy};
use tokio::sync::Notify;

#[service]
pub trait Counted {
    /// Counts the call, then waits until released.
    async fn hold(&self) -> u32;
    /// Counts the call.
    async fn count(&self) -> u32;
    /// Counts the call, then closes the connection it came on before answering.
    async fn count_and_drop(&self) -> u32;
    /// Counts the call; the first one closes the connection it came on before answering.
    #[idempotent]
    async fn drop_first(&self) -> u32;
    /// Counts the call, then answers with an application error.
    #[idempotent]
    async fn fail(&self) -> Result<u32, String>;
    /// Counts the call, then panics.
    #[idempotent]
    async fn crash(&self) -> u32;
}

#[derive(Default)]
struct Counts {
    hold: AtomicU32,
    count: AtomicU32,
    dropped: AtomicU32,
    drop_first: AtomicU32,
    failed: AtomicU32,
    crashed: AtomicU32,
    release: Notify,
}

struct Counter(Arc<Counts>);

impl Counted for Counter {
    async fn hold(&self) -> u32 {
        let n = self.0.hold.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.release.notified().await;
        n
    }

    async fn count(&self) -> u32 {
        self.0.count.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn count_and_drop(&self) -> u32 {
        let n = self.0.dropped.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(ctx) = CallContext::current() {
            ctx.connection().close();
        }
        std::future::pending::<()>().await;
        n
    }

    async fn drop_first(&self) -> u32 {
        let n = self.0.drop_first.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            if let Some(ctx) = CallContext::current() {
                ctx.connection().close();
            }
            std::future::pending::<()>().await;
        }
        n
    }

    async fn fail(&self) -> Result<u32, String> {
        let n = self.0.failed.fetch_add(1, Ordering::SeqCst) + 1;
        Err(format!("failure {n}"))
    }

    async fn crash(&self) -> u32 {
        let n = self.0.crashed.fetch_add(1, Ordering::SeqCst) + 1;
        if n > 0 {
            panic!("crash {n}");
        }
        n
    }
}

/// A policy that would retry many times.
fn generous() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(100)
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .budget(1_000, 0.1)
}

/// A server that takes one call at a time per connection, and a peer of it.
async fn setup() -> (Node, Node, Peer, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let server = Node::builder()
        .max_concurrent_calls(1)
        .serve(CountedServer::new(Counter(Arc::clone(&counts))))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Node::builder().bind("127.0.0.1:0").await.unwrap();
    let peer = client.peer(server.node_addr());
    (server, client, peer, counts)
}

/// Occupies the server's only place with a `hold` call.
async fn occupy(peer: &Peer, counts: &Counts) -> tokio::task::JoinHandle<Result<u32, Error>> {
    let holder = CountedClient::new(peer.clone());
    let held = tokio::spawn(async move { holder.hold().timeout(Duration::from_secs(5)).await });
    let started = Instant::now();
    while counts.hold.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "hold never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held
}

#[tokio::test]
async fn a_refused_call_is_retried_until_served_and_runs_once() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(
        RetryPolicy::default()
            .max_attempts(100)
            .backoff(Duration::from_millis(10), Duration::from_millis(40))
            .budget(1_000, 0.1),
    );
    let held = occupy(&peer, &counts).await;
    let releaser = Arc::clone(&counts);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        releaser.release.notify_waiters();
    });
    let client = CountedClient::new(peer.clone());
    let n = client
        .count()
        .timeout(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        counts.count.load(Ordering::SeqCst),
        1,
        "the handler ran more than once"
    );
    assert_eq!(held.await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn without_retries_the_refusal_is_the_answer() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(RetryPolicy::never());
    let _held = occupy(&peer, &counts).await;
    let err = CountedClient::new(peer.clone()).count().await.unwrap_err();
    assert!(matches!(err, Error::Overloaded(_)), "{err:?}");
    assert_eq!(counts.count.load(Ordering::SeqCst), 0);
    counts.release.notify_waiters();
}

#[tokio::test]
async fn the_default_policy_gives_up_after_three_attempts() {
    let (_server, _client, peer, counts) = setup().await;
    let _held = occupy(&peer, &counts).await;
    let started = Instant::now();
    let err = CountedClient::new(peer.clone()).count().await.unwrap_err();
    assert!(matches!(err, Error::Overloaded(_)), "{err:?}");
    // Two backoffs of at most 20 ms and 40 ms, plus three round trips.
    assert!(started.elapsed() < Duration::from_secs(1));
    counts.release.notify_waiters();
}

#[tokio::test]
async fn one_deadline_spans_every_attempt() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(
        RetryPolicy::default()
            .max_attempts(1_000)
            .backoff(Duration::from_millis(10), Duration::from_millis(20))
            .budget(100_000, 0.1),
    );
    let _held = occupy(&peer, &counts).await;
    let started = Instant::now();
    let err = CountedClient::new(peer.clone())
        .count()
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(counts.count.load(Ordering::SeqCst), 0);
    counts.release.notify_waiters();
}

#[tokio::test]
async fn a_call_that_reached_its_handler_is_never_retried() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(RetryPolicy::default().max_attempts(100).budget(1_000, 0.1));
    let client = CountedClient::new(peer.clone());
    let err = client
        .count_and_drop()
        .timeout(Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(err.is_connection_error(), "{err:?}");
    // The peer redials and serves the next call, but the lost one was not sent again.
    assert_eq!(client.count().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        counts.dropped.load(Ordering::SeqCst),
        1,
        "the handler ran twice"
    );
}

#[tokio::test]
async fn a_call_that_reached_its_handler_fails_with_connection_lost_and_ran_once() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(generous());
    let err = CountedClient::new(peer.clone())
        .count_and_drop()
        .timeout(Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counts.dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_idempotent_call_whose_connection_is_lost_is_retried_and_succeeds() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(generous());
    let started = Instant::now();
    let n = CountedClient::new(peer.clone())
        .drop_first()
        .timeout(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(n, 2, "the answer came from the second run");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(counts.drop_first.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_call_marked_idempotent_by_its_caller_is_retried_within_the_policys_attempts() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(generous().max_attempts(3));
    // Every run loses the connection: three attempts, then the last failure is the answer.
    let err = CountedClient::new(peer.clone())
        .count_and_drop()
        .idempotent()
        .timeout(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counts.dropped.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_idempotent_call_is_never_retried_after_an_answer() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(generous());
    let client = CountedClient::new(peer.clone());
    let failed = client.fail().await.unwrap();
    assert_eq!(failed, Err("failure 1".to_string()));
    let err = client.crash().await.unwrap_err();
    assert!(matches!(err, Error::HandlerFailed(_)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counts.failed.load(Ordering::SeqCst), 1);
    assert_eq!(counts.crashed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_idempotent_call_is_never_retried_after_its_deadline() {
    let (_server, _client, peer, counts) = setup().await;
    peer.set_retry_policy(generous());
    let _held = occupy(&peer, &counts).await;
    // The only place is taken until the deadline: refused, retried, then out of time.
    let err = CountedClient::new(peer.clone())
        .count()
        .idempotent()
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    counts.release.notify_waiters();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counts.count.load(Ordering::SeqCst), 0);
}
