//! The serving side's decoders — the frame reader, the call header, the arguments — fed
//! arbitrary streams by a raw peer over real QUIC. Property: every stream is answered with
//! well-formed frames or a stream code, in time, and the connection keeps serving. A fixed
//! seed keeps the runs repeatable.

mod common;

use std::time::Duration;

use common::wire::*;
use common::*;
use dep2p_runtime::quinn;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// One piece of a stream a peer sends: raw bytes, or a frame with an arbitrary tag and
/// payload, or a CALL frame whose header is well formed and whose arguments are arbitrary.
#[derive(Debug, Clone)]
enum Piece {
    Raw(Vec<u8>),
    Frame(u8, Vec<u8>),
    Call(String, u64, Option<u64>, Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    let method = prop_oneof![
        Just("echo".to_string()),
        Just("add".to_string()),
        Just("count".to_string()),
        Just("sum".to_string()),
        Just("upper".to_string()),
        Just("note".to_string()),
        "[a-z]{0,6}",
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Piece::Raw),
        (0u8..6, proptest::collection::vec(any::<u8>(), 0..48))
            .prop_map(|(tag, payload)| Piece::Frame(tag, payload)),
        (
            method,
            0u64..6,
            proptest::option::of(0u64..2_000_000),
            proptest::collection::vec(any::<u8>(), 0..24),
        )
            .prop_map(|(m, kind, timeout, args)| Piece::Call(m, kind, timeout, args)),
    ]
}

fn bytes(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Raw(raw) => out.extend_from_slice(raw),
            Piece::Frame(tag, payload) => out.extend(frame(*tag, payload)),
            Piece::Call(method, kind, timeout, args) => out.extend(frame(
                CALL,
                &call_payload(SERVICE, method, *kind, *timeout, &[], args),
            )),
        }
    }
    out
}

/// Whether `answer` is a well-formed response direction: complete frames, the last one
/// RESULT or STATUS and nothing after it; ITEMs only before it. A bidirectional stream is
/// always answered (or reset): an empty answer is not one.
fn well_formed(answer: &[u8]) -> Result<(), String> {
    let mut rest = answer;
    let mut last = None;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(format!("ends inside a frame head: {rest:02x?}"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len == 0 || rest.len() < 4 + len {
            return Err("a frame of length zero, or cut short".into());
        }
        if last.is_some() {
            return Err("a frame after the final frame".into());
        }
        match rest[4] {
            ITEM => {}
            RESULT | STATUS => last = Some(rest[4]),
            tag => return Err(format!("frame tag {tag:#04x} in an answer")),
        }
        rest = &rest[4 + len..];
    }
    match last {
        Some(_) => Ok(()),
        // A bare FIN reads as a protocol violation to a caller: never the answer.
        None if answer.is_empty() => Err("a bare end without a final frame".into()),
        None => Err("items without a final frame".into()),
    }
}

#[test]
fn arbitrary_streams_are_answered_and_the_connection_survives() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let probe = probe();
    let (_server, _client, conn) = runtime.block_on(pair_with(
        dep2p_runtime::Node::builder().header_timeout(Duration::from_secs(1)),
        &probe,
    ));
    let config = Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x5eed_0007),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (proptest::collection::vec(piece(), 0..5), any::<bool>());
    runner
        .run(&strategy, |(pieces, uni)| {
            let sent = bytes(&pieces);
            let outcome = runtime.block_on(async {
                if uni {
                    let mut send = conn.quic().open_uni().await.unwrap();
                    let _ = send.write_all(&sent).await;
                    let _ = send.finish();
                    // Nothing comes back on a unidirectional stream.
                    return Ok(Ok(None));
                }
                let (mut send, mut recv) = conn.quic().open_bi().await.unwrap();
                let _ = send.write_all(&sent).await;
                let _ = send.finish();
                tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
                    .await
                    .map(|read| read.map(Some))
                    .map_err(|_| "no answer within 5 s".to_string())
            });
            match outcome {
                Err(hang) => Err(TestCaseError::fail(hang)),
                // A reset (the callee gave up on the stream with a code) is an answer too.
                Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))) => Ok(()),
                Ok(Err(other)) => Err(TestCaseError::fail(format!("{other}"))),
                Ok(Ok(None)) => Ok(()),
                Ok(Ok(Some(answer))) => well_formed(&answer).map_err(TestCaseError::fail),
            }
        })
        .unwrap();
    runtime.block_on(async {
        assert!(conn.close_reason().is_none(), "the connection survived");
        still_serves(&conn).await;
    });
}
