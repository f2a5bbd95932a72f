//! Call spans: what a subscriber sees of calls on both sides.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dep2p_runtime::{Error, Unary};
use futures::StreamExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One span as the layer saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    id: u64,
    name: String,
    fields: BTreeMap<String, String>,
    /// The fields of the events logged in it.
    events: Vec<BTreeMap<String, String>>,
    closed: bool,
    /// The id of the span's parent, if it has one.
    parent: Option<u64>,
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = Seen {
            id: id.into_u64(),
            name: attrs.metadata().name().to_string(),
            parent: ctx
                .span(id)
                .and_then(|span| span.parent().map(|parent| parent.id().into_u64())),
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().push(seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(seen) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        if let Some(seen) = spans
            .iter_mut()
            .rev()
            .find(|s| s.id == span.id().into_u64())
        {
            seen.events.push(fields);
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(seen) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            seen.closed = true;
        }
    }
}

impl Spans {
    /// Installs a subscriber recording into these spans on this thread, for DEBUG and above.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::registry()
            .with(self.clone())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG);
        tracing::subscriber::set_default(subscriber)
    }

    /// The closed call spans on `side` for `method`.
    fn calls(&self, side: &str, method: &str) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s.name == "call"
                    && s.closed
                    && s.fields.get("side").map(String::as_str) == Some(side)
                    && s.fields.get("method").map(String::as_str) == Some(method)
            })
            .cloned()
            .collect()
    }

    fn has_closed_call(&self, side: &str, method: &str) -> bool {
        !self.calls(side, method).is_empty()
    }
}

/// The outcome the "call ended" event of `span` gave.
fn outcome(span: &Seen) -> Option<String> {
    let ended = span
        .events
        .iter()
        .find(|e| e.get("message").map(String::as_str) == Some("call ended"))?;
    assert!(ended.contains_key("elapsed"), "{ended:?}");
    ended.get("outcome").cloned()
}

