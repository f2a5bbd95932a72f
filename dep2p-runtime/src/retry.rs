//! Retrying calls that never reached a handler (and idempotent calls whose transport failed):
//! [`RetryPolicy`], its retry budget, and the jittered exponential backoff that reconnecting
//! and retrying share.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

/// When a request-response call made through a [`Peer`](crate::Peer) is tried again.
///
/// A call is retried **only when it provably never reached a handler**: no stream could be
/// opened for it (its connection was gone first), or the callee refused it before serving it
/// (`Error::Overloaded`, `Error::ShuttingDown` sent as its answer). A call that may have
/// reached its handler — lost with its connection, timed out, answered with any other error —
/// is never retried, so a method that is not idempotent is never run twice on the peer's side
/// by a retry. Notifications and the streaming kinds are not retried.
///
/// A call marked **idempotent** (a method marked `#[idempotent]`, or
/// [`Unary::idempotent`](crate::Call::idempotent)) is also retried after a transport failure
/// before any answer: lost with its connection, its stream reset, no connection in time. It is
/// never retried once answered (with its result or any error the peer sent but the refusals
/// above), nor after its deadline.
///
/// Every attempt shares the call's one deadline: a retry waits for the backoff and for the
/// peer's connection within what is left, and a call whose deadline passes fails as usual.
///
/// Retries are throttled by a **budget**, so that a peer that refuses everything is not
/// sent a multiple of the load: the budget holds up to `max_tokens` tokens (starting full);
/// each refused attempt takes one, each answered call gives back `token_ratio`; retries are
/// made only while more than half the tokens are left.
///
/// Default: up to 3 attempts, backoff from 20 ms doubling up to 1 s with equal jitter, a
/// budget of 10 tokens refilled by 0.1 per answered call.
///
/// A failed attempt retried for either reason counts the same: it takes a token and an
/// attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_tokens: f64,
    token_ratio: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            max_tokens: 10.0,
            token_ratio: 0.1,
        }
    }
}

impl RetryPolicy {
    /// No retries: every call is attempted once.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The most attempts a call makes, the first included (at least 1). Default: 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait before the first retry, doubling for each one after up to `max`, each wait
    /// jittered between half and all of its step. Default: 20 ms, up to 1 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The retry budget: at most `max_tokens` tokens (at least 1), each refused attempt takes
    /// one, each answered call gives back `token_ratio`; retries only while more than half
    /// are left. Default: 10 tokens, 0.1.
    pub fn budget(mut self, max_tokens: u32, token_ratio: f64) -> Self {
        self.max_tokens = f64::from(max_tokens.max(1));
        self.token_ratio = if token_ratio.is_finite() {
            token_ratio.max(0.0)
        } else {
            0.0
        };
        self
    }
}

/// A policy with the state of its budget, shared by every call through one peer.
#[derive(Debug)]
pub(crate) struct Retries {
    policy: Mutex<(RetryPolicy, f64)>,
    random: RandomState,
}

impl Retries {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        let tokens = policy.max_tokens;
        Retries {
            policy: Mutex::new((policy, tokens)),
            random: RandomState::new(),
        }
    }

    /// Replaces the policy; the budget starts full again.
    pub(crate) fn set(&self, policy: RetryPolicy) {
        if let Ok(mut state) = self.policy.lock() {
            let tokens = policy.max_tokens;
            *state = (policy, tokens);
        }
    }

    /// After `attempts` attempts, the last one failed in a way that allows a retry (refused
    /// before it was served, or an idempotent call's transport failed): the wait before the
    /// next, or `None` to give up. Takes a token.
    pub(crate) fn after_refusal(&self, attempts: u32) -> Option<Duration> {
        let mut state = self.policy.lock().ok()?;
        let (policy, tokens) = &mut *state;
        *tokens = (*tokens - 1.0).max(0.0);
        if attempts >= policy.max_attempts || *tokens <= policy.max_tokens / 2.0 {
            return None;
        }
        let random = self.random.hash_one(attempts);
        Some(backoff(
            policy.initial_backoff,
            policy.max_backoff,
            attempts,
            random,
        ))
    }

    /// Records an answered call: gives back part of a token.
    pub(crate) fn answered(&self) {
        if let Ok(mut state) = self.policy.lock() {
            let (policy, tokens) = &mut *state;
            *tokens = (*tokens + policy.token_ratio).min(policy.max_tokens);
        }
    }
}

/// The wait after `failures` failures in a row: `initial` doubling up to `max`, with equal
/// jitter — half the step, plus a random part (from `random`) of the other half.
pub(crate) fn backoff(initial: Duration, max: Duration, failures: u32, random: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let step = initial.saturating_mul(1 << doublings).min(max);
    let half = step / 2;
    // The top 53 bits of `random`, as a fraction in [0, 1).
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    half + half.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_equal_jitter() {
        let (initial, max) = (MS * 100, MS * 10_000);
        assert_eq!(backoff(initial, max, 1, 0), MS * 50);
        assert_eq!(backoff(initial, max, 2, 0), MS * 100);
        assert!(backoff(initial, max, 1, u64::MAX) <= MS * 100);
        assert!(backoff(initial, max, 2, u64::MAX) > MS * 199);
        assert_eq!(backoff(initial, max, 30, 0), MS * 5_000);
        assert!(backoff(initial, max, u32::MAX, u64::MAX) <= max);
    }

    #[test]
    fn attempts_stop_at_the_limit() {
        let retries = Retries::new(RetryPolicy::default().max_attempts(3));
        assert!(retries.after_refusal(1).is_some());
        assert!(retries.after_refusal(2).is_some());
        assert!(retries.after_refusal(3).is_none());
    }

    #[test]
    fn the_budget_stops_retries_until_answers_refill_it() {
        let policy = RetryPolicy::default().max_attempts(100).budget(10, 0.5);
        let retries = Retries::new(policy);
        // 10 tokens: retries while more than 5 are left.
        for _ in 0..4 {
            assert!(retries.after_refusal(1).is_some());
        }
        assert!(retries.after_refusal(1).is_none());
        assert!(retries.after_refusal(1).is_none());
        // 4 tokens left; 4 answers bring them to 6.
        for _ in 0..4 {
            retries.answered();
        }
        // The refusal takes one (5 left): not more than half.
        assert!(retries.after_refusal(1).is_none());
        for _ in 0..4 {
            retries.answered();
        }
        assert!(retries.after_refusal(1).is_some());
    }

    #[test]
    fn never_means_one_attempt() {
        assert!(Retries::new(RetryPolicy::never())
            .after_refusal(1)
            .is_none());
    }
}
