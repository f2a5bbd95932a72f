//! TLS: the rules that bind a connection to a [`NodeId`].
//!
//! Every node presents a self-signed X.509 certificate whose subject public key is its Ed25519
//! key. Nothing else in the certificate matters: no certificate authority, no names, no
//! validity dates. What authenticates a peer is the TLS 1.3 handshake signature, which only
//! the holder of the private key can produce; the [`NodeId`] is that public key.
//!
//! Both directions offer and accept Ed25519 signatures only, and no session is ever resumed:
//! the listener issues no session tickets and keeps no sessions, the dialer stores none, so
//! every connection proves both keys afresh.

use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::Error;
use crate::gate::Gate;
use crate::id::NodeId;
use crate::wire::alpn_protocols;

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): a SEQUENCE holding the
/// algorithm identifier 1.3.101.112 and a 33-byte BIT STRING whose first byte is zero.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The one signature algorithm a node verifies, and the one scheme it offers: Ed25519.
static ED25519_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[webpki::ring::ED25519],
    mapping: &[(SignatureScheme::ED25519, &[webpki::ring::ED25519])],
};

/// Why a peer's certificate is refused, beyond what rustls names itself.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(&'static str);

/// A refusal the peer learns as the TLS alert `certificate_unknown`.
fn refuse_certificate(why: &'static str) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Refusal(why),
    ))))
}

/// Extracts the node id from a DER `SubjectPublicKeyInfo`, which must hold an Ed25519 key.
fn node_id_from_spki(spki: &[u8]) -> Option<NodeId> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let key: [u8; 32] = key.try_into().ok()?;
    Some(NodeId::from_bytes(key))
}

/// The node id a peer's certificate proves, if the certificate is well formed and holds an
/// Ed25519 key.
///
/// "Well formed" is what webpki's end-entity parsing checks: DER of an X.509 v3 certificate
/// (version 3, a serial number, the signature algorithm twice and consistent, a validity
/// period, a SubjectPublicKeyInfo) with well-formed extensions and no unknown critical one.
/// Nothing about issuers, constraints, dates or names is checked, nor the certificate's own
/// signature.
pub(crate) fn node_id_from_certificate(cert: &CertificateDer<'_>) -> Result<NodeId, rustls::Error> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    node_id_from_spki(parsed.subject_public_key_info().as_ref())
        .ok_or_else(|| refuse_certificate("the peer's certificate does not hold an Ed25519 key"))
}

/// The cryptography of both directions: ring, verifying Ed25519 signatures only.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        signature_verification_algorithms: ED25519_ONLY,
        ..rustls::crypto::ring::default_provider()
    })
}

fn check_single_certificate(intermediates: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
    if intermediates.is_empty() {
        Ok(())
    } else {
        Err(refuse_certificate(
            "a dep2p peer presents exactly one certificate",
        ))
    }
}

fn verify_ed25519(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &ED25519_ONLY)
}

/// Verifies the server's certificate when dialing: it must carry the expected node id.
#[derive(Debug)]
pub(crate) struct ExpectedPeer {
    expected: NodeId,
    /// The node id the server actually presented, for a precise error on mismatch.
    pub(crate) presented: Mutex<Option<NodeId>>,
}

