//! The wire format written from `docs/PROTOCOL.md`, and helpers to speak it on raw QUIC
//! streams of a real connection.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use dep2p_runtime::quinn;
use dep2p_runtime::Connection;

// ---------------------------------------------------------------------------------------------
// The wire format, written from the document.

pub const CALL: u8 = 0x01;
pub const ITEM: u8 = 0x02;
pub const RESULT: u8 = 0x03;
pub const STATUS: u8 = 0x04;

pub const UNARY: u64 = 0;
pub const NOTIFY: u64 = 1;
pub const SERVER_STREAM: u64 = 2;
pub const CLIENT_STREAM: u64 = 3;
pub const BIDI: u64 = 4;

pub const CANCELLED: u64 = 1;
pub const DEADLINE_EXCEEDED: u64 = 2;
pub const UNKNOWN_SERVICE: u64 = 3;
pub const UNKNOWN_METHOD: u64 = 4;
pub const DECODE: u64 = 5;
pub const MESSAGE_TOO_LARGE: u64 = 6;
pub const SHUTTING_DOWN: u64 = 8;
pub const OVERLOADED: u64 = 9;
pub const PROTOCOL: u64 = 10;

pub const STREAM_CANCELLED: u32 = 0x1;
pub const STREAM_REFUSED: u32 = 0x2;
pub const STREAM_PROTOCOL: u32 = 0x3;

/// The worked example of the document: `Test.echo("hi")`, request-response, 30 s, no metadata.
pub const WORKED_CALL: [u8; 25] = [
    0x00, 0x00, 0x00, 0x15, 0x01, // length 21, CALL
    0x04, 0x54, 0x65, 0x73, 0x74, // "Test"
    0x04, 0x65, 0x63, 0x68, 0x6f, // "echo"
    0x00, // request-response
    0x01, 0x80, 0x87, 0xa7, 0x0e, // Some(30_000_000)
    0x00, // no metadata
    0x02, 0x68, 0x69, // ("hi",)
];
pub const WORKED_RESULT: [u8; 8] = [0x00, 0x00, 0x00, 0x04, 0x03, 0x02, 0x68, 0x69];

pub fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

pub fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn str_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, s);
    out
}

pub fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.push(tag);
    out.extend_from_slice(payload);
    out
}

/// The CALL payload: the header fields in order, then the encoded arguments.
pub fn call_payload(
    service: &str,
    method: &str,
    kind: u64,
    timeout_us: Option<u64>,
    metadata: &[(&str, &str)],
    args: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, service);
    string(&mut out, method);
    varint(&mut out, kind);
    match timeout_us {
        None => out.push(0),
        Some(us) => {
            out.push(1);
            varint(&mut out, us);
        }
    }
    varint(&mut out, metadata.len() as u64);
    for (key, value) in metadata {
        string(&mut out, key);
        string(&mut out, value);
    }
    out.extend_from_slice(args);
    out
}

pub fn call(service: &str, method: &str, kind: u64, args: &[u8]) -> Vec<u8> {
    frame(
        CALL,
        &call_payload(service, method, kind, Some(5_000_000), &[], args),
    )
}

pub fn read_varint(bytes: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = bytes.split_first().expect("truncated varint");
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint too long")
}

/// Splits a finished direction of a stream into frames; the bytes must end on a frame boundary.
pub fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(
            bytes.len() >= 5,
            "stream ended inside a frame head: {bytes:02x?}"
        );
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(len >= 1, "zero-length frame");
        assert!(bytes.len() >= 4 + len, "stream ended inside a frame");
        out.push((bytes[4], bytes[5..4 + len].to_vec()));
        bytes = &bytes[4 + len..];
    }
    out
}

/// The code and message of a STATUS payload.
pub fn status(payload: &[u8]) -> (u64, String) {
    let mut rest = payload;
    let code = read_varint(&mut rest);
    let len = read_varint(&mut rest) as usize;
    assert_eq!(rest.len(), len, "STATUS payload is code + message exactly");
    (
        code,
        String::from_utf8(rest.to_vec()).expect("UTF-8 message"),
    )
}

// ---------------------------------------------------------------------------------------------
// Talking to the peer under test.

pub const WAIT: Duration = Duration::from_secs(3);

/// Opens a bidirectional stream, writes `bytes` (finishing the stream if `finish`), and reads
/// the whole answer.
pub async fn exchange(
    conn: &Connection,
    bytes: &[u8],
    finish: bool,
) -> (quinn::SendStream, Vec<u8>) {
    let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    let answer = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .expect("an answer in time")
        .expect("a finished answer, not a reset");
    (send, answer)
}

/// The single STATUS frame that answers `bytes`.
pub async fn expect_status(
    conn: &Connection,
    bytes: &[u8],
    finish: bool,
) -> (u64, String, quinn::SendStream) {
    let (send, answer) = exchange(conn, bytes, finish).await;
    let frames = frames(&answer);
    assert_eq!(frames.len(), 1, "one frame: {frames:02x?}");
    assert_eq!(frames[0].0, STATUS, "a STATUS frame: {frames:02x?}");
    let (code, message) = status(&frames[0].1);
    (code, message, send)
}

/// The code of the STOP_SENDING the peer sent on `send`.
pub async fn stop_code(send: &quinn::SendStream) -> Option<u32> {
    let stopped = tokio::time::timeout(WAIT, send.stopped())
        .await
        .expect("stopped in time");
    stopped
        .expect("stream not lost")
        .map(|code| u32::try_from(code.into_inner()).unwrap())
}

/// The connection still serves a well-formed call.
pub async fn still_serves(conn: &Connection) {
    let (_, answer) = exchange(conn, &WORKED_CALL, true).await;
    assert_eq!(answer, WORKED_RESULT);
}

/// Reads one frame from an open stream.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    tokio::time::timeout(WAIT, recv.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len - 1];
    tokio::time::timeout(WAIT, recv.read_exact(&mut payload))
        .await
        .unwrap()
        .unwrap();
    (head[4], payload)
}
