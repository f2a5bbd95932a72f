//! The one type that bounds every wait of a call: [`Deadline`], a call's deadline plus an
//! idle bound that restarts whenever the call makes progress.
//!
//! The rules, the same for every kind of call and both sides:
//!
//! * waiting for a *peer's progress* (the next frame, room in a stream's flow-control window,
//!   a write to complete) ends at the deadline or after the idle bound, whichever is first;
//!   the idle bound counts from the last progress;
//! * waiting for an *answer* (a request-response call's result, a client-streaming call's
//!   response, a handler's run) ends at the deadline; a call without a deadline waits for an
//!   answer for the idle bound instead, since nothing may wait forever;
//! * a duration too large to add to the clock (`Duration::MAX`) means "no bound".

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::error::Error;

/// The time bounds of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// When the call must be over; `None` for no deadline.
    at: Option<Instant>,
    /// The longest wait without progress; `None` for no idle bound.
    idle: Option<Duration>,
}

/// `now + duration`, or `None` for a duration the clock cannot represent ("no bound").
fn later(now: Instant, duration: Duration) -> Option<Instant> {
    now.checked_add(duration)
}

impl Deadline {
    /// Bounds for a call that must end `timeout` from now (none: no deadline) and whose waits
    /// may last `idle` without progress.
    pub(crate) fn new(timeout: Option<Duration>, idle: Duration) -> Self {
        let at = timeout.and_then(|t| later(Instant::now(), t));
        Deadline::until(at, idle)
    }

    /// Bounds for a call that must end at `at` (none: no deadline).
    pub(crate) fn until(at: Option<Instant>, idle: Duration) -> Self {
        let idle = later(Instant::now(), idle).map(|_| idle);
        Deadline { at, idle }
    }

    /// A single bound, `timeout` from now, with no idle bound: a handshake, a header, a grace
    /// period.
    pub(crate) fn after(timeout: Duration) -> Self {
        Deadline {
            at: later(Instant::now(), timeout),
            idle: None,
        }
    }

    /// When the call must be over, if it has a deadline.
    pub(crate) fn instant(&self) -> Option<Instant> {
        self.at
    }

    /// The time left until the deadline, if there is one (zero once it has passed).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub(crate) fn is_expired(&self) -> bool {
        self.at.is_some_and(|at| at <= Instant::now())
    }

    /// When a wait that started at `since` without progress ends, and with which error.
    fn due(&self, since: Instant) -> Option<(Instant, Error)> {
        let idle_at = self.idle.and_then(|idle| later(since, idle));
        match (self.at, idle_at) {
            (Some(at), Some(idle_at)) if at <= idle_at => Some((at, Error::Timeout)),
            (_, Some(idle_at)) => Some((idle_at, Error::IdleTimeout)),
            (Some(at), None) => Some((at, Error::Timeout)),
            (None, None) => None,
        }
    }

    /// When waiting for an answer ends: at the deadline, or, without one, after the idle
    /// bound from now.
    fn answer_due(&self) -> Option<(Instant, Error)> {
        match self.at {
            Some(at) => Some((at, Error::Timeout)),
            None => self.due(Instant::now()),
        }
    }

    /// Runs `fut`, one wait for the peer's progress: it fails at the deadline or when the
    /// idle bound has passed from now.
    pub(crate) fn progress<T, F>(&self, fut: F) -> Bounded<F, Flat>
    where
        F: Future<Output = Result<T, Error>>,
    {
        Bounded::new(self.due(Instant::now()), fut)
    }

    /// Runs `fut`, a wait for an answer: it fails at the deadline or, without one, when the
    /// idle bound has passed from now.
    pub(crate) fn answer<T, F>(&self, fut: F) -> Bounded<F, Flat>
    where
        F: Future<Output = Result<T, Error>>,
    {
        Bounded::new(self.answer_due(), fut)
    }

    /// [`answer`](Self::answer) for the future `make` returns, made in its place: a large
    /// future passed by value would be copied whole on the way in.
    #[inline(always)]
    pub(crate) fn answer_with<T, F>(&self, make: impl FnOnce() -> F) -> Bounded<F, Flat>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let (sleep, idle) = Bounded::<F, Flat>::timer(self.answer_due());
        Bounded {
            fut: make(),
            sleep,
            idle,
            shape: std::marker::PhantomData,
        }
    }

    /// Runs `fut` until the deadline (no idle bound): `Err(Error::Timeout)` if the deadline
    /// comes first. For a handler's run, which may take as long as its caller allows.
    pub(crate) fn within<F: Future>(&self, fut: F) -> Bounded<F, Wrap> {
        Bounded::new(self.at.map(|at| (at, Error::Timeout)), fut)
    }

    /// A timer for a wait polled by hand, which restarts on progress.
    pub(crate) fn timer(self) -> IdleTimer {
        IdleTimer {
            deadline: self,
            since: None,
            sleep: None,
        }
    }
}

