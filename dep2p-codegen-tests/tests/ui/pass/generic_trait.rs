//! A generic trait gives a generic client and server.

use std::collections::BTreeMap;
use std::sync::Mutex;

use dep2p_runtime::{service, Connection, Sender};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[service(name = "store")]
pub trait Store<K, V>
where
    K: Ord,
{
    async fn get(&self, key: K) -> Option<V>;
    async fn put(&self, key: K, value: V);
    #[server_stream]
    async fn keys(&self, out: Sender<K>);
}

/// A parameter that no message uses, and a const parameter.
#[service]
pub trait Tagged<Tag, const N: usize> {
    async fn numbers(&self) -> Vec<u32>;
}

struct Memory<K, V>(Mutex<BTreeMap<K, V>>);

impl<K, V> Store<K, V> for Memory<K, V>
where
    K: Ord + Serialize + DeserializeOwned + Send + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    async fn get(&self, key: K) -> Option<V> {
        self.0.lock().unwrap().get(&key).cloned()
    }
    async fn put(&self, key: K, value: V) {
        self.0.lock().unwrap().insert(key, value);
    }
    async fn keys(&self, _out: Sender<K>) {}
}

struct Numbers;

impl<Tag: Send + Sync + 'static> Tagged<Tag, 3> for Numbers {
    async fn numbers(&self) -> Vec<u32> {
        vec![1, 2, 3]
    }
}

#[allow(dead_code)]
fn client(conn: Connection) {
    let store: StoreClient<String, u64> = StoreClient::new(conn.clone());
    let _ = store.clone().get(String::from("key"));
    let tagged = TaggedClient::<std::rc::Rc<u8>, 3>::new(conn);
    let _ = tagged.numbers();
}

fn main() {
    let _store: StoreServer<_, String, u64> = StoreServer::new(Memory(Mutex::new(BTreeMap::new())));
    let _tagged = TaggedServer::<_, (), 3>::new(Numbers);
    assert_eq!(StoreClient::<String, u64>::SERVICE_NAME, "store");
}
