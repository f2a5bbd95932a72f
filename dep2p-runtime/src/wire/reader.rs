//! The frame reader: reads whole frames from a QUIC receive stream, checking each frame's
//! size before allocating and taking room for large frames from the connection's and the
//! node's budgets.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};

use super::budget::{hold, Budget, Room, SMALL_FRAME};
use super::compress::{self, PACKED, TAG_ITEM_PACKED, TAG_RESULT_PACKED};
use super::{HeaderLimits, WireError, FRAME_HEAD, STREAM_CANCELLED, TAG_HEADERS, TAG_TRAILERS};

/// The most a frame reader sets aside ahead of the bytes that have arrived, for a frame that
/// takes no room from the budgets.
const READ_AHEAD: usize = 64 * 1024;
/// The least it asks a read to fill: small for a stream's first frame (most calls are one
/// small frame, and its buffer lives as long as the call), larger once a stream has shown it
/// carries more.
const FIRST_READ: usize = 512;
const READ_MIN: usize = 16 * 1024;

/// Reads frames from a QUIC receive stream, enforcing the message size limit before
/// allocating.
#[derive(Debug)]
pub(crate) struct FrameReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    max_message: usize,
    done: bool,
    /// Where room for large frames comes from.
    budget: Budget,
    /// Room taken from `budget` for the frame at the front, or the wait for it.
    room: Taking,
    /// The length (head included) of the whole frame at the front of `buf`, if there is one.
    front: Option<usize>,
    /// The least room a read is given.
    read_min: usize,
    /// Whether compressed ITEM and RESULT frames are decompressed (protocol version 2); if
    /// not, their tags are unknown ones.
    unpack: bool,
    /// The frame at the front, decompressed: its plain tag and its message.
    unpacked: Option<(u8, Bytes)>,
    /// The bounds of HEADERS and TRAILERS frames, on a connection that speaks version 2; on a
    /// version 1 connection, `None`: those frames are protocol violations there.
    metadata: Option<HeaderLimits>,
}

/// The room of the frame at the front of a reader's buffer.
#[derive(Default)]
enum Taking {
    /// The frame is small enough to need none.
    #[default]
    None,
    Waiting(Pin<Box<dyn Future<Output = Result<Room, WireError>> + Send + Sync>>),
    Held(Room),
}

impl std::fmt::Debug for Taking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Taking::None => "None",
            Taking::Waiting(_) => "Waiting",
            Taking::Held(_) => "Held",
        })
    }
}

impl FrameReader {
    pub(crate) fn new(recv: quinn::RecvStream, max_message: usize, budget: Budget) -> Self {
        FrameReader {
            recv,
            buf: BytesMut::new(),
            max_message,
            done: false,
            budget,
            room: Taking::None,
            front: None,
            read_min: FIRST_READ,
            unpack: false,
            unpacked: None,
            metadata: None,
        }
    }

    /// Accepts HEADERS and TRAILERS frames within `limits` (a version 2 connection).
    pub(crate) fn with_metadata(mut self, limits: HeaderLimits) -> Self {
        self.metadata = Some(limits);
        self
    }

    /// The bounds of metadata frames, if the connection carries them (version 2).
    pub(crate) fn metadata_limits(&self) -> Option<&HeaderLimits> {
        self.metadata.as_ref()
    }

    /// Decompresses compressed ITEM and RESULT frames if `on` (on protocol version 2
    /// connections); the reader hands them on as plain frames.
    pub(crate) fn unpacking(mut self, on: bool) -> Self {
        self.unpack = on;
        self
    }

    /// Whether the frame at the front of the buffer is a compressed ITEM or RESULT this
    /// reader decompresses; its head must be here.
    fn is_packed(&self) -> bool {
        self.unpack && matches!(self.buf[4], TAG_ITEM_PACKED | TAG_RESULT_PACKED)
    }

    /// The room the frame of `total` bytes at the front takes: its own size, or for a
    /// compressed one the size of the frame its message decompresses to, if larger. `None`
    /// until the bytes that tell (the head, and a compressed message's length) are here.
    /// Fails if the announced length is over the message limit.
    fn room_for(&self, total: usize) -> Result<Option<usize>, WireError> {
        if self.buf.len() < FRAME_HEAD {
            return Ok(None);
        }
        if !self.is_packed() {
            return Ok(Some(total));
        }
        // The length is a varint of at most 5 bytes.
        let known = total.min(FRAME_HEAD + 5);
        if self.buf.len() < known {
            return Ok(None);
        }
        let (len, _) = compress::unpacked_len(&self.buf[FRAME_HEAD..known], self.max_message)?;
        Ok(Some(total.max(FRAME_HEAD + len)))
    }

