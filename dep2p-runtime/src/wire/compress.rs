//! Compression of messages (protocol version 2, `docs/PROTOCOL.md` section 4): the node's
//! [`Compression`] settings, the LZ4 block codec, and the bounded decompression of what a
//! peer sends.
//!
//! A compressed frame is the plain frame's tag with [`PACKED`] set; its message (for a CALL,
//! the arguments after the header) is replaced by the uncompressed length as a varint, then
//! the LZ4 block.

use super::{WireError, FRAME_HEAD, TAG_CALL, TAG_ITEM, TAG_RESULT};

/// The tag bit saying a frame's message is compressed.
pub(crate) const PACKED: u8 = 0x80;
/// A CALL frame whose arguments are compressed.
pub(crate) const TAG_CALL_PACKED: u8 = TAG_CALL | PACKED;
/// An ITEM frame whose message is compressed.
pub(crate) const TAG_ITEM_PACKED: u8 = TAG_ITEM | PACKED;
/// A RESULT frame whose message is compressed.
pub(crate) const TAG_RESULT_PACKED: u8 = TAG_RESULT | PACKED;

/// Which messages a node compresses before sending them, set with
/// [`NodeBuilder::compression`](crate::NodeBuilder::compression).
///
/// Compression only ever applies to connections that speak protocol version 2
/// ([`Connection::protocol_version`](crate::Connection::protocol_version)): a version 1 peer
/// never receives a compressed frame. Receiving needs no setting: every node accepts
/// compressed messages from version 2 peers, whatever it sends itself.
///
/// A message is compressed (with LZ4, block format) when its method has compression on, its
/// encoding is at least [`min_size`](Self::min_size) bytes, and compressing it actually
/// saves bytes; otherwise it goes as it is. Each side decides for what it sends: a caller
/// for its arguments and request stream items, a handler's node for its results and
/// response stream items.
///
/// Default: [`Compression::off`].
///
/// ```no_run
/// # async fn run() -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::{Compression, Node};
///
/// let node = Node::builder()
///     // Every method's messages of 4 KiB or more, except those of `Files.thumbnail`
///     // (already compressed images).
///     .compression(
///         Compression::lz4()
///             .min_size(4096)
///             .method("Files", "thumbnail", false),
///     )
///     .bind("127.0.0.1:0")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    on: bool,
    min_size: usize,
    /// Methods whose setting differs from `on`: service, method, whether compressed.
    methods: Vec<(String, String, bool)>,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::off()
    }
}

impl Compression {
    /// The default [`min_size`](Self::min_size): messages under 1 KiB are sent as they are.
    pub const DEFAULT_MIN_SIZE: usize = 1024;

    /// Compresses nothing (unless [`method`](Self::method) turns it on for some methods).
    /// Compressed messages from peers are still accepted.
    pub fn off() -> Self {
        Compression {
            on: false,
            min_size: Compression::DEFAULT_MIN_SIZE,
            methods: Vec::new(),
        }
    }

    /// Compresses the messages of every method with LZ4 (unless [`method`](Self::method)
    /// turns it off for some), those of at least [`DEFAULT_MIN_SIZE`](Self::DEFAULT_MIN_SIZE) bytes.
    pub fn lz4() -> Self {
        Compression {
            on: true,
            ..Compression::off()
        }
    }

    /// Sets the size, in bytes of the encoded message, under which a message is sent as it
    /// is: compressing small messages costs time and saves little. Default:
    /// [`DEFAULT_MIN_SIZE`](Self::DEFAULT_MIN_SIZE) (1 KiB).
    pub fn min_size(mut self, bytes: usize) -> Self {
        self.min_size = bytes;
        self
    }

    /// Turns compression on or off for the messages of one method, `service.method` (the
    /// names as in the `#[service]` trait), whatever the node's setting for the others. The
    /// last setting for a method wins.
    pub fn method(mut self, service: &str, method: &str, on: bool) -> Self {
        self.methods
            .retain(|(s, m, _)| (s.as_str(), m.as_str()) != (service, method));
        self.methods.push((service.into(), method.into(), on));
        self
    }

    /// Whether some method has a setting of its own, so that [`pack`](Self::pack) needs the
    /// names.
    pub(crate) fn per_method(&self) -> bool {
        !self.methods.is_empty()
    }

    /// How the messages of `service.method` are sent.
    pub(crate) fn pack(&self, service: &str, method: &str) -> Pack {
        let on = self
            .methods
            .iter()
            .find(|(s, m, _)| s == service && m == method)
            .map_or(self.on, |(_, _, on)| *on);
        if on {
            Pack(Some(self.min_size))
        } else {
            Pack::OFF
        }
    }

