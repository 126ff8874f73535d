//! ed25519 keys and domain-separated signatures.
//!
//! Every signature covers `SIGNING_CONTEXT_V1 || domain tag || chain id || message`
//! (each variable part length-prefixed), so a signature made for one kind of message
//! or one chain never verifies as another.
//!
//! # One validity rule for single and batch verification
//!
//! A signature `(R, s)` by key `A` on `M` is valid iff `s` is canonical (`s < ℓ`), `A`
//! is not of small order, and the *cofactored* equation `[8]([s]B − R − [k]A) = 0`
//! holds with `k = SHA-512(R || A || M) mod ℓ` (the ZIP-215 rule). ed25519-dalek's
//! own `verify` is cofactorless and its `verify_batch` can accept signatures that
//! single verification rejects, so two nodes could disagree on a transaction's
//! validity depending on how they batched it. Here both [`verify`] and
//! [`verify_batch`] check the same cofactored equation, so the answer never depends
//! on the batch a signature happens to be in. Signing is plain ed25519 (dalek).

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::Signer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha512};

use crate::hexfmt::{self, HexError};

/// Bytes in a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes in a secret key.
pub const SECRET_KEY_LEN: usize = 32;
/// Bytes in a signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest chain id accepted.
pub const CHAIN_ID_LEN_MAX: usize = 64;

/// Prefix of every signed byte string; bump it to retire every old signature at once.
const SIGNING_CONTEXT_V1: &[u8] = b"mosaic-sig-v1";

/// Errors from keys and signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Hex text that is not a key or signature.
    #[error(transparent)]
    Hex(#[from] HexError),
    /// 32 bytes that are not a point on the curve, or a point of small order.
    #[error("not a usable ed25519 public key: {reason}")]
    BadPublicKey {
        /// Why the key was refused.
        reason: &'static str,
    },
    /// The signature does not verify for this key, message, domain and chain.
    #[error("invalid signature")]
    BadSignature,
    /// A batch had entries that did not verify (indexes into the batch, ascending).
    #[error("{} of {total} signatures in the batch are invalid (first at index {})", bad.len(), bad.first().copied().unwrap_or_default())]
    BadSignatures {
        /// Indexes of the invalid entries.
        bad: Vec<usize>,
        /// Entries in the batch.
        total: usize,
    },
    /// A chain id that is empty, too long, or has characters outside `[a-z0-9-]`.
    #[error(
        "chain id {id:?} is invalid: use 1-{CHAIN_ID_LEN_MAX} characters from a-z, 0-9 and '-'"
    )]
    BadChainId {
        /// The refused id.
        id: String,
    },
    /// The operating system's randomness source failed.
    #[error("the operating system's random number generator failed: {0}")]
    Entropy(String),
}

/// What a signature is for. Each kind has its own tag, so a signature cannot be
/// replayed as a different kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// A client transaction.
    Transaction,
    /// PBFT PRE-PREPARE.
    PrePrepare,
    /// PBFT PREPARE.
    Prepare,
    /// PBFT COMMIT.
    Commit,
    /// PBFT CHECKPOINT.
    Checkpoint,
    /// PBFT VIEW-CHANGE.
    ViewChange,
    /// PBFT NEW-VIEW.
    NewView,
}

impl Domain {
    /// Every domain, for tests and tooling.
    pub const ALL: [Domain; 7] = [
        Domain::Transaction,
        Domain::PrePrepare,
        Domain::Prepare,
        Domain::Commit,
        Domain::Checkpoint,
        Domain::ViewChange,
        Domain::NewView,
    ];

    /// The tag mixed into signed bytes. Never change an existing tag: a message
    /// whose signed layout changes gets a new tag, and the old one is retired, never
    /// reused (retired: `transaction`, transfers without `valid_until`), so a
    /// signature over the old layout never verifies as the new one.
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Domain::Transaction => b"transaction-v2",
            Domain::PrePrepare => b"pbft-pre-prepare",
            Domain::Prepare => b"pbft-prepare",
            Domain::Commit => b"pbft-commit",
            Domain::Checkpoint => b"pbft-checkpoint",
            Domain::ViewChange => b"pbft-view-change",
            Domain::NewView => b"pbft-new-view",
        }
    }
}

/// The name of a chain, mixed into every signature so none is valid on another chain.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ChainId(String);

