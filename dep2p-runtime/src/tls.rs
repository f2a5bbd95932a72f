//! TLS: the rules that bind a connection to a [`NodeId`].
//!
//! Every node presents a self-signed X.509 certificate whose subject public key is its Ed25519
//! key. Nothing else in the certificate matters: no certificate authority, no names, no
//! validity dates. What authenticates a peer is the TLS 1.3 handshake signature, which only
//! the holder of the private key can produce; the [`NodeId`] is that public key.

use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::Error;
use crate::id::NodeId;
use crate::wire::ALPN;

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): a SEQUENCE holding the
/// algorithm identifier 1.3.101.112 and a 33-byte BIT STRING whose first byte is zero.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Extracts the node id from a DER `SubjectPublicKeyInfo`, which must hold an Ed25519 key.
fn node_id_from_spki(spki: &[u8]) -> Option<NodeId> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let key: [u8; 32] = key.try_into().ok()?;
    Some(NodeId::from_bytes(key))
}

/// The node id a peer's certificate proves, if the certificate is well formed and holds an
/// Ed25519 key.
pub(crate) fn node_id_from_certificate(cert: &CertificateDer<'_>) -> Result<NodeId, rustls::Error> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    node_id_from_spki(parsed.subject_public_key_info().as_ref()).ok_or_else(|| {
        rustls::Error::General("peer certificate does not hold an Ed25519 key".into())
    })
}

/// The TLS configuration shared by both directions.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn supported_algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn check_single_certificate(intermediates: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
    if intermediates.is_empty() {
        Ok(())
    } else {
        Err(rustls::Error::General(
            "a dep2p peer presents exactly one certificate".into(),
        ))
    }
}

/// Verifies the server's certificate when dialing: it must carry the expected node id.
#[derive(Debug)]
pub(crate) struct ExpectedPeer {
    expected: NodeId,
    /// The node id the server actually presented, for a precise error on mismatch.
    pub(crate) presented: Mutex<Option<NodeId>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ExpectedPeer {
    pub(crate) fn new(expected: NodeId) -> Self {
        ExpectedPeer {
            expected,
            presented: Mutex::new(None),
            algorithms: supported_algorithms(),
        }
    }
}

impl ServerCertVerifier for ExpectedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_single_certificate(intermediates)?;
        let presented = node_id_from_certificate(end_entity)?;
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(presented);
        }
        if presented == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Verifies a dialing client's certificate: any Ed25519 key is accepted; which node it is
/// becomes the connection's remote id.
#[derive(Debug)]
pub(crate) struct AnyPeer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyPeer {
    pub(crate) fn new() -> Self {
        AnyPeer {
            algorithms: supported_algorithms(),
        }
    }
}

impl ClientCertVerifier for AnyPeer {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_single_certificate(intermediates)?;
        node_id_from_certificate(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The verified node id of the peer of an established connection.
pub(crate) fn remote_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_from_certificate(certs.first()?).ok()
}

/// The QUIC server side of a node's TLS: any Ed25519 client key is accepted.
pub(crate) fn server_config(
    cert: &CertificateDer<'static>,
    private: &PrivateKeyDer<'static>,
) -> Result<QuicServerConfig, Error> {
    let mut crypto = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(AnyPeer::new()))
        .with_single_cert(vec![cert.clone()], private.clone_key())
        .map_err(|e| Error::InvalidKey(e.to_string()))?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    QuicServerConfig::try_from(crypto).map_err(|e| Error::Config(e.to_string()))
}

/// The QUIC client side of a node's TLS when dialing: `verifier` checks the expected key.
pub(crate) fn client_config(
    cert: &CertificateDer<'static>,
    private: &PrivateKeyDer<'static>,
    verifier: Arc<ExpectedPeer>,
) -> Result<QuicClientConfig, Error> {
    let mut crypto = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert.clone()], private.clone_key())
        .map_err(|e| Error::InvalidKey(e.to_string()))?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    QuicClientConfig::try_from(crypto).map_err(|e| Error::Config(e.to_string()))
}
