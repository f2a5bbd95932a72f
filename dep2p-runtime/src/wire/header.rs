//! The call header (`docs/PROTOCOL.md`, section 5): encoding it, the bounds it must keep, and
//! the decoder that checks each bound before it keeps anything of a received header.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;

use super::{Kind, WireError};

/// Longest service or method name, in bytes, sent or accepted. Names are chosen in code, not
/// carried data: 256 bytes leaves room for any reverse-DNS style service name.
pub(crate) const MAX_NAME: usize = 256;

/// How large a call header may be, sent or received.
///
/// A received header is checked field by field as it is decoded, before anything of it is
/// kept; a call whose header would break a bound is refused by its caller before it opens a
/// stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderLimits {
    /// Metadata entries in one header. Default: 64.
    pub(crate) max_entries: usize,
    /// Bytes of one metadata entry, key and value together. Default: 8 KiB.
    pub(crate) max_entry: usize,
    /// Bytes of the whole encoded header: every field before the arguments. Default: 16 KiB.
    pub(crate) max_size: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits {
            max_entries: 64,
            max_entry: 8 * 1024,
            max_size: 16 * 1024,
        }
    }
}

/// The header of an outgoing call.
#[derive(Debug, Serialize)]
pub(crate) struct CallHeader<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    pub(crate) kind: Kind,
    /// Time the caller still allows, in microseconds; `None` for no deadline.
    pub(crate) timeout_us: Option<u64>,
    pub(crate) metadata: &'a [(String, String)],
}

/// The start of `text`, for an error message.
fn head(text: &str) -> &str {
    let mut cut = text.len().min(64);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

fn too_large(what: String) -> WireError {
    WireError::MessageTooLarge(format!("call header: {what}"))
}

/// Checks a metadata list against `limits`: its entries, each entry, and its encoded size.
/// `what` names the list in the error.
fn check_entries(
    entries: &[(String, String)],
    limits: &HeaderLimits,
    what: &str,
) -> Result<(), String> {
    if entries.len() > limits.max_entries {
        return Err(format!(
            "{what}: {} metadata entries, the limit is {}",
            entries.len(),
            limits.max_entries
        ));
    }
    if let Some((key, value)) = entries
        .iter()
        .find(|(k, v)| k.len() + v.len() > limits.max_entry)
    {
        return Err(format!(
            "{what}: metadata entry `{}` of {} bytes, the limit is {}",
            head(key),
            key.len() + value.len(),
            limits.max_entry
        ));
    }
    Ok(())
}

impl CallHeader<'_> {
    /// Checks the header against `limits`; its encoded size if it keeps them.
    pub(crate) fn check(&self, limits: &HeaderLimits) -> Result<usize, WireError> {
        for (what, name) in [("service", self.service), ("method", self.method)] {
            if name.len() > MAX_NAME {
                return Err(too_large(format!(
                    "{what} name of {} bytes, the limit is {MAX_NAME}",
                    name.len()
                )));
            }
        }
        if self.metadata.len() > limits.max_entries {
            return Err(too_large(format!(
                "{} metadata entries, the limit is {}",
                self.metadata.len(),
                limits.max_entries
            )));
        }
        if let Some((key, value)) = self
            .metadata
            .iter()
            .find(|(k, v)| k.len() + v.len() > limits.max_entry)
        {
            return Err(too_large(format!(
                "metadata entry `{}` of {} bytes, the limit is {}",
                head(key),
                key.len() + value.len(),
                limits.max_entry
            )));
        }
        let size = postcard::experimental::serialized_size(self)
            .map_err(|e| WireError::Decode(format!("could not encode: {e}")))?;
        if size > limits.max_size {
            return Err(too_large(format!(
                "{size} bytes, the limit is {}",
                limits.max_size
            )));
        }
        Ok(size)
    }
}

/// Where a piece of text lies in a received header's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// A received call header. Its names and metadata stay in the frame they arrived in, as spans
/// of it checked to be UTF-8 and within bounds when the header was decoded; whoever keeps the
/// header keeps the frame, and with it the frame's room in the memory budgets.
#[derive(Clone)]
pub(crate) struct IncomingHeader {
    /// The header's bytes.
    bytes: Bytes,
    service: Span,
    method: Span,
    pub(crate) kind: Kind,
    pub(crate) timeout_us: Option<u64>,
    metadata: Vec<(Span, Span)>,
}

