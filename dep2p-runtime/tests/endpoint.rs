//! The node's endpoint: which connection attempts it takes on and when, what a refused peer
//! sees, shutdown, restarts, and what the TLS handshake offers and refuses.

#[path = "endpoint/child.rs"]
mod child;
mod common;
#[path = "endpoint/relay.rs"]
mod relay;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use child::NodeProcess;
use common::raw::{self, alerts};
use common::*;
use dep2p_runtime::{Error, Node, SecretKey};
use relay::{Mode, Relay};
use rustls::pki_types::ServerName;
use rustls::SignatureScheme;

/// How long a refusal may take to reach a dialer: a few round trips on loopback, with room
/// for a loaded machine. Waiting out a connect timeout takes longer.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A client node that gives up dialing after `timeout`.
async fn dialer(timeout: Duration) -> Node {
    node(Node::builder().connect_timeout(timeout)).await
}

fn serving(builder: dep2p_runtime::NodeBuilder) -> dep2p_runtime::NodeBuilder {
    builder.serve(TestService { probe: probe() })
}

/// Starts a handshake with `server` that never completes (a relay drops all the server sends
/// but Retry packets) and waits until the server has it in progress. Keep both values: the
/// handshake lasts until the server gives up on it.
async fn stalled_handshake(server: &Node) -> (Relay, Node) {
    let relay = Relay::new(server.local_addr(), Mode::Stall).await;
    let client = dialer(Duration::from_secs(30)).await;
    let (addr, id, dialing) = (relay.addr(), server.id(), client.clone());
    tokio::spawn(async move {
        let _ = dialing.connect(addr, id).await;
    });
    relay.wait_for_handshake().await;
    (relay, client)
}

/// Dials `server` from a new node, expecting a prompt refusal.
async fn refused(server: &Node) -> Error {
    let client = dialer(Duration::from_secs(10)).await;
    let started = Instant::now();
    let result = client.connect(server.local_addr(), server.id()).await;
    let err = result.expect_err("the dial was accepted");
    assert!(
        started.elapsed() < PROMPTLY,
        "refused only after {:?}: {err}",
        started.elapsed()
    );
    err
}

