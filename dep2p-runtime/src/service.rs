//! What a node serves: the [`Service`] trait generated servers implement, the description of
//! a service's methods, and the registry of a node's services.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::datagram::IncomingDatagram;
use crate::error::Error;
use crate::incoming::{CallFuture, IncomingCall};
use crate::wire::Kind;

/// A service a node serves: what `#[service]` generates as `{Trait}Server`.
///
/// Register one with [`NodeBuilder::serve`](crate::NodeBuilder::serve) or
/// [`Node::serve`](crate::Node::serve).
pub trait Service: Send + Sync + 'static {
    /// The service's name on the wire.
    fn name(&self) -> &str;

    /// Routes one incoming call to its method.
    fn call(&self, call: IncomingCall) -> CallFuture;

    /// The service's methods and their kinds, as the node's reflection service lists them
    /// (see [`ReflectionClient`](crate::ReflectionClient)). `#[service]` lists every method of
    /// the trait, in the trait's order. Default: none, for a service written by hand that
    /// does not describe itself; it is still listed, by name.
    fn methods(&self) -> &'static [MethodInfo] {
        &[]
    }

    /// Routes one incoming datagram to its `#[datagram]` method. A datagram reaches the
    /// service only for a method that [`methods`](Self::methods) lists as
    /// [`Kind::Datagram`]. Default: no datagram methods (the datagram is dropped and
    /// counted).
    fn datagram(&self, datagram: IncomingDatagram) -> CallFuture {
        datagram.unknown_method()
    }
}

/// One method of a service: its name on the wire and its [`Kind`].
///
/// The item of [`ServiceInfo::methods`]; on the wire, a postcard struct of the name (a
/// string) and the kind (a varint, 0 to 4 as in the call header, 5 for a datagram method).
///
/// ```
/// use dep2p_runtime::{Kind, MethodInfo};
///
/// const LOGIN: MethodInfo = MethodInfo::new("login", Kind::Unary);
/// assert_eq!(LOGIN.name(), "login");
/// assert_eq!(LOGIN.kind(), Kind::Unary);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodInfo {
    name: Cow<'static, str>,
    kind: Kind,
}

impl MethodInfo {
    /// The method `name`, of kind `kind`.
    pub const fn new(name: &'static str, kind: Kind) -> Self {
        MethodInfo {
            name: Cow::Borrowed(name),
            kind,
        }
    }

    /// The method's name on the wire.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the method is called.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

/// A service a node serves: its name on the wire and its methods, as the reflection service
/// reports it. On the wire, a postcard struct of the name (a string) and a sequence of
/// [`MethodInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    name: String,
    methods: Vec<MethodInfo>,
}

impl ServiceInfo {
    /// The service `name` with `methods`.
    pub fn new(name: impl Into<String>, methods: Vec<MethodInfo>) -> Self {
        ServiceInfo {
            name: name.into(),
            methods,
        }
    }

    /// The service's name on the wire.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its methods, in the order the service lists them; empty for a service that does not
    /// describe itself (see [`Service::methods`]).
    pub fn methods(&self) -> &[MethodInfo] {
        &self.methods
    }
}

/// The services a node serves, by name.
#[derive(Default)]
pub(crate) struct Services {
    map: RwLock<HashMap<String, Arc<dyn Service>>>,
    /// The datagram methods served, by their id on the wire: the service, the name it is
    /// served under, and the method's name.
    datagrams: RwLock<HashMap<u32, DatagramRoute>>,
}

/// Where a datagram method's datagrams go: the service, its name, the method's name.
pub(crate) type DatagramRoute = (Arc<dyn Service>, Arc<str>, &'static str);

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        f.debug_list().entries(map.keys()).finish()
    }
}

