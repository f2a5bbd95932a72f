//! Server-side layers: tower [`Layer`]s around the services a node serves.
//!
//! A served call is a [`tower_service::Service`] taking an [`IncomingCall`] and answering
//! with its [`Outcome`]. [`Handler`] is the innermost one, which runs the call's method;
//! [`Layered`] wraps a service in a layer's service and serves that.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower_layer::Layer;

use crate::datagram::IncomingDatagram;
use crate::error::Error;
use crate::incoming::{CallFuture, IncomingCall};
use crate::outcome::Outcome;
use crate::service::{MethodInfo, Service};

/// The innermost service of a layered stack: runs each call's method, as the wrapped
/// [`Service`] routes it. Always ready; cheap to clone.
#[derive(Clone)]
pub struct Handler {
    service: Arc<dyn Service>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("service", &self.service.name())
            .finish()
    }
}

impl tower_service::Service<IncomingCall> for Handler {
    type Response = Outcome;
    type Error = Infallible;
    type Future = InfallibleCall;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: IncomingCall) -> Self::Future {
        InfallibleCall(self.service.call(call))
    }
}

/// The future of a [`Handler`]'s call: the call's [`CallFuture`], which cannot fail.
#[must_use = "futures do nothing unless polled"]
pub struct InfallibleCall(CallFuture);

impl fmt::Debug for InfallibleCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfallibleCall").finish_non_exhaustive()
    }
}

impl Future for InfallibleCall {
    type Output = Result<Outcome, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

/// A [`Service`] served through a tower [`Layer`]: each incoming call goes through the
/// layer's service before it reaches its method. Serve it like any service.
///
/// The layer's service takes an [`IncomingCall`], and answers with the call's [`Outcome`]:
/// it may look at the call ([`IncomingCall::context`]) and pass it on to the service it
/// wraps, or refuse it with [`IncomingCall::refuse`], which the caller gets as its error.
/// Its error type can be anything that converts to a boxed error (tower's
/// `BoxError`): an error from `poll_ready` refuses the call with [`Error::Overloaded`]; an
/// error from the call drops the call, whose caller gets [`Error::HandlerFailed`].
///
/// Each call clones the layer's service, as tower expects of a shared service: keep it
/// cheap to clone (share state through an `Arc`). It need not be `Sync`.
///
/// Layers compose like tower's `ServiceBuilder`, outermost first; a node's own layers
/// ([`NodeBuilder::layer`](crate::NodeBuilder::layer)) are outside those of a service.
///
/// ```
/// use dep2p_runtime::{service, Layered, Node};
/// # use dep2p_runtime::{CallFuture, Handler, IncomingCall, Outcome};
/// # use std::task::{Context, Poll};
/// # #[derive(Clone)] struct Logged<S>(S);
/// # impl<S: dep2p_runtime::tower_service::Service<IncomingCall, Response = Outcome>> dep2p_runtime::tower_service::Service<IncomingCall> for Logged<S> {
/// #     type Response = Outcome; type Error = S::Error; type Future = S::Future;
/// #     fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> { self.0.poll_ready(cx) }
/// #     fn call(&mut self, call: IncomingCall) -> S::Future { self.0.call(call) }
/// # }
/// # #[derive(Clone)] struct LogLayer;
/// # impl<S> dep2p_runtime::tower_layer::Layer<S> for LogLayer { type Service = Logged<S>; fn layer(&self, s: S) -> Logged<S> { Logged(s) } }
///
/// #[service]
/// pub trait Greeter {
///     async fn hello(&self, name: String) -> String;
/// }
/// # struct Polite;
/// # impl Greeter for Polite { async fn hello(&self, name: String) -> String { name } }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dep2p_runtime::Error> {
/// let node = Node::builder()
///     .serve(Layered::new(GreeterServer::new(Polite), LogLayer))
///     .bind("127.0.0.1:0")
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct Layered<S> {
    name: String,
    /// The wrapped service's methods, for the reflection service.
    methods: &'static [MethodInfo],
    /// The wrapped service itself, for its datagrams: they reach no layer.
    inner: Arc<dyn Service>,
    /// Behind a lock, only to clone it: tower services need not be `Sync`.
    service: Mutex<S>,
}

impl<S> fmt::Debug for Layered<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layered")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S> Layered<S> {
    /// Serves `service` through `layer`.
    pub fn new<T, L>(service: T, layer: L) -> Self
    where
        T: Service,
        L: Layer<Handler, Service = S>,
    {
        Self::from_arc(Arc::new(service), &layer)
    }

    pub(crate) fn from_arc<L>(service: Arc<dyn Service>, layer: &L) -> Self
    where
        L: Layer<Handler, Service = S>,
    {
        Layered {
            name: service.name().to_string(),
            methods: service.methods(),
            inner: Arc::clone(&service),
            service: Mutex::new(layer.layer(Handler { service })),
        }
    }
}

impl<S> Service for Layered<S>
where
    S: tower_service::Service<IncomingCall, Response = Outcome> + Clone + Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn methods(&self) -> &'static [MethodInfo] {
        self.methods
    }

    fn datagram(&self, datagram: IncomingDatagram) -> CallFuture {
        self.inner.datagram(datagram)
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        let mut service = self
            .service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Most layers are ready at once: the call goes in now, and the box holds only its
        // future. A layer that is not waits for readiness with the call's own waker.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                let fut = service.call(call);
                return Box::pin(async move { outcome(fut.await) });
            }
            Poll::Ready(Err(err)) => {
                let err = Error::Overloaded(error_text(err));
                return Box::pin(async move { call.refuse(err).await });
            }
            Poll::Pending => {}
        }
        Box::pin(async move {
            let ready = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
            if let Err(err) = ready.map_err(error_text) {
                return call.refuse(Error::Overloaded(err)).await;
            }
            outcome(service.call(call).await)
        })
    }
}

/// The outcome of a call through a layer: a layer's error fails the call.
fn outcome(
    result: Result<Outcome, impl Into<Box<dyn std::error::Error + Send + Sync>>>,
) -> Outcome {
    match result {
        Ok(outcome) => outcome,
        Err(err) => {
            let err = error_text(err);
            tracing::warn!(%err, "a layer failed a call");
            Outcome::Failed(Error::HandlerFailed(err))
        }
    }
}

/// The text of a layer's error.
fn error_text(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> String {
    err.into().to_string()
}

/// A node's layers, wrapping each service it serves: outermost first.
#[derive(Clone, Default)]
pub(crate) struct NodeLayers {
    wraps: Vec<Arc<Wrap>>,
}

type Wrap = dyn Fn(Arc<dyn Service>) -> Arc<dyn Service> + Send + Sync;

impl fmt::Debug for NodeLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} layers", self.wraps.len())
    }
}

impl NodeLayers {
    /// Adds `layer` inside those already there.
    pub(crate) fn push<L>(&mut self, layer: L)
    where
        L: Layer<Handler> + Send + Sync + 'static,
        Layered<L::Service>: Service,
    {
        self.wraps.push(Arc::new(move |service| {
            Arc::new(Layered::from_arc(service, &layer))
        }));
    }

    /// `service` inside every layer.
    pub(crate) fn wrap(&self, service: Arc<dyn Service>) -> Arc<dyn Service> {
        self.wraps
            .iter()
            .rev()
            .fold(service, |service, wrap| wrap(service))
    }
}
