//! Layers on both sides: a server-side layer's refusal reaches the caller, the outcomes it
//! observes, client layers that add metadata and observe outcomes, and the order layers
//! compose in.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dep2p_runtime::tower_layer::Layer;
use dep2p_runtime::tower_service::Service as TowerService;
use dep2p_runtime::{
    service, CallContext, CallInfo, ClientLayer, Connection, Error, IncomingCall, Layered, Node,
    NodeBuilder, Outcome, Receiver, RequestMetadata, Sender, Target,
};
use futures::StreamExt;
use tokio::sync::mpsc;

#[service]
pub trait Guarded {
    async fn echo(&self, text: String) -> String;
    async fn fallible(&self, fail: bool) -> Result<u32, String>;
    async fn sleep(&self, ms: u64) -> u64;
    async fn boom(&self) -> u8;
    async fn token(&self) -> Option<String>;
    #[notify]
    async fn note(&self, text: String);
    #[server_stream]
    async fn count(&self, n: u32, out: Sender<u32>) -> u32;
    #[client_stream]
    async fn sum(&self, items: Receiver<u32>) -> u32;
    #[bidi]
    async fn double(&self, items: Receiver<u32>, out: Sender<u32>);
}

#[service]
pub trait Open {
    async fn hi(&self) -> String;
}

/// Counts the handlers that ran.
#[derive(Clone, Default)]
struct Impl {
    ran: Arc<AtomicUsize>,
}

impl Guarded for Impl {
    async fn echo(&self, text: String) -> String {
        self.ran.fetch_add(1, Ordering::SeqCst);
        text
    }
    async fn fallible(&self, fail: bool) -> Result<u32, String> {
        self.ran.fetch_add(1, Ordering::SeqCst);
        if fail {
            Err("no".into())
        } else {
            Ok(1)
        }
    }
    async fn sleep(&self, ms: u64) -> u64 {
        self.ran.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn boom(&self) -> u8 {
        self.ran.fetch_add(1, Ordering::SeqCst);
        panic!("boom")
    }
    async fn token(&self) -> Option<String> {
        self.ran.fetch_add(1, Ordering::SeqCst);
        let ctx = CallContext::current().unwrap();
        ctx.metadata("token").map(str::to_string)
    }
    async fn note(&self, _text: String) {
        self.ran.fetch_add(1, Ordering::SeqCst);
    }
    async fn count(&self, n: u32, mut out: Sender<u32>) -> u32 {
        self.ran.fetch_add(1, Ordering::SeqCst);
        for i in 0..n {
            let _ = out.send(i).await;
        }
        n
    }
    async fn sum(&self, mut items: Receiver<u32>) -> u32 {
        self.ran.fetch_add(1, Ordering::SeqCst);
        let mut total = 0;
        while let Some(Ok(i)) = items.next().await {
            total += i;
        }
        total
    }
    async fn double(&self, mut items: Receiver<u32>, mut out: Sender<u32>) {
        self.ran.fetch_add(1, Ordering::SeqCst);
        while let Some(Ok(i)) = items.next().await {
            let _ = out.send(i * 2).await;
        }
    }
}

struct Hello;

impl Open for Hello {
    async fn hi(&self) -> String {
        "hi".into()
    }
}

/// What the test layers write: "{tag} before {method}" and "{tag} after {method} {outcome}".
type Log = Arc<Mutex<Vec<String>>>;

/// A server-side layer: logs each call, reports its outcome, and refuses calls without the
/// right token if asked to.
#[derive(Clone)]
struct Record {
    tag: &'static str,
    log: Log,
    outcomes: Option<mpsc::UnboundedSender<(String, Outcome)>>,
    require_token: bool,
}

impl Record {
    fn new(tag: &'static str, log: &Log) -> Self {
        Record {
            tag,
            log: Arc::clone(log),
            outcomes: None,
            require_token: false,
        }
    }
}

impl<S> Layer<S> for Record {
    type Service = RecordService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordService {
            layer: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
struct RecordService<S> {
    layer: Record,
    inner: S,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Outcome, Infallible>> + Send>>;

impl<S> TowerService<IncomingCall> for RecordService<S>
where
    S: TowerService<IncomingCall, Response = Outcome, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: IncomingCall) -> Self::Future {
        let Record {
            tag,
            log,
            outcomes,
            require_token,
        } = self.layer.clone();
        let method = call.context().method().to_string();
        log.lock().unwrap().push(format!("{tag} before {method}"));
        let fut: BoxFuture = if require_token && call.context().metadata("token") != Some("secret")
        {
            let refused = call.refuse(Error::PermissionDenied("no token".into()));
            Box::pin(async move { Ok(refused.await) })
        } else {
            let fut = self.inner.call(call);
            Box::pin(fut)
        };
        Box::pin(async move {
            let Ok(outcome) = fut.await;
            log.lock()
                .unwrap()
                .push(format!("{tag} after {method} {}", outcome.name()));
            if let Some(tx) = outcomes {
                let _ = tx.send((method, outcome.clone()));
            }
            Ok(outcome)
        })
    }
}

/// A client layer: logs, adds a token if it has one, fails calls to `refused_method`, and
/// reports outcomes.
struct ClientRecord {
    tag: &'static str,
    log: Log,
    token: Option<&'static str>,
    refused_method: Option<&'static str>,
    outcomes: Option<mpsc::UnboundedSender<(String, Outcome)>>,
}

impl ClientRecord {
    fn new(tag: &'static str, log: &Log) -> Self {
        ClientRecord {
            tag,
            log: Arc::clone(log),
            token: None,
            refused_method: None,
            outcomes: None,
        }
    }
}

impl ClientLayer for ClientRecord {
    fn before(&self, call: &CallInfo, metadata: &mut RequestMetadata<'_>) -> Result<(), Error> {
        let tag = self.tag;
        let method = call.method();
        self.log
            .lock()
            .unwrap()
            .push(format!("{tag} before {method}"));
        if self.refused_method == Some(method) {
            return Err(Error::PermissionDenied("not from here".into()));
        }
        if let Some(token) = self.token {
            metadata.push("token", token);
        }
        Ok(())
    }

