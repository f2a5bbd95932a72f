//! The baseline: the same work over raw quinn with minimal framing. Every call is one
//! bidirectional stream; every message is one frame, a 4-byte little-endian length and the
//! bytes, written with one `write_chunk`. A call's first frame starts with an operation byte.
//! quinn's default configuration throughout, except the stream limit of the server that holds
//! calls in flight, unless the loopback profile is asked for (see [`Profile`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use crate::work::{self, ServerState};

const OP_ECHO: u8 = 1;
const OP_DOWNLOAD: u8 = 2;
const OP_UPLOAD: u8 = 3;
const OP_PING: u8 = 4;
const OP_HOLD: u8 = 5;

const SERVER_NAME: &str = "localhost";

/// Transport settings of the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// quinn's defaults.
    Default,
    /// Settings for a path known to be loopback: 64 KB datagrams from the start (with
    /// segmentation offload off, since ten of them exceed one `sendmsg`), an initial congestion
    /// window of ten datagrams, and 4 MiB socket buffers.
    Loopback,
}

/// Largest UDP payload: 65,535 bytes less the IPv4 and UDP headers.
const MAX_UDP_PAYLOAD: u16 = 65_507;
/// Datagram size a loopback connection starts with.
const LOOPBACK_MTU: u16 = 65_000;
/// Socket buffer size of the loopback profile.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// The transport configuration for `profile`; `max_streams` raises the limit of concurrent
/// bidirectional streams (default 100). `None` when quinn's defaults apply unchanged.
fn transport(profile: Profile, max_streams: Option<u32>) -> Option<quinn::TransportConfig> {
    if profile == Profile::Default && max_streams.is_none() {
        return None;
    }
    let mut t = quinn::TransportConfig::default();
    if let Some(n) = max_streams {
        t.max_concurrent_bidi_streams(n.into());
    }
    if profile == Profile::Loopback {
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(LOOPBACK_MTU);
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(10 * u64::from(LOOPBACK_MTU));
        t.initial_mtu(LOOPBACK_MTU)
            .mtu_discovery_config(Some(discovery))
            .enable_segmentation_offload(false)
            .congestion_controller_factory(Arc::new(cubic));
    }
    Some(t)
}

/// An endpoint bound to `addr` with the socket and endpoint settings of `profile`.
fn endpoint(
    profile: Profile,
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> quinn::Endpoint {
    let socket = std::net::UdpSocket::bind(addr).expect("bind a UDP socket");
    let mut config = quinn::EndpointConfig::default();
    if profile == Profile::Loopback {
        let state = quinn::udp::UdpSocketState::new((&socket).into()).expect("socket state");
        // Best effort: the system may cap the sizes.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
        config
            .max_udp_payload_size(MAX_UDP_PAYLOAD)
            .expect("a valid UDP payload size");
    }
    quinn::Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime))
        .expect("start a quinn endpoint")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A frame: the length, then `head` (if any), then `body`.
fn frame(head: Option<u8>, body: &[u8]) -> Bytes {
    let len = body.len() + usize::from(head.is_some());
    let mut v = Vec::with_capacity(4 + len);
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend(head);
    v.extend_from_slice(body);
    Bytes::from(v)
}

/// A frame holding a fresh [`work::payload`], built in place.
fn payload_frame(head: Option<u8>, index: u64, len: usize) -> Bytes {
    let start = 4 + usize::from(head.is_some());
    let mut v = vec![index as u8; start + len];
    v[..4].copy_from_slice(&((start - 4 + len) as u32).to_le_bytes());
    if let Some(op) = head {
        v[4] = op;
    }
    work::put_index(&mut v[start..], index);
    Bytes::from(v)
}

/// Reads length-prefixed frames from a receive stream.
struct Frames {
    recv: quinn::RecvStream,
    buf: BytesMut,
}

