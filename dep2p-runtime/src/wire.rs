//! The wire format: frames, the call header, status and error codes. `docs/PROTOCOL.md` is the
//! normative description; the constants here are the ones it names.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use std::future::Future;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// ALPN protocol identifier, carrying the protocol version.
pub const ALPN: &[u8] = b"dep2p/1";

/// Frame tags.
pub(crate) const TAG_CALL: u8 = 0x01;
pub(crate) const TAG_ITEM: u8 = 0x02;
pub(crate) const TAG_RESULT: u8 = 0x03;
pub(crate) const TAG_STATUS: u8 = 0x04;

/// Bytes before a frame's payload: a 4-byte big-endian length, then the tag.
pub(crate) const FRAME_HEAD: usize = 5;

/// The most a frame reader sets aside ahead of the bytes that have arrived.
const READ_AHEAD: usize = 64 * 1024;
/// The least it asks a read to fill: small for a stream's first frame (most calls are one
/// small frame, and its buffer lives as long as the call), larger once a stream has shown it
/// carries more.
const FIRST_READ: usize = 512;
const READ_MIN: usize = 16 * 1024;

/// Stream error codes (RESET_STREAM and STOP_SENDING).
pub(crate) const STREAM_CANCELLED: u32 = 0x01;
pub(crate) const STREAM_REFUSED: u32 = 0x02;
pub(crate) const STREAM_PROTOCOL: u32 = 0x03;

/// Connection close codes.
pub(crate) const CLOSE_NORMAL: u32 = 0x00;
pub(crate) const CLOSE_SHUTDOWN: u32 = 0x01;

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
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Unary => "request-response",
            Kind::Notify => "notification",
            Kind::ServerStream => "server-streaming",
            Kind::ClientStream => "client-streaming",
            Kind::Bidi => "bidirectional-streaming",
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
            _ => return None,
        })
    }
}

/// The first thing on every call stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CallHeader<'a> {
    #[serde(borrow)]
    pub(crate) service: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) method: std::borrow::Cow<'a, str>,
    pub(crate) kind: Kind,
    /// Time the caller still allows, in microseconds; `None` for no deadline.
    pub(crate) timeout_us: Option<u64>,
    pub(crate) metadata: Vec<(String, String)>,
}

/// The payload of a STATUS frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) code: u16,
    pub(crate) message: String,
}

