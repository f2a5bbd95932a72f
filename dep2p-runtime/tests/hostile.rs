//! Peers that misbehave, slowly or on purpose, and the bounds that keep a node serving: every
//! wait bounded, every failure answered. Misbehaving peers are raw QUIC streams of a real
//! connection speaking `docs/PROTOCOL.md` by hand.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::wire::*;
use common::*;
use dep2p_runtime::{
    CallFuture, ClientStreaming, Error, IncomingCall, Node, Outcome, Service, Unary,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Long enough for anything that should happen at once on loopback, short enough to fail a
/// test that waits for the wrong thing.
const SOON: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Every wait bounded.

/// A server of the test service and a client whose idle bound is 300 ms.
async fn impatient_caller(
    probe: &std::sync::Arc<Probe>,
) -> (Node, Node, dep2p_runtime::Connection) {
    let server = node(Node::builder().serve(TestService {
        probe: probe.clone(),
    }))
    .await;
    let client = node(Node::builder().idle_stream_timeout(Duration::from_millis(300))).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    (server, client, conn)
}

#[tokio::test]
async fn a_deadline_longer_than_the_idle_bound_is_kept() {
    let probe = probe();
    let (_server, _client, conn) = impatient_caller(&probe).await;
    // The handler takes a second, well within the call's 5 s; nothing moves on the stream
    // meanwhile, which is no reason to give up on an answer.
    let slept = sleep(&conn, 1000).timeout(Duration::from_secs(5)).await;
    assert_eq!(slept.unwrap(), 1000);
}

#[tokio::test]
async fn a_response_without_a_deadline_is_bounded_by_the_idle_bound() {
    let probe = probe();
    let (_server, _client, conn) = impatient_caller(&probe).await;
    let call: ClientStreaming<(), Vec<u8>, ()> = ClientStreaming::new(&conn, SERVICE, "stall", ());
    let (tx, response) = call.await.unwrap();
    tx.finish().unwrap();
    // The handler never answers; the caller stops waiting after its idle bound.
    let result = tokio::time::timeout(SOON, response).await.expect("bounded");
    assert!(matches!(result, Err(Error::IdleTimeout)), "{result:?}");
    probe.release.notify_waiters();
}

#[tokio::test]
async fn a_caller_that_never_reads_does_not_hold_the_answer_or_the_shutdown() {
    let probe = probe();
    let builder = Node::builder().idle_stream_timeout(Duration::from_millis(300));
    let (server, _client, conn) = pair_with(builder, &probe).await;
    // Ask for an 8 MiB result, far beyond the caller's stream window, and never read it.
    let (mut send, _recv) = conn.quic().open_bi().await.unwrap();
    let args = {
        let mut out = Vec::new();
        varint(&mut out, 8 << 20);
        out
    };
    send.write_all(&call(SERVICE, "bytes", UNARY, &args))
        .await
        .unwrap();
    send.finish().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The answer cannot be delivered; once the idle bound has passed it is abandoned, and a
    // graceful shutdown does not wait out its grace period for it.
    let shutdown = tokio::time::timeout(SOON, server.shutdown(Duration::from_secs(30))).await;
    assert!(shutdown.is_ok(), "shutdown waited for an unread answer");
}

#[tokio::test]
async fn a_call_whose_deadline_has_passed_never_reaches_its_handler() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let mut args = Vec::new();
    varint(&mut args, 10);
    let payload = call_payload(SERVICE, "sleep", UNARY, Some(0), &[], &args);
    let (code, _, _) = expect_status(&conn, &frame(CALL, &payload), true).await;
    assert_eq!(code, DEADLINE_EXCEEDED);
    // Neither started nor cancelled: the handler never ran.
    assert_eq!(probe.running.load(Ordering::SeqCst), 0);
    assert_eq!(probe.cancelled.load(Ordering::SeqCst), 0);
    still_serves(&conn).await;
}

