//! Compression (protocol version 2): every kind round trips compressed, the threshold and the
//! per-method and per-call settings decide what is compressed, a version 1 peer gets plain
//! frames, the frames are as `docs/PROTOCOL.md` describes them, and a hostile peer's
//! compressed frames (bombs, lies, garbage) fail only their call.

mod common;

use common::wire::*;
use common::{node, pair_with, probe, TestService};
use dep2p_runtime::{service, Compression, Connection, Node, NodeBuilder, Receiver, Sender};
use futures::StreamExt;
use tokio::sync::mpsc;

#[service(name = "Blobs")]
pub trait Blobs {
    /// Answers what it was sent.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;

    /// Keeps what it was sent.
    #[notify]
    async fn store(&self, data: Vec<u8>);

    /// Sends `data` back `times` times.
    #[server_stream]
    async fn repeat(&self, data: Vec<u8>, times: u32, out: Sender<Vec<u8>>) -> u32;

    /// Answers the chunks it was sent, joined.
    #[client_stream]
    async fn concat(&self, chunks: Receiver<Vec<u8>>) -> Result<Vec<u8>, String>;

    /// Sends each chunk back as it arrives; answers how many.
    #[bidi]
    async fn mirror(&self, incoming: Receiver<Vec<u8>>, out: Sender<Vec<u8>>) -> u32;
}

struct Store(mpsc::UnboundedSender<Vec<u8>>);

impl Blobs for Store {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn store(&self, data: Vec<u8>) {
        let _ = self.0.send(data);
    }

    async fn repeat(&self, data: Vec<u8>, times: u32, mut out: Sender<Vec<u8>>) -> u32 {
        for _ in 0..times {
            out.send(data.clone()).await.unwrap();
        }
        times
    }

    async fn concat(&self, mut chunks: Receiver<Vec<u8>>) -> Result<Vec<u8>, String> {
        let mut all = Vec::new();
        while let Some(chunk) = chunks.next().await {
            all.extend(chunk.map_err(|e| e.to_string())?);
        }
        Ok(all)
    }

    async fn mirror(&self, mut incoming: Receiver<Vec<u8>>, mut out: Sender<Vec<u8>>) -> u32 {
        let mut n = 0;
        while let Some(Ok(chunk)) = incoming.next().await {
            out.send(chunk).await.unwrap();
            n += 1;
        }
        n
    }
}

struct Blob {
    _server: Node,
    _client: Node,
    conn: Connection,
    client: BlobsClient,
    stored: mpsc::UnboundedReceiver<Vec<u8>>,
}

async fn blobs(server: NodeBuilder, client: NodeBuilder) -> Blob {
    let (tx, stored) = mpsc::unbounded_channel();
    let server = node(server.serve(BlobsServer::new(Store(tx)))).await;
    let client_node = node(client).await;
    let conn = client_node
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    Blob {
        _server: server,
        _client: client_node,
        client: BlobsClient::new(conn.clone()),
        conn,
        stored,
    }
}

