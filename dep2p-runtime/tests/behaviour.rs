//! Deadlines, cancellation, limits, identity, failures and shutdown, over real QUIC.

mod common;

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use dep2p_runtime::{Error, Node, SecretKey, ServerStreaming, Unary};
use futures::StreamExt;

#[tokio::test]
async fn deadline_ends_the_call_on_both_sides() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let started = Instant::now();
    let err = sleep(&conn, 10_000)
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(err.is_timeout());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The handler was stopped rather than left sleeping.
    eventually("the handler to be stopped", || {
        probe.running.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(probe.cancelled.load(Ordering::SeqCst), 1);
    // The connection still serves.
    assert_eq!(echo(&conn, "after").await.unwrap(), "after");
}

#[tokio::test]
async fn node_default_timeout_applies() {
    let probe = probe();
    let server = node(Node::builder().serve(TestService {
        probe: probe.clone(),
    }))
    .await;
    let client = node(Node::builder().request_timeout(Duration::from_millis(100))).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert!(matches!(sleep(&conn, 10_000).await, Err(Error::Timeout)));
    // The connection still serves (with a deadline a loaded machine cannot miss).
    let quick = sleep(&conn, 1).timeout(Duration::from_secs(10)).await;
    assert_eq!(quick.unwrap(), 1);
}

#[tokio::test]
async fn server_side_deadline_reports_deadline_exceeded() {
    // The server stops the handler at the deadline it received and says so; the client's own
    // timer, set a little later, does not fire first.
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let (mut rx, result) = ServerStreaming::<(), u8, ()>::new(&conn, SERVICE, "pause_stream", ())
        .timeout(Duration::from_millis(150))
        .await
        .unwrap();
    let err = rx.next().await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(result.await.unwrap_err().is_timeout());
    eventually("the handler to be stopped", || {
        probe.running.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn dropping_a_call_cancels_the_handler() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let call = tokio::spawn(hold(&conn).into_future());
    eventually("the handler to start", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;
    call.abort();
    eventually("the handler to be cancelled", || {
        probe.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(probe.running.load(Ordering::SeqCst), 0);
    assert_eq!(echo(&conn, "next").await.unwrap(), "next");
}

#[tokio::test]
async fn dropping_a_receiver_cancels_a_streaming_handler() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let (rx, result) = ServerStreaming::<(), u8, ()>::new(&conn, SERVICE, "pause_stream", ())
        .await
        .unwrap();
    eventually("the handler to start", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(rx);
    eventually("the handler to be cancelled", || {
        probe.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(matches!(result.await, Err(Error::Cancelled)));
}

#[tokio::test]
async fn dropping_the_client_receiver_fails_the_handlers_send() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    // An endless stream: the handler only stops when a send fails.
    let (mut rx, result) = count(&conn, u32::MAX).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), 0);
    drop(rx);
    drop(result);
    eventually("the handler to stop", || {
        probe.running.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(probe.cancelled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_stream_times_out() {
    let probe = probe();
    let (_server, client, _conn) = pair(&probe).await;
    drop(client);
    let server = node(Node::builder().serve(TestService {
        probe: probe.clone(),
    }))
    .await;
    let client = node(Node::builder().idle_stream_timeout(Duration::from_millis(150))).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let (mut rx, _result) = ServerStreaming::<(), u8, ()>::new(&conn, SERVICE, "pause_stream", ())
        .await
        .unwrap();
    let err = rx.next().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::IdleTimeout), "{err:?}");
    eventually("the handler to be cancelled", || {
        probe.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn flow_control_makes_a_fast_sender_wait() {
    let probe = probe();
    let window = 64 * 1024;
    let (_server, _client, conn) = pair_with(
        Node::builder()
            .stream_window(window)
            .max_concurrent_streams(2)
            .connection_window(4 * window),
        &probe,
    )
    .await;
    let (mut tx, _result) =
        dep2p_runtime::ClientStreaming::<(), Vec<u8>, ()>::new(&conn, SERVICE, "stall", ())
            .await
            .unwrap();
    let mut sent = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), tx.send(vec![1u8; 4096])).await {
            Ok(Ok(())) => sent += 4096,
            Ok(Err(e)) => panic!("send failed: {e}"),
            Err(_) => break,
        }
        assert!(
            sent < 16 * window as usize,
            "sender never waited: {sent} bytes buffered"
        );
    }
    // The receiver never read: what got through is bounded by its window, plus the 256 KiB
    // a sender may queue and the 256 KiB its writer may be writing.
    let bound = 2 * window as usize + 2 * 256 * 1024;
    assert!(
        sent <= bound,
        "{sent} bytes accepted with a {window}-byte window"
    );
    probe.release.notify_waiters();
}

#[tokio::test]
async fn oversized_messages_fail_only_their_call() {
    let probe = probe();
    let (_server, _client, conn) = pair_with(Node::builder().max_message_size(1024), &probe).await;
    // The server's limit refuses a large request...
    let big = "x".repeat(4096);
    let err = echo(&conn, &big).await.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge(_)), "{err:?}");
    // ...and a large response is refused by the server before sending.
    let bytes: Unary<(usize,), Vec<u8>> = Unary::new(&conn, SERVICE, "bytes", (4096,));
    let err = bytes.await.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge(_)), "{err:?}");
    assert_eq!(echo(&conn, "small").await.unwrap(), "small");

    // The client's own limit refuses to send, before anything reaches the peer.
    let server = node(Node::builder().serve(TestService {
        probe: probe.clone(),
    }))
    .await;
    let client = node(Node::builder().max_message_size(1024)).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert!(matches!(
        echo(&conn, &big).await,
        Err(Error::MessageTooLarge(_))
    ));
    // And the response over the client's limit is refused on arrival.
    let bytes: Unary<(usize,), Vec<u8>> = Unary::new(&conn, SERVICE, "bytes", (4096,));
    assert!(matches!(bytes.await, Err(Error::MessageTooLarge(_))));
    assert_eq!(echo(&conn, "small").await.unwrap(), "small");
}

#[tokio::test]
async fn concurrent_call_limit_refuses_the_excess() {
    let probe = probe();
    let (_server, _client, conn) = pair_with(Node::builder().max_concurrent_calls(2), &probe).await;
    let a = tokio::spawn(hold(&conn).into_future());
    let b = tokio::spawn(hold(&conn).into_future());
    eventually("two handlers to run", || {
        probe.running.load(Ordering::SeqCst) == 2
    })
    .await;
    let err = echo(&conn, "third").await.unwrap_err();
    assert!(matches!(err, Error::Overloaded(_)), "{err:?}");
    probe.release.notify_waiters();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(echo(&conn, "fourth").await.unwrap(), "fourth");
}

#[tokio::test]
async fn a_thousand_concurrent_calls_on_one_connection() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let calls = (0..1000).map(|i| {
        let conn = conn.clone();
        tokio::spawn(async move { echo(&conn, &i.to_string()).await })
    });
    let results = futures::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap().unwrap(), i.to_string());
    }
}

