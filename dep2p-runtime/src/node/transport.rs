//! Transport settings: QUIC's per-connection configuration for peers elsewhere and on this
//! machine, and the node's UDP socket.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;

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
///
/// MTU discovery on a loopback connection has nothing to find above its starting size: its
/// upper bound is that size, so a healthy loopback path is never probed. Each probe is a
/// datagram of the full probed size, written into quinn's per-connection send buffer (sized
/// to the MTU), and that write is what made every loopback connection hold 64 KiB of
/// resident memory even when idle. Discovery stays on: after black-hole detection drops the
/// connection to 1,200 bytes, it probes back up to the starting size.
pub(crate) fn transport(config: &Config, loopback: bool) -> Result<quinn::TransportConfig, Error> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.idle_connection_timeout)
        .map_err(|_| Error::Config("idle_connection_timeout too large".into()))?;
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.keep_alive_interval))
        .max_concurrent_bidi_streams(config.max_concurrent_streams.into())
        .max_concurrent_uni_streams(config.max_concurrent_streams.into())
        .stream_receive_window(config.stream_window.into())
        .receive_window(config.connection_window.into())
        .send_window(u64::from(config.connection_window).min(SEND_WINDOW));
    if !config.datagrams {
        // Tells peers, in the transport parameters, that no datagram is accepted.
        t.datagram_receive_buffer_size(None);
    }
    if loopback && config.fast_loopback {
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(LOOPBACK_MTU);
        t.initial_mtu(LOOPBACK_MTU)
            .mtu_discovery_config(Some(discovery))
            .enable_segmentation_offload(false);
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(10 * u64::from(LOOPBACK_MTU));
        t.congestion_controller_factory(std::sync::Arc::new(cubic));
    }
    Ok(t)
}

/// The most a connection holds of what it sends and the peer has not acknowledged. The
/// connection window (what the peer may send) is sized to hold every stream's window unread;
/// what this node sends needs no such room, and a peer that stops acknowledging holds no more
/// than this of the node's memory.
pub(crate) const SEND_WINDOW: u64 = 16 * 1024 * 1024;

/// The largest UDP payload a node accepts, advertised to peers: 65,535 bytes less the IPv4
/// and UDP headers.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 65_507;

/// The datagram size a loopback connection starts with, and the ceiling of its MTU
/// discovery. It fits IPv6 loopback too (65,536 bytes less 48 of headers).
pub(crate) const LOOPBACK_MTU: u16 = 65_000;

/// Socket buffer size requested for the node's UDP socket. The system default (about
/// 208 KiB on Linux) drops datagrams in bulk transfers.
pub(crate) const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Transport settings for peers elsewhere and for peers on this machine.
#[derive(Clone)]
pub(crate) struct Transports {
    pub(crate) wan: Arc<quinn::TransportConfig>,
    pub(crate) loopback: Arc<quinn::TransportConfig>,
}

impl Transports {
    pub(crate) fn new(config: &Config) -> Result<Self, Error> {
        Ok(Transports {
            wan: Arc::new(transport(config, false)?),
            loopback: Arc::new(transport(config, true)?),
        })
    }

    pub(crate) fn for_peer(&self, addr: SocketAddr) -> Arc<quinn::TransportConfig> {
        if addr.ip().is_loopback() {
            Arc::clone(&self.loopback)
        } else {
            Arc::clone(&self.wan)
        }
    }
}

/// A UDP socket bound to `addr`, with buffers large enough for bulk transfers.
pub(crate) fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4 peers too where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the system may cap the sizes, which only costs speed.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The node's socket as quinn drives it: on Linux, one that is not woken after every datagram
/// it sends (see `node/socket.rs`); elsewhere, quinn's.
pub(crate) fn async_socket(
    socket: std::net::UdpSocket,
) -> Result<Arc<dyn quinn::AsyncUdpSocket>, Error> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        Ok(Arc::new(super::socket::Socket::new(socket)?))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        use quinn::Runtime;
        Ok(quinn::TokioRuntime.wrap_udp_socket(socket)?)
    }
}