/// `n` bytes of text that compresses well.
fn text(n: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// Large enough that what a connection sends besides the calls (acknowledgements, path MTU
/// probes) is small beside it.
const SIZE: usize = 1024 * 1024;

/// UDP bytes the connection sent and received so far.
fn sent_received(conn: &Connection) -> (u64, u64) {
    let stats = conn.quic().stats();
    (stats.udp_tx.bytes, stats.udp_rx.bytes)
}

/// Bytes sent and received on `conn` while `f` ran.
async fn traffic<F: std::future::IntoFuture>(conn: &Connection, f: F) -> (u64, u64, F::Output) {
    let (tx, rx) = sent_received(conn);
    let out = f.await;
    let (tx2, rx2) = sent_received(conn);
    (tx2 - tx, rx2 - rx, out)
}

fn lz4() -> NodeBuilder {
    Node::builder().compression(Compression::lz4())
}

#[tokio::test]
async fn every_kind_round_trips_compressed() {
    let mut b = blobs(lz4(), lz4()).await;
    assert_eq!(b.conn.protocol_version(), 2);
    let data = text(SIZE);

    let (sent, received, echoed) = traffic(&b.conn, b.client.echo(data.clone())).await;
    assert_eq!(echoed.unwrap(), data);
    // Both directions went compressed: a small part of the 1 MiB each way.
    assert!(sent < SIZE as u64 / 4, "{sent} bytes sent");
    assert!(received < SIZE as u64 / 4, "{received} bytes received");

    let (sent, _, stored) = traffic(&b.conn, b.client.store(data.clone())).await;
    stored.unwrap();
    assert_eq!(b.stored.recv().await.unwrap(), data);
    assert!(sent < SIZE as u64 / 4, "{sent} bytes sent");

    let repeat = async {
        let (items, result) = b.client.repeat(data.clone(), 4).await.unwrap();
        let items: Vec<Vec<u8>> = items.map(Result::unwrap).collect().await;
        (items, result.await.unwrap())
    };
    let (_, received, (items, n)) = traffic(&b.conn, repeat).await;
    assert_eq!((items.len(), n), (4, 4));
    assert!(items.iter().all(|item| *item == data));
    assert!(
        received < SIZE as u64 / 2,
        "{received} bytes received for 4 MiB"
    );

    let concat = async {
        let (mut chunks, result) = b.client.concat().await.unwrap();
        for _ in 0..4 {
            chunks.send(data.clone()).await.unwrap();
        }
        chunks.finish().unwrap();
        result.await.unwrap().unwrap()
    };
    let (sent, _, joined) = traffic(&b.conn, concat).await;
    assert_eq!(joined.len(), 4 * SIZE);
    assert_eq!(&joined[3 * SIZE..], &data[..]);
    assert!(sent < SIZE as u64 / 2, "{sent} bytes sent for 4 MiB");

    let mirror = async {
        let (mut to, mut from, result) = b.client.mirror().await.unwrap();
        for _ in 0..3 {
            to.send(data.clone()).await.unwrap();
            assert_eq!(from.next().await.unwrap().unwrap(), data);
        }
        to.finish().unwrap();
        assert!(from.next().await.is_none());
        result.await.unwrap()
    };
    let (sent, received, n) = traffic(&b.conn, mirror).await;
    assert_eq!(n, 3);
    assert!(sent < SIZE as u64 / 2, "{sent} bytes sent");
    assert!(received < SIZE as u64 / 2, "{received} bytes received");
}

#[tokio::test]
async fn nothing_is_compressed_by_default_or_below_the_threshold() {
    let data = text(SIZE);
    for (server, client) in [
        (Node::builder(), Node::builder()),
        (
            Node::builder().compression(Compression::lz4().min_size(SIZE + 100)),
            Node::builder().compression(Compression::lz4().min_size(SIZE + 100)),
        ),
    ] {
        let b = blobs(server, client).await;
        let (sent, received, echoed) = traffic(&b.conn, b.client.echo(data.clone())).await;
        assert_eq!(echoed.unwrap(), data);
        assert!(sent > SIZE as u64, "{sent} bytes sent");
        assert!(received > SIZE as u64, "{received} bytes received");
    }
}

#[tokio::test]
async fn methods_and_calls_choose_for_themselves() {
    // The server compresses everything but `echo`; the client nothing, but for one call.
    let server = Node::builder().compression(Compression::lz4().method("Blobs", "echo", false));
    let b = blobs(server, Node::builder()).await;
    let data = text(SIZE);

    let (sent, received, echoed) = traffic(&b.conn, b.client.echo(data.clone())).await;
    assert_eq!(echoed.unwrap(), data);
    assert!(sent > SIZE as u64 && received > SIZE as u64);

    let call = b.client.echo(data.clone()).compress(true);
    let (sent, received, echoed) = traffic(&b.conn, call).await;
    assert_eq!(echoed.unwrap(), data);
    assert!(sent < SIZE as u64 / 4, "{sent} bytes sent");
    assert!(received > SIZE as u64, "{received} bytes received");

    let repeat = async {
        let (items, result) = b.client.repeat(data.clone(), 1).await.unwrap();
        let items: Vec<Vec<u8>> = items.map(Result::unwrap).collect().await;
        (items, result.await.unwrap())
    };
    let (_, received, (items, _)) = traffic(&b.conn, repeat).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0], data);
    assert!(received < SIZE as u64 / 4, "{received} bytes received");

    // A node that compresses everything leaves out a call told not to.
    let b = blobs(lz4(), lz4()).await;
    let call = b.client.echo(data.clone()).compress(false);
    let (sent, _, echoed) = traffic(&b.conn, call).await;
    assert_eq!(echoed.unwrap(), data);
    assert!(sent > SIZE as u64, "{sent} bytes sent");
}

