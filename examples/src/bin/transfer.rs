//! A file transfer: 32 MiB generated in memory are uploaded in 64 KiB chunks over a
//! `#[client_stream]` method, then downloaded back over a `#[server_stream]` method, each with a
//! progress bar and its throughput. A checksum computed on both sides, and a byte-for-byte
//! comparison of the download, prove that the data arrived intact and in order.
//!
//! The bar redraws one line when stdout is a terminal, and prints a few plain lines otherwise
//! (in CI, or piped into a file).
//!
//! Run it with (`--release` for realistic throughput):
//!
//! ```text
//! cargo run -p dep2p-examples --bin transfer
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dep2p_runtime::{service, Error, Node, Receiver, Sender};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

const FILE_SIZE: usize = 32 * 1024 * 1024;
const CHUNK_SIZE: usize = 64 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

/// A piece of a file. `serde_bytes` encodes the bytes as one block rather than as a sequence
/// of numbers.
#[derive(Serialize, Deserialize)]
pub struct Chunk(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chunk({} bytes)", self.0.len())
    }
}

/// A file's size and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub size: u64,
    pub checksum: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FileError {
    NotFound(String),
    /// A stream of the call failed; the runtime's error, as text.
    Stream(String),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::NotFound(name) => write!(f, "no file named {name:?}"),
            FileError::Stream(why) => write!(f, "transfer failed: {why}"),
        }
    }
}

impl std::error::Error for FileError {}

impl From<Error> for FileError {
    fn from(err: Error) -> Self {
        FileError::Stream(err.to_string())
    }
}

#[service(name = "files.v1")]
pub trait Files {
    /// Stores the file sent chunk by chunk; answers what arrived.
    #[client_stream]
    async fn upload(&self, name: String, chunks: Receiver<Chunk>) -> Result<Summary, FileError>;

    /// Sends a stored file back chunk by chunk; answers what was sent.
    #[server_stream]
    async fn download(&self, name: String, out: Sender<Chunk>) -> Result<Summary, FileError>;
}

#[derive(Default)]
struct Store {
    files: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl Files for Store {
    async fn upload(
        &self,
        name: String,
        mut chunks: Receiver<Chunk>,
    ) -> Result<Summary, FileError> {
        let mut file = Vec::new();
        let mut checksum = Checksum::default();
        while let Some(Chunk(chunk)) = chunks.next().await.transpose()? {
            checksum.update(&chunk);
            file.extend_from_slice(&chunk);
        }
        let summary = Summary {
            size: file.len() as u64,
            checksum: checksum.value(),
        };
        self.files.lock().unwrap().insert(name, Arc::new(file));
        Ok(summary)
    }

    async fn download(&self, name: String, mut out: Sender<Chunk>) -> Result<Summary, FileError> {
        let file = self.files.lock().unwrap().get(&name).cloned();
        let file = file.ok_or(FileError::NotFound(name))?;
        let mut checksum = Checksum::default();
        for chunk in file.chunks(CHUNK_SIZE) {
            checksum.update(chunk);
            // Waits while the receiver's window is full: memory stays bounded however slow
            // the reader.
            out.send(Chunk(chunk.to_vec())).await?;
        }
        Ok(Summary {
            size: file.len() as u64,
            checksum: checksum.value(),
        })
    }
}

/// A Fletcher-style checksum: cheap, and unlike a plain sum it notices reordered bytes.
#[derive(Debug, Default)]
struct Checksum {
    sum: u64,
    sum_of_sums: u64,
}

impl Checksum {
    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.sum = self.sum.wrapping_add(u64::from(byte));
            self.sum_of_sums = self.sum_of_sums.wrapping_add(self.sum);
        }
    }

    fn value(&self) -> u64 {
        self.sum_of_sums.rotate_left(32) ^ self.sum
    }
}

fn checksum(bytes: &[u8]) -> Summary {
    let mut checksum = Checksum::default();
    checksum.update(bytes);
    Summary {
        size: bytes.len() as u64,
        checksum: checksum.value(),
    }
}