    fn after(&self, call: &CallInfo, outcome: &Outcome, _elapsed: Duration) {
        let (tag, method) = (self.tag, call.method());
        self.log
            .lock()
            .unwrap()
            .push(format!("{tag} after {method} {}", outcome.name()));
        if let Some(tx) = &self.outcomes {
            let _ = tx.send((method.to_string(), outcome.clone()));
        }
    }
}

async fn bind(builder: NodeBuilder) -> Node {
    builder.bind("127.0.0.1:0").await.expect("bind")
}

async fn connect(client: &Node, server: &Node) -> Connection {
    client
        .connect(server.local_addr(), server.id())
        .await
        .expect("connect")
}

/// Version 1 has no PermissionDenied code: a version 1 caller is told HandlerFailed, with
/// the refusal's message.
#[tokio::test]
async fn a_version_1_caller_gets_a_refusal_as_handler_failed() {
    let log = Log::default();
    let layer = Record {
        require_token: true,
        ..Record::new("auth", &log)
    };
    let server = bind(
        Node::builder()
            .layer(layer)
            .serve(GuardedServer::new(Impl::default())),
    )
    .await;
    let client = bind(Node::builder().protocol_version(1)).await;
    let conn = connect(&client, &server).await;
    assert_eq!(conn.protocol_version(), 1);
    let err = GuardedClient::new(conn).echo("x".into()).await.unwrap_err();
    assert!(
        matches!(err, Error::HandlerFailed(ref m) if m.contains("no token")),
        "{err:?}"
    );
}

#[tokio::test]
async fn refusal_reaches_the_caller_for_every_kind() {
    let log = Log::default();
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    let layer = Record {
        outcomes: Some(tx),
        require_token: true,
        ..Record::new("auth", &log)
    };
    let service = Impl::default();
    let server = bind(
        Node::builder()
            .layer(layer)
            .serve(GuardedServer::new(service.clone())),
    )
    .await;
    let client = bind(Node::builder()).await;
    let conn = connect(&client, &server).await;
    let guarded = GuardedClient::new(conn.clone());
    let denied = |err: Error| {
        assert!(
            matches!(err, Error::PermissionDenied(ref m) if m == "no token"),
            "{err:?}"
        )
    };

    denied(guarded.echo("x".into()).await.unwrap_err());
    // A notification's sender learns nothing back; the layer's refusal still keeps the
    // handler from running.
    guarded.note("x".into()).await.unwrap();
    // The streaming kinds open, then end with the refusal.
    let (mut rx, resp) = guarded.count(3).await.unwrap();
    denied(rx.next().await.unwrap().unwrap_err());
    denied(resp.await.unwrap_err());
    let (_tx, resp) = guarded.sum().await.unwrap();
    denied(resp.await.unwrap_err());
    let (_tx, mut rx, resp) = guarded.double().await.unwrap();
    denied(rx.next().await.unwrap().unwrap_err());
    denied(resp.await.unwrap_err());

    let mut refused = Vec::new();
    for _ in 0..5 {
        let (method, outcome) = outcomes.recv().await.unwrap();
        assert!(
            matches!(outcome, Outcome::Failed(Error::PermissionDenied(_))),
            "{method}: {outcome:?}"
        );
        refused.push(method);
    }
    refused.sort();
    assert_eq!(refused, ["count", "double", "echo", "note", "sum"]);
    assert_eq!(service.ran.load(Ordering::SeqCst), 0);

    // With the token every kind is served.
    let with_token = GuardedClient::new(Target::from(conn).with_layer(ClientRecord {
        token: Some("secret"),
        ..ClientRecord::new("token", &log)
    }));
    assert_eq!(with_token.echo("x".into()).await.unwrap(), "x");
    with_token.note("x".into()).await.unwrap();
    let (rx, resp) = with_token.count(3).await.unwrap();
    assert_eq!(rx.map(Result::unwrap).collect::<Vec<_>>().await, [0, 1, 2]);
    assert_eq!(resp.await.unwrap(), 3);
    let (mut tx, resp) = with_token.sum().await.unwrap();
    tx.send(4).await.unwrap();
    tx.finish().unwrap();
    assert_eq!(resp.await.unwrap(), 4);
    let (mut tx, mut rx, resp) = with_token.double().await.unwrap();
    tx.send(5).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), 10);
    tx.finish().unwrap();
    resp.await.unwrap();
    for _ in 0..5 {
        let (method, outcome) = outcomes.recv().await.unwrap();
        assert!(matches!(outcome, Outcome::Ok), "{method}: {outcome:?}");
    }
    assert_eq!(service.ran.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn the_server_layer_sees_every_outcome() {
    let log = Log::default();
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    let layer = Record {
        outcomes: Some(tx),
        ..Record::new("seen", &log)
    };
    let service = Impl::default();
    // The node's cap on deadlines stops the handler before the caller gives up.
    let server = bind(
        Node::builder()
            .max_call_deadline(Duration::from_millis(300))
            .serve(Layered::new(GuardedServer::new(service.clone()), layer)),
    )
    .await;
    let client = bind(Node::builder()).await;
    let guarded = GuardedClient::new(connect(&client, &server).await);
    let mut next = async || outcomes.recv().await.unwrap();

    // Success.
    guarded.echo("x".into()).await.unwrap();
    let (method, outcome) = next().await;
    assert_eq!(method, "echo");
    assert!(matches!(outcome, Outcome::Ok), "{outcome:?}");

    // The application's own error, and its success.
    assert_eq!(guarded.fallible(true).await.unwrap(), Err("no".to_string()));
    assert!(matches!(next().await.1, Outcome::ApplicationError));
    assert_eq!(guarded.fallible(false).await.unwrap(), Ok(1));
    assert!(matches!(next().await.1, Outcome::Ok));

    // The deadline passes in the handler.
    let err = guarded.sleep(10_000).await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    let (method, outcome) = next().await;
    assert_eq!(method, "sleep");
    assert!(
        matches!(outcome, Outcome::Failed(Error::Timeout)),
        "{outcome:?}"
    );

    // The caller goes away.
    let ran = service.ran.load(Ordering::SeqCst);
    let call = tokio::spawn(guarded.sleep(10_000).into_future());
    while service.ran.load(Ordering::SeqCst) == ran {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    call.abort();
    let (method, outcome) = next().await;
    assert_eq!(method, "sleep");
    assert!(
        matches!(outcome, Outcome::Failed(Error::Cancelled)),
        "{outcome:?}"
    );

    // The handler panics.
    let err = guarded.boom().await.unwrap_err();
    assert!(matches!(err, Error::HandlerFailed(_)), "{err:?}");
    let (method, outcome) = next().await;
    assert_eq!(method, "boom");
    assert!(
        matches!(outcome, Outcome::Failed(Error::HandlerFailed(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_client_layer_adds_metadata_observes_outcomes_and_can_fail_calls() {
    let log = Log::default();
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    let server = bind(Node::builder().serve(GuardedServer::new(Impl::default()))).await;
    let client = bind(Node::builder().client_layer(ClientRecord {
        token: Some("secret"),
        outcomes: Some(tx),
        ..ClientRecord::new("node", &log)
    }))
    .await;
    let conn = connect(&client, &server).await;
    let guarded = GuardedClient::new(Target::from(conn).with_layer(ClientRecord {
        refused_method: Some("boom"),
        ..ClientRecord::new("target", &log)
    }));

    assert_eq!(guarded.token().await.unwrap().as_deref(), Some("secret"));
    let (method, outcome) = outcomes.recv().await.unwrap();
    assert_eq!(method, "token");
    assert!(matches!(outcome, Outcome::Ok));

    let err = guarded
        .sleep(10_000)
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout));
    assert!(matches!(
        outcomes.recv().await.unwrap().1,
        Outcome::Failed(Error::Timeout)
    ));

    // Failed before it is sent: the caller gets the layer's error, and the layers whose
    // `before` ran see it.
    let err = guarded.boom().await.unwrap_err();
    assert!(
        matches!(err, Error::PermissionDenied(ref m) if m == "not from here"),
        "{err:?}"
    );
    assert!(matches!(
        outcomes.recv().await.unwrap().1,
        Outcome::Failed(Error::PermissionDenied(_))
    ));

    // A streaming call ends with its response, not when it opens.
    let (rx, response) = guarded.count(3).await.unwrap();
    assert!(outcomes.try_recv().is_err());
    assert_eq!(rx.map(Result::unwrap).collect::<Vec<_>>().await, [0, 1, 2]);
    assert_eq!(response.await.unwrap(), 3);
    let (method, outcome) = outcomes.recv().await.unwrap();
    assert_eq!(method, "count");
    assert!(matches!(outcome, Outcome::Ok), "{outcome:?}");
    // Dropping its response cancels it.
    let (items, response) = guarded.sum().await.unwrap();
    drop(response);
    drop(items);
    let (method, outcome) = outcomes.recv().await.unwrap();
    assert_eq!(method, "sum");
    assert!(
        matches!(outcome, Outcome::Failed(Error::Cancelled)),
        "{outcome:?}"
    );

    // A call dropped before it ends.
    let call = guarded.sleep(10_000).into_future();
    let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
    assert!(matches!(
        outcomes.recv().await.unwrap().1,
        Outcome::Failed(Error::Cancelled)
    ));
}

#[tokio::test]
async fn layers_compose_in_the_documented_order() {
    let log = Log::default();
    let server = bind(
        Node::builder()
            .layer(Record::new("node1", &log))
            .layer(Record::new("node2", &log))
            .serve(Layered::new(
                GuardedServer::new(Impl::default()),
                Record::new("service", &log),
            )),
    )
    .await;
    let client = bind(
        Node::builder()
            .client_layer(ClientRecord::new("client1", &log))
            .client_layer(ClientRecord::new("client2", &log)),
    )
    .await;
    let conn = connect(&client, &server).await;
    let target = Target::from(conn).with_layer(ClientRecord::new("target", &log));
    GuardedClient::new(target).echo("x".into()).await.unwrap();
    // The server's last `after` may come just after the answer arrives.
    for _ in 0..100 {
        if log.lock().unwrap().len() == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = log.lock().unwrap().clone();
    let expected = [
        "client1 before echo",
        "client2 before echo",
        "target before echo",
        "node1 before echo",
        "node2 before echo",
        "service before echo",
        "service after echo ok",
        "node2 after echo ok",
        "node1 after echo ok",
    ];
    let server_side: Vec<_> = log
        .iter()
        .filter(|l| !l.starts_with("client") && !l.starts_with("target"))
        .collect();
    assert_eq!(server_side, expected[3..]);
    let client_side: Vec<_> = log
        .iter()
        .filter(|l| l.starts_with("client") || l.starts_with("target"))
        .collect();
    assert_eq!(
        client_side,
        [
            "client1 before echo",
            "client2 before echo",
            "target before echo",
            "target after echo ok",
            "client2 after echo ok",
            "client1 after echo ok",
        ]
    );
}

#[tokio::test]
async fn service_layers_apply_to_their_service_and_node_layers_to_all() {
    let log = Log::default();
    let refusing = Record {
        require_token: true,
        ..Record::new("auth", &log)
    };
    let server = bind(
        Node::builder()
            .layer(Record::new("node", &log))
            .serve(Layered::new(GuardedServer::new(Impl::default()), refusing)),
    )
    .await;
    // Served after binding: still through the node's layers.
    server.serve(OpenServer::new(Hello)).unwrap();
    let client = bind(Node::builder()).await;
    let conn = connect(&client, &server).await;
    assert_eq!(OpenClient::new(conn.clone()).hi().await.unwrap(), "hi");
    let err = GuardedClient::new(conn).echo("x".into()).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    for _ in 0..100 {
        if log.lock().unwrap().len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "node before hi",
            "node after hi ok",
            "node before echo",
            "auth before echo",
            "auth after echo permission_denied",
            "node after echo permission_denied",
        ]
    );
}

#[tokio::test]
async fn tower_layers_compose_with_service_builder() {
    let log = Log::default();
    // tower's own concurrency limit between two of ours, as one stack.
    let stack = tower::ServiceBuilder::new()
        .layer(Record::new("outer", &log))
        .concurrency_limit(4)
        .layer(Record::new("inner", &log));
    let server =
        bind(Node::builder().serve(Layered::new(GuardedServer::new(Impl::default()), stack))).await;
    let client = bind(Node::builder()).await;
    let guarded = GuardedClient::new(connect(&client, &server).await);
    assert_eq!(guarded.echo("x".into()).await.unwrap(), "x");
    for _ in 0..100 {
        if log.lock().unwrap().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer before echo",
            "inner before echo",
            "inner after echo ok",
            "outer after echo ok",
        ]
    );
}

/// A layer that is not ready at once (tower's concurrency limit, full) holds the call until
/// it is, then serves it.
#[tokio::test]
async fn a_layer_that_is_not_ready_holds_the_call_until_it_is() {
    let limit = tower::limit::ConcurrencyLimitLayer::new(1);
    let server = bind(
        Node::builder()
            .layer(limit)
            .serve(GuardedServer::new(Impl::default())),
    )
    .await;
    let client = bind(Node::builder()).await;
    let guarded = GuardedClient::new(connect(&client, &server).await);
    // The one place is taken for 300 ms.
    let slow = tokio::spawn({
        let guarded = guarded.clone();
        async move { guarded.sleep(300).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert_eq!(guarded.echo("x".into()).await.unwrap(), "x");
    let waited = started.elapsed();
    assert_eq!(slow.await.unwrap().unwrap(), 300);
    // It waited for the place, and got it once the slow call ended.
    assert!(
        waited >= Duration::from_millis(100),
        "served after {waited:?}"
    );
}