/// A node with compression on and a version 1 node work together, whichever dials, and
/// nothing compressed crosses their connection.
#[tokio::test]
async fn a_version_1_peer_gets_plain_frames() {
    let data = text(SIZE);
    let old = || Node::builder().protocol_version(1);
    for (server, client) in [(lz4(), old()), (old(), lz4())] {
        let b = blobs(server, client).await;
        assert_eq!(b.conn.protocol_version(), 1);
        let (sent, received, echoed) = traffic(&b.conn, b.client.echo(data.clone())).await;
        assert_eq!(echoed.unwrap(), data);
        assert!(sent > SIZE as u64 && received > SIZE as u64);
        let call = b.client.echo(data.clone()).compress(true);
        let (sent, _, echoed) = traffic(&b.conn, call).await;
        assert_eq!(echoed.unwrap(), data);
        assert!(sent > SIZE as u64, "{sent} bytes sent");
    }
}

// ---------------------------------------------------------------------------------------------
// Frames, written from `docs/PROTOCOL.md`.

pub const CALL_PACKED: u8 = 0x81;
pub const ITEM_PACKED: u8 = 0x82;
pub const RESULT_PACKED: u8 = 0x83;

/// The header of the worked example: `Test.echo`, request-response, 30 s, no metadata.
const ECHO_HEADER: [u8; 17] = [
    0x04, 0x54, 0x65, 0x73, 0x74, // "Test"
    0x04, 0x65, 0x63, 0x68, 0x6f, // "echo"
    0x00, // request-response
    0x01, 0x80, 0x87, 0xa7, 0x0e, // Some(30_000_000)
    0x00, // no metadata
];

/// The compressed message of the document's example: the string of 64 `a`s, 65 bytes
/// encoded, as its length and an LZ4 block of two sequences.
const PACKED_AS: [u8; 14] = [
    0x41, // 65 bytes uncompressed
    0x2f, 0x40, 0x61, 0x01, 0x00,
    0x26, // 2 literals "@a", match at offset 1, 4 + 15 + 38 long
    0x60, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, // 6 literals "aaaaaa"
];

/// The plain encoding of a string of `n` `a`s (n < 128).
fn a_string(n: usize) -> Vec<u8> {
    let mut out = vec![n as u8];
    out.extend(std::iter::repeat_n(b'a', n));
    out
}

/// An LZ4 block decoder written from the block format's description.
fn lz4_decode(mut block: &[u8]) -> Vec<u8> {
    fn length(nibble: u8, block: &mut &[u8]) -> usize {
        let mut len = nibble as usize;
        if nibble == 15 {
            loop {
                let (&byte, rest) = block.split_first().unwrap();
                *block = rest;
                len += byte as usize;
                if byte != 255 {
                    break;
                }
            }
        }
        len
    }
    let mut out = Vec::new();
    loop {
        let (&token, rest) = block.split_first().unwrap();
        block = rest;
        let literals = length(token >> 4, &mut block);
        out.extend_from_slice(&block[..literals]);
        block = &block[literals..];
        if block.is_empty() {
            return out;
        }
        let offset = u16::from_le_bytes([block[0], block[1]]) as usize;
        block = &block[2..];
        let len = length(token & 15, &mut block) + 4;
        for _ in 0..len {
            out.push(out[out.len() - offset]);
        }
    }
}

async fn compressing_test_server(min_size: usize) -> (Node, Node, Connection) {
    let builder = Node::builder().compression(Compression::lz4().min_size(min_size));
    pair_with(builder, &probe()).await
}

