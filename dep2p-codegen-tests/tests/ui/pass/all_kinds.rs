//! Every kind of method, implemented with `async fn` and served; a caller uses `?`.

use dep2p_runtime::{service, Connection, Receiver, Sender};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
pub struct Message {
    pub text: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Chunk(pub Vec<u8>);

#[derive(Serialize, Deserialize, Debug)]
pub enum LoginError {
    BadPassword,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ChatError;

/// A chat.
#[service(name = "chat.v1")]
pub trait Chat {
    /// Request-response: the default kind.
    async fn login(&self, user: String) -> Result<u64, LoginError>;

    /// Request-response, said explicitly, and idempotent: retried after a lost connection.
    #[rpc]
    #[idempotent]
    async fn whoami(&self) -> String;

    /// One-way.
    #[notify]
    async fn typing(&self, user: String);

    #[datagram]
    async fn cursor(&self, x: u16, y: u16);

    /// A stream of responses.
    #[server_stream]
    async fn history(&self, room: String, out: Sender<Message>) -> Result<(), ChatError>;

    /// A stream of requests.
    #[client_stream]
    async fn upload(&self, name: String, chunks: Receiver<Chunk>) -> Result<u64, ChatError>;

    /// Both directions; the stream ends may come in any order among the arguments.
    #[bidi]
    async fn talk(
        &self,
        out: Sender<Message>,
        room: String,
        incoming: Receiver<Message>,
    ) -> Result<(), ChatError>;
}

struct ChatImpl;

impl ChatImpl {
    /// An inherent method with the name of a trait method: the server must still call the
    /// trait's.
    #[allow(dead_code)]
    fn login(&self) {}
}

impl Chat for ChatImpl {
    async fn login(&self, user: String) -> Result<u64, LoginError> {
        if user.is_empty() {
            Err(LoginError::BadPassword)
        } else {
            Ok(1)
        }
    }

    async fn whoami(&self) -> String {
        String::from("server")
    }

    async fn typing(&self, _user: String) {}

    async fn cursor(&self, _x: u16, _y: u16) {}

    async fn history(&self, _room: String, _out: Sender<Message>) -> Result<(), ChatError> {
        Ok(())
    }

    async fn upload(&self, _name: String, _chunks: Receiver<Chunk>) -> Result<u64, ChatError> {
        Ok(0)
    }

    async fn talk(
        &self,
        _out: Sender<Message>,
        _room: String,
        _incoming: Receiver<Message>,
    ) -> Result<(), ChatError> {
        Ok(())
    }
}

#[allow(dead_code)]
async fn caller(conn: Connection) -> Result<u64, Box<dyn std::error::Error>> {
    let chat = ChatClient::new(conn);
    let _typing = chat.clone().typing(String::from("me"));
    chat.cursor(3, 4).await?;
    let _history = chat.history(String::from("room"));
    let _upload = chat.upload(String::from("file"));
    let _talk = chat.talk(String::from("room"));
    let _ = chat.connection();
    let id = chat.login(String::from("me")).await?;
    Ok(id.unwrap_or(0))
}

fn main() {
    let server = ChatServer::new(ChatImpl);
    let service: Box<dyn dep2p_runtime::Service> = Box::new(server.clone());
    assert_eq!(service.name(), "chat.v1");
    assert_eq!(ChatClient::SERVICE_NAME, "chat.v1");
    println!("{server:?}");
}
