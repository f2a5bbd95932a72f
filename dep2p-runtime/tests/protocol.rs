//! The runtime checked against `docs/PROTOCOL.md`: frames are built by hand from the document
//! and written on raw QUIC streams of a real connection; the answers are parsed by hand.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wire::*;
use common::*;
use dep2p_runtime::quinn::{self, VarInt};
use dep2p_runtime::{
    CallContext, CallFuture, Connection, Error, IncomingCall, Node, NodeBuilder, NodeId, SecretKey,
    Service, Unary, ALPN, ALPN_V1,
};

async fn setup(builder: NodeBuilder) -> (Arc<Probe>, Node, Node, Connection) {
    let probe = probe();
    let (server, client, conn) = pair_with(builder, &probe).await;
    (probe, server, client, conn)
}

// ---------------------------------------------------------------------------------------------
// Transport and identity.

/// Reports, from inside a handler, what the serving side's TLS session negotiated.
struct Tls;

impl Service for Tls {
    fn name(&self) -> &str {
        "Tls"
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        call.unary(|(): ()| async move {
            let ctx = CallContext::current().unwrap();
            let data = ctx.connection().quic().handshake_data().unwrap();
            let data = data
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .unwrap();
            let alpn = data.protocol.map(|p| String::from_utf8(p).unwrap());
            (alpn, data.server_name)
        })
    }
}

#[tokio::test]
async fn alpn_is_dep2p_2_and_dialer_names_dep2p() {
    assert_eq!(ALPN, b"dep2p/2");
    assert_eq!(ALPN_V1, b"dep2p/1");
    let (_probe, _server, _client, conn) = setup(Node::builder().serve(Tls)).await;
    let data = conn.quic().handshake_data().unwrap();
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(data.protocol.as_deref(), Some(&b"dep2p/2"[..]));
    assert_eq!(conn.protocol_version(), 2);

    // The listener's view: ALPN `dep2p/2`, server name `dep2p`.
    let (_, answer) = exchange(&conn, &call("Tls", "handshake", UNARY, &[]), true).await;
    let mut expected = vec![1];
    expected.extend(str_bytes("dep2p/2"));
    expected.push(1);
    expected.extend(str_bytes("dep2p"));
    assert_eq!(answer, frame(RESULT, &expected));
}

/// A node limited to version 1 behaves as an older peer: whichever side it is on, the
/// connection speaks `dep2p/1`, and calls work.
#[tokio::test]
async fn a_version_1_node_and_a_version_2_node_speak_version_1() {
    for (listener_version, dialer_version) in [(1, 2), (2, 1), (1, 1)] {
        let probe = probe();
        let server = node(
            Node::builder()
                .protocol_version(listener_version)
                .serve(TestService {
                    probe: Arc::clone(&probe),
                }),
        )
        .await;
        let client = node(Node::builder().protocol_version(dialer_version)).await;
        let conn = client
            .connect(server.local_addr(), server.id())
            .await
            .expect("connect");
        assert_eq!(
            conn.protocol_version(),
            1,
            "{listener_version} <- {dialer_version}"
        );
        let data = conn.quic().handshake_data().unwrap();
        let data = data
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap();
        assert_eq!(data.protocol.as_deref(), Some(&b"dep2p/1"[..]));
        assert_eq!(echo(&conn, "old").await.unwrap(), "old");
    }
}

#[tokio::test]
async fn only_known_protocol_versions_bind() {
    for version in [0, 3] {
        let err = Node::builder()
            .protocol_version(version)
            .bind("127.0.0.1:0")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{version}: {err:?}");
    }
}