impl fmt::Debug for IncomingHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingHeader")
            .field("service", &self.service())
            .field("method", &self.method())
            .field("kind", &self.kind)
            .field("timeout_us", &self.timeout_us)
            .field("metadata", &MetadataList(self))
            .finish()
    }
}

/// The metadata entries of a header, listed for `Debug`.
struct MetadataList<'a>(&'a IncomingHeader);

impl fmt::Debug for MetadataList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.metadata()).finish()
    }
}

impl IncomingHeader {
    fn text(&self, span: Span) -> &str {
        let bytes = self
            .bytes
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default();
        // Checked to be UTF-8 when the header was decoded.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// The service name the caller used.
    pub(crate) fn service(&self) -> &str {
        self.text(self.service)
    }

    /// The method name the caller used.
    pub(crate) fn method(&self) -> &str {
        self.text(self.method)
    }

    /// The value of the first metadata entry with `key`.
    pub(crate) fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| self.bytes.get(k.start as usize..k.end as usize) == Some(key.as_bytes()))
            .map(|&(_, v)| self.text(v))
    }

    /// The metadata entries, in the order they were sent.
    pub(crate) fn metadata(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata
            .iter()
            .map(|&(k, v)| (self.text(k), self.text(v)))
    }
}

/// Reads a header from the front of a CALL payload, checking every length against its bound
/// before going on.
struct Decoder<'a> {
    payload: &'a [u8],
    pos: usize,
    limits: &'a HeaderLimits,
    /// What is decoded, for errors: "call header" or the metadata frame's name.
    what: &'static str,
}

fn protocol(what: &str) -> WireError {
    WireError::Protocol(format!("undecodable call header: {what}"))
}

impl Decoder<'_> {
    fn byte(&mut self) -> Result<u8, WireError> {
        let byte = *self
            .payload
            .get(self.pos)
            .ok_or_else(|| protocol("truncated"))?;
        self.pos += 1;
        Ok(byte)
    }

    /// A varint of at most `bits` bits, as postcard writes them: seven bits a byte, least
    /// significant first, and no bits beyond `bits` in the last byte.
    fn varint(&mut self, bits: u32) -> Result<u64, WireError> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.byte()?;
            let low = u64::from(byte & 0x7f);
            if shift + 7 > bits && low >> (bits - shift) != 0 {
                return Err(protocol("varint out of range"));
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift >= bits {
                return Err(protocol("varint out of range"));
            }
        }
    }

    /// The header read so far, and `more` bytes after it, must stay within its size bound.
    fn within_size(&self, more: u64) -> Result<(), WireError> {
        let end = (self.pos as u64).saturating_add(more);
        if end > self.limits.max_size as u64 {
            return Err(WireError::MessageTooLarge(format!(
                "{}: longer than the limit of {} bytes",
                self.what, self.limits.max_size
            )));
        }
        Ok(())
    }

    /// The length of a string, at most `max` bytes; `over` says what is wrong with a longer one.
    fn len(&mut self, max: usize, over: impl Fn(u64) -> String) -> Result<usize, WireError> {
        let len = self.varint(64)?;
        if len > max as u64 {
            return Err(WireError::MessageTooLarge(format!(
                "{}: {}",
                self.what,
                over(len)
            )));
        }
        self.within_size(len)?;
        Ok(len as usize)
    }

    /// The `len` bytes of a string, which must be UTF-8.
    fn text(&mut self, len: usize) -> Result<Span, WireError> {
        let start = self.pos;
        let end = start + len;
        let bytes = self
            .payload
            .get(start..end)
            .ok_or_else(|| protocol("truncated"))?;
        if std::str::from_utf8(bytes).is_err() {
            return Err(protocol("text is not UTF-8"));
        }
        self.pos = end;
        // Within the header's size bound, and the payload's length fits in u32 anyway: the
        // node's message limit keeps it below 2^32 - 1.
        let at = |at: usize| u32::try_from(at).map_err(|_| protocol("too long"));
        Ok(Span {
            start: at(start)?,
            end: at(end)?,
        })
    }

    /// A metadata list: the count, then each entry's key and value, every length checked
    /// against its bound before the bytes it announces.
    fn entries(&mut self) -> Result<Vec<(Span, Span)>, WireError> {
        let limits = self.limits;
        let count = self.varint(64)?;
        if count > limits.max_entries as u64 {
            return Err(WireError::MessageTooLarge(format!(
                "{}: {count} metadata entries, the limit is {}",
                self.what, limits.max_entries
            )));
        }
        // Within bounds: at most `max_entries` spans.
        let mut metadata = Vec::with_capacity(count as usize);
        for i in 0..count {
            let max = limits.max_entry;
            let over = |len: u64| format!("metadata entry {i} of {len} bytes, the limit is {max}");
            let key_len = self.len(max, over)?;
            let key = self.text(key_len)?;
            let value_len = self.len(max - key_len, |len| {
                over(len.saturating_add(key_len as u64))
            })?;
            let value = self.text(value_len)?;
            metadata.push((key, value));
        }
        self.within_size(0)?;
        Ok(metadata)
    }

    /// A name of at most [`MAX_NAME`] bytes.
    fn name(&mut self, what: &str) -> Result<Span, WireError> {
        let len = self.len(MAX_NAME, |len| {
            format!("{what} name of {len} bytes, the limit is {MAX_NAME}")
        })?;
        self.text(len)
    }
}

