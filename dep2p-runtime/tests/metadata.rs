//! Response metadata both ways: headers and trailers a handler sets, read by its caller, for
//! every kind of call, for failures, on version 1 connections, over the bounds, and from a
//! hand-written callee that breaks the ordering rules (`docs/PROTOCOL.md`, sections 4 and 5).

mod common;

use std::time::Duration;

use common::wire::*;
use common::*;
use dep2p_runtime::{
    Bidi, CallContext, CallFuture, ClientStreaming, Connection, Error, IncomingCall, Metadata,
    Node, NodeBuilder, Notify, Receiver, Sender, ServerStreaming, Service, Unary,
};
use futures::StreamExt;
use tokio::sync::mpsc;

type Entries = Vec<(String, String)>;

/// What a handler does: the headers and trailers it sets, then how it ends.
type Plan = (Entries, Entries, u8);
const OK: u8 = 0;
const PANIC: u8 = 1;
/// Outlives any deadline.
const STALL: u8 = 2;

/// What a handler reports: whether its headers and its trailers were accepted to be sent.
type Accepted = (bool, bool);

/// Sets the plan's metadata in the current call's context.
fn set(plan: &Plan) -> Accepted {
    let ctx = CallContext::current().expect("inside a handler");
    let headers = plan.0.iter().all(|(k, v)| ctx.set_header(k, v));
    let trailers = plan.1.iter().all(|(k, v)| ctx.set_trailer(k, v));
    (headers, trailers)
}

async fn end(plan: &Plan, accepted: Accepted) -> Accepted {
    match plan.2 {
        PANIC => panic!("after setting metadata"),
        STALL => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            accepted
        }
        _ => accepted,
    }
}

/// The service: one method per kind, each following its plan.
#[derive(Clone)]
struct Meta {
    /// What `note` handlers report.
    notes: mpsc::UnboundedSender<Accepted>,
}

impl Service for Meta {
    fn name(&self) -> &str {
        "Meta"
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        let notes = self.notes.clone();
        match call.method() {
            "unary" => call.unary(|(plan,): (Plan,)| async move {
                let accepted = set(&plan);
                end(&plan, accepted).await
            }),
            "note" => call.notify(move |(plan,): (Plan,)| async move {
                let _ = notes.send(set(&plan));
            }),
            "server" => {
                call.server_stream(|(plan, n): (Plan, u32), mut out: Sender<u32>| async move {
                    let accepted = set(&plan);
                    for i in 0..n {
                        if out.send(i).await.is_err() {
                            break;
                        }
                    }
                    // Set after the items: too late for headers (unless there were none), in
                    // time for trailers.
                    let late = CallContext::current().unwrap();
                    late.set_header("late", "h");
                    late.set_trailer("late", "t");
                    end(&plan, accepted).await
                })
            }
            "client" => call.client_stream(|(plan,): (Plan,), mut rx: Receiver<u32>| async move {
                let accepted = set(&plan);
                while let Some(Ok(_)) = rx.next().await {}
                end(&plan, accepted).await
            }),
            "bidi" => call.bidi(
                |(plan,): (Plan,), mut rx: Receiver<u32>, mut out: Sender<u32>| async move {
                    let accepted = set(&plan);
                    while let Some(Ok(item)) = rx.next().await {
                        if out.send(item).await.is_err() {
                            break;
                        }
                    }
                    end(&plan, accepted).await
                },
            ),
            "pin" => call.unary(|(): ()| async move {
                let ctx = CallContext::current().unwrap();
                ctx.set_header("h", "1");
                ctx.set_trailer("t", "2");
                "ok".to_string()
            }),
            "pin_stream" => call.server_stream(|(): (), mut out: Sender<u8>| async move {
                let ctx = CallContext::current().unwrap();
                ctx.set_header("h", "1");
                out.send(7).await.unwrap();
                out.send(8).await.unwrap();
                ctx.set_trailer("t", "2");
            }),
            "early" => call.server_stream(|(): (), mut out: Sender<u8>| async move {
                let ctx = CallContext::current().unwrap();
                ctx.set_header("h", "1");
                out.send_headers().unwrap();
                // Sent already: too late.
                assert!(!ctx.set_header("h2", "2"));
                out.send_headers().unwrap();
                tokio::time::sleep(Duration::from_secs(60)).await;
            }),
            _ => call.unknown_method(),
        }
    }
}

struct Setup {
    _server: Node,
    _client: Node,
    conn: Connection,
    notes: mpsc::UnboundedReceiver<Accepted>,
}

