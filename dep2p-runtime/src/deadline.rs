//! Time bounds of the waits in a call: the call's deadline and the idle-stream bound.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// Runs `fut` under the call's deadline and the stream's idle timeout.
pub(crate) async fn bounded<F: Future<Output = Result<T, Error>>, T>(
    deadline: Option<Instant>,
    idle: Duration,
    fut: F,
) -> Result<T, Error> {
    let idle_at = Instant::now() + idle;
    match deadline {
        Some(deadline) if deadline <= idle_at => tokio::time::timeout_at(deadline, fut)
            .await
            .unwrap_or(Err(Error::Timeout)),
        _ => tokio::time::timeout_at(idle_at, fut)
            .await
            .unwrap_or(Err(Error::IdleTimeout)),
    }
}

/// Runs `fut` until the call's deadline, if it has one.
pub(crate) async fn with_deadline<F: Future<Output = Result<T, Error>>, T>(
    deadline: Option<Instant>,
    fut: F,
) -> Result<T, Error> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, fut)
            .await
            .unwrap_or(Err(Error::Timeout)),
        None => fut.await,
    }
}

/// Runs `fut` until `deadline`, if there is one; `Err` if the deadline came first.
pub(crate) async fn within<F: Future>(
    deadline: Option<Instant>,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, fut).await,
        None => Ok(fut.await),
    }
}