#[tokio::test]
async fn a_node_caps_the_deadline_a_peer_asks_for() {
    let probe = probe();
    let builder = Node::builder().max_call_deadline(Duration::from_millis(200));
    let (_server, _client, conn) = pair_with(builder, &probe).await;
    let started = std::time::Instant::now();
    let result = sleep(&conn, 3000).timeout(Duration::from_secs(60)).await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    eventually("the handler is stopped", || {
        probe.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn duration_max_means_no_limit() {
    let probe = probe();
    let builder = Node::builder()
        .request_timeout(Duration::MAX)
        .idle_stream_timeout(Duration::MAX);
    let (_server, client, conn) = pair_with(builder, &probe).await;
    assert_eq!(
        echo(&conn, "far").timeout(Duration::MAX).await.unwrap(),
        "far"
    );
    let count = dep2p_runtime::ServerStreaming::<(u32,), u32, Result<u32, String>>::new(
        &conn,
        SERVICE,
        "count",
        (3,),
    );
    let (rx, result) = count.timeout(Duration::MAX).await.unwrap();
    use futures::StreamExt;
    assert_eq!(rx.collect::<Vec<_>>().await.len(), 3);
    assert_eq!(result.await.unwrap(), Ok(3));
    drop(client);
}

#[tokio::test]
async fn senseless_configuration_is_refused() {
    for builder in [
        Node::builder().request_timeout(Duration::ZERO),
        Node::builder().idle_stream_timeout(Duration::ZERO),
        Node::builder().header_timeout(Duration::ZERO),
        Node::builder().connect_timeout(Duration::ZERO),
        Node::builder().max_call_deadline(Duration::ZERO),
        Node::builder().max_connections(0),
    ] {
        let bound = builder.bind("127.0.0.1:0").await;
        assert!(matches!(bound, Err(Error::Config(_))), "{bound:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Every failure answered.

#[tokio::test]
async fn a_notification_called_as_another_kind_is_unknown_method() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let (code, message, _) =
        expect_status(&conn, &call(SERVICE, "note", UNARY, &str_bytes("hi")), true).await;
    assert_eq!(code, UNKNOWN_METHOD, "{message}");
    // Through the client API too: the caller gets the reason, not a protocol error.
    let err = Unary::<(String,), ()>::new(&conn, SERVICE, "note", ("hi".into(),))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownMethod(_)), "{err:?}");
}

/// A value whose `Serialize` and `Deserialize` panic.
#[derive(Debug)]
struct Bomb;

impl Serialize for Bomb {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("serializing a bomb")
    }
}

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u8::deserialize(d)?;
        panic!("deserializing a bomb")
    }
}

/// Methods whose values panic while they are encoded or decoded, and a service that drops
/// the calls it does not know.
struct Fragile;

impl Service for Fragile {
    fn name(&self) -> &str {
        "Fragile"
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        match call.method() {
            "takes_bomb" => call.unary(|(_bomb,): (Bomb,)| async move { 1u8 }),
            "returns_bomb" => call.unary(|(): ()| async move { Bomb }),
            // A hand-written service that forgets to answer.
            _ => {
                drop(call);
                Box::pin(async { Outcome::Ok })
            }
        }
    }
}

#[tokio::test]
async fn panicking_serde_fails_the_call_with_handler_failed() {
    let server = node(Node::builder().serve(Fragile)).await;
    let client = node(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();

    let err = Unary::<(u8,), u8>::new(&conn, "Fragile", "takes_bomb", (7,))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HandlerFailed(_)), "{err:?}");
    let err = Unary::<(), u8>::new(&conn, "Fragile", "returns_bomb", ())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HandlerFailed(_)), "{err:?}");
    // The node serves on.
    let again = Unary::<(), u8>::new(&conn, "Fragile", "returns_bomb", ()).await;
    assert!(matches!(again, Err(Error::HandlerFailed(_))));
}

