//! [`CallContext`]: what a handler can know about the call it serves.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use crate::connection::Connection;
use crate::id::NodeId;
use crate::metadata::MetadataSlot;
use crate::wire::{IncomingHeader, Kind};

tokio::task_local! {
    static CONTEXT: CallContext;
}

/// What a handler can know about the call it serves: who called, until when, with which
/// metadata, the connection to call the caller back on, and the node serving the call
/// ([`node`](CallContext::node)).
///
/// Reach it from inside a handler with [`CallContext::current`]. It is set for the handler's
/// own task; a task the handler spawns does not inherit it, so pass a clone along.
///
/// The names and metadata stay in the frame the call arrived in, which counts against the
/// node's memory budget for as long as a context (or a clone of it) is kept.
#[derive(Clone)]
pub struct CallContext {
    connection: Connection,
    header: IncomingHeader,
    deadline: Option<Instant>,
    /// The response metadata the handler sets: `None` where there is no response to carry it
    /// (a notification, a protocol version 1 connection).
    response: Option<Arc<MetadataSlot>>,
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("remote_id", &self.remote_id())
            .field("service", &self.service())
            .field("method", &self.method())
            .field("deadline", &self.deadline)
            .field("metadata", &self.metadata_entries().collect::<Vec<_>>())
            .finish()
    }
}

impl CallContext {
    pub(crate) fn new(
        connection: Connection,
        header: IncomingHeader,
        deadline: Option<Instant>,
    ) -> Self {
        let response = (header.kind != Kind::Notify && connection.protocol_version() >= 2)
            .then(|| Arc::new(MetadataSlot::new(connection.config().header)));
        CallContext {
            connection,
            header,
            deadline,
            response,
        }
    }

    /// The response metadata the handler sets, if the call carries any.
    pub(crate) fn response_metadata(&self) -> Option<&Arc<MetadataSlot>> {
        self.response.as_ref()
    }

    /// Runs `fut` with `self` as the current call's context.
    pub(crate) fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CONTEXT.scope(self, fut)
    }

    /// The context of the call the current task is serving; `None` outside a handler.
    pub fn current() -> Option<CallContext> {
        CONTEXT.try_with(CallContext::clone).ok()
    }

    /// The deadline of the call the current task is serving: `None` outside a handler or for a
    /// call without one. Reads the context in place, without cloning it.
    pub(crate) fn current_deadline() -> Option<Instant> {
        CONTEXT.try_with(|ctx| ctx.deadline).ok().flatten()
    }

    /// The verified node id of the caller.
    pub fn remote_id(&self) -> NodeId {
        self.connection.remote_id()
    }

    /// The connection the call arrived on. Build a client from it to call the caller back.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The service name the caller used.
    pub fn service(&self) -> &str {
        self.header.service()
    }

    /// The method name the caller used.
    pub fn method(&self) -> &str {
        self.header.method()
    }

    /// When the caller stops waiting, if it set a deadline. The handler is stopped then.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The value of a metadata entry the caller attached: the first one with `key`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.header.metadata_value(key)
    }

    /// All metadata entries, in the order the caller attached them.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.header.metadata()
    }

    /// Sets a response header: metadata the caller reads with
    /// [`ResponseMetadata::headers`](crate::ResponseMetadata::headers). Replaces an earlier
    /// header of the same key.
    ///
    /// Headers go out in one frame just before the handler's first item or, if it sends none,
    /// its final frame (its result, or the status of its failure). Returns whether the header
    /// will be sent: `false` once the headers have gone out, for a notification (which has no
    /// response), and on a connection that speaks protocol version 1 (which carries no
    /// response metadata; the header is dropped).
    ///
    /// Headers and trailers are each bounded by the node's header bounds
    /// ([`NodeBuilder::max_header_size`](crate::NodeBuilder::max_header_size) and its
    /// neighbours); a handler that sets more fails its call with
    /// [`Error::MessageTooLarge`](crate::Error::MessageTooLarge) instead of sending them.
    ///
    /// ```
    /// # use dep2p_runtime::CallContext;
    /// // Inside a handler:
    /// if let Some(ctx) = CallContext::current() {
    ///     ctx.set_header("server", "inventory/3");
    /// }
    /// ```
    pub fn set_header(&self, key: impl Into<String>, value: impl Into<String>) -> bool {
        self.response
            .as_ref()
            .is_some_and(|slot| slot.set_header(key.into(), value.into()))
    }

    /// Sets a response trailer: metadata the caller reads with
    /// [`ResponseMetadata::trailers`](crate::ResponseMetadata::trailers). Replaces an earlier
    /// trailer of the same key.
    ///
    /// Trailers go out with the call's final frame, whether the handler returned a value or
    /// failed: a handler that panics or runs out of time still sends the trailers it set
    /// before. Returns whether the trailer will be sent: `false` once the final frame has gone
    /// out (a task the handler spawned may still hold the context), for a notification, and on
    /// a protocol version 1 connection. Bounded as headers are
    /// ([`set_header`](Self::set_header)).
    ///
    /// ```
    /// # use dep2p_runtime::CallContext;
    /// // Inside a handler:
    /// if let Some(ctx) = CallContext::current() {
    ///     ctx.set_trailer("rows-scanned", 1234.to_string());
    /// }
    /// ```
    pub fn set_trailer(&self, key: impl Into<String>, value: impl Into<String>) -> bool {
        self.response
            .as_ref()
            .is_some_and(|slot| slot.set_trailer(key.into(), value.into()))
    }
}