#[tokio::test(flavor = "current_thread")]
async fn a_unary_call_has_a_span_on_each_side() {
    let spans = Spans::default();
    let _guard = spans.install();
    let probe = probe();
    let (server, client, conn) = pair(&probe).await;
    assert_eq!(echo(&conn, "hi").await.unwrap(), "hi");
    eventually("the server span to close", || {
        spans.has_closed_call("server", "echo")
    })
    .await;
    let client_span = &spans.calls("client", "echo")[0];
    let server_span = &spans.calls("server", "echo")[0];
    for (span, peer) in [(client_span, server.id()), (server_span, client.id())] {
        assert_eq!(span.fields["service"], SERVICE);
        assert_eq!(span.fields["kind"], "request-response");
        assert_eq!(span.fields["peer"], peer.fmt_short());
        assert_eq!(outcome(span).as_deref(), Some("ok"), "{span:?}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_call_records_its_status() {
    let spans = Spans::default();
    let _guard = spans.install();
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let missing: Unary<(), ()> = Unary::new(&conn, SERVICE, "missing", ());
    assert!(matches!(missing.await, Err(Error::UnknownMethod(_))));
    eventually("the server span to close", || {
        spans.has_closed_call("server", "missing")
    })
    .await;
    let client_span = &spans.calls("client", "missing")[0];
    let server_span = &spans.calls("server", "missing")[0];
    assert_eq!(outcome(client_span).as_deref(), Some("unknown_method"));
    assert_eq!(outcome(server_span).as_deref(), Some("unknown_method"));

    let slow = sleep(&conn, 2_000).timeout(Duration::from_millis(50));
    assert!(matches!(slow.await, Err(Error::Timeout)));
    let client_span = &spans.calls("client", "sleep")[0];
    assert_eq!(outcome(client_span).as_deref(), Some("deadline_exceeded"));
    eventually("the server span to close", || {
        spans.has_closed_call("server", "sleep")
    })
    .await;
    // The caller gives up at its deadline; the handler side sees it go, or its own deadline.
    let server_outcome = outcome(&spans.calls("server", "sleep")[0]);
    assert!(
        matches!(
            server_outcome.as_deref(),
            Some("cancelled" | "deadline_exceeded")
        ),
        "{server_outcome:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_streaming_call_span_ends_with_the_call() {
    let spans = Spans::default();
    let _guard = spans.install();
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let (mut tx, mut rx, result) = upper(&conn, "> ").await.unwrap();
    tx.send("a".to_string()).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "> A");
    // The call still runs: its spans are open on both sides.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!spans.has_closed_call("server", "upper"));
    assert!(!spans.has_closed_call("client", "upper"));
    tx.finish().unwrap();
    assert!(rx.next().await.is_none());
    assert_eq!(result.await.unwrap(), Ok(1));
    eventually("the spans to close", || {
        spans.has_closed_call("server", "upper") && spans.has_closed_call("client", "upper")
    })
    .await;
    for side in ["server", "client"] {
        let span = &spans.calls(side, "upper")[0];
        assert_eq!(span.fields["kind"], "bidirectional-streaming");
        assert_eq!(outcome(span).as_deref(), Some("ok"), "{side}");
    }
    // The caller's span covers the whole call, not only its opening: its single "call
    // ended" event came after the items.
    let client = &spans.calls("client", "upper")[0];
    let ended = client
        .events
        .iter()
        .filter(|e| e.get("message").map(String::as_str) == Some("call ended"))
        .count();
    assert_eq!(ended, 1, "{client:?}");

    // A streaming call dropped before its end ends, on the caller, as cancelled.
    let (tx, rx, result) = upper(&conn, "> ").await.unwrap();
    drop((tx, rx, result));
    eventually("the dropped call's client span to close", || {
        spans.calls("client", "upper").len() == 2
    })
    .await;
    let dropped = &spans.calls("client", "upper")[1];
    assert_eq!(outcome(dropped).as_deref(), Some("cancelled"));
}

/// A served call's span is a child of its connection's span, so a subscriber that prints
/// span contexts shows which connection each call came on.
#[tokio::test(flavor = "current_thread")]
async fn a_served_call_span_is_a_child_of_its_connection_span() {
    let spans = Spans::default();
    let _guard = spans.install();
    let probe = probe();
    let (_server, client, conn) = pair(&probe).await;
    assert_eq!(echo(&conn, "hi").await.unwrap(), "hi");
    note(&conn, "n").await.unwrap();
    eventually("the server spans to close", || {
        spans.has_closed_call("server", "echo") && spans.has_closed_call("server", "note")
    })
    .await;
    let seen = spans.0.lock().unwrap().clone();
    for method in ["echo", "note"] {
        let call = &spans.calls("server", method)[0];
        let parent = seen
            .iter()
            .find(|s| Some(s.id) == call.parent)
            .unwrap_or_else(|| panic!("the {method} call span has no parent: {call:?}"));
        assert_eq!(parent.name, "connection", "{parent:?}");
        assert_eq!(parent.fields["remote"], client.id().fmt_short());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_has_a_span_that_logs_its_close() {
    let spans = Spans::default();
    let _guard = spans.install();
    let probe = probe();
    let (server, client, conn) = pair(&probe).await;
    assert_eq!(echo(&conn, "hi").await.unwrap(), "hi");
    conn.close();
    let closed = |remote: String| {
        let spans = spans.clone();
        move || {
            spans.0.lock().unwrap().iter().any(|s| {
                s.name == "connection"
                    && s.closed
                    && s.fields.get("remote") == Some(&remote)
                    && s.events.iter().any(|e| {
                        e.get("message").map(String::as_str) == Some("connection closed")
                            && e.contains_key("reason")
                    })
            })
        }
    };
    // Each side's span names the other.
    eventually(
        "the client's connection span",
        closed(server.id().fmt_short()),
    )
    .await;
    eventually(
        "the server's connection span",
        closed(client.id().fmt_short()),
    )
    .await;
    let seen = spans.0.lock().unwrap().clone();
    let dialed = seen
        .iter()
        .find(|s| s.name == "connection" && s.fields["remote"] == server.id().fmt_short())
        .unwrap();
    assert!(dialed.fields.contains_key("direction"), "{dialed:?}");
    assert!(
        dialed.fields["address"].starts_with("127.0.0.1:"),
        "{dialed:?}"
    );
}
