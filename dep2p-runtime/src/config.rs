//! Limits and timeouts of a node.

use std::time::Duration;

use crate::error::Error;
use crate::intercept::ClientLayers;
use crate::wire::{Compression, HeaderLimits, FRAME_HEAD};

/// Default flow-control window of one stream. Large enough that one stream carries bulk data
/// at full speed on loopback with the loopback transport profile, and small enough that every
/// stream a peer may open fits in the connection window.
const STREAM_WINDOW: u32 = 512 * 1024;

/// Default flow-control window of a connection: a full stream window for each of the 128
/// streams a peer may open by default (64 MiB), plus 16 MiB for the calls that are read.
const CONNECTION_WINDOW: u32 = 128 * STREAM_WINDOW + 16 * 1024 * 1024;

/// Limits and timeouts of a node, set through [`NodeBuilder`](crate::node::NodeBuilder).
///
/// Every limit fails only the call that exceeds it, with a typed [`Error`]; the
/// connection and the node keep working.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Default deadline of a request-response call or a notification. Default: 30 s.
    pub(crate) request_timeout: Duration,
    /// Time allowed to establish a connection. Default: 10 s.
    pub(crate) connect_timeout: Duration,
    /// Largest message (one encoded argument tuple, item or result) accepted or sent.
    /// Default: 16 MiB.
    pub(crate) max_message_size: usize,
    /// Bytes of incoming frames a connection may have in memory: large ones (over 64 KiB)
    /// while they arrive, and any call's first frame while the call holds it. A large frame
    /// that does not fit waits (and so does its sender); a call that does not fit is refused.
    /// Default: 64 MiB.
    pub(crate) connection_buffer: usize,
    /// The same, for all of a node's connections together. Default: 256 MiB.
    pub(crate) memory_budget: usize,
    /// Bounds of a call header, sent or received. Default: 64 metadata entries of at most
    /// 8 KiB each, 16 KiB in all.
    pub(crate) header: HeaderLimits,
    /// Accepted connections open at once, counted from the end of their handshake.
    /// Default: 4,096.
    pub(crate) max_connections: usize,
    /// Handshakes of connections from other nodes in progress at once. Default: 1,024.
    pub(crate) max_handshakes: usize,
    /// Accepted connections (handshakes included) from one IP address. Default: 2,048.
    pub(crate) max_connections_per_ip: usize,
    /// Calls a connection may have running on this node at once; more are refused with
    /// [`Error::Overloaded`](Error::Overloaded). Default: 1,024.
    pub(crate) max_concurrent_calls: usize,
    /// Streams (calls) the peer may have open towards this node at once, per direction; a
    /// caller over this waits for a free one. Default: 128.
    pub(crate) max_concurrent_streams: u32,
    /// Time allowed between a stream opening and its call header arriving. Default: 10 s.
    pub(crate) header_timeout: Duration,
    /// A stream on which nothing moves for this long is ended. Default: 5 min.
    pub(crate) idle_stream_timeout: Duration,
    /// Bytes a peer may send on one stream before this node reads them. Default: 512 KiB.
    pub(crate) stream_window: u32,
    /// Bytes a peer may send on a whole connection before this node reads them: enough for
    /// every stream the peer may open to hold a full window unread, with room to spare (see
    /// [`Config::min_connection_window`]). Default: 80 MiB.
    pub(crate) connection_window: u32,
    /// A connection on which nothing at all is received for this long is closed. Default: 7 s.
    pub(crate) idle_connection_timeout: Duration,
    /// Interval of keep-alive packets that keep an idle connection open. Default: 2 s.
    pub(crate) keep_alive_interval: Duration,
    /// Whether connections to peers on this machine use large datagrams. Default: true.
    pub(crate) fast_loopback: bool,
    /// The longest deadline this node grants a call a peer makes; `None` for no cap.
    /// Default: none.
    pub(crate) max_call_deadline: Option<Duration>,
    /// Whether a handler's panic message travels to the caller. Default: false.
    pub(crate) send_panic_messages: bool,
    /// The newest protocol version this node offers; it offers every version from 1 up to
    /// it. Default: 2, the newest.
    pub(crate) protocol_version: u8,
    /// Addresses other nodes reach this one at, listed first in its `NodeAddr`.
    /// Default: none.
    pub(crate) advertise: Vec<std::net::SocketAddr>,
    /// Which messages this node compresses before sending them. Default: none.
    pub(crate) compression: Compression,
    /// Hooks run around every call this node makes. Default: none.
    pub(crate) client_layers: ClientLayers,
    /// Whether this node accepts QUIC datagrams (and so `#[datagram]` calls). Default: true.
    pub(crate) datagrams: bool,
    /// Datagram handlers a connection may have running at once; a datagram arriving when all
    /// are busy is dropped and counted. Default: 64.
    pub(crate) max_datagram_handlers: usize,
    /// How long a call polled in its connection's accept loop may take before the loop
    /// spawns its next calls without polling them; `None`: every call is spawned.
    /// Default: 200 µs.
    pub(crate) inline_limit: Option<Duration>,
}

