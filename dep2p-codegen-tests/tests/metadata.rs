//! Response metadata through generated clients and servers, over real QUIC on 127.0.0.1.

use std::time::Duration;

use dep2p_runtime::{service, CallContext, Node, Sender};
use futures::StreamExt;

/// Long enough for any call on loopback; a test that hits it has hung.
const PATIENCE: Duration = Duration::from_secs(10);

#[service]
pub trait Inventory {
    /// Answers the stock of an item, with the server's name as a header and the time the
    /// lookup took as a trailer.
    async fn stock(&self, item: String) -> Result<u32, String>;

    /// The items one by one, with the same metadata.
    #[server_stream]
    async fn items(&self, out: Sender<String>) -> u32;
}

struct Shop;

fn tag() {
    let ctx = CallContext::current().expect("inside a handler");
    ctx.set_header("server", "shop-1");
    ctx.set_trailer("lookup-us", "42");
}

impl Inventory for Shop {
    async fn stock(&self, item: String) -> Result<u32, String> {
        tag();
        match item.as_str() {
            "apple" => Ok(3),
            _ => Err(format!("no {item}")),
        }
    }

    async fn items(&self, mut out: Sender<String>) -> u32 {
        tag();
        for item in ["apple", "pear"] {
            if out.send(item.to_string()).await.is_err() {
                return 0;
            }
        }
        2
    }
}

async fn client() -> (Node, Node, InventoryClient) {
    let server = Node::builder()
        .serve(InventoryServer::new(Shop))
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
    (server, client, InventoryClient::new(conn))
}

#[tokio::test]
async fn generated_calls_read_headers_and_trailers() {
    let (_server, _client, shop) = client().await;

    let call = shop.stock("apple".into()).with_metadata();
    let (result, metadata) = tokio::time::timeout(PATIENCE, call).await.unwrap();
    assert_eq!(result.unwrap(), Ok(3));
    assert_eq!(metadata.headers().get("server"), Some("shop-1"));
    assert_eq!(metadata.trailers().get("lookup-us"), Some("42"));
    // The application's error comes with the metadata too.
    let (result, metadata) = shop.stock("kiwi".into()).with_metadata().await;
    assert_eq!(result.unwrap(), Err("no kiwi".to_string()));
    assert_eq!(metadata.trailers().get("lookup-us"), Some("42"));

    let (mut items, response) = shop.items().await.unwrap();
    assert_eq!(items.headers().await.get("server"), Some("shop-1"));
    let got: Vec<String> = items.map(Result::unwrap).collect().await;
    assert_eq!(got, ["apple", "pear"]);
    let (count, metadata) = response.with_metadata().await;
    assert_eq!(count.unwrap(), 2);
    assert_eq!(metadata.trailers().get("lookup-us"), Some("42"));
}
