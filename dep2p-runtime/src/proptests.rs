//! Property-based tests of every decoder of what a peer sends: none panics on any input,
//! and each gives back what the matching encoder wrote. A fixed seed and a case count a CI
//! run affords keep the runs repeatable.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use crate::id::NodeId;
use crate::wire::{self, CallHeader, HeaderLimits, Kind, StatusCode, FRAME_HEAD, TAG_CALL};

fn config() -> Config {
    Config {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x00de_b2b0),
        failure_persistence: None,
        ..Config::default()
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Unary),
        Just(Kind::Notify),
        Just(Kind::ServerStream),
        Just(Kind::ClientStream),
        Just(Kind::Bidi),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn call_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = wire::decode_call(&Bytes::from(bytes), &HeaderLimits::default());
    }

    #[test]
    fn call_headers_round_trip(
        service in "[a-zA-Z0-9_.]{0,40}",
        method in "[a-zA-Z0-9_]{0,40}",
        kind in kind(),
        timeout_us in proptest::option::of(any::<u64>()),
        metadata in proptest::collection::vec(("[a-z-]{0,16}", ".{0,32}"), 0..8),
        args in any::<(u32, String)>(),
    ) {
        let header = CallHeader {
            service: &service,
            method: &method,
            kind,
            timeout_us,
            metadata: &metadata,
        };
        let (limits, off) = (HeaderLimits::default(), wire::Pack::OFF);
        let frame = wire::encode_call(&header, &args, usize::MAX >> 1, &limits, off).unwrap();
        prop_assert_eq!(frame[4], TAG_CALL);
        let payload = frame.slice(FRAME_HEAD..);
        let (decoded, rest) = wire::decode_call(&payload, &HeaderLimits::default()).unwrap();
        prop_assert_eq!(decoded.service(), service.as_str());
        prop_assert_eq!(decoded.method(), method.as_str());
        prop_assert_eq!(decoded.kind, kind);
        prop_assert_eq!(decoded.timeout_us, timeout_us);
        let entries: Vec<(&str, &str)> = decoded.metadata().collect();
        let sent: Vec<(&str, &str)> =
            metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(entries, sent);
        prop_assert_eq!(wire::decode::<(u32, String)>(&rest).unwrap(), args);
    }

    #[test]
    fn statuses_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = wire::decode_status(&bytes);
        let _ = crate::Error::from_status_payload(&bytes);
    }

    #[test]
    fn statuses_round_trip(code in 1u16..=11, message in ".{0,300}") {
        let code = StatusCode::from_u16(code).unwrap();
        let frame = wire::encode_status(code, &message);
        let status = wire::decode_status(&frame[FRAME_HEAD..]).unwrap();
        prop_assert_eq!(status.code, code as u16);
        prop_assert_eq!(status.message, message);
    }

    #[test]
    fn messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = wire::decode::<(String, u64, Vec<u8>, Option<i32>)>(&bytes);
        let _ = wire::decode::<(NodeId, [u8; 4])>(&bytes);
    }

    #[test]
    fn node_ids_never_panic(text in ".{0,60}") {
        let _ = text.parse::<NodeId>();
    }

    #[test]
    fn node_ids_round_trip(bytes in any::<[u8; 32]>()) {
        let id = NodeId::from_bytes(bytes);
        prop_assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        prop_assert_eq!(id.to_string().to_uppercase().parse::<NodeId>().unwrap(), id);
        let encoded = postcard::to_allocvec(&id).unwrap();
        prop_assert_eq!(encoded.len(), 32);
        prop_assert_eq!(wire::decode::<NodeId>(&encoded).unwrap(), id);
    }

    #[test]
    fn key_files_never_panic(text in ".{0,200}") {
        let _ = crate::SecretKey::from_pem(&text);
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{text}\n-----END PRIVATE KEY-----\n");
        let _ = crate::SecretKey::from_pem(&pem);
    }

    #[test]
    fn node_addrs_never_panic(
        text in "[a-z2-7]{52}@[0-9a-z:.,\\[\\]%-]{0,60}",
        other in ".{0,80}",
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let _ = text.parse::<crate::NodeAddr>();
        let _ = other.parse::<crate::NodeAddr>();
        let _ = wire::decode::<crate::NodeAddr>(&bytes);
    }

    #[test]
    fn node_addrs_round_trip(
        bytes in any::<[u8; 32]>(),
        addrs in proptest::collection::vec(any::<std::net::SocketAddr>(), 0..6),
        hosts in proptest::collection::vec("[a-z][a-z0-9-]{0,10}(\\.[a-z]{1,5}){0,2}:[0-9]{1,4}", 0..6),
    ) {
        let mut addr = crate::NodeAddr::new(NodeId::from_bytes(bytes));
        for a in addrs {
            addr = addr.with_addr(a);
        }
        for h in &hosts {
            addr = addr.with_host(h).unwrap();
        }
        prop_assert_eq!(addr.to_string().parse::<crate::NodeAddr>().unwrap(), addr.clone());
        let encoded = postcard::to_allocvec(&addr).unwrap();
        prop_assert_eq!(wire::decode::<crate::NodeAddr>(&encoded).unwrap(), addr);
    }
}