impl Services {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn Service>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }

    /// Whether a service of this name is served.
    pub(crate) fn contains(&self, name: &str) -> bool {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(name)
    }

    /// Every service and its methods, by name.
    pub(crate) fn list(&self) -> Vec<ServiceInfo> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<ServiceInfo> = map
            .iter()
            .map(|(name, service)| ServiceInfo::new(name.clone(), service.methods().to_vec()))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// The datagram method with the wire id `id`, if one is served.
    pub(crate) fn datagram_route(&self, id: u32) -> Option<DatagramRoute> {
        let datagrams = self.datagrams.read().unwrap_or_else(|e| e.into_inner());
        datagrams.get(&id).cloned()
    }

    /// Adds `service`. Fails with [`Error::Config`] if a service of the same name is served
    /// already (calls meant for one would reach the other), or if one of its datagram methods
    /// has the same id on the wire as another served (`docs/PROTOCOL.md`, "Datagrams").
    pub(crate) fn add(&self, service: Arc<dyn Service>) -> Result<(), Error> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut datagrams = self.datagrams.write().unwrap_or_else(|e| e.into_inner());
        let name: Arc<str> = Arc::from(service.name());
        let mut routes: Vec<(u32, &'static str)> = Vec::new();
        for info in service.methods() {
            if info.kind() != Kind::Datagram {
                continue;
            }
            let id = crate::wire::method_id(&name, info.name());
            let clash = datagrams
                .get(&id)
                .map(|(_, other, method)| format!("{other}.{method}"))
                .or_else(|| {
                    (routes.iter().find(|(other, _)| *other == id))
                        .map(|(_, method)| format!("{name}.{method}"))
                });
            if let Some(clash) = clash {
                return Err(Error::Config(format!(
                    "the datagram methods {name}.{} and {clash} have the same id on the wire                      ({id:#010x}): rename one of them",
                    info.name()
                )));
            }
            routes.push((id, info.name()));
        }
        match map.entry(service.name().to_string()) {
            Entry::Occupied(entry) => Err(served_twice(entry.key())),
            Entry::Vacant(entry) => {
                for (id, method) in routes {
                    datagrams.insert(id, (Arc::clone(&service), Arc::clone(&name), method));
                }
                entry.insert(service);
                Ok(())
            }
        }
    }
}

/// Fails with [`Error::Config`] if two of `services` have the same name.
pub(crate) fn unique_names(services: &[Arc<dyn Service>]) -> Result<(), Error> {
    let mut names = HashSet::new();
    for service in services {
        if !names.insert(service.name()) {
            return Err(served_twice(service.name()));
        }
    }
    Ok(())
}

fn served_twice(name: &str) -> Error {
    Error::Config(format!(
        "two services are served under the name {name:?}: give each its own \
         (`#[service(name = \"...\")]`, or `Renamed` for another instance of a generic service)"
    ))
}

/// A service served under another name than its own: for one node serving a generic service
/// twice, each instance under its own name, or a service under the name of one it replaces.
/// Its client calls that name too (`{Trait}Client::with_name`).
///
/// ```no_run
/// # use dep2p_runtime::{Node, Renamed, Service};
/// # async fn run(counters: impl Service, totals: impl Service) -> Result<(), dep2p_runtime::Error> {
/// let node = Node::builder()
///     .serve(Renamed::new("counters", counters))
///     .serve(Renamed::new("totals", totals))
///     .bind("127.0.0.1:0")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Renamed<S> {
    name: String,
    service: S,
}

impl<S: Service> Renamed<S> {
    /// Serves `service` under `name`.
    pub fn new(name: impl Into<String>, service: S) -> Self {
        Renamed {
            name: name.into(),
            service,
        }
    }
}

impl<S: Service> Service for Renamed<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, call: IncomingCall) -> CallFuture {
        self.service.call(call)
    }

    fn methods(&self) -> &'static [MethodInfo] {
        self.service.methods()
    }

    fn datagram(&self, datagram: IncomingDatagram) -> CallFuture {
        self.service.datagram(datagram)
    }
}