#[tokio::test]
async fn node_id_text_form() {
    let id = SecretKey::generate().public();
    let text = id.to_string();
    assert_eq!(text.len(), 52);
    assert!(
        text.bytes()
            .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)),
        "{text}"
    );
    assert_eq!(text.parse::<NodeId>(), Ok(id));
    assert_eq!(text.to_ascii_uppercase().parse::<NodeId>(), Ok(id));
    assert!(text[..51].parse::<NodeId>().is_err());
    assert!(format!("{text}a").parse::<NodeId>().is_err());
    assert!(format!("{}=", &text[..51]).parse::<NodeId>().is_err());
    assert!(format!("{}1", &text[..51]).parse::<NodeId>().is_err());

    // Known answers: RFC 4648 base32 of the 32 key bytes, no padding, lower case.
    assert_eq!(NodeId::from_bytes([0; 32]).to_string(), "a".repeat(52));
    assert_eq!(
        NodeId::from_bytes([0xff; 32]).to_string(),
        format!("{}q", "7".repeat(51))
    );
    let mut bytes = [0u8; 32];
    bytes[..5].copy_from_slice(b"hello");
    assert!(NodeId::from_bytes(bytes)
        .to_string()
        .starts_with("nbswy3dp"));
}

#[tokio::test]
async fn node_id_is_the_key_in_the_single_ed25519_certificate() {
    let (_probe, server, client, conn) = setup(Node::builder()).await;
    assert_eq!(conn.remote_id(), server.id());
    assert_eq!(server.secret_key().public(), server.id());
    let certs = conn.quic().peer_identity().unwrap();
    let certs = certs
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .unwrap();
    assert_eq!(certs.len(), 1, "exactly one certificate");
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(server.id().as_bytes());
    let der: &[u8] = certs[0].as_ref();
    assert!(
        der.windows(spki.len()).any(|w| w == spki),
        "Ed25519 SPKI holding the node id"
    );

    // The dialer presented its certificate too: the handler sees its node id.
    let whoami = call_payload(SERVICE, "whoami", UNARY, None, &[], &[]);
    let (_, answer) = exchange(&conn, &frame(CALL, &whoami), true).await;
    let frames = frames(&answer);
    assert_eq!(frames[0].0, RESULT);
    assert!(frames[0]
        .1
        .starts_with(&str_bytes(&client.id().to_string())));
}

// ---------------------------------------------------------------------------------------------
// Frames and the five kinds.

#[tokio::test]
async fn worked_example_bytes() {
    let payload = call_payload(
        "Test",
        "echo",
        UNARY,
        Some(30_000_000),
        &[],
        &str_bytes("hi"),
    );
    assert_eq!(frame(CALL, &payload), WORKED_CALL);
    assert_eq!(frame(RESULT, &str_bytes("hi")), WORKED_RESULT);

    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let (_, answer) = exchange(&conn, &WORKED_CALL, true).await;
    assert_eq!(answer, WORKED_RESULT);
}

#[tokio::test]
async fn header_metadata_and_absent_timeout() {
    let (_probe, _server, client, conn) = setup(Node::builder()).await;
    let payload = call_payload(
        SERVICE,
        "whoami",
        UNARY,
        None,
        &[("x", "1"), ("k", "v"), ("k", "w")],
        &[],
    );
    let (_, answer) = exchange(&conn, &frame(CALL, &payload), true).await;
    // (caller id, Some("v"): the first entry for the key, true: a request-response call that
    // arrives without a deadline gets the node's request timeout)
    let mut expected = str_bytes(&client.id().to_string());
    expected.extend([1, 1, b'v', 1]);
    assert_eq!(answer, frame(RESULT, &expected));

    // The largest timeout is accepted, and means a deadline.
    let payload = call_payload(SERVICE, "whoami", UNARY, Some(u64::MAX), &[], &[]);
    let (_, answer) = exchange(&conn, &frame(CALL, &payload), true).await;
    let mut expected = str_bytes(&client.id().to_string());
    expected.extend([0, 1]);
    assert_eq!(answer, frame(RESULT, &expected));
}

#[tokio::test]
async fn server_streaming_frames() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let (_, answer) = exchange(&conn, &call(SERVICE, "count", SERVER_STREAM, &[3]), true).await;
    let expected: Vec<u8> = [
        frame(ITEM, &[0]),
        frame(ITEM, &[1]),
        frame(ITEM, &[2]),
        frame(RESULT, &[0, 3]),
    ]
    .concat();
    assert_eq!(answer, expected);
}

