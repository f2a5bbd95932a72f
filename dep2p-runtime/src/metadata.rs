//! Response metadata (`docs/PROTOCOL.md`, sections 4 and 5): the [`Metadata`] a handler sends
//! back before its first item or result (headers) and with its final frame (trailers), the
//! caller's view of both ([`ResponseMetadata`]), and the bookkeeping of each side.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use crate::error::Error;

use crate::wire::{
    self, HeaderLimits, WireError, TAG_HEADERS, TAG_ITEM, TAG_RESULT, TAG_STATUS, TAG_TRAILERS,
};

/// A list of metadata entries: text keys and values, in the order they were set. Keys are
/// kept as sent; a handler's [`set_header`](crate::CallContext::set_header) replaces an entry
/// of the same key, so a dep2p handler sends each key once.
///
/// ```
/// # fn show(metadata: &dep2p_runtime::Metadata) {
/// if let Some(version) = metadata.get("server-version") {
///     println!("served by {version}");
/// }
/// for (key, value) in metadata.iter() {
///     println!("{key}: {value}");
/// }
/// # }
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, String)>,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Metadata {
    pub(crate) fn from_entries(entries: Vec<(String, String)>) -> Self {
        Metadata { entries }
    }

    /// The value of the first entry with `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All entries, in the order they were sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries (nothing was sent, or the connection speaks protocol
    /// version 1, which carries no response metadata).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `key` to `value`: replaces the first entry with `key`, or adds one.
    fn set(&mut self, key: String, value: String) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }
}

/// The metadata a handler sent back with its answer: headers (sent before its first item or
/// its result) and trailers (sent with its final frame, a result or a failure).
///
/// A caller gets it from [`Unary::with_metadata`](crate::Call::with_metadata) and
/// [`Response::with_metadata`](crate::Response::with_metadata), for successes and failures
/// alike. Both lists are empty when the handler set none, when the call was refused before a
/// handler ran, when the answer never came (a timeout, a lost connection), and on a
/// connection that speaks protocol version 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseMetadata {
    headers: Metadata,
    trailers: Metadata,
}

impl ResponseMetadata {
    /// The headers: what the handler set with
    /// [`CallContext::set_header`](crate::CallContext::set_header).
    pub fn headers(&self) -> &Metadata {
        &self.headers
    }

    /// The trailers: what the handler set with
    /// [`CallContext::set_trailer`](crate::CallContext::set_trailer).
    pub fn trailers(&self) -> &Metadata {
        &self.trailers
    }
}

/// The future of a call awaited with its metadata: the call's result, and the
/// [`ResponseMetadata`] that came with it, whether it succeeded or failed.
pub type MetadataResult<R> =
    Pin<Box<dyn Future<Output = (Result<R, Error>, ResponseMetadata)> + Send + 'static>>;

/// Where the caller's reading of a response stands, for the ordering rules of metadata frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing read yet: HEADERS may come.
    #[default]
    Start,
    /// HEADERS or an ITEM read: no HEADERS any more.
    Body,
    /// TRAILERS read: only the final frame may follow.
    Trailed,
}

/// The caller's side: takes in the metadata frames of a response and checks their order.
#[derive(Debug, Default)]
pub(crate) struct MetadataReader {
    received: ResponseMetadata,
    stage: Stage,
}