/// Decodes the header at the front of a CALL payload: the header, and the undecoded arguments
/// (the rest of the payload).
///
/// Each length is checked against its bound in `limits` before anything is read past it, and
/// nothing is allocated but the list of metadata spans, once their number is known to be
/// within bounds. A bound broken is [`WireError::MessageTooLarge`]; a header that does not
/// decode is [`WireError::Protocol`].
pub(crate) fn decode_call(
    payload: &Bytes,
    limits: &HeaderLimits,
) -> Result<(IncomingHeader, Bytes), WireError> {
    let mut d = Decoder {
        payload,
        pos: 0,
        limits,
        what: "call header",
    };
    let service = d.name("service")?;
    let method = d.name("method")?;
    let kind = match d.varint(32)? {
        0 => Kind::Unary,
        1 => Kind::Notify,
        2 => Kind::ServerStream,
        3 => Kind::ClientStream,
        4 => Kind::Bidi,
        other => return Err(protocol(&format!("kind {other}"))),
    };
    let timeout_us = match d.byte()? {
        0 => None,
        1 => Some(d.varint(64)?),
        _ => return Err(protocol("timeout is neither none nor some")),
    };
    d.within_size(0)?;
    let metadata = d.entries()?;
    let end = d.pos;
    let header = IncomingHeader {
        bytes: payload.slice(..end),
        service,
        method,
        kind,
        timeout_us,
        metadata,
    };
    Ok((header, payload.slice(end..)))
}

/// Encodes a HEADERS or TRAILERS frame (`docs/PROTOCOL.md`, section 5) of `entries`. Fails,
/// before allocating, if the list breaks one of `limits`; `what` names it in the error.
pub(crate) fn encode_metadata(
    tag: u8,
    entries: &[(String, String)],
    limits: &HeaderLimits,
    what: &str,
) -> Result<Bytes, WireError> {
    check_entries(entries, limits, what).map_err(WireError::MessageTooLarge)?;
    super::encode(tag, entries, limits.max_size).map_err(|err| match err {
        WireError::MessageTooLarge(m) => WireError::MessageTooLarge(format!("{what}: {m}")),
        other => other,
    })
}