/// Dials `server` from a new node until a connection is made, for up to five seconds.
async fn dial_until_accepted(server: &Node) -> (Node, dep2p_runtime::Connection) {
    let started = Instant::now();
    loop {
        let client = dialer(Duration::from_secs(1)).await;
        match client.connect(server.local_addr(), server.id()).await {
            Ok(conn) => return (client, conn),
            Err(err) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "still refused: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn handshakes_in_progress_hold_no_connection_places() {
    let server = node(serving(Node::builder().max_connections(2))).await;
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_handshake(&server).await);
    }
    // Three handshakes in progress, and both places still free.
    let (a, b) = (dialer(PROMPTLY).await, dialer(PROMPTLY).await);
    let first = a.connect(server.local_addr(), server.id()).await.unwrap();
    let second = b.connect(server.local_addr(), server.id()).await.unwrap();
    assert_eq!(echo(&first, "one").await.unwrap(), "one");
    assert_eq!(echo(&second, "two").await.unwrap(), "two");
    // Established connections do count.
    let err = refused(&server).await;
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_handshake_completing_on_a_full_node_is_closed_at_once() {
    let server = node(serving(Node::builder().max_connections(1))).await;
    // The late dialer finishes its half of the handshake; the node does not see the end of it
    // until the relay lets it through. (Its `connect` waits for the node's confirmation, so
    // it runs on its own task.)
    let relay = Relay::new(server.local_addr(), Mode::Hold).await;
    let late = dialer(PROMPTLY).await;
    let to = relay.addr();
    let id = server.id();
    let late_connect = tokio::spawn(async move { late.connect(to, id).await });
    relay.wait_for_handshake().await;
    // Meanwhile another dialer takes the only place.
    let early = dialer(PROMPTLY).await;
    let early_conn = early
        .connect(server.local_addr(), server.id())
        .await
        .expect("the place is free while the other handshake is in progress");
    relay.release().await;
    // The late dialer learns it either as its connect ends or right after.
    let reason = tokio::time::timeout(PROMPTLY, async {
        match late_connect.await.unwrap() {
            Ok(conn) => conn.closed().await,
            Err(err) => err,
        }
    })
    .await
    .expect("the late connection was not closed at once");
    match &reason {
        Error::ConnectionLost(message)
        | Error::Unreachable {
            reason: message, ..
        } => {
            assert!(message.contains("limit"), "{message}")
        }
        other => panic!("closed with {other:?}"),
    }
    assert_eq!(echo(&early_conn, "kept").await.unwrap(), "kept");
}

#[tokio::test]
async fn handshakes_in_progress_are_limited() {
    // Two at most; the server gives up on a handshake after 1.5 s.
    let server = node(serving(
        Node::builder()
            .max_handshakes(2)
            .connect_timeout(Duration::from_millis(1500)),
    ))
    .await;
    let _first = stalled_handshake(&server).await;
    let second = stalled_handshake(&server).await;
    // Past a quarter of the limit (here one), a dialer first proves its address.
    assert!(second.0.saw_retry(), "the second handshake was not retried");
    let err = refused(&server).await;
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    // Handshakes that time out give their places back.
    let (_client, conn) = dial_until_accepted(&server).await;
    assert_eq!(echo(&conn, "in").await.unwrap(), "in");
}

#[tokio::test]
async fn dialers_are_retried_once_handshakes_pile_up() {
    // Retry from two handshakes in progress: a quarter of eight.
    let server = node(serving(Node::builder().max_handshakes(8))).await;
    let client = dialer(Duration::from_secs(5)).await;

    let quiet = Relay::new(server.local_addr(), Mode::Pass).await;
    let conn = client.connect(quiet.addr(), server.id()).await.unwrap();
    assert_eq!(echo(&conn, "quiet").await.unwrap(), "quiet");
    assert!(!quiet.saw_retry(), "retried with no handshake in progress");

    let _stalled = [
        stalled_handshake(&server).await,
        stalled_handshake(&server).await,
    ];
    // Another client: this one would reuse its live connection.
    let client = dialer(Duration::from_secs(5)).await;
    let busy = Relay::new(server.local_addr(), Mode::Pass).await;
    let conn = client.connect(busy.addr(), server.id()).await.unwrap();
    assert_eq!(echo(&conn, "busy").await.unwrap(), "busy");
    assert!(
        busy.saw_retry(),
        "not retried with two handshakes in progress"
    );
}

#[tokio::test]
async fn connections_from_one_address_are_limited() {
    let server = node(serving(Node::builder().max_connections_per_ip(2))).await;
    let (a, b) = (dialer(PROMPTLY).await, dialer(PROMPTLY).await);
    let first = a.connect(server.local_addr(), server.id()).await.unwrap();
    let _second = b.connect(server.local_addr(), server.id()).await.unwrap();
    let err = refused(&server).await;
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");

    // Another address has places of its own (on Linux any 127.x.y.z is this machine; other
    // systems may have 127.0.0.1 alone).
    #[cfg(target_os = "linux")]
    {
        let other = Node::builder().bind("127.0.0.2:0").await.unwrap();
        let conn = other
            .connect(server.local_addr(), server.id())
            .await
            .unwrap();
        assert_eq!(echo(&conn, "other").await.unwrap(), "other");
    }

    // Closing a connection gives its address's place back.
    first.close();
    let (_client, conn) = dial_until_accepted(&server).await;
    assert_eq!(echo(&conn, "again").await.unwrap(), "again");
}

#[tokio::test]
async fn a_dial_during_shutdown_is_refused_at_once() {
    let probe = probe();
    let (server, _client, conn) = pair(&probe).await;
    let held = tokio::spawn(hold(&conn).into_future());
    eventually("the held call to start", || {
        probe.running.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let stopping = {
        let server = server.clone();
        tokio::spawn(async move { server.shutdown(Duration::from_secs(5)).await })
    };
    // Shutting down: the node refuses new calls...
    loop {
        match echo(&conn, "x").await {
            Err(Error::ShuttingDown) => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(other) => panic!("{other:?}"),
        }
    }
    // ...and new connections, at once.
    let err = refused(&server).await;
    assert!(
        matches!(err, Error::Unreachable { .. } | Error::ShuttingDown),
        "{err:?}"
    );

    probe.release.notify_waiters();
    held.await.unwrap().unwrap();
    stopping.await.unwrap();
    // Shut down, with the handle still held: refused at once too.
    let err = refused(&server).await;
    assert!(
        matches!(err, Error::Unreachable { .. } | Error::ShuttingDown),
        "{err:?}"
    );
}

#[test]
fn a_restarted_node_resets_its_old_connections() {
    const TEST: &str = "a_restarted_node_resets_its_old_connections";
    child::run_if_child();

    let key = SecretKey::generate();
    let dir = std::env::temp_dir().join(format!(
        "dep2p-restart-{}-{}",
        std::process::id(),
        key.public().fmt_short()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("node.key");
    key.save(&key_file).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let first = NodeProcess::start(TEST, &key_file, 0);
        let client = node(Node::builder()).await;
        let conn = client.connect(first.addr, key.public()).await.unwrap();
        assert_eq!(echo(&conn, "before").await.unwrap(), "before");

        // The process dies without a word to its peers, and a new one takes its key and port.
        let addr = first.addr;
        first.kill();
        let second = NodeProcess::start(TEST, &key_file, addr.port());
        assert_eq!(second.addr, addr);

        // The old connection's next packet draws a stateless reset: the call fails at once,
        // not after the idle timeout.
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(Duration::from_secs(3), echo(&conn, "after").into_future())
                .await
                .expect("the call on the dead connection was still waiting after 3 s");
        let err = outcome.expect_err("a call reached a node that never had the connection");
        assert!(err.is_connection_error(), "{err:?}");
        assert!(conn.close_reason().is_some());
        eprintln!("old connection failed after {:?}: {err}", started.elapsed());

        // The new process is the same node.
        let conn = client.connect(second.addr, key.public()).await.unwrap();
        assert_eq!(echo(&conn, "again").await.unwrap(), "again");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counts the TLS 1.3 session tickets a raw client receives.
#[derive(Debug, Default)]
struct TicketCount(Mutex<usize>);

impl rustls::client::ClientSessionStore for TicketCount {
    fn set_kx_hint(&self, _: ServerName<'static>, _: rustls::NamedGroup) {}

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        None
    }

    fn set_tls12_session(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls12ClientSessionValue,
    ) {
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls13ClientSessionValue,
    ) {
        *self.0.lock().unwrap() += 1;
    }

    fn take_tls13_ticket(
        &self,
        _: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        None
    }
}

#[tokio::test]
async fn a_node_issues_no_session_tickets() {
    let server = node(serving(Node::builder())).await;
    let tickets = Arc::new(TicketCount::default());
    let (chain, key, _) = raw::ed25519_identity();
    let mut tls = raw::client_tls(chain, key, &[dep2p_runtime::ALPN]);
    tls.resumption = rustls::client::Resumption::store(tickets.clone());
    // `dial` waits a moment after the handshake: tickets follow it at once.
    let conn = raw::dial(server.local_addr(), tls).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.finish().unwrap();
    let _ = recv.read_to_end(1024).await;
    assert_eq!(*tickets.0.lock().unwrap(), 0, "session tickets were issued");
}

/// Records the signature schemes a dialing node offers in its ClientHello.
#[derive(Debug)]
struct OfferedByDialer {
    offered: Mutex<Vec<SignatureScheme>>,
    key: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for OfferedByDialer {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        *self.offered.lock().unwrap() = hello.signature_schemes().to_vec();
        Some(Arc::clone(&self.key))
    }
}

/// Records the signature schemes a listening node asks a client certificate to use.
#[derive(Debug)]
struct AskedByListener {
    asked: Mutex<Vec<SignatureScheme>>,
    key: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::client::ResolvesClientCert for AskedByListener {
    fn resolve(
        &self,
        _: &[&[u8]],
        schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        *self.asked.lock().unwrap() = schemes.to_vec();
        Some(Arc::clone(&self.key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn certified_ed25519() -> (Arc<rustls::sign::CertifiedKey>, dep2p_runtime::NodeId) {
    let (chain, key, id) = raw::ed25519_identity();
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    (Arc::new(rustls::sign::CertifiedKey::new(chain, signer)), id)
}

#[tokio::test]
async fn only_ed25519_signatures_are_offered_either_way() {
    // As a dialer: the ClientHello's signature_algorithms.
    let (key, id) = certified_ed25519();
    let offered = Arc::new(OfferedByDialer {
        offered: Mutex::new(Vec::new()),
        key,
    });
    let mut tls = raw::server_builder()
        .with_no_client_auth()
        .with_cert_resolver(offered.clone());
    tls.alpn_protocols = vec![dep2p_runtime::ALPN.to_vec()];
    let listener = raw::listener(tls);
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move { listener.accept().await.unwrap().await });
    let client = node(Node::builder()).await;
    let _ = client.connect(addr, id).await;
    let _ = accepting.await;
    assert_eq!(*offered.offered.lock().unwrap(), [SignatureScheme::ED25519]);

    // As a listener: the CertificateRequest's signature_algorithms.
    let server = node(serving(Node::builder())).await;
    let (key, _) = certified_ed25519();
    let asked = Arc::new(AskedByListener {
        asked: Mutex::new(Vec::new()),
        key,
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(raw::TrustAnything))
        .with_client_cert_resolver(asked.clone());
    tls.alpn_protocols = vec![dep2p_runtime::ALPN.to_vec()];
    raw::dial(server.local_addr(), tls).await.unwrap();
    assert_eq!(*asked.asked.lock().unwrap(), [SignatureScheme::ED25519]);
}

#[tokio::test]
async fn a_listener_whose_key_is_not_ed25519_is_refused() {
    let (chain, key) = raw::identity(&rcgen::PKCS_ECDSA_P256_SHA256, 0);
    let listener = raw::listener(raw::server_tls(chain, key));
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move { listener.accept().await.unwrap().await });
    let client = node(Node::builder()).await;
    let err = client
        .connect(addr, SecretKey::generate().public())
        .await
        .expect_err("a P-256 listener was accepted");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(accepting.await.unwrap().is_err());
}

type Identity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// Dials `node` from a raw client presenting `identity`'s certificates (none if empty) and
/// offering `alpn`; returns the TLS alert the node refused it with.
async fn alert_from_listener(node: &Node, identity: Identity, alpn: &[&[u8]]) -> Option<u8> {
    let (chain, key) = identity;
    let err = raw::dial(node.local_addr(), raw::client_tls(chain, key, alpn))
        .await
        .expect_err("the raw client was accepted");
    raw::alert(&err)
}

/// Has a node dial a raw listener presenting `identity` as the node `expected`; returns the TLS
/// alert the listener received.
async fn alert_from_dialer(identity: Identity, expected: dep2p_runtime::NodeId) -> Option<u8> {
    let (chain, key) = identity;
    let listener = raw::listener(raw::server_tls(chain, key));
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move { listener.accept().await.unwrap().await });
    let client = node(Node::builder()).await;
    let result = client.connect(addr, expected).await;
    assert!(result.is_err(), "the node accepted the raw listener");
    let err = accepting
        .await
        .unwrap()
        .expect_err("the listener saw no refusal");
    raw::alert(&err)
}

#[tokio::test]
async fn refusals_carry_the_documented_tls_alerts() {
    let server = node(serving(Node::builder())).await;
    let dep2p = &[dep2p_runtime::ALPN][..];
    let ed25519 = |extra| raw::identity(&rcgen::PKCS_ED25519, extra);

    // The listener's refusals.
    let (_, key) = ed25519(0);
    let none = alert_from_listener(&server, (Vec::new(), key), dep2p).await;
    assert_eq!(none, Some(alerts::CERTIFICATE_REQUIRED), "no certificate");
    // A key that cannot sign with Ed25519 leaves its holder nothing to present.
    let p256 = raw::identity(&rcgen::PKCS_ECDSA_P256_SHA256, 0);
    let p256 = alert_from_listener(&server, p256, dep2p).await;
    assert_eq!(p256, Some(alerts::CERTIFICATE_REQUIRED), "P-256 key");
    let chain = alert_from_listener(&server, ed25519(1), dep2p).await;
    assert_eq!(chain, Some(alerts::CERTIFICATE_UNKNOWN), "two certificates");
    let h3 = alert_from_listener(&server, ed25519(0), &[b"h3"]).await;
    assert_eq!(h3, Some(alerts::NO_APPLICATION_PROTOCOL), "ALPN h3");
    let no_alpn = alert_from_listener(&server, ed25519(0), &[]).await;
    assert_eq!(no_alpn, Some(alerts::NO_APPLICATION_PROTOCOL), "no ALPN");

    // The dialer's refusals.
    let (chain, key, _) = raw::ed25519_identity();
    let wrong = alert_from_dialer((chain, key), SecretKey::generate().public()).await;
    assert_eq!(wrong, Some(alerts::ACCESS_DENIED), "another node id");
    let (mut chain, key, id) = raw::ed25519_identity();
    chain.push(chain[0].clone());
    let two = alert_from_dialer((chain, key), id).await;
    assert_eq!(two, Some(alerts::CERTIFICATE_UNKNOWN), "two certificates");
}
