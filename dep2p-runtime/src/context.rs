//! [`CallContext`]: what a handler can know about the call it serves.

use std::fmt;
use std::future::Future;

use tokio::time::Instant;

use crate::connection::Connection;
use crate::id::NodeId;
use crate::wire::IncomingHeader;

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
        CallContext {
            connection,
            header,
            deadline,
        }
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
}
