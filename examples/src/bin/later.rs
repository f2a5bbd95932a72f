//! A request answered later: the serving node hands each incoming request ("may I send you
//! this file?") to the application, which answers whenever it decides — once, and only while
//! the caller still waits.
//!
//! The handler does not decide anything itself: it puts the offer and a one-shot `Reply` into
//! the application's inbox and waits for the reply. The application answers with
//! `Reply::send`, which takes the reply by value, so no offer can be answered twice. If the
//! caller's deadline passes first, the handler is stopped, and the application's late answer
//! comes back to it as an error it can log or act on: it is refused visibly, never lost. An
//! offer the application drops without answering is declined on its behalf.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p dep2p-examples --bin later
//! ```

use std::fmt;
use std::time::Duration;

use dep2p_runtime::{service, CallContext, Error, Node};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Why an offer was not taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Declined {
    /// The receiving user said no.
    No(String),
    /// Nobody answered: the application dropped the offer.
    NoAnswer,
}

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Declined::No(why) => write!(f, "declined: {why}"),
            Declined::NoAnswer => f.write_str("nobody answered"),
        }
    }
}

impl std::error::Error for Declined {}

#[service(name = "inbox.v1")]
pub trait Inbox {
    /// Offers a file; answers where to send it once the receiving user accepts.
    async fn offer(&self, name: String, bytes: u64) -> Result<String, Declined>;
}

/// An offer waiting for the application's answer.
struct Offer {
    name: String,
    bytes: u64,
    from: String,
    reply: Reply,
}

/// The one answer an offer gets.
struct Reply(oneshot::Sender<Result<String, Declined>>);

impl Reply {
    /// Answers the offer. Fails, handing the answer back, when the caller no longer waits
    /// (its deadline passed, or it went away).
    fn send(self, answer: Result<String, Declined>) -> Result<(), Result<String, Declined>> {
        self.0.send(answer)
    }
}

/// The service: a door into the application's inbox.
struct Door {
    inbox: mpsc::Sender<Offer>,
}

impl Inbox for Door {
    async fn offer(&self, name: String, bytes: u64) -> Result<String, Declined> {
        let from = CallContext::current()
            .map(|ctx| ctx.remote_id().fmt_short())
            .unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        let offer = Offer {
            name,
            bytes,
            from,
            reply: Reply(tx),
        };
        if self.inbox.send(offer).await.is_err() {
            return Err(Declined::NoAnswer);
        }
        // Waits as long as the call's deadline allows: at the deadline this handler is
        // dropped, and with it the receiving end of the reply.
        rx.await.unwrap_or(Err(Declined::NoAnswer))
    }
}

/// The application: decides about each of `offers` offers in its own time.
async fn application(mut inbox: mpsc::Receiver<Offer>, offers: usize) {
    for _ in 0..offers {
        let Some(offer) = inbox.recv().await else {
            return;
        };
        println!(
            "app: {} offers {:?} ({} bytes)",
            offer.from, offer.name, offer.bytes
        );
        match offer.name.as_str() {
            // Thought about for a moment, then accepted.
            "notes.txt" => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                report(offer.reply.send(Ok("/uploads/notes.txt".into())));
            }
            // Too big: declined at once.
            "movie.mkv" => report(offer.reply.send(Err(Declined::No("too big".into())))),
            // Left unanswered: dropping the reply declines on the application's behalf.
            "spam.exe" => drop(offer.reply),
            // Thought about for too long: the caller has stopped waiting by then.
            _ => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                report(offer.reply.send(Ok("/uploads/late".into())));
            }
        }
    }
}

fn report(sent: Result<(), Result<String, Declined>>) {
    match sent {
        Ok(()) => println!("app: answer delivered"),
        Err(answer) => println!("app: answer {answer:?} refused: the caller no longer waits"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::channel(16);
    let app = tokio::spawn(application(rx, 4));
    let server = Node::builder()
        .serve(InboxServer::new(Door { inbox: tx }))
        .bind("127.0.0.1:0")
        .await?;
    let client = Node::builder().bind("127.0.0.1:0").await?;
    let inbox = InboxClient::new(client.connect(server.local_addr(), server.id()).await?);

    let patience = Duration::from_millis(500);
    let accepted = inbox
        .offer("notes.txt".into(), 1_200)
        .timeout(patience)
        .await?;
    println!("client: notes.txt -> {accepted:?}");
    assert_eq!(accepted, Ok("/uploads/notes.txt".to_string()));

    let declined = inbox
        .offer("movie.mkv".into(), 4 << 30)
        .timeout(patience)
        .await?;
    println!("client: movie.mkv -> {declined:?}");
    assert_eq!(declined, Err(Declined::No("too big".into())));

    let dropped = inbox.offer("spam.exe".into(), 66).timeout(patience).await?;
    println!("client: spam.exe -> {dropped:?}");
    assert_eq!(dropped, Err(Declined::NoAnswer));

    let late = inbox.offer("diary.md".into(), 300).timeout(patience).await;
    println!("client: diary.md -> {late:?}");
    assert!(matches!(late, Err(Error::Timeout)));

    // The application tries its late answer, and sees it refused.
    app.await?;
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
