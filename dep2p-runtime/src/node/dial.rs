//! Dialing a [`NodeAddr`]: its names resolved, its addresses raced one after another
//! (Happy Eyeballs, RFC 8305), the first connection kept.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::time::Instant;

use crate::addr::NodeAddr;
use crate::connection::Connection;
use crate::deadline::Deadline;
use crate::error::Error;

use super::Node;

/// How long an attempt has to succeed or fail before the next address is tried beside it:
/// the "Connection Attempt Delay" RFC 8305 recommends.
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

impl Node {
    /// Connects to the node `addr` names, at whichever of its addresses answers first.
    ///
    /// Host names are resolved (with the system resolver, off the async threads) while the
    /// socket addresses are already being tried. The addresses are tried in the order of the
    /// ticket and of resolution, alternating IPv6 and IPv4 from the family of the first one
    /// (RFC 8305): each attempt has 250 ms to complete before the next
    /// one starts beside it, an attempt that fails starts the next at once, and the first
    /// connection established wins; the attempts still in progress are abandoned. An address
    /// listed twice, or that a name resolves to again, is tried once.
    ///
    /// The whole dial, resolution included, is bounded by the node's
    /// [connect timeout](super::NodeBuilder::connect_timeout).
    ///
    /// To dial one known address, [`connect`](Node::connect) does the same without the race.
    ///
    /// # Errors
    ///
    /// * [`Error::WrongNodeId`] if an address answered with another node's key and no address
    ///   gave the right node (a stale address now used by another node, or someone posing
    ///   as it): the other addresses are still tried, but this is what is reported.
    /// * [`Error::Unreachable`] if no address gave a connection within the connect timeout,
    ///   or `addr` has none. Its `reason` lists every address tried with what happened to it,
    ///   and names that did not resolve; its `addr` is the first address tried
    ///   (`0.0.0.0:0` if none could be).
    /// * [`Error::Closed`] once this node is shutting down or closed.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use dep2p_runtime::{Node, NodeAddr};
    ///
    /// let ticket: NodeAddr = std::env::args().nth(1).unwrap_or_default().parse()?;
    /// let node = Node::builder().bind_any().await?;
    /// let conn = node.dial(&ticket).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: every attempt belongs to the returned future, so dropping it abandons
    /// their handshakes and leaves no connection open. A name lookup already handed to the
    /// resolver finishes in the background and its result is dropped.
    pub async fn dial(&self, addr: &NodeAddr) -> Result<Connection, Error> {
        if self.inner.shared.is_shutting_down() {
            return Err(Error::Closed);
        }
        let id = addr.id();
        if let Some(conn) = self.inner.registry.live(id) {
            return Ok(conn);
        }
        // One dial per peer: a `connect` or `dial` to the same node meanwhile shares this one.
        let dial = self.inner.registry.dial(id, || {
            let node = self.clone();
            let addr = addr.clone();
            async move {
                let outcome = node.eyeballs(&addr).await;
                node.inner.registry.dial_ended(id);
                outcome
            }
            .boxed()
        });
        dial.await
    }

