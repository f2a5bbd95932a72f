//! The built-in services over real QUIC: reflection lists exactly what a node serves, health
//! reports serving, not serving and unknown, follows what the application sets, and turns to
//! not serving when the node shuts down.

mod common;

use std::time::Duration;

use common::{TestService, SERVICE};
use dep2p_runtime::{
    service, Error, Health, HealthClient, HealthServer, HealthStatus, Kind, Layered, MethodInfo,
    Node, Receiver, ReflectionClient, Sender, ServiceInfo,
};
use futures::StreamExt;

/// A service with one method of each kind.
#[service(name = "shop.v1")]
pub trait Shop {
    async fn buy(&self, item: String) -> u64;
    #[notify]
    async fn browse(&self, item: String);
    #[server_stream]
    async fn catalogue(&self, out: Sender<String>);
    #[client_stream]
    async fn basket(&self, items: Receiver<String>) -> u64;
    #[bidi]
    async fn haggle(&self, offers: Receiver<u64>, answers: Sender<u64>);
}

struct Stall;

impl Shop for Stall {
    async fn buy(&self, _item: String) -> u64 {
        1
    }
    async fn browse(&self, _item: String) {}
    async fn catalogue(&self, _out: Sender<String>) {}
    async fn basket(&self, _items: Receiver<String>) -> u64 {
        0
    }
    async fn haggle(&self, _offers: Receiver<u64>, _answers: Sender<u64>) {}
}

/// Bounds every wait, so that a broken behaviour fails the test rather than hanging it.
async fn bounded<F: std::future::IntoFuture>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future.into_future())
        .await
        .expect("no answer within 30 s")
}

/// The next status of a watch, `None` at its end.
async fn next(statuses: &mut Receiver<HealthStatus>) -> Option<HealthStatus> {
    bounded(statuses.next()).await.map(Result::unwrap)
}

async fn client_of(server: &Node) -> (Node, dep2p_runtime::Connection) {
    let client = Node::builder().bind("127.0.0.1:0").await.unwrap();
    let conn = bounded(client.connect(server.local_addr(), server.id()))
        .await
        .unwrap();
    (client, conn)
}

#[tokio::test]
async fn reflection_lists_every_service_with_its_methods_and_kinds() {
    let server = Node::builder()
        .serve(ShopServer::new(Stall))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (_client, conn) = client_of(&server).await;
    let reflection = ReflectionClient::new(conn);

    let expected = |extra: bool| {
        let mut list = Vec::new();
        if extra {
            // A service written by hand describes no methods; it is listed by name.
            list.push(ServiceInfo::new(SERVICE, vec![]));
        }
        list.extend([
            ServiceInfo::new(
                "dep2p.health.v1",
                vec![
                    MethodInfo::new("check", Kind::Unary),
                    MethodInfo::new("watch", Kind::ServerStream),
                ],
            ),
            ServiceInfo::new(
                "dep2p.reflection.v1",
                vec![MethodInfo::new("list", Kind::Unary)],
            ),
            ServiceInfo::new(
                "shop.v1",
                vec![
                    MethodInfo::new("buy", Kind::Unary),
                    MethodInfo::new("browse", Kind::Notify),
                    MethodInfo::new("catalogue", Kind::ServerStream),
                    MethodInfo::new("basket", Kind::ClientStream),
                    MethodInfo::new("haggle", Kind::Bidi),
                ],
            ),
        ]);
        list
    };
    assert_eq!(bounded(reflection.list()).await.unwrap(), expected(false));

    // A service served later is listed from then on.
    server
        .serve(TestService {
            probe: Default::default(),
        })
        .unwrap();
    assert_eq!(bounded(reflection.list()).await.unwrap(), expected(true));

    // Layers, of the node or of a service, leave the listing as it is.
    let layered = Node::builder()
        .layer(dep2p_runtime::tower_layer::Identity::new())
        .serve(Layered::new(
            ShopServer::new(Stall),
            dep2p_runtime::tower_layer::Identity::new(),
        ))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (_client, conn) = client_of(&layered).await;
    let listed = bounded(ReflectionClient::new(conn).list()).await.unwrap();
    assert_eq!(listed, expected(false));
}

/// A health service of the application's own, replacing the node's.
struct AlwaysDown;

impl Health for AlwaysDown {
    async fn check(&self, _service: String) -> HealthStatus {
        HealthStatus::NotServing
    }
    async fn watch(&self, _service: String, _out: Sender<HealthStatus>) {}
}

