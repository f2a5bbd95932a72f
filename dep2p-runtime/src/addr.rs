//! [`NodeAddr`]: a node's identity and where to find it, as a value and as a one-line ticket.

use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::str::FromStr;

use crate::id::NodeId;

/// The longest host name a [`NodeAddr`] accepts: the DNS limit of 253 characters.
const MAX_HOST_LEN: usize = 253;

/// A node and where to find it: its [`NodeId`], socket addresses and `host:port` names.
///
/// Its text form is a *ticket*: one line, no spaces, that a server prints and a client
/// parses.
///
/// ```text
/// <node id>@<address>,<address>,…
/// ```
///
/// The node id is its 52 base32 characters; each address is an IPv4 address and port
/// (`192.0.2.7:4433`), an IPv6 address in brackets and a port (`[2001:db8::7]:4433`), or a
/// host name and port (`example.com:4433`). Socket addresses are printed first, then names,
/// each in the order they were added. A node id alone (no `@`) is a `NodeAddr` with no
/// addresses, which can be printed and parsed but not dialed.
///
/// With serde, a `NodeAddr` is its ticket in human-readable formats (JSON, TOML, …), so it
/// reads the same in a configuration file as on a command line. In binary formats (postcard,
/// as in a dep2p message) it is a struct — the 32 bytes of the id, the socket addresses in
/// serde's compact binary form and the names — which is about half the size of the text and
/// needs no text parsing. Both forms are checked as [`FromStr`] checks the ticket, including
/// the limit of [`NodeAddr::MAX_ADDRS`] addresses.
///
/// ```
/// use dep2p_runtime::{NodeAddr, SecretKey};
///
/// let id = SecretKey::generate().public();
/// let addr = NodeAddr::new(id)
///     .with_addr("192.0.2.7:4433".parse().unwrap())
///     .with_host("example.com:4433")
///     .unwrap();
/// let ticket = addr.to_string();
/// assert_eq!(ticket, format!("{id}@192.0.2.7:4433,example.com:4433"));
/// assert_eq!(ticket.parse::<NodeAddr>().unwrap(), addr);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    id: NodeId,
    addrs: Vec<SocketAddr>,
    hosts: Vec<String>,
}

impl NodeAddr {
    /// The most addresses and names a parsed or decoded `NodeAddr` may hold: 16. The
    /// builder methods add any number.
    pub const MAX_ADDRS: usize = 16;

    /// The node `id`, with no addresses yet.
    pub fn new(id: NodeId) -> Self {
        NodeAddr {
            id,
            addrs: Vec::new(),
            hosts: Vec::new(),
        }
    }

    /// Adds a socket address, after those already there; an address already there is not
    /// added twice. An IPv4 address mapped into IPv6 (`[::ffff:192.0.2.7]:4433`) is added
    /// as the IPv4 address; an IPv6 address keeps its scope id (`[fe80::1%2]:4433`) but not
    /// its flow label, which the ticket does not carry.
    pub fn with_addr(mut self, mut addr: SocketAddr) -> Self {
        if let SocketAddr::V6(v6) = &mut addr {
            v6.set_flowinfo(0);
            if let Some(v4) = v6.ip().to_ipv4_mapped() {
                addr = SocketAddr::from((v4, v6.port()));
            }
        }
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
        self
    }

    /// Adds a `host:port` name, resolved when the address is dialed, after those already
    /// there. A name that is an IP address and port is added as a socket address instead.
    ///
    /// # Errors
    ///
    /// [`ParseNodeAddrError`] if `host` is not a host name (letters, digits, `-`, `_` and
    /// `.`, at most 253 characters) followed by `:` and a port.
    pub fn with_host(self, host: &str) -> Result<Self, ParseNodeAddrError> {
        Ok(self.with_entry(parse_entry(host)?))
    }

    fn with_entry(mut self, entry: Entry) -> Self {
        match entry {
            Entry::Addr(addr) => self.with_addr(addr),
            Entry::Host(host) => {
                if !self.hosts.contains(&host) {
                    self.hosts.push(host);
                }
                self
            }
        }
    }

    /// The node's identity.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The socket addresses, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The `host:port` names, in order.
    pub fn hosts(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.hosts.iter().map(String::as_str)
    }

