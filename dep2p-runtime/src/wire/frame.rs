//! The frame format: frames, the call header, status and error codes. `docs/PROTOCOL.md` is the
//! normative description; the constants here are the ones it names.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::compress::{pack_frame, Pack};
use super::{CallHeader, HeaderLimits, WireError};

/// ALPN identifier of the newest protocol version this crate speaks, `dep2p/2`.
///
/// A node offers every version it speaks, newest first, and the listener picks the first of
/// its own list the dialer offered; the version then holds for the whole connection
/// (`docs/PROTOCOL.md`, section 1). [`Connection::protocol_version`](crate::Connection::protocol_version)
/// tells which one a connection speaks.
pub const ALPN: &[u8] = b"dep2p/2";

/// ALPN identifier of protocol version 1, `dep2p/1`, which this crate still speaks with older
/// peers.
pub const ALPN_V1: &[u8] = b"dep2p/1";

/// The newest protocol version, the default a node offers.
pub(crate) const VERSION_NEWEST: u8 = 2;

/// The ALPN identifiers a node speaking versions 1 to `newest` offers, newest first.
pub(crate) fn alpn_protocols(newest: u8) -> Vec<Vec<u8>> {
    (1..=newest.min(VERSION_NEWEST))
        .rev()
        .map(|version| format!("dep2p/{version}").into_bytes())
        .collect()
}

/// The protocol version an ALPN identifier names, if this crate speaks it.
pub(crate) fn alpn_version(alpn: &[u8]) -> Option<u8> {
    match alpn {
        ALPN => Some(2),
        ALPN_V1 => Some(1),
        _ => None,
    }
}

/// Frame tags.
pub(crate) const TAG_CALL: u8 = 0x01;
pub(crate) const TAG_ITEM: u8 = 0x02;
pub(crate) const TAG_RESULT: u8 = 0x03;
pub(crate) const TAG_STATUS: u8 = 0x04;
/// Version 2: the callee's response metadata, before its first ITEM or final frame.
pub(crate) const TAG_HEADERS: u8 = 0x05;
/// Version 2: the callee's trailing metadata, right before its final frame.
pub(crate) const TAG_TRAILERS: u8 = 0x06;

/// Bytes before a frame's payload: a 4-byte big-endian length, then the tag.
pub(crate) const FRAME_HEAD: usize = 5;

/// Stream error codes (RESET_STREAM and STOP_SENDING).
pub(crate) const STREAM_CANCELLED: u32 = 0x01;
pub(crate) const STREAM_REFUSED: u32 = 0x02;
pub(crate) const STREAM_PROTOCOL: u32 = 0x03;

/// Connection close codes.
pub(crate) const CLOSE_NORMAL: u32 = 0x00;
pub(crate) const CLOSE_SHUTDOWN: u32 = 0x01;
/// The handshake completed when the listener had no room for another connection.
pub(crate) const CLOSE_REFUSED: u32 = 0x02;
/// Closed by its dialer as a duplicate: another connection between the same two nodes is kept.
pub(crate) const CLOSE_DUPLICATE: u32 = 0x03;

/// The kind of a call, sent in its header so both sides agree on the stream's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Kind {
    /// One request, one response.
    Unary = 0,
    /// One request, no response (on a unidirectional stream).
    Notify = 1,
    /// One request, a stream of responses.
    ServerStream = 2,
    /// A stream of requests, one response.
    ClientStream = 3,
    /// Both directions stream.
    Bidi = 4,
    /// One unreliable, unordered QUIC datagram, no response (`#[datagram]`). Never in a call
    /// header: a CALL frame of this kind is refused.
    Datagram = 5,
}

impl Kind {
    /// The kind's name, as logs and metrics label it: `"request-response"`, `"notification"`,
    /// `"server-streaming"`, `"client-streaming"` or `"bidirectional-streaming"`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Unary => "request-response",
            Kind::Notify => "notification",
            Kind::ServerStream => "server-streaming",
            Kind::ClientStream => "client-streaming",
            Kind::Bidi => "bidirectional-streaming",
            Kind::Datagram => "datagram",
        }
    }
}

/// Status codes carried in a STATUS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum StatusCode {
    Cancelled = 1,
    DeadlineExceeded = 2,
    UnknownService = 3,
    UnknownMethod = 4,
    Decode = 5,
    MessageTooLarge = 6,
    HandlerFailed = 7,
    ShuttingDown = 8,
    Overloaded = 9,
    Protocol = 10,
    IdleTimeout = 11,
    PermissionDenied = 12,
}

impl StatusCode {
    pub(crate) fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1 => StatusCode::Cancelled,
            2 => StatusCode::DeadlineExceeded,
            3 => StatusCode::UnknownService,
            4 => StatusCode::UnknownMethod,
            5 => StatusCode::Decode,
            6 => StatusCode::MessageTooLarge,
            7 => StatusCode::HandlerFailed,
            8 => StatusCode::ShuttingDown,
            9 => StatusCode::Overloaded,
            10 => StatusCode::Protocol,
            11 => StatusCode::IdleTimeout,
            12 => StatusCode::PermissionDenied,
            _ => return None,
        })
    }
}

/// The payload of a STATUS frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) code: u16,
    pub(crate) message: String,
}

/// Starts a frame of `payload` bytes: room for all of it, the length (patched by [`end`])
/// and the tag. Fails before allocating if the payload exceeds the limit.
fn begin(tag: u8, payload: usize, max_message: usize) -> Result<Vec<u8>, WireError> {
    if payload > max_message {
        return Err(WireError::MessageTooLarge(format!(
            "{payload} bytes to send, the limit is {max_message}"
        )));
    }
    let mut buf = Vec::with_capacity(FRAME_HEAD + payload);
    buf.extend_from_slice(&[0, 0, 0, 0, tag]);
    Ok(buf)
}

