//! Stateless resets across restarts.
//!
//! quinn draws the key of its stateless reset tokens and the key of its connection ids at
//! random for every endpoint. A node derives both from its own key instead (HMAC-SHA256 keyed
//! with the node's key, over fixed labels; neither reveals the key). A node restarted with
//! the same key on the same address then recognises the connection ids its predecessor
//! issued, and answers a packet on one of those dead connections with a stateless reset
//! (RFC 9000, section 10.3) carrying the token the predecessor announced. The peer
//! authenticates the token and closes the connection at once, so its calls fail within a
//! round trip instead of waiting for the idle timeout.
//!
//! Two nodes running at once with the same key could reset each other's connections if a
//! packet of one reached the other; a key belongs to one running node.

use std::sync::Arc;

use crate::identity::SecretKey;

/// Labels of the derived keys; changing one makes restarted nodes miss their predecessors'
/// connections once.
const RESET_KEY_LABEL: &[u8] = b"dep2p/1 stateless reset key";
const CID_KEY_LABEL: &[u8] = b"dep2p/1 connection id key";

/// The key of the node's stateless reset tokens.
fn reset_key(key: &SecretKey) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.derive(RESET_KEY_LABEL))
}

/// The key of the node's connection ids.
fn cid_key(key: &SecretKey) -> u64 {
    let derived = key.derive(CID_KEY_LABEL);
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&derived[..8]);
    u64::from_le_bytes(cid_key)
}

/// The generator of the node's connection ids: random ids that carry a keyed check value, by
/// which the node tells ids it (or its predecessor) issued from others.
fn cid_generator(cid_key: u64) -> quinn_proto::HashedConnectionIdGenerator {
    quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)
}

/// quinn's endpoint settings with both keys derived from the node's key.
pub(crate) fn endpoint_config(key: &SecretKey) -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key(key)));
    let cid_key = cid_key(key);
    config.cid_generator(move || Box::new(cid_generator(cid_key)));
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::ConnectionIdGenerator;

    #[test]
    fn a_restarted_node_recognises_its_connection_ids() {
        let key = SecretKey::generate();
        let restarted = SecretKey::from_bytes(key.to_bytes());
        let cid = cid_generator(cid_key(&key)).generate_cid();
        assert!(cid_generator(cid_key(&restarted)).validate(&cid).is_ok());
        let other = SecretKey::generate();
        assert!(cid_generator(cid_key(&other)).validate(&cid).is_err());
    }

    #[test]
    fn a_restarted_node_makes_the_same_reset_tokens() {
        let key = SecretKey::generate();
        let restarted = SecretKey::from_bytes(key.to_bytes());
        let token = |key: &SecretKey| ring::hmac::sign(&reset_key(key), b"a connection id");
        assert_eq!(token(&key).as_ref(), token(&restarted).as_ref());
        assert_ne!(token(&key).as_ref(), token(&SecretKey::generate()).as_ref());
        // The reset key is derived, not the node's key itself.
        let raw = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.to_bytes());
        let raw = ring::hmac::sign(&raw, b"a connection id");
        assert_ne!(token(&key).as_ref(), raw.as_ref());
    }
}