#[tokio::test]
async fn a_dropped_incoming_call_is_answered() {
    let server = node(Node::builder().serve(Fragile)).await;
    let client = node(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let err = Unary::<(), u8>::new(&conn, "Fragile", "forgotten", ())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HandlerFailed(ref m) if m.contains("without answering")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_status_wins_over_the_stream_code() {
    let probe = probe();
    let builder = Node::builder().max_message_size(64 * 1024);
    let (_server, _client, conn) = pair_with(builder, &probe).await;
    // 4 MiB of arguments: over the callee's limit and far over its stream window, so the
    // caller's write is still blocked when the callee refuses the call.
    let big = "x".repeat(4 << 20);
    let err = echo(&conn, &big).await.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge(_)), "{err:?}");
    assert_eq!(echo(&conn, "small").await.unwrap(), "small");
}

#[tokio::test]
async fn names_a_peer_sent_are_cut_before_errors() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    // The longest names a header may carry.
    let name = "s".repeat(256);
    let (code, message, _) = expect_status(&conn, &call(&name, "m", UNARY, &[]), true).await;
    assert_eq!(code, UNKNOWN_SERVICE);
    assert!(message.len() < 200, "{} bytes", message.len());
    let (code, message, _) = expect_status(&conn, &call(SERVICE, &name, UNARY, &[]), true).await;
    assert_eq!(code, UNKNOWN_METHOD);
    assert!(message.len() < 200, "{} bytes", message.len());
    // Longer ones are refused with the header, and not repeated either.
    let name = "s".repeat(10_000);
    let (code, message, _) = expect_status(&conn, &call(&name, "m", UNARY, &[]), true).await;
    assert_eq!(code, MESSAGE_TOO_LARGE);
    assert!(message.len() < 200, "{} bytes", message.len());
}

// ---------------------------------------------------------------------------------------------
// A callee that breaks the rules: a raw QUIC listener with a dep2p identity.

/// Accepts any client certificate: the raw listener only needs to be dialable.
#[derive(Debug)]
struct AnyClient;

impl rustls::server::danger::ClientCertVerifier for AnyClient {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }
}

/// A listener that proves a dep2p identity and answers every call stream with `answer`,
/// whatever it asked.
async fn raw_callee(answer: Vec<u8>) -> (quinn::Endpoint, dep2p_runtime::NodeId) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = dep2p_runtime::SecretKey::generate();
    let pair = rcgen::KeyPair::from_pem(&key.to_pem()).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["dep2p".to_string()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(std::sync::Arc::new(AnyClient))
        .with_single_cert(vec![cert.der().clone()], private)
        .unwrap();
    crypto.alpn_protocols = vec![dep2p_runtime::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).unwrap();
    let config = quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let _ = recv.read_to_end(1 << 20).await;
                    // One write: the final frame and whatever follows arrive together.
                    let _ = send.write_all(&answer).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                }
            });
        }
    });
    (endpoint, key.public())
}

async fn call_raw_callee(answer: Vec<u8>) -> Result<String, Error> {
    let (endpoint, id) = raw_callee(answer).await;
    let client = node(Node::builder()).await;
    let conn = client
        .connect(endpoint.local_addr().unwrap(), id)
        .await
        .unwrap();
    echo(&conn, "hi").await
}

#[tokio::test]
async fn a_frame_after_the_result_is_a_violation() {
    let result = frame(RESULT, &str_bytes("hi"));
    assert_eq!(call_raw_callee(result.clone()).await.unwrap(), "hi");

    let mut more = result.clone();
    more.extend(frame(ITEM, &str_bytes("extra")));
    let err = call_raw_callee(more).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");

    let mut result_twice = result.clone();
    result_twice.extend(result);
    let err = call_raw_callee(result_twice).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn bytes_after_a_status_are_a_violation() {
    let mut status = Vec::new();
    varint(&mut status, OVERLOADED);
    status.extend(str_bytes("busy"));
    let err = call_raw_callee(frame(STATUS, &status)).await.unwrap_err();
    assert!(matches!(err, Error::Overloaded(_)), "{err:?}");

    status.push(0);
    let err = call_raw_callee(frame(STATUS, &status)).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}