async fn setup_with(server: NodeBuilder, client: NodeBuilder) -> Setup {
    let (tx, notes) = mpsc::unbounded_channel();
    let server = node(server.serve(Meta { notes: tx })).await;
    let client = node(client).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .expect("connect");
    Setup {
        _server: server,
        _client: client,
        conn,
        notes,
    }
}

async fn setup() -> Setup {
    setup_with(Node::builder(), Node::builder()).await
}

fn entries(pairs: &[(&str, &str)]) -> Entries {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn plan(mode: u8) -> Plan {
    (
        entries(&[("server", "meta/1"), ("x", "1")]),
        entries(&[("elapsed", "5ms"), ("x", "2")]),
        mode,
    )
}

fn list(metadata: &Metadata) -> Vec<(&str, &str)> {
    metadata.iter().collect()
}

fn assert_sent(metadata: &dep2p_runtime::ResponseMetadata) {
    assert_eq!(list(metadata.headers()), [("server", "meta/1"), ("x", "1")]);
    assert_eq!(metadata.headers().get("x"), Some("1"));
    assert_eq!(metadata.trailers().get("elapsed"), Some("5ms"));
    assert_eq!(metadata.trailers().get("x"), Some("2"));
    assert_eq!(metadata.trailers().get("late"), None);
}

fn unary(conn: &Connection, plan: Plan) -> Unary<(Plan,), Accepted> {
    Unary::new(conn, "Meta", "unary", (plan,))
}

fn server(conn: &Connection, plan: Plan, n: u32) -> ServerStreaming<(Plan, u32), u32, Accepted> {
    ServerStreaming::new(conn, "Meta", "server", (plan, n))
}

fn client(conn: &Connection, plan: Plan) -> ClientStreaming<(Plan,), u32, Accepted> {
    ClientStreaming::new(conn, "Meta", "client", (plan,))
}

fn bidi(conn: &Connection, plan: Plan) -> Bidi<(Plan,), u32, u32, Accepted> {
    Bidi::new(conn, "Meta", "bidi", (plan,))
}

// ---------------------------------------------------------------------------------------------
// Every kind.

#[tokio::test]
async fn unary_headers_and_trailers() {
    let s = setup().await;
    let (result, metadata) = unary(&s.conn, plan(OK)).with_metadata().await;
    assert_eq!(result.unwrap(), (true, true));
    assert_sent(&metadata);
    // Awaited plainly, the same call gives its result alone.
    assert_eq!(unary(&s.conn, plan(OK)).await.unwrap(), (true, true));
    // A handler that sets nothing sends nothing.
    let (result, metadata) = unary(&s.conn, (vec![], vec![], OK)).with_metadata().await;
    assert_eq!(result.unwrap(), (true, true));
    assert!(metadata.headers().is_empty() && metadata.trailers().is_empty());
}

#[tokio::test]
async fn a_failed_call_carries_its_metadata() {
    let s = setup().await;
    let (result, metadata) = unary(&s.conn, plan(PANIC)).with_metadata().await;
    assert!(matches!(result, Err(Error::HandlerFailed(_))), "{result:?}");
    assert_sent(&metadata);

    let (tx, response) = client(&s.conn, plan(PANIC)).await.unwrap();
    tx.finish().unwrap();
    let (result, metadata) = response.with_metadata().await;
    assert!(matches!(result, Err(Error::HandlerFailed(_))), "{result:?}");
    assert_sent(&metadata);

    let (mut items, response) = server(&s.conn, plan(PANIC), 2).await.unwrap();
    assert_eq!(items.headers().await.get("server"), Some("meta/1"));
    assert_eq!(items.next().await.unwrap().unwrap(), 0);
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    assert!(matches!(
        items.next().await,
        Some(Err(Error::HandlerFailed(_)))
    ));
    let (result, metadata) = response.with_metadata().await;
    assert!(matches!(result, Err(Error::HandlerFailed(_))), "{result:?}");
    assert_eq!(metadata.trailers().get("late"), Some("t"));
    assert_eq!(metadata.trailers().get("elapsed"), Some("5ms"));
}

#[tokio::test]
async fn the_callee_s_deadline_status_carries_trailers() {
    let server = Node::builder().max_call_deadline(Duration::from_millis(200));
    let s = setup_with(server, Node::builder()).await;
    let call = unary(&s.conn, plan(STALL)).timeout(Duration::from_secs(20));
    let (result, metadata) = call.with_metadata().await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert_sent(&metadata);

    let (mut tx, rx, response) = bidi(&s.conn, plan(STALL)).await.unwrap();
    tx.send(5).await.unwrap();
    tx.finish().unwrap();
    let items: Vec<_> = rx.collect().await;
    assert_eq!(items[0].as_ref().unwrap(), &5);
    let (result, metadata) = response.with_metadata().await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert_sent(&metadata);
}

#[tokio::test]
async fn server_streaming_headers_come_before_the_items() {
    let s = setup().await;
    let (mut items, response) = server(&s.conn, plan(OK), 3).await.unwrap();
    let headers = items.headers().await;
    assert_eq!(list(&headers), [("server", "meta/1"), ("x", "1")]);
    // Waiting for the headers took no item.
    assert_eq!(items.trailers(), None);
    let got: Vec<u32> = items.by_ref().map(|r| r.unwrap()).collect().await;
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(items.trailers().unwrap().get("late"), Some("t"));
    // Still there once the stream has ended.
    assert_eq!(items.headers().await, headers);
    let (result, metadata) = response.with_metadata().await;
    assert_eq!(result.unwrap(), (true, true));
    assert_eq!(metadata.headers(), &headers);
    assert_eq!(metadata.trailers().get("elapsed"), Some("5ms"));
    assert_eq!(metadata.trailers().get("late"), Some("t"));

    // No items: the headers go with the final frame, and may be set until then.
    let (mut items, response) = server(&s.conn, plan(OK), 0).await.unwrap();
    assert_eq!(items.headers().await.get("late"), Some("h"));
    assert!(items.next().await.is_none());
    let (result, metadata) = response.with_metadata().await;
    assert_eq!(result.unwrap(), (true, true));
    assert_eq!(metadata.headers().len(), 3);
}

#[tokio::test]
async fn a_handler_may_send_its_headers_before_any_item() {
    let s = setup().await;
    let call: ServerStreaming<(), u8, ()> = ServerStreaming::new(&s.conn, "Meta", "early", ());
    let (mut items, _response) = call.await.unwrap();
    let headers = tokio::time::timeout(Duration::from_secs(5), items.headers())
        .await
        .expect("headers before any item");
    assert_eq!(list(&headers), [("h", "1")]);
}

#[tokio::test]
async fn client_streaming_headers_and_trailers() {
    let s = setup().await;
    let (mut tx, response) = client(&s.conn, plan(OK)).await.unwrap();
    for i in 0..10 {
        tx.send(i).await.unwrap();
    }
    tx.finish().unwrap();
    let (result, metadata) = response.with_metadata().await;
    assert_eq!(result.unwrap(), (true, true));
    assert_sent(&metadata);
}

#[tokio::test]
async fn bidirectional_headers_and_trailers() {
    let s = setup().await;
    let (mut tx, mut rx, response) = bidi(&s.conn, plan(OK)).await.unwrap();
    tx.send(1).await.unwrap();
    // The headers go out with the first item.
    assert_eq!(rx.headers().await.get("server"), Some("meta/1"));
    assert_eq!(rx.next().await.unwrap().unwrap(), 1);
    tx.send(2).await.unwrap();
    tx.finish().unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), 2);
    assert!(rx.next().await.is_none());
    assert_eq!(rx.trailers().unwrap().get("elapsed"), Some("5ms"));
    let (result, metadata) = response.with_metadata().await;
    assert_eq!(result.unwrap(), (true, true));
    assert_sent(&metadata);
}