/// Decodes the payload of a HEADERS or TRAILERS frame, checking each count and length against
/// its bound in `limits` before reading past it; `what` names the frame in errors. A bound
/// broken is [`WireError::MessageTooLarge`]; a list that does not decode, or bytes after it,
/// [`WireError::Protocol`].
pub(crate) fn decode_metadata(
    payload: &[u8],
    limits: &HeaderLimits,
    what: &'static str,
) -> Result<Vec<(String, String)>, WireError> {
    let mut d = Decoder {
        payload,
        pos: 0,
        limits,
        what,
    };
    let undecodable = |err| match err {
        WireError::Protocol(m) => WireError::Protocol(m.replace("call header", what)),
        other => other,
    };
    let spans = d.entries().map_err(undecodable)?;
    if d.pos != payload.len() {
        return Err(WireError::Protocol(format!(
            "{} bytes after the {what}",
            payload.len() - d.pos
        )));
    }
    let text = |span: Span| {
        // Checked to be UTF-8, and within the payload, by `entries`.
        let bytes = payload
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default();
        String::from_utf8_lossy(bytes).into_owned()
    };
    Ok(spans.into_iter().map(|(k, v)| (text(k), text(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(metadata: &'a [(String, String)]) -> CallHeader<'a> {
        CallHeader {
            service: "Test",
            method: "echo",
            kind: Kind::Bidi,
            timeout_us: Some(u64::MAX),
            metadata,
        }
    }

    fn payload(header: &CallHeader<'_>, args: &[u8]) -> Bytes {
        let mut bytes = postcard::to_allocvec(header).unwrap();
        bytes.extend_from_slice(args);
        Bytes::from(bytes)
    }

    fn decode(payload: &Bytes) -> Result<(IncomingHeader, Bytes), WireError> {
        decode_call(payload, &HeaderLimits::default())
    }

    fn is_too_large<T: fmt::Debug>(result: Result<T, WireError>) -> String {
        match result {
            Err(WireError::MessageTooLarge(m)) => m,
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
    }

    fn is_protocol<T: fmt::Debug>(result: Result<T, WireError>) {
        assert!(
            matches!(result, Err(WireError::Protocol(_))),
            "expected Protocol, got {result:?}"
        );
    }

    #[test]
    fn decodes_what_postcard_encodes() {
        let metadata = vec![
            ("x".to_string(), "1".to_string()),
            ("k".to_string(), "v".to_string()),
            ("k".to_string(), "w".to_string()),
            (String::new(), "é".repeat(100)),
        ];
        let sent = header(&metadata);
        let bytes = payload(&sent, &[1, 2, 3]);
        let (got, args) = decode(&bytes).unwrap();
        assert_eq!(&args[..], &[1, 2, 3]);
        assert_eq!(got.service(), "Test");
        assert_eq!(got.method(), "echo");
        assert_eq!(got.kind, Kind::Bidi);
        assert_eq!(got.timeout_us, Some(u64::MAX));
        let entries: Vec<(String, String)> = got
            .metadata()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(entries, metadata);
        assert_eq!(got.metadata_value("k"), Some("v"));
        assert_eq!(got.metadata_value("y"), None);
        assert_eq!(
            sent.check(&HeaderLimits::default()).unwrap(),
            bytes.len() - 3
        );
    }

    #[test]
    fn every_bound_is_met_exactly_and_refused_beyond() {
        let limits = HeaderLimits::default();
        // Names.
        let name = "n".repeat(MAX_NAME);
        let mut sent = header(&[]);
        sent.service = &name;
        sent.method = &name;
        decode(&payload(&sent, &[])).unwrap();
        let longer = "n".repeat(MAX_NAME + 1);
        sent.method = &longer;
        is_too_large(decode(&payload(&sent, &[])));
        is_too_large(sent.check(&limits));
        // Entries.
        let many: Vec<_> = (0..64).map(|i| (i.to_string(), String::new())).collect();
        decode(&payload(&header(&many), &[])).unwrap();
        let too_many: Vec<_> = (0..65).map(|i| (i.to_string(), String::new())).collect();
        let m = is_too_large(decode(&payload(&header(&too_many), &[])));
        assert!(m.contains("65 metadata entries"), "{m}");
        is_too_large(header(&too_many).check(&limits));
        // One entry.
        let big = vec![("key".to_string(), "v".repeat(8 * 1024 - 3))];
        decode(&payload(&header(&big), &[])).unwrap();
        let bigger = vec![("key".to_string(), "v".repeat(8 * 1024 - 2))];
        is_too_large(decode(&payload(&header(&bigger), &[])));
        is_too_large(header(&bigger).check(&limits));
        // The whole header: two large entries and a third that takes it to the limit.
        let mut full = vec![
            ("a".to_string(), "v".repeat(8000)),
            ("b".to_string(), "v".repeat(8000)),
            ("c".to_string(), String::new()),
        ];
        let size = header(&full).check(&limits).unwrap();
        // The value's length takes a second byte once it is 128 or more.
        full[2].1 = "v".repeat(16 * 1024 - size - 1);
        let bytes = payload(&header(&full), &[9]);
        assert_eq!(bytes.len(), 16 * 1024 + 1);
        let (_, args) = decode(&bytes).unwrap();
        assert_eq!(&args[..], &[9]);
        full[2].1.push('v');
        is_too_large(decode(&payload(&header(&full), &[9])));
        is_too_large(header(&full).check(&limits));
    }

    #[test]
    fn counts_are_checked_before_the_bytes_they_announce() {
        // Service "Mem", method "len", unary, no timeout, then 8,000,000 entries announced
        // and none sent: refused on the count, not as a truncated header.
        let mut bytes = vec![3, b'M', b'e', b'm', 3, b'l', b'e', b'n', 0, 0];
        bytes.extend([0x80, 0xa4, 0xe8, 0x03]);
        let m = is_too_large(decode(&Bytes::from(bytes)));
        assert!(m.contains("8000000 metadata entries"), "{m}");
        // A name announced at nearly 2^63 bytes.
        let mut bytes = vec![0xff; 8];
        bytes.push(0x7f);
        is_too_large(decode(&Bytes::from(bytes)));
        // Entries of empty keys and values, each within bounds, past the header's size.
        let limits = HeaderLimits {
            max_entries: 100_000,
            ..HeaderLimits::default()
        };
        let mut bytes = vec![3, b'M', b'e', b'm', 3, b'l', b'e', b'n', 0, 0];
        bytes.extend([0xa0, 0x8d, 0x06]); // 100,000
        bytes.resize(bytes.len() + 200_000, 0);
        let m = is_too_large(decode_call(&Bytes::from(bytes), &limits));
        assert!(m.contains("limit of 16384 bytes"), "{m}");
    }

    #[test]
    fn malformed_headers_are_protocol_violations() {
        let ok = payload(&header(&[]), &[]);
        // Truncated anywhere.
        for end in 0..ok.len() {
            is_protocol(decode(&ok.slice(..end)));
        }
        // Not UTF-8.
        is_protocol(decode(&Bytes::from_static(&[1, 0xff, 0, 0, 0, 0])));
        // Kind 5, and a kind past u32.
        is_protocol(decode(&Bytes::from_static(&[0, 0, 5, 0, 0])));
        is_protocol(decode(&Bytes::from_static(&[
            0, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0,
        ])));
        // Timeout tag 2; a timeout past u64.
        is_protocol(decode(&Bytes::from_static(&[0, 0, 0, 2, 0])));
        let mut bytes = vec![0, 0, 0, 1];
        bytes.extend([0xff; 9]);
        bytes.extend([0x02, 0]);
        is_protocol(decode(&Bytes::from(bytes)));
        // The largest timeout, and a varint with a redundant zero group, as postcard reads them.
        let mut bytes = vec![0, 0, 0, 1];
        bytes.extend([0xff; 9]);
        bytes.extend([0x01, 0x80, 0x00]);
        let (got, _) = decode(&Bytes::from(bytes)).unwrap();
        assert_eq!(got.timeout_us, Some(u64::MAX));
    }

    #[test]
    fn the_worked_example_decodes() {
        let bytes = Bytes::from_static(&[
            0x04, 0x54, 0x65, 0x73, 0x74, 0x04, 0x65, 0x63, 0x68, 0x6f, 0x00, 0x01, 0x80, 0x87,
            0xa7, 0x0e, 0x00, 0x02, 0x68, 0x69,
        ]);
        let (got, args) = decode(&bytes).unwrap();
        assert_eq!((got.service(), got.method()), ("Test", "echo"));
        assert_eq!((got.kind, got.timeout_us), (Kind::Unary, Some(30_000_000)));
        assert_eq!(got.metadata().count(), 0);
        assert_eq!(&args[..], &[0x02, 0x68, 0x69]);
    }
}