impl MetadataReader {
    /// Takes in a response frame: `Ok(true)` if it is a metadata frame, now kept (the caller
    /// moves past it), `Ok(false)` for any other frame. `limits` is `None` on a connection
    /// that carries no metadata (version 1), where metadata frames are protocol violations.
    pub(crate) fn frame(
        &mut self,
        tag: u8,
        payload: &[u8],
        limits: Option<&HeaderLimits>,
    ) -> Result<bool, WireError> {
        let out_of_order = |what: &str| Err(WireError::Protocol(what.to_string()));
        match (tag, self.stage) {
            (TAG_HEADERS | TAG_TRAILERS, _) if limits.is_none() => Err(WireError::Protocol(
                format!("frame tag {tag:#04x} on a protocol version 1 connection"),
            )),
            (TAG_HEADERS, Stage::Start) => {
                let limits = limits.copied().unwrap_or_default();
                let entries = wire::decode_metadata(payload, &limits, "HEADERS")?;
                self.received.headers = Metadata::from_entries(entries);
                self.stage = Stage::Body;
                Ok(true)
            }
            (TAG_HEADERS, Stage::Body) => out_of_order("HEADERS after an ITEM or HEADERS"),
            (TAG_HEADERS, Stage::Trailed) => out_of_order("HEADERS after TRAILERS"),
            (TAG_TRAILERS, Stage::Trailed) => out_of_order("a second TRAILERS frame"),
            (TAG_TRAILERS, _) => {
                let limits = limits.copied().unwrap_or_default();
                let entries = wire::decode_metadata(payload, &limits, "TRAILERS")?;
                self.received.trailers = Metadata::from_entries(entries);
                self.stage = Stage::Trailed;
                Ok(true)
            }
            (TAG_ITEM, Stage::Trailed) => out_of_order("ITEM after TRAILERS"),
            (TAG_ITEM, _) => {
                self.stage = Stage::Body;
                Ok(false)
            }
            (TAG_RESULT | TAG_STATUS, _) => Ok(false),
            _ => Ok(false),
        }
    }

    /// Whether the headers are known: they came, or an item or the end did first.
    pub(crate) fn past_headers(&self) -> bool {
        self.stage != Stage::Start
    }

    /// What has been received so far.
    pub(crate) fn received(&self) -> &ResponseMetadata {
        &self.received
    }

    /// What has been received, taken out.
    pub(crate) fn take(&mut self) -> ResponseMetadata {
        std::mem::take(&mut self.received)
    }
}

/// The handler's side: the metadata it sets, shared by its [`CallContext`](crate::CallContext)
/// and the machinery that sends its answer.
#[derive(Debug)]
pub(crate) struct MetadataSlot {
    state: Mutex<Slot>,
    limits: HeaderLimits,
}

#[derive(Debug, Default)]
struct Slot {
    headers: Metadata,
    trailers: Metadata,
    /// The headers went out (or nothing more will be sent): too late to set any.
    headers_sent: bool,
    /// The final frame went out: too late for trailers too.
    finished: bool,
}

