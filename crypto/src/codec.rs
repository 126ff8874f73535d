//! The one canonical binary encoding of Mosaic: every byte that is hashed, signed,
//! stored or sent goes through this module, and nothing else calls bincode.
//!
//! The configuration is fixed forever (changing it changes every hash): bincode 2.0.1,
//! little-endian, fixed-width integers (so every value has exactly one encoding),
//! serde-derived layouts. Sequences and strings carry a u64 length prefix.
//!
//! Decoding is for untrusted bytes: the caller gives a byte limit; input longer than
//! the limit is refused before any parsing, a length prefix that claims more than the
//! limit is refused before allocating, input that ends early is `Truncated`, and
//! bytes left over after the value are `TrailingBytes`.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The hard ceiling for any single decode, whatever limit a caller asks for.
pub const DECODE_BYTES_MAX: usize = 256 * 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<DECODE_BYTES_MAX>,
>;

const fn config() -> Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<DECODE_BYTES_MAX>()
}

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The input is longer than the caller's limit.
    #[error("input of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Bytes given.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The input ended before the value was complete.
    #[error("input ended early: truncated or cut off")]
    Truncated,
    /// The value ended before the input did.
    #[error("{extra} unexpected bytes after the end of the value")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
    /// A length prefix or the value's size goes past the limit.
    #[error("a length inside the input claims more than the limit of {limit} bytes")]
    LengthOverLimit {
        /// The limit.
        limit: usize,
    },
    /// The bytes do not form a valid value (bad enum tag, bad UTF-8, a field that
    /// failed its own validation, ...).
    #[error("malformed input: {0}")]
    Malformed(String),
    /// The value could not be encoded (only for types whose serializer can fail).
    #[error("cannot encode value: {0}")]
    Encode(String),
}

/// The canonical bytes of `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Appends the canonical bytes of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes exactly one value from `bytes`, which must be at most `limit` bytes long
/// and hold nothing after the value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    let limit = limit.min(DECODE_BYTES_MAX);
    if bytes.len() > limit {
        return Err(CodecError::Oversized {
            len: bytes.len(),
            limit,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| map_decode_error(e, limit))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

fn map_decode_error(error: bincode::error::DecodeError, limit: usize) -> CodecError {
    use bincode::error::DecodeError as E;
    match error {
        E::UnexpectedEnd { .. } => CodecError::Truncated,
        E::LimitExceeded => CodecError::LengthOverLimit { limit },
        // serde-mode Vec/String decoding reports its length claim through here
        // when a prefix is larger than the remaining input.
        E::Io { inner, .. } if inner.kind() == std::io::ErrorKind::UnexpectedEof => {
            CodecError::Truncated
        }
        other => CodecError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        height: u64,
        name: String,
        body: Vec<u8>,
        tag: Option<u32>,
        kind: Kind,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        A,
        B(u16),
    }

    fn sample() -> Sample {
        Sample {
            height: 7,
            name: "mosaic".into(),
            body: vec![1, 2, 3],
            tag: Some(9),
            kind: Kind::B(3),
        }
    }

    #[test]
    fn golden_bytes() -> Result<(), CodecError> {
        // Changing these bytes changes every hash and signature: it must be deliberate.
        let bytes = encode(&sample())?;
        let expected: Vec<u8> = [
            &7u64.to_le_bytes()[..],
            &6u64.to_le_bytes(),
            b"mosaic",
            &3u64.to_le_bytes(),
            &[1, 2, 3],
            &[1],
            &9u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &3u16.to_le_bytes(),
        ]
        .concat();
        assert_eq!(bytes, expected);
        Ok(())
    }

    #[test]
    fn rejects_trailing_bytes() -> Result<(), CodecError> {
        let mut bytes = encode(&sample())?;
        bytes.push(0);
        assert!(matches!(
            decode::<Sample>(&bytes, 1024),
            Err(CodecError::TrailingBytes { extra: 1 })
        ));
        Ok(())
    }

    #[test]
    fn rejects_oversized_input() -> Result<(), CodecError> {
        let bytes = encode(&sample())?;
        assert!(matches!(
            decode::<Sample>(&bytes, bytes.len() - 1),
            Err(CodecError::Oversized { .. })
        ));
        Ok(())
    }

    #[test]
    fn rejects_huge_length_prefix_without_allocating() {
        // A Vec<u8> whose prefix claims 2^60 bytes but carries none.
        let bytes = (1u64 << 60).to_le_bytes();
        let result = decode::<Vec<u8>>(&bytes, 1024);
        assert!(
            matches!(
                result,
                Err(CodecError::LengthOverLimit { .. }) | Err(CodecError::Truncated)
            ),
            "{result:?}"
        );
    }

    #[test]
    fn rejects_bad_enum_tag_and_bad_utf8() -> Result<(), CodecError> {
        let mut bytes = encode(&sample())?;
        let tag_at = bytes.len() - 6;
        bytes[tag_at] = 9;
        assert!(matches!(
            decode::<Sample>(&bytes, 1024),
            Err(CodecError::Malformed(_))
        ));
        let mut bytes = encode(&sample())?;
        bytes[16] = 0xff; // first byte of "mosaic"
        assert!(matches!(
            decode::<Sample>(&bytes, 1024),
            Err(CodecError::Malformed(_))
        ));
        Ok(())
    }

    proptest! {
        #[test]
        fn round_trip(height: u64, name in ".{0,40}", body in proptest::collection::vec(any::<u8>(), 0..300), tag: Option<u32>, b: Option<u16>) {
            let value = Sample { height, name, body, tag, kind: b.map_or(Kind::A, Kind::B) };
            let bytes = encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: Sample = decode(&bytes, bytes.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, value);
        }

        #[test]
        fn every_truncation_is_rejected(body in proptest::collection::vec(any::<u8>(), 0..64), cut: usize) {
            let value = Sample { body, ..sample() };
            let bytes = encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let cut = cut % bytes.len();
            let result = decode::<Sample>(&bytes[..cut], 4096);
            prop_assert!(matches!(result, Err(CodecError::Truncated)), "{:?}", result);
        }

        #[test]
        fn accepted_bytes_are_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            // Never panics; and whatever decodes re-encodes to exactly the same bytes,
            // so no value has two encodings.
            if let Ok(value) = decode::<Sample>(&bytes, 4096) {
                let again = encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again, bytes);
            }
        }
    }
}
