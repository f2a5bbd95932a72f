//! Node addresses and tickets: their text and serde forms, and dialing by them over loopback.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{echo, probe, TestService};
use dep2p_runtime::{Error, Node, NodeAddr, NodeBuilder, ParseNodeAddrError, SecretKey};

/// A server on 127.0.0.1 serving the test service.
async fn server() -> Node {
    serving(Node::builder()).bind("127.0.0.1:0").await.unwrap()
}

fn serving(builder: NodeBuilder) -> NodeBuilder {
    builder.serve(TestService {
        probe: Arc::clone(&probe()),
    })
}

/// A loopback address where nothing listens: a UDP port bound, then released.
fn dead_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn some_id() -> dep2p_runtime::NodeId {
    SecretKey::generate().public()
}

#[test]
fn tickets_round_trip_through_text() {
    let id = some_id();
    let addr = NodeAddr::new(id)
        .with_addr("192.0.2.1:4433".parse().unwrap())
        .with_addr("[2001:db8::1]:4433".parse().unwrap())
        .with_host("example.com:80")
        .unwrap();
    let ticket = addr.to_string();
    assert_eq!(
        ticket,
        format!("{id}@192.0.2.1:4433,[2001:db8::1]:4433,example.com:80")
    );
    assert!(!ticket.contains(char::is_whitespace));
    let parsed: NodeAddr = ticket.parse().unwrap();
    assert_eq!(parsed, addr);
    assert_eq!(parsed.id(), id);
    assert_eq!(parsed.addrs().len(), 2);
    assert_eq!(parsed.hosts().collect::<Vec<_>>(), ["example.com:80"]);
}

#[test]
fn serde_carries_the_ticket_in_json_and_the_fields_in_postcard() {
    let addr = NodeAddr::new(some_id())
        .with_addr("10.1.2.3:4433".parse().unwrap())
        .with_addr("[::1]:4433".parse().unwrap())
        .with_host("node.example:9")
        .unwrap();

    let json = serde_json::to_string(&addr).unwrap();
    assert_eq!(json, format!("\"{addr}\""));
    assert_eq!(serde_json::from_str::<NodeAddr>(&json).unwrap(), addr);

    let bytes = postcard::to_stdvec(&addr).unwrap();
    assert!(
        bytes.len() < addr.to_string().len(),
        "{} bytes",
        bytes.len()
    );
    assert_eq!(postcard::from_bytes::<NodeAddr>(&bytes).unwrap(), addr);
}

#[test]
fn bad_tickets_say_what_is_wrong() {
    let id = some_id();
    let err = format!("{id}@127.0.0.1").parse::<NodeAddr>().unwrap_err();
    assert!(
        matches!(&err, ParseNodeAddrError::BadAddr { entry, .. } if entry == "127.0.0.1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing `:port`"), "{err}");

    let err = format!("{id}@::1:80").parse::<NodeAddr>().unwrap_err();
    assert!(err.to_string().contains("brackets"), "{err}");

    let err = "abc@127.0.0.1:1".parse::<NodeAddr>().unwrap_err();
    assert_eq!(err, ParseNodeAddrError::BadNodeId("abc".into()));

    let err = format!("{id}@").parse::<NodeAddr>().unwrap_err();
    assert_eq!(err, ParseNodeAddrError::EmptyAddr);

    let err = serde_json::from_str::<NodeAddr>(&format!("\"{id}@x y:1\"")).unwrap_err();
    assert!(err.to_string().contains("only letters"), "{err}");
}