    /// The tag of the whole frame at the front. A compressed ITEM or RESULT is decompressed
    /// first, and from then on is the plain frame at the front, keeping the room taken for
    /// it (see [`room_for`](Self::room_for)).
    fn front_tag(&mut self) -> Result<Option<u8>, WireError> {
        let Some(total) = self.front else {
            return Ok(None);
        };
        let tag = self.buf[4];
        if !self.is_packed() {
            return Ok(Some(tag));
        }
        let (len, skip) = match compress::unpacked_len(self.payload(), self.max_message) {
            Ok(len) => len,
            Err(err) => return Err(self.fail(err)),
        };
        let mut message = vec![0; len];
        if let Err(err) = compress::unpack_into(&self.payload()[skip..], &mut message) {
            return Err(self.fail(err));
        }
        let message = match self.take_front(total) {
            (_, Some(room)) if FRAME_HEAD + len > SMALL_FRAME => hold(message, room),
            _ => Bytes::from(message),
        };
        self.unpacked = Some((tag & !PACKED, message));
        Ok(Some(tag & !PACKED))
    }

    /// Takes `room` bytes (at least the frame's `total`) from the budgets for a large frame
    /// before reading it (or handing it on, if it is already here), so that all the large
    /// frames peers have in progress or held at once stay within the budgets. Pending while
    /// other frames hold the room.
    fn poll_room(
        &mut self,
        cx: &mut Context<'_>,
        total: usize,
        room: usize,
    ) -> Poll<Result<(), WireError>> {
        if room <= SMALL_FRAME {
            return Poll::Ready(Ok(()));
        }
        loop {
            match &mut self.room {
                Taking::Held(_) => return Poll::Ready(Ok(())),
                Taking::Waiting(wait) => {
                    let taken = ready!(wait.as_mut().poll(cx));
                    self.room = Taking::None;
                    self.room = Taking::Held(taken?);
                    // Counted whole: the frame's buffer can be set aside whole, sparing the
                    // copies of a buffer that grows. Its pages are only touched as the bytes
                    // arrive.
                    if self.buf.capacity() < total {
                        let mut exact = BytesMut::with_capacity(total);
                        exact.extend_from_slice(&self.buf);
                        self.buf = exact;
                    }
                }
                Taking::None => {
                    // `room` is at most the message limit (and the head), which fits in u32
                    // and is no larger than either budget (both checked when the node is
                    // configured).
                    let n = u32::try_from(room).unwrap_or(u32::MAX);
                    self.room = Taking::Waiting(Box::pin(self.budget.clone().take(n)));
                }
            }
        }
    }

    /// Drops the frame at the front (`total` bytes) from the buffer. A large frame's buffer
    /// goes with it, and with the buffer the frame's room: what follows the frame moves to a
    /// buffer of its own. Returns the frame, and its room if it has some.
    fn take_front(&mut self, total: usize) -> (BytesMut, Option<Room>) {
        self.front = None;
        match std::mem::take(&mut self.room) {
            Taking::Held(room) => {
                let rest = BytesMut::from(&self.buf[total..]);
                let mut frame = std::mem::replace(&mut self.buf, rest);
                frame.truncate(total);
                (frame, Some(room))
            }
            _ => (self.buf.split_to(total), None),
        }
    }

