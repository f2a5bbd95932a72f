//! Peers that are not well-formed dep2p nodes, at the TLS level: each is refused, and the node
//! goes on serving real peers.

mod common;

use std::sync::Arc;

use common::*;
use dep2p_runtime::quinn;
use dep2p_runtime::Node;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts any server certificate: these tests are about what the server accepts.
#[derive(Debug)]
struct TrustAnything;

impl ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A self-signed certificate (and its key) for `alg`, plus `extra` more certificates in the
/// chain.
fn identity(
    alg: &'static rcgen::SignatureAlgorithm,
    extra: usize,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["peer".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut chain = vec![cert.der().clone()];
    for _ in 0..extra {
        chain.push(cert.der().clone());
    }
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (chain, der)
}

/// Dials `server` with a raw QUIC client presenting `chain` and offering `alpn`.
async fn dial(
    server: &Node,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything))
        .with_client_auth_cert(chain, key)
        .unwrap();
    crypto.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint.connect(server.local_addr(), "dep2p").unwrap();
    let conn = connecting.await?;
    // A connection the server accepted at the TLS level may still be closed by it at once.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    match conn.close_reason() {
        Some(reason) => Err(reason),
        None => Ok(conn),
    }
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