#[tokio::test]
async fn frames_are_as_the_document_says() {
    assert_eq!(lz4_decode(&PACKED_AS[1..]), a_string(64));
    let (_server, _client, conn) = compressing_test_server(65).await;
    // A CALL with compressed arguments, answered by a compressed RESULT: the 65-byte result
    // is at the threshold.
    let mut payload = ECHO_HEADER.to_vec();
    payload.extend_from_slice(&PACKED_AS);
    let call = frame(CALL_PACKED, &payload);
    assert_eq!(&call[..5], &[0x00, 0x00, 0x00, 0x20, 0x81]);
    let (_, answer) = exchange(&conn, &call, true).await;
    assert_eq!(
        answer,
        [&[0x00, 0x00, 0x00, 0x0f, 0x83][..], &PACKED_AS[..]].concat()
    );
    // One byte under the threshold: plain both ways.
    let mut payload = ECHO_HEADER.to_vec();
    payload.extend(a_string(63));
    let (_, answer) = exchange(&conn, &frame(CALL, &payload), true).await;
    assert_eq!(answer, frame(RESULT, &a_string(63)));
    // A larger message: the frame carries its length, then a block any LZ4 decoder reads.
    let mut payload = ECHO_HEADER.to_vec();
    payload.extend([0xe8, 0x07]);
    payload.extend(std::iter::repeat_n(b'z', 1000));
    let (_, answer) = exchange(&conn, &frame(CALL, &payload), true).await;
    let frames = frames(&answer);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, RESULT_PACKED);
    let mut message = &frames[0].1[..];
    assert_eq!(read_varint(&mut message), 1002);
    assert_eq!(lz4_decode(message), payload[ECHO_HEADER.len()..]);
    assert!(frames[0].1.len() < 100);
}

/// On a version 1 connection the compressed tags are unknown ones.
#[tokio::test]
async fn a_version_1_node_knows_no_compressed_frames() {
    let server = node(Node::builder().serve(TestService { probe: probe() })).await;
    let client = node(Node::builder().protocol_version(1)).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_eq!(conn.protocol_version(), 1);
    let mut payload = ECHO_HEADER.to_vec();
    payload.extend_from_slice(&PACKED_AS);
    let (code, message, _) = expect_status(&conn, &frame(CALL_PACKED, &payload), true).await;
    assert_eq!(code, PROTOCOL, "{message}");
    assert!(message.contains("0x81"), "{message}");
    still_serves(&conn).await;
}

// ---------------------------------------------------------------------------------------------
// A hostile peer.

const LIMIT: usize = 64 * 1024;

async fn limited_server() -> (Node, Node, Connection) {
    pair_with(Node::builder().max_message_size(LIMIT), &probe()).await
}

fn packed_echo(packed: &[u8]) -> Vec<u8> {
    let mut payload = ECHO_HEADER.to_vec();
    payload.extend_from_slice(packed);
    frame(CALL_PACKED, &payload)
}

/// An LZ4 block of one literal and one match of about `255 * n` bytes: a few bytes per
/// 255 decompressed.
fn bomb_block(n: usize) -> Vec<u8> {
    let mut block = vec![0x1f, b'a', 0x01, 0x00];
    block.extend(std::iter::repeat_n(0xff, n));
    block.push(0x00);
    // The last sequence: 5 literals.
    block.extend([0x50, b'a', b'a', b'a', b'a', b'a']);
    block
}

#[tokio::test]
async fn a_compressed_message_over_the_limit_is_refused_before_it_is_decompressed() {
    let (_server, _client, conn) = limited_server().await;
    // Announces 1 GiB: refused from the announcement alone.
    let mut packed = Vec::new();
    varint(&mut packed, 1 << 30);
    packed.extend(bomb_block(16));
    let (code, message, _) = expect_status(&conn, &packed_echo(&packed), true).await;
    assert_eq!(code, MESSAGE_TOO_LARGE, "{message}");
    assert!(message.contains("1073741824"), "{message}");
    still_serves(&conn).await;
    // Announces a small message, but expands far past it (and past the limit): it stops
    // where the announcement ends.
    let mut packed = vec![0x41];
    packed.extend(bomb_block(4000));
    let (code, message, _) = expect_status(&conn, &packed_echo(&packed), true).await;
    assert_eq!(code, PROTOCOL, "{message}");
    still_serves(&conn).await;
}

#[tokio::test]
async fn lying_or_garbage_compressed_messages_fail_their_call_only() {
    let (_server, _client, conn) = limited_server().await;
    // Announces 100 bytes, holds 65.
    let mut lying = PACKED_AS;
    lying[0] = 100;
    // Announces 10 bytes, holds 65.
    let mut short = PACKED_AS;
    short[0] = 10;
    for packed in [
        &lying[..],
        &short[..],
        &[0x41, 0xff, 0xff, 0xff][..],
        &[0x41][..],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[][..],
    ] {
        let (code, message, _) = expect_status(&conn, &packed_echo(packed), true).await;
        assert_eq!(code, PROTOCOL, "{packed:02x?}: {message}");
        still_serves(&conn).await;
    }
    // A well-formed one is served.
    let (_, answer) = exchange(&conn, &packed_echo(&PACKED_AS), true).await;
    assert_eq!(answer, frame(RESULT, &a_string(64)));
}