/// Starts a frame of `payload` bytes: room for all of it, the length (patched by [`end`])
/// and the tag. Fails before allocating if the payload exceeds the limit.
fn begin(tag: u8, payload: usize, max_message: usize) -> Result<Vec<u8>, Error> {
    if payload > max_message {
        return Err(Error::MessageTooLarge(format!(
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
    // Sized exactly, so the conversion takes the vector as it is.
    Bytes::from(buf)
}

fn encode_err(err: postcard::Error) -> Error {
    Error::Decode(format!("could not encode: {err}"))
}

/// Encodes one frame holding `value`.
pub(crate) fn encode<T: Serialize + ?Sized>(
    tag: u8,
    value: &T,
    max_message: usize,
) -> Result<Bytes, Error> {
    let size = postcard::experimental::serialized_size(value).map_err(encode_err)?;
    let buf = postcard::to_extend(value, begin(tag, size, max_message)?).map_err(encode_err)?;
    Ok(end(buf))
}

/// Encodes the CALL frame: the header immediately followed by the arguments.
pub(crate) fn encode_call<A: Serialize>(
    header: &CallHeader<'_>,
    args: &A,
    max_message: usize,
) -> Result<Bytes, Error> {
    let size = postcard::experimental::serialized_size(header).map_err(encode_err)?
        + postcard::experimental::serialized_size(args).map_err(encode_err)?;
    let buf =
        postcard::to_extend(header, begin(TAG_CALL, size, max_message)?).map_err(encode_err)?;
    let buf = postcard::to_extend(args, buf).map_err(encode_err)?;
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
pub(crate) fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    match postcard::take_from_bytes(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::Decode(format!(
            "{} bytes left over after the message",
            rest.len()
        ))),
        Err(e) => Err(Error::Decode(e.to_string())),
    }
}

/// A received call header. The names stay in the frame they arrived in.
#[derive(Debug)]
pub(crate) struct IncomingHeader {
    pub(crate) service: Text,
    pub(crate) method: Text,
    pub(crate) kind: Kind,
    pub(crate) timeout_us: Option<u64>,
    pub(crate) metadata: Vec<(String, String)>,
}

/// UTF-8 text kept in a received frame.
#[derive(Debug, Clone)]
pub(crate) struct Text(Bytes);

impl Text {
    pub(crate) fn as_str(&self) -> &str {
        // Checked to be UTF-8 when the frame was decoded.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Decodes the CALL frame payload into the header and the undecoded arguments.
pub(crate) fn decode_call(payload: &Bytes) -> Result<(IncomingHeader, Bytes), Error> {
    let (header, rest): (CallHeader<'_>, &[u8]) = postcard::take_from_bytes(payload)
        .map_err(|e| Error::Protocol(format!("undecodable call header: {e}")))?;
    // Borrowed from `payload` when the encoding allows it, which postcard's does.
    let text = |s: &std::borrow::Cow<'_, str>| match s {
        std::borrow::Cow::Borrowed(s) => Text(payload.slice_ref(s.as_bytes())),
        std::borrow::Cow::Owned(s) => Text(Bytes::copy_from_slice(s.as_bytes())),
    };
    let incoming = IncomingHeader {
        service: text(&header.service),
        method: text(&header.method),
        kind: header.kind,
        timeout_us: header.timeout_us,
        metadata: header.metadata,
    };
    let offset = payload.len() - rest.len();
    Ok((incoming, payload.slice(offset..)))
}

/// Decodes a STATUS frame payload into the error it reports.
pub(crate) fn decode_status(payload: &[u8]) -> Error {
    match postcard::from_bytes::<Status>(payload) {
        Ok(status) => Error::from_status(status.code, status.message),
        Err(e) => Error::Protocol(format!("undecodable status: {e}")),
    }
}

/// Reads frames from a QUIC receive stream, enforcing the message size limit before
/// allocating.
#[derive(Debug)]
pub(crate) struct FrameReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    max_message: usize,
    done: bool,
    /// The connection's budget for large frames being received.
    budget: Arc<Semaphore>,
    /// Room taken from `budget` for the frame being read, or the wait for it.
    room: Room,
    /// The length (head included) of the whole frame at the front of `buf`, if there is one.
    front: Option<usize>,
    /// The least room a read is given.
    read_min: usize,
}

#[derive(Default)]
enum Room {
    /// The frame being read is small enough to need none.
    #[default]
    None,
    Waiting(
        Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + Sync>>,
    ),
    Held(#[allow(dead_code)] OwnedSemaphorePermit),
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Room::None => "None",
            Room::Waiting(_) => "Waiting",
            Room::Held(_) => "Held",
        })
    }
}

/// Frames up to this size are read without taking room from the connection's budget: the
/// QUIC stream limit already bounds how many such frames can be in progress.
const SMALL_FRAME: usize = 64 * 1024;

impl FrameReader {
    pub(crate) fn new(recv: quinn::RecvStream, max_message: usize, budget: Arc<Semaphore>) -> Self {
        FrameReader {
            recv,
            buf: BytesMut::new(),
            max_message,
            done: false,
            budget,
            room: Room::None,
            front: None,
            read_min: FIRST_READ,
        }
    }

    /// Takes room for a large frame of `total` bytes from the connection's budget before
    /// reading it, so that all the large frames a peer has in progress at once stay within
    /// the budget. Pending while other frames hold the room.
    fn poll_room(&mut self, cx: &mut Context<'_>, total: usize) -> Poll<Result<(), Error>> {
        if total <= SMALL_FRAME {
            return Poll::Ready(Ok(()));
        }
        loop {
            match &mut self.room {
                Room::Held(_) => return Poll::Ready(Ok(())),
                Room::Waiting(wait) => match ready!(wait.as_mut().poll(cx)) {
                    Ok(permit) => self.room = Room::Held(permit),
                    Err(_) => return Poll::Ready(Err(Error::Closed)),
                },
                Room::None => {
                    // `total` is at most the message limit, which fits in u32 and is no
                    // larger than the budget (both checked when the node is configured).
                    let n = u32::try_from(total).unwrap_or(u32::MAX);
                    let budget = Arc::clone(&self.budget);
                    self.room = Room::Waiting(Box::pin(budget.acquire_many_owned(n)));
                }
            }
        }
    }

    /// The next frame, or `None` when the peer finished the stream at a frame boundary.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<(u8, Bytes)>, Error>> {
        let Some(tag) = ready!(self.poll_ready(cx))? else {
            return Poll::Ready(Ok(None));
        };
        let total = FRAME_HEAD + self.payload().len();
        self.front = None;
        self.room = Room::None;
        let mut frame = self.buf.split_to(total);
        frame.advance(FRAME_HEAD);
        Poll::Ready(Ok(Some((tag, frame.freeze()))))
    }

    /// The payload of the whole frame at the front, after [`poll_ready`](Self::poll_ready)
    /// returned its tag; empty otherwise.
    pub(crate) fn payload(&self) -> &[u8] {
        match self.front {
            Some(total) => &self.buf[FRAME_HEAD..total],
            None => &[],
        }
    }

    /// Drops the frame at the front, once its payload has been used.
    pub(crate) fn consume(&mut self) {
        if let Some(total) = self.front.take() {
            self.buf.advance(total);
            self.room = Room::None;
        }
    }

    /// Waits until a whole frame is at the front of the buffer and returns its tag, or `None`
    /// when the peer finished the stream at a frame boundary. The frame stays there, readable
    /// with [`payload`](Self::payload), until [`consume`](Self::consume): decoding from it
    /// needs no copy and no allocation.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<u8>, Error>> {
        if self.front.is_some() {
            return Poll::Ready(Ok(Some(self.buf[4])));
        }
        loop {
            // The length alone decides whether a frame is acceptable: check it as soon as its
            // four bytes are here, before waiting for (or reserving room for) anything else.
            let mut wanted = FRAME_HEAD;
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len == 0 {
                    let err = Error::Protocol("frame of length zero".into());
                    return Poll::Ready(Err(self.fail(err)));
                }
                let payload = len - 1;
                if payload > self.max_message {
                    let err = Error::MessageTooLarge(format!(
                        "{payload} bytes announced, the limit is {}",
                        self.max_message
                    ));
                    return Poll::Ready(Err(self.fail(err)));
                }
                wanted = FRAME_HEAD + payload;
                if self.buf.len() < wanted {
                    ready!(self.poll_room(cx, wanted))?;
                }
                if self.buf.len() >= wanted {
                    self.front = Some(wanted);
                    self.read_min = READ_MIN;
                    return Poll::Ready(Ok(Some(self.buf[4])));
                }
            }
            if self.done {
                return Poll::Ready(if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(self.fail(Error::Protocol("stream ended inside a frame".into())))
                });
            }
            // Room for what the frame still needs, but never more than a read can bring at
            // once: memory grows with the bytes that actually arrive, not with the bytes
            // a length prefix announces.
            let spare = self.buf.capacity() - self.buf.len();
            if spare < READ_AHEAD.min(wanted - self.buf.len()) {
                self.buf
                    .reserve(READ_AHEAD.min(wanted - self.buf.len()).max(self.read_min));
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.recv),
                cx,
                &mut self.buf
            ));
            match read {
                Ok(0) => self.done = true,
                Ok(_) => {}
                Err(e) => {
                    let err = match e
                        .into_inner()
                        .map(|inner| inner.downcast::<quinn::ReadError>())
                    {
                        Some(Ok(read)) => Error::from_read(*read),
                        _ => Error::ConnectionLost("stream read failed".into()),
                    };
                    self.done = true;
                    self.buf.clear();
                    return Poll::Ready(Err(err));
                }
            }
        }
    }

    /// Async form of [`poll_frame`](Self::poll_frame).
    pub(crate) async fn frame(&mut self) -> Result<Option<(u8, Bytes)>, Error> {
        std::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// Notices, without waiting, that the peer has finished the stream after the last frame.
    pub(crate) fn try_finish(&mut self) {
        use futures::FutureExt;
        if let Some(Ok(None)) = self.frame().now_or_never() {
            self.done = true;
        }
    }

    /// Whether the peer's end of the stream has been read.
    pub(crate) fn is_finished(&self) -> bool {
        self.done && self.buf.is_empty()
    }

    /// Tells the peer to stop sending, with `code`, unless the stream was read to its end.
    pub(crate) fn stop(&mut self, code: u32) {
        if !self.done {
            self.done = true;
            let _ = self.recv.stop(code.into());
        }
    }

    fn fail(&mut self, err: Error) -> Error {
        self.buf.clear();
        self.front = None;
        let code = match err {
            Error::MessageTooLarge(_) | Error::Protocol(_) => STREAM_PROTOCOL,
            _ => STREAM_CANCELLED,
        };
        self.stop(code);
        err
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        self.stop(STREAM_CANCELLED);
    }
}
