//! Node identity: Ed25519 keys, [`NodeId`]s and the TLS rules that bind one to the other.
//!
//! Every node presents a self-signed X.509 certificate whose subject public key is its Ed25519
//! key. Nothing else in the certificate matters: no certificate authority, no names, no
//! validity dates. What authenticates a peer is the TLS 1.3 handshake signature, which only
//! the holder of the private key can produce; the [`NodeId`] is that public key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::Error;

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): a SEQUENCE holding the
/// algorithm identifier 1.3.101.112 and a 33-byte BIT STRING whose first byte is zero.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// RFC 4648 base32 without padding: 52 characters for a 32-byte key. Printed in lower case,
/// which keeps a node id usable as a DNS label and easy to read aloud.
const BASE32: data_encoding::Encoding = data_encoding::BASE32_NOPAD;

/// The identity of a node: its Ed25519 public key.
///
/// Printed (with `Display`) and parsed (with `FromStr`) as 52 lower-case base32 characters.
/// `Debug` shows the first 10 of them, which is what logs usually need.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// The node id whose public key is these 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        NodeId(bytes)
    }

    /// The 32 bytes of the Ed25519 public key.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 10 characters of the printed form, for logs.
    pub fn fmt_short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(10);
        s
    }

    /// Extracts the node id from a DER `SubjectPublicKeyInfo`, which must hold an Ed25519 key.
    fn from_spki(spki: &[u8]) -> Option<Self> {
        let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
        let key: [u8; 32] = key.try_into().ok()?;
        Some(NodeId(key))
    }

    /// The node id a peer's certificate proves, if the certificate is well formed and holds an
    /// Ed25519 key.
    pub(crate) fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, rustls::Error> {
        let parsed = webpki::EndEntityCert::try_from(cert).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        NodeId::from_spki(parsed.subject_public_key_info().as_ref()).ok_or_else(|| {
            rustls::Error::General("peer certificate does not hold an Ed25519 key".into())
        })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let upper = BASE32.encode(&self.0);
        f.write_str(&upper.to_ascii_lowercase())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.fmt_short())
    }
}

/// The error returned when a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id: expected 52 base32 characters encoding 32 bytes")]
pub struct ParseNodeIdError;

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 52 {
            return Err(ParseNodeIdError);
        }
        let bytes = BASE32
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| ParseNodeIdError)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| ParseNodeIdError)?;
        Ok(NodeId(bytes))
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A fixed-size array: 32 bytes on the wire, no length.
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = <[u8; 32]>::deserialize(deserializer)?;
        Ok(NodeId(bytes))
    }
}

/// A node's Ed25519 private key.
///
/// Generate one with [`SecretKey::generate`], keep it across restarts with
/// [`SecretKey::save`] and [`SecretKey::load`] (PKCS#8 PEM files).
#[derive(Clone)]
pub struct SecretKey {
    pkcs8: Arc<[u8]>,
    public: NodeId,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// Generates a new random key.
    pub fn generate() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .expect("the ring backend always generates Ed25519 keys");
        Self::from_pair(&pair)
    }

    fn from_pair(pair: &rcgen::KeyPair) -> Self {
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key_raw());
        SecretKey {
            pkcs8: pair.serialize_der().into(),
            public: NodeId(public),
        }
    }

    /// Parses a PKCS#8 PEM document holding an Ed25519 private key.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let pair = rcgen::KeyPair::from_pem(pem)
            .map_err(|e| Error::InvalidKey(format!("not a PKCS#8 PEM private key: {e}")))?;
        if pair.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(Error::InvalidKey("the key is not an Ed25519 key".into()));
        }
        Ok(Self::from_pair(&pair))
    }

    /// The key as a PKCS#8 PEM document.
    pub fn to_pem(&self) -> String {
        match self.key_pair() {
            Ok(pair) => pair.serialize_pem(),
            // The bytes were produced by `serialize_der` of a valid pair.
            Err(_) => String::new(),
        }
    }

    /// Reads a key written by [`SecretKey::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path).map_err(|e| Error::Io(Arc::new(e)))?;
        Self::from_pem(&pem)
    }

    /// Reads the key at `path`, or generates one and saves it there if the file does not exist.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.save(path)?;
                Ok(key)
            }
            Err(e) => Err(Error::Io(Arc::new(e))),
        }
    }

    /// Writes the key to `path` as PKCS#8 PEM, readable by its owner only on Unix.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| Error::Io(Arc::new(e)))?;
        file.write_all(self.to_pem().as_bytes())
            .map_err(|e| Error::Io(Arc::new(e)))
    }

    /// The node id of this key.
    pub fn public(&self) -> NodeId {
        self.public
    }

    fn key_pair(&self) -> Result<rcgen::KeyPair, Error> {
        rcgen::KeyPair::try_from(&self.pkcs8[..]).map_err(|e| Error::InvalidKey(e.to_string()))
    }

    /// A self-signed certificate for this key and the key in the form rustls wants.
    pub(crate) fn certificate(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Error> {
        let pair = self.key_pair()?;
        let params = rcgen::CertificateParams::new(vec!["dep2p".to_string()])
            .map_err(|e| Error::InvalidKey(e.to_string()))?;
        let cert = params
            .self_signed(&pair)
            .map_err(|e| Error::InvalidKey(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.to_vec()));
        Ok((cert.der().clone(), key))
    }
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
        let presented = NodeId::from_certificate(end_entity)?;
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
        NodeId::from_certificate(end_entity)?;
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
    NodeId::from_certificate(certs.first()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_its_string() {
        let key = SecretKey::generate();
        let id = key.public();
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert!(text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(text.parse::<NodeId>(), Ok(id));
        assert_eq!(text.to_ascii_uppercase().parse::<NodeId>(), Ok(id));
        assert!(text[..51].parse::<NodeId>().is_err());
        assert!("!".repeat(52).parse::<NodeId>().is_err());
    }

    #[test]
    fn node_id_is_32_bytes_in_messages() {
        let id = SecretKey::generate().public();
        let bytes = postcard::to_allocvec(&(id, 7u8)).unwrap();
        assert_eq!(bytes.len(), 33);
        assert_eq!(
            postcard::from_bytes::<(NodeId, u8)>(&bytes).unwrap(),
            (id, 7)
        );
    }

    #[test]
    fn key_survives_pem_and_files() {
        let key = SecretKey::generate();
        let again = SecretKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public(), key.public());

        let dir = std::env::temp_dir().join(format!("dep2p-key-{}", key.public().fmt_short()));
        let _ = std::fs::remove_file(&dir);
        let made = SecretKey::load_or_generate(&dir).unwrap();
        let loaded = SecretKey::load_or_generate(&dir).unwrap();
        assert_eq!(made.public(), loaded.public());
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn non_keys_are_refused() {
        assert!(matches!(
            SecretKey::from_pem("hello"),
            Err(Error::InvalidKey(_))
        ));
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(matches!(
            SecretKey::from_pem(&p256.serialize_pem()),
            Err(Error::InvalidKey(_))
        ));
    }

    #[test]
    fn certificate_carries_the_node_id() {
        let key = SecretKey::generate();
        let (cert, _) = key.certificate().unwrap();
        assert_eq!(NodeId::from_certificate(&cert).unwrap(), key.public());
    }
}