#[tokio::test]
async fn built_in_services_can_be_turned_off_or_replaced() {
    let server = Node::builder()
        .reflection(false)
        .health_service(false)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (_client, conn) = client_of(&server).await;
    let listed = bounded(ReflectionClient::new(conn.clone()).list()).await;
    assert!(
        matches!(listed, Err(Error::UnknownService(ref name)) if name == "dep2p.reflection.v1"),
        "{listed:?}"
    );
    let checked = bounded(HealthClient::new(conn).check(String::new())).await;
    assert!(
        matches!(checked, Err(Error::UnknownService(ref name)) if name == "dep2p.health.v1"),
        "{checked:?}"
    );

    // The health statuses are still kept for the application.
    assert_eq!(server.health().status(""), HealthStatus::Serving);

    // Only health: reflection off.
    let server = Node::builder()
        .reflection(false)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (_client, conn) = client_of(&server).await;
    assert!(matches!(
        bounded(ReflectionClient::new(conn.clone()).list()).await,
        Err(Error::UnknownService(_))
    ));
    let health = HealthClient::new(conn);
    assert_eq!(
        bounded(health.check(String::new())).await.unwrap(),
        HealthStatus::Serving
    );

    // A running node keeps its built-in service rather than serve a second one of its name.
    assert!(matches!(
        server.serve(HealthServer::new(AlwaysDown)),
        Err(Error::Config(_))
    ));
    assert_eq!(
        bounded(health.check(String::new())).await.unwrap(),
        HealthStatus::Serving
    );

    // An application's service of the same name given to the builder takes its place.
    let server = Node::builder()
        .serve(HealthServer::new(AlwaysDown))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (_client, conn) = client_of(&server).await;
    assert_eq!(
        bounded(HealthClient::new(conn).check(String::new()))
            .await
            .unwrap(),
        HealthStatus::NotServing
    );
}

#[tokio::test]
async fn health_reports_serving_not_serving_and_unknown() {
    let server = Node::builder()
        .serve(ShopServer::new(Stall))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (_client, conn) = client_of(&server).await;
    let health = HealthClient::new(conn);
    let check = |name: &str| bounded(health.check(name.to_string()));

    assert_eq!(check("").await.unwrap(), HealthStatus::Serving);
    assert_eq!(check("shop.v1").await.unwrap(), HealthStatus::Serving);
    assert_eq!(
        check("dep2p.health.v1").await.unwrap(),
        HealthStatus::Serving
    );
    assert_eq!(check("bakery.v1").await.unwrap(), HealthStatus::Unknown);

    let reporter = server.health();
    reporter.set("shop.v1", HealthStatus::NotServing);
    assert_eq!(check("shop.v1").await.unwrap(), HealthStatus::NotServing);
    // The node's status and its services' are independent.
    assert_eq!(check("").await.unwrap(), HealthStatus::Serving);
    reporter.set("", HealthStatus::NotServing);
    assert_eq!(check("").await.unwrap(), HealthStatus::NotServing);

    // A status set for a service the node does not serve (yet) is reported.
    reporter.set("bakery.v1", HealthStatus::Serving);
    assert_eq!(check("bakery.v1").await.unwrap(), HealthStatus::Serving);

    // No service can have a name longer than 256 bytes: it is unknown, whatever is set, and
    // a watch of it ends at once.
    let long = "s".repeat(257);
    reporter.set(&long, HealthStatus::Serving);
    assert_eq!(check(&long).await.unwrap(), HealthStatus::Unknown);
    let (mut statuses, done) = bounded(health.watch(long.clone())).await.unwrap();
    assert_eq!(next(&mut statuses).await, Some(HealthStatus::Unknown));
    assert_eq!(next(&mut statuses).await, None);
    bounded(done).await.unwrap();
    let longest = "s".repeat(256);
    reporter.set(&longest, HealthStatus::Serving);
    assert_eq!(check(&longest).await.unwrap(), HealthStatus::Serving);

    reporter.clear("shop.v1");
    reporter.clear("");
    reporter.clear("bakery.v1");
    assert_eq!(check("shop.v1").await.unwrap(), HealthStatus::Serving);
    assert_eq!(check("").await.unwrap(), HealthStatus::Serving);
    assert_eq!(check("bakery.v1").await.unwrap(), HealthStatus::Unknown);
}

