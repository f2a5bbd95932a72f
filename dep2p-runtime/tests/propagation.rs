//! Deadlines propagate: a call made inside a handler gets no more time than the handler has.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dep2p_runtime::{service, CallContext, Error, Node, NodeId};
use tokio::time::Instant;

#[service]
pub trait Slow {
    /// Sleeps for `ms` milliseconds, then answers.
    async fn wait(&self, ms: u64) -> u64;
}

#[service]
pub trait Front {
    /// Calls `Slow.wait(ms)` on the node `id` at `to` with the given timeout (none: the
    /// default), and records how it ended and after how long. A notification, so that only
    /// the handler's own deadline stops the handler (a caller's cancel is not raced).
    #[notify]
    async fn relay(&self, to: SocketAddr, id: String, ms: u64, timeout_ms: Option<u64>);
}

/// What the slow node saw: the time its handler had left when it started.
#[derive(Default)]
struct Seen {
    left: Mutex<Vec<Option<Duration>>>,
}

struct Sleeper(Arc<Seen>);

impl Slow for Sleeper {
    async fn wait(&self, ms: u64) -> u64 {
        let left = CallContext::current()
            .and_then(|ctx| ctx.deadline())
            .map(|at| at.saturating_duration_since(Instant::now()));
        self.0.left.lock().unwrap().push(left);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// How each inner call ended, and after how long.
type Outcomes = Arc<Mutex<Vec<(Result<u64, Error>, Duration)>>>;

/// Records the outcome of its inner calls as they end (the handler itself is stopped at its
/// deadline).
struct Relayer(Outcomes);

impl Front for Relayer {
    async fn relay(&self, to: SocketAddr, id: String, ms: u64, timeout_ms: Option<u64>) {
        let node = CallContext::current().and_then(|ctx| ctx.node()).unwrap();
        let id = id.parse::<NodeId>().unwrap();
        let started = Instant::now();
        let result = match node.connect(to, id).await {
            Ok(conn) => {
                let call = SlowClient::new(conn).wait(ms);
                match timeout_ms {
                    Some(t) => call.timeout(Duration::from_millis(t)).await,
                    None => call.await,
                }
            }
            Err(err) => Err(err),
        };
        self.0.lock().unwrap().push((result, started.elapsed()));
    }
}

struct Setup {
    _slow: Node,
    _front: Node,
    _caller: Node,
    client: FrontClient,
    slow_addr: SocketAddr,
    slow_id: String,
    seen: Arc<Seen>,
    inner: Outcomes,
}

async fn setup() -> Setup {
    let seen = Arc::new(Seen::default());
    let inner = Arc::new(Mutex::new(Vec::new()));
    let slow = Node::builder()
        .serve(SlowServer::new(Sleeper(Arc::clone(&seen))))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let front = Node::builder()
        .serve(FrontServer::new(Relayer(Arc::clone(&inner))))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let caller = Node::builder().bind("127.0.0.1:0").await.unwrap();
    let conn = caller
        .connect(front.local_addr(), front.id())
        .await
        .unwrap();
    Setup {
        slow_addr: slow.local_addr(),
        slow_id: slow.id().to_string(),
        _slow: slow,
        _front: front,
        _caller: caller,
        client: FrontClient::new(conn),
        seen,
        inner,
    }
}

/// Waits for the inner call's outcome, which the front handler records as it ends.
async fn inner_outcome(s: &Setup) -> (Result<u64, Error>, Duration) {
    for _ in 0..200 {
        if let Some(outcome) = s.inner.lock().unwrap().pop() {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the inner call did not end");
}

#[tokio::test]
async fn a_call_inside_a_handler_ends_with_the_handlers_deadline() {
    let s = setup().await;
    s.client
        .relay(s.slow_addr, s.slow_id.clone(), 10_000, None)
        .timeout(Duration::from_millis(300))
        .await
        .unwrap();
    let (inner, took) = inner_outcome(&s).await;
    assert!(matches!(inner, Err(Error::Timeout)), "{inner:?}");
    // About 300 ms (less the time the notification took to arrive), not the default 30 s.
    assert!(
        took > Duration::from_millis(150) && took < Duration::from_secs(2),
        "the inner call took {took:?}"
    );
    // The slow node was told the handler's remaining time, not the default 30 s.
    let left = s.seen.left.lock().unwrap().clone();
    assert!(
        matches!(left[..], [Some(left)] if left <= Duration::from_millis(300)),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_longer_explicit_timeout_is_cut_to_the_handlers_deadline() {
    let s = setup().await;
    s.client
        .relay(s.slow_addr, s.slow_id.clone(), 10_000, Some(20_000))
        .timeout(Duration::from_millis(300))
        .await
        .unwrap();
    let (inner, took) = inner_outcome(&s).await;
    assert!(matches!(inner, Err(Error::Timeout)), "{inner:?}");
    assert!(
        took < Duration::from_secs(2),
        "the inner call took {took:?}"
    );
}

#[tokio::test]
async fn a_shorter_explicit_timeout_still_wins() {
    let s = setup().await;
    s.client
        .relay(s.slow_addr, s.slow_id.clone(), 10_000, Some(100))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    let (inner, took) = inner_outcome(&s).await;
    assert!(matches!(inner, Err(Error::Timeout)), "{inner:?}");
    assert!(
        took < Duration::from_millis(1_000),
        "the inner call took {took:?}"
    );
    let left = s.seen.left.lock().unwrap().clone();
    assert!(
        matches!(left[..], [Some(left)] if left <= Duration::from_millis(100)),
        "{left:?}"
    );
}

#[tokio::test]
async fn outside_a_handler_the_default_applies() {
    let s = setup().await;
    let conn = {
        let node = Node::builder().bind("127.0.0.1:0").await.unwrap();
        let id = s.slow_id.parse().unwrap();
        (node.connect(s.slow_addr, id).await.unwrap(), node)
    };
    let _ = SlowClient::new(conn.0.clone()).wait(0).await.unwrap();
    let left = s.seen.left.lock().unwrap().clone();
    assert!(
        matches!(left[..], [Some(left)] if left > Duration::from_secs(20)),
        "{left:?}"
    );
}