#[tokio::test]
async fn a_notification_has_no_response_metadata() {
    let mut s = setup().await;
    let note: Notify<(Plan,)> = Notify::new(&s.conn, "Meta", "note", (plan(OK),));
    note.await.unwrap();
    assert_eq!(s.notes.recv().await.unwrap(), (false, false));
}

// ---------------------------------------------------------------------------------------------
// Version 1.

#[tokio::test]
async fn a_version_1_connection_carries_no_response_metadata() {
    for (server_version, client_version) in [(1, 2), (2, 1)] {
        let s = setup_with(
            Node::builder().protocol_version(server_version),
            Node::builder().protocol_version(client_version),
        )
        .await;
        assert_eq!(s.conn.protocol_version(), 1);
        let (result, metadata) = unary(&s.conn, plan(OK)).with_metadata().await;
        assert_eq!(result.unwrap(), (false, false));
        assert_eq!(metadata, Default::default());
        let (result, metadata) = unary(&s.conn, plan(PANIC)).with_metadata().await;
        assert!(matches!(result, Err(Error::HandlerFailed(_))));
        assert_eq!(metadata, Default::default());

        let (mut items, response) = server(&s.conn, plan(OK), 2).await.unwrap();
        assert!(items.headers().await.is_empty());
        assert_eq!(items.count().await, 2);
        let (result, metadata) = response.with_metadata().await;
        assert_eq!(result.unwrap(), (false, false));
        assert_eq!(metadata, Default::default());
    }
}

