//! Peers rather than connections, over real QUIC: who may connect, one connection per peer,
//! connection events, and state kept per connection.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use dep2p_runtime::{
    CallContext, CallFuture, Connection, ConnectionEvent, Direction, Error, Events, IncomingCall,
    Node, NodeId, Service, Unary,
};

/// Far less than the connect timeout the refusal tests set: a refusal is seen at once.
const AT_ONCE: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);

/// A service keeping a session per connection: `login` sets the caller's name, `who` reads it.
#[derive(Clone)]
struct Sessions;

struct User(String);

const SESSIONS: &str = "Sessions";

impl Service for Sessions {
    fn name(&self) -> &str {
        SESSIONS
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        match call.method() {
            "login" => call.unary(|(name,): (String,)| async move {
                let ctx = CallContext::current().expect("inside a handler");
                ctx.connection().set_state(User(name));
            }),
            "who" => call.unary(|(): ()| async move {
                let ctx = CallContext::current().expect("inside a handler");
                ctx.connection().state::<User>().map(|u| u.0.clone())
            }),
            "visits" => call.unary(|(): ()| async move {
                let ctx = CallContext::current().expect("inside a handler");
                let visits = ctx
                    .connection()
                    .state_or_insert_with(|| std::sync::atomic::AtomicU32::new(0));
                visits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
            }),
            _ => call.unknown_method(),
        }
    }
}

fn login(conn: &Connection, name: &str) -> Unary<(String,), ()> {
    Unary::new(conn, SESSIONS, "login", (name.to_string(),))
}

fn who(conn: &Connection) -> Unary<(), Option<String>> {
    Unary::new(conn, SESSIONS, "who", ())
}

fn visits(conn: &Connection) -> Unary<(), u32> {
    Unary::new(conn, SESSIONS, "visits", ())
}

async fn serving(builder: dep2p_runtime::NodeBuilder) -> Node {
    let probe = probe();
    node(builder.serve(TestService { probe }).serve(Sessions)).await
}

/// The next connection event, within a few seconds.
async fn next(events: &mut Events) -> ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event in time")
        .expect("the node is alive")
}

#[tokio::test]
async fn a_refused_dialer_learns_it_at_once() {
    let allowed = node(Node::builder()).await;
    let refused = node(Node::builder()).await;
    let server = serving(
        Node::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .allow_only([allowed.id()]),
    )
    .await;

    let start = Instant::now();
    let err = refused
        .connect(server.local_addr(), server.id())
        .await
        .expect_err("refused");
    assert!(start.elapsed() < AT_ONCE, "took {:?}", start.elapsed());
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    assert!(err.is_connection_error());
    assert!(server.connections().is_empty());

    let conn = allowed
        .connect(server.local_addr(), server.id())
        .await
        .expect("allowed");
    assert_eq!(echo(&conn, "in").await.unwrap(), "in");
}

#[tokio::test]
async fn the_rule_sees_the_dialers_id_and_address() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(NodeId, SocketAddr)>::new()));
    let record = std::sync::Arc::clone(&seen);
    let server = serving(Node::builder().connect_timeout(CONNECT_TIMEOUT).accept_if(
        move |id, addr| {
            record.lock().unwrap().push((id, addr));
            false
        },
    ))
    .await;
    let client = node(Node::builder().connect_timeout(CONNECT_TIMEOUT)).await;
    let start = Instant::now();
    let err = client
        .connect(server.local_addr(), server.id())
        .await
        .expect_err("refused");
    assert!(start.elapsed() < AT_ONCE, "took {:?}", start.elapsed());
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [(client.id(), client.local_addr())]
    );
    // The refused node may still be dialed by the server: the rule is for accepting only.
    client.serve(Sessions).unwrap();
    let back = server
        .connect(client.local_addr(), client.id())
        .await
        .expect("dialing out is not checked");
    assert_eq!(who(&back).await.unwrap(), None);
}

#[tokio::test]
async fn connect_reuses_the_live_connection() {
    let server = serving(Node::builder()).await;
    let client = serving(Node::builder()).await;
    let first = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    let second = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_eq!(first.quic().stable_id(), second.quic().stable_id());
    assert_eq!(first.direction(), Direction::Dialed);

    // The accepting side connecting back gets the connection it accepted.
    let back = server
        .connect(client.local_addr(), client.id())
        .await
        .unwrap();
    assert_eq!(back.direction(), Direction::Accepted);
    assert_eq!(
        back.quic().remote_address(),
        client.local_addr(),
        "the accepted connection"
    );
    assert_eq!(server.connections().len(), 1);
    assert_eq!(client.connections().len(), 1);
    assert_eq!(echo(&back, "back").await.unwrap(), "back");

    // Once the last handle goes, the dialed connection closes and a new dial is made.
    let old = first.quic().clone();
    drop((first, second, back));
    tokio::time::timeout(Duration::from_secs(2), old.closed())
        .await
        .expect("closed when unused");
    eventually("the closed connection to be forgotten", || {
        client.connections().is_empty()
    })
    .await;
    let again = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_ne!(again.quic().stable_id(), old.stable_id());
}

