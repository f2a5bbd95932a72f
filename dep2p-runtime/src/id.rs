//! [`NodeId`]: who a node is, as 32 bytes, as text and in messages.

use std::fmt;
use std::str::FromStr;

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
}

/// A node id in its short form ([`NodeId::fmt_short`]), made only when it is formatted: a
/// log field that costs nothing unless written.
pub(crate) struct Short(pub(crate) NodeId);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.fmt_short())
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
