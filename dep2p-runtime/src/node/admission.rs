//! Admission: which connection attempts from other nodes a node takes on, and the places they
//! hold in its limits.
//!
//! * A **handshake** place (`max_handshakes`) is held from accepting an attempt until its
//!   handshake ends, whichever way it ends.
//! * A **connection** place (`max_connections`) is taken when the handshake completes and
//!   held until the connection closes. Handshakes that never complete hold none.
//! * An **address** place (`max_connections_per_ip`) is held from accepting an attempt until
//!   its connection closes.
//!
//! Once a quarter of `max_handshakes` are in progress, an attempt from an address QUIC has not
//! validated is answered with a Retry. Handshakes normally last a round trip, so so many at
//! once means a burst of dialers or a flood of Initial packets, perhaps from forged addresses.
//! A Retry costs a genuine dialer one round trip; a forged address never answers it, so the
//! node spends no signature on it and sends it nothing larger than what it received.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::config::Config;

/// What to do with a connection attempt.
pub(crate) enum Decision {
    /// Accept it: its handshake holds the places in `Handshake`.
    Accept(Handshake),
    /// Ask the dialer to prove its address first (a QUIC Retry).
    Retry,
    /// Refuse it; the limit that is reached.
    Refuse(&'static str),
}

/// The admission state of a node.
pub(crate) struct Admission {
    max_connections: usize,
    max_handshakes: usize,
    max_per_ip: usize,
    /// Handshakes in progress from which unvalidated addresses are retried.
    retry_from: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    handshakes: usize,
    connections: usize,
    /// Places held per address; an address with none has no entry.
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Arc<Admission> {
        Arc::new(Admission {
            max_connections: config.max_connections,
            max_handshakes: config.max_handshakes,
            max_per_ip: config.max_connections_per_ip,
            retry_from: config.max_handshakes.div_ceil(4),
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Nothing panics while the lock is held; the counts are whole even if something did.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides on an attempt from `remote`; `validated` says whether QUIC has validated the
    /// address (the attempt carries a token from an earlier Retry).
    pub(crate) fn admit(self: &Arc<Self>, remote: SocketAddr, validated: bool) -> Decision {
        let ip = remote.ip().to_canonical();
        let mut counts = self.counts();
        if counts.connections >= self.max_connections {
            return Decision::Refuse("max_connections");
        }
        if counts.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Decision::Refuse("max_connections_per_ip");
        }
        if !validated && counts.handshakes >= self.retry_from {
            return Decision::Retry;
        }
        if counts.handshakes >= self.max_handshakes {
            return Decision::Refuse("max_handshakes");
        }
        counts.handshakes += 1;
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        Decision::Accept(Handshake {
            admission: Arc::clone(self),
            ip,
            established: false,
        })
    }

    fn release_address(counts: &mut Counts, ip: IpAddr) {
        if let Some(n) = counts.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// A handshake in progress: its handshake place and its address place, given back when
/// dropped unless [`Handshake::establish`] moved the address place on.
pub(crate) struct Handshake {
    admission: Arc<Admission>,
    ip: IpAddr,
    established: bool,
}

impl Handshake {
    /// The handshake completed: takes a connection place, which with the address place lasts
    /// as long as the returned value. `None` if every connection place is taken; then all the
    /// attempt's places are given back.
    pub(crate) fn establish(mut self) -> Option<Established> {
        let admission = Arc::clone(&self.admission);
        let mut counts = admission.counts();
        if counts.connections >= admission.max_connections {
            return None;
        }
        counts.connections += 1;
        self.established = true;
        Some(Established {
            admission: Arc::clone(&admission),
            ip: self.ip,
        })
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.handshakes -= 1;
        if !self.established {
            Admission::release_address(&mut counts, self.ip);
        }
    }
}

/// An accepted connection's connection place and address place, given back when dropped.
pub(crate) struct Established {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Established {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.connections -= 1;
        Admission::release_address(&mut counts, self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(connections: usize, handshakes: usize, per_ip: usize) -> Arc<Admission> {
        Admission::new(&Config {
            max_connections: connections,
            max_handshakes: handshakes,
            max_connections_per_ip: per_ip,
            ..Config::default()
        })
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn accept(admission: &Arc<Admission>, from: &str) -> Handshake {
        match admission.admit(addr(from), true) {
            Decision::Accept(handshake) => handshake,
            Decision::Retry => panic!("retried"),
            Decision::Refuse(limit) => panic!("refused: {limit}"),
        }
    }

    fn refused(admission: &Arc<Admission>, from: &str, validated: bool) -> &'static str {
        match admission.admit(addr(from), validated) {
            Decision::Refuse(limit) => limit,
            Decision::Retry => panic!("retried"),
            Decision::Accept(_) => panic!("accepted"),
        }
    }

    #[test]
    fn handshakes_hold_no_connection_place() {
        let admission = admission(1, 8, 8);
        let first = accept(&admission, "10.0.0.1:1");
        let second = accept(&admission, "10.0.0.2:1");
        let kept = second.establish().expect("a free place");
        // The place went to the handshake that completed first.
        assert!(first.establish().is_none());
        assert_eq!(refused(&admission, "10.0.0.3:1", true), "max_connections");
        drop(kept);
        let again = accept(&admission, "10.0.0.3:1");
        assert!(again.establish().is_some());
    }

    #[test]
    fn handshakes_in_progress_are_bounded() {
        let admission = admission(100, 2, 100);
        let one = accept(&admission, "10.0.0.1:1");
        let _two = accept(&admission, "10.0.0.2:1");
        assert_eq!(refused(&admission, "10.0.0.3:1", true), "max_handshakes");
        // A completed (or failed) handshake frees its place.
        let _conn = one.establish().unwrap();
        accept(&admission, "10.0.0.3:1");
    }

    #[test]
    fn unvalidated_addresses_are_retried_from_a_quarter_of_the_handshakes() {
        let admission = admission(100, 8, 100);
        let _one = accept(&admission, "10.0.0.1:1");
        // One in progress: under a quarter of eight.
        let two = match admission.admit(addr("10.0.0.2:1"), false) {
            Decision::Accept(handshake) => handshake,
            _ => panic!("not accepted"),
        };
        assert!(matches!(
            admission.admit(addr("10.0.0.3:1"), false),
            Decision::Retry
        ));
        // A validated address goes through, up to the limit.
        let _three = accept(&admission, "10.0.0.3:1");
        drop(two);
        assert!(matches!(
            admission.admit(addr("10.0.0.4:1"), false),
            Decision::Retry
        ));
        assert_eq!(Admission::new(&Config::default()).retry_from, 256);
    }

    #[test]
    fn each_address_has_its_own_places() {
        let admission = admission(100, 100, 2);
        let a = accept(&admission, "10.0.0.1:1").establish().unwrap();
        let _b = accept(&admission, "10.0.0.1:2");
        assert_eq!(
            refused(&admission, "10.0.0.1:3", true),
            "max_connections_per_ip"
        );
        // The same address mapped into IPv6 is the same address.
        assert_eq!(
            refused(&admission, "[::ffff:10.0.0.1]:4", false),
            "max_connections_per_ip"
        );
        accept(&admission, "10.0.0.2:1");
        drop(a);
        accept(&admission, "10.0.0.1:3");
    }

    #[test]
    fn every_place_is_given_back() {
        let admission = admission(4, 4, 4);
        let handshakes: Vec<_> = (0..4).map(|_| accept(&admission, "10.0.0.1:1")).collect();
        let established: Vec<_> = handshakes
            .into_iter()
            .take(2)
            .filter_map(Handshake::establish)
            .collect();
        drop(established);
        let counts = admission.counts();
        assert_eq!(counts.handshakes, 0);
        assert_eq!(counts.connections, 0);
        assert!(counts.per_ip.is_empty());
    }
}
