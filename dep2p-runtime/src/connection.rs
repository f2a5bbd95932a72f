//! A connection between two nodes, and the loop that serves the calls arriving on it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::Error;
use crate::identity::NodeId;
use crate::node::{AcceptedSlot, Shared};
use crate::server::{reject, IncomingCall};
use crate::wire::{self, FrameReader, Kind, TAG_CALL};

/// A mutually authenticated QUIC connection to another node.
///
/// Cheap to clone. Either side can call over it: build a generated client with
/// `{Trait}Client::new(connection)`. Calls the peer makes on it are served by this node's
/// services, whichever side dialed.
#[derive(Clone)]
pub struct Connection {
    // One reference count for a clone: every call clones its connection.
    inner: Arc<Inner>,
}

struct Inner {
    quic: quinn::Connection,
    remote: NodeId,
    shared: Arc<Shared>,
    /// Bytes of large incoming frames this connection may have in memory at once.
    budget: Arc<Semaphore>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("remote_id", &self.inner.remote)
            .field("remote_address", &self.inner.quic.remote_address())
            .finish()
    }
}

impl Connection {
    /// Wraps an established QUIC connection and starts serving the calls that arrive on it.
    pub(crate) fn start(
        quic: quinn::Connection,
        remote: NodeId,
        shared: Arc<Shared>,
        slot: Option<AcceptedSlot>,
    ) -> Self {
        let budget = Arc::new(Semaphore::new(shared.config().connection_buffer()));
        let conn = Connection {
            inner: Arc::new(Inner {
                quic,
                remote,
                shared,
                budget,
            }),
        };
        let serving = conn.clone();
        tokio::spawn(async move {
            serve(serving).await;
            // The connection is closed: its place is free.
            drop(slot);
        });
        conn
    }

    /// The verified node id of the peer.
    pub fn remote_id(&self) -> NodeId {
        self.inner.remote
    }

    /// The peer's current UDP address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.quic.remote_address()
    }

    /// The current round-trip time estimate.
    pub fn rtt(&self) -> std::time::Duration {
        self.inner.quic.rtt()
    }

    /// Closes the connection at once. Calls in flight on it fail with [`Error::Closed`] here
    /// and [`Error::ConnectionLost`] on the peer.
    pub fn close(&self) {
        self.inner.quic.close(wire::CLOSE_NORMAL.into(), b"closed");
    }

    /// Completes when the connection is closed, with the reason.
    pub async fn closed(&self) -> Error {
        Error::from_connection(&self.inner.quic.closed().await)
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<Error> {
        self.inner
            .quic
            .close_reason()
            .map(|e| Error::from_connection(&e))
    }

    /// The underlying QUIC connection.
    ///
    /// Every stream the peer opens on it is read as a dep2p call, so open streams on it
    /// directly only to speak the protocol of `docs/PROTOCOL.md` yourself.
    pub fn quic(&self) -> &quinn::Connection {
        &self.inner.quic
    }

    pub(crate) fn config(&self) -> &Config {
        self.inner.shared.config()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.inner.shared.is_shutting_down()
    }

    /// A frame reader for a stream of this connection.
    pub(crate) fn reader(&self, recv: quinn::RecvStream) -> FrameReader {
        let max = self.config().max_message_size;
        FrameReader::new(recv, max, Arc::clone(&self.inner.budget))
    }
}

/// Accepts the streams the peer opens and serves each as a call, until the connection closes.
async fn serve(conn: Connection) {
    let limit = Arc::new(Semaphore::new(conn.config().max_concurrent_calls));
    // Notifications arrive on unidirectional streams, every other call on a bidirectional
    // one; each kind has its own accept loop, so neither polls the other's.
    let uni = tokio::spawn(serve_notifications(conn.clone(), Arc::clone(&limit)));
    while let Ok((send, recv)) = conn.inner.quic.accept_bi().await {
        let call = serve_stream(conn.clone(), Some(send), recv, Arc::clone(&limit));
        conn.inner.shared.tracker().spawn(call);
    }
    let _ = uni.await;
}

async fn serve_notifications(conn: Connection, limit: Arc<Semaphore>) {
    while let Ok(recv) = conn.inner.quic.accept_uni().await {
        let call = serve_stream(conn.clone(), None, recv, Arc::clone(&limit));
        conn.inner.shared.tracker().spawn(call);
    }
}

/// Reads one call's header and hands the call to its service.
async fn serve_stream(
    conn: Connection,
    send: Option<quinn::SendStream>,
    recv: quinn::RecvStream,
    limit: Arc<Semaphore>,
) {
    let config = conn.config();
    let mut reader = conn.reader(recv);
    let first = tokio::time::timeout(config.header_timeout, reader.frame()).await;
    let payload = match first {
        Ok(Ok(Some((TAG_CALL, payload)))) => payload,
        Ok(Ok(Some((tag, _)))) => {
            let err = Error::Protocol(format!("expected a call header, got frame tag {tag:#04x}"));
            return refuse(&conn, reader, send, err).await;
        }
        // The peer opened a stream and finished it without a call: nothing to answer.
        Ok(Ok(None)) => {
            return refuse(&conn, reader, send, Error::Protocol("empty stream".into())).await
        }
        Ok(Err(err)) => return refuse(&conn, reader, send, err).await,
        Err(_) => {
            let err = Error::Protocol(format!("no call header within {:?}", config.header_timeout));
            return refuse(&conn, reader, send, err).await;
        }
    };
    let (header, args) = match wire::decode_call(&payload) {
        Ok(call) => call,
        Err(err) => return refuse(&conn, reader, send, err).await,
    };
    if send.is_none() != (header.kind == Kind::Notify) {
        let err =
            Error::Protocol("notifications, and only they, use unidirectional streams".into());
        return refuse(&conn, reader, send, err).await;
    }
    if conn.inner.shared.is_shutting_down() {
        return refuse(&conn, reader, send, Error::ShuttingDown).await;
    }
    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
        let err = Error::Overloaded(format!(
            "more than {} calls in flight on this connection",
            config.max_concurrent_calls
        ));
        return refuse(&conn, reader, send, err).await;
    };
    let Some(service) = conn.inner.shared.service(header.service.as_str()) else {
        let err = Error::UnknownService(header.service.as_str().to_string());
        return refuse(&conn, reader, send, err).await;
    };
    let call = IncomingCall::new(conn.clone(), header, args, reader, send, permit);
    service.call(call).await;
}

/// Answers a stream that will not be served, telling the peer to stop sending on it.
async fn refuse(
    conn: &Connection,
    mut reader: FrameReader,
    send: Option<quinn::SendStream>,
    err: Error,
) {
    tracing::debug!(%err, "call refused");
    let code = match err {
        Error::ShuttingDown => wire::STREAM_REFUSED,
        Error::Protocol(_) | Error::MessageTooLarge(_) => wire::STREAM_PROTOCOL,
        _ => wire::STREAM_CANCELLED,
    };
    reader.try_finish();
    reader.stop(code);
    reject(conn, send, &err).await;
}
