//! The ready-made metrics layer records calls on both sides through the `metrics` facade.

use std::time::Duration;

use dep2p_runtime::metrics::Metrics;
use dep2p_runtime::{service, Error, Node, Unary};
use metrics_exporter_prometheus::PrometheusBuilder;

#[service]
pub trait Counter {
    async fn check(&self, n: u32) -> Result<u32, String>;
}

struct Even;

impl Counter for Even {
    async fn check(&self, n: u32) -> Result<u32, String> {
        if n % 2 == 0 {
            Ok(n)
        } else {
            Err("odd".into())
        }
    }
}

#[tokio::test]
async fn calls_are_counted_by_side_method_and_outcome() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let server = Node::builder()
        .layer(Metrics)
        .serve(CounterServer::new(Even))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Node::builder()
        .client_layer(Metrics)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let counter = CounterClient::new(conn.clone());
    for n in 0..5 {
        counter.check(n).await.unwrap().ok();
    }
    let missing: Unary<(), ()> = Unary::new(&conn, "Counter", "nothing_here", ());
    assert!(matches!(missing.await, Err(Error::UnknownMethod(_))));

    let series = |side: &str, method: &str, outcome: &str, count: u32| {
        format!(
            "dep2p_calls_total{{side=\"{side}\",service=\"Counter\",method=\"{method}\",kind=\"request-response\",outcome=\"{outcome}\"}} {count}"
        )
    };
    let expected = [
        series("server", "check", "ok", 3),
        series("server", "check", "application_error", 2),
        series("server", "(unknown)", "unknown_method", 1),
        series("client", "check", "ok", 5),
        series("client", "nothing_here", "unknown_method", 1),
    ];
    // The server records a call's end just after its answer leaves.
    let mut text = String::new();
    for _ in 0..100 {
        text = handle.render();
        if expected.iter().all(|line| text.contains(line.as_str())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for line in &expected {
        assert!(text.contains(line.as_str()), "{line} missing from\n{text}");
    }
    assert!(text.contains(
        "dep2p_call_duration_seconds_count{side=\"server\",service=\"Counter\",method=\"check\",kind=\"request-response\"} 5"
    ));
    assert!(text.contains("dep2p_calls_in_flight{side=\"server\",service=\"Counter\"} 0"));
    assert!(text.contains("dep2p_calls_in_flight{side=\"client\",service=\"Counter\"} 0"));
}