#[tokio::test]
async fn wrong_node_id_is_refused() {
    let probe = probe();
    let (server, client, _conn) = pair(&probe).await;
    let imposter = SecretKey::generate().public();
    let err = client
        .connect(server.local_addr(), imposter)
        .await
        .unwrap_err();
    match err {
        Error::WrongNodeId {
            expected,
            presented,
        } => {
            assert_eq!(expected, imposter);
            assert_eq!(presented, server.id());
        }
        other => panic!("expected WrongNodeId, got {other:?}"),
    }
    assert!(client
        .connect(server.local_addr(), server.id())
        .await
        .is_ok());
}

#[tokio::test]
async fn unreachable_peer_is_reported() {
    let client = node(Node::builder().connect_timeout(Duration::from_millis(300))).await;
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = client
        .connect(silent.local_addr().unwrap(), SecretKey::generate().public())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_connection_error());
}

#[tokio::test]
async fn identity_survives_a_restart() {
    let path = std::env::temp_dir().join(format!("dep2p-restart-{}", std::process::id()));
    let key = SecretKey::load_or_generate(&path).unwrap();
    let first = node(Node::builder().secret_key(key)).await;
    let id = first.id();
    drop(first);
    let again = node(Node::builder().secret_key(SecretKey::load(&path).unwrap())).await;
    assert_eq!(again.id(), id);
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn unknown_service_and_method() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let err = Unary::<(), ()>::new(&conn, "Nope", "x", ())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownService(ref s) if s == "Nope"),
        "{err:?}"
    );
    let err = Unary::<(), ()>::new(&conn, SERVICE, "nope", ())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownMethod(ref m) if m.contains("nope")),
        "{err:?}"
    );
    // The same name called as another kind is not that method.
    let err = ServerStreaming::<(String,), u8, ()>::new(&conn, SERVICE, "echo", ("x".into(),))
        .await
        .unwrap()
        .1
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownMethod(_)), "{err:?}");
    // Arguments of the wrong type are undecodable, not a crash.
    let err = Unary::<(u8,), u64>::new(&conn, SERVICE, "echo", (200,))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    assert_eq!(echo(&conn, "ok").await.unwrap(), "ok");
}

#[tokio::test]
async fn a_panicking_handler_fails_its_call_only() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    let err = Unary::<(), u8>::new(&conn, SERVICE, "panic", ())
        .await
        .unwrap_err();
    // The panic's message stays on the serving node unless it opts in.
    assert!(
        matches!(err, Error::HandlerFailed(ref m) if m.contains("panic") && !m.contains("boom")),
        "{err:?}"
    );
    assert_eq!(echo(&conn, "alive").await.unwrap(), "alive");

    let builder = Node::builder().send_panic_messages(true);
    let (_server, _client, conn) = pair_with(builder, &probe).await;
    let err = Unary::<(), u8>::new(&conn, SERVICE, "panic", ())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HandlerFailed(ref m) if m.contains("boom")),
        "{err:?}"
    );
}

