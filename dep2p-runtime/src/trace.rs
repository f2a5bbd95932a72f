//! Call spans: how a call's outcome is named, and the end-of-call event both sides emit.
//!
//! Spans are made at DEBUG with `tracing::debug_span!`: when nothing listens, making one is a
//! callsite check, and none of its fields is formatted (a node id is given as `id::Short`,
//! written only when formatted), so a call allocates nothing more.

use std::future::Future;

use tokio::time::Instant;
use tracing::Instrument;

use crate::error::Error;
use crate::outcome::Outcome;

/// The name an outcome is logged under: "ok", or the error's status name.
pub(crate) fn outcome_name<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => err.name(),
    }
}

/// Runs the serving of one call in `span`, then logs its outcome and duration in it.
pub(crate) async fn served(span: tracing::Span, fut: impl Future<Output = Outcome>) {
    if span.is_disabled() {
        fut.await;
        return;
    }
    let started = Instant::now();
    let run = async move {
        let outcome = fut.await;
        tracing::debug!(
            outcome = outcome.name(),
            elapsed = ?started.elapsed(),
            "call ended"
        );
    };
    run.instrument(span).await
}

/// Runs an outgoing call in `span`, then logs its outcome and duration in it.
pub(crate) async fn called<T>(
    span: tracing::Span,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    if span.is_disabled() {
        return fut.await;
    }
    let started = Instant::now();
    let run = async move {
        let result = fut.await;
        let outcome = outcome_name(&result);
        tracing::debug!(outcome, elapsed = ?started.elapsed(), "call ended");
        result
    };
    run.instrument(span).await
}