// ---------------------------------------------------------------------------------------------
// Bounds.

fn many(n: usize) -> Entries {
    (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
}

#[tokio::test]
async fn a_handler_setting_too_much_fails_its_call_and_the_connection_lives() {
    let s = setup().await;
    // Too many headers, too large a trailer.
    for plan in [
        (many(65), vec![], OK),
        (vec![], entries(&[("big", &"v".repeat(9000))]), OK),
    ] {
        let (result, metadata) = unary(&s.conn, plan.clone()).with_metadata().await;
        let Err(Error::MessageTooLarge(message)) = result else {
            panic!("{result:?}");
        };
        assert!(message.contains("response"), "{message}");
        assert_eq!(metadata, Default::default());

        // On a stream: headers too large to go with the first item keep it from being sent;
        // either way the call fails.
        let (items, response) = server(&s.conn, plan, 2).await.unwrap();
        let items: Vec<_> = items.collect().await;
        assert!(
            matches!(items.last(), Some(Err(Error::MessageTooLarge(_)))),
            "{items:?}"
        );
        assert!(matches!(response.await, Err(Error::MessageTooLarge(_))));
    }
    let (result, _) = unary(&s.conn, plan(OK)).with_metadata().await;
    assert_eq!(result.unwrap(), (true, true));
}

#[tokio::test]
async fn metadata_over_the_caller_s_bounds_fails_the_call_and_the_connection_lives() {
    let caller = Node::builder()
        .max_metadata_entries(2)
        .max_metadata_entry_size(100);
    let s = setup_with(Node::builder(), caller).await;
    let three = (many(3), vec![], OK);
    let (result, _) = unary(&s.conn, three.clone()).with_metadata().await;
    assert!(
        matches!(result, Err(Error::MessageTooLarge(ref m)) if m.contains("3 metadata entries")),
        "{result:?}"
    );
    let big = (vec![], entries(&[("k", &"v".repeat(200))]), OK);
    let (mut items, response) = server(&s.conn, big, 1).await.unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 0);
    assert!(matches!(
        items.next().await,
        Some(Err(Error::MessageTooLarge(_)))
    ));
    assert!(matches!(response.await, Err(Error::MessageTooLarge(_))));
    let (result, metadata) = unary(&s.conn, (many(2), vec![], OK)).with_metadata().await;
    assert_eq!(result.unwrap(), (true, true));
    assert_eq!(metadata.headers().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// The bytes on the wire.

const H1: [u8; 10] = [0, 0, 0, 6, 0x05, 1, 1, b'h', 1, b'1'];
const T2: [u8; 10] = [0, 0, 0, 6, 0x06, 1, 1, b't', 1, b'2'];

#[tokio::test]
async fn headers_and_trailers_frames_are_as_documented() {
    let s = setup().await;
    // Request-response: HEADERS, TRAILERS, RESULT "ok".
    let (_, answer) = exchange(&s.conn, &call("Meta", "pin", UNARY, &[]), true).await;
    let mut expected = H1.to_vec();
    expected.extend(T2);
    expected.extend(frame(RESULT, &str_bytes("ok")));
    assert_eq!(answer, expected);
    // Server-streaming: HEADERS, ITEM 7, ITEM 8, TRAILERS, RESULT ().
    let (_, answer) = exchange(
        &s.conn,
        &call("Meta", "pin_stream", SERVER_STREAM, &[]),
        true,
    )
    .await;
    let mut expected = H1.to_vec();
    expected.extend(frame(ITEM, &[7]));
    expected.extend(frame(ITEM, &[8]));
    expected.extend(T2);
    expected.extend(frame(RESULT, &[]));
    assert_eq!(answer, expected);
}

#[tokio::test]
async fn a_version_1_connection_gets_no_metadata_frames() {
    let s = setup_with(Node::builder().protocol_version(1), Node::builder()).await;
    let (_, answer) = exchange(&s.conn, &call("Meta", "pin", UNARY, &[]), true).await;
    assert_eq!(answer, frame(RESULT, &str_bytes("ok")));
}

// ---------------------------------------------------------------------------------------------
// A hostile callee.

/// A raw callee speaking `alpn`: answers each call with the bytes `answer` gives for its
/// method name, then finishes the stream.
async fn raw_callee(alpn: &[u8], answer: fn(&str) -> Vec<u8>) -> (Node, Connection) {
    let (chain, key, id) = common::raw::ed25519_identity();
    let mut tls = common::raw::server_tls(chain, key);
    tls.alpn_protocols = vec![alpn.to_vec()];
    let listener = common::raw::listener(tls);
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let conn = listener.accept().await.unwrap().await.unwrap();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let request = recv.read_to_end(1 << 16).await.unwrap();
                let (tag, payload) = &frames(&request)[0];
                assert_eq!(*tag, CALL);
                let mut rest = &payload[..];
                let service_len = read_varint(&mut rest) as usize;
                rest = &rest[service_len..];
                let method_len = read_varint(&mut rest) as usize;
                let method = std::str::from_utf8(&rest[..method_len]).unwrap();
                let _ = send.write_all(&answer(method)).await;
                let _ = send.finish();
                let _ = send.stopped().await;
            });
        }
    });
    let caller = node(Node::builder()).await;
    let conn = caller.connect(addr, id).await.expect("connect");
    (caller, conn)
}