impl Frames {
    fn new(recv: quinn::RecvStream) -> Frames {
        Frames {
            recv,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or `None` at a clean end of the stream.
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if self.buf.len() >= 4 {
                let len = self.buf.as_ref().get_u32_le() as usize;
                if len > work::MAX_MESSAGE {
                    return Err(format!("frame of {len} bytes"));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
                self.buf.reserve(4 + len - self.buf.len());
            } else if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8192);
            }
            let read = self
                .recv
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err("stream ended inside a frame".into())
                };
            }
        }
    }

    /// The next frame, which must be there.
    async fn expect(&mut self) -> Result<Bytes, String> {
        self.next()
            .await?
            .ok_or_else(|| "stream ended early".to_string())
    }

    /// Notices, without waiting, a clean end that has already arrived.
    fn try_finish(&mut self) {
        let _ = self.next().now_or_never();
    }
}

/// Binds the baseline server. `max_streams` raises quinn's limit of concurrent
/// bidirectional streams per connection (default 100).
pub(crate) fn serve(
    addr: SocketAddr,
    max_streams: Option<u32>,
    profile: Profile,
    state: Arc<ServerState>,
) -> (quinn::Endpoint, SocketAddr) {
    let certified =
        rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()]).expect("make a cert");
    let cert = certified.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .expect("server cert");
    let crypto = QuicServerConfig::try_from(crypto).expect("QUIC server crypto");
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    if let Some(transport) = transport(profile, max_streams) {
        config.transport_config(Arc::new(transport));
    }
    let endpoint = endpoint(profile, addr, Some(config));
    let local = endpoint.local_addr().expect("server address");
    tokio::spawn(accept(endpoint.clone(), state));
    (endpoint, local)
}

async fn accept(endpoint: quinn::Endpoint, state: Arc<ServerState>) {
    while let Some(incoming) = endpoint.accept().await {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_stream(send, recv, Arc::clone(&state)));
            }
        });
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    state: Arc<ServerState>,
) {
    let mut frames = Frames::new(recv);
    if let Err(err) = serve_call(&mut send, &mut frames, &state).await {
        eprintln!("quinn server: call failed: {err}");
        let _ = send.reset(1u32.into());
        let _ = frames.recv.stop(1u32.into());
    }
}

async fn write(send: &mut quinn::SendStream, bytes: Bytes) -> Result<(), String> {
    send.write_chunk(bytes).await.map_err(|e| e.to_string())
}

async fn serve_call(
    send: &mut quinn::SendStream,
    frames: &mut Frames,
    state: &ServerState,
) -> Result<(), String> {
    let first = frames.expect().await?;
    let (&op, args) = first.split_first().ok_or("empty first frame")?;
    match op {
        OP_ECHO => {
            frames.try_finish();
            write(send, frame(None, args)).await?;
        }
        OP_DOWNLOAD => {
            let arg = |i: usize| -> Result<u32, String> {
                let bytes = args.get(i..i + 4).ok_or("short download request")?;
                Ok(u32::from_le_bytes(
                    bytes.try_into().map_err(|_| "bad request")?,
                ))
            };
            let (count, size) = (arg(0)?, arg(4)? as usize);
            if size > work::MAX_MESSAGE {
                return Err(format!("message size {size}"));
            }
            frames.try_finish();
            for i in 0..count {
                write(send, payload_frame(None, u64::from(i), size)).await?;
            }
        }
        OP_UPLOAD => {
            let mut total = 0u64;
            while let Some(chunk) = frames.next().await? {
                total += chunk.len() as u64;
            }
            write(send, frame(None, &total.to_le_bytes())).await?;
        }
        OP_PING => {
            while let Some(ping) = frames.next().await? {
                write(send, frame(None, &ping)).await?;
            }
        }
        OP_HOLD => {
            frames.try_finish();
            state.hold().await;
            write(send, frame(None, args)).await?;
        }
        other => return Err(format!("unknown operation {other}")),
    }
    send.finish().map_err(|e| e.to_string())
}

