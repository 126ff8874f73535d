//! The one canonical binary encoding of Mosaic: every byte that is hashed, signed,
//! stored or sent goes through this module, and nothing else calls bincode.
//!
//! The configuration is fixed forever (changing it changes every hash): bincode 2.0.1,
//! little-endian, fixed-width integers (so every value has exactly one encoding),
//! serde-derived layouts. Sequences and strings carry a u64 length prefix.
//!
//! Decoding is for untrusted bytes: the caller gives a byte limit; input longer than
//! the limit is refused before any parsing, input that ends early is `Truncated`, and
//! bytes left over after the value are `TrailingBytes`. A length prefix that claims
//! more bytes than the input holds is refused before anything is allocated for it,
//! so no decode allocates more than twice the input's length for a string or byte
//! buffer (and serde reserves at most 1 MiB for a sequence before its elements
//! arrive), however large the caller's limit.
//!
//! That bound comes from bincode's claim counter: every primitive, prefix and byte
//! string claims exactly the bytes it consumes, so a valid value never claims more
//! than the input's length. The counter's ceiling is a compile-time constant, so
//! `decode` picks the smallest of a ladder of powers of two that covers the input.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The hard ceiling for any single decode, whatever limit a caller asks for.
pub const DECODE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The smallest claim ceiling `decode` uses: inputs up to this long share one.
const CLAIM_CEILING_MIN: usize = 64;

type Config<const CLAIM_MAX: usize> = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<CLAIM_MAX>,
>;

/// The one configuration; `CLAIM_MAX` only bounds what a decode may claim and does
/// not change a single encoded byte.
const fn config<const CLAIM_MAX: usize>() -> Config<CLAIM_MAX> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<CLAIM_MAX>()
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
    /// The input ended before the value was complete, or a length prefix inside it
    /// claims more bytes than the input holds.
    #[error("input ended early: truncated, cut off, or a length claims more than it holds")]
    Truncated,
    /// The value ended before the input did.
    #[error("{extra} unexpected bytes after the end of the value")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
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
    bincode::serde::encode_to_vec(value, config::<DECODE_BYTES_MAX>())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Appends the canonical bytes of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config::<DECODE_BYTES_MAX>())
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
    let (value, used) = decode_within_claim_ceiling::<T>(bytes).map_err(map_decode_error)?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

/// Decodes with the smallest claim ceiling of the ladder that is at least the input's
/// length (the input is at most `DECODE_BYTES_MAX`, the ladder's top).
fn decode_within_claim_ceiling<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    fn within<T: DeserializeOwned, const CLAIM_MAX: usize>(
        bytes: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice::<T, _>(bytes, config::<CLAIM_MAX>())
    }
    const _: () = assert!(DECODE_BYTES_MAX == 1 << 28);
    match bytes
        .len()
        .max(CLAIM_CEILING_MIN)
        .next_power_of_two()
        .trailing_zeros()
    {
        0..=6 => within::<T, { 1 << 6 }>(bytes),
        7 => within::<T, { 1 << 7 }>(bytes),
        8 => within::<T, { 1 << 8 }>(bytes),
        9 => within::<T, { 1 << 9 }>(bytes),
        10 => within::<T, { 1 << 10 }>(bytes),
        11 => within::<T, { 1 << 11 }>(bytes),
        12 => within::<T, { 1 << 12 }>(bytes),
        13 => within::<T, { 1 << 13 }>(bytes),
        14 => within::<T, { 1 << 14 }>(bytes),
        15 => within::<T, { 1 << 15 }>(bytes),
        16 => within::<T, { 1 << 16 }>(bytes),
        17 => within::<T, { 1 << 17 }>(bytes),
        18 => within::<T, { 1 << 18 }>(bytes),
        19 => within::<T, { 1 << 19 }>(bytes),
        20 => within::<T, { 1 << 20 }>(bytes),
        21 => within::<T, { 1 << 21 }>(bytes),
        22 => within::<T, { 1 << 22 }>(bytes),
        23 => within::<T, { 1 << 23 }>(bytes),
        24 => within::<T, { 1 << 24 }>(bytes),
        25 => within::<T, { 1 << 25 }>(bytes),
        26 => within::<T, { 1 << 26 }>(bytes),
        27 => within::<T, { 1 << 27 }>(bytes),
        _ => within::<T, DECODE_BYTES_MAX>(bytes),
    }
}

fn map_decode_error(error: bincode::error::DecodeError) -> CodecError {
    use bincode::error::DecodeError as E;
    match error {
        // The claim ceiling is at least the input's length, and a valid value claims
        // exactly the bytes it consumes: going past the ceiling means a length claims
        // bytes the input does not have.
        E::UnexpectedEnd { .. } | E::LimitExceeded => CodecError::Truncated,
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
        assert!(matches!(result, Err(CodecError::Truncated)), "{result:?}");
    }

    #[test]
    fn values_at_every_claim_ceiling_round_trip() -> Result<(), CodecError> {
        // A value whose length sits on either side of a ceiling of the ladder claims
        // exactly its length, so it decodes under a limit of exactly its length.
        for exponent in 6..=21 {
            for delta in [-1i64, 0, 1] {
                let target = ((1i64 << exponent) + delta) as usize;
                let overhead = encode(&Sample {
                    body: Vec::new(),
                    ..sample()
                })?
                .len();
                let value = Sample {
                    body: vec![7; target.saturating_sub(overhead)],
                    ..sample()
                };
                let bytes = encode(&value)?;
                assert_eq!(bytes.len(), target.max(overhead));
                let back: Sample = decode(&bytes, bytes.len())?;
                assert_eq!(back, value);
            }
        }
        // Many empty strings: the most prefix per byte of value.
        let names = vec![String::new(); 10_000];
        let bytes = encode(&names)?;
        assert_eq!(decode::<Vec<String>>(&bytes, bytes.len())?, names);
        Ok(())
    }

    #[test]
    fn a_string_claim_past_the_input_is_truncated_under_a_large_limit() {
        // 20 bytes that claim a 200 MiB string, under a limit that would allow it.
        let mut bytes = (200u64 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"twelve bytes");
        let result = decode::<String>(&bytes, DECODE_BYTES_MAX);
        assert!(matches!(result, Err(CodecError::Truncated)), "{result:?}");
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