/// How a [`Bounded`] future gives its result.
pub(crate) trait Shape<T> {
    /// What awaiting it gives.
    type Output;
    /// The result of a future that completed in time.
    fn done(value: T) -> Self::Output;
    /// The result of a future stopped by its bound.
    fn expired(err: Error) -> Self::Output;
}

/// The wrapped future's output in `Ok`; the bound's error in `Err`.
#[derive(Debug)]
pub(crate) enum Wrap {}

/// The wrapped future's own `Result`, or the bound's error.
#[derive(Debug)]
pub(crate) enum Flat {}

impl<T> Shape<T> for Wrap {
    type Output = Result<T, Error>;
    fn done(value: T) -> Self::Output {
        Ok(value)
    }
    fn expired(err: Error) -> Self::Output {
        Err(err)
    }
}

impl<T> Shape<Result<T, Error>> for Flat {
    type Output = Result<T, Error>;
    fn done(value: Result<T, Error>) -> Self::Output {
        value
    }
    fn expired(err: Error) -> Self::Output {
        Err(err)
    }
}

pin_project_lite::pin_project! {
    /// A future stopped at a bound, with the bound's error.
    ///
    /// A plain struct rather than an `async fn`: a future an `async fn` takes as argument is
    /// stored in its state as well as awaited there, so each such layer would multiply the
    /// size of every call's future, and every move of it.
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct Bounded<F, S> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Option<Sleep>,
        // Which error the bound gives: `Timeout` or `IdleTimeout`.
        idle: bool,
        shape: std::marker::PhantomData<S>,
    }
}

impl<F, S> Bounded<F, S> {
    fn new(due: Option<(Instant, Error)>, fut: F) -> Self {
        let (sleep, idle) = Self::timer(due);
        Bounded {
            fut,
            sleep,
            idle,
            shape: std::marker::PhantomData,
        }
    }

    /// The timer for `due`, and whether it gives `IdleTimeout`.
    fn timer(due: Option<(Instant, Error)>) -> (Option<Sleep>, bool) {
        match due {
            Some((at, err)) => (
                Some(tokio::time::sleep_until(at)),
                matches!(err, Error::IdleTimeout),
            ),
            None => (None, false),
        }
    }
}

impl<F: Future, S: Shape<F::Output>> Future for Bounded<F, S> {
    type Output = S::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(value) = this.fut.poll(cx) {
            return Poll::Ready(S::done(value));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(S::expired(match this.idle {
                true => Error::IdleTimeout,
                false => Error::Timeout,
            })),
            _ => Poll::Pending,
        }
    }
}

/// Ends a wait that makes no progress for the idle bound, or that reaches the deadline.
///
/// The wait starts at the first poll after progress; the timer underneath is armed once and
/// moved only when it fires early, not reset on every message.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    deadline: Deadline,
    /// When the current wait started; `None` right after progress.
    since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    /// The bounds this timer enforces.
    pub(crate) fn deadline(&self) -> &Deadline {
        &self.deadline
    }

    /// Records progress: the next wait starts afresh.
    pub(crate) fn progress(&mut self) {
        self.since = None;
    }

    /// Pending while the current wait is within bounds; the error once it is not.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        let since = *self.since.get_or_insert_with(Instant::now);
        let Some((due, err)) = self.deadline.due(since) else {
            return Poll::Pending;
        };
        loop {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= due {
                return Poll::Ready(err);
            }
            sleep.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_huge_timeout_is_no_bound() {
        let d = Deadline::new(Some(Duration::MAX), Duration::MAX);
        assert_eq!(d.instant(), None);
        assert!(!d.is_expired());
        let r: Result<u8, Error> = d.progress(async { Ok(1) }).await;
        assert_eq!(r.ok(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_waits_for_the_deadline_not_the_idle_bound() {
        let d = Deadline::new(Some(Duration::from_secs(5)), Duration::from_millis(300));
        let slow = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        };
        assert!(d.answer(slow).await.is_ok());
        let never = std::future::pending::<Result<(), Error>>();
        assert!(matches!(d.answer(never).await, Err(Error::Timeout)));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_bounded_by_the_idle_bound() {
        let d = Deadline::new(Some(Duration::from_secs(5)), Duration::from_millis(300));
        let never = std::future::pending::<Result<(), Error>>();
        let start = Instant::now();
        assert!(matches!(d.progress(never).await, Err(Error::IdleTimeout)));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_an_answer_is_bounded_by_the_idle_bound() {
        let d = Deadline::new(None, Duration::from_millis(300));
        let never = std::future::pending::<Result<(), Error>>();
        assert!(matches!(d.answer(never).await, Err(Error::IdleTimeout)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_restarts_on_progress() {
        let mut timer = Deadline::new(None, Duration::from_millis(300)).timer();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let polled = std::future::poll_fn(|cx| Poll::Ready(timer.poll_expired(cx))).await;
            assert!(polled.is_pending());
            timer.progress();
        }
        let err = std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
        assert!(matches!(err, Error::IdleTimeout));
    }
}
