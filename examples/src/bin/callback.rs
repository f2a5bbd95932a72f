//! Calls in both directions on one connection: the client dials the server and asks it to run
//! jobs; while a job runs, the server calls back a `Progress` service that the *client* serves,
//! on the very connection the job request came in on. The client needs no listening address
//! of its own that the server could reach: the connection it opened is enough.
//!
//! The server's handler finds that connection through `CallContext::current()` and builds the
//! generated `ProgressClient` from it. The client's answers steer the job (it stops one
//! halfway), and a client that serves no `Progress` shows how a failed callback surfaces.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p dep2p-examples --bin callback
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dep2p_runtime::{service, CallContext, Node};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobError {
    /// The caller said to stop after this many steps.
    Stopped { after: u32 },
    /// Reporting progress to the caller failed.
    Callback(String),
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Stopped { after } => write!(f, "stopped by the caller after {after} steps"),
            JobError::Callback(why) => write!(f, "progress callback failed: {why}"),
        }
    }
}

impl std::error::Error for JobError {}

/// Served by the server.
#[service(name = "jobs.v1")]
pub trait Jobs {
    /// Runs a job of `steps` steps, reporting each to the caller's `Progress` service.
    /// Answers the number of steps done.
    async fn run(&self, job: String, steps: u32) -> Result<u32, JobError>;
}

/// Served by the client, called by the server.
#[service(name = "progress.v1")]
pub trait Progress {
    /// Step `done` of `total` of `job` is done. Answers whether to go on.
    async fn step(&self, job: String, done: u32, total: u32) -> bool;
}

struct Worker;

impl Jobs for Worker {
    async fn run(&self, job: String, steps: u32) -> Result<u32, JobError> {
        // The connection this call came in on leads back to the caller: build a client of the
        // caller's service on it.
        let ctx = CallContext::current().expect("inside a handler");
        let progress = ProgressClient::new(ctx.connection().clone());
        println!(
            "server: running {job:?} for {}",
            ctx.remote_id().fmt_short()
        );
        for done in 1..=steps {
            tokio::time::sleep(Duration::from_millis(20)).await; // the work
            let go_on = progress
                .step(job.clone(), done, steps)
                .await
                .map_err(|err| JobError::Callback(err.to_string()))?;
            if !go_on {
                return Err(JobError::Stopped { after: done });
            }
        }
        Ok(steps)
    }
}

/// The client's side of the callback: shows each step and remembers it.
#[derive(Default)]
struct Watcher {
    seen: Mutex<Vec<(String, u32)>>,
}

impl Progress for Watcher {
    async fn step(&self, job: String, done: u32, total: u32) -> bool {
        let bar: String = (0..total)
            .map(|i| if i < done { '#' } else { '.' })
            .collect();
        println!("client: {job:<8} [{bar}] {done}/{total}");
        self.seen.lock().unwrap().push((job.clone(), done));
        // Enough of the backup: ask the server to stop after two steps.
        !(job == "backup" && done == 2)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Node::builder()
        .serve(JobsServer::new(Worker))
        .bind("127.0.0.1:0")
        .await?;

    // The client serves `Progress`, like any node serves services. `from_arc` keeps a handle
    // on the implementation, to check what it saw.
    let watcher = Arc::new(Watcher::default());
    let client = Node::builder()
        .serve(ProgressServer::from_arc(watcher.clone()))
        .bind("127.0.0.1:0")
        .await?;
    let jobs = JobsClient::new(client.connect(server.local_addr(), server.id()).await?);

    let done = jobs.run("compile".into(), 5).await??;
    println!("client: compile -> Ok({done})");
    assert_eq!(done, 5);

    // The client's answer reaches the handler, which stops; the job's error comes back as a
    // value.
    let stopped = jobs.run("backup".into(), 10).await?;
    println!("client: backup  -> {stopped:?}");
    assert_eq!(stopped, Err(JobError::Stopped { after: 2 }));

    let seen = watcher.seen.lock().unwrap().clone();
    let expected: Vec<(String, u32)> = (1..=5)
        .map(|i| ("compile".to_string(), i))
        .chain((1..=2).map(|i| ("backup".to_string(), i)))
        .collect();
    assert_eq!(seen, expected);

    // A client that serves no `Progress`: the server's callback fails with the runtime's
    // `UnknownService`, which the handler turns into its own error.
    let bare = Node::builder().bind("127.0.0.1:0").await?;
    let jobs = JobsClient::new(bare.connect(server.local_addr(), server.id()).await?);
    let failed = jobs.run("orphan".into(), 3).await?;
    println!("bare client: orphan -> {failed:?}");
    assert!(matches!(failed, Err(JobError::Callback(ref why)) if why.contains("progress.v1")));

    println!(
        "callbacks complete: {} progress reports received",
        seen.len()
    );
    Ok(())
}