    /// The size from which messages are compressed, for a call that asks for compression
    /// whatever its method's setting.
    pub(crate) fn forced(&self) -> Pack {
        Pack(Some(self.min_size))
    }
}

/// Whether, and from which size, the messages of one call direction are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pack(Option<usize>);

impl Pack {
    /// Nothing is compressed.
    pub(crate) const OFF: Pack = Pack(None);

    /// Whether a message of `size` bytes is worth trying to compress.
    fn wants(self, size: usize) -> bool {
        matches!(self.0, Some(min) if size >= min && size > 0)
    }
}

/// A buffer a frame is encoded into.
pub(crate) trait FrameBuf: AsMut<[u8]> {
    fn len(&self) -> usize;
    fn resize(&mut self, len: usize);
    fn truncate(&mut self, len: usize);
}

impl FrameBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn resize(&mut self, len: usize) {
        Vec::resize(self, len, 0);
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
}

impl FrameBuf for bytes::BytesMut {
    fn len(&self) -> usize {
        bytes::BytesMut::len(self)
    }
    fn resize(&mut self, len: usize) {
        bytes::BytesMut::resize(self, len, 0);
    }
    fn truncate(&mut self, len: usize) {
        bytes::BytesMut::truncate(self, len);
    }
}

/// Compresses, in place, the frame that starts at `start` in `buf` and runs to its end, if
/// `pack` asks for it and it saves bytes: the message after the frame's head and `skip`
/// further bytes (a CALL's header) becomes the varint uncompressed length and the LZ4 block,
/// the tag gets [`PACKED`], and the length is patched. Otherwise the frame stays as it is.
pub(crate) fn pack_frame<B: FrameBuf>(buf: &mut B, start: usize, skip: usize, pack: Pack) {
    let body = start + FRAME_HEAD + skip;
    let end = buf.len();
    let plain = end - body;
    if !pack.wants(plain) {
        return;
    }
    let mut prefix = [0u8; 5];
    // The message fits in u32: the node's limit keeps it below 2^32 - 1.
    let prefix_len = put_varint(plain as u32, &mut prefix);
    buf.resize(end + lz4_flex::block::get_maximum_output_size(plain));
    let (message, out) = buf.as_mut().split_at_mut(end);
    let packed = match lz4_flex::block::compress_into(&message[body..], out) {
        Ok(n) if prefix_len + n < plain => n,
        _ => return buf.truncate(end),
    };
    let bytes = buf.as_mut();
    bytes.copy_within(end..end + packed, body + prefix_len);
    bytes[body..body + prefix_len].copy_from_slice(&prefix[..prefix_len]);
    let new_end = body + prefix_len + packed;
    // Shorter than before, so it still fits in u32.
    let len = (new_end - start - FRAME_HEAD + 1) as u32;
    bytes[start..start + 4].copy_from_slice(&len.to_be_bytes());
    bytes[start + 4] |= PACKED;
    buf.truncate(new_end);
}

/// Writes `value` as a LEB128 varint (as postcard writes a `u32`); returns its length.
fn put_varint(mut value: u32, out: &mut [u8; 5]) -> usize {
    let mut i = 0;
    while value >= 0x80 {
        out[i] = (value as u8) | 0x80;
        value >>= 7;
        i += 1;
    }
    out[i] = value as u8;
    i + 1
}

/// Reads the uncompressed length at the start of a compressed message and checks it
/// against `max_message` before anything is allocated for it. Returns the length and the
/// bytes the varint takes.
pub(crate) fn unpacked_len(packed: &[u8], max_message: usize) -> Result<(usize, usize), WireError> {
    let mut value: u64 = 0;
    for (i, byte) in packed.iter().take(5).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > u64::from(u32::MAX) {
                break;
            }
            // At most u32::MAX: fits in usize on every platform this crate builds for.
            let len = value as usize;
            if len > max_message {
                return Err(WireError::MessageTooLarge(format!(
                    "compressed message of {len} bytes announced, the limit is {max_message}"
                )));
            }
            return Ok((len, i + 1));
        }
    }
    Err(WireError::Protocol(
        "compressed message without a valid length".into(),
    ))
}

/// Decompresses the LZ4 block `block` into `out`, which must come out exactly filled: the
/// block can write nothing beyond it.
pub(crate) fn unpack_into(block: &[u8], out: &mut [u8]) -> Result<(), WireError> {
    match lz4_flex::block::decompress_into(block, out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(n) => Err(WireError::Protocol(format!(
            "compressed message of {} bytes announced, {n} decompressed",
            out.len()
        ))),
        Err(e) => Err(WireError::Protocol(format!(
            "undecodable compressed message: {e}"
        ))),
    }
}

