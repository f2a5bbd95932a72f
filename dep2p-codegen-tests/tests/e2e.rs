//! Generated clients against generated servers, over real QUIC on 127.0.0.1.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use dep2p_runtime::{service, Connection, Error, Node, Receiver, Sender, Service};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Long enough for any call on loopback; a test that hits it has hung.
const PATIENCE: Duration = Duration::from_secs(10);

/// Binds a node serving `service` and a client node connected to it. The nodes are returned
/// so that they live as long as the test.
async fn connect(service: impl Service) -> (Node, Node, Connection) {
    let server = Node::builder()
        .serve(service)
        .bind("127.0.0.1:0")
        .await
        .expect("bind server");
    let client = Node::builder()
        .bind("127.0.0.1:0")
        .await
        .expect("bind client");
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .expect("connect");
    (server, client, conn)
}

async fn patiently<F: std::future::IntoFuture>(call: F) -> F::Output {
    tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the call hung")
}

// ---------------------------------------------------------------------------------------------
// All five kinds.

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Message {
    pub from: String,
    pub text: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LoginError {
    UnknownUser(String),
    Locked { retry_in_secs: u64 },
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::UnknownUser(user) => write!(f, "unknown user {user}"),
            LoginError::Locked { retry_in_secs } => write!(f, "locked for {retry_in_secs}s"),
        }
    }
}

impl std::error::Error for LoginError {}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ChatError(pub String);

/// A chat room.
#[service(name = "chat.v1")]
pub trait Chat {
    /// Request-response.
    async fn login(&self, user: String) -> Result<u64, LoginError>;

    /// One-way.
    #[notify]
    async fn typing(&self, user: String);

    /// The room's history, one message at a time.
    #[server_stream]
    async fn history(&self, room: String, out: Sender<Message>) -> Result<u32, ChatError>;

    /// A file, chunk by chunk; answers its size.
    #[client_stream]
    async fn upload(&self, name: String, chunks: Receiver<Vec<u8>>) -> Result<u64, ChatError>;

    /// Echoes each message back, shouted; the stream ends come before the room here.
    #[bidi]
    async fn talk(
        &self,
        incoming: Receiver<Message>,
        out: Sender<Message>,
        room: String,
    ) -> Result<u32, ChatError>;
}

struct Room {
    typing: mpsc::UnboundedSender<String>,
}

impl Chat for Room {
    async fn login(&self, user: String) -> Result<u64, LoginError> {
        match user.as_str() {
            "ada" => Ok(1),
            "bob" => Err(LoginError::Locked { retry_in_secs: 30 }),
            _ => Err(LoginError::UnknownUser(user)),
        }
    }

    async fn typing(&self, user: String) {
        let _ = self.typing.send(user);
    }

    async fn history(&self, room: String, mut out: Sender<Message>) -> Result<u32, ChatError> {
        if room != "lobby" {
            return Err(ChatError(format!("no room {room}")));
        }
        for i in 0..3 {
            let message = Message {
                from: "server".into(),
                text: format!("message {i}"),
            };
            out.send(message)
                .await
                .map_err(|e| ChatError(e.to_string()))?;
        }
        Ok(3)
    }

    async fn upload(&self, name: String, mut chunks: Receiver<Vec<u8>>) -> Result<u64, ChatError> {
        let mut size = 0;
        while let Some(chunk) = chunks.next().await {
            size += chunk.map_err(|e| ChatError(e.to_string()))?.len() as u64;
        }
        if name.is_empty() {
            return Err(ChatError("a file needs a name".into()));
        }
        Ok(size)
    }

    async fn talk(
        &self,
        mut incoming: Receiver<Message>,
        mut out: Sender<Message>,
        room: String,
    ) -> Result<u32, ChatError> {
        let mut echoed = 0;
        while let Some(message) = incoming.next().await {
            let message = message.map_err(|e| ChatError(e.to_string()))?;
            let shouted = Message {
                from: room.clone(),
                text: message.text.to_uppercase(),
            };
            out.send(shouted)
                .await
                .map_err(|e| ChatError(e.to_string()))?;
            echoed += 1;
        }
        Ok(echoed)
    }
}

