//! The five kinds of call, in both directions of one connection.

mod common;

use std::sync::Arc;

use common::*;
use dep2p_runtime::{Error, Unary};
use futures::StreamExt;

#[tokio::test]
async fn unary_round_trip() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    assert_eq!(echo(&conn, "hi").await.unwrap(), "hi");
    let add: Unary<(i64, i64), Result<i64, String>> = Unary::new(&conn, SERVICE, "add", (2, 3));
    assert_eq!(add.await.unwrap(), Ok(5));
    // The application's error travels intact, distinct from the framework's.
    let add: Unary<(i64, i64), Result<i64, String>> =
        Unary::new(&conn, SERVICE, "add", (i64::MAX, 1));
    assert_eq!(add.await.unwrap(), Err("overflow".to_string()));
}

#[tokio::test]
async fn notification_arrives() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        notes: Some(tx),
        ..Probe::default()
    });
    let (_server, _client, conn) = pair(&probe).await;
    note(&conn, "one").await.unwrap();
    note(&conn, "two").await.unwrap();
    let mut got = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    got.sort();
    assert_eq!(got, ["one", "two"]);
}

#[tokio::test]
async fn server_stream_keeps_order_and_ends_with_result() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let (rx, result) = count(&conn, 1000).await.unwrap();
    let items: Vec<u32> = rx.map(|r| r.unwrap()).collect().await;
    assert_eq!(items, (0..1000).collect::<Vec<_>>());
    assert_eq!(result.await.unwrap(), Ok(1000));
}

#[tokio::test]
async fn server_stream_failure_is_not_a_clean_end() {
    let probe = probe();
    let builder = dep2p_runtime::Node::builder().send_panic_messages(true);
    let (_server, _client, conn) = pair_with(builder, &probe).await;
    let call: dep2p_runtime::ServerStreaming<(u32,), u32, ()> =
        dep2p_runtime::ServerStreaming::new(&conn, SERVICE, "count_fail", (3,));
    let (mut rx, result) = call.await.unwrap();
    for i in 0..3 {
        assert_eq!(rx.next().await.unwrap().unwrap(), i);
    }
    let err = rx.next().await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::HandlerFailed(ref m) if m.contains("failed after 3")),
        "{err:?}"
    );
    assert!(rx.next().await.is_none());
    assert!(matches!(result.await, Err(Error::HandlerFailed(_))));
}

#[tokio::test]
async fn client_stream_sums() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let (mut tx, result) = sum(&conn, 100).await.unwrap();
    for i in 1..=1000u64 {
        tx.send(i).await.unwrap();
    }
    tx.finish().unwrap();
    assert_eq!(result.await.unwrap(), Ok(100 + 500_500));
}

#[tokio::test]
async fn client_stream_dropped_sender_is_not_a_clean_end() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let (mut tx, result) = sum(&conn, 0).await.unwrap();
    tx.send(1).await.unwrap();
    drop(tx);
    // The handler sees an error, not the end of the stream, so it never returns a sum. (If
    // the reset overtakes the call header, the call is refused as cancelled before it starts.)
    match result.await {
        Ok(Err(msg)) => assert!(msg.contains("cancelled"), "{msg}"),
        Err(Error::Cancelled) => {}
        other => panic!("expected the handler to see a cancelled stream, got {other:?}"),
    }
}

#[tokio::test]
async fn bidi_interleaves() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let (mut tx, mut rx, result) = upper(&conn, "> ").await.unwrap();
    for word in ["a", "bc", "def"] {
        tx.send(word.to_string()).await.unwrap();
        assert_eq!(
            rx.next().await.unwrap().unwrap(),
            format!("> {}", word.to_uppercase())
        );
    }
    tx.finish().unwrap();
    assert!(rx.next().await.is_none());
    assert_eq!(result.await.unwrap(), Ok(3));
}

#[tokio::test]
async fn both_directions_on_one_connection() {
    let server_probe = probe();
    let client_probe = probe();
    let server = node(dep2p_runtime::Node::builder().serve(TestService {
        probe: server_probe,
    }))
    .await;
    let client = node(dep2p_runtime::Node::builder().serve(TestService {
        probe: client_probe,
    }))
    .await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_eq!(conn.remote_id(), server.id());

    // The server finds the connection through a call's context and calls back on it.
    let whoami: Unary<(), (String, Option<String>, bool)> =
        Unary::new(&conn, SERVICE, "whoami", ());
    let (caller, meta, has_deadline) = whoami.metadata("k", "v").await.unwrap();
    assert_eq!(caller, client.id().to_string());
    assert_eq!(meta.as_deref(), Some("v"));
    assert!(has_deadline);

    // A server-side handler that calls the client back over the same connection.
    let back = server_side_connection(&server, &conn).await;
    assert_eq!(back.remote_id(), client.id());
    assert_eq!(echo(&back, "from server").await.unwrap(), "from server");
    let (rx, result) = count(&back, 5).await.unwrap();
    assert_eq!(rx.count().await, 5);
    assert_eq!(result.await.unwrap(), Ok(5));
    let (mut tx, mut rx, result) = upper(&back, "").await.unwrap();
    tx.send("x".into()).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "X");
    tx.finish().unwrap();
    assert!(rx.next().await.is_none());
    assert_eq!(result.await.unwrap(), Ok(1));
    // And the client still calls the server meanwhile.
    assert_eq!(echo(&conn, "still").await.unwrap(), "still");
}

/// The server's end of `conn`, obtained the way a handler does: from its call context.
async fn server_side_connection(
    server: &dep2p_runtime::Node,
    conn: &dep2p_runtime::Connection,
) -> dep2p_runtime::Connection {
    use dep2p_runtime::{CallContext, CallFuture, IncomingCall, Service};
    struct Grab(tokio::sync::mpsc::UnboundedSender<dep2p_runtime::Connection>);
    impl Service for Grab {
        fn name(&self) -> &str {
            "Grab"
        }
        fn call(&self, call: IncomingCall) -> CallFuture {
            let tx = self.0.clone();
            call.unary(move |(): ()| async move {
                let ctx = CallContext::current().unwrap();
                let _ = tx.send(ctx.connection().clone());
            })
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    server.serve(Grab(tx)).unwrap();
    Unary::<(), ()>::new(conn, "Grab", "grab", ())
        .await
        .unwrap();
    rx.recv().await.unwrap()
}