#[tokio::test]
async fn client_streaming_frames() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let request = [
        call(SERVICE, "sum", CLIENT_STREAM, &[100]),
        frame(ITEM, &[1]),
        frame(ITEM, &[2]),
    ]
    .concat();
    let (_, answer) = exchange(&conn, &request, true).await;
    assert_eq!(answer, frame(RESULT, &[0, 103]));
}

#[tokio::test]
async fn bidirectional_frames_interleave() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    send.write_all(&call(SERVICE, "upper", BIDI, &str_bytes("> ")))
        .await
        .unwrap();
    for word in ["a", "bc"] {
        send.write_all(&frame(ITEM, &str_bytes(word)))
            .await
            .unwrap();
        // The answer to each item arrives while the request direction is still open.
        let expected = format!("> {}", word.to_uppercase());
        assert_eq!(read_frame(&mut recv).await, (ITEM, str_bytes(&expected)));
    }
    send.finish().unwrap();
    let rest = tokio::time::timeout(WAIT, recv.read_to_end(1 << 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, frame(RESULT, &[0, 2]));
}

#[tokio::test]
async fn notification_is_one_way_on_a_unidirectional_stream() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        notes: Some(tx),
        ..Probe::default()
    });
    let (_server, _client, conn) = pair(&probe).await;
    let mut send = conn.quic().open_uni().await.unwrap();
    send.write_all(&call(SERVICE, "note", NOTIFY, &str_bytes("one-way")))
        .await
        .unwrap();
    send.finish().unwrap();
    let note = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note, "one-way");
}

// ---------------------------------------------------------------------------------------------
// Status codes reachable from outside.

#[tokio::test]
async fn unknown_service_is_status_3() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let (code, _, _) =
        expect_status(&conn, &call("Nope", "echo", UNARY, &str_bytes("hi")), true).await;
    assert_eq!(code, UNKNOWN_SERVICE);
    still_serves(&conn).await;
}

#[tokio::test]
async fn unknown_method_is_status_4() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let (code, _, _) = expect_status(&conn, &call(SERVICE, "nope", UNARY, &[]), true).await;
    assert_eq!(code, UNKNOWN_METHOD);
    still_serves(&conn).await;
}

#[tokio::test]
async fn kind_mismatch_is_status_4() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    // `echo` is request-response; called as each other bidirectional kind.
    for kind in [SERVER_STREAM, CLIENT_STREAM, BIDI] {
        let (code, _, _) =
            expect_status(&conn, &call(SERVICE, "echo", kind, &str_bytes("hi")), true).await;
        assert_eq!(code, UNKNOWN_METHOD, "kind {kind}");
    }
    still_serves(&conn).await;
}

#[tokio::test]
async fn undecodable_arguments_are_status_5() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    // A string announcing 5 bytes that holds 1; then a string that is not UTF-8.
    for args in [&[0x05, b'a'][..], &[0x02, 0xff, 0xfe][..], &[][..]] {
        let (code, _, _) = expect_status(&conn, &call(SERVICE, "echo", UNARY, args), true).await;
        assert_eq!(code, DECODE, "args {args:02x?}");
    }
    still_serves(&conn).await;
}

#[tokio::test]
async fn trailing_bytes_after_arguments_are_status_5() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let (code, _, _) = expect_status(
        &conn,
        &call(SERVICE, "echo", UNARY, &[0x02, b'h', b'i', 0x00]),
        true,
    )
    .await;
    assert_eq!(code, DECODE);
}

