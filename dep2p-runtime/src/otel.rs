//! OpenTelemetry trace context in call metadata (feature `opentelemetry`).
//!
//! A caller writes the trace context of its call span into the call's metadata with the
//! globally installed propagator (`opentelemetry::global::set_text_map_propagator`; the W3C
//! `TraceContextPropagator` writes `traceparent` and `tracestate`), and the callee makes the
//! context it reads there the parent of its call span. One trace then spans every node a
//! request crosses.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Adds the trace context of `span` (or, if nothing takes dep2p's spans, of the caller's
/// current span) to `metadata`. Keys already there are kept: the caller's own value wins.
pub(crate) fn inject(span: &tracing::Span, metadata: &mut Vec<(String, String)>) {
    let span = if span.is_disabled() {
        tracing::Span::current()
    } else {
        span.clone()
    };
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut Writer(metadata));
    });
}

/// Makes the trace context the caller sent in `metadata` the parent of `span`.
pub(crate) fn extract<'a>(
    span: &tracing::Span,
    metadata: impl Iterator<Item = (&'a str, &'a str)>,
) {
    if span.is_disabled() {
        return;
    }
    let entries: Vec<(&str, &str)> = metadata.collect();
    let cx = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Reader(&entries))
    });
    // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
    let _ = span.set_parent(cx);
}

struct Writer<'a>(&'a mut Vec<(String, String)>);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !self.0.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            self.0.push((key.to_string(), value));
        }
    }
}

struct Reader<'a, 'b>(&'a [(&'b str, &'b str)]);

impl Extractor for Reader<'_, '_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}