impl ChainId {
    /// Validates and wraps a chain id: 1 to 64 characters of `[a-z0-9-]`.
    pub fn new(id: impl Into<String>) -> Result<Self, SignError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= CHAIN_ID_LEN_MAX
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(ChainId(id))
        } else {
            Err(SignError::BadChainId { id })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", self.0)
    }
}

impl FromStr for ChainId {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChainId::new(s)
    }
}

impl<'de> Deserialize<'de> for ChainId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        ChainId::new(s).map_err(serde::de::Error::custom)
    }
}

/// The exact bytes a signature covers.
pub fn signing_bytes(domain: Domain, chain: &ChainId, message: &[u8]) -> Vec<u8> {
    let tag = domain.tag();
    let chain = chain.as_str().as_bytes();
    let mut out =
        Vec::with_capacity(SIGNING_CONTEXT_V1.len() + 2 + tag.len() + chain.len() + message.len());
    out.extend_from_slice(SIGNING_CONTEXT_V1);
    // Tags and chain ids are at most 64 bytes, so one length byte each keeps the split
    // between tag, chain and message unambiguous.
    out.push(tag.len() as u8);
    out.extend_from_slice(tag);
    out.push(chain.len() as u8);
    out.extend_from_slice(chain);
    out.extend_from_slice(message);
    out
}

/// An ed25519 public key that decompresses to a point of large order.
#[derive(Clone, Copy)]
pub struct PublicKey {
    bytes: [u8; PUBLIC_KEY_LEN],
    point: EdwardsPoint,
}

impl PublicKey {
    /// Parses and checks a key: it must be a curve point, and not of small order
    /// (a small-order key would make signatures forgeable by anyone).
    ///
    /// Decompressing a point costs a field exponentiation (a few microseconds), and
    /// every transfer carries two keys that each node parses several times (API or
    /// gossip, proposal check, execution). Keys that passed these checks are kept in
    /// a bounded process-wide cache ([`KEY_CACHE_ENTRIES`]); a key that fails is never
    /// cached, so the result is the same with or without the cache.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Result<Self, SignError> {
        let cache = key_cache();
        if let Some(point) = cache.get(&bytes) {
            return Ok(PublicKey { bytes, point });
        }
        let key = Self::decompress(bytes)?;
        cache.insert(bytes, key.point);
        Ok(key)
    }

    fn decompress(bytes: [u8; PUBLIC_KEY_LEN]) -> Result<Self, SignError> {
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .ok_or(SignError::BadPublicKey {
                reason: "not a point on the curve",
            })?;
        if point.is_small_order() {
            return Err(SignError::BadPublicKey {
                reason: "point of small order",
            });
        }
        Ok(PublicKey { bytes, point })
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.bytes
    }

    /// The key in the form libp2p and ed25519-dalek use.
    pub fn to_dalek(&self) -> Result<ed25519_dalek::VerifyingKey, SignError> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.bytes).map_err(|_| SignError::BadPublicKey {
            reason: "rejected by ed25519-dalek",
        })
    }

    /// Checks `signature` on `message` for `domain` on `chain`.
    pub fn verify(
        &self,
        domain: Domain,
        chain: &ChainId,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignError> {
        verify_raw(self, &signing_bytes(domain, chain, message), signature)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for PublicKey {}
impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}
impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.bytes))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.bytes[..4]))
    }
}

impl FromStr for PublicKey {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_bytes(hexfmt::parse_fixed::<PUBLIC_KEY_LEN>(s, "public key")?)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        hexfmt::serialize_fixed(&self.bytes, serializer)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = hexfmt::deserialize_fixed::<D, PUBLIC_KEY_LEN>(deserializer, "public key")?;
        PublicKey::from_bytes(bytes).map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature (R || s). Only its shape is checked when parsed; whether it
/// verifies is up to [`verify`] and [`verify_batch`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps raw signature bytes.
    pub const fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Signature(bytes)
    }

    /// The 64 signature bytes.
    pub const fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    fn r_bytes(&self) -> [u8; 32] {
        let mut r = [0u8; 32];
        r.copy_from_slice(&self.0[..32]);
        r
    }

    fn s_bytes(&self) -> [u8; 32] {
        let mut s = [0u8; 32];
        s.copy_from_slice(&self.0[32..]);
        s
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..4]))
    }
}

impl FromStr for Signature {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Signature(hexfmt::parse_fixed::<SIGNATURE_LEN>(
            s,
            "signature",
        )?))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        hexfmt::serialize_fixed(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        hexfmt::deserialize_fixed::<D, SIGNATURE_LEN>(deserializer, "signature").map(Signature)
    }
}