/// A compressed ITEM is read the same way: over the limit, it fails the stream it came on
/// (its handler sees the error), and the connection goes on.
#[tokio::test]
async fn a_compressed_item_bomb_fails_its_stream() {
    let (_server, _client, conn) = limited_server().await;
    let items_then = |packed: &[u8]| {
        let mut bytes = call(common::SERVICE, "sum", CLIENT_STREAM, &[5]);
        bytes.extend(frame(ITEM_PACKED, &[0x01, 0x10, 0x07]));
        bytes.extend(frame(ITEM_PACKED, packed));
        bytes
    };
    // A good item first (the number 7, compressed as one literal), then the bomb.
    let mut bomb = Vec::new();
    varint(&mut bomb, 1 << 31);
    bomb.extend(bomb_block(16));
    for packed in [bomb, vec![0x01, 0xff], vec![0x05, 0x10, 0x07]] {
        let (send, answer) = exchange(&conn, &items_then(&packed), true).await;
        let frames = frames(&answer);
        assert_eq!(frames.len(), 1, "{frames:02x?}");
        assert_eq!(frames[0].0, RESULT);
        // `Err(message)` of the handler's `Result<u64, String>`.
        assert_eq!(frames[0].1[0], 1, "{frames:02x?}");
        drop(send);
        still_serves(&conn).await;
    }
    // Without the bomb: 5 + 7 + 7.
    let (_, answer) = exchange(&conn, &items_then(&[0x01, 0x10, 0x07]), true).await;
    assert_eq!(answer, frame(RESULT, &[0x00, 19]));
}

/// The decompressed arguments of a call are bounded like the frame that brings them.
#[tokio::test]
async fn arguments_up_to_the_limit_decompress() {
    let (_server, _client, conn) = limited_server().await;
    // The string of 60,000 `a`s: within the limit.
    let mut plain = Vec::new();
    varint(&mut plain, 60_000);
    plain.extend(std::iter::repeat_n(b'a', 60_000));
    let mut packed = Vec::new();
    varint(&mut packed, plain.len() as u64);
    // Four literals (the length and an `a`), a match of the rest at offset 1, 5 literals.
    let mut block = vec![0x4f];
    block.extend_from_slice(&plain[..4]);
    block.extend([0x01, 0x00]);
    let mut rest = plain.len() - 4 - 5 - 19;
    while rest >= 255 {
        block.push(0xff);
        rest -= 255;
    }
    block.push(rest as u8);
    block.extend([0x50, b'a', b'a', b'a', b'a', b'a']);
    assert_eq!(lz4_decode(&block), plain);
    packed.extend(block);
    let (_, answer) = exchange(&conn, &packed_echo(&packed), true).await;
    assert_eq!(answer, frame(RESULT, &plain));
}

/// A callee that answers each call with the next of `answers`, whatever was asked.
async fn hostile_callee(answers: Vec<Vec<u8>>) -> (Node, Connection) {
    let (chain, key, id) = common::raw::ed25519_identity();
    let listener = common::raw::listener(common::raw::server_tls(chain, key));
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let conn = listener.accept().await.unwrap().await.unwrap();
        for answer in answers {
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let (tag, _) = read_frame(&mut recv).await;
            assert_eq!(tag, CALL);
            send.write_all(&answer).await.unwrap();
            send.finish().unwrap();
        }
        conn.closed().await;
        drop(listener);
    });
    let client = node(Node::builder().max_message_size(LIMIT)).await;
    let conn = client.connect(addr, id).await.unwrap();
    assert_eq!(conn.protocol_version(), 2);
    (client, conn)
}