async fn chat() -> (Node, Node, ChatClient, mpsc::UnboundedReceiver<String>) {
    let (typing, typed) = mpsc::unbounded_channel();
    let (server, client, conn) = connect(ChatServer::new(Room { typing })).await;
    (server, client, ChatClient::new(conn), typed)
}

#[tokio::test]
async fn unary_carries_values_and_application_errors_intact() {
    let (_server, _client, chat, _) = chat().await;

    assert_eq!(patiently(chat.login("ada".into())).await.unwrap(), Ok(1));
    assert_eq!(
        patiently(chat.login("bob".into())).await.unwrap(),
        Err(LoginError::Locked { retry_in_secs: 30 })
    );
    assert_eq!(
        patiently(chat.login("eve".into())).await.unwrap(),
        Err(LoginError::UnknownUser("eve".into()))
    );
}

#[tokio::test]
async fn unary_calls_can_be_configured_before_awaiting() {
    let (_server, _client, chat, _) = chat().await;

    let call = chat
        .login("ada".into())
        .timeout(Duration::from_secs(5))
        .metadata("trace", "1");
    assert_eq!(patiently(call).await.unwrap(), Ok(1));
}

/// What a user writes: framework errors and application errors both go through `?`.
async fn login_both(chat: &ChatClient) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let first = chat.login("ada".into()).await??;
    let second = chat.login("bob".into()).await??;
    Ok((first, second))
}

#[tokio::test]
async fn results_can_be_propagated_with_question_marks() {
    let (_server, _client, chat, _) = chat().await;

    let error = patiently(login_both(&chat)).await.unwrap_err();
    let error = error
        .downcast::<LoginError>()
        .expect("the application's own error");
    assert_eq!(*error, LoginError::Locked { retry_in_secs: 30 });
}

#[tokio::test]
async fn notify_reaches_the_handler() {
    let (_server, _client, chat, mut typed) = chat().await;

    patiently(chat.typing("ada".into())).await.unwrap();
    assert_eq!(patiently(typed.recv()).await.as_deref(), Some("ada"));
}

#[tokio::test]
async fn server_stream_yields_items_then_the_result() {
    let (_server, _client, chat, _) = chat().await;

    let (items, response) = patiently(chat.history("lobby".into())).await.unwrap();
    let items: Vec<Message> = patiently(items.map(Result::unwrap).collect()).await;
    let texts: Vec<&str> = items.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["message 0", "message 1", "message 2"]);
    assert_eq!(patiently(response).await.unwrap(), Ok(3));

    let (mut items, response) = patiently(chat.history("attic".into())).await.unwrap();
    assert!(patiently(items.next()).await.is_none());
    assert_eq!(
        patiently(response).await.unwrap(),
        Err(ChatError("no room attic".into()))
    );
}

#[tokio::test]
async fn client_stream_sends_items_then_gets_the_result() {
    let (_server, _client, chat, _) = chat().await;

    let (mut chunks, response) = patiently(chat.upload("notes.txt".into())).await.unwrap();
    for chunk in [vec![1, 2, 3], vec![4, 5], vec![]] {
        patiently(chunks.send(chunk)).await.unwrap();
    }
    chunks.finish().unwrap();
    assert_eq!(patiently(response).await.unwrap(), Ok(5));

    let (chunks, response) = patiently(chat.upload(String::new())).await.unwrap();
    chunks.finish().unwrap();
    assert_eq!(
        patiently(response).await.unwrap(),
        Err(ChatError("a file needs a name".into()))
    );
}