/// A secret signing key with its public key. Not `Clone`, not serializable except
/// through key files; `Debug` never shows the secret.
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl Keypair {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self, SignError> {
        let mut secret = [0u8; SECRET_KEY_LEN];
        getrandom::fill(&mut secret).map_err(|e| SignError::Entropy(e.to_string()))?;
        Keypair::from_secret_bytes(secret)
    }

    /// The key for a 32-byte secret (the ed25519 seed).
    pub fn from_secret_bytes(secret: [u8; SECRET_KEY_LEN]) -> Result<Self, SignError> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
        let public = PublicKey::from_bytes(signing.verifying_key().to_bytes())?;
        Ok(Keypair { signing, public })
    }

    /// A deterministic key for tests and simulations; never use it for real funds.
    pub fn from_seed_for_tests(seed: u64) -> Self {
        let secret = *Hash::of_parts(&[b"mosaic-test-key", &seed.to_le_bytes()]).as_bytes();
        let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
        let bytes = signing.verifying_key().to_bytes();
        let point = signing.verifying_key().to_edwards();
        Keypair {
            signing,
            public: PublicKey { bytes, point },
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret seed bytes (for key files and libp2p identities only).
    pub fn secret_bytes(&self) -> [u8; SECRET_KEY_LEN] {
        self.signing.to_bytes()
    }

    /// Signs `message` for `domain` on `chain`.
    pub fn sign(&self, domain: Domain, chain: &ChainId, message: &[u8]) -> Signature {
        Signature(
            self.signing
                .sign(&signing_bytes(domain, chain, message))
                .to_bytes(),
        )
    }
}

use crate::hash::Hash;

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Checked keys kept by [`PublicKey::from_bytes`]: about 200 bytes each, so ~13 MiB.
pub const KEY_CACHE_ENTRIES: usize = 65_536;

fn key_cache() -> &'static quick_cache::sync::Cache<[u8; PUBLIC_KEY_LEN], EdwardsPoint> {
    static CACHE: std::sync::OnceLock<
        quick_cache::sync::Cache<[u8; PUBLIC_KEY_LEN], EdwardsPoint>,
    > = std::sync::OnceLock::new();
    CACHE.get_or_init(|| quick_cache::sync::Cache::new(KEY_CACHE_ENTRIES))
}

/// `SHA-512(R || A || M) mod ℓ`, the ed25519 challenge.
fn challenge(r: &[u8; 32], key: &PublicKey, signed: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(key.bytes);
    h.update(signed);
    let wide: [u8; 64] = h.finalize().into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn canonical_s(signature: &Signature) -> Option<Scalar> {
    Option::from(Scalar::from_canonical_bytes(signature.s_bytes()))
}

/// Verifies a signature over already-framed bytes with the cofactored equation.
fn verify_raw(key: &PublicKey, signed: &[u8], signature: &Signature) -> Result<(), SignError> {
    let s = canonical_s(signature).ok_or(SignError::BadSignature)?;
    let r_bytes = signature.r_bytes();
    let r = CompressedEdwardsY(r_bytes)
        .decompress()
        .ok_or(SignError::BadSignature)?;
    let k = challenge(&r_bytes, key, signed);
    // [s]B - [k]A - R, then clear the cofactor.
    let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &(-key.point), &s) - r;
    if check.mul_by_cofactor().is_identity() {
        Ok(())
    } else {
        Err(SignError::BadSignature)
    }
}

/// One entry of a batch: who signed, what (domain, chain, message), and the signature.
#[derive(Debug, Clone, Copy)]
pub struct SignedItem<'a> {
    /// The claimed signer.
    pub key: &'a PublicKey,
    /// What kind of message it is.
    pub domain: Domain,
    /// The chain it is for.
    pub chain: &'a ChainId,
    /// The message bytes (without framing; framing is added here).
    pub message: &'a [u8],
    /// The signature to check.
    pub signature: &'a Signature,
}

/// Verifies one signature; the same rule as [`verify_batch`].
pub fn verify(item: &SignedItem<'_>) -> Result<(), SignError> {
    item.key
        .verify(item.domain, item.chain, item.message, item.signature)
}