/// Pseudo-random bytes from a xorshift generator: no two chunks alike.
fn generate(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    data
}

/// A progress bar on stdout: one line redrawn in place on a terminal, a line per quarter
/// otherwise.
#[derive(Debug)]
struct Bar {
    label: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    terminal: bool,
    /// The last percentage (terminal) or quarter (otherwise) drawn.
    drawn: u64,
}

impl Bar {
    const WIDTH: u64 = 30;

    fn new(label: &'static str, total: u64) -> Self {
        let terminal = std::io::stdout().is_terminal();
        Bar {
            label,
            total,
            done: 0,
            started: Instant::now(),
            terminal,
            drawn: if terminal { u64::MAX } else { 0 },
        }
    }

    fn advance(&mut self, bytes: usize) {
        self.done = (self.done + bytes as u64).min(self.total);
        let percent = self.done * 100 / self.total.max(1);
        if self.terminal && percent != self.drawn {
            let filled = (self.done * Self::WIDTH / self.total.max(1)) as usize;
            let bar = format!(
                "{:#<filled$}{:.<rest$}",
                "",
                "",
                rest = Self::WIDTH as usize - filled
            );
            print!(
                "\r{} [{bar}] {percent:>3}% {:>5.1}/{:.1} MiB",
                self.label,
                self.done as f64 / MIB,
                self.total as f64 / MIB
            );
            let _ = std::io::stdout().flush();
            self.drawn = percent;
        } else if !self.terminal && percent / 25 > self.drawn {
            println!("{} {percent:>3}%", self.label);
            self.drawn = percent / 25;
        }
    }

    /// Ends the bar with the throughput.
    fn finish(self) -> Duration {
        let elapsed = self.started.elapsed();
        if self.terminal {
            println!();
        }
        println!(
            "{} {:.1} MiB in {:.2}s: {:.1} MiB/s",
            self.label,
            self.total as f64 / MIB,
            elapsed.as_secs_f64(),
            self.total as f64 / MIB / elapsed.as_secs_f64()
        );
        elapsed
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Node::builder()
        .serve(FilesServer::new(Store::default()))
        .bind("127.0.0.1:0")
        .await?;
    let client = Node::builder().bind("127.0.0.1:0").await?;
    let files = FilesClient::new(client.connect(server.local_addr(), server.id()).await?);

    let data = generate(FILE_SIZE);
    let local = checksum(&data);
    println!(
        "file: {} MiB, checksum {:016x}",
        FILE_SIZE / (1024 * 1024),
        local.checksum
    );

    // Upload: send chunks, finish the stream, then the server answers what it received.
    let mut bar = Bar::new("upload  ", data.len() as u64);
    let (mut chunks, stored) = files.upload("random.bin".into()).await?;
    for chunk in data.chunks(CHUNK_SIZE) {
        chunks.send(Chunk(chunk.to_vec())).await?;
        bar.advance(chunk.len());
    }
    chunks.finish()?;
    let stored = stored.await??;
    bar.finish();
    assert_eq!(stored, local, "what the server stored");

    // Download: read the chunks as they come, then the server's summary of what it sent.
    // The size is known from the upload; a real client would ask for it first.
    let mut bar = Bar::new("download", stored.size);
    let (mut chunks, sent) = files.download("random.bin".into()).await?;
    let mut received = Vec::with_capacity(stored.size as usize);
    while let Some(Chunk(chunk)) = chunks.next().await.transpose()? {
        bar.advance(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let sent = sent.await??;
    bar.finish();
    assert_eq!(sent, local, "what the server sent");
    assert_eq!(checksum(&received), local, "what the client received");
    assert!(received == data, "the download differs from the upload");

    // A file that is not there: the application's error, as a value.
    let (mut chunks, missing) = files.download("missing.bin".into()).await?;
    assert!(chunks.next().await.is_none());
    let missing = missing.await?;
    println!("download of missing.bin -> {missing:?}");
    assert!(matches!(missing, Err(FileError::NotFound(_))));

    println!("checksums match on both sides: {:016x}", local.checksum);
    Ok(())
}