#[tokio::test]
async fn message_size_limit_counts_the_payload() {
    let (_probe, _server, _client, conn) = setup(Node::builder().max_message_size(64)).await;
    // Header of `Test.echo` without timeout or metadata: 13 bytes; a 50-byte string: 51 bytes.
    let at_limit = call_payload(
        SERVICE,
        "echo",
        UNARY,
        None,
        &[],
        &str_bytes(&"x".repeat(50)),
    );
    assert_eq!(at_limit.len(), 64);
    let (_, answer) = exchange(&conn, &frame(CALL, &at_limit), true).await;
    assert_eq!(answer, frame(RESULT, &str_bytes(&"x".repeat(50))));

    let over = call_payload(
        SERVICE,
        "echo",
        UNARY,
        None,
        &[],
        &str_bytes(&"x".repeat(51)),
    );
    assert_eq!(over.len(), 65);
    let (code, _, send) = expect_status(&conn, &frame(CALL, &over), false).await;
    assert_eq!(code, MESSAGE_TOO_LARGE);
    assert_eq!(stop_code(&send).await, Some(STREAM_PROTOCOL));
    still_serves(&conn).await;
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_without_waiting_for_the_bytes() {
    let (_probe, _server, _client, conn) =
        setup(Node::builder().header_timeout(Duration::from_secs(5))).await;
    for len in [16 * 1024 * 1024 + 2, u32::MAX] {
        // Only the frame head; the announced bytes never come and the stream stays open.
        let mut head = len.to_be_bytes().to_vec();
        head.push(CALL);
        let start = Instant::now();
        let (code, _, send) = expect_status(&conn, &head, false).await;
        assert_eq!(code, MESSAGE_TOO_LARGE, "length {len:#x}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "answered without waiting"
        );
        assert_eq!(stop_code(&send).await, Some(STREAM_PROTOCOL));
    }
    // The largest allowed payload is announced: the server waits for it (and, past the header
    // timeout, would answer Protocol rather than MessageTooLarge).
    let mut head = (16u32 * 1024 * 1024 + 1).to_be_bytes().to_vec();
    head.push(CALL);
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    send.write_all(&head).await.unwrap();
    let mut buf = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(300), recv.read(&mut buf)).await;
    assert!(waited.is_err(), "no early answer to an allowed length");
    still_serves(&conn).await;
}