/// The default [`Config::inline_limit`]: far beyond what serving a call that needs no wait
/// takes (a few microseconds to a few tens), and within what tokio asks of code between two
/// waits.
pub(crate) const INLINE_LIMIT: Duration = Duration::from_micros(200);

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_message_size: 16 * 1024 * 1024,
            connection_buffer: 64 * 1024 * 1024,
            memory_budget: 256 * 1024 * 1024,
            header: HeaderLimits::default(),
            max_connections: 4096,
            max_handshakes: 1024,
            max_connections_per_ip: 2048,
            max_concurrent_calls: 1024,
            max_concurrent_streams: 128,
            header_timeout: Duration::from_secs(10),
            idle_stream_timeout: Duration::from_secs(300),
            stream_window: STREAM_WINDOW,
            connection_window: CONNECTION_WINDOW,
            idle_connection_timeout: Duration::from_secs(7),
            keep_alive_interval: Duration::from_secs(2),
            fast_loopback: true,
            max_call_deadline: None,
            send_panic_messages: false,
            protocol_version: crate::wire::VERSION_NEWEST,
            advertise: Vec::new(),
            compression: Compression::off(),
            client_layers: ClientLayers::default(),
            datagrams: true,
            max_datagram_handlers: 64,
            inline_limit: Some(INLINE_LIMIT),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let err = |msg: &str| Err(Error::Config(msg.to_string()));
        let zero = [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("header_timeout", self.header_timeout),
            ("idle_stream_timeout", self.idle_stream_timeout),
            ("idle_connection_timeout", self.idle_connection_timeout),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, d)| d.is_zero()) {
            return Err(Error::Config(format!("{name} must be longer than zero")));
        }
        if self.max_call_deadline.is_some_and(|d| d.is_zero()) {
            return err("max_call_deadline must be longer than zero");
        }
        if self.max_connections == 0 {
            return err("max_connections must be at least 1");
        }
        if self.max_message_size == 0 || self.max_message_size >= u32::MAX as usize {
            return err("max_message_size must be between 1 and 2^32 - 2 bytes");
        }
        if self.connection_buffer > tokio::sync::Semaphore::MAX_PERMITS {
            return err("connection_buffer is too large");
        }
        if self.memory_budget > tokio::sync::Semaphore::MAX_PERMITS {
            return err("memory_budget is too large");
        }
        if self.header.max_size < 1024 {
            return err("max_header_size must be at least 1,024 bytes");
        }
        if !(1..=crate::wire::VERSION_NEWEST).contains(&self.protocol_version) {
            return Err(Error::Config(format!(
                "protocol_version must be between 1 and {}",
                crate::wire::VERSION_NEWEST
            )));
        }
        if self.max_concurrent_calls == 0
            || self.max_concurrent_streams == 0
            || self.max_datagram_handlers == 0
        {
            return err("concurrency limits must be at least 1");
        }
        if self.keep_alive_interval >= self.idle_connection_timeout {
            return err("keep_alive_interval must be shorter than idle_connection_timeout");
        }
        if self.stream_window == 0 {
            return err("stream_window must be at least 1 byte");
        }
        let min = self.min_connection_window();
        if u64::from(self.connection_window) < min {
            return Err(Error::Config(format!(
                "connection_window ({} bytes) must be at least {min} bytes with \
                 max_concurrent_streams {} and stream_window {}: otherwise streams nobody reads \
                 can take the whole connection window and stall every other call",
                self.connection_window, self.max_concurrent_streams, self.stream_window
            )));
        }
        Ok(())
    }

    /// The smallest connection window that streams nobody reads cannot fill.
    ///
    /// A stream whose data is not read holds at most one stream window of the connection
    /// window. The window must take `max_concurrent_streams` such streams (every call a peer
    /// may have open towards this node, or as many of this node's own calls whose responses
    /// it leaves unread) and still leave room: at least one stream window, so that another
    /// call can move, and at least an eighth of the connection window, since quinn grants the
    /// peer more connection credit only once an eighth of the window has been read since the
    /// last grant; with less room, the other calls could never read enough to earn it.
    pub(crate) fn min_connection_window(&self) -> u64 {
        let unread = u64::from(self.max_concurrent_streams) * u64::from(self.stream_window);
        let room = u64::from(self.stream_window);
        // `unread` at most 7/8 of the window, rounded up.
        (unread + room).max((unread * 8).div_ceil(7))
    }

    /// The deadline this node grants a call of `kind` that asked for `requested` (`None`: no
    /// deadline): the caller's, cut to the node's cap. Request-response calls and
    /// notifications that arrive without one get the request timeout.
    pub(crate) fn granted_deadline(
        &self,
        kind: crate::wire::Kind,
        requested: Option<Duration>,
    ) -> Option<Duration> {
        use crate::wire::Kind;
        let requested = requested.or(match kind {
            Kind::Unary | Kind::Notify => Some(self.request_timeout),
            _ => None,
        });
        match (requested, self.max_call_deadline) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (None, cap) => cap,
            (asked, None) => asked,
        }
    }

    /// The connection buffer in force: never smaller than one message of the largest size.
    pub(crate) fn connection_buffer(&self) -> usize {
        self.connection_buffer
            .max(self.max_message_size + FRAME_HEAD)
    }

    /// The node's memory budget in force: never smaller than one message of the largest size.
    pub(crate) fn memory_budget(&self) -> usize {
        self.memory_budget.max(self.max_message_size + FRAME_HEAD)
    }
}