/// Whether every signature in `items` is valid, in one batch check, without finding
/// which one is not when the answer is no (see [`verify_batch`] for that). Callers
/// that combine work from several sources use it to check the whole first and, on a
/// failure, only the parts, so one bad source does not make the others pay for
/// checks one by one. Accepts exactly what [`verify`] accepts for each entry.
pub fn batch_holds(items: &[SignedItem<'_>]) -> bool {
    match items {
        [] => true,
        [item] => verify(item).is_ok(),
        _ => batch_equation_holds(items),
    }
}

/// Verifies many signatures at once. On failure it says exactly which entries are
/// invalid (found by checking each one alone), so callers can keep the good ones.
///
/// The accepted set is the same as checking every entry with [`verify`]: both use
/// the cofactored equation; the batch combines entries with 128-bit coefficients
/// derived from a hash of the whole batch, so no signer can choose them.
pub fn verify_batch(items: &[SignedItem<'_>]) -> Result<(), SignError> {
    if items.is_empty() {
        return Ok(());
    }
    if items.len() == 1 {
        return verify(&items[0]).map_err(|_| SignError::BadSignatures {
            bad: vec![0],
            total: 1,
        });
    }
    if batch_equation_holds(items) {
        return Ok(());
    }
    let bad: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| verify(item).is_err())
        .map(|(i, _)| i)
        .collect();
    if bad.is_empty() {
        // Unreachable unless the 2^-128 coefficient lottery went against us; the
        // one-by-one answer is authoritative.
        return Ok(());
    }
    Err(SignError::BadSignatures {
        bad,
        total: items.len(),
    })
}

/// `[8](−(Σ zᵢsᵢ)B + Σ zᵢRᵢ + Σ zᵢkᵢAᵢ) = 0`, false on any malformed entry.
fn batch_equation_holds(items: &[SignedItem<'_>]) -> bool {
    let n = items.len();
    let mut transcript = blake3::Hasher::new_derive_key("mosaic batch verification v1");
    let mut r_points = Vec::with_capacity(n);
    let mut s_scalars = Vec::with_capacity(n);
    let mut challenges = Vec::with_capacity(n);
    for item in items {
        let Some(s) = canonical_s(item.signature) else {
            return false;
        };
        let r_bytes = item.signature.r_bytes();
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        let signed = signing_bytes(item.domain, item.chain, item.message);
        let k = challenge(&r_bytes, item.key, &signed);
        transcript.update(item.signature.as_bytes());
        transcript.update(k.as_bytes());
        r_points.push(r);
        s_scalars.push(s);
        challenges.push(k);
    }
    let mut coefficients = transcript.finalize_xof();
    let z: Vec<Scalar> = (0..n)
        .map(|_| {
            let mut wide = [0u8; 32];
            coefficients.fill(&mut wide[..16]);
            Scalar::from_bytes_mod_order(wide)
        })
        .collect();
    let basepoint_coefficient: Scalar = z.iter().zip(&s_scalars).map(|(z, s)| z * s).sum();
    let scalars = std::iter::once(-basepoint_coefficient)
        .chain(z.iter().copied())
        .chain(z.iter().zip(&challenges).map(|(z, k)| z * k));
    let points = std::iter::once(curve25519_dalek::constants::ED25519_BASEPOINT_POINT)
        .chain(r_points)
        .chain(items.iter().map(|item| item.key.point));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chain() -> ChainId {
        ChainId::new("test-chain").unwrap_or_else(|_| unreachable!())
    }

    fn flip(bytes: &mut [u8], bit: usize) {
        bytes[bit / 8] ^= 1 << (bit % 8);
    }

    #[test]
    fn domain_tags_are_distinct() {
        let tags: std::collections::BTreeSet<_> = Domain::ALL.iter().map(|d| d.tag()).collect();
        assert_eq!(tags.len(), Domain::ALL.len());
    }

    #[test]
    fn signature_binds_domain_and_chain() -> Result<(), SignError> {
        let key = Keypair::from_seed_for_tests(3);
        let other_chain = ChainId::new("other-chain")?;
        for domain in Domain::ALL {
            let sig = key.sign(domain, &chain(), b"msg");
            key.public().verify(domain, &chain(), b"msg", &sig)?;
            assert!(
                key.public()
                    .verify(domain, &other_chain, b"msg", &sig)
                    .is_err()
            );
            for other in Domain::ALL.into_iter().filter(|d| *d != domain) {
                assert!(key.public().verify(other, &chain(), b"msg", &sig).is_err());
            }
        }
        Ok(())
    }

    #[test]
    fn chain_id_validation() {
        assert!(ChainId::new("mosaic-1").is_ok());
        for bad in ["", "UPPER", "has space", "a/b", &"x".repeat(65)] {
            assert!(ChainId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn small_order_and_off_curve_keys_are_refused() {
        let identity = curve25519_dalek::constants::EIGHT_TORSION[0]
            .compress()
            .to_bytes();
        assert!(PublicKey::from_bytes(identity).is_err());
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1]
            .compress()
            .to_bytes();
        assert!(PublicKey::from_bytes(torsion).is_err());
        // y = 2 is not on the curve.
        let mut off = [0u8; 32];
        off[0] = 2;
        assert!(PublicKey::from_bytes(off).is_err());
    }

    #[test]
    fn cached_keys_parse_like_fresh_ones() {
        // Every byte string gives the same answer from a fresh decompression, the
        // first (caching) parse and the second (cached) parse; refused keys stay
        // refused on the second try.
        let good = Keypair::from_seed_for_tests(77).public();
        let mut off = [0u8; 32];
        off[0] = 2;
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1]
            .compress()
            .to_bytes();
        let mut flipped = *good.as_bytes();
        flipped[3] ^= 0x10;
        for bytes in [*good.as_bytes(), off, torsion, flipped, [0x55; 32]] {
            let fresh = PublicKey::decompress(bytes).map(|k| k.point);
            for _ in 0..2 {
                assert_eq!(PublicKey::from_bytes(bytes).map(|k| k.point), fresh);
            }
        }
    }

    #[test]
    fn non_canonical_s_is_refused() -> Result<(), SignError> {
        let key = Keypair::from_seed_for_tests(4);
        let sig = key.sign(Domain::Transaction, &chain(), b"m");
        // s + ℓ verifies under a lax check; the canonical-s rule must refuse it.
        let s = Scalar::from_canonical_bytes(sig.s_bytes());
        let s: Option<Scalar> = s.into();
        let s = s.ok_or(SignError::BadSignature)?;
        let ell_plus = {
            // ℓ as bytes added to s, as a 256-bit integer (s + ℓ < 2^256).
            // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
            let ell: [u8; 32] = [
                0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
                0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ];
            let (a, b) = (s.to_bytes(), ell);
            let mut out = [0u8; 32];
            let mut carry = 0u16;
            for i in 0..32 {
                let v = a[i] as u16 + b[i] as u16 + carry;
                out[i] = v as u8;
                carry = v >> 8;
            }
            out
        };
        let mut bytes = *sig.as_bytes();
        bytes[32..].copy_from_slice(&ell_plus);
        let malleated = Signature::from_bytes(bytes);
        assert!(
            key.public()
                .verify(Domain::Transaction, &chain(), b"m", &malleated)
                .is_err()
        );
        Ok(())
    }

    /// A signature whose R carries a small-order component: valid under the
    /// cofactored rule, rejected by a cofactorless check. Single and batch
    /// verification must agree on it.
    #[test]
    fn mixed_order_signature_gets_the_same_answer_alone_and_in_a_batch() -> Result<(), SignError> {
        let key = Keypair::from_seed_for_tests(9);
        let expanded: [u8; 64] = Sha512::digest(key.secret_bytes()).into();
        let mut a_bytes = [0u8; 32];
        a_bytes.copy_from_slice(&expanded[..32]);
        a_bytes[0] &= 248;
        a_bytes[31] &= 127;
        a_bytes[31] |= 64;
        let a = Scalar::from_bytes_mod_order(a_bytes);
        let r = Scalar::from_bytes_mod_order([7u8; 32]);
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
        let big_r = curve25519_dalek::constants::ED25519_BASEPOINT_POINT * r + torsion;
        let r_bytes = big_r.compress().to_bytes();
        let signed = signing_bytes(Domain::Transaction, &chain(), b"crafted");
        let k = challenge(&r_bytes, &key.public(), &signed);
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(&s.to_bytes());
        let sig = Signature::from_bytes(sig);

        // dalek's cofactorless single check refuses it ...
        let dalek_sig = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
        assert!(
            key.public()
                .to_dalek()?
                .verify_strict(&signed, &dalek_sig)
                .is_err()
        );
        // ... while ours accepts it, alone and in every batch it is part of.
        key.public()
            .verify(Domain::Transaction, &chain(), b"crafted", &sig)?;
        let others: Vec<(Keypair, Signature)> = (0..5)
            .map(|i| {
                let k = Keypair::from_seed_for_tests(100 + i);
                let s = k.sign(Domain::Transaction, &chain(), b"other");
                (k, s)
            })
            .collect();
        let publics: Vec<PublicKey> = others.iter().map(|(k, _)| k.public()).collect();
        let c = chain();
        let pk = key.public();
        let mut items: Vec<SignedItem<'_>> = publics
            .iter()
            .zip(&others)
            .map(|(p, (_, s))| SignedItem {
                key: p,
                domain: Domain::Transaction,
                chain: &c,
                message: b"other",
                signature: s,
            })
            .collect();
        items.insert(
            2,
            SignedItem {
                key: &pk,
                domain: Domain::Transaction,
                chain: &c,
                message: b"crafted",
                signature: &sig,
            },
        );
        verify_batch(&items)?;
        assert!(batch_equation_holds(&items));
        assert!(batch_holds(&items));
        assert!(batch_holds(&items[2..3]));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn round_trip_and_any_bit_flip_fails(seed: u64, message in proptest::collection::vec(any::<u8>(), 0..100), bit: usize) {
            let key = Keypair::from_seed_for_tests(seed);
            let c = chain();
            let sig = key.sign(Domain::Transaction, &c, &message);
            prop_assert!(key.public().verify(Domain::Transaction, &c, &message, &sig).is_ok());

            // a flipped bit in the signature
            let mut bad = *sig.as_bytes();
            flip(&mut bad, bit % (SIGNATURE_LEN * 8));
            prop_assert!(key.public().verify(Domain::Transaction, &c, &message, &Signature::from_bytes(bad)).is_err());

            // a flipped bit in the message
            if !message.is_empty() {
                let mut m = message.clone();
                let bits = m.len() * 8;
                flip(&mut m, bit % bits);
                prop_assert!(key.public().verify(Domain::Transaction, &c, &m, &sig).is_err());
            }

            // a flipped bit in the key (when the result is still a usable key)
            let mut kb = *key.public().as_bytes();
            flip(&mut kb, bit % (PUBLIC_KEY_LEN * 8));
            if let Ok(other) = PublicKey::from_bytes(kb) {
                prop_assert!(other.verify(Domain::Transaction, &c, &message, &sig).is_err());
            }
        }

        #[test]
        fn batch_agrees_with_one_by_one(count in 0usize..24, corrupt in proptest::collection::vec(any::<bool>(), 24), seed: u64) {
            let c = chain();
            let keys: Vec<Keypair> = (0..count as u64).map(|i| Keypair::from_seed_for_tests(seed.wrapping_add(i))).collect();
            let publics: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
            let messages: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; i]).collect();
            let sigs: Vec<Signature> = keys.iter().zip(&messages).enumerate().map(|(i, (k, m))| {
                let sig = k.sign(Domain::Prepare, &c, m);
                if corrupt[i] {
                    let mut b = *sig.as_bytes();
                    b[40] ^= 1;
                    Signature::from_bytes(b)
                } else {
                    sig
                }
            }).collect();
            let items: Vec<SignedItem<'_>> = (0..count).map(|i| SignedItem {
                key: &publics[i], domain: Domain::Prepare, chain: &c, message: &messages[i], signature: &sigs[i],
            }).collect();
            let expected_bad: Vec<usize> = (0..count).filter(|&i| verify(&items[i]).is_err()).collect();
            let corrupted: Vec<usize> = (0..count).filter(|&i| corrupt[i]).collect();
            prop_assert_eq!(&expected_bad, &corrupted);
            prop_assert_eq!(batch_holds(&items), expected_bad.is_empty());
            match verify_batch(&items) {
                Ok(()) => prop_assert!(expected_bad.is_empty()),
                Err(SignError::BadSignatures { bad, total }) => {
                    prop_assert_eq!(bad, expected_bad);
                    prop_assert_eq!(total, count);
                }
                Err(other) => prop_assert!(false, "unexpected error {:?}", other),
            }
        }

        #[test]
        fn hex_and_serde_round_trips(seed: u64) {
            let key = Keypair::from_seed_for_tests(seed);
            let public = key.public();
            prop_assert_eq!(public.to_string().parse::<PublicKey>().ok(), Some(public));
            let sig = key.sign(Domain::Commit, &chain(), b"x");
            prop_assert_eq!(sig.to_string().parse::<Signature>().ok(), Some(sig));
            let json = serde_json::to_string(&(public, sig)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: (PublicKey, Signature) = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, (public, sig));
            let bytes = crate::codec::encode(&(public, sig)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(bytes.len(), PUBLIC_KEY_LEN + SIGNATURE_LEN);
            let back: (PublicKey, Signature) = crate::codec::decode(&bytes, 96).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, (public, sig));
        }
    }
}
