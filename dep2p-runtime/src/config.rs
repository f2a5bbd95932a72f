//! Limits and timeouts of a node.

use std::time::Duration;

use crate::wire::FRAME_HEAD;

/// Limits and timeouts of a node, set through [`NodeBuilder`](crate::NodeBuilder).
///
/// Every limit fails only the call that exceeds it, with a typed [`Error`](crate::Error); the
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
    /// Bytes of large incoming messages (over 64 KiB) a connection may have in memory while
    /// they arrive; a stream whose message does not fit waits (and so does its sender).
    /// Default: 64 MiB.
    pub(crate) connection_buffer: usize,
    /// Accepted connections open at once. Default: 4,096.
    pub(crate) max_connections: usize,
    /// Calls a connection may have running on this node at once; more are refused with
    /// [`Error::Overloaded`](crate::Error::Overloaded). Default: 1,024.
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_message_size: 16 * 1024 * 1024,
            connection_buffer: 64 * 1024 * 1024,
            max_connections: 4096,
            max_concurrent_calls: 1024,
            max_concurrent_streams: 128,
            header_timeout: Duration::from_secs(10),
            idle_stream_timeout: Duration::from_secs(300),
            stream_window: 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            idle_connection_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            fast_loopback: true,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let err = |msg: &str| Err(crate::Error::Config(msg.to_string()));
        if self.max_message_size == 0 || self.max_message_size >= u32::MAX as usize {
            return err("max_message_size must be between 1 and 2^32 - 2 bytes");
        }
        if self.connection_buffer > tokio::sync::Semaphore::MAX_PERMITS {
            return err("connection_buffer is too large");
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

    /// The QUIC transport settings of a connection; `loopback` for a peer on this machine.
    ///
    /// Every connection keeps quinn's safe start (1,200-byte datagrams) and MTU discovery, which
    /// probes upward to quinn's Ethernet-sized bound (1,452 bytes) and backs off on loss. With
    /// segmentation offload on, as it is there, discovery must not go much higher: a batch of
    /// large datagrams exceeds what one `sendmsg` may carry, is dropped, and black-hole
    /// detection then pins the connection to 1,200 bytes. A loopback connection, where the path is known,
    /// starts with datagrams close to the 64 KiB UDP maximum: about 45 times fewer packets to
    /// encrypt and acknowledge for bulk data. That needs two companions: segmentation offload
    /// off (a batch of ten such datagrams exceeds what one `sendmsg` may carry), and an initial
    /// congestion window of ten datagrams (RFC 9002), since quinn's fixed default is smaller
    /// than one of them.
    /// The connection buffer in force: never smaller than one message of the largest size.
    pub(crate) fn connection_buffer(&self) -> usize {
        self.connection_buffer
            .max(self.max_message_size + FRAME_HEAD)
    }

    pub(crate) fn transport(&self, loopback: bool) -> Result<quinn::TransportConfig, crate::Error> {
        let mut t = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_connection_timeout)
            .map_err(|_| crate::Error::Config("idle_connection_timeout too large".into()))?;
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive_interval))
            .max_concurrent_bidi_streams(self.max_concurrent_streams.into())
            .max_concurrent_uni_streams(self.max_concurrent_streams.into())
            .stream_receive_window(self.stream_window.into())
            .receive_window(self.connection_window.into())
            .send_window(u64::from(self.connection_window));
        if loopback && self.fast_loopback {
            let mut discovery = quinn::MtuDiscoveryConfig::default();
            discovery.upper_bound(MAX_UDP_PAYLOAD);
            t.initial_mtu(LOOPBACK_MTU)
                .mtu_discovery_config(Some(discovery))
                .enable_segmentation_offload(false);
            let mut cubic = quinn::congestion::CubicConfig::default();
            cubic.initial_window(10 * u64::from(LOOPBACK_MTU));
            t.congestion_controller_factory(std::sync::Arc::new(cubic));
        }
        Ok(t)
    }
}

/// The largest UDP payload a node accepts, advertised to peers, and the ceiling of MTU
/// discovery: 65,535 bytes less the IPv4 and UDP headers.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 65_507;

/// The datagram size a loopback connection starts with.
pub(crate) const LOOPBACK_MTU: u16 = 65_000;

/// Socket buffer size requested for the node's UDP socket. The system default (about
/// 208 KiB on Linux) drops datagrams in bulk transfers.
pub(crate) const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