#[tokio::test]
async fn concurrent_connects_share_one_dial() {
    let server = serving(Node::builder()).await;
    let client = node(Node::builder()).await;
    let mut events = server.events();
    let dials = (0..8).map(|_| client.connect(server.local_addr(), server.id()));
    let conns = futures::future::try_join_all(dials).await.unwrap();
    let id = conns[0].quic().stable_id();
    assert!(conns.iter().all(|c| c.quic().stable_id() == id));
    assert!(matches!(
        next(&mut events).await,
        ConnectionEvent::Connected {
            direction: Direction::Accepted,
            ..
        }
    ));
    // No second connection reached the server.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.connections().len(), 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), events.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn simultaneous_dials_converge_on_one_connection() {
    for _ in 0..5 {
        let a = serving(Node::builder()).await;
        let b = serving(Node::builder()).await;
        let (from_a, from_b) = tokio::join!(
            a.connect(b.local_addr(), b.id()),
            b.connect(a.local_addr(), a.id()),
        );
        let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
        assert_eq!(echo(&from_a, "a").await.unwrap(), "a");
        assert_eq!(echo(&from_b, "b").await.unwrap(), "b");

        // Both keep the connection dialed by the smaller id.
        let smaller = a.id().min(b.id());
        for (node, peer) in [(&a, &b), (&b, &a)] {
            let listed = node.connections();
            assert_eq!(listed.len(), 1);
            let expected = if node.id() == smaller {
                Direction::Dialed
            } else {
                Direction::Accepted
            };
            assert_eq!(listed[0].direction(), expected);
            assert_eq!(listed[0].remote_id(), peer.id());
            // A new connect gets the kept one.
            let again = node.connect(peer.local_addr(), peer.id()).await.unwrap();
            assert_eq!(again.quic().stable_id(), listed[0].quic().stable_id());
        }
        // The handles connect() returned keep working. Once they are gone, a duplicate one
        // closes and only the kept connection is left, open while its dialer holds a handle.
        assert_eq!(echo(&from_a, "a").await.unwrap(), "a");
        assert_eq!(echo(&from_b, "b").await.unwrap(), "b");
        let kept_a = a.connections().remove(0);
        let kept_b = b.connections().remove(0);
        let mut events = a.events();
        let duplicate = from_a.quic().stable_id() != kept_a.quic().stable_id()
            || from_b.quic().stable_id() != kept_b.quic().stable_id();
        drop((from_a, from_b));
        if duplicate {
            match next(&mut events).await {
                ConnectionEvent::Disconnected { reason, .. } => {
                    assert!(reason.to_string().contains("duplicate"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(echo(&kept_a, "a").await.unwrap(), "a");
        assert_eq!(echo(&kept_b, "b").await.unwrap(), "b");
        assert_eq!(a.connections().len(), 1);
        assert_eq!(b.connections().len(), 1);
    }
}

#[tokio::test]
async fn events_report_connections_with_their_direction() {
    let server = serving(Node::builder()).await;
    let client = node(Node::builder()).await;
    let (listed, mut server_events) = server.connections_and_events();
    assert!(listed.is_empty());
    let mut client_events = client.events();

    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    match next(&mut client_events).await {
        ConnectionEvent::Connected {
            id,
            direction,
            addr,
        } => {
            assert_eq!(id, server.id());
            assert_eq!(direction, Direction::Dialed);
            assert_eq!(addr, server.local_addr());
        }
        other => panic!("{other:?}"),
    }
    match next(&mut server_events).await {
        ConnectionEvent::Connected {
            id,
            direction,
            addr,
        } => {
            assert_eq!(id, client.id());
            assert_eq!(direction, Direction::Accepted);
            assert_eq!(addr, client.local_addr());
        }
        other => panic!("{other:?}"),
    }
    // Listed, and not reported again, to a late subscriber.
    let (listed, mut late) = server.connections_and_events();
    assert_eq!(listed.len(), 1);
    drop(listed);

    drop(conn);
    match next(&mut client_events).await {
        ConnectionEvent::Disconnected {
            id,
            direction,
            reason,
        } => {
            assert_eq!(id, server.id());
            assert_eq!(direction, Direction::Dialed);
            assert!(matches!(reason, Error::Closed), "{reason:?}");
        }
        other => panic!("{other:?}"),
    }
    for events in [&mut server_events, &mut late] {
        match next(events).await {
            ConnectionEvent::Disconnected {
                id,
                direction,
                reason,
            } => {
                assert_eq!(id, client.id());
                assert_eq!(direction, Direction::Accepted);
                assert!(matches!(reason, Error::ConnectionLost(_)), "{reason:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn state_belongs_to_its_connection() {
    let server = serving(Node::builder()).await;
    let ada = node(Node::builder()).await;
    let bob = node(Node::builder()).await;
    let conn = ada.connect(server.local_addr(), server.id()).await.unwrap();
    let other = bob.connect(server.local_addr(), server.id()).await.unwrap();

    assert_eq!(who(&conn).await.unwrap(), None);
    login(&conn, "ada").await.unwrap();
    // Another call on the same connection sees it; a call on another connection does not.
    assert_eq!(who(&conn).await.unwrap().as_deref(), Some("ada"));
    assert_eq!(who(&other).await.unwrap(), None);
    assert_eq!(visits(&conn).await.unwrap(), 1);
    assert_eq!(visits(&conn).await.unwrap(), 2);
    assert_eq!(visits(&other).await.unwrap(), 1);

    // The server sees it on its handle of the connection too.
    let accepted = server
        .connections()
        .into_iter()
        .find(|c| c.remote_id() == ada.id())
        .unwrap();
    assert_eq!(
        accepted.state::<User>().map(|u| u.0.clone()).as_deref(),
        Some("ada")
    );
    // And the dialing side's handle has a state of its own.
    assert!(conn.state::<User>().is_none());
}

#[tokio::test]
async fn a_node_may_dial_itself() {
    let node = serving(Node::builder()).await;
    let conn = node.connect(node.local_addr(), node.id()).await.unwrap();
    assert_eq!(echo(&conn, "me").await.unwrap(), "me");
    let again = node.connect(node.local_addr(), node.id()).await.unwrap();
    assert_eq!(echo(&again, "me").await.unwrap(), "me");
    assert_eq!(echo(&conn, "still").await.unwrap(), "still");
}