/// A caller reads compressed results with the same bounds: a bad one fails its call, and the
/// next call on the connection is answered.
#[tokio::test]
async fn a_caller_bounds_compressed_results() {
    let mut huge = Vec::new();
    varint(&mut huge, 1 << 30);
    huge.extend(bomb_block(16));
    let mut expanding = vec![0x41];
    expanding.extend(bomb_block(4000));
    let mut lying = PACKED_AS;
    lying[0] = 100;
    let answers = [
        &huge[..],
        &expanding[..],
        &lying[..],
        &[0x41, 0xff, 0xff][..],
        &PACKED_AS[..],
    ];
    let (_client, conn) =
        hostile_callee(answers.iter().map(|a| frame(RESULT_PACKED, a)).collect()).await;
    let ask = || common::echo(&conn, "x");
    let err = ask().await.unwrap_err();
    assert!(
        matches!(err, dep2p_runtime::Error::MessageTooLarge(ref m) if m.contains("1073741824")),
        "{err:?}"
    );
    for _ in 0..3 {
        let err = ask().await.unwrap_err();
        assert!(matches!(err, dep2p_runtime::Error::Protocol(_)), "{err:?}");
    }
    assert_eq!(ask().await.unwrap(), "a".repeat(64));
}

/// `n` bytes that compress only so far: `random` bytes that do not repeat, then zeros, in
/// every 16 (8: to about two thirds; 4: to under half).
fn partly_compressible(n: usize, random: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            if i % 16 >= random {
                return 0;
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as u8
        })
        .collect()
}

/// Messages whose compressed frames are large too take room in the budgets for their
/// decompressed size once, and give it back: with budgets of little more than one message,
/// message after message goes through.
#[tokio::test]
async fn large_compressed_frames_give_their_room_back() {
    let max = 1024 * 1024;
    let tight = || {
        lz4()
            .max_message_size(max)
            .connection_buffer(max + 64 * 1024)
            .memory_budget(max + 64 * 1024)
    };
    let b = blobs(tight(), tight()).await;
    let data = partly_compressible(max - 1024, 8);
    let mirror = async {
        let (mut to, mut from, result) = b.client.mirror().await.unwrap();
        for _ in 0..8 {
            to.send(data.clone()).await.unwrap();
            assert_eq!(from.next().await.unwrap().unwrap(), data);
        }
        to.finish().unwrap();
        assert!(from.next().await.is_none());
        result.await.unwrap()
    };
    let limited = tokio::time::timeout(std::time::Duration::from_secs(60), mirror);
    let (sent, received, n) = traffic(&b.conn, limited).await;
    let n = n.expect("every message through within a minute");
    assert_eq!(n, 8);
    // Compressed, but not by much: each frame is itself a large one.
    let plain = 8 * data.len() as u64;
    assert!(
        sent < plain * 6 / 7 && sent > plain / 2,
        "{sent} of {plain}"
    );
    assert!(
        received < plain * 6 / 7 && received > plain / 2,
        "{received} of {plain}"
    );

    // Several streams at once, whose compressed frames are large but under half their
    // message: however their frames arrive, each takes its room whole or waits holding none,
    // so they all get through.
    let data = partly_compressible(max - 1024, 4);
    // Opened, and served, first: a call that arrives while frames wait for room is refused.
    let mut calls = Vec::new();
    for _ in 0..3 {
        let (mut to, mut from, result) = b.client.mirror().await.unwrap();
        to.send(Vec::new()).await.unwrap();
        assert!(from.next().await.unwrap().unwrap().is_empty());
        calls.push((to, from, result));
    }
    type Mirror = (
        Sender<Vec<u8>>,
        Receiver<Vec<u8>>,
        dep2p_runtime::Response<u32>,
    );
    let data = &data;
    let mirror = |(mut to, mut from, result): Mirror| async move {
        for _ in 0..4 {
            to.send(data.clone()).await.unwrap();
            assert_eq!(&from.next().await.unwrap().unwrap(), data);
        }
        to.finish().unwrap();
        result.await.unwrap() - 1
    };
    let all = futures::future::join_all(calls.into_iter().map(mirror));
    let limited = tokio::time::timeout(std::time::Duration::from_secs(60), all);
    let (sent, _, counts) = traffic(&b.conn, limited).await;
    assert_eq!(
        counts.expect("every stream through within a minute"),
        [4; 3]
    );
    let plain = 12 * data.len() as u64;
    assert!(sent < plain / 2 && sent > plain / 3, "{sent} of {plain}");
}
