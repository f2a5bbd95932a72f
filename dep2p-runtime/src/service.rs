//! What a node serves: the [`Service`] trait generated servers implement, and the registry of
//! a node's services.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::incoming::{CallFuture, IncomingCall};

/// A service a node serves: what `#[service]` generates as `{Trait}Server`.
///
/// Register one with [`NodeBuilder::serve`](crate::NodeBuilder::serve) or
/// [`Node::serve`](crate::Node::serve).
pub trait Service: Send + Sync + 'static {
    /// The service's name on the wire.
    fn name(&self) -> &str;

    /// Routes one incoming call to its method.
    fn call(&self, call: IncomingCall) -> CallFuture;
}

/// The services a node serves, by name.
#[derive(Default)]
pub(crate) struct Services {
    map: RwLock<HashMap<String, Arc<dyn Service>>>,
}

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

    /// Adds `service`, replacing one of the same name.
    pub(crate) fn add(&self, service: Arc<dyn Service>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.insert(service.name().to_string(), service);
    }
}
