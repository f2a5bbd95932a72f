//! The loop that reads the QUIC datagrams a peer sends on a connection and hands each to its
//! `#[datagram]` method, within the connection's bound of handlers running at once.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use crate::connection::Link;
use crate::datagram::{Arrived, Datagrams, IncomingDatagram};
use crate::service::Services;
use crate::wire;

/// Serves the datagrams `link`'s peer sends, in a task of its own, until the connection
/// closes. The task holds no handle that keeps the connection open; each datagram handled
/// gets one while its handler runs.
pub(crate) fn spawn(link: &Arc<Link>, services: &Arc<Services>) {
    if !link.config().datagrams {
        return;
    }
    let run = receive(Arc::clone(link), Arc::clone(services));
    tokio::spawn(run.in_current_span());
}

async fn receive(link: Arc<Link>, services: Arc<Services>) {
    let state = Datagrams::of(link.state());
    let places = Arc::new(Semaphore::new(link.config().max_datagram_handlers));
    while let Ok(bytes) = link.quic().read_datagram().await {
        let received_at = Instant::now();
        state.received();
        let Some(connection) = link.try_connection() else {
            return;
        };
        if connection.is_shutting_down() {
            // A node shutting down takes no new work.
            state.dropped_busy();
            continue;
        }
        if connection.protocol_version() < 2 {
            state.dropped_unknown();
            continue;
        }
        let (head, args) = match wire::decode_datagram(&bytes) {
            Ok((head, args)) => (head, bytes.slice_ref(args)),
            Err(err) => {
                tracing::debug!(err = %crate::error::Error::from(err), "datagram dropped");
                state.dropped_undecodable();
                continue;
            }
        };
        let Some((service, name, method)) = services.datagram_route(head.method) else {
            state.dropped_unknown();
            continue;
        };
        // Never queued: a datagram that finds no free place is dropped.
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            state.dropped_busy();
            continue;
        };
        let datagram = IncomingDatagram::new(Arrived {
            connection,
            service: name,
            method,
            head,
            args,
            received_at,
            state: Arc::clone(&state),
            place,
        });
        link.shared().tracker().spawn(service.datagram(datagram));
    }
}