#[tokio::test]
async fn bidi_streams_both_ways() {
    let (_server, _client, chat, _) = chat().await;

    let (mut to_server, mut from_server, response) =
        patiently(chat.talk("lobby".into())).await.unwrap();
    for text in ["hello", "anyone?"] {
        let message = Message {
            from: "ada".into(),
            text: text.into(),
        };
        patiently(to_server.send(message)).await.unwrap();
        let echo = patiently(from_server.next()).await.unwrap().unwrap();
        assert_eq!(echo.from, "lobby");
        assert_eq!(echo.text, text.to_uppercase());
    }
    to_server.finish().unwrap();
    assert!(patiently(from_server.next()).await.is_none());
    assert_eq!(patiently(response).await.unwrap(), Ok(2));
}

// ---------------------------------------------------------------------------------------------
// Evolving a service: methods are identified by name.

/// The first version of a key-value service.
#[service(name = "kv")]
pub trait KvV1 {
    async fn get(&self, key: String) -> Option<String>;
    async fn put(&self, key: String, value: String);
}

/// The second version: a method added in front, the others reordered, one more at the end.
#[service(name = "kv")]
pub trait KvV2 {
    async fn delete(&self, key: String) -> bool;
    async fn put(&self, key: String, value: String);
    #[server_stream]
    async fn keys(&self, out: Sender<String>);
    async fn get(&self, key: String) -> Option<String>;
}

/// A later version that the server does not know yet.
#[service(name = "kv")]
pub trait KvV3 {
    async fn get(&self, key: String) -> Option<String>;
    async fn compact(&self) -> u64;
}

#[derive(Default)]
struct Memory(Mutex<BTreeMap<String, String>>);

impl KvV2 for Memory {
    async fn delete(&self, key: String) -> bool {
        self.0.lock().unwrap().remove(&key).is_some()
    }

    async fn put(&self, key: String, value: String) {
        self.0.lock().unwrap().insert(key, value);
    }

    async fn keys(&self, mut out: Sender<String>) {
        let keys: Vec<String> = self.0.lock().unwrap().keys().cloned().collect();
        for key in keys {
            if out.send(key).await.is_err() {
                return;
            }
        }
    }

    async fn get(&self, key: String) -> Option<String> {
        self.0.lock().unwrap().get(&key).cloned()
    }
}

