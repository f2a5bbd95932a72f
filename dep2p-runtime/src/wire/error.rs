//! What can go wrong encoding, decoding or reading frames, before the layers above turn it
//! into the public [`Error`](crate::Error).

/// A failure of the wire layer. Each variant becomes the [`Error`](crate::Error) variant of
/// the same name (a read error through its own mapping).
#[derive(Debug, Clone)]
pub(crate) enum WireError {
    /// A message over the size limit, to send or announced by the peer.
    MessageTooLarge(String),
    /// A value that could not be encoded or decoded.
    Decode(String),
    /// The peer broke the framing rules.
    Protocol(String),
    /// Reading the QUIC stream failed.
    Read(quinn::ReadError),
    /// Reading failed for another reason.
    ConnectionLost(String),
    /// The memory budget a reader waits on is gone: the node is closing.
    Closed,
}

impl WireError {
    /// The stream code a reader sends with STOP_SENDING when it gives up for this reason.
    pub(crate) fn stop_code(&self) -> u32 {
        match self {
            WireError::MessageTooLarge(_) | WireError::Protocol(_) => super::STREAM_PROTOCOL,
            _ => super::STREAM_CANCELLED,
        }
    }
}
