//! [`Outcome`]: how a call ended, as layers on either side see it.

use crate::error::Error;

/// How a call ended: what a server-side layer sees once a served call's future completes,
/// and a [`ClientLayer`](crate::ClientLayer) once an outgoing call completes (see the README's
/// "Middleware" section).
///
/// A served call whose future is dropped before it completes (its node shut down and stopped
/// waiting for it) has no outcome. The calling side does not tell application errors apart:
/// it reports [`Outcome::Ok`] for any value it received.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler's value was sent to the caller (for a method returning `Result`, an
    /// `Ok`), or a notification's handler returned.
    Ok,
    /// The handler of a method returning `Result` returned an `Err`: the caller got it as
    /// the call's value, the framework saw no failure.
    ApplicationError,
    /// The call ended with a status instead of a value: the caller got this error (a layer's
    /// refusal, [`Error::Timeout`], [`Error::HandlerFailed`] for a panic, ...), or, for
    /// [`Error::Cancelled`], stopped waiting and got nothing.
    Failed(Error),
}

impl Outcome {
    /// A short name for the outcome, as a metric label or log field: `"ok"`,
    /// `"application_error"`, or the error's [`Error::name`].
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ApplicationError => "application_error",
            Outcome::Failed(err) => err.name(),
        }
    }

    /// Whether the caller got a value (`Ok` or an application error) rather than a status.
    pub fn is_answered(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }
}
