//! Peers that are not well-formed dep2p nodes, at the TLS level: each is refused, and the node
//! goes on serving real peers.

mod common;

use common::raw::{self, identity};
use common::*;
use dep2p_runtime::quinn;
use dep2p_runtime::Node;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Dials `server` with a raw QUIC client presenting `chain` and offering `alpn`.
async fn dial(
    server: &Node,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    raw::dial(server.local_addr(), raw::client_tls(chain, key, alpn)).await
}

async fn still_serves(server: &Node) {
    let client = node(Node::builder()).await;
    let conn = client
        .connect(server.local_addr(), server.id())
        .await
        .unwrap();
    assert_eq!(echo(&conn, "fine").await.unwrap(), "fine");
}

async fn server() -> Node {
    node(Node::builder().serve(TestService { probe: probe() })).await
}

#[tokio::test]
async fn an_ed25519_peer_speaking_dep2p_is_accepted() {
    // The baseline for the refusals below: the same raw client with a proper identity.
    let server = server().await;
    let (chain, key) = identity(&rcgen::PKCS_ED25519, 0);
    let conn = dial(&server, chain, key, &[dep2p_runtime::ALPN]).await;
    assert!(conn.is_ok(), "{conn:?}");
}

/// A peer written for version 1 offers `dep2p/1` alone: it is served, in version 1.
#[tokio::test]
async fn a_peer_offering_only_dep2p_1_is_accepted_in_version_1() {
    let server = server().await;
    let (chain, key) = identity(&rcgen::PKCS_ED25519, 0);
    let conn = dial(&server, chain, key, &[dep2p_runtime::ALPN_V1])
        .await
        .expect("a dep2p/1 dialer is accepted");
    let data = conn.handshake_data().unwrap();
    let data = data
        .downcast::<dep2p_runtime::quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(data.protocol.as_deref(), Some(&b"dep2p/1"[..]));
}

#[tokio::test]
async fn a_key_that_is_not_ed25519_is_refused() {
    let server = server().await;
    let (chain, key) = identity(&rcgen::PKCS_ECDSA_P256_SHA256, 0);
    let result = dial(&server, chain, key, &[dep2p_runtime::ALPN]).await;
    assert!(result.is_err(), "a P-256 client certificate was accepted");
    still_serves(&server).await;
}

#[tokio::test]
async fn a_certificate_chain_is_refused() {
    let server = server().await;
    let (chain, key) = identity(&rcgen::PKCS_ED25519, 1);
    let result = dial(&server, chain, key, &[dep2p_runtime::ALPN]).await;
    assert!(result.is_err(), "a chain of two certificates was accepted");
    still_serves(&server).await;
}

#[tokio::test]
async fn another_protocol_is_refused() {
    let server = server().await;
    let (chain, key) = identity(&rcgen::PKCS_ED25519, 0);
    let result = dial(&server, chain, key, &[b"h3"]).await;
    assert!(result.is_err(), "a peer offering only h3 was accepted");
    still_serves(&server).await;
}

#[tokio::test]
async fn no_protocol_is_refused() {
    let server = server().await;
    let (chain, key) = identity(&rcgen::PKCS_ED25519, 0);
    let result = dial(&server, chain, key, &[]).await;
    assert!(result.is_err(), "a peer offering no ALPN was accepted");
    still_serves(&server).await;
}
