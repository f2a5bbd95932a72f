//! The node's endpoint: the loop that accepts connections, within the node's limits, and
//! hands each established one to the serving engine.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::connection::Link;
use crate::deadline::Deadline;
use crate::dispatch;
use crate::error::Error;
use crate::gate::Gate;
use crate::service::Services;
use crate::shared::Shared;
use crate::{tls, wire};

use super::admission::{Admission, Decision, Handshake};
use super::registry::{Registered, Registry};

/// Server settings for peers elsewhere and for peers on this machine.
pub(crate) struct ServerConfigs {
    pub(crate) wan: Arc<quinn::ServerConfig>,
    pub(crate) loopback: Arc<quinn::ServerConfig>,
    /// With a rule deciding who may connect, what settings for each attempt are made of.
    pub(crate) gate: Option<Gated>,
}

/// What the server settings of one attempt are made of when a [`Gate`] decides who may
/// connect: its TLS verifier knows the attempt's address.
pub(crate) struct Gated {
    pub(crate) gate: Gate,
    pub(crate) certificate: rustls::pki_types::CertificateDer<'static>,
    pub(crate) private: rustls::pki_types::PrivateKeyDer<'static>,
    pub(crate) wan: Arc<quinn::TransportConfig>,
    pub(crate) loopback: Arc<quinn::TransportConfig>,
    /// The newest protocol version offered.
    pub(crate) version: u8,
}

impl ServerConfigs {
    /// The settings for an attempt from `remote`.
    fn for_attempt(&self, remote: SocketAddr) -> Result<Arc<quinn::ServerConfig>, Error> {
        let loopback = remote.ip().is_loopback();
        let Some(gated) = &self.gate else {
            return Ok(Arc::clone(if loopback {
                &self.loopback
            } else {
                &self.wan
            }));
        };
        let crypto = tls::server_config(
            &gated.certificate,
            &gated.private,
            Some((gated.gate.clone(), remote)),
            gated.version,
        )?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::clone(if loopback {
            &gated.loopback
        } else {
            &gated.wan
        }));
        Ok(Arc::new(server))
    }
}

/// Accepts connections until the endpoint closes. While the node shuts down, every attempt
/// is refused at once.
pub(crate) async fn accept(
    endpoint: quinn::Endpoint,
    servers: ServerConfigs,
    shared: Arc<Shared>,
    services: Arc<Services>,
    admission: Arc<Admission>,
    registry: Arc<Registry>,
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
        let server = match servers.for_attempt(remote) {
            Ok(server) => server,
            Err(err) => {
                tracing::warn!(%remote, %err, "connection refused: no server settings");
                incoming.refuse();
                continue;
            }
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
            Arc::clone(&registry),
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
    registry: Arc<Registry>,
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
    match registry.register(&link) {
        Registered::Entry(entry) => dispatch::spawn(link, services, (places, entry)),
        // Only a connection this node dialed is ever a duplicate it drops itself.
        Registered::Duplicate(_) => dispatch::spawn(link, services, places),
    }
}
