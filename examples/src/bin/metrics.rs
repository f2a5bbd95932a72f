//! Metrics: a node records its calls, on both sides, through the `metrics` facade, and serves
//! them as Prometheus text over plain HTTP.
//!
//! The server and the client install `dep2p_runtime::metrics::Metrics` as a server layer
//! and a client layer. The client makes calls that succeed, return the application's error,
//! run out of time and call a method the server lacks; then the program fetches
//! `/metrics` from its own exporter, prints the dep2p series and exits.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p dep2p-examples --bin metrics
//! ```

use std::time::Duration;

use dep2p_runtime::metrics::Metrics;
use dep2p_runtime::{service, Error, Node, Unary};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[service(name = "shop.v1")]
pub trait Shop {
    /// The price of an item, if the shop sells it.
    async fn price(&self, item: String) -> Result<u32, String>;
    /// Takes its time.
    async fn restock(&self, ms: u64);
}

struct Corner;

impl Shop for Corner {
    async fn price(&self, item: String) -> Result<u32, String> {
        match item.as_str() {
            "bread" => Ok(3),
            "milk" => Ok(2),
            other => Err(format!("no {other} here")),
        }
    }

    async fn restock(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The recorder every `metrics` call in the process goes to.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let server = Node::builder()
        .layer(Metrics)
        .serve(ShopServer::new(Corner))
        .bind("127.0.0.1:0")
        .await?;
    let client = Node::builder()
        .client_layer(Metrics)
        .bind("127.0.0.1:0")
        .await?;
    let shop = ShopClient::new(client.connect(server.local_addr(), server.id()).await?);

    for item in ["bread", "milk", "bread", "caviar"] {
        match shop.price(item.into()).await? {
            Ok(price) => println!("{item}: {price}"),
            Err(why) => println!("{item}: {why}"),
        }
    }
    let late = shop.restock(1_000).timeout(Duration::from_millis(50)).await;
    println!("restock with a 50 ms deadline: {late:?}");
    let conn = shop.connection().expect("made from a connection").clone();
    let missing: Unary<(), ()> = Unary::new(&conn, ShopClient::SERVICE_NAME, "refund", ());
    let missing = missing.await;
    assert!(matches!(missing, Err(Error::UnknownMethod(_))));
    println!("refund: {}", missing.unwrap_err());
    // The server's layer records a call's end just after its answer leaves.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Expose the metrics on a plain TCP listener for as long as one request takes.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let exporter = tokio::spawn(serve_once(listener, handle));
    let text = fetch(addr).await?;
    exporter.await??;
    println!("\nGET http://{addr}/metrics, the dep2p series:\n");
    for line in text.lines().filter(|l| l.contains("dep2p_")) {
        if !line.contains("_bucket") && !line.contains("quantile") {
            println!("{line}");
        }
    }
    assert!(text.contains("dep2p_calls_total"));

    client.close();
    server.close();
    Ok(())
}

/// Answers one HTTP request with the metrics as Prometheus text.
async fn serve_once(listener: TcpListener, handle: PrometheusHandle) -> std::io::Result<()> {
    let (mut stream, _) = listener.accept().await?;
    let mut request = [0u8; 1024];
    let _ = stream.read(&mut request).await?;
    let body = handle.render();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Fetches `/metrics` from `addr`: the body of the answer.
async fn fetch(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}
