//! Hex text forms and serde helpers shared by the fixed-size byte types.
//!
//! Human-readable formats (JSON, TOML) see lowercase hex strings; the binary codec
//! sees the raw bytes as a fixed-size tuple, with no length prefix.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

/// Why a hex string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// The string has characters outside 0-9a-fA-F or an odd length.
    #[error("{what} is not valid hex: {reason}")]
    NotHex {
        /// What was being parsed ("hash", "public key", ...).
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// The string decodes to the wrong number of bytes.
    #[error("{what} must be {expected} bytes ({} hex digits), got {got} bytes", expected * 2)]
    WrongLength {
        /// What was being parsed.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        got: usize,
    },
}

/// Parses exactly `N` bytes of hex.
pub fn parse_fixed<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], HexError> {
    let bytes = hex::decode(s.trim()).map_err(|e| HexError::NotHex {
        what,
        reason: e.to_string(),
    })?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| HexError::WrongLength {
        what,
        expected: N,
        got: bytes.len(),
    })
}

pub(crate) fn serialize_fixed<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&hex::encode(bytes))
    } else {
        let mut tuple = serializer.serialize_tuple(N)?;
        for b in bytes {
            tuple.serialize_element(b)?;
        }
        tuple.end()
    }
}

pub(crate) fn deserialize_fixed<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
    what: &'static str,
) -> Result<[u8; N], D::Error> {
    if deserializer.is_human_readable() {
        let s: String = serde::Deserialize::deserialize(deserializer)?;
        parse_fixed::<N>(&s, what).map_err(de::Error::custom)
    } else {
        deserializer.deserialize_tuple(N, FixedVisitor::<N>(PhantomData))
    }
}

struct FixedVisitor<const N: usize>(PhantomData<[u8; N]>);

impl<'de, const N: usize> Visitor<'de> for FixedVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0u8; N];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        Ok(out)
    }
}