    /// Whether there is no address or name to dial.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.hosts.is_empty()
    }

    /// Builds what a decoder produced as the parser builds a ticket: with the same checks
    /// and the same normalisation.
    fn decoded(
        id: NodeId,
        addrs: Vec<SocketAddr>,
        hosts: Vec<String>,
    ) -> Result<Self, ParseNodeAddrError> {
        let count = addrs.len() + hosts.len();
        if count > NodeAddr::MAX_ADDRS {
            return Err(ParseNodeAddrError::TooManyAddrs(count));
        }
        let mut node = NodeAddr::new(id);
        for addr in addrs {
            node = node.with_addr(addr);
        }
        for host in hosts {
            node = node.with_host(&host)?;
        }
        Ok(node)
    }
}

impl From<NodeId> for NodeAddr {
    fn from(id: NodeId) -> Self {
        NodeAddr::new(id)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        let mut sep = '@';
        for addr in &self.addrs {
            // `SocketAddr` prints IPv6 addresses in brackets (and a scope id as `%n`).
            write!(f, "{sep}{addr}")?;
            sep = ',';
        }
        for host in &self.hosts {
            write!(f, "{sep}{host}")?;
            sep = ',';
        }
        Ok(())
    }
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeAddr({self})")
    }
}

/// Why a string is not a [`NodeAddr`] ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseNodeAddrError {
    /// The part before `@` is not a node id.
    #[error("invalid node address: `{0}` is not a node id (52 base32 characters)")]
    BadNodeId(String),
    /// Nothing follows the `@`, or two commas have nothing between them.
    #[error("invalid node address: an empty address (nothing after `@` or between commas)")]
    EmptyAddr,
    /// An address is neither `ip:port`, `[ipv6]:port` nor `host:port`.
    #[error("invalid node address: `{entry}`: {reason}")]
    BadAddr {
        /// The address as written.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than [`NodeAddr::MAX_ADDRS`] addresses.
    #[error("invalid node address: {0} addresses, at most 16 are accepted")]
    TooManyAddrs(usize),
}

/// One address of a ticket.
enum Entry {
    Addr(SocketAddr),
    Host(String),
}

/// Parses one address: a socket address, or a checked `host:port`.
fn parse_entry(entry: &str) -> Result<Entry, ParseNodeAddrError> {
    let bad = |reason| ParseNodeAddrError::BadAddr {
        entry: entry.chars().take(80).collect(),
        reason,
    };
    if entry.is_empty() {
        return Err(ParseNodeAddrError::EmptyAddr);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Ok(Entry::Addr(addr));
    }
    if entry.starts_with('[') {
        return Err(bad("expected `[ipv6 address]:port`"));
    }
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err(bad("missing `:port`"));
    };
    if host.contains(':') {
        return Err(bad(
            "an IPv6 address must be written in brackets: `[addr]:port`",
        ));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(bad("the port is not a number from 0 to 65535"));
    }
    if host.is_empty() {
        return Err(bad("missing host before `:port`"));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(bad("the host name is longer than 253 characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !host.chars().all(allowed) {
        return Err(bad(
            "a host name has only letters, digits, `-`, `_` and `.`",
        ));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("not an IPv4 address"));
    }
    Ok(Entry::Host(entry.to_string()))
}

impl FromStr for NodeAddr {
    type Err = ParseNodeAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, rest) = match s.split_once('@') {
            Some((id, rest)) => (id, Some(rest)),
            None => (s, None),
        };
        let id: NodeId = id
            .parse()
            .map_err(|_| ParseNodeAddrError::BadNodeId(id.chars().take(80).collect()))?;
        let mut addr = NodeAddr::new(id);
        if let Some(rest) = rest {
            let count = rest.split(',').count();
            if count > NodeAddr::MAX_ADDRS {
                return Err(ParseNodeAddrError::TooManyAddrs(count));
            }
            for entry in rest.split(',') {
                addr = addr.with_entry(parse_entry(entry)?);
            }
        }
        Ok(addr)
    }
}

/// The binary form: the fields themselves. A socket address is its IP address, port and
/// IPv6 scope id (0 for IPv4), since serde's own binary form of a socket address leaves the
/// scope id out.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename = "NodeAddr")]
struct Compact {
    id: NodeId,
    addrs: Vec<(IpAddr, u16, u32)>,
    hosts: Vec<String>,
}