#[tokio::test]
async fn header_timeout_is_status_10() {
    let timeout = Duration::from_millis(150);
    let (_probe, _server, _client, conn) = setup(Node::builder().header_timeout(timeout)).await;
    let start = Instant::now();
    // Two bytes of a frame head, then nothing.
    let (code, _, send) = expect_status(&conn, &[0x00, 0x00], false).await;
    let elapsed = start.elapsed();
    assert_eq!(code, PROTOCOL);
    assert!(
        elapsed >= timeout && elapsed < Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert_eq!(stop_code(&send).await, Some(STREAM_PROTOCOL));
    still_serves(&conn).await;
}

#[tokio::test]
async fn overloaded_is_status_9() {
    let (probe, _server, _client, conn) = setup(Node::builder().max_concurrent_calls(1)).await;
    let (mut held, mut held_recv) = conn.quic().open_bi().await.unwrap();
    held.write_all(&call(SERVICE, "hold", UNARY, &[]))
        .await
        .unwrap();
    held.finish().unwrap();
    eventually("the held call to run", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;

    let (code, _, _) = expect_status(&conn, &WORKED_CALL, true).await;
    assert_eq!(code, OVERLOADED);

    probe.release.notify_one();
    let answer = tokio::time::timeout(WAIT, held_recv.read_to_end(64))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, frame(RESULT, &[]));
    still_serves(&conn).await;
}

#[tokio::test]
async fn deadline_is_status_2_and_stops_the_handler() {
    let (probe, _server, _client, conn) = setup(Node::builder()).await;
    let payload = call_payload(SERVICE, "sleep", UNARY, Some(100_000), &[], &[0xe8, 0x07]); // 1000 ms
    let start = Instant::now();
    let (code, _, _) = expect_status(&conn, &frame(CALL, &payload), true).await;
    let elapsed = start.elapsed();
    assert_eq!(code, DEADLINE_EXCEEDED);
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < Duration::from_millis(900),
        "{elapsed:?}"
    );
    eventually("the handler to be dropped", || {
        probe.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(probe.running.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// Malformed streams: an error on that stream, and the connection carries on.

#[tokio::test]
async fn garbage_is_refused_and_the_connection_survives() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    // Text read as a length prefix: 0x47455420 bytes, over the 16 MiB limit.
    let (code, _, _) = expect_status(&conn, b"GET / HTTP/1.1\r\n\r\n", true).await;
    assert_eq!(code, MESSAGE_TOO_LARGE);
    // A first frame that is not CALL, and a tag that does not exist.
    for tag in [ITEM, RESULT, STATUS, 0x00, 0x7f, 0xff] {
        let (code, _, _) = expect_status(&conn, &frame(tag, b"junk"), true).await;
        assert_eq!(code, PROTOCOL, "tag {tag:#04x}");
    }
    // CALL frames whose header does not decode: noise, a kind above 4, a service name that is
    // not UTF-8, a header cut short.
    let mut bad_kind = Vec::new();
    string(&mut bad_kind, SERVICE);
    string(&mut bad_kind, "echo");
    bad_kind.extend([5, 0, 0]);
    let bad_utf8 = [
        &[0x02, 0xc3, 0x28][..],
        &str_bytes("echo")[..],
        &[0, 0, 0][..],
    ]
    .concat();
    for payload in [vec![0xff; 16], bad_kind, bad_utf8, str_bytes(SERVICE)] {
        let (code, _, _) = expect_status(&conn, &frame(CALL, &payload), true).await;
        assert_eq!(code, PROTOCOL, "payload {payload:02x?}");
    }
    // An empty stream: opened with a FIN and no bytes. Nothing to answer; no harm done.
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    send.write_all(&[]).await.unwrap();
    send.finish().unwrap();
    let _ = tokio::time::timeout(WAIT, recv.read_to_end(1 << 10)).await;
    still_serves(&conn).await;
}

#[tokio::test]
async fn truncated_frame_is_status_10() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    // FIN inside the payload, and inside the length prefix.
    for cut in [WORKED_CALL.len() - 2, 3] {
        let (code, _, _) = expect_status(&conn, &WORKED_CALL[..cut], true).await;
        assert_eq!(code, PROTOCOL, "cut at {cut}");
    }
    still_serves(&conn).await;
}

#[tokio::test]
async fn zero_length_frame_is_status_10() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    // A zero length followed by a well-formed CALL: were the length read as "tag and payload
    // minus one", it would announce a huge payload (MessageTooLarge) instead.
    let bytes = [&[0, 0, 0, 0][..], &WORKED_CALL].concat();
    let (code, _, send) = expect_status(&conn, &bytes, false).await;
    assert_eq!(code, PROTOCOL);
    assert_eq!(stop_code(&send).await, Some(STREAM_PROTOCOL));
    still_serves(&conn).await;
}

#[tokio::test]
async fn zero_length_is_refused_on_the_length_alone() {
    let (_probe, _server, _client, conn) =
        setup(Node::builder().header_timeout(Duration::from_secs(5))).await;
    let start = Instant::now();
    let (code, _, _) = expect_status(&conn, &[0, 0, 0, 0], false).await;
    assert_eq!(code, PROTOCOL);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn stream_type_must_match_the_kind() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        notes: Some(tx),
        ..Probe::default()
    });
    let (_server, _client, conn) = pair(&probe).await;

    // A notification on a bidirectional stream.
    let (code, _, send) = expect_status(
        &conn,
        &call(SERVICE, "note", NOTIFY, &str_bytes("bidi")),
        false,
    )
    .await;
    assert_eq!(code, PROTOCOL);
    assert_eq!(stop_code(&send).await, Some(STREAM_PROTOCOL));

    // A request-response call on a unidirectional stream: nothing can come back but the
    // STOP_SENDING (the stream is left open so that it can).
    let mut uni = conn.quic().open_uni().await.unwrap();
    uni.write_all(&call(SERVICE, "note", UNARY, &str_bytes("uni")))
        .await
        .unwrap();
    assert_eq!(stop_code(&uni).await, Some(STREAM_PROTOCOL));

    // Neither reached the handler; a proper notification does.
    let mut uni = conn.quic().open_uni().await.unwrap();
    uni.write_all(&call(SERVICE, "note", NOTIFY, &str_bytes("proper")))
        .await
        .unwrap();
    uni.finish().unwrap();
    let note = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note, "proper");
    still_serves(&conn).await;
}

