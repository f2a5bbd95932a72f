//! Limits and timeouts of a node.

use std::time::Duration;

use crate::error::Error;
use crate::wire::{HeaderLimits, FRAME_HEAD};

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
    /// Bytes a peer may send on one stream before this node reads them. Default: 1 MiB.
    pub(crate) stream_window: u32,
    /// Bytes a peer may send on a whole connection before this node reads them.
    /// Default: 16 MiB.
    pub(crate) connection_window: u32,
    /// A connection on which nothing at all is received for this long is closed. Default: 30 s.
    pub(crate) idle_connection_timeout: Duration,
    /// Interval of keep-alive packets that keep an idle connection open. Default: 10 s.
    pub(crate) keep_alive_interval: Duration,
    /// Whether connections to peers on this machine use large datagrams. Default: true.
    pub(crate) fast_loopback: bool,
    /// The longest deadline this node grants a call a peer makes; `None` for no cap.
    /// Default: none.
    pub(crate) max_call_deadline: Option<Duration>,
    /// Whether a handler's panic message travels to the caller. Default: false.
    pub(crate) send_panic_messages: bool,
}

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
            stream_window: 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            idle_connection_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            fast_loopback: true,
            max_call_deadline: None,
            send_panic_messages: false,
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
        if self.max_concurrent_calls == 0 || self.max_concurrent_streams == 0 {
            return err("concurrency limits must be at least 1");
        }
        if self.keep_alive_interval >= self.idle_connection_timeout {
            return err("keep_alive_interval must be shorter than idle_connection_timeout");
        }
        if self.stream_window == 0 || self.connection_window < self.stream_window {
            return err("connection_window must be at least stream_window, which must be > 0");
        }
        Ok(())
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
