//! A tour of dep2p: one service with each of the five kinds of method, served by one node and
//! called by another over QUIC on 127.0.0.1, in one process.
//!
//! Along the way it shows an application error reaching the caller intact (matched as a value,
//! then propagated with `??`), metadata and the deadline read through `CallContext`, a per-call
//! deadline failing a slow call with `Error::Timeout`, and a graceful shutdown that lets the
//! call in flight finish.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p dep2p-examples --bin tour
//! ```

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use dep2p_runtime::{service, CallContext, Error, Node, NodeId, Receiver, Sender};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The application's own errors. They are part of the methods' return types, so they travel
/// to the caller as values, apart from the runtime's [`Error`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TourError {
    DivisionByZero,
    /// A stream of the call failed; the runtime's error, as text.
    Stream(String),
}

impl fmt::Display for TourError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TourError::DivisionByZero => f.write_str("division by zero"),
            TourError::Stream(why) => write!(f, "stream failed: {why}"),
        }
    }
}

impl std::error::Error for TourError {}

/// Lets handlers use `?` on the runtime's stream errors.
impl From<Error> for TourError {
    fn from(err: Error) -> Self {
        TourError::Stream(err.to_string())
    }
}

/// What a handler learnt about its caller from the call's context.
#[derive(Debug, Serialize, Deserialize)]
pub struct Caller {
    /// The caller's node id, as the server verified it.
    pub node: NodeId,
    pub user: Option<String>,
    pub time_left: Option<Duration>,
}

/// The tour's service. `#[service]` generates `TourClient` and `TourServer`.
#[service(name = "tour.v1")]
pub trait Tour {
    /// Request-response, the default kind.
    async fn divide(&self, a: i64, b: i64) -> Result<i64, TourError>;

    /// A notification: sent and forgotten, nothing comes back.
    #[notify]
    async fn log(&self, line: String);

    /// Server streaming: one request, a stream of answers, then a result.
    #[server_stream]
    async fn countdown(&self, from: u32, out: Sender<u32>) -> Result<u32, TourError>;

    /// Client streaming: a stream of requests, then one answer.
    #[client_stream]
    async fn sum(&self, numbers: Receiver<i64>) -> Result<i64, TourError>;

    /// Bidirectional: both sides stream at once. Every line comes back shouted.
    #[bidi]
    async fn shout(&self, lines: Receiver<String>, out: Sender<String>) -> Result<u32, TourError>;

    /// Who is calling, as the call's context tells.
    async fn whoami(&self) -> Caller;

    /// Sleeps for `millis`, then answers.
    async fn nap(&self, millis: u64) -> u64;
}

/// The implementation the server node serves.
struct Guide {
    /// Where notifications go, so that `main` can check they arrived.
    logged: mpsc::UnboundedSender<String>,
}

impl Tour for Guide {
    async fn divide(&self, a: i64, b: i64) -> Result<i64, TourError> {
        a.checked_div(b).ok_or(TourError::DivisionByZero)
    }

    async fn log(&self, line: String) {
        let _ = self.logged.send(line);
    }

    async fn countdown(&self, from: u32, mut out: Sender<u32>) -> Result<u32, TourError> {
        for n in (1..=from).rev() {
            // `send` waits while the caller's window is full: a slow reader slows us down.
            out.send(n).await?;
        }
        Ok(from)
    }

    async fn sum(&self, mut numbers: Receiver<i64>) -> Result<i64, TourError> {
        let mut total = 0;
        // `None` means the caller finished the stream; a failure arrives as an `Err` first.
        while let Some(n) = numbers.next().await {
            total += n?;
        }
        Ok(total)
    }

    async fn shout(
        &self,
        mut lines: Receiver<String>,
        mut out: Sender<String>,
    ) -> Result<u32, TourError> {
        let mut count = 0;
        while let Some(line) = lines.next().await {
            out.send(line?.to_uppercase()).await?;
            count += 1;
        }
        Ok(count)
    }

    async fn whoami(&self) -> Caller {
        // Set by the runtime for the task that serves the call.
        let ctx = CallContext::current().expect("inside a handler");
        Caller {
            node: ctx.remote_id(),
            user: ctx.metadata("user").map(str::to_owned),
            time_left: ctx
                .deadline()
                .map(|deadline| deadline.saturating_duration_since(Instant::now())),
        }
    }