/// Completes a frame begun with [`begin`].
fn end(mut buf: Vec<u8>) -> Bytes {
    // The payload fits in u32: `begin` checked it against the limit, which the node's
    // configuration keeps below 2^32 - 1.
    let len = (buf.len() - FRAME_HEAD + 1) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    // Sized exactly, so the conversion takes the vector as it is. (A compressed frame was
    // encoded plain first: its spare room goes.)
    buf.shrink_to_fit();
    Bytes::from(buf)
}

/// A postcard output that appends to a buffer (the room is reserved beforehand).
struct Append<'a>(&'a mut bytes::BytesMut);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.extend_from_slice(&[data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn encode_err(err: postcard::Error) -> WireError {
    WireError::Decode(format!("could not encode: {err}"))
}

/// Encodes one frame holding `value`.
pub(crate) fn encode<T: Serialize + ?Sized>(
    tag: u8,
    value: &T,
    max_message: usize,
) -> Result<Bytes, WireError> {
    let size = postcard::experimental::serialized_size(value).map_err(encode_err)?;
    let buf = postcard::to_extend(value, begin(tag, size, max_message)?).map_err(encode_err)?;
    Ok(end(buf))
}

/// [`encode`] within `max_message`, compressed as `pack` asks (and only if that saves bytes).
pub(crate) fn packed<T: Serialize + ?Sized>(
    tag: u8,
    value: &T,
    (max_message, pack): (usize, Pack),
) -> Result<Bytes, WireError> {
    let size = postcard::experimental::serialized_size(value).map_err(encode_err)?;
    let mut buf = postcard::to_extend(value, begin(tag, size, max_message)?).map_err(encode_err)?;
    pack_frame(&mut buf, 0, 0, pack);
    Ok(end(buf))
}

/// Appends one frame holding `value` to `frames`, sized exactly and compressed as `pack` asks,
/// or leaves `frames` as it was.
pub(crate) fn encode_into<T: Serialize>(
    frames: &mut bytes::BytesMut,
    tag: u8,
    value: &T,
    max: usize,
    pack: Pack,
) -> Result<(), WireError> {
    let size = postcard::experimental::serialized_size(value).map_err(encode_err)?;
    if size > max {
        return Err(WireError::MessageTooLarge(format!(
            "{size} bytes to send, the limit is {max}"
        )));
    }
    let start = frames.len();
    frames.reserve(FRAME_HEAD + size);
    frames.extend_from_slice(&[0, 0, 0, 0, tag]);
    // Written where it goes, without zeroing the room first; the length is the one written.
    let written = postcard::serialize_with_flavor(value, Append(frames))
        .map_err(encode_err)
        .and_then(|()| {
            let written = frames.len() - start - FRAME_HEAD;
            if written > max {
                return Err(WireError::MessageTooLarge(format!(
                    "{written} bytes to send, the limit is {max}"
                )));
            }
            Ok(written)
        });
    let written = match written {
        Ok(written) => written,
        Err(err) => {
            frames.truncate(start);
            return Err(err);
        }
    };
    // `written + 1` fits in u32: `max` is kept below 2^32 - 1 by the node's configuration.
    frames[start..start + 4].copy_from_slice(&((written + 1) as u32).to_be_bytes());
    pack_frame(frames, start, 0, pack);
    Ok(())
}

/// Encodes the CALL frame: the header immediately followed by the arguments, which are
/// compressed as `pack` asks. Fails, before allocating, if the header breaks one of `limits`
/// or the whole exceeds the message limit.
pub(crate) fn encode_call<A: Serialize>(
    header: &CallHeader<'_>,
    args: &A,
    max_message: usize,
    limits: &HeaderLimits,
    pack: Pack,
) -> Result<Bytes, WireError> {
    let header_size = header.check(limits)?;
    let size = header_size + postcard::experimental::serialized_size(args).map_err(encode_err)?;
    let buf =
        postcard::to_extend(header, begin(TAG_CALL, size, max_message)?).map_err(encode_err)?;
    let mut buf = postcard::to_extend(args, buf).map_err(encode_err)?;
    pack_frame(&mut buf, 0, header_size, pack);
    Ok(end(buf))
}

/// Encodes a STATUS frame. Never fails: the message is cut to fit.
pub(crate) fn encode_status(code: StatusCode, message: &str) -> Bytes {
    let mut message = message.to_string();
    if message.len() > 1024 {
        let mut cut = 1024;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let status = Status {
        code: code as u16,
        message,
    };
    encode(TAG_STATUS, &status, usize::MAX >> 1).unwrap_or_default()
}

/// Decodes a message payload.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    match postcard::take_from_bytes(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(WireError::Decode(format!(
            "{} bytes left over after the message",
            rest.len()
        ))),
        Err(e) => Err(WireError::Decode(e.to_string())),
    }
}

/// Decodes a STATUS frame payload.
pub(crate) fn decode_status(payload: &[u8]) -> Result<Status, WireError> {
    match postcard::take_from_bytes::<Status>(payload) {
        Ok((status, [])) => Ok(status),
        Ok((_, rest)) => Err(WireError::Protocol(format!(
            "{} bytes after the status",
            rest.len()
        ))),
        Err(e) => Err(WireError::Protocol(format!("undecodable status: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_followed_by_bytes_is_refused() {
        let frame = encode_status(StatusCode::Overloaded, "busy");
        let payload = &frame[FRAME_HEAD..];
        let status = decode_status(payload).unwrap();
        assert_eq!((status.code, status.message.as_str()), (9, "busy"));
        let mut longer = payload.to_vec();
        longer.push(0);
        assert!(matches!(
            decode_status(&longer),
            Err(WireError::Protocol(_))
        ));
    }
}