fn hostile(method: &str) -> Vec<u8> {
    let ok = frame(RESULT, &str_bytes("ok"));
    let item = frame(ITEM, &[1]);
    let parts: Vec<&[u8]> = match method {
        "ok" => vec![&H1, &T2, &ok],
        "two_headers" => vec![&H1, &H1, &ok],
        "headers_after_item" => vec![&item, &H1, &ok],
        "two_trailers" => vec![&T2, &T2, &ok],
        "item_after_trailers" => vec![&T2, &item, &ok],
        "trailers_then_end" => vec![&T2],
        "headers_after_trailers" => vec![&T2, &H1, &ok],
        "trailing_bytes" => vec![&[0, 0, 0, 7, 0x05, 1, 1, b'h', 1, b'1', 0], &ok],
        "not_utf8" => vec![&[0, 0, 0, 6, 0x05, 1, 1, 0xff, 1, b'1'], &ok],
        "too_many" => {
            let mut payload = Vec::new();
            varint(&mut payload, 65);
            for i in 0..65 {
                string(&mut payload, &format!("k{i}"));
                string(&mut payload, "");
            }
            return [frame(0x05, &payload), ok].concat();
        }
        // Announces 17 KiB, over the 16 KiB bound, and sends none of it.
        "oversized" => return vec![0, 0, 0x44, 0x01, 0x06],
        _ => vec![&ok],
    };
    parts.concat()
}

#[tokio::test]
async fn a_callee_breaking_the_rules_fails_the_call_and_the_connection_lives() {
    let (_caller, conn) = raw_callee(dep2p_runtime::ALPN, hostile).await;
    assert_eq!(conn.protocol_version(), 2);
    let call = |method| Unary::<(), String>::new(&conn, "Raw", method, ());
    let (result, metadata) = call("ok").with_metadata().await;
    assert_eq!(result.unwrap(), "ok");
    assert_eq!(list(metadata.headers()), [("h", "1")]);
    assert_eq!(list(metadata.trailers()), [("t", "2")]);
    for method in [
        "two_headers",
        "headers_after_item",
        "two_trailers",
        "item_after_trailers",
        "trailers_then_end",
        "headers_after_trailers",
        "trailing_bytes",
        "not_utf8",
    ] {
        let result = call(method).await;
        assert!(
            matches!(result, Err(Error::Protocol(_))),
            "{method}: {result:?}"
        );
    }
    for method in ["too_many", "oversized"] {
        let result = call(method).await;
        assert!(
            matches!(result, Err(Error::MessageTooLarge(_))),
            "{method}: {result:?}"
        );
    }
    // The same rules on a stream of items.
    let stream = |method| ServerStreaming::<(), u8, String>::new(&conn, "Raw", method, ());
    for method in ["headers_after_item", "item_after_trailers", "two_headers"] {
        let (items, response) = stream(method).await.unwrap();
        let items: Vec<_> = items.collect().await;
        assert!(
            matches!(items.last(), Some(Err(Error::Protocol(_)))),
            "{method}: {items:?}"
        );
        assert!(
            matches!(response.await, Err(Error::Protocol(_))),
            "{method}"
        );
    }
    assert_eq!(call("ok").await.unwrap(), "ok");
    assert!(conn.quic().close_reason().is_none());
}

#[tokio::test]
async fn metadata_frames_on_a_version_1_connection_are_violations() {
    let (_caller, conn) = raw_callee(dep2p_runtime::ALPN_V1, hostile).await;
    assert_eq!(conn.protocol_version(), 1);
    let result = Unary::<(), String>::new(&conn, "Raw", "ok", ()).await;
    assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    let result = Unary::<(), String>::new(&conn, "Raw", "plain", ()).await;
    assert_eq!(result.unwrap(), "ok");
}