    /// The next frame, or `None` when the peer finished the stream at a frame boundary.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<(u8, Bytes)>, WireError>> {
        let Some(tag) = ready!(self.poll_ready(cx))? else {
            return Poll::Ready(Ok(None));
        };
        if let Some((tag, message)) = self.unpacked.take() {
            return Poll::Ready(Ok(Some((tag, message))));
        }
        let total = FRAME_HEAD + self.payload().len();
        let (mut frame, room) = self.take_front(total);
        frame.advance(FRAME_HEAD);
        let payload = match room {
            // The room goes where the frame goes, and comes back when the last part of it is
            // dropped.
            Some(room) => hold(frame, room),
            None => frame.freeze(),
        };
        Poll::Ready(Ok(Some((tag, payload))))
    }

    /// The payload of the whole frame at the front, after [`poll_ready`](Self::poll_ready)
    /// returned its tag; empty otherwise.
    pub(crate) fn payload(&self) -> &[u8] {
        if let Some((_, message)) = &self.unpacked {
            return message;
        }
        match self.front {
            Some(total) => &self.buf[FRAME_HEAD..total],
            None => &[],
        }
    }

    /// Drops the frame at the front, once its payload has been used.
    pub(crate) fn consume(&mut self) {
        if self.unpacked.take().is_some() {
            return;
        }
        match (self.front, &self.room) {
            (Some(total), Taking::Held(_)) => drop(self.take_front(total)),
            (Some(total), _) => {
                self.front = None;
                self.buf.advance(total);
            }
            (None, _) => {}
        }
    }

    /// Waits until a whole frame is at the front of the buffer and returns its tag, or `None`
    /// when the peer finished the stream at a frame boundary. The frame stays there, readable
    /// with [`payload`](Self::payload), until [`consume`](Self::consume): decoding from it
    /// needs no copy and no allocation.
    pub(crate) fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<u8>, WireError>> {
        if let Some((tag, _)) = &self.unpacked {
            return Poll::Ready(Ok(Some(*tag)));
        }
        if self.front.is_some() {
            return Poll::Ready(self.front_tag());
        }
        loop {
            // The length alone decides whether a frame is acceptable: check it as soon as its
            // four bytes are here, before waiting for (or reserving room for) anything else.
            let mut wanted = FRAME_HEAD;
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len == 0 {
                    let err = WireError::Protocol("frame of length zero".into());
                    return Poll::Ready(Err(self.fail(err)));
                }
                let payload = len - 1;
                if payload > self.max_message {
                    let err = WireError::MessageTooLarge(format!(
                        "{payload} bytes announced, the limit is {}",
                        self.max_message
                    ));
                    return Poll::Ready(Err(self.fail(err)));
                }
                // A metadata frame is bounded by the header bounds, far below the message
                // limit: refused on its length, before its bytes are read.
                if let (Some(&tag @ (TAG_HEADERS | TAG_TRAILERS)), Some(limits)) =
                    (self.buf.get(4), &self.metadata)
                {
                    if payload > limits.max_size {
                        let name = if tag == TAG_HEADERS {
                            "HEADERS"
                        } else {
                            "TRAILERS"
                        };
                        let err = WireError::MessageTooLarge(format!(
                            "{name} frame of {payload} bytes announced, the limit is {}",
                            limits.max_size
                        ));
                        return Poll::Ready(Err(self.fail(err)));
                    }
                }
                wanted = FRAME_HEAD + payload;
                // Taken once, before reading on: a compressed frame never holds room while
                // it waits for more.
                let room = match self.room_for(wanted) {
                    Ok(room) => room,
                    Err(err) => return Poll::Ready(Err(self.fail(err))),
                };
                if let Some(room) = room {
                    ready!(self.poll_room(cx, wanted, room))?;
                    if self.buf.len() >= wanted {
                        self.front = Some(wanted);
                        self.read_min = READ_MIN;
                        return Poll::Ready(self.front_tag());
                    }
                }
            }
            if self.done {
                return Poll::Ready(if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(self.fail(WireError::Protocol("stream ended inside a frame".into())))
                });
            }
            // Room for what the frame still needs, but never more than a read can bring at
            // once: memory grows with the bytes that actually arrive, not with the bytes
            // a length prefix announces. (A large frame's buffer, counted whole in the
            // budgets, was set aside whole when its room was taken.)
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
                        Some(Ok(read)) => WireError::Read(*read),
                        _ => WireError::ConnectionLost("stream read failed".into()),
                    };
                    self.done = true;
                    self.release();
                    return Poll::Ready(Err(err));
                }
            }
        }
    }

    /// Async form of [`poll_frame`](Self::poll_frame).
    pub(crate) async fn frame(&mut self) -> Result<Option<(u8, Bytes)>, WireError> {
        std::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// Notices, without waiting, that the peer has finished the stream after the last frame.
    pub(crate) fn try_finish(&mut self) {
        use futures::FutureExt;
        if let Some(Ok(None)) = self.frame().now_or_never() {
            self.done = true;
        }
    }

    /// After the final frame of a direction: fails if another frame is already there (a
    /// protocol violation), without waiting for one. An end that has not arrived yet, or a
    /// reset after the final frame, is no violation.
    pub(crate) fn check_end(&mut self) -> Result<(), WireError> {
        use futures::FutureExt;
        match self.frame().now_or_never() {
            Some(Ok(Some((tag, _)))) => {
                let err = WireError::Protocol(format!(
                    "frame tag {tag:#04x} after the call's final frame"
                ));
                Err(self.fail(err))
            }
            Some(Ok(None)) => {
                self.done = true;
                Ok(())
            }
            Some(Err(_)) | None => Ok(()),
        }
    }

    /// Whether the peer's end of the stream has been read.
    pub(crate) fn is_finished(&self) -> bool {
        self.done && self.buf.is_empty()
    }

    /// Whether bytes past the frames read so far are waiting in the buffer.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Tells the peer to stop sending, with `code`, unless the stream was read to its end.
    pub(crate) fn stop(&mut self, code: u32) {
        if !self.done {
            self.done = true;
            let _ = self.recv.stop(code.into());
        }
    }

    fn fail(&mut self, err: WireError) -> WireError {
        self.release();
        self.stop(err.stop_code());
        err
    }

    /// Lets go of the buffer and its room, once nothing more will be read.
    fn release(&mut self) {
        self.buf = BytesMut::new();
        self.front = None;
        self.room = Taking::None;
        self.unpacked = None;
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        self.stop(STREAM_CANCELLED);
    }
}
