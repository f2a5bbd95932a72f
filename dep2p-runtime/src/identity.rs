//! Node keys: the Ed25519 [`SecretKey`] whose public half is a node's [`NodeId`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Error;
use crate::id::NodeId;

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
            public: NodeId::from_bytes(public),
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
        assert_eq!(
            crate::tls::node_id_from_certificate(&cert).unwrap(),
            key.public()
        );
    }
}
