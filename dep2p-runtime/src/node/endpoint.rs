//! The node's endpoint: the loop that accepts connections, within the node's limits, and
//! hands each established one to the serving engine.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::connection::Link;
use crate::dispatch;
use crate::service::Services;
use crate::shared::Shared;
use crate::{tls, wire};

/// One place among a node's accepted connections, given back when dropped.
pub(crate) struct AcceptedSlot(Arc<Shared>);

impl AcceptedSlot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.config().max_connections;
        shared
            .accepted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| AcceptedSlot(Arc::clone(shared)))
    }
}

impl Drop for AcceptedSlot {
    fn drop(&mut self) {
        self.0.accepted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Server settings for peers elsewhere and for peers on this machine.
pub(crate) struct ServerConfigs {
    pub(crate) wan: Arc<quinn::ServerConfig>,
    pub(crate) loopback: Arc<quinn::ServerConfig>,
}

/// Accepts connections until the endpoint closes.
pub(crate) async fn accept(
    endpoint: quinn::Endpoint,
    servers: ServerConfigs,
    shared: Arc<Shared>,
    services: Arc<Services>,
) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.is_shutting_down() {
            incoming.refuse();
            continue;
        }
        let Some(slot) = AcceptedSlot::take(&shared) else {
            tracing::debug!("connection refused: max_connections reached");
            incoming.refuse();
            continue;
        };
        let server = if incoming.remote_address().ip().is_loopback() {
            Arc::clone(&servers.loopback)
        } else {
            Arc::clone(&servers.wan)
        };
        let connecting = match incoming.accept_with(server) {
            Ok(connecting) => connecting,
            Err(err) => {
                tracing::debug!(%err, "incoming connection failed");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let services = Arc::clone(&services);
        tokio::spawn(async move {
            let timeout = shared.config().connect_timeout;
            let quic = match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(quic)) => quic,
                Ok(Err(err)) => {
                    tracing::debug!(%err, "incoming connection failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("incoming connection timed out in its handshake");
                    return;
                }
            };
            match tls::remote_node_id(&quic) {
                Some(remote) => {
                    let link = Link::accepted(quic, remote, shared);
                    dispatch::spawn(link, services, slot);
                }
                None => quic.close(wire::CLOSE_NORMAL.into(), b"no node id"),
            }
        });
    }
}
