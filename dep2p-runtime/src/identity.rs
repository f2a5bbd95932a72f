//! Node keys: the Ed25519 [`SecretKey`] whose public half is a node's [`NodeId`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Error;
use crate::id::NodeId;
use crate::key_file;

/// DER of a PKCS#8 v1 Ed25519 private key (RFC 5208, RFC 8410) up to its 32-byte seed:
/// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }`.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// What follows the version in both PKCS#8 forms of an Ed25519 key, up to the seed: the
/// algorithm identifier and the two OCTET STRING headers.
const PKCS8_AFTER_VERSION: [u8; 11] = [
    0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A node's Ed25519 private key.
///
/// Generate one with [`SecretKey::generate`], keep it across restarts with
/// [`SecretKey::load_or_generate`] (or [`SecretKey::save`] and [`SecretKey::load`]; PKCS#8 PEM
/// files), or carry its 32 bytes with [`SecretKey::to_bytes`] and [`SecretKey::from_bytes`].
///
/// ```no_run
/// # fn run() -> Result<(), dep2p_runtime::Error> {
/// use dep2p_runtime::SecretKey;
///
/// // The same identity on every start: created on the first, read on the others.
/// let key = SecretKey::load_or_generate("node.key")?;
/// println!("node id: {}", key.public());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SecretKey {
    /// PKCS#8 v1 DER: [`PKCS8_V1_PREFIX`] and the seed.
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
    ///
    /// # Panics
    ///
    /// If the operating system provides no random numbers.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .expect("the operating system's random number generator failed");
        Self::from_bytes(seed)
    }

    /// The key whose Ed25519 secret (the 32-byte seed of RFC 8032) is `bytes`. Any 32 bytes
    /// are a key; keep them as secret as the key itself.
    ///
    /// ```
    /// use dep2p_runtime::SecretKey;
    ///
    /// let key = SecretKey::generate();
    /// let again = SecretKey::from_bytes(key.to_bytes());
    /// assert_eq!(again.public(), key.public());
    /// ```
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        use ring::signature::KeyPair;
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&bytes)
            .expect("any 32 bytes are an Ed25519 seed");
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        let mut pkcs8 = Vec::with_capacity(PKCS8_V1_PREFIX.len() + bytes.len());
        pkcs8.extend_from_slice(&PKCS8_V1_PREFIX);
        pkcs8.extend_from_slice(&bytes);
        SecretKey {
            pkcs8: pkcs8.into(),
            public: NodeId::from_bytes(public),
        }
    }

    /// The key's 32 secret bytes (its Ed25519 seed), as [`SecretKey::from_bytes`] takes them.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&self.pkcs8[PKCS8_V1_PREFIX.len()..]);
        seed
    }

    /// Parses a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`, version 1 or 2) holding
    /// an Ed25519 private key, such as `openssl genpkey -algorithm ed25519` writes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] if the text is not such a document or the key is not Ed25519.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let pair = rcgen::KeyPair::from_pem(pem)
            .map_err(|e| Error::InvalidKey(format!("not a PKCS#8 PEM private key: {e}")))?;
        if pair.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(Error::InvalidKey("the key is not an Ed25519 key".into()));
        }
        let seed = seed_from_pkcs8(&pair.serialize_der())
            .ok_or_else(|| Error::InvalidKey("unexpected PKCS#8 layout".into()))?;
        Ok(Self::from_bytes(seed))
    }

    /// The key as a PKCS#8 (version 1) PEM document.
    pub fn to_pem(&self) -> String {
        match self.key_pair() {
            Ok(pair) => pair.serialize_pem(),
            // The bytes are a PKCS#8 document this type built itself.
            Err(_) => String::new(),
        }
    }

    /// Reads a key file: PKCS#8 PEM, as [`SecretKey::save`] writes it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read (`NotFound` if there is none),
    /// [`Error::InvalidKey`] if it holds no Ed25519 key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path).map_err(|e| Error::Io(Arc::new(e)))?;
        Self::from_pem(&pem)
    }

    /// Reads the key at `path`, or generates one and saves it there if there is no file.
    ///
    /// Safe when several processes start at once with the same path: one key is written, the
    /// file never appears partly written, and every process returns that key. The file is
    /// created as [`SecretKey::save`] writes it (readable by its owner only on Unix) and put in
    /// place with a hard link, so the file system must support hard links.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read or created, [`Error::InvalidKey`] if an
    /// existing file holds no Ed25519 key.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        match Self::load(path) {
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            loaded => return loaded,
        }
        let key = Self::generate();
        match key_file::create(path, key.to_pem().as_bytes()) {
            Ok(()) => Ok(key),
            // Another process created it first: its key wins.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(Error::Io(Arc::new(e))),
        }
    }

    /// Writes the key to `path` as PKCS#8 PEM, replacing any file there.
    ///
    /// The key goes to a new file in the same directory (on Unix created with mode 0600:
    /// readable by its owner only), is synced to disk, and then renamed over `path`. So a
    /// crash leaves the old file or the new one, never a partial key, and the file at `path`
    /// ends with mode 0600 whatever mode an earlier file there had.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be written or `path` names no file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        key_file::replace(path.as_ref(), self.to_pem().as_bytes())
            .map_err(|e| Error::Io(Arc::new(e)))
    }

    /// A 32-byte key for one purpose, derived from this key: HMAC-SHA256 keyed with the seed,
    /// over a fixed `label` naming the purpose. The same key and label always give the same
    /// bytes; different labels give unrelated ones, and none reveals the key.
    pub(crate) fn derive(&self, label: &[u8]) -> [u8; 32] {
        let seed = &self.pkcs8[PKCS8_V1_PREFIX.len()..];
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed);
        let tag = ring::hmac::sign(&key, label);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
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

