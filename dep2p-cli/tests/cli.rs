//! The `dep2p` binary against a real node on loopback: what it prints and how it exits.

use std::process::Output;
use std::time::Duration;

use dep2p_runtime::{service, HealthStatus, Node, Receiver, SecretKey, Sender};

/// A service with one method of each kind.
#[service(name = "shop.v1")]
pub trait Shop {
    async fn buy(&self, item: String) -> u64;
    #[notify]
    async fn browse(&self, item: String);
    #[server_stream]
    async fn catalogue(&self, out: Sender<String>);
    #[client_stream]
    async fn basket(&self, items: Receiver<String>) -> u64;
    #[bidi]
    async fn haggle(&self, offers: Receiver<u64>, answers: Sender<u64>);
}

struct Stall;

impl Shop for Stall {
    async fn buy(&self, _item: String) -> u64 {
        1
    }
    async fn browse(&self, _item: String) {}
    async fn catalogue(&self, _out: Sender<String>) {}
    async fn basket(&self, _items: Receiver<String>) -> u64 {
        0
    }
    async fn haggle(&self, _offers: Receiver<u64>, _answers: Sender<u64>) {}
}

async fn shop() -> Node {
    Node::builder()
        .serve(ShopServer::new(Stall))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// Runs `dep2p` with `args`, off the runtime's thread so that the node keeps serving.
async fn dep2p(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dep2p"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The next line the tool printed, `None` once its output has ended.
async fn line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(30), lines.recv())
        .await
        .expect("a line within 30 s")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[tokio::test]
async fn list_prints_services_methods_and_kinds() {
    let node = shop().await;
    let ticket = node.node_addr().to_string();
    let output = dep2p(&["list", &ticket]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "\
dep2p.health.v1
  check      request-response
  watch      server-streaming
dep2p.reflection.v1
  list       request-response
shop.v1
  buy        request-response
  browse     notification
  catalogue  server-streaming
  basket     client-streaming
  haggle     bidirectional-streaming
"
    );

    // The same node, named by address and id.
    let addr = node.local_addr().to_string();
    let id = node.id().to_string();
    let by_id = dep2p(&["list", &addr, "--id", &id]).await;
    assert_eq!(by_id.status.code(), Some(0), "{}", stderr(&by_id));
    assert_eq!(stdout(&by_id), stdout(&output));
}

#[tokio::test]
async fn health_prints_the_status_and_exits_with_it() {
    let node = shop().await;
    let ticket = node.node_addr().to_string();

    let output = dep2p(&["health", &ticket]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "node: serving\n");

    let output = dep2p(&["health", &ticket, "shop.v1"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "shop.v1: serving\n");

    node.health().set("shop.v1", HealthStatus::NotServing);
    let output = dep2p(&["health", &ticket, "shop.v1"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stdout(&output), "shop.v1: not serving\n");

    let output = dep2p(&["health", &ticket, "bakery.v1"]).await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert_eq!(stdout(&output), "bakery.v1: unknown\n");
}

#[tokio::test]
async fn a_node_out_of_reach_or_shutting_down_fails_the_check() {
    let node = shop().await;

    // The address answers, with another node's key.
    let impostor = SecretKey::generate().public();
    let ticket = format!("{impostor}@{}", node.local_addr());
    let output = dep2p(&["health", &ticket]).await;
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(stdout(&output), "");
    assert!(
        stderr(&output).contains("dep2p: peer is"),
        "{}",
        stderr(&output)
    );

    // A node that is shutting down refuses new connections.
    let ticket = node.node_addr().to_string();
    let stopping = node.clone();
    tokio::spawn(async move { stopping.shutdown(Duration::from_secs(60)).await });
    let output = dep2p(&["health", &ticket, "--timeout", "5"]).await;
    assert_ne!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(matches!(output.status.code(), Some(1 | 3)));

    // Nothing listens any more.
    node.close();
    node.closed().await;
    let output = dep2p(&["list", &ticket, "--timeout", "1"]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).starts_with("dep2p: "),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_key_file_gives_the_tool_a_known_identity() {
    let dir = std::env::temp_dir().join(format!("dep2p-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tool.key");
    let key = SecretKey::generate();
    key.save(&path).unwrap();

    // A node that lets in only the tool's key.
    let node = Node::builder()
        .allow_only([key.public()])
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let ticket = node.node_addr().to_string();
    let path_text = path.to_str().unwrap();

    let output = dep2p(&["health", &ticket, "--key", path_text]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "node: serving\n");

    // Without it the tool has a new key of its own, which the node refuses.
    let output = dep2p(&["health", &ticket]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("refused"), "{}", stderr(&output));

    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_usage_exits_with_2_and_the_usage() {
    let output = dep2p(&["list"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with("dep2p: list: no ticket\n"));
    assert!(stderr(&output).contains("usage: dep2p list <ticket>"));

    let output = dep2p(&["--help"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).starts_with("usage: dep2p list <ticket>"));
}

#[tokio::test]
async fn health_watch_prints_each_change_until_the_node_shuts_down() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let node = shop().await;
    let ticket = node.node_addr().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dep2p"))
        .args(["health", &ticket, "shop.v1", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child's lines, read off the runtime's thread.
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });

    assert_eq!(line(&mut lines).await.as_deref(), Some("shop.v1: serving"));
    node.health().set("shop.v1", HealthStatus::NotServing);
    assert_eq!(
        line(&mut lines).await.as_deref(),
        Some("shop.v1: not serving")
    );
    node.health().clear("shop.v1");
    assert_eq!(line(&mut lines).await.as_deref(), Some("shop.v1: serving"));

    // The node shuts down: the watch reports it, ends, and the tool exits as not serving.
    let stopping = node.clone();
    tokio::spawn(async move { stopping.shutdown(Duration::from_secs(60)).await });
    assert_eq!(
        line(&mut lines).await.as_deref(),
        Some("shop.v1: not serving")
    );
    assert_eq!(line(&mut lines).await, None);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
}