    async fn nap(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

/// Propagates both kinds of error with `??`: the outer `?` takes the runtime's [`Error`], the
/// inner one the application's [`TourError`]. Both convert into `Box<dyn Error>`.
async fn ratio(tour: &TourClient, a: i64, b: i64) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(tour.divide(a, b).await??)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (logged, mut log) = mpsc::unbounded_channel();
    let server = Node::builder()
        .serve(TourServer::new(Guide { logged }))
        .bind("127.0.0.1:0")
        .await?;
    // A client needs no address of its own: `bind_any` takes a free port on every interface.
    let client = Node::builder().bind_any().await?;
    // A node is dialed by its ticket, its id and addresses in one line: the handshake fails
    // if the peer at an address holds another key.
    let ticket = server.node_addr().to_string();
    let conn = client.dial(&ticket.parse()?).await?;
    let tour = TourClient::new(conn);
    println!(
        "client {} connected to server {ticket}",
        client.id().fmt_short()
    );

    // 1. Request-response. Awaiting gives `Result<Result<i64, TourError>, Error>`.
    let quotient = tour.divide(84, 2).await?;
    println!("divide(84, 2)       -> {quotient:?}");
    assert_eq!(quotient, Ok(42));

    // The application's error is a value the caller can match on...
    match tour.divide(1, 0).await? {
        Ok(q) => return Err(format!("1 / 0 gave {q}").into()),
        Err(err) => {
            println!("divide(1, 0)        -> Err({err:?}), matched as a value");
            assert_eq!(err, TourError::DivisionByZero);
        }
    }
    // ...or an error to propagate with `??`, and recover by downcasting.
    assert_eq!(ratio(&tour, 10, 5).await?, 2);
    let err = ratio(&tour, 1, 0).await.expect_err("division by zero");
    let err = err.downcast::<TourError>()?;
    println!("ratio(1, 0) with ?? -> error \"{err}\", propagated");
    assert_eq!(*err, TourError::DivisionByZero);

    // 2. Notification: `await` returns once the message is handed to QUIC.
    tour.log("hello from the client".into()).await?;
    let line = log.recv().await.ok_or("the log closed")?;
    println!("log(..)             -> sent; the server logged {line:?}");
    assert_eq!(line, "hello from the client");

    // 3. Server streaming: read the items, then the response that ends them.
    let (numbers, response) = tour.countdown(5).await?;
    let numbers: Vec<u32> = numbers.try_collect().await?;
    let sent = response.await??;
    println!("countdown(5)        -> streamed {numbers:?}, then Ok({sent})");
    assert_eq!(numbers, [5, 4, 3, 2, 1]);
    assert_eq!(sent, 5);

    // 4. Client streaming: send items, finish the stream, then await the response.
    let (mut numbers, response) = tour.sum().await?;
    for n in 1..=100 {
        numbers.send(n).await?;
    }
    numbers.finish()?;
    let total = response.await??;
    println!("sum(1..=100)        -> streamed 100 numbers, got Ok({total})");
    assert_eq!(total, 5050);

    // 5. Bidirectional: one task writes while this one reads.
    let (mut lines, shouted, response) = tour.shout().await?;
    let writer = tokio::spawn(async move {
        for line in ["hello", "is anyone there?", "bye"] {
            lines.send(line.to_string()).await?;
        }
        lines.finish()
    });
    let echoes: Vec<String> = shouted.try_collect().await?;
    writer.await??;
    let count = response.await??;
    println!("shout(..)           -> {echoes:?}, then Ok({count})");
    assert_eq!(echoes, ["HELLO", "IS ANYONE THERE?", "BYE"]);
    assert_eq!(count, 3);

    // Metadata and a deadline travel with the call; the handler reads them from its context.
    let caller = tour
        .whoami()
        .metadata("user", "ada")
        .timeout(Duration::from_secs(5))
        .await?;
    let time_left = caller.time_left.ok_or("the handler saw no deadline")?;
    println!(
        "whoami() [user=ada] -> node {}, user {:?}, {:.1}s left",
        caller.node.fmt_short(),
        caller.user,
        time_left.as_secs_f64()
    );
    assert_eq!(caller.node, client.id());
    assert_eq!(caller.user.as_deref(), Some("ada"));
    assert!(time_left <= Duration::from_secs(5));

    // A deadline shorter than the work: the call fails with `Error::Timeout`, and the handler
    // on the server is stopped too.
    let started = Instant::now();
    let late = tour.nap(2_000).timeout(Duration::from_millis(100)).await;
    println!(
        "nap(2s), 100ms      -> {late:?} after {} ms",
        started.elapsed().as_millis()
    );
    assert!(matches!(late, Err(Error::Timeout)), "got {late:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Graceful shutdown with a grace period of one second: new calls are refused at once, a
    // call in flight that finishes within the grace period gets its answer, and one still
    // running when it ends fails with `Error::ShuttingDown`.
    let quick = tokio::spawn(tour.nap(200).into_future());
    let slow = tokio::spawn(tour.nap(10_000).into_future());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = tour.divide(1, 1).await;
    println!("divide(1, 1)        -> {refused:?}, during shutdown");
    assert!(
        matches!(refused, Err(Error::ShuttingDown)),
        "got {refused:?}"
    );
    let quick = quick.await??;
    println!("nap(200ms)          -> Ok({quick}), finished within the grace period");
    assert_eq!(quick, 200);
    stopping.await?;
    let slow = slow.await?;
    println!("nap(10s)            -> {slow:?}, cut off when the grace period ended");
    assert!(matches!(slow, Err(Error::ShuttingDown)), "got {slow:?}");
    let after = tour.divide(1, 1).await;
    println!("divide(1, 1)        -> {after:?}, after shutdown");
    assert!(after.is_err_and(|err| err.is_connection_error()));

    println!("tour complete");
    Ok(())
}
