//! OpenTelemetry trace context across nodes (feature `opentelemetry`, which the workspace's
//! `cargo test --workspace` enables through the examples crate).
#![cfg(feature = "opentelemetry")]

mod common;

use common::*;
use dep2p_runtime::{CallContext, CallFuture, IncomingCall, Node, Service, Unary};
use futures::StreamExt;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Exports the spans of this thread's subscriber to memory.
fn install() -> (InMemorySpanExporter, tracing::subscriber::DefaultGuard) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    (exporter, tracing::subscriber::set_default(subscriber))
}

fn call_spans(exporter: &InMemorySpanExporter, side: &str, method: &str) -> Vec<SpanData> {
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| {
            span.name == "call"
                && span
                    .attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "side" && kv.value.as_str() == side)
                && span
                    .attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "method" && kv.value.as_str() == method)
        })
        .collect()
}

/// The server's call span joins the trace of the request that made the call: same trace id,
/// and its parent is the caller's call span, marked remote.
#[tokio::test(flavor = "current_thread")]
async fn a_call_continues_the_callers_trace_on_the_server() {
    let (exporter, _guard) = install();
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let request = tracing::info_span!("request");
    async {
        assert_eq!(echo(&conn, "hi").await.unwrap(), "hi");
        let (mut items, result) = count(&conn, 3).await.unwrap();
        while let Some(item) = items.next().await {
            item.unwrap();
        }
        assert_eq!(result.await.unwrap(), Ok(3));
    }
    .instrument(request)
    .await;
    eventually("the server spans to end", || {
        !call_spans(&exporter, "server", "echo").is_empty()
            && !call_spans(&exporter, "server", "count").is_empty()
    })
    .await;

    let roots: Vec<SpanData> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| span.name == "request")
        .collect();
    let trace = roots[0].span_context.trace_id();
    for method in ["echo", "count"] {
        let client = &call_spans(&exporter, "client", method)[0];
        let server = &call_spans(&exporter, "server", method)[0];
        assert_eq!(client.span_context.trace_id(), trace, "{method}");
        assert_eq!(server.span_context.trace_id(), trace, "{method}");
        assert_eq!(
            server.parent_span_id,
            client.span_context.span_id(),
            "{method}"
        );
        assert!(server.parent_span_is_remote, "{method}");
    }
}

/// Answers with the `traceparent` its caller sent.
struct Echoes;

impl Service for Echoes {
    fn name(&self) -> &str {
        "Echoes"
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        call.unary(|(): ()| async move {
            let ctx = CallContext::current().expect("inside a handler");
            ctx.metadata("traceparent").map(str::to_string)
        })
    }
}

/// With dep2p's own spans filtered out, the caller's span still carries the trace across,
/// as a W3C `traceparent`; a caller's own `traceparent` entry is left as it is.
#[tokio::test(flavor = "current_thread")]
async fn the_callers_span_travels_when_call_spans_are_off() {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::Targets::new().with_target("app", tracing::Level::INFO))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = node(Node::builder().serve(Echoes)).await;
    let client = node(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let request = tracing::info_span!(target: "app", "request");
    let context = request.context();
    let ids = context.span().span_context().clone();
    let sent = async {
        Unary::<(), Option<String>>::new(&conn, "Echoes", "get", ())
            .await
            .unwrap()
    }
    .instrument(request.clone())
    .await;
    let expected = format!("00-{}-{}-01", ids.trace_id(), ids.span_id());
    assert_eq!(sent.as_deref(), Some(expected.as_str()));

    let own = async {
        Unary::<(), Option<String>>::new(&conn, "Echoes", "get", ())
            .metadata("traceparent", "mine")
            .await
            .unwrap()
    }
    .instrument(request)
    .await;
    assert_eq!(own.as_deref(), Some("mine"));
}
