//! The end of a node: a graceful shutdown, closing at once, and waiting for either.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::context::CallContext;
use crate::deadline::Deadline;
use crate::shared::Shared;
use crate::wire;

use super::Node;

/// How long a finished shutdown waits for its connections' closes to reach their peers.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

impl Node {
    /// Shuts the node down gracefully: stops taking new calls and connections, lets the
    /// calls in flight finish for up to `grace`, then closes every connection, and completes
    /// once the node has closed (when [`closed`](Self::closed) does).
    ///
    /// Calls that arrive meanwhile fail with [`Error::ShuttingDown`](crate::Error::ShuttingDown)
    /// on the caller's side, as do calls still running when the grace period ends;
    /// [`connect`](Self::connect) fails with [`Error::Closed`](crate::Error::Closed). The answer
    /// of a call that finishes within the grace period is delivered before its connection
    /// closes.
    ///
    /// The shutdown runs in a task of its own, started by the first call; a later call, with
    /// whatever `grace`, waits for that one. Nodes that dial this one from then on are refused
    /// at once (QUIC's CONNECTION_REFUSED; [`Error::Unreachable`](crate::Error::Unreachable)
    /// for them), during the grace period and after it.
    ///
    /// Called from a handler of this node (an admin's "stop" call, say), it returns as soon
    /// as the shutdown has begun: waiting for the end would mean waiting for its own call.
    /// That handler's answer is then delivered like any call's that finishes within the grace
    /// period. (This holds in the handler's own task; a task it spawns and waits for would
    /// wait out the grace period.)
    ///
    /// ```no_run
    /// # async fn run(node: dep2p_runtime::Node) {
    /// use std::time::Duration;
    ///
    /// // Time to stop: the calls in flight get five seconds to finish.
    /// node.shutdown(Duration::from_secs(5)).await;
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not stop a shutdown once it has been polled: the node goes on
    /// refusing new calls, closes when its calls have finished or the grace period has
    /// passed, and [`closed`](Self::closed) completes then. To end it sooner, call
    /// [`close`](Self::close) or drop the last handle, which close the node at once.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        if inner.shared.begin_shutdown() {
            inner.health.shutting_down();
            // The endpoint keeps its server settings: the accept loop, and once the endpoint
            // is closed quinn itself, answer new attempts with a refusal rather than silence.
            tokio::spawn(drain(
                inner.endpoint.clone(),
                Arc::clone(&inner.shared),
                grace,
            ));
        }
        if self.serves_current_call() {
            return;
        }
        self.closed().await;
    }

    /// Closes every connection at once, failing the calls in flight: their callers get
    /// [`Error::ShuttingDown`](crate::Error::ShuttingDown). A shutdown in progress ends, and
    /// [`closed`](Self::closed) completes.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.shared.begin_shutdown();
        inner.health.shutting_down();
        inner.endpoint.close(wire::CLOSE_SHUTDOWN.into(), b"closed");
        inner.shared.set_closed();
    }

    /// Completes when the node has closed: a [`shutdown`](Self::shutdown) has finished,
    /// [`close`](Self::close) was called, or the last handle was dropped. It completes at once
    /// for a node already closed.
    ///
    /// A server whose services decide when it stops (a handler calling
    /// [`CallContext::node`](crate::CallContext::node) and then `shutdown`) runs until then:
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), dep2p_runtime::Error> {
    /// use dep2p_runtime::Node;
    ///
    /// let node = Node::builder().bind("0.0.0.0:4433").await?;
    /// node.closed().await;
    /// # Ok(()) }
    /// ```
    ///
    /// The future does not keep the node alive: made before the last handle is dropped, it
    /// completes then.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the future only watches the node.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.shared.closed()
    }

    /// Whether the current task is serving a call of this node.
    fn serves_current_call(&self) -> bool {
        CallContext::current()
            .is_some_and(|ctx| Arc::ptr_eq(ctx.connection().shared(), &self.inner.shared))
    }
}

/// The body of a graceful shutdown: waits up to `grace` for the calls in flight, closes
/// every connection, gives the closes a moment to reach the peers, then marks the node
/// closed.
async fn drain(endpoint: quinn::Endpoint, shared: Arc<Shared>, grace: Duration) {
    shared.tracker().close();
    let _ = Deadline::after(grace).within(shared.tracker().wait()).await;
    endpoint.close(wire::CLOSE_SHUTDOWN.into(), b"shutting down");
    let _ = Deadline::after(CLOSE_LINGER)
        .within(endpoint.wait_idle())
        .await;
    shared.set_closed();
}