impl MetadataSlot {
    /// Metadata to be sent within `limits` (the sending node's header bounds).
    pub(crate) fn new(limits: HeaderLimits) -> Self {
        MetadataSlot {
            state: Mutex::new(Slot::default()),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a header, unless the headers have gone out: whether it will be sent.
    pub(crate) fn set_header(&self, key: String, value: String) -> bool {
        let mut slot = self.lock();
        if slot.headers_sent {
            return false;
        }
        slot.headers.set(key, value);
        true
    }

    /// Sets a trailer, unless the final frame has gone out: whether it will be sent.
    pub(crate) fn set_trailer(&self, key: String, value: String) -> bool {
        let mut slot = self.lock();
        if slot.finished {
            return false;
        }
        slot.trailers.set(key, value);
        true
    }

    /// Appends the HEADERS frame to `frames` if the handler set headers and they have not gone
    /// out, and marks them sent. Before the first ITEM. Over the bounds, appends nothing and
    /// leaves them unsent: the call then ends with STATUS MessageTooLarge.
    pub(crate) fn headers_into(&self, frames: &mut BytesMut) -> Result<(), WireError> {
        let mut slot = self.lock();
        if slot.headers_sent {
            return Ok(());
        }
        if !slot.headers.is_empty() {
            let frame = wire::encode_metadata(
                TAG_HEADERS,
                &slot.headers.entries,
                &self.limits,
                "response headers",
            )?;
            frames.extend_from_slice(&frame);
        }
        slot.headers_sent = true;
        Ok(())
    }

    /// The frames that go right before the final frame: the HEADERS if they have not gone
    /// out, then the TRAILERS, each only if the handler set any. Nothing can be set after.
    /// `None` if there are none, and an error if either breaks the bounds.
    pub(crate) fn finish(&self) -> Result<Option<Bytes>, WireError> {
        let mut frames = BytesMut::new();
        let headers = self.headers_into(&mut frames);
        let mut slot = self.lock();
        slot.finished = true;
        headers?;
        if !slot.trailers.is_empty() {
            let frame = wire::encode_metadata(
                TAG_TRAILERS,
                &slot.trailers.entries,
                &self.limits,
                "response trailers",
            )?;
            frames.extend_from_slice(&frame);
        }
        Ok((!frames.is_empty()).then(|| frames.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("k{i}"), "v".into())).collect()
    }

    #[test]
    fn frames_come_in_order() {
        let limits = HeaderLimits::default();
        let headers = wire::encode_metadata(TAG_HEADERS, &entries(2), &limits, "h").unwrap();
        let payload = &headers[wire::FRAME_HEAD..];
        let mut reader = MetadataReader::default();
        assert!(reader.frame(TAG_HEADERS, payload, Some(&limits)).unwrap());
        assert!(!reader.frame(TAG_ITEM, &[], Some(&limits)).unwrap());
        assert!(reader.frame(TAG_HEADERS, payload, Some(&limits)).is_err());
        assert!(reader.frame(TAG_TRAILERS, payload, Some(&limits)).unwrap());
        assert!(reader.frame(TAG_ITEM, &[], Some(&limits)).is_err());
        assert!(reader.frame(TAG_TRAILERS, payload, Some(&limits)).is_err());
        assert!(!reader.frame(TAG_RESULT, &[], Some(&limits)).unwrap());
        assert_eq!(reader.received().headers().get("k1"), Some("v"));
        assert_eq!(reader.received().trailers().len(), 2);
        // Version 1: not metadata, a violation.
        let mut v1 = MetadataReader::default();
        assert!(matches!(
            v1.frame(TAG_HEADERS, payload, None),
            Err(WireError::Protocol(_))
        ));
    }

    #[test]
    fn a_slot_sends_what_was_set_once() {
        let slot = MetadataSlot::new(HeaderLimits::default());
        assert_eq!(slot.finish().unwrap(), None);
        let slot = MetadataSlot::new(HeaderLimits::default());
        assert!(slot.set_header("a".into(), "1".into()));
        assert!(slot.set_header("a".into(), "2".into()));
        let mut frames = BytesMut::new();
        slot.headers_into(&mut frames).unwrap();
        assert!(!slot.set_header("b".into(), "3".into()));
        assert!(slot.set_trailer("t".into(), "x".into()));
        let rest = slot.finish().unwrap().unwrap();
        assert!(!slot.set_trailer("u".into(), "y".into()));
        let limits = HeaderLimits::default();
        let mut reader = MetadataReader::default();
        reader
            .frame(TAG_HEADERS, &frames[wire::FRAME_HEAD..], Some(&limits))
            .unwrap();
        reader
            .frame(TAG_TRAILERS, &rest[wire::FRAME_HEAD..], Some(&limits))
            .unwrap();
        let got = reader.take();
        assert_eq!(got.headers().iter().collect::<Vec<_>>(), [("a", "2")]);
        assert_eq!(got.trailers().get("t"), Some("x"));
    }

    #[test]
    fn bounds_hold_both_ways() {
        let limits = HeaderLimits::default();
        let slot = MetadataSlot::new(limits);
        for (k, v) in entries(65) {
            slot.set_trailer(k, v);
        }
        assert!(matches!(slot.finish(), Err(WireError::MessageTooLarge(_))));
        // Received: checked against the receiver's own bounds.
        let small = HeaderLimits {
            max_entries: 1,
            ..limits
        };
        let frame = wire::encode_metadata(TAG_TRAILERS, &entries(2), &limits, "t").unwrap();
        let mut reader = MetadataReader::default();
        let got = reader.frame(TAG_TRAILERS, &frame[wire::FRAME_HEAD..], Some(&small));
        assert!(matches!(got, Err(WireError::MessageTooLarge(_))), "{got:?}");
        // Bytes after the list.
        let mut longer = frame[wire::FRAME_HEAD..].to_vec();
        longer.push(0);
        let mut reader = MetadataReader::default();
        let got = reader.frame(TAG_TRAILERS, &longer, Some(&limits));
        assert!(matches!(got, Err(WireError::Protocol(_))), "{got:?}");
    }
}