#[tokio::test]
async fn watch_follows_changes_and_ends_when_the_node_shuts_down() {
    let server = Node::builder()
        .serve(ShopServer::new(Stall))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (_client, conn) = client_of(&server).await;
    let health = HealthClient::new(conn.clone());
    let reporter = server.health();

    let (mut statuses, done) = bounded(health.watch("shop.v1".into())).await.unwrap();
    assert_eq!(next(&mut statuses).await, Some(HealthStatus::Serving));
    reporter.set("shop.v1", HealthStatus::NotServing);
    assert_eq!(next(&mut statuses).await, Some(HealthStatus::NotServing));
    // Setting the same status again is no change.
    reporter.set("shop.v1", HealthStatus::NotServing);
    reporter.set("shop.v1", HealthStatus::Serving);
    assert_eq!(next(&mut statuses).await, Some(HealthStatus::Serving));

    // A watch of a name the node does not serve sees the service appear.
    let (mut later, _later_done) = bounded(health.watch(SERVICE.into())).await.unwrap();
    assert_eq!(next(&mut later).await, Some(HealthStatus::Unknown));
    server
        .serve(TestService {
            probe: Default::default(),
        })
        .unwrap();
    assert_eq!(next(&mut later).await, Some(HealthStatus::Serving));

    // Shutting down: the watch reports not serving and ends, without holding up the
    // shutdown's grace period (an hour here).
    let stopping = server.clone();
    tokio::spawn(async move { stopping.shutdown(Duration::from_secs(3600)).await });
    assert_eq!(next(&mut statuses).await, Some(HealthStatus::NotServing));
    assert_eq!(next(&mut statuses).await, None);
    bounded(done).await.unwrap();
    assert_eq!(reporter.status("shop.v1"), HealthStatus::NotServing);
    assert_eq!(reporter.status(""), HealthStatus::NotServing);
    assert_eq!(reporter.status("bakery.v1"), HealthStatus::Unknown);
    // New calls, health checks included, are refused while the node shuts down.
    assert!(matches!(
        bounded(health.check(String::new())).await,
        Err(Error::ShuttingDown | Error::Closed | Error::ConnectionLost(_))
    ));
    bounded(server.closed()).await;
}

#[tokio::test]
async fn a_node_that_closes_reports_not_serving_to_its_watchers() {
    let server = Node::builder().bind("127.0.0.1:0").await.unwrap();
    let (_client, conn) = client_of(&server).await;
    let health = HealthClient::new(conn);
    let (mut statuses, _done) = bounded(health.watch(String::new())).await.unwrap();
    assert_eq!(next(&mut statuses).await, Some(HealthStatus::Serving));
    let reporter = server.health();
    server.close();
    assert_eq!(reporter.status(""), HealthStatus::NotServing);
    // The stream ends, one way or another, rather than hanging.
    let _ = bounded(statuses.next()).await;
}

#[tokio::test]
async fn messages_are_encoded_as_the_protocol_document_says() {
    // docs/PROTOCOL.md, section 14: the list of a node serving only the built-in services.
    let server = Node::builder().bind("127.0.0.1:0").await.unwrap();
    let (_client, conn) = client_of(&server).await;
    let list = bounded(ReflectionClient::new(conn).list()).await.unwrap();
    let mut expected = vec![0x02, 0x0f];
    expected.extend(b"dep2p.health.v1");
    expected.extend([0x02, 0x05]);
    expected.extend(b"check");
    expected.extend([0x00, 0x05]);
    expected.extend(b"watch");
    expected.extend([0x02, 0x13]);
    expected.extend(b"dep2p.reflection.v1");
    expected.extend([0x01, 0x04]);
    expected.extend(b"list");
    expected.push(0x00);
    assert_eq!(postcard::to_stdvec(&list).unwrap(), expected);

    let statuses = [
        HealthStatus::Unknown,
        HealthStatus::Serving,
        HealthStatus::NotServing,
    ];
    assert_eq!(postcard::to_stdvec(&statuses).unwrap(), [0, 1, 2]);
}

#[tokio::test]
async fn a_quiet_watch_outlives_the_callers_idle_bound() {
    // The server repeats the status every half of its idle-stream timeout: every second.
    let server = Node::builder()
        .idle_stream_timeout(Duration::from_secs(2))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Node::builder()
        .idle_stream_timeout(Duration::from_secs(2))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let conn = bounded(client.connect(server.local_addr(), server.id()))
        .await
        .unwrap();
    let (mut statuses, _done) = bounded(HealthClient::new(conn).watch(String::new()))
        .await
        .unwrap();
    // Five seconds of no change: past the caller's idle bound twice over, the watch lives.
    for _ in 0..6 {
        assert_eq!(next(&mut statuses).await, Some(HealthStatus::Serving));
    }
    server.health().set("", HealthStatus::NotServing);
    assert_eq!(next(&mut statuses).await, Some(HealthStatus::NotServing));
}
