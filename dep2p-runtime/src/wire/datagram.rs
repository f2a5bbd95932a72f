//! The datagram format (`docs/PROTOCOL.md`, section "Datagrams", version 2): one QUIC DATAGRAM
//! frame carries one call of a `#[datagram]` method.

use bytes::Bytes;
use serde::Serialize;

use super::WireError;

/// The first byte of every dep2p datagram: the format, so that a later one can be told apart.
pub(crate) const DATAGRAM_FORMAT: u8 = 0x01;

/// The identifier of a datagram method on the wire: the 32-bit FNV-1a hash of the UTF-8 bytes
/// of `service`, a `/`, and `method` (the wire names both sides use).
pub(crate) fn method_id(service: &str, method: &str) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let bytes = service.bytes().chain([b'/']).chain(method.bytes());
    bytes.fold(OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// The fields before a datagram's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DatagramHead {
    /// [`method_id`] of the method called.
    pub(crate) method: u32,
    /// The sender's count of datagrams sent for this method on this connection, from 0.
    pub(crate) sequence: u64,
    /// Microseconds from the sender's reference instant for the connection to the sending.
    pub(crate) sent_us: u64,
}

fn varint_len(value: u64) -> usize {
    // 7 bits per byte, at least one byte.
    (64 - value.leading_zeros() as usize).div_ceil(7).max(1)
}

fn encode_err(err: postcard::Error) -> WireError {
    WireError::Decode(format!("could not encode: {err}"))
}

/// Encodes one datagram: the format byte, the method id (4 bytes, big-endian), the sequence
/// and the send time (postcard varints), then the postcard-encoded arguments. Fails, before
/// allocating, if the whole exceeds `max` bytes.
pub(crate) fn encode_datagram<A: Serialize + ?Sized>(
    head: &DatagramHead,
    args: &A,
    max: usize,
) -> Result<Bytes, WireError> {
    let head_len = 5 + varint_len(head.sequence) + varint_len(head.sent_us);
    let size = head_len + postcard::experimental::serialized_size(args).map_err(encode_err)?;
    if size > max {
        return Err(WireError::MessageTooLarge(format!(
            "a datagram of {size} bytes ({head_len} of them its header) does not fit the path's \
             current maximum datagram size of {max} bytes"
        )));
    }
    let mut buf = Vec::with_capacity(size);
    buf.push(DATAGRAM_FORMAT);
    buf.extend_from_slice(&head.method.to_be_bytes());
    let buf = postcard::to_extend(&head.sequence, buf).map_err(encode_err)?;
    let buf = postcard::to_extend(&head.sent_us, buf).map_err(encode_err)?;
    let buf = postcard::to_extend(args, buf).map_err(encode_err)?;
    Ok(Bytes::from(buf))
}

/// Splits a received datagram into its head and its (still encoded) arguments.
pub(crate) fn decode_datagram(datagram: &[u8]) -> Result<(DatagramHead, &[u8]), WireError> {
    let bad = |what: &str| WireError::Protocol(format!("malformed datagram: {what}"));
    let (&format, rest) = datagram.split_first().ok_or_else(|| bad("empty"))?;
    if format != DATAGRAM_FORMAT {
        return Err(bad(&format!("unknown format {format:#04x}")));
    }
    let (id, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("no method id"))?;
    let (sequence, rest) =
        postcard::take_from_bytes::<u64>(rest).map_err(|_| bad("no sequence number"))?;
    let (sent_us, rest) =
        postcard::take_from_bytes::<u64>(rest).map_err(|_| bad("no send time"))?;
    let head = DatagramHead {
        method: u32::from_be_bytes(*id),
        sequence,
        sent_us,
    };
    Ok((head, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_id_is_fnv1a_of_service_slash_method() {
        // FNV-1a 32 of "a/b", computed by hand from the published constants.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in b"a/b" {
            hash = (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193);
        }
        assert_eq!(method_id("a", "b"), hash);
        // The example docs/PROTOCOL.md gives.
        assert_eq!(method_id("a", "b"), 0x3a8e_75c1);
        assert_ne!(method_id("ab", "c"), method_id("a", "bc"));
    }

    #[test]
    fn a_datagram_round_trips_and_is_sized_exactly() {
        let head = DatagramHead {
            method: 0xdead_beef,
            sequence: 300,
            sent_us: 5,
        };
        let bytes = encode_datagram(&head, &(7u8, "hi"), 1200).unwrap();
        assert_eq!(&bytes[..5], &[1, 0xde, 0xad, 0xbe, 0xef]);
        let (got, args) = decode_datagram(&bytes).unwrap();
        assert_eq!(got, head);
        assert_eq!(args, &[7, 2, b'h', b'i']);
        let exact = bytes.len();
        assert!(encode_datagram(&head, &(7u8, "hi"), exact).is_ok());
        let err = encode_datagram(&head, &(7u8, "hi"), exact - 1).unwrap_err();
        assert!(
            matches!(err, WireError::MessageTooLarge(m) if m.contains(&format!("{}", exact - 1)))
        );
    }

    #[test]
    fn malformed_datagrams_are_refused() {
        for bad in [
            &[][..],
            &[2, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0],
            &[1, 0, 0, 0, 0, 0x80],
        ] {
            assert!(decode_datagram(bad).is_err(), "{bad:?}");
        }
    }
}