// ---------------------------------------------------------------------------------------------
// Ending and cancelling.

#[tokio::test]
async fn request_reset_mid_call_reaches_the_handler() {
    let (probe, _server, _client, conn) = setup(Node::builder()).await;
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    send.write_all(&[call(SERVICE, "sum", CLIENT_STREAM, &[0]), frame(ITEM, &[1])].concat())
        .await
        .unwrap();
    eventually("the handler to run", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;
    send.reset(VarInt::from_u32(STREAM_CANCELLED)).unwrap();

    // The handler's receiver reports the abort rather than a clean end, so `sum` returns its
    // error value; the call itself still ends with a RESULT.
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 10))
        .await
        .unwrap()
        .unwrap();
    let frames = frames(&answer);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, RESULT);
    assert_eq!(frames[0].1[0], 1, "Err(..): {:02x?}", frames[0].1);
    assert!(String::from_utf8_lossy(&frames[0].1).contains("cancelled"));
    assert_eq!(probe.cancelled.load(Ordering::SeqCst), 1);
    still_serves(&conn).await;
}

#[tokio::test]
async fn request_reset_before_the_header_is_status_1() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    send.write_all(&WORKED_CALL[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    send.reset(VarInt::from_u32(STREAM_CANCELLED)).unwrap();
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 10))
        .await
        .unwrap()
        .unwrap();
    let frames = frames(&answer);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, STATUS);
    assert_eq!(status(&frames[0].1).0, CANCELLED);
    still_serves(&conn).await;
}

#[tokio::test]
async fn stop_sending_on_the_response_cancels_the_handler() {
    let (probe, _server, _client, conn) = setup(Node::builder()).await;
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    send.write_all(&call(SERVICE, "hold", UNARY, &[]))
        .await
        .unwrap();
    send.finish().unwrap();
    eventually("the handler to run", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;
    recv.stop(VarInt::from_u32(STREAM_CANCELLED)).unwrap();
    eventually("the handler to be dropped", || {
        probe.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(probe.running.load(Ordering::SeqCst), 0);
    still_serves(&conn).await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown.

#[tokio::test]
async fn shutdown_refuses_new_calls_then_closes_with_code_1() {
    let (probe, server, _client, conn) = setup(Node::builder()).await;
    let (mut held, mut held_recv) = conn.quic().open_bi().await.unwrap();
    held.write_all(&call(SERVICE, "hold", UNARY, &[]))
        .await
        .unwrap();
    held.finish().unwrap();
    eventually("the held call to run", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;

    let grace = Duration::from_millis(300);
    let shutdown = tokio::spawn(async move { server.shutdown(grace).await });
    tokio::time::sleep(Duration::from_millis(30)).await;

    let (code, _, send) = expect_status(&conn, &WORKED_CALL, false).await;
    assert_eq!(code, SHUTTING_DOWN);
    assert_eq!(stop_code(&send).await, Some(STREAM_REFUSED));

    // The held call outlives the grace period: the connection closes with code 0x1 under it.
    let closed = tokio::time::timeout(WAIT, conn.quic().closed())
        .await
        .unwrap();
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, VarInt::from_u32(1));
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    assert!(held_recv.read_to_end(64).await.is_err());
    assert!(matches!(conn.close_reason(), Some(Error::ShuttingDown)));
    shutdown.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Status codes as a caller sees them.

#[tokio::test]
async fn statuses_map_to_the_callers_errors() {
    let (_probe, _server, _client, conn) = setup(Node::builder()).await;
    let err = Unary::<(), ()>::new(&conn, "Nope", "x", ())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownService(_)), "{err:?}");
    assert_eq!(err.to_string(), "unknown service `Nope`");
    let err = Unary::<(), ()>::new(&conn, SERVICE, "nope", ())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownMethod(_)), "{err:?}");
    let err = Unary::<(u8,), ()>::new(&conn, SERVICE, "echo", (0xff,))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    let err = Unary::<(u64,), u64>::new(&conn, SERVICE, "sleep", (1000,))
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
}
