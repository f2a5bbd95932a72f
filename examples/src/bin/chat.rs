//! A chat room over a `#[bidi]` method: three clients, each on its own node, join the room and
//! talk at once. The room puts every message in one order and sends it to every member, so
//! every client hears every message, in the same order. A late visitor then reads the room's
//! history through a `#[server_stream]` method, and the program checks that it is what each
//! client heard.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p dep2p-examples --bin chat
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dep2p_runtime::{service, Error, Node, NodeId, Receiver, Sender};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Barrier};

/// Errors that cross task boundaries here must be `Send + Sync`.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A message said in the room, numbered in the room's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    pub from: String,
    pub text: String,
}

/// What a member hears: first a welcome once it is in the room, then what is said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    Welcome { members: usize },
    Said(Message),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatError(pub String);

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chat failed: {}", self.0)
    }
}

impl std::error::Error for ChatError {}

impl From<Error> for ChatError {
    fn from(err: Error) -> Self {
        ChatError(err.to_string())
    }
}

#[service(name = "chat.v1")]
pub trait Chat {
    /// Joins the room as `name` until the caller finishes its stream: what it sends is said
    /// to the room, and it hears everything said there, its own messages included. Answers
    /// how many messages it said.
    #[bidi]
    async fn join(
        &self,
        name: String,
        say: Receiver<String>,
        hear: Sender<Event>,
    ) -> Result<u32, ChatError>;

    /// Everything said so far, oldest first. Answers how many messages there were.
    #[server_stream]
    async fn history(&self, out: Sender<Message>) -> Result<u64, ChatError>;
}

#[derive(Default)]
struct Room {
    state: Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    history: Vec<Message>,
    /// One inbox per member; a member that left has dropped its end.
    members: Vec<mpsc::UnboundedSender<Message>>,
}

impl Room {
    fn enter(&self) -> (mpsc::UnboundedReceiver<Message>, usize) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state.lock().unwrap();
        state.members.push(tx);
        (rx, state.members.len())
    }

    /// Numbers the message and hands it to every member, under one lock: that lock is what
    /// gives every member the same order.
    fn say(&self, from: &str, text: String) {
        let mut state = self.state.lock().unwrap();
        let message = Message {
            seq: state.history.len() as u64 + 1,
            from: from.to_owned(),
            text,
        };
        state
            .members
            .retain(|member| member.send(message.clone()).is_ok());
        state.history.push(message);
    }
}

impl Chat for Room {
    async fn join(
        &self,
        name: String,
        mut say: Receiver<String>,
        mut hear: Sender<Event>,
    ) -> Result<u32, ChatError> {
        let (mut inbox, members) = self.enter();
        hear.send(Event::Welcome { members }).await?;
        let mut said = 0;
        // Listen to the member and to the room at once.
        loop {
            tokio::select! {
                text = say.next() => match text {
                    Some(text) => {
                        self.say(&name, text?);
                        said += 1;
                    }
                    // The member finished its stream: it leaves. Dropping `inbox` takes it out
                    // of the room.
                    None => return Ok(said),
                },
                Some(message) = inbox.recv() => hear.send(Event::Said(message)).await?,
            }
        }
    }

    async fn history(&self, mut out: Sender<Message>) -> Result<u64, ChatError> {
        // Copy first: a lock is not held across an `.await`.
        let history = self.state.lock().unwrap().history.clone();
        for message in &history {
            out.send(message.clone()).await?;
        }
        Ok(history.len() as u64)
    }
}

/// What each member says, and how long it pauses between messages, so that they talk over
/// each other.
const SCRIPT: [(&str, u64, [&str; 3]); 3] = [
    ("ada", 30, ["hi all", "anyone up for lunch?", "12:30 then"]),
    ("bob", 45, ["hello!", "sure", "see you"]),
    ("cy", 20, ["hey", "count me in", "bringing dessert"]),
];

/// One member on its own node: joins, waits until everyone is in, talks and listens at once,
/// then leaves. Returns every message it heard.
async fn member(
    server: (SocketAddr, NodeId),
    name: &'static str,
    pause: u64,
    lines: [&'static str; 3],
    everyone_in: Arc<Barrier>,
) -> Result<Vec<Message>, BoxError> {
    let node = Node::builder().bind("127.0.0.1:0").await?;
    let chat = ChatClient::new(node.connect(server.0, server.1).await?);
    let (mut say, mut hear, said) = chat.join(name.to_owned()).await?;

    // The welcome means the room has us: from now on we hear everything.
    match hear.next().await.transpose()? {
        Some(Event::Welcome { members }) => println!("{name:>3} joined, member #{members}"),
        other => return Err(format!("{name} expected a welcome, got {other:?}").into()),
    }
    everyone_in.wait().await;

    let expected = SCRIPT.len() * lines.len();
    let talk = async {
        for line in lines {
            say.send(line.to_owned()).await?;
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        Ok::<_, BoxError>(())
    };
    let listen = async {
        let mut heard = Vec::new();
        while heard.len() < expected {
            match hear.next().await.transpose()? {
                Some(Event::Said(message)) => heard.push(message),
                other => return Err(format!("{name} expected a message, got {other:?}").into()),
            }
        }
        Ok::<_, BoxError>(heard)
    };
    let ((), heard) = tokio::try_join!(talk, listen)?;

    // Leave: finish our stream; the room ends its own, then answers.
    say.finish()?;
    if let Some(extra) = hear.next().await.transpose()? {
        return Err(format!("{name} heard {extra:?} after leaving").into());
    }
    let said = said.await??;
    assert_eq!(said as usize, lines.len());
    println!(
        "{name:>3} left after saying {said} and hearing {} messages",
        heard.len()
    );
    Ok(heard)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let server = Node::builder()
        .serve(ChatServer::new(Room::default()))
        .bind("127.0.0.1:0")
        .await?;
    let address = (server.local_addr(), server.id());

    let everyone_in = Arc::new(Barrier::new(SCRIPT.len()));
    let members: Vec<_> = SCRIPT
        .iter()
        .map(|&(name, pause, lines)| {
            tokio::spawn(member(address, name, pause, lines, everyone_in.clone()))
        })
        .collect();
    let mut heard = Vec::new();
    for member in members {
        heard.push(member.await??);
    }

    // A late visitor reads the history: one request, a stream of messages, then a count.
    let visitor = Node::builder().bind("127.0.0.1:0").await?;
    let chat = ChatClient::new(visitor.connect(address.0, address.1).await?);
    let (messages, count) = chat.history().await?;
    let history: Vec<Message> = messages.try_collect().await?;
    let count = count.await??;

    println!("history ({count} messages):");
    for message in &history {
        println!("  #{} {:>3}: {}", message.seq, message.from, message.text);
    }

    // Everything said is there once, in the order each member said it...
    assert_eq!(count as usize, history.len());
    for (name, _, lines) in SCRIPT {
        let said: Vec<&str> = history
            .iter()
            .filter(|m| m.from == name)
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(said, lines, "what {name} said");
    }
    // ...and every member heard all of it, in the room's order.
    for ((name, _, _), heard) in SCRIPT.iter().zip(&heard) {
        assert_eq!(heard, &history, "what {name} heard");
    }
    println!(
        "all {} members heard the same {} messages in the same order",
        heard.len(),
        history.len()
    );
    Ok(())
}