    /// Tries the addresses of `addr` as [`dial`](Self::dial) describes.
    async fn eyeballs(&self, addr: &NodeAddr) -> Result<Connection, Error> {
        let timeout = self.inner.shared.config().connect_timeout;
        let deadline = Deadline::after(timeout).instant();
        let id = addr.id();

        let mut candidates = Candidates::default();
        for &a in addr.addrs() {
            candidates.push(a);
        }
        let mut lookups: FuturesUnordered<_> = addr
            .hosts()
            .map(|host| {
                let host = host.to_string();
                async move {
                    let found = tokio::net::lookup_host(host.clone()).await;
                    (host, found.map(Iterator::collect::<Vec<_>>))
                }
            })
            .collect();
        let mut attempts = FuturesUnordered::new();
        let mut report = Report::default();
        let mut next_at = Instant::now();

        loop {
            if Instant::now() >= next_at {
                if let Some(candidate) = candidates.next() {
                    report.started(candidate);
                    attempts.push(async move { (candidate, self.dial_once(candidate, id).await) });
                    next_at = Instant::now() + ATTEMPT_DELAY;
                }
            }
            if attempts.is_empty() && lookups.is_empty() && candidates.is_empty() {
                break;
            }
            let waiting = !candidates.is_empty();
            tokio::select! {
                Some((host, found)) = lookups.next(), if !lookups.is_empty() => match found {
                    Ok(found) if found.is_empty() => report.unresolved(&host, "no addresses"),
                    Ok(found) => {
                        for a in found {
                            candidates.push(a);
                        }
                    }
                    Err(err) => report.unresolved(&host, &err.to_string()),
                },
                Some((candidate, result)) = attempts.next(), if !attempts.is_empty() => {
                    match result {
                        Ok(conn) => return Ok(conn),
                        Err(Error::Closed) => return Err(Error::Closed),
                        Err(err) => {
                            tracing::debug!(%candidate, %err, "dial attempt failed");
                            report.failed(candidate, err);
                            next_at = Instant::now();
                        }
                    }
                }
                () = tokio::time::sleep_until(next_at), if waiting => {}
                () = sleep_until(deadline) => {
                    report.timed_out(timeout, candidates.len());
                    break;
                }
            }
        }
        Err(report.into_error())
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The addresses still to try, in the order they are to be tried: one queue per family,
/// taken in turn.
#[derive(Default)]
struct Candidates {
    /// IPv6 addresses, then IPv4 ones.
    queues: [VecDeque<SocketAddr>; 2],
    /// Every address ever queued, so that none is tried twice.
    seen: Vec<SocketAddr>,
    /// The family of the last address handed out; the first one queued sets the start.
    last_v6: Option<bool>,
    /// The family of the first address queued.
    first_v6: Option<bool>,
}

impl Candidates {
    fn push(&mut self, addr: SocketAddr) {
        if self.seen.contains(&addr) {
            return;
        }
        self.seen.push(addr);
        self.first_v6.get_or_insert(addr.is_ipv6());
        self.queues[usize::from(addr.is_ipv4())].push_back(addr);
    }

    fn next(&mut self) -> Option<SocketAddr> {
        let want_v6 = match self.last_v6 {
            Some(last) => !last,
            None => self.first_v6.unwrap_or(true),
        };
        let preferred = usize::from(!want_v6);
        let addr = self.queues[preferred]
            .pop_front()
            .or_else(|| self.queues[1 - preferred].pop_front())?;
        self.last_v6 = Some(addr.is_ipv6());
        Some(addr)
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }
}

/// What happened to each address and name, for the error of a dial that fails.
#[derive(Default)]
struct Report {
    /// Addresses tried, in order, with their outcome once known.
    attempts: Vec<(SocketAddr, Option<String>)>,
    /// Names that gave no address, with why.
    unresolved: Vec<String>,
    /// The first wrong identity an address proved.
    wrong: Option<Error>,
    /// Set when the connect timeout ended the dial.
    timed_out: Option<String>,
}

impl Report {
    fn started(&mut self, addr: SocketAddr) {
        self.attempts.push((addr, None));
    }

    fn failed(&mut self, addr: SocketAddr, err: Error) {
        let outcome = match &err {
            Error::Unreachable { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        if matches!(err, Error::WrongNodeId { .. }) && self.wrong.is_none() {
            self.wrong = Some(err);
        }
        if let Some(slot) = self.attempts.iter_mut().find(|(a, _)| *a == addr) {
            slot.1 = Some(outcome);
        }
    }

    fn unresolved(&mut self, host: &str, why: &str) {
        self.unresolved
            .push(format!("{host} did not resolve ({why})"));
    }

    fn timed_out(&mut self, timeout: Duration, untried: usize) {
        let mut text = format!("no connection within the connect timeout ({timeout:?})");
        if untried > 0 {
            text.push_str(&format!(", {untried} addresses not tried"));
        }
        self.timed_out = Some(text);
    }

    fn into_error(self) -> Error {
        if let Some(wrong) = self.wrong {
            return wrong;
        }
        let addr = self
            .attempts
            .first()
            .map(|(a, _)| *a)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut parts: Vec<String> = self
            .attempts
            .iter()
            .map(|(a, outcome)| match outcome {
                Some(outcome) => format!("{a}: {outcome}"),
                None => format!("{a}: no answer"),
            })
            .collect();
        parts.extend(self.unresolved);
        let mut reason = if parts.is_empty() {
            "no address to dial".to_string()
        } else {
            format!("tried {}", parts.join("; "))
        };
        if let Some(timed_out) = self.timed_out {
            reason.push_str("; ");
            reason.push_str(&timed_out);
        }
        Error::Unreachable { addr, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_alternate_from_the_first_one() {
        let mut c = Candidates::default();
        for a in [
            "10.0.0.1:1",
            "10.0.0.2:1",
            "[::1]:1",
            "[::2]:1",
            "10.0.0.1:1",
        ] {
            c.push(a.parse().unwrap());
        }
        let order: Vec<String> = std::iter::from_fn(|| c.next())
            .map(|a| a.to_string())
            .collect();
        assert_eq!(order, ["10.0.0.1:1", "[::1]:1", "10.0.0.2:1", "[::2]:1"]);
    }

    #[test]
    fn a_family_that_runs_out_leaves_the_other() {
        let mut c = Candidates::default();
        for a in ["[::1]:1", "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"] {
            c.push(a.parse().unwrap());
        }
        let order: Vec<String> = std::iter::from_fn(|| c.next())
            .map(|a| a.to_string())
            .collect();
        assert_eq!(order, ["[::1]:1", "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]);
    }
}
