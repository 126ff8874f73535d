//! 32-byte blake3 digests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hexfmt::{self, HexError};

/// Length of a [`Hash`] in bytes.
pub const HASH_LEN: usize = 32;

/// A blake3 digest. Ordered bytewise; shown and parsed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash([u8; HASH_LEN]);

impl Hash {
    /// The all-zero digest, used as the "previous hash" of the genesis block.
    pub const ZERO: Hash = Hash([0; HASH_LEN]);

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Hash(bytes)
    }

    /// The digest bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// blake3 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// blake3 of the concatenation of `parts`, without building the concatenation.
    /// Callers that hash variable-length parts must make the split unambiguous
    /// themselves (fixed sizes, or length prefixes).
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(part);
        }
        Hash(*hasher.finalize().as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits are enough to tell digests apart in logs and traces.
        write!(f, "Hash({})", &hex::encode(&self.0[..4]))
    }
}

impl FromStr for Hash {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hexfmt::parse_fixed::<HASH_LEN>(s, "hash").map(Hash)
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        hexfmt::serialize_fixed(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        hexfmt::deserialize_fixed::<D, HASH_LEN>(deserializer, "hash").map(Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_known_vector() {
        let h = Hash::of(b"");
        assert_eq!(
            h.to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(h.to_string().parse::<Hash>().ok(), Some(h));
    }

    #[test]
    fn of_parts_equals_of_concatenation() {
        assert_eq!(Hash::of_parts(&[b"ab", b"", b"cd"]), Hash::of(b"abcd"));
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert!("zz".parse::<Hash>().is_err());
        assert!("00".parse::<Hash>().is_err());
        assert!("0".repeat(66).parse::<Hash>().is_err());
    }

    #[test]
    fn json_is_hex_and_binary_is_raw() -> Result<(), Box<dyn std::error::Error>> {
        let h = Hash::of(b"x");
        let json = serde_json::to_string(&h)?;
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<Hash>(&json)?, h);
        let bytes = crate::codec::encode(&h)?;
        assert_eq!(bytes.as_slice(), h.as_bytes());
        Ok(())
    }
}