/// Accepts the server's certificate without checking who issued it; handshake signatures are
/// still verified.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_endpoint(profile: Profile) -> quinn::Endpoint {
    let provider = provider();
    let crypto = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    let crypto = QuicClientConfig::try_from(crypto).expect("QUIC client crypto");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    if let Some(transport) = transport(profile, None) {
        config.transport_config(Arc::new(transport));
    }
    let mut endpoint = endpoint(profile, "127.0.0.1:0".parse().expect("address"), None);
    endpoint.set_default_client_config(config);
    endpoint
}

async fn dial(endpoint: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    endpoint
        .connect(addr, SERVER_NAME)
        .expect("start connecting")
        .await
        .expect("connect to the quinn server")
}

/// One echo call: request frame out, reply frame back.
async fn echo(conn: &quinn::Connection, index: u64, size: usize) -> Bytes {
    let (mut send, recv) = conn.open_bi().await.expect("open stream");
    send.write_chunk(payload_frame(Some(OP_ECHO), index, size))
        .await
        .expect("write request");
    let _ = send.finish();
    let mut frames = Frames::new(recv);
    let reply = frames.expect().await.expect("read reply");
    frames.try_finish();
    reply
}

/// A client endpoint with one connection to the server.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl Client {
    /// `n` connections to the server from one client endpoint.
    pub(crate) async fn connect_many(addr: SocketAddr, profile: Profile, n: usize) -> Vec<Client> {
        let endpoint = client_endpoint(profile);
        futures::stream::iter(0..n)
            .map(|_| {
                let endpoint = endpoint.clone();
                async move {
                    let conn = dial(&endpoint, addr).await;
                    Client {
                        _endpoint: endpoint,
                        conn,
                    }
                }
            })
            .buffer_unordered(32)
            .collect()
            .await
    }

    pub(crate) async fn connect(addr: SocketAddr, profile: Profile) -> Client {
        let endpoint = client_endpoint(profile);
        let conn = dial(&endpoint, addr).await;
        Client {
            _endpoint: endpoint,
            conn,
        }
    }

    pub(crate) async fn echo_sequential(
        &self,
        first: u64,
        calls: usize,
        size: usize,
        mut samples: Option<&mut Vec<u64>>,
    ) {
        for i in first..first + calls as u64 {
            let start = Instant::now();
            let reply = echo(&self.conn, i, size).await;
            let took = start.elapsed();
            assert!(
                work::is_payload(&reply, i, size),
                "echo {i} came back wrong"
            );
            if let Some(samples) = samples.as_deref_mut() {
                samples.push(took.as_nanos() as u64);
            }
        }
    }

    pub(crate) async fn echo_concurrent(
        &self,
        callers: usize,
        calls: usize,
        size: usize,
    ) -> Duration {
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<JoinHandle<()>> = (0..callers)
            .map(|_| {
                let conn = self.conn.clone();
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= calls {
                            break;
                        }
                        let i = i as u64;
                        let reply = echo(&conn, i, size).await;
                        assert!(
                            work::is_payload(&reply, i, size),
                            "echo {i} came back wrong"
                        );
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("caller task");
        }
        start.elapsed()
    }

    pub(crate) async fn download(&self, count: usize, size: usize) -> Duration {
        let count32 = u32::try_from(count).expect("message count fits in u32");
        let size32 = u32::try_from(size).expect("message size fits in u32");
        let start = Instant::now();
        let (mut send, recv) = self.conn.open_bi().await.expect("open stream");
        let mut args = [0u8; 8];
        args[..4].copy_from_slice(&count32.to_le_bytes());
        args[4..].copy_from_slice(&size32.to_le_bytes());
        send.write_chunk(frame(Some(OP_DOWNLOAD), &args))
            .await
            .expect("write request");
        let _ = send.finish();
        let mut frames = Frames::new(recv);
        let mut n = 0u64;
        while let Some(msg) = frames.next().await.expect("download message") {
            assert!(
                work::looks_like_payload(&msg, n, size),
                "message {n} came wrong"
            );
            n += 1;
        }
        let took = start.elapsed();
        assert_eq!(n, count as u64, "messages received");
        took
    }

    pub(crate) async fn upload(&self, total: usize, size: usize) -> Duration {
        assert_eq!(total % size, 0, "upload size is a multiple of message size");
        let start = Instant::now();
        let (mut send, recv) = self.conn.open_bi().await.expect("open stream");
        send.write_chunk(frame(Some(OP_UPLOAD), &[]))
            .await
            .expect("write request");
        for i in 0..(total / size) as u64 {
            send.write_chunk(payload_frame(None, i, size))
                .await
                .expect("upload message");
        }
        send.finish().expect("finish upload");
        let mut frames = Frames::new(recv);
        let reply = frames.expect().await.expect("upload result");
        let took = start.elapsed();
        let received = u64::from_le_bytes(reply[..].try_into().expect("an 8-byte count"));
        assert_eq!(received, total as u64, "bytes the server counted");
        took
    }

    pub(crate) async fn ping_pong(&self, trips: usize, size: usize, samples: &mut Vec<u64>) {
        let (mut send, recv) = self.conn.open_bi().await.expect("open stream");
        send.write_chunk(frame(Some(OP_PING), &[]))
            .await
            .expect("write request");
        let mut frames = Frames::new(recv);
        for i in 0..trips as u64 {
            let start = Instant::now();
            send.write_chunk(payload_frame(None, i, size))
                .await
                .expect("send ping");
            let pong = frames
                .next()
                .await
                .expect("receive pong")
                .expect("a pong for every ping");
            samples.push(start.elapsed().as_nanos() as u64);
            assert!(work::is_payload(&pong, i, size), "pong {i} came back wrong");
        }
        send.finish().expect("finish pings");
        assert!(
            frames.next().await.expect("end of pongs").is_none(),
            "no pong after the last ping"
        );
    }

    pub(crate) fn start_holds(&self, n: usize) -> JoinHandle<()> {
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let mut calls: FuturesUnordered<_> = (0..n as u64)
                .map(|token| {
                    let conn = conn.clone();
                    async move {
                        let (mut send, recv) = conn.open_bi().await.expect("open stream");
                        send.write_chunk(frame(Some(OP_HOLD), &token.to_le_bytes()))
                            .await
                            .expect("write request");
                        let _ = send.finish();
                        let mut frames = Frames::new(recv);
                        let reply = frames.expect().await.expect("held call's reply");
                        frames.try_finish();
                        (token, reply)
                    }
                })
                .collect();
            let mut returned = 0;
            while let Some((token, reply)) = calls.next().await {
                assert_eq!(reply[..], token.to_le_bytes(), "held call's token");
                returned += 1;
            }
            assert_eq!(returned, n, "held calls returned");
        })
    }
}

/// Connections kept open (and idle) until dropped.
#[derive(Debug)]
pub(crate) struct Idle {
    _endpoint: quinn::Endpoint,
    _conns: Vec<quinn::Connection>,
}

/// Opens `n` connections from one client endpoint, checking each with one echo call.
pub(crate) async fn open_idle(addr: SocketAddr, profile: Profile, n: usize, size: usize) -> Idle {
    let endpoint = client_endpoint(profile);
    let conns: Vec<quinn::Connection> = futures::stream::iter(0..n as u64)
        .map(|i| {
            let endpoint = endpoint.clone();
            async move {
                let conn = dial(&endpoint, addr).await;
                let reply = echo(&conn, i, size).await;
                assert!(
                    work::is_payload(&reply, i, size),
                    "echo {i} came back wrong"
                );
                conn
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    Idle {
        _endpoint: endpoint,
        _conns: conns,
    }
}