/// The 32-byte seed of a PKCS#8 Ed25519 key, version 1 or 2 (RFC 5958), in DER that has
/// already been parsed as such a key.
fn seed_from_pkcs8(der: &[u8]) -> Option<[u8; 32]> {
    let rest = der.strip_prefix(&[0x30])?;
    // The outer length: one byte, or a count of length bytes that follow it.
    let skip = match *rest.first()? {
        n if n < 0x80 => 1,
        n => 1 + usize::from(n & 0x7f),
    };
    let rest = rest.get(skip..)?;
    let rest = match rest.get(..3)? {
        [0x02, 0x01, 0x00 | 0x01] => &rest[3..],
        _ => return None,
    };
    let seed = rest.strip_prefix(&PKCS8_AFTER_VERSION[..])?;
    seed.get(..32)?.try_into().ok()
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

    /// A directory of its own under the system's temporary directory, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let unique = SecretKey::generate().public().fmt_short();
            let dir = std::env::temp_dir().join(format!("dep2p-{name}-{unique}"));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// The names of the files in the directory.
        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hex(text: &str) -> [u8; 32] {
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    }

    #[test]
    fn the_32_bytes_are_the_rfc_8032_secret() {
        // RFC 8032, section 7.1, test 1.
        let secret = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let public = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let key = SecretKey::from_bytes(secret);
        assert_eq!(key.public().as_bytes(), &public);
        assert_eq!(key.to_bytes(), secret);
        // PKCS#8 v1 PEM, as OpenSSL writes it for this key.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                   -----END PRIVATE KEY-----\n";
        assert_eq!(SecretKey::from_pem(pem).unwrap().to_bytes(), secret);
        assert_eq!(key.to_pem().replace("\r\n", "\n"), pem);
        assert_eq!(PKCS8_V1_PREFIX[5..], PKCS8_AFTER_VERSION);
    }

    #[test]
    fn generated_keys_survive_their_bytes_and_pem() {
        let key = SecretKey::generate();
        let again = SecretKey::from_bytes(key.to_bytes());
        assert_eq!(again.public(), key.public());
        assert_ne!(SecretKey::generate().to_bytes(), key.to_bytes());
        // PKCS#8 v2 (with the public key), as ring and rcgen generate it.
        let v2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let loaded = SecretKey::from_pem(&v2.serialize_pem()).unwrap();
        assert_eq!(loaded.public().as_bytes()[..], v2.public_key_raw()[..]);
    }

    #[cfg(unix)]
    #[test]
    fn save_replaces_the_file_and_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("save");
        let path = dir.0.join("node.key");
        std::fs::write(
            &path,
            "an older, longer file that anyone may read\n".repeat(10),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let key = SecretKey::generate();
        key.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert_eq!(SecretKey::load(&path).unwrap().public(), key.public());
        assert_eq!(
            dir.files(),
            ["node.key"],
            "a temporary file was left behind"
        );
    }

    #[test]
    fn racing_load_or_generate_agree_on_one_key() {
        let dir = TempDir::new("race");
        for round in 0..20 {
            let path = dir.0.join(format!("node-{round}.key"));
            let start = Arc::new(std::sync::Barrier::new(8));
            let racers: Vec<_> = (0..8)
                .map(|_| {
                    let (path, start) = (path.clone(), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        SecretKey::load_or_generate(&path).unwrap().public()
                    })
                })
                .collect();
            let ids: Vec<NodeId> = racers.into_iter().map(|r| r.join().unwrap()).collect();
            let on_disk = SecretKey::load(&path).unwrap().public();
            assert!(
                ids.iter().all(|id| *id == on_disk),
                "round {round}: {ids:?}"
            );
        }
        assert_eq!(dir.files().len(), 20, "{:?}", dir.files());
    }

    #[test]
    fn derived_keys_depend_on_the_key_and_the_label() {
        let key = SecretKey::generate();
        let reset = key.derive(b"one purpose");
        assert_eq!(reset, key.derive(b"one purpose"));
        assert_eq!(
            reset,
            SecretKey::from_bytes(key.to_bytes()).derive(b"one purpose")
        );
        assert_ne!(reset, key.derive(b"another purpose"));
        assert_ne!(reset, SecretKey::generate().derive(b"one purpose"));
        assert_ne!(reset, key.to_bytes());
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