#[tokio::test]
async fn shutdown_lets_calls_in_flight_finish_and_refuses_new_ones() {
    let probe = probe();
    let (server, _client, conn) = pair(&probe).await;
    let in_flight = tokio::spawn(sleep(&conn, 300).into_future());
    eventually("the call to start", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = echo(&conn, "late").await.unwrap_err();
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
    assert_eq!(in_flight.await.unwrap().unwrap(), 300);
    stopping.await.unwrap();
    let err = echo(&conn, "after").await.unwrap_err();
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
}

#[tokio::test]
async fn shutdown_grace_period_is_bounded() {
    let probe = probe();
    let (server, _client, conn) = pair(&probe).await;
    let in_flight = tokio::spawn(hold(&conn).into_future());
    eventually("the call to start", || {
        probe.running.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = Instant::now();
    server.shutdown(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_answers_of_calls_that_finish_in_the_grace_period() {
    // The answer of a call that ends just before the node closes must still arrive. The
    // handler runs long enough to be seen running however loaded the machine is.
    for _ in 0..8 {
        let probe = probe();
        let (server, _client, conn) = pair(&probe).await;
        let in_flight = tokio::spawn(sleep(&conn, 150).into_future());
        eventually("the call to start", || {
            probe.running.load(Ordering::SeqCst) == 1
                || probe.cancelled.load(Ordering::SeqCst) > 0
                || in_flight.is_finished()
        })
        .await;
        server.shutdown(Duration::from_secs(5)).await;
        assert_eq!(in_flight.await.unwrap().unwrap(), 150);
    }
}

#[tokio::test]
async fn large_messages_share_a_small_connection_buffer() {
    // Each 150 KiB request needs most of the 256 KiB the connection may buffer: they are
    // read one or two at a time, and all complete.
    let probe = probe();
    let builder = Node::builder()
        .max_message_size(200 * 1024)
        .connection_buffer(256 * 1024);
    let (_server, _client, conn) = pair_with(builder, &probe).await;
    let big = "y".repeat(150 * 1024);
    let calls = (0..20).map(|_| echo(&conn, &big).into_future());
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap().len(), big.len());
    }
}

#[tokio::test]
async fn accepted_connections_are_limited() {
    let probe = probe();
    let server = node(Node::builder().max_connections(2).serve(TestService {
        probe: probe.clone(),
    }))
    .await;
    let dial = || async {
        let client = node(Node::builder().connect_timeout(Duration::from_secs(3))).await;
        let conn = client.connect(server.local_addr(), server.id()).await;
        (client, conn)
    };
    let (_a, first) = dial().await;
    let (_b, second) = dial().await;
    let first = first.unwrap();
    // Held: a dialed connection closes when its last handle goes.
    let _second = second.unwrap();
    let (_c, third) = dial().await;
    let err = third.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    // The connections in place keep working, and closing one frees its place.
    assert_eq!(echo(&first, "still").await.unwrap(), "still");
    first.close();
    let mut again = None;
    for _ in 0..50 {
        let (client, conn) = dial().await;
        if let Ok(conn) = conn {
            again = Some((client, conn));
            break;
        }
    }
    let (_d, conn) = again.expect("a place freed by the closed connection");
    assert_eq!(echo(&conn, "in").await.unwrap(), "in");
}

/// A request-response call that completes stops and resets no stream on either side. The end
/// of a stream (its FIN) may arrive in a packet after the last frame; a side that dropped the
/// stream before it would tell the peer to stop sending (STOP_SENDING), and the peer would
/// answer with a reset: two packets per call for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_calls_stop_and_reset_no_stream() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    for i in 0..500 {
        let text = i.to_string();
        assert_eq!(echo(&conn, &text).await.unwrap(), text);
    }
    let stats = conn.path_stats();
    // The caller stopped no answer; and, since the server stopped no request, it had no
    // request stream to reset either.
    assert_eq!(
        (stats.streams_stopped, stats.streams_reset),
        (0, 0),
        "{stats:?}"
    );
}

/// A call done in its first poll is served in its connection's accept loop; a handler that
/// blocks its thread there must not keep the connection's later calls from running side by
/// side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handlers_that_block_before_waiting_still_run_side_by_side() {
    let probe = probe();
    let (_server, _client, conn) = pair(&probe).await;
    // Served in the accept loop, which it keeps for far longer than the inline limit.
    assert_eq!(block(&conn, 50).await.unwrap(), 50);
    // So the next calls are spawned, each as a task of its own.
    let calls = (0..3).map(|_| block(&conn, 300).into_future());
    let done = futures::future::try_join_all(calls).await.unwrap();
    assert_eq!(done, [300; 3]);
    let most = probe.most_blocking.load(Ordering::SeqCst);
    assert!(most >= 2, "at most {most} blocking handler(s) ran at once");
}

/// With `inline_limit(None)` every call is a task of its own from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_inline_limit_every_call_is_spawned() {
    let probe = probe();
    let (_server, _client, conn) = pair_with(Node::builder().inline_limit(None), &probe).await;
    let calls = (0..2).map(|_| block(&conn, 300).into_future());
    let done = futures::future::try_join_all(calls).await.unwrap();
    assert_eq!(done, [300; 2]);
    let most = probe.most_blocking.load(Ordering::SeqCst);
    assert_eq!(most, 2, "the two blocking handlers ran one after the other");
}