/// Decompresses a whole compressed message, within `max_message`.
#[cfg(test)]
pub(crate) fn unpack(packed: &[u8], max_message: usize) -> Result<Vec<u8>, WireError> {
    let (len, skip) = unpacked_len(packed, max_message)?;
    let mut out = vec![0; len];
    unpack_into(&packed[skip..], &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, message: &[u8]) -> Vec<u8> {
        let mut buf = ((message.len() + 1) as u32).to_be_bytes().to_vec();
        buf.push(tag);
        buf.extend_from_slice(message);
        buf
    }

    #[test]
    fn a_compressible_message_is_packed_and_comes_back() {
        let message = vec![7u8; 5000];
        let mut buf = frame(TAG_ITEM, &message);
        pack_frame(&mut buf, 0, 0, Compression::lz4().pack("S", "m"));
        assert_eq!(buf[4], TAG_ITEM_PACKED);
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert_eq!(len, buf.len() - 4);
        assert!(buf.len() < 100, "{} bytes", buf.len());
        // 5000 as a varint.
        assert_eq!(&buf[5..7], &[0x88, 0x27]);
        assert_eq!(unpack(&buf[5..], 5000).unwrap(), message);
    }

    #[test]
    fn small_incompressible_or_switched_off_messages_stay_plain() {
        let small = frame(TAG_ITEM, &[7u8; 1000]);
        let mut buf = small.clone();
        pack_frame(&mut buf, 0, 0, Compression::lz4().pack("S", "m"));
        assert_eq!(buf, small);
        // Bytes that do not repeat do not shrink.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let plain = frame(TAG_RESULT, &noise);
        let mut buf = plain.clone();
        pack_frame(
            &mut buf,
            0,
            0,
            Compression::lz4().min_size(0).pack("S", "m"),
        );
        assert_eq!(buf, plain);
        let big = frame(TAG_ITEM, &[7u8; 5000]);
        let mut buf = big.clone();
        let settings = Compression::lz4().method("S", "m", false);
        pack_frame(&mut buf, 0, 0, settings.pack("S", "m"));
        assert_eq!(buf, big);
        pack_frame(&mut buf, 0, 0, settings.pack("S", "other"));
        assert_eq!(buf[4], TAG_ITEM_PACKED);
        let only = Compression::off().method("S", "m", true);
        assert_eq!(only.pack("S", "other"), Pack::OFF);
        assert_ne!(only.pack("S", "m"), Pack::OFF);
    }

    #[test]
    fn a_call_keeps_its_header_plain_and_a_queue_its_earlier_frames() {
        let mut message = b"HEADER".to_vec();
        message.extend_from_slice(&[1u8; 3000]);
        let mut buf = b"earlier".to_vec();
        buf.extend_from_slice(&frame(TAG_CALL, &message));
        pack_frame(&mut buf, 7, 6, Compression::lz4().pack("S", "m"));
        assert_eq!(&buf[..7], b"earlier");
        assert_eq!(buf[11], TAG_CALL_PACKED);
        assert_eq!(&buf[12..18], b"HEADER");
        assert_eq!(unpack(&buf[18..], 3000).unwrap(), vec![1u8; 3000]);
    }

    #[test]
    fn lengths_are_checked_before_anything_is_allocated() {
        let mut buf = frame(TAG_ITEM, &[0u8; 70_000]);
        pack_frame(&mut buf, 0, 0, Compression::lz4().pack("S", "m"));
        assert!(matches!(
            unpack(&buf[5..], 69_999),
            Err(WireError::MessageTooLarge(_))
        ));
        // A varint over u32, one that never ends, and none at all.
        for bad in [&[0xff, 0xff, 0xff, 0xff, 0x7f][..], &[0x80; 6][..], &[][..]] {
            assert!(matches!(
                unpacked_len(bad, usize::MAX),
                Err(WireError::Protocol(_))
            ));
        }
        // A block that decompresses to more, or less, than announced.
        let packed = &buf[5..];
        let (len, skip) = unpacked_len(packed, usize::MAX).unwrap();
        let mut short = vec![0; len - 1];
        assert!(unpack_into(&packed[skip..], &mut short).is_err());
        let mut long = vec![0; len + 1];
        assert!(unpack_into(&packed[skip..], &mut long).is_err());
        assert!(unpack_into(&[0xff, 1, 2], &mut [0; 10]).is_err());
    }
}
