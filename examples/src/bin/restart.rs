//! Two processes: a server that keeps its key in a file, prints its ticket and shuts down
//! gracefully on Ctrl-C or SIGTERM; a client that takes the ticket and keeps calling while the
//! server is stopped and started again — without a line of reconnection code.
//!
//! ```text
//! cargo run -p dep2p-examples --bin restart -- server [KEY_FILE] [ADDR]   # prints its ticket
//! cargo run -p dep2p-examples --bin restart -- client TICKET              # calls, forever
//! cargo run -p dep2p-examples --bin restart                               # both, two restarts
//! ```
//!
//! With no arguments it runs the whole story: it starts the server as a child process, calls
//! it through a `Peer` made from the ticket, stops the server gracefully (SIGTERM) and starts
//! it again with the same key on the same port, then kills it outright (SIGKILL) and starts it
//! once more. The same key means the same node id, so the ticket stays valid; the client's
//! `Peer` notices each loss (a graceful close, or a stateless reset from the restarted
//! process) and redials on its own.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dep2p_runtime::{service, Node, NodeAddr, SecretKey};

#[service(name = "clock.v1")]
pub trait Clock {
    /// Which server process answers, and how many calls it has answered.
    async fn now(&self) -> (u32, u64);
}

struct Process {
    calls: AtomicU64,
}

impl Clock for Process {
    async fn now(&self) -> (u32, u64) {
        (
            std::process::id(),
            self.calls.fetch_add(1, Ordering::Relaxed) + 1,
        )
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server: key from `key_file` (made on first start), bound to `addr`; runs until Ctrl-C
/// or SIGTERM, then shuts down gracefully.
async fn server(key_file: &Path, addr: &str) -> Result<(), BoxError> {
    let key = SecretKey::load_or_generate(key_file)?;
    let node = Node::builder()
        .secret_key(key)
        .serve(ClockServer::new(Process {
            calls: AtomicU64::new(0),
        }))
        .bind(addr)
        .await?;
    println!("ticket {}", node.node_addr());
    stopped().await?;
    eprintln!("server {}: shutting down", std::process::id());
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn stopped() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            stopped = tokio::signal::ctrl_c() => stopped,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// The client: calls the server named by `ticket` every `every`, `calls` times (forever if
/// `None`), printing who answered. Returns the server processes that answered.
async fn client(
    ticket: &NodeAddr,
    every: Duration,
    calls: Option<u32>,
) -> Result<BTreeSet<u32>, BoxError> {
    let node = Node::builder().bind_any().await?;
    let clock = ClockClient::new(node.peer(ticket.clone()));
    let mut seen = BTreeSet::new();
    let mut made = 0;
    while calls.is_none_or(|calls| made < calls) {
        match clock.now().timeout(Duration::from_secs(5)).await {
            Ok((pid, n)) => {
                println!("client: server {pid} answered (its call {n})");
                seen.insert(pid);
            }
            Err(err) => println!("client: call failed: {err}"),
        }
        made += 1;
        tokio::time::sleep(every).await;
    }
    Ok(seen)
}

/// A server child process: this program with `server KEY_FILE ADDR`, and its ticket.
fn start_server(key_file: &Path, addr: &str) -> Result<(Child, NodeAddr), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("server")
        .arg(key_file)
        .arg(addr)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let ticket = line
        .trim()
        .strip_prefix("ticket ")
        .ok_or_else(|| format!("no ticket in {line:?}"))?
        .parse()?;
    Ok((child, ticket))
}

/// Stops a server child gracefully (SIGTERM), or at once (SIGKILL), and waits for its end.
fn stop_server(mut child: Child, graceful: bool) -> Result<(), BoxError> {
    if graceful && cfg!(unix) {
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
    } else {
        child.kill()?;
    }
    child.wait()?;
    Ok(())
}

/// The whole story in one run: a client across a graceful and an abrupt restart.
async fn story() -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("dep2p-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join("server.key");

    let (first, ticket) = start_server(&key_file, "127.0.0.1:0")?;
    println!("story: server started, ticket {ticket}");
    // Restarts bind the same port, so the ticket stays valid.
    let addr = ticket
        .addrs()
        .first()
        .ok_or("the ticket has no address")?
        .to_string();

    let calls = tokio::spawn({
        let ticket = ticket.clone();
        async move { client(&ticket, Duration::from_millis(100), Some(40)).await }
    });

    tokio::time::sleep(Duration::from_millis(1200)).await;
    println!("story: stopping the server gracefully (SIGTERM), starting it again");
    tokio::task::spawn_blocking(move || stop_server(first, true)).await??;
    let (second, again) = start_server(&key_file, &addr)?;
    assert_eq!(again.id(), ticket.id(), "same key, same node id");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    println!("story: killing the server (SIGKILL), starting it again");
    tokio::task::spawn_blocking(move || stop_server(second, false)).await??;
    let (third, _) = start_server(&key_file, &addr)?;

    let seen = calls.await??;
    tokio::task::spawn_blocking(move || stop_server(third, true)).await??;
    let _ = std::fs::remove_dir_all(&dir);
    println!("story: {} server processes answered one client", seen.len());
    assert_eq!(seen.len(), 3, "every server process answered");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => {
            let key_file = args
                .get(1)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("server.key"));
            let addr = args.get(2).map_or("0.0.0.0:4433", String::as_str);
            server(&key_file, addr).await
        }
        Some("client") => {
            let ticket: NodeAddr = args.get(1).ok_or("usage: restart client TICKET")?.parse()?;
            client(&ticket, Duration::from_secs(1), None)
                .await
                .map(drop)
        }
        _ => story().await,
    }
}
