//! The node's endpoint: the loop that accepts connections, within the node's limits, and
//! hands each established one to the serving engine.

use std::sync::Arc;

use crate::connection::Link;
use crate::deadline::Deadline;
use crate::dispatch;
use crate::service::Services;
use crate::shared::Shared;
use crate::{tls, wire};

use super::admission::{Admission, Decision, Handshake};

/// Server settings for peers elsewhere and for peers on this machine.
pub(crate) struct ServerConfigs {
    pub(crate) wan: Arc<quinn::ServerConfig>,
    pub(crate) loopback: Arc<quinn::ServerConfig>,
}

/// Accepts connections until the endpoint closes. While the node shuts down, every attempt
/// is refused at once.
pub(crate) async fn accept(
    endpoint: quinn::Endpoint,
    servers: ServerConfigs,
    shared: Arc<Shared>,
    services: Arc<Services>,
    admission: Arc<Admission>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        if shared.is_shutting_down() {
            tracing::debug!(%remote, "connection refused: shutting down");
            incoming.refuse();
            continue;
        }
        let handshake = match admission.admit(remote, incoming.remote_address_validated()) {
            Decision::Accept(handshake) => handshake,
            Decision::Retry => {
                // Only an attempt that already carries a Retry token cannot be retried, and
                // such an attempt is validated.
                if let Err(err) = incoming.retry() {
                    err.into_incoming().refuse();
                }
                continue;
            }
            Decision::Refuse(limit) => {
                tracing::debug!(%remote, limit, "connection refused");
                incoming.refuse();
                continue;
            }
        };
        let server = if remote.ip().is_loopback() {
            Arc::clone(&servers.loopback)
        } else {
            Arc::clone(&servers.wan)
        };
        let connecting = match incoming.accept_with(server) {
            Ok(connecting) => connecting,
            Err(err) => {
                tracing::debug!(%remote, %err, "incoming connection failed");
                continue;
            }
        };
        tokio::spawn(establish(
            connecting,
            handshake,
            Arc::clone(&shared),
            Arc::clone(&services),
        ));
    }
}

/// Completes an accepted handshake within the connect timeout, then takes a connection place
/// and serves the connection, or closes it at once if every place is taken.
async fn establish(
    connecting: quinn::Connecting,
    handshake: Handshake,
    shared: Arc<Shared>,
    services: Arc<Services>,
) {
    let timeout = shared.config().connect_timeout;
    let quic = match Deadline::after(timeout).within(connecting).await {
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
    let Some(remote) = tls::remote_node_id(&quic) else {
        quic.close(wire::CLOSE_NORMAL.into(), b"no node id");
        return;
    };
    let Some(places) = handshake.establish() else {
        tracing::debug!(remote = %remote.fmt_short(), "connection closed: max_connections reached");
        quic.close(wire::CLOSE_REFUSED.into(), b"connection limit reached");
        return;
    };
    let link = Link::accepted(quic, remote, shared);
    dispatch::spawn(link, services, places);
}