impl ExpectedPeer {
    pub(crate) fn new(expected: NodeId) -> Self {
        ExpectedPeer {
            expected,
            presented: Mutex::new(None),
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
            Err(access_denied())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_ed25519(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.supported_schemes()
    }
}

/// QUIC runs on TLS 1.3 only: a TLS 1.2 signature is never checked.
fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

/// The error rustls sends as the TLS alert `access_denied`: the key is valid, but not the
/// one wanted (or not one let in).
fn access_denied() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// The TLS alert a listener sends a dialer its [`Gate`] refuses: `access_denied` (49), which
/// QUIC carries as the transport error code `0x100 + 49`.
pub(crate) const REFUSED_ALERT: u8 = 49;

/// Verifies a dialing client's certificate: any Ed25519 key is accepted, unless a [`Gate`]
/// refuses it (the TLS alert `access_denied`); which node it is becomes the connection's
/// remote id.
#[derive(Debug, Default)]
pub(crate) struct AnyPeer {
    /// The rule of the listener, and the address of the attempt.
    gate: Option<(Gate, std::net::SocketAddr)>,
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
        let id = node_id_from_certificate(end_entity)?;
        match &self.gate {
            Some((gate, addr)) if !gate.allows(id, *addr) => {
                tracing::debug!(remote = %id.fmt_short(), %addr, "connection refused: not accepted");
                Err(access_denied())
            }
            _ => Ok(ClientCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_ed25519(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.supported_schemes()
    }
}

/// The verified node id of the peer of an established connection.
pub(crate) fn remote_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_from_certificate(certs.first()?).ok()
}

/// The TLS server side of a node: any Ed25519 client key that `gate` (with the attempt's
/// address) lets in is accepted (a client certificate is required), no session tickets are
/// issued and no sessions are kept. Protocol versions 1 to `version` are offered.
fn server_tls(
    cert: &CertificateDer<'static>,
    private: &PrivateKeyDer<'static>,
    gate: Option<(Gate, std::net::SocketAddr)>,
    version: u8,
) -> Result<rustls::ServerConfig, Error> {
    let mut crypto = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(AnyPeer { gate }))
        .with_single_cert(vec![cert.clone()], private.clone_key())
        .map_err(|e| Error::InvalidKey(e.to_string()))?;
    crypto.alpn_protocols = alpn_protocols(version);
    crypto.send_tls13_tickets = 0;
    crypto.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(crypto)
}

/// The QUIC server side of a node's TLS (see [`server_tls`]); with a `gate`, for the one
/// attempt from its address.
pub(crate) fn server_config(
    cert: &CertificateDer<'static>,
    private: &PrivateKeyDer<'static>,
    gate: Option<(Gate, std::net::SocketAddr)>,
    version: u8,
) -> Result<QuicServerConfig, Error> {
    QuicServerConfig::try_from(server_tls(cert, private, gate, version)?)
        .map_err(|e| Error::Config(e.to_string()))
}

/// The QUIC client side of a node's TLS when dialing: `verifier` checks the expected key; no
/// session is stored for resumption. Protocol versions 1 to `version` are offered.
pub(crate) fn client_config(
    cert: &CertificateDer<'static>,
    private: &PrivateKeyDer<'static>,
    verifier: Arc<ExpectedPeer>,
    version: u8,
) -> Result<QuicClientConfig, Error> {
    let mut crypto = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert.clone()], private.clone_key())
        .map_err(|e| Error::InvalidKey(e.to_string()))?;
    crypto.alpn_protocols = alpn_protocols(version);
    crypto.resumption = rustls::client::Resumption::disabled();
    QuicClientConfig::try_from(crypto).map_err(|e| Error::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ed25519_is_offered_and_verified() {
        let provider = crypto_provider();
        let verified = provider
            .signature_verification_algorithms
            .supported_schemes();
        assert_eq!(verified, [SignatureScheme::ED25519]);
        let id = crate::identity::SecretKey::generate().public();
        assert_eq!(
            ExpectedPeer::new(id).supported_verify_schemes(),
            [SignatureScheme::ED25519]
        );
        assert_eq!(
            AnyPeer::default().supported_verify_schemes(),
            [SignatureScheme::ED25519]
        );
    }

    #[test]
    fn the_listener_issues_no_tickets_and_keeps_no_sessions() {
        let key = crate::identity::SecretKey::generate();
        let (cert, private) = key.certificate().unwrap();
        let tls = server_tls(&cert, &private, None, 2).unwrap();
        assert_eq!(tls.send_tls13_tickets, 0);
        assert!(!tls.session_storage.can_cache());
        assert!(!tls.ticketer.enabled());
    }

    #[test]
    fn refusals_name_the_certificate_problem() {
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            node_id_from_certificate(&garbage),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding
            ))
        ));
        let cert = CertificateDer::from(vec![0u8]);
        assert!(matches!(
            check_single_certificate(&[cert]),
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                _
            )))
        ));
    }
}
