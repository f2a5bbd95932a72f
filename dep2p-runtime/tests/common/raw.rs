//! Raw QUIC peers built from quinn and rustls directly, for tests about what a node accepts
//! from peers that are not dep2p nodes (or not well-behaved ones).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dep2p_runtime::quinn;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts any server certificate: the tests using it are about what the server accepts.
#[derive(Debug)]
pub struct TrustAnything;

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
pub fn identity(
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

/// TLS for a raw client presenting `chain` with `key` (no certificate if `chain` is empty),
/// offering `alpn` and trusting any server.
pub fn client_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything));
    let mut crypto = if chain.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_auth_cert(chain, key).unwrap()
    };
    crypto.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    crypto
}

/// Dials `addr` from a new raw QUIC endpoint with `crypto`. A handshake the server completes
/// but closes at once (it checks the client's certificate after the client has finished)
/// counts as refused, with the server's reason.
pub async fn dial(
    addr: SocketAddr,
    crypto: rustls::ClientConfig,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(addr, "dep2p").unwrap().await?;
    match tokio::time::timeout(Duration::from_millis(300), conn.closed()).await {
        Ok(reason) => Err(reason),
        Err(_) => Ok(conn),
    }
}

/// The TLS alert a handshake was refused with, if the connection closed with one.
pub fn alert(err: &quinn::ConnectionError) -> Option<u8> {
    match err {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
        }
        _ => None,
    }
}

/// TLS alert numbers (RFC 8446, section 6), as the QUIC CRYPTO_ERROR codes 0x100 + alert carry
/// them.
pub mod alerts {
    pub const HANDSHAKE_FAILURE: u8 = 40;
    pub const BAD_CERTIFICATE: u8 = 42;
    pub const CERTIFICATE_UNKNOWN: u8 = 46;
    pub const ACCESS_DENIED: u8 = 49;
    pub const CERTIFICATE_REQUIRED: u8 = 116;
    pub const NO_APPLICATION_PROTOCOL: u8 = 120;
}

/// An Ed25519 identity for a raw peer, with the node id it proves.
pub fn ed25519_identity() -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    dep2p_runtime::NodeId,
) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["peer".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let id = dep2p_runtime::NodeId::from_bytes(key.public_key_raw().try_into().unwrap());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (vec![cert.der().clone()], der, id)
}

/// TLS 1.3 settings for a raw listener speaking dep2p's ALPN, asking for no client certificate.
pub fn server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> rustls::ServerConfig {
    let mut tls = server_builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![dep2p_runtime::ALPN.to_vec()];
    tls
}

/// The start of a raw listener's TLS settings: TLS 1.3 with ring.
pub fn server_builder() -> rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
}

/// A raw QUIC listener on loopback with `tls`.
pub fn listener(tls: rustls::ServerConfig) -> quinn::Endpoint {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}