impl serde::Serialize for NodeAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            let addrs = self
                .addrs
                .iter()
                .map(|a| match a {
                    SocketAddr::V4(v4) => (IpAddr::V4(*v4.ip()), v4.port(), 0),
                    SocketAddr::V6(v6) => (IpAddr::V6(*v6.ip()), v6.port(), v6.scope_id()),
                })
                .collect();
            Compact {
                id: self.id,
                addrs,
                hosts: self.hosts.clone(),
            }
            .serialize(serializer)
        }
    }
}

impl<'de> serde::Deserialize<'de> for NodeAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        if deserializer.is_human_readable() {
            let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
            text.parse().map_err(D::Error::custom)
        } else {
            let Compact { id, addrs, hosts } = Compact::deserialize(deserializer)?;
            let addrs = addrs
                .into_iter()
                .map(|(ip, port, scope)| match ip {
                    IpAddr::V4(v4) => SocketAddr::from((v4, port)),
                    IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope)),
                })
                .collect();
            NodeAddr::decoded(id, addrs, hosts).map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeId {
        NodeId::from_bytes([7; 32])
    }

    fn parse(s: &str) -> Result<NodeAddr, ParseNodeAddrError> {
        s.parse()
    }

    #[test]
    fn round_trips_every_kind_of_address() {
        let addr = NodeAddr::new(id())
            .with_addr("127.0.0.1:4433".parse().unwrap())
            .with_addr("[::1]:4433".parse().unwrap())
            .with_host("node-1.example.com:80")
            .unwrap();
        let text = addr.to_string();
        assert_eq!(
            text,
            format!("{}@127.0.0.1:4433,[::1]:4433,node-1.example.com:80", id())
        );
        assert_eq!(parse(&text).unwrap(), addr);
    }

    #[test]
    fn a_node_id_alone_has_no_addresses() {
        let addr = parse(&id().to_string()).unwrap();
        assert!(addr.is_empty());
        assert_eq!(addr.to_string(), id().to_string());
    }

    #[test]
    fn ip_addresses_given_as_names_are_socket_addresses() {
        let addr = NodeAddr::new(id()).with_host("10.0.0.1:9").unwrap();
        assert_eq!(addr.addrs(), &["10.0.0.1:9".parse().unwrap()]);
        assert_eq!(addr.hosts().len(), 0);
    }

    #[test]
    fn duplicates_are_kept_once() {
        let text = format!("{}@127.0.0.1:1,127.0.0.1:1,a.b:2,a.b:2", id());
        let addr = parse(&text).unwrap();
        assert_eq!(addr.addrs().len(), 1);
        assert_eq!(addr.hosts().len(), 1);
    }

    #[test]
    fn bad_tickets_say_what_is_wrong() {
        let id = id();
        let cases: &[(String, &str)] = &[
            ("nonsense@127.0.0.1:1".into(), "not a node id"),
            (format!("{id}@"), "empty address"),
            (format!("{id}@127.0.0.1:1,"), "empty address"),
            (format!("{id}@127.0.0.1"), "missing `:port`"),
            (format!("{id}@::1:4433"), "in brackets"),
            (format!("{id}@[::1]"), "`[ipv6 address]:port`"),
            (format!("{id}@[::1:4433"), "`[ipv6 address]:port`"),
            (format!("{id}@host:99999"), "port"),
            (format!("{id}@host:"), "port"),
            (format!("{id}@:80"), "missing host"),
            (format!("{id}@exa mple:80"), "only letters"),
            (format!("{id}@a/b:80"), "only letters"),
            (format!("{id}@999.1.1.1:80"), "not an IPv4 address"),
            (format!("{id} @127.0.0.1:1"), "not a node id"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let many = vec!["127.0.0.1:1"; NodeAddr::MAX_ADDRS + 1].join(",");
        assert_eq!(
            parse(&format!("{id}@{many}")),
            Err(ParseNodeAddrError::TooManyAddrs(NodeAddr::MAX_ADDRS + 1))
        );
        let long = format!("{id}@{}:80", "a".repeat(254));
        assert!(parse(&long).unwrap_err().to_string().contains("253"));
    }
}