#[test]
fn decoded_addresses_are_checked_like_parsed_ones() {
    let mut many = NodeAddr::new(some_id());
    for port in 1..=(NodeAddr::MAX_ADDRS as u16 + 1) {
        many = many.with_addr(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let bytes = postcard::to_stdvec(&many).unwrap();
    assert!(postcard::from_bytes::<NodeAddr>(&bytes).is_err());
    let err = many.to_string().parse::<NodeAddr>().unwrap_err();
    assert_eq!(
        err,
        ParseNodeAddrError::TooManyAddrs(NodeAddr::MAX_ADDRS + 1)
    );
}

#[tokio::test]
async fn dials_a_server_by_its_ticket() {
    let server = server().await;
    let ticket = server.node_addr().to_string();
    assert_eq!(ticket, format!("{}@{}", server.id(), server.local_addr()));

    let client = Node::builder().bind_any().await.unwrap();
    let conn = client.dial(&ticket.parse().unwrap()).await.unwrap();
    assert_eq!(conn.remote_id(), server.id());
    assert_eq!(echo(&conn, "ticket").await.unwrap(), "ticket");
}

#[tokio::test]
async fn dials_localhost_by_name() {
    let server = server().await;
    let port = server.local_addr().port();
    let addr = NodeAddr::new(server.id())
        .with_host(&format!("localhost:{port}"))
        .unwrap();
    for client in [
        Node::builder().bind_any().await.unwrap(),
        Node::builder().bind("127.0.0.1:0").await.unwrap(),
    ] {
        let conn = client.dial(&addr).await.unwrap();
        assert_eq!(echo(&conn, "by name").await.unwrap(), "by name");
    }
}

#[tokio::test]
async fn a_name_is_dialed_when_the_address_before_it_fails() {
    // The server listens on 127.0.0.1 only: ::1 at its port has no one to answer.
    let server = server().await;
    let port = server.local_addr().port();
    let addr = NodeAddr::new(server.id())
        .with_addr(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)))
        .with_host(&format!("localhost:{port}"))
        .unwrap();
    for client in [
        Node::builder().bind_any().await.unwrap(),
        // An IPv4 socket cannot send to ::1 at all: that attempt fails at once.
        Node::builder().bind("127.0.0.1:0").await.unwrap(),
    ] {
        let started = Instant::now();
        let conn = client.dial(&addr).await.unwrap();
        assert_eq!(echo(&conn, "second").await.unwrap(), "second");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_dead_first_address_delays_the_live_one_briefly() {
    let server = server().await;
    let addr = NodeAddr::new(server.id())
        .with_addr(dead_addr())
        .with_addr(server.local_addr());
    let client = Node::builder()
        .connect_timeout(Duration::from_secs(8))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let started = Instant::now();
    let conn = client.dial(&addr).await.unwrap();
    // The live address starts 250 ms after the dead one at most; far within the timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(echo(&conn, "alive").await.unwrap(), "alive");
}

#[tokio::test]
async fn the_wrong_node_id_is_reported_as_such() {
    let server = server().await;
    let expected = some_id();
    let addr = NodeAddr::new(expected)
        .with_addr(dead_addr())
        .with_addr(server.local_addr());
    let client = Node::builder()
        .connect_timeout(Duration::from_secs(1))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    match client.dial(&addr).await {
        Err(Error::WrongNodeId {
            expected: e,
            presented,
        }) => {
            assert_eq!(e, expected);
            assert_eq!(presented, server.id());
        }
        other => panic!("expected WrongNodeId, got {other:?}"),
    }
}

#[tokio::test]
async fn dead_addresses_are_unreachable_within_the_connect_timeout() {
    let timeout = Duration::from_millis(800);
    let client = Node::builder()
        .connect_timeout(timeout)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (first, second) = (dead_addr(), dead_addr());
    let addr = NodeAddr::new(some_id())
        .with_addr(first)
        .with_addr(second)
        // Not reachable from an IPv4 socket: fails without a packet sent.
        .with_addr("[::1]:9".parse().unwrap());
    let started = Instant::now();
    let err = client.dial(&addr).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
    match &err {
        Error::Unreachable { addr, reason } => {
            assert_eq!(*addr, first);
            for tried in [first.to_string(), second.to_string(), "[::1]:9".into()] {
                assert!(reason.contains(&tried), "{tried} missing from {reason}");
            }
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn an_address_with_nothing_to_dial_is_unreachable_at_once() {
    let client = Node::builder().bind("127.0.0.1:0").await.unwrap();
    let err = client.dial(&NodeAddr::new(some_id())).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unreachable { reason, .. } if reason.contains("no address")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_node_made_without_a_bind_address_calls_a_server() {
    let server = server().await;
    let client = Node::builder().bind_any().await.unwrap();
    assert!(client.local_addr().ip().is_unspecified());
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_eq!(echo(&conn, "any").await.unwrap(), "any");
}

#[tokio::test]
async fn an_unspecified_bind_advertises_loopback_or_what_it_is_given() {
    let server = serving(Node::builder()).bind_any().await.unwrap();
    let port = server.local_addr().port();
    let own = server.node_addr();
    assert!(own
        .addrs()
        .contains(&SocketAddr::from(([127, 0, 0, 1], port))));
    assert!(own.addrs().iter().all(|a| a.ip().is_loopback()), "{own}");
    // The loopback addresses it lists do reach it.
    let client = Node::builder().bind_any().await.unwrap();
    let conn = client.dial(&own).await.unwrap();
    assert_eq!(echo(&conn, "loopback").await.unwrap(), "loopback");

    let public: SocketAddr = "203.0.113.5:4433".parse().unwrap();
    let advertised = Node::builder()
        .advertise(public)
        .bind("0.0.0.0:0")
        .await
        .unwrap();
    assert_eq!(advertised.node_addr().addrs(), &[public]);
}
