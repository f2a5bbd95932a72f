//! [`Metrics`]: a ready-made layer that records calls, on both sides, through the
//! [`metrics`](https://docs.rs/metrics) facade. Needs the `metrics` feature.
//!
//! Recorded (names and labels are stable):
//!
//! | Name | Type | Labels |
//! |---|---|---|
//! | `dep2p_calls_total` | counter | `side`, `service`, `method`, `kind`, `outcome` |
//! | `dep2p_call_duration_seconds` | histogram | `side`, `service`, `method`, `kind` |
//! | `dep2p_calls_in_flight` | gauge | `side`, `service` |
//!
//! `side` is `"server"` or `"client"`; `kind` the method's [`Kind::name`]
//! (`"request-response"`, `"notification"`, ...); `outcome` the [`Outcome::name`]. On the
//! server, the names come from the caller: a call to a method the service does not have is
//! counted under `method="(unknown)"`, so a peer cannot make the
//! node keep a series per name it invents (calls to unknown services reach no layer).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::incoming::IncomingCall;
use crate::intercept::{CallInfo, ClientLayer};
use crate::outcome::Outcome;
use crate::wire::Kind;

/// The counter of calls ended.
pub const CALLS_TOTAL: &str = "dep2p_calls_total";
/// The histogram of call durations, in seconds.
pub const CALL_DURATION_SECONDS: &str = "dep2p_call_duration_seconds";
/// The gauge of calls in flight.
pub const CALLS_IN_FLIGHT: &str = "dep2p_calls_in_flight";

/// Records every call through the installed `metrics` recorder: install it as a node's
/// server layer ([`NodeBuilder::layer`](crate::NodeBuilder::layer)), client layer
/// ([`NodeBuilder::client_layer`](crate::NodeBuilder::client_layer)), or both. See the
/// module's table for what is recorded.
///
/// ```
/// use dep2p_runtime::{metrics::Metrics, Node};
///
/// # async fn run() -> Result<(), dep2p_runtime::Error> {
/// let node = Node::builder()
///     .layer(Metrics)
///     .client_layer(Metrics)
///     .bind("127.0.0.1:0")
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics;

impl<S> tower_layer::Layer<S> for Metrics {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// The service of the [`Metrics`] layer around a served call.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S> tower_service::Service<IncomingCall> for MetricsService<S>
where
    S: tower_service::Service<IncomingCall, Response = Outcome, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Outcome, Infallible>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: IncomingCall) -> Self::Future {
        let context = call.context();
        let service = context.service().to_string();
        let method = context.method().to_string();
        let kind = call.kind();
        let in_flight = InFlight::new("server", service.clone());
        let started = Instant::now();
        let fut = self.inner.call(call);
        Box::pin(async move {
            let Ok(outcome) = fut.await;
            let method = match outcome {
                Outcome::Failed(Error::UnknownMethod(_)) => "(unknown)".to_string(),
                _ => method,
            };
            record("server", service, method, kind, &outcome, started.elapsed());
            drop(in_flight);
            Ok(outcome)
        })
    }
}

impl ClientLayer for Metrics {
    fn before(
        &self,
        call: &CallInfo,
        _: &mut crate::intercept::RequestMetadata<'_>,
    ) -> Result<(), Error> {
        metrics::gauge!(CALLS_IN_FLIGHT, "side" => "client", "service" => call.service())
            .increment(1.0);
        Ok(())
    }

    fn after(&self, call: &CallInfo, outcome: &Outcome, elapsed: Duration) {
        metrics::gauge!(CALLS_IN_FLIGHT, "side" => "client", "service" => call.service())
            .decrement(1.0);
        record(
            "client",
            call.service(),
            call.method(),
            call.kind(),
            outcome,
            elapsed,
        );
    }
}

/// Counts a served call in flight until dropped (also when its future is).
struct InFlight {
    side: &'static str,
    service: String,
}

impl InFlight {
    fn new(side: &'static str, service: String) -> Self {
        metrics::gauge!(CALLS_IN_FLIGHT, "side" => side, "service" => service.clone())
            .increment(1.0);
        InFlight { side, service }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let service = std::mem::take(&mut self.service);
        metrics::gauge!(CALLS_IN_FLIGHT, "side" => self.side, "service" => service).decrement(1.0);
    }
}

/// Records one ended call.
fn record(
    side: &'static str,
    service: impl Into<metrics::SharedString>,
    method: impl Into<metrics::SharedString>,
    kind: Kind,
    outcome: &Outcome,
    elapsed: Duration,
) {
    let (service, method) = (service.into(), method.into());
    metrics::counter!(
        CALLS_TOTAL,
        "side" => side,
        "service" => service.clone(),
        "method" => method.clone(),
        "kind" => kind.name(),
        "outcome" => outcome.name(),
    )
    .increment(1);
    metrics::histogram!(
        CALL_DURATION_SECONDS,
        "side" => side,
        "service" => service,
        "method" => method,
        "kind" => kind.name(),
    )
    .record(elapsed.as_secs_f64());
}
