//! Call spans: how a call's outcome is named, and the end-of-call event both sides emit.
//!
//! Spans are made at DEBUG with `tracing::debug_span!`: when nothing listens, making one is a
//! callsite check, and none of its fields is formatted (a node id is given as `id::Short`,
//! written only when formatted), so a call allocates nothing more.

use std::future::Future;
use std::pin::Pin;

use futures::future::Either;
use futures::FutureExt;

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

/// The serving of one call in its span: the service's future as it is when nothing takes the
/// span, boxed with the logging around it otherwise. Either way it can be polled where it is
/// and moved afterwards (spawned, if it has to wait).
pub(crate) type Served<F> =
    Either<futures::future::Map<F, fn(Outcome)>, Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Runs the serving of one call in `span`, then logs its outcome and duration in it.
pub(crate) fn served<F>(span: tracing::Span, fut: F) -> Served<F>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    if span.is_disabled() {
        return Either::Left(fut.map(drop as fn(Outcome)));
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
    Either::Right(Box::pin(run.instrument(span)))
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

/// Opens a streaming call in `span`. A call that fails to open ends there, and its outcome is
/// logged; an open one gives the [`Ending`] its response carries to the call's real end.
/// `None` when nothing takes the span.
pub(crate) async fn opening<T>(
    span: tracing::Span,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<(T, Option<Ending>), Error> {
    if span.is_disabled() {
        return fut.await.map(|opened| (opened, None));
    }
    let started = Instant::now();
    match fut.instrument(span.clone()).await {
        Ok(opened) => Ok((
            opened,
            Some(Ending {
                span,
                started,
                ended: false,
            }),
        )),
        Err(err) => {
            span.in_scope(|| {
                tracing::debug!(outcome = err.name(), elapsed = ?started.elapsed(), "call ended");
            });
            Err(err)
        }
    }
}

/// The span of an open streaming call, held by its response: the call ends, and its span
/// closes, when the response completes ([`end`](Self::end)) or is dropped (cancelled).
pub(crate) struct Ending {
    span: tracing::Span,
    started: Instant,
    ended: bool,
}

impl Ending {
    /// The call's span.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Logs the call's outcome, `result`, and its duration from its opening.
    pub(crate) fn end<T>(mut self, result: &Result<T, Error>) {
        self.log(outcome_name(result));
    }

    fn log(&mut self, outcome: &'static str) {
        self.ended = true;
        let elapsed = self.started.elapsed();
        self.span.in_scope(|| {
            tracing::debug!(outcome, elapsed = ?elapsed, "call ended");
        });
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if !self.ended {
            self.log(Error::Cancelled.name());
        }
    }
}
