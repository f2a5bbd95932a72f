//! The one error type of the framework.

use std::sync::Arc;

use crate::id::NodeId;
use crate::wire::{self, StatusCode, WireError};

/// Everything that can go wrong with a call, a connection or a node, apart from the
/// application's own errors.
///
/// A method whose trait signature returns `Result<T, E>` is awaited as
/// `Result<Result<T, E>, Error>`: the outer `Result` is the framework's, the inner one is the
/// handler's value, carried intact. So `client.login(name).await??` reaches the `T`.
///
/// Every variant fails one call only; the connection and both nodes keep working unless the
/// variant says otherwise.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The call's deadline passed before it completed. The remote handler is stopped too.
    #[error("deadline exceeded")]
    Timeout,
    /// The call was cancelled: the other side dropped its end or reset the stream.
    #[error("call cancelled by the peer")]
    Cancelled,
    /// Nothing moved on a stream for longer than the idle-stream timeout.
    #[error("stream idle for longer than the idle-stream timeout")]
    IdleTimeout,
    /// A connection to the peer could not be established.
    #[error("peer unreachable at {addr}: {reason}")]
    Unreachable {
        /// The address dialed; for [`Node::dial`](crate::Node::dial), the first address tried
        /// (`0.0.0.0:0` if there was none), while `reason` lists them all.
        addr: std::net::SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The peer refused this node: its [`accept_if`](crate::NodeBuilder::accept_if) rule
    /// does not let this node connect. Reported as soon as the handshake fails, not after the
    /// connect timeout.
    #[error("refused by the peer at {addr}: {reason}")]
    Refused {
        /// The address dialed.
        addr: std::net::SocketAddr,
        /// What the peer said.
        reason: String,
    },
    /// The peer proved a different identity than the one dialed.
    #[error("peer is {presented:?}, not the expected {expected:?}")]
    WrongNodeId {
        /// The node id the caller asked for.
        expected: NodeId,
        /// The node id the peer's key proves.
        presented: NodeId,
    },
    /// The peer serves no service of this name.
    #[error("unknown service `{0}`")]
    UnknownService(String),
    /// The service exists on the peer but has no method of this name (or of this kind).
    #[error("unknown method: {0}")]
    UnknownMethod(String),
    /// A message was larger than the receiving side allows. Checked before allocating.
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// A message could not be decoded into the expected type.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The remote handler failed without producing a value (it panicked, for example).
    #[error("handler failed: {0}")]
    HandlerFailed(String),
    /// The callee refused the call: the caller may not make it (a server-side layer that
    /// checks who calls, or with which credentials, refused it; see
    /// [`IncomingCall::refuse`](crate::IncomingCall::refuse)).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The peer has too many calls in flight on this connection and refused this one.
    #[error("refused: {0}")]
    Overloaded(String),
    /// The connection broke (or was closed) while the call was in flight.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The peer is shutting down and takes no new calls.
    #[error("peer is shutting down")]
    ShuttingDown,
    /// The local node is shutting down or closed.
    #[error("local node is closed")]
    Closed,
    /// The peer broke the wire protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// An I/O error on the local machine (binding a socket, reading a key file).
    #[error("i/o error: {0}")]
    Io(Arc<std::io::Error>),
    /// A key could not be read or used.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The peer, or the connection to it, does not support what was asked: a `#[datagram]`
    /// call to a peer that does not accept QUIC datagrams or speaks protocol version 1.
    /// Reported at the call, before anything is sent.
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl Error {
    /// Whether the call ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout | Error::IdleTimeout)
    }

    /// Whether the error is about the connection rather than this one call: the caller should
    /// dial again before retrying.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::Refused { .. }
                | Error::WrongNodeId { .. }
                | Error::ConnectionLost(_)
                | Error::ShuttingDown
                | Error::Closed
        )
    }

    /// A short, stable `snake_case` name for the kind of error, as a log field or metric
    /// label: `"deadline_exceeded"`, `"cancelled"`, `"permission_denied"`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Error::Timeout => "deadline_exceeded",
            Error::Cancelled => "cancelled",
            Error::IdleTimeout => "idle_timeout",
            Error::Unreachable { .. } => "unreachable",
            Error::Refused { .. } => "refused",
            Error::WrongNodeId { .. } => "wrong_node_id",
            Error::UnknownService(_) => "unknown_service",
            Error::UnknownMethod(_) => "unknown_method",
            Error::MessageTooLarge(_) => "message_too_large",
            Error::Decode(_) => "decode",
            Error::HandlerFailed(_) => "handler_failed",
            Error::PermissionDenied(_) => "permission_denied",
            Error::Overloaded(_) => "overloaded",
            Error::ConnectionLost(_) => "connection_lost",
            Error::ShuttingDown => "shutting_down",
            Error::Closed => "closed",
            Error::Protocol(_) => "protocol",
            Error::Io(_) => "io",
            Error::InvalidKey(_) => "invalid_key",
            Error::Config(_) => "config",
            Error::Unsupported(_) => "unsupported",
        }
    }

    /// The status a handler side reports to the caller for this error.
    pub(crate) fn status_code(&self) -> StatusCode {
        match self {
            Error::Timeout => StatusCode::DeadlineExceeded,
            Error::Cancelled => StatusCode::Cancelled,
            Error::IdleTimeout => StatusCode::IdleTimeout,
            Error::UnknownService(_) => StatusCode::UnknownService,
            Error::UnknownMethod(_) => StatusCode::UnknownMethod,
            Error::MessageTooLarge(_) => StatusCode::MessageTooLarge,
            Error::Decode(_) => StatusCode::Decode,
            Error::Overloaded(_) => StatusCode::Overloaded,
            Error::PermissionDenied(_) => StatusCode::PermissionDenied,
            Error::ShuttingDown | Error::Closed => StatusCode::ShuttingDown,
            Error::Protocol(_) => StatusCode::Protocol,
            _ => StatusCode::HandlerFailed,
        }
    }

    /// The message a STATUS frame carries for this error: what [`Error::from_status`] puts
    /// back into the same variant.
    pub(crate) fn status_message(&self) -> String {
        match self {
            Error::UnknownService(m)
            | Error::UnknownMethod(m)
            | Error::MessageTooLarge(m)
            | Error::Decode(m)
            | Error::HandlerFailed(m)
            | Error::Overloaded(m)
            | Error::PermissionDenied(m)
            | Error::Protocol(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// The error a caller sees for a status received from the peer.
    pub(crate) fn from_status(code: u16, message: String) -> Error {
        match StatusCode::from_u16(code) {
            Some(StatusCode::Cancelled) => Error::Cancelled,
            Some(StatusCode::DeadlineExceeded) => Error::Timeout,
            Some(StatusCode::IdleTimeout) => Error::IdleTimeout,
            Some(StatusCode::UnknownService) => Error::UnknownService(message),
            Some(StatusCode::UnknownMethod) => Error::UnknownMethod(message),
            Some(StatusCode::MessageTooLarge) => Error::MessageTooLarge(message),
            Some(StatusCode::Decode) => Error::Decode(message),
            Some(StatusCode::HandlerFailed) => Error::HandlerFailed(message),
            Some(StatusCode::Overloaded) => Error::Overloaded(message),
            Some(StatusCode::PermissionDenied) => Error::PermissionDenied(message),
            Some(StatusCode::ShuttingDown) => Error::ShuttingDown,
            Some(StatusCode::Protocol) => Error::Protocol(message),
            None => Error::Protocol(format!("unknown status code {code}: {message}")),
        }
    }

    /// The error a STATUS frame's payload reports.
    pub(crate) fn from_status_payload(payload: &[u8]) -> Error {
        match wire::decode_status(payload) {
            Ok(status) => Error::from_status(status.code, status.message),
            Err(err) => err.into(),
        }
    }

    /// The error for a stream the peer reset or stopped with `code`.
    pub(crate) fn from_stream_code(code: quinn::VarInt) -> Error {
        let code = code.into_inner();
        match code {
            _ if code == u64::from(wire::STREAM_REFUSED) => Error::ShuttingDown,
            _ if code == u64::from(wire::STREAM_PROTOCOL) => {
                Error::Protocol("the peer reset the stream".into())
            }
            // 0 is what a QUIC stack sends when a stream handle is simply dropped.
            _ => Error::Cancelled,
        }
    }

    pub(crate) fn from_connection(err: &quinn::ConnectionError) -> Error {
        match err {
            quinn::ConnectionError::ApplicationClosed(close)
                if close.error_code.into_inner() == u64::from(wire::CLOSE_SHUTDOWN) =>
            {
                Error::ShuttingDown
            }
            quinn::ConnectionError::ApplicationClosed(close)
                if close.error_code.into_inner() == u64::from(wire::CLOSE_REFUSED) =>
            {
                Error::ConnectionLost("refused by the peer: its connection limit is reached".into())
            }
            quinn::ConnectionError::ApplicationClosed(close)
                if close.error_code.into_inner() == u64::from(wire::CLOSE_DUPLICATE) =>
            {
                Error::ConnectionLost(
                    "closed as a duplicate: another connection to the peer is kept".into(),
                )
            }
            quinn::ConnectionError::LocallyClosed => Error::Closed,
            other => Error::ConnectionLost(other.to_string()),
        }
    }

    pub(crate) fn from_read(err: quinn::ReadError) -> Error {
        match err {
            quinn::ReadError::Reset(code) => Error::from_stream_code(code),
            quinn::ReadError::ConnectionLost(e) => Error::from_connection(&e),
            quinn::ReadError::ClosedStream => Error::Cancelled,
            quinn::ReadError::IllegalOrderedRead => Error::Protocol("illegal ordered read".into()),
            quinn::ReadError::ZeroRttRejected => Error::ConnectionLost("0-RTT rejected".into()),
        }
    }

    pub(crate) fn from_write(err: quinn::WriteError) -> Error {
        match err {
            quinn::WriteError::Stopped(code) => Error::from_stream_code(code),
            quinn::WriteError::ConnectionLost(e) => Error::from_connection(&e),
            quinn::WriteError::ClosedStream => Error::Cancelled,
            quinn::WriteError::ZeroRttRejected => Error::ConnectionLost("0-RTT rejected".into()),
        }
    }
}

/// The longest text a peer sent (a service or method name) that goes into an error or a log
/// line whole; longer text is cut.
const PEER_TEXT_MAX: usize = 64;

/// Text a peer sent, cut to a length fit for errors and logs.
pub(crate) fn peer_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= PEER_TEXT_MAX {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut cut = PEER_TEXT_MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &text[..cut], text.len()))
}

impl From<WireError> for Error {
    fn from(err: WireError) -> Self {
        match err {
            WireError::MessageTooLarge(m) => Error::MessageTooLarge(m),
            WireError::Decode(m) => Error::Decode(m),
            WireError::Protocol(m) => Error::Protocol(m),
            WireError::Read(read) => Error::from_read(read),
            WireError::ConnectionLost(m) => Error::ConnectionLost(m),
            WireError::Closed => Error::Closed,
        }
    }
}

impl From<quinn::ConnectionError> for Error {
    fn from(err: quinn::ConnectionError) -> Self {
        Error::from_connection(&err)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(Arc::new(err))
    }
}