#[tokio::test]
async fn an_older_client_keeps_working_against_a_newer_server() {
    let (_server, _client, conn) = connect(KvV2Server::new(Memory::default())).await;
    let v1 = KvV1Client::new(conn.clone());
    let v2 = KvV2Client::new(conn);

    patiently(v1.put("a".into(), "1".into())).await.unwrap();
    assert_eq!(
        patiently(v1.get("a".into())).await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(patiently(v1.get("b".into())).await.unwrap(), None);

    // Both versions see the same service.
    patiently(v2.put("b".into(), "2".into())).await.unwrap();
    assert_eq!(
        patiently(v1.get("b".into())).await.unwrap().as_deref(),
        Some("2")
    );
    assert!(patiently(v2.delete("a".into())).await.unwrap());
    assert_eq!(patiently(v1.get("a".into())).await.unwrap(), None);
    let (keys, done) = patiently(v2.keys()).await.unwrap();
    let keys: Vec<String> = patiently(keys.map(Result::unwrap).collect()).await;
    assert_eq!(keys, ["b"]);
    patiently(done).await.unwrap();
}

#[tokio::test]
async fn a_method_the_server_lacks_fails_with_unknown_method() {
    let (_server, _client, conn) = connect(KvV2Server::new(Memory::default())).await;
    let v3 = KvV3Client::new(conn);

    let error = patiently(v3.compact()).await.unwrap_err();
    assert!(
        matches!(error, Error::UnknownMethod(_)),
        "expected an unknown-method error, got {error:?}"
    );
    // The connection is still good for the methods the server has.
    assert_eq!(patiently(v3.get("x".into())).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// A generic service.

/// A store of any key and value types.
#[service(name = "store")]
pub trait Store<K, V>
where
    K: Ord,
{
    async fn get(&self, key: K) -> Option<V>;
    async fn put(&self, key: K, value: V) -> Option<V>;
}

struct MemoryStore<K, V>(Mutex<BTreeMap<K, V>>);

impl<K, V> Store<K, V> for MemoryStore<K, V>
where
    K: Ord + Serialize + DeserializeOwned + Send + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    async fn get(&self, key: K) -> Option<V> {
        self.0.lock().unwrap().get(&key).cloned()
    }

    async fn put(&self, key: K, value: V) -> Option<V> {
        self.0.lock().unwrap().insert(key, value)
    }
}

#[tokio::test]
async fn generic_services_work_for_concrete_types() {
    let store: StoreServer<_, u32, Vec<String>> =
        StoreServer::new(MemoryStore(Mutex::new(BTreeMap::new())));
    let (_server, _client, conn) = connect(store).await;
    let store = StoreClient::<u32, Vec<String>>::new(conn);

    assert_eq!(
        patiently(store.put(7, vec!["seven".into()])).await.unwrap(),
        None
    );
    assert_eq!(
        patiently(store.get(7)).await.unwrap(),
        Some(vec!["seven".to_string()])
    );
    assert_eq!(patiently(store.get(8)).await.unwrap(), None);
}

// Idempotent methods: retried through a peer after a lost connection.

/// A counter whose reads may run twice.
#[service]
pub trait Visits {
    /// Counts a visit; the first one loses its connection before answering.
    #[idempotent]
    async fn visit(&self) -> u32;
    /// The same, not marked idempotent.
    async fn visit_once(&self) -> u32;
}

#[derive(Default)]
struct Door(std::sync::atomic::AtomicU32);

impl Door {
    async fn enter(&self) -> u32 {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == 1 {
            if let Some(ctx) = dep2p_runtime::CallContext::current() {
                ctx.connection().close();
            }
            std::future::pending::<()>().await;
        }
        n
    }
}

impl Visits for std::sync::Arc<Door> {
    async fn visit(&self) -> u32 {
        self.enter().await
    }

    async fn visit_once(&self) -> u32 {
        self.enter().await
    }
}

/// A server of `Visits` and a client of it through a peer; the door counts handler runs.
async fn visits() -> (Node, Node, VisitsClient, std::sync::Arc<Door>) {
    let door = std::sync::Arc::new(Door::default());
    let server = Node::builder()
        .serve(VisitsServer::new(std::sync::Arc::clone(&door)))
        .bind("127.0.0.1:0")
        .await
        .expect("bind server");
    let client = Node::builder()
        .bind("127.0.0.1:0")
        .await
        .expect("bind client");
    let peer = client.peer(server.node_addr());
    (server, client, VisitsClient::new(peer), door)
}

#[tokio::test]
async fn an_idempotent_method_is_retried_after_its_connection_is_lost() {
    let (_server, _client, visits, door) = visits().await;
    let n = patiently(visits.visit().timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(door.0.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_method_not_marked_idempotent_is_not_retried_after_its_connection_is_lost() {
    let (_server, _client, visits, door) = visits().await;
    let err = patiently(visits.visit_once().timeout(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionLost(_)), "{err:?}");
    assert_eq!(door.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// Generated code stays clean under `-D warnings` and clippy (the workspace gate runs clippy on
// this file): lint levels, deprecation and long signatures carry over to the client.

/// Rows of a table, in a type clippy finds complex once wrapped in a future.
type Rows = Result<Vec<BTreeMap<String, Vec<(u8, String)>>>, String>;

/// A service with long argument lists and complex return types.
#[service]
pub trait Wide {
    /// Sums eight numbers; the allowance reaches the client method too.
    #[allow(clippy::too_many_arguments)]
    async fn sum(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u32;
    /// The same, with an expectation that the client method carries as an allowance.
    #[expect(clippy::too_many_arguments)]
    #[deprecated(note = "use `sum`")]
    async fn old_sum(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u32;
    /// The complexity of the written type is below clippy's threshold.
    #[must_use]
    #[doc(alias = "select")]
    async fn rows(&self, n: u8) -> Result<Vec<BTreeMap<String, Vec<(u8, String)>>>, String>;
}

struct Adder;

impl Wide for Adder {
    #[allow(clippy::too_many_arguments)]
    async fn sum(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u32 {
        [a, b, c, d, e, f, g, h].iter().map(|&x| u32::from(x)).sum()
    }

    #[allow(clippy::too_many_arguments)]
    async fn old_sum(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u32 {
        self.sum(a, b, c, d, e, f, g, h).await + 1
    }

    async fn rows(&self, n: u8) -> Rows {
        let row = BTreeMap::from([("n".to_string(), vec![(n, n.to_string())])]);
        Ok(vec![row])
    }
}

#[tokio::test]
async fn services_with_long_signatures_and_deprecated_methods_work() {
    let (_server, _client, conn) = connect(WideServer::new(Adder)).await;
    let wide = WideClient::new(conn);
    assert_eq!(
        patiently(wide.sum(1, 2, 3, 4, 5, 6, 7, 8)).await.unwrap(),
        36
    );
    #[allow(deprecated)]
    let old = wide.old_sum(1, 1, 1, 1, 1, 1, 1, 1);
    assert_eq!(patiently(old).await.unwrap(), 9);
    let rows = patiently(wide.rows(3)).await.unwrap().unwrap();
    assert_eq!(rows[0]["n"], vec![(3, "3".to_string())]);
}

// ---------------------------------------------------------------------------------------------
// Stream ends are the ones the kind says, whatever their spelling; an application type named
// like a stream end is a message in a method that has no stream ends.

mod app {
    use serde::{Deserialize, Serialize};

    /// The application's own type, named like the runtime's stream end.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Sender<T> {
        pub name: String,
        pub tag: T,
    }
}

use dep2p_runtime::Receiver as Rx;
use dep2p_runtime::Sender as Tx;

/// Senders of letters, with stream ends under other names.
#[service]
pub trait Post {
    /// Request-response: `app::Sender<u8>` is a message.
    async fn who(&self, sender: app::Sender<u8>) -> String;
    /// The `Sender` spelled `Tx`.
    #[server_stream]
    async fn letters(&self, count: u8, out: Tx<String>);
    /// Both ends renamed: the `Receiver` comes before the `Sender`.
    #[bidi]
    async fn echo(&self, incoming: Rx<String>, out: Tx<String>);
}

struct Office;

impl Post for Office {
    async fn who(&self, sender: app::Sender<u8>) -> String {
        format!("{}#{}", sender.name, sender.tag)
    }

    async fn letters(&self, count: u8, mut out: Tx<String>) {
        for i in 0..count {
            if out.send(format!("letter {i}")).await.is_err() {
                return;
            }
        }
    }

    async fn echo(&self, mut incoming: Rx<String>, mut out: Tx<String>) {
        while let Some(Ok(text)) = incoming.next().await {
            if out.send(text).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test]
async fn stream_ends_are_the_ones_the_kind_says_whatever_their_spelling() {
    let (_server, _client, conn) = connect(PostServer::new(Office)).await;
    let post = PostClient::new(conn);

    let sender = app::Sender {
        name: "ann".to_string(),
        tag: 7,
    };
    assert_eq!(patiently(post.who(sender)).await.unwrap(), "ann#7");

    let (letters, response) = patiently(post.letters(2)).await.unwrap();
    let letters: Vec<String> = patiently(letters.map(Result::unwrap).collect()).await;
    assert_eq!(letters, ["letter 0", "letter 1"]);
    patiently(response).await.unwrap();

    let (mut out, incoming, response) = patiently(post.echo()).await.unwrap();
    patiently(out.send("hello".to_string())).await.unwrap();
    out.finish().unwrap();
    let echoed: Vec<String> = patiently(incoming.map(Result::unwrap).collect()).await;
    assert_eq!(echoed, ["hello"]);
    patiently(response).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Wire names: per method, per served instance, and never two services under one name.

/// A key store keeping the method names of the API it replaces.
#[service(name = "KeyStore")]
pub trait Keys {
    #[rpc(name = "getKeys")]
    async fn get_keys(&self, prefix: String) -> Vec<String>;
    #[notify(name = "dropKeys")]
    async fn drop_keys(&self);
}

struct Ring;

impl Keys for Ring {
    async fn get_keys(&self, prefix: String) -> Vec<String> {
        vec![format!("{prefix}1"), format!("{prefix}2")]
    }

    async fn drop_keys(&self) {}
}

#[tokio::test]
async fn methods_are_called_by_their_wire_names() {
    let (_server, _client, conn) = connect(KeysServer::new(Ring)).await;
    let keys = KeysClient::new(conn.clone());
    assert_eq!(
        patiently(keys.get_keys("k".into())).await.unwrap(),
        ["k1", "k2"]
    );
    patiently(keys.drop_keys()).await.unwrap();

    // A client of the old API calls the same names.
    let old = dep2p_runtime::Unary::<(String,), Vec<String>>::new(
        &conn,
        "KeyStore",
        "getKeys",
        ("x".to_string(),),
    );
    assert_eq!(patiently(old).await.unwrap(), ["x1", "x2"]);
    let by_ident = dep2p_runtime::Unary::<(String,), Vec<String>>::new(
        &conn,
        "KeyStore",
        "get_keys",
        ("x".to_string(),),
    );
    assert!(matches!(
        patiently(by_ident).await,
        Err(Error::UnknownMethod(_))
    ));
}

#[tokio::test]
async fn two_services_under_one_name_are_refused() {
    let twice = Node::builder()
        .serve(KeysServer::new(Ring))
        .serve(KeysServer::new(Ring))
        .bind("127.0.0.1:0")
        .await;
    match twice {
        Err(Error::Config(message)) => assert!(message.contains("\"KeyStore\""), "{message}"),
        other => panic!("expected a config error, got {other:?}"),
    }

    let (server, _client, conn) = connect(KeysServer::new(Ring)).await;
    assert!(matches!(
        server.serve(KeysServer::new(Ring)),
        Err(Error::Config(_))
    ));
    // The first one is still served.
    let keys = KeysClient::new(conn);
    assert_eq!(
        patiently(keys.get_keys("k".into())).await.unwrap(),
        ["k1", "k2"]
    );
}

#[tokio::test]
async fn a_generic_service_is_served_twice_under_two_names() {
    let numbers: StoreServer<_, u32, String> =
        StoreServer::new(MemoryStore(Mutex::new(BTreeMap::new())));
    let words: StoreServer<_, String, u64> =
        StoreServer::new(MemoryStore(Mutex::new(BTreeMap::new())));
    let server = Node::builder()
        .serve(dep2p_runtime::Renamed::new("store.numbers", numbers))
        .serve(dep2p_runtime::Renamed::new("store.words", words))
        .bind("127.0.0.1:0")
        .await
        .expect("bind server");
    let client = Node::builder()
        .bind("127.0.0.1:0")
        .await
        .expect("bind client");
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .expect("connect");

    let numbers = StoreClient::<u32, String>::with_name(conn.clone(), "store.numbers");
    let words = StoreClient::<String, u64>::with_name(conn, "store.words");
    assert_eq!(patiently(numbers.put(1, "one".into())).await.unwrap(), None);
    assert_eq!(patiently(words.put("one".into(), 1)).await.unwrap(), None);
    assert_eq!(
        patiently(numbers.get(1)).await.unwrap(),
        Some("one".to_string())
    );
    assert_eq!(patiently(words.get("one".into())).await.unwrap(), Some(1));
}
