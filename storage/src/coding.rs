//! Reed-Solomon coding of block bodies into fragments with Merkle proofs.
//!
//! A body of `body_len` bytes is zero-padded to `k * shard_len` bytes
//! (`shard_len = max(1, ceil(body_len / k))`), cut into `k` data shards and extended
//! with `n - k` parity shards over GF(2^8). Leaf `i` of the fragment tree is
//! `H(0x00 || i as u32 LE || shard i)`; the tree's root is the *fragment root*. The
//! [`FragmentCommitment`] (codec, k, n, body length, root) is what a block header
//! records, so a reader years later knows exactly how to decode.
//!
//! Fragments from outside are checked against the commitment ([`Fragment::check`])
//! before the decoder may see them: Reed-Solomon recovers erasures, not corruption.
//! Every decode re-encodes what it recovered and compares with the commitment, so a
//! Byzantine encoder (fragments that are each provably in the tree but not one
//! codeword) is caught as [`CodingError::BadEncoding`], never returned as bytes.

use std::collections::BTreeMap;
use std::fmt;

use mosaic_crypto::merkle::{self, MerkleTree};
use mosaic_crypto::{Hash, MerkleProof};
use reed_solomon_erasure::galois_8::ReedSolomon;
use serde::{Deserialize, Serialize};

/// Most fragments per block (GF(2^8) has 256 elements).
pub const SHARDS_MAX: usize = 256;
/// Largest body the coder accepts.
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Which erasure code and layout produced a block's fragments. Recorded in every
/// header; a new library or layout gets a new variant, never a silent change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CodecId {
    /// reed-solomon-erasure 6 over GF(2^8), systematic (data shards first), layout as
    /// in this module's docs.
    ReedSolomonGf8V1,
}

/// How a body was coded: everything needed to decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CodingParams {
    /// The code and layout.
    pub codec: CodecId,
    /// k: fragments needed to rebuild.
    pub data_shards: u16,
    /// n: fragments made.
    pub total_shards: u16,
    /// Bytes of the body before padding.
    pub body_len: u64,
}

impl CodingParams {
    /// Checks `1 <= k <= n <= 256` and the body size.
    pub fn new(
        data_shards: usize,
        total_shards: usize,
        body_len: usize,
    ) -> Result<Self, CodingError> {
        if data_shards == 0 || data_shards > total_shards || total_shards > SHARDS_MAX {
            return Err(CodingError::BadShardCounts {
                data_shards,
                total_shards,
            });
        }
        if body_len > BODY_BYTES_MAX {
            return Err(CodingError::BodyTooLarge { body_len });
        }
        Ok(CodingParams {
            codec: CodecId::ReedSolomonGf8V1,
            data_shards: data_shards as u16,
            total_shards: total_shards as u16,
            body_len: body_len as u64,
        })
    }

    /// Re-checks parameters that came from outside (a decoded header).
    pub fn validate(&self) -> Result<(), CodingError> {
        Self::new(self.k(), self.n(), self.body_len as usize).map(|_| ())
    }

    /// k.
    pub fn k(&self) -> usize {
        self.data_shards as usize
    }

    /// n.
    pub fn n(&self) -> usize {
        self.total_shards as usize
    }

    /// Bytes in every shard.
    pub fn shard_len(&self) -> usize {
        (self.body_len as usize).div_ceil(self.k()).max(1)
    }
}

/// The default k for n validators: f + 1 where f = (n - 1) / 3, so that a block
/// survives f Byzantine validators plus f more that are down (n - 2f >= f + 1).
pub fn default_data_shards(validators: usize) -> usize {
    validators.saturating_sub(1) / 3 + 1
}

/// What a header records about a block's fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FragmentCommitment {
    /// How the body was coded.
    pub params: CodingParams,
    /// Merkle root over the n fragment leaves.
    pub root: Hash,
}

/// One fragment as stored and sent: the shard and its proof against the root.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// Which of the n shards this is.
    pub index: u32,
    /// The shard bytes.
    #[serde(with = "serde_bytes")]
    pub shard: Vec<u8>,
    /// Proof that leaf `index` is in the fragment tree.
    pub proof: MerkleProof,
}

impl fmt::Debug for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fragment")
            .field("index", &self.index)
            .field("shard_len", &self.shard.len())
            .finish_non_exhaustive()
    }
}

/// A fragment whose proof verified against a commitment. Only [`Fragment::check`]
/// makes one; only these reach the decoder.
#[derive(Debug, Clone)]
pub struct CheckedFragment {
    fragment: Fragment,
    leaf: Hash,
}

impl CheckedFragment {
    /// The index.
    pub fn index(&self) -> u32 {
        self.fragment.index
    }

    /// The verified fragment.
    pub fn fragment(&self) -> &Fragment {
        &self.fragment
    }

    /// Back to the plain fragment (to store or send).
    pub fn into_fragment(self) -> Fragment {
        self.fragment
    }
}

/// Why one fragment was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// Index >= n.
    #[error("fragment index {index} is out of range (n = {total_shards})")]
    IndexOutOfRange {
        /// The index.
        index: u32,
        /// n.
        total_shards: usize,
    },
    /// The shard has the wrong length for this block.
    #[error("fragment {index} has {got} bytes, blocks coded like this one have {expected}")]
    WrongSize {
        /// The index.
        index: u32,
        /// Expected shard length.
        expected: usize,
        /// Actual shard length.
        got: usize,
    },
    /// The proof does not place this shard at this index under the root.
    #[error("fragment {index} has a bad proof: {reason}")]
    BadProof {
        /// The index.
        index: u32,
        /// What failed.
        reason: merkle::MerkleError,
    },
    /// Another valid fragment with this index was already given.
    #[error("fragment {index} was given more than once")]
    Duplicate {
        /// The index.
        index: u32,
    },
}

/// Errors from coding and decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodingError {
    /// k and n out of range.
    #[error(
        "cannot code with k = {data_shards}, n = {total_shards}: need 1 <= k <= n <= {SHARDS_MAX}"
    )]
    BadShardCounts {
        /// k.
        data_shards: usize,
        /// n.
        total_shards: usize,
    },
    /// Body larger than [`BODY_BYTES_MAX`].
    #[error("body of {body_len} bytes exceeds the maximum of {BODY_BYTES_MAX}")]
    BodyTooLarge {
        /// The size.
        body_len: usize,
    },
    /// The body does not match the length in the commitment.
    #[error("body has {got} bytes but the commitment says {expected}")]
    LengthMismatch {
        /// Expected.
        expected: u64,
        /// Actual.
        got: usize,
    },
    /// Re-encoding the body gives a different fragment root.
    #[error("body encodes to fragment root {actual}, but {expected} was claimed")]
    RootMismatch {
        /// The claimed root.
        expected: Hash,
        /// The root of the body's encoding.
        actual: Hash,
    },
    /// Fewer than k valid fragments.
    #[error("only {found} valid fragments, {needed} needed ({} rejected)", rejected.len())]
    NotEnoughFragments {
        /// Valid distinct fragments found.
        found: usize,
        /// k.
        needed: usize,
        /// Fragments refused, with the reason for each.
        rejected: Vec<FragmentError>,
    },
    /// Fragments that each prove membership but do not form one codeword: the
    /// block's encoder was faulty or Byzantine.
    #[error("bad encoding: fragment {index} does not match the codeword rebuilt from the others")]
    BadEncoding {
        /// The first index whose shard disagrees with the re-encoding.
        index: u32,
        /// The fragments that were decoded (verifiable evidence for others).
        evidence: Vec<Fragment>,
    },
    /// The erasure-coding library refused (a bug on our side if it happens).
    #[error("erasure coding failed: {0}")]
    Library(String),
}

/// A body coded into n shards, with the tree to hand out proofs.
#[derive(Debug, Clone)]
pub struct Encoded {
    commitment: FragmentCommitment,
    shards: Vec<Vec<u8>>,
    tree: MerkleTree,
}

impl Encoded {
    /// What the header records.
    pub fn commitment(&self) -> FragmentCommitment {
        self.commitment
    }

    /// The fragment root.
    pub fn root(&self) -> Hash {
        self.commitment.root
    }

    /// Fragment `index` with its proof, or `None` when index >= n.
    pub fn fragment(&self, index: usize) -> Option<Fragment> {
        let shard = self.shards.get(index)?.clone();
        let proof = self.tree.proof(index).ok()?;
        Some(Fragment {
            index: index as u32,
            shard,
            proof,
        })
    }

    /// All n fragments.
    pub fn fragments(&self) -> Vec<Fragment> {
        (0..self.shards.len())
            .filter_map(|i| self.fragment(i))
            .collect()
    }
}

fn leaf_hash(index: usize, shard: &[u8]) -> Hash {
    merkle::leaf_hash_parts(&[&(index as u32).to_le_bytes(), shard])
}

/// Below this much shard data, hashing on one thread is cheaper than starting another.
const PARALLEL_HASH_BYTES_MIN: usize = 256 * 1024;

/// Leaf hashes of the shards at `indexes` (with `known` ones reused), using two
/// threads when there is enough data: hashing, not the erasure code, is the cost of
/// coding large bodies.
fn leaf_hashes(shards: &[Vec<u8>], known: &[Option<Hash>]) -> Vec<Hash> {
    let todo: Vec<usize> = (0..shards.len())
        .filter(|&i| known.get(i).copied().flatten().is_none())
        .collect();
    let bytes: usize = todo.iter().map(|&i| shards[i].len()).sum();
    let mut out: Vec<Hash> = (0..shards.len())
        .map(|i| known.get(i).copied().flatten().unwrap_or_default())
        .collect();
    if bytes < PARALLEL_HASH_BYTES_MIN || todo.len() < 2 {
        for &i in &todo {
            out[i] = leaf_hash(i, &shards[i]);
        }
        return out;
    }
    let (first, second) = todo.split_at(todo.len() / 2);
    let hash_all = |idx: &[usize]| {
        idx.iter()
            .map(|&i| (i, leaf_hash(i, &shards[i])))
            .collect::<Vec<_>>()
    };
    let (a, b) = std::thread::scope(|scope| {
        let handle = scope.spawn(|| hash_all(second));
        let a = hash_all(first);
        // A panic in the helper thread is a bug in blake3 or here; hash inline then.
        let b = handle.join().unwrap_or_else(|_| hash_all(second));
        (a, b)
    });
    for (i, h) in a.into_iter().chain(b) {
        out[i] = h;
    }
    out
}

fn library_error(e: reed_solomon_erasure::Error) -> CodingError {
    CodingError::Library(format!("{e:?}"))
}

/// Computes the n - k parity shards for `shards[..k]` in place.
fn fill_parity(params: &CodingParams, shards: &mut [Vec<u8>]) -> Result<(), CodingError> {
    let (k, n) = (params.k(), params.n());
    if k == n {
        return Ok(());
    }
    let coder = ReedSolomon::new(k, n - k).map_err(library_error)?;
    let (data, parity) = shards.split_at_mut(k);
    coder.encode_sep(data, parity).map_err(library_error)
}

/// Codes `body` into n fragments of which any k rebuild it.
pub fn encode(
    body: &[u8],
    data_shards: usize,
    total_shards: usize,
) -> Result<Encoded, CodingError> {
    let params = CodingParams::new(data_shards, total_shards, body.len())?;
    let shard_len = params.shard_len();
    let mut shards: Vec<Vec<u8>> = Vec::with_capacity(params.n());
    for i in 0..params.k() {
        let start = (i * shard_len).min(body.len());
        let end = ((i + 1) * shard_len).min(body.len());
        let mut shard = Vec::with_capacity(shard_len);
        shard.extend_from_slice(&body[start..end]);
        shard.resize(shard_len, 0);
        shards.push(shard);
    }
    shards.resize(params.n(), vec![0u8; shard_len]);
    fill_parity(&params, &mut shards)?;
    let leaves = shards
        .iter()
        .enumerate()
        .map(|(i, s)| leaf_hash(i, s))
        .collect();
    let tree =
        MerkleTree::from_leaf_hashes(leaves).map_err(|e| CodingError::Library(e.to_string()))?;
    Ok(Encoded {
        commitment: FragmentCommitment {
            params,
            root: tree.root(),
        },
        shards,
        tree,
    })
}

/// Checks that `body` is what `commitment` describes (what replicas do to a
/// proposed block before voting for it).
pub fn check_encoding(
    body: &[u8],
    commitment: &FragmentCommitment,
) -> Result<Encoded, CodingError> {
    commitment.params.validate()?;
    if body.len() as u64 != commitment.params.body_len {
        return Err(CodingError::LengthMismatch {
            expected: commitment.params.body_len,
            got: body.len(),
        });
    }
    let encoded = encode(body, commitment.params.k(), commitment.params.n())?;
    if encoded.commitment != *commitment {
        return Err(CodingError::RootMismatch {
            expected: commitment.root,
            actual: encoded.root(),
        });
    }
    Ok(encoded)
}

impl Fragment {
    /// Verifies this fragment against a block's commitment (whose parameters must be
    /// valid: see [`CodingParams::validate`]; invalid ones reject every fragment).
    pub fn check(self, commitment: &FragmentCommitment) -> Result<CheckedFragment, FragmentError> {
        let params = &commitment.params;
        if params.validate().is_err() {
            return Err(FragmentError::IndexOutOfRange {
                index: self.index,
                total_shards: 0,
            });
        }
        let index = self.index;
        if index as usize >= params.n() {
            return Err(FragmentError::IndexOutOfRange {
                index,
                total_shards: params.n(),
            });
        }
        if self.shard.len() != params.shard_len() {
            return Err(FragmentError::WrongSize {
                index,
                expected: params.shard_len(),
                got: self.shard.len(),
            });
        }
        if self.proof.leaf_count as usize != params.n() {
            return Err(FragmentError::BadProof {
                index,
                reason: merkle::MerkleError::RootMismatch,
            });
        }
        let leaf = leaf_hash(index as usize, &self.shard);
        self.proof
            .verify_hash(&commitment.root, index as usize, leaf)
            .map_err(|reason| FragmentError::BadProof { index, reason })?;
        Ok(CheckedFragment {
            fragment: self,
            leaf,
        })
    }
}

/// Checks fragments in input order, on two threads when there is enough data.
fn check_all(
    fragments: Vec<Fragment>,
    commitment: &FragmentCommitment,
) -> Vec<Result<CheckedFragment, FragmentError>> {
    let bytes: usize = fragments.iter().map(|f| f.shard.len()).sum();
    if bytes < PARALLEL_HASH_BYTES_MIN || fragments.len() < 2 {
        return fragments.into_iter().map(|f| f.check(commitment)).collect();
    }
    let mut first = fragments;
    let second = first.split_off(first.len() / 2);
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            second
                .into_iter()
                .map(|f| f.check(commitment))
                .collect::<Vec<_>>()
        });
        let mut results: Vec<_> = first.into_iter().map(|f| f.check(commitment)).collect();
        // Only a bug can make the helper fail; its fragments then count as missing.
        if let Ok(rest) = handle.join() {
            results.extend(rest);
        }
        results
    })
}

/// The outcome of [`reconstruct`]: the body, and what was refused on the way.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    /// The exact original body.
    pub body: Vec<u8>,
    /// Fragments that were not used, with the reason for each.
    pub rejected: Vec<FragmentError>,
    /// The full re-encoding (to re-derive any fragment, e.g. for repair).
    pub encoded: Encoded,
}

/// Checks every fragment, then rebuilds the body from the valid ones.
pub fn reconstruct(
    commitment: &FragmentCommitment,
    fragments: impl IntoIterator<Item = Fragment>,
) -> Result<Reconstruction, CodingError> {
    commitment.params.validate()?;
    let mut accepted: BTreeMap<u32, CheckedFragment> = BTreeMap::new();
    let mut rejected = Vec::new();
    for result in check_all(fragments.into_iter().collect(), commitment) {
        match result {
            Ok(checked) if accepted.contains_key(&checked.index()) => {
                rejected.push(FragmentError::Duplicate {
                    index: checked.index(),
                });
            }
            Ok(checked) => {
                accepted.insert(checked.index(), checked);
            }
            Err(e) => rejected.push(e),
        }
    }
    let needed = commitment.params.k();
    if accepted.len() < needed {
        return Err(CodingError::NotEnoughFragments {
            found: accepted.len(),
            needed,
            rejected,
        });
    }
    let (body, encoded) = decode(commitment, accepted.into_values().collect())?;
    Ok(Reconstruction {
        body,
        rejected,
        encoded,
    })
}

/// Rebuilds the body from checked fragments (at least k, distinct indexes), then
/// re-encodes it and requires the same root.
pub fn decode(
    commitment: &FragmentCommitment,
    checked: Vec<CheckedFragment>,
) -> Result<(Vec<u8>, Encoded), CodingError> {
    let params = commitment.params;
    let (k, n) = (params.k(), params.n());
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut leaves: Vec<Option<Hash>> = vec![None; n];
    let mut evidence = Vec::with_capacity(checked.len());
    commitment.params.validate()?;
    let shard_len = params.shard_len();
    for c in checked {
        let i = c.index() as usize;
        // Checked against another commitment: not ours to use.
        if i >= n || slots[i].is_some() || c.fragment.shard.len() != shard_len {
            continue;
        }
        leaves[i] = Some(c.leaf);
        evidence.push(c.fragment.clone());
        slots[i] = Some(c.fragment.shard);
    }
    let present = slots.iter().filter(|s| s.is_some()).count();
    if present < k {
        return Err(CodingError::NotEnoughFragments {
            found: present,
            needed: k,
            rejected: Vec::new(),
        });
    }
    if slots[..k].iter().any(Option::is_none) {
        // Rebuilds only the missing data shards; present shards are left untouched,
        // so received parity can be compared with the re-encoding below.
        let coder = ReedSolomon::new(k, n - k).map_err(library_error)?;
        coder.reconstruct_data(&mut slots).map_err(library_error)?;
    }
    let mut shards: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut received_parity: Vec<Option<Vec<u8>>> = Vec::with_capacity(n - k);
    for (i, slot) in slots.into_iter().enumerate() {
        if i < k {
            shards.push(slot.unwrap_or_default());
        } else {
            received_parity.push(slot);
        }
    }
    shards.resize(n, vec![0u8; shard_len]);
    fill_parity(&params, &mut shards)?;
    for (offset, received) in received_parity.iter().enumerate() {
        if received.as_ref().is_some_and(|r| *r != shards[k + offset]) {
            return Err(CodingError::BadEncoding {
                index: (k + offset) as u32,
                evidence,
            });
        }
    }
    let tree = MerkleTree::from_leaf_hashes(leaf_hashes(&shards, &leaves))
        .map_err(|e| CodingError::Library(e.to_string()))?;
    if tree.root() != commitment.root {
        let index = (0..n).find(|&i| leaves[i].is_none()).unwrap_or(0) as u32;
        return Err(CodingError::BadEncoding { index, evidence });
    }
    let mut body = Vec::with_capacity(params.body_len as usize);
    for shard in &shards[..k] {
        body.extend_from_slice(shard);
    }
    body.truncate(params.body_len as usize);
    Ok((
        body,
        Encoded {
            commitment: *commitment,
            shards,
            tree,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestRng;

    fn body_of(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Keeps exactly `keep` fragments, chosen at random.
    fn pick(fragments: Vec<Fragment>, keep: usize, rng: &mut TestRng) -> Vec<Fragment> {
        let mut fragments = fragments;
        for i in (1..fragments.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            fragments.swap(i, j);
        }
        fragments.truncate(keep);
        fragments
    }

    #[test]
    fn every_k_n_up_to_64_round_trips_with_random_erasures() -> Result<(), CodingError> {
        let mut rng = TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
        for n in 1..=64usize {
            for k in 1..=n {
                for len in [0, 1, k.saturating_sub(1), k + 1, 3 * k + 7] {
                    let body = body_of(len, (n * 7 + k) as u8);
                    let encoded = encode(&body, k, n)?;
                    let fragments = pick(encoded.fragments(), k, &mut rng);
                    let rebuilt = reconstruct(&encoded.commitment(), fragments)?;
                    assert_eq!(rebuilt.body, body, "k={k} n={n} len={len}");
                    assert!(rebuilt.rejected.is_empty());
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_sizes_and_erasure_patterns(n in 1usize..=64, k_pick: usize, len in 0usize..20_000, extra: usize, seed: u8) {
            let k = k_pick % n + 1;
            let body = body_of(len, seed);
            let encoded = encode(&body, k, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let keep = k + extra % (n - k + 1);
            let mut rng = TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[seed; 32]);
            let fragments = pick(encoded.fragments(), keep, &mut rng);
            let rebuilt = reconstruct(&encoded.commitment(), fragments).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(rebuilt.body, body);
        }
    }

    #[test]
    fn large_bodies_round_trip() -> Result<(), CodingError> {
        let mut rng = TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
        for (k, n) in [(2, 4), (3, 7), (11, 31)] {
            let body = body_of(4 * 1024 * 1024 + 3, k as u8);
            let encoded = encode(&body, k, n)?;
            // Worst case: every data shard lost.
            let parity: Vec<Fragment> = encoded.fragments().into_iter().skip(k).collect();
            let fragments = pick(parity, k, &mut rng);
            assert!(fragments.iter().all(|f| f.index as usize >= k));
            assert_eq!(reconstruct(&encoded.commitment(), fragments)?.body, body);
        }
        Ok(())
    }

    #[test]
    fn hostile_parameters_and_foreign_fragments_do_not_panic() -> Result<(), CodingError> {
        let encoded = encode(b"some body", 2, 4)?;
        let mut bad = encoded.commitment();
        bad.params.data_shards = 0;
        assert!(
            encoded
                .fragment(0)
                .ok_or(CodingError::Library("no".into()))?
                .check(&bad)
                .is_err()
        );
        assert!(reconstruct(&bad, encoded.fragments()).is_err());
        // Fragments checked against a bigger block, handed to decode for a smaller one.
        let big = encode(&[7u8; 5000], 3, 7)?;
        let checked: Vec<CheckedFragment> = big
            .fragments()
            .into_iter()
            .filter_map(|f| f.check(&big.commitment()).ok())
            .collect();
        assert!(decode(&encoded.commitment(), checked).is_err());
        Ok(())
    }

    #[test]
    fn bad_counts_are_refused() {
        for (k, n) in [(0, 4), (5, 4), (1, 257)] {
            assert!(matches!(
                encode(b"x", k, n),
                Err(CodingError::BadShardCounts { .. })
            ));
        }
    }

    #[test]
    fn default_k_is_f_plus_one() {
        assert_eq!(default_data_shards(4), 2);
        assert_eq!(default_data_shards(7), 3);
        assert_eq!(default_data_shards(10), 4);
        assert_eq!(default_data_shards(31), 11);
        assert_eq!(default_data_shards(1), 1);
    }

    #[test]
    fn forged_corrupt_duplicate_and_misplaced_fragments_are_refused() -> Result<(), CodingError> {
        let body = body_of(1000, 1);
        let encoded = encode(&body, 3, 7)?;
        let commitment = encoded.commitment();
        let other = encode(&body_of(1000, 2), 3, 7)?;
        let good = |i: usize| {
            encoded
                .fragment(i)
                .ok_or(CodingError::Library("no fragment".into()))
        };

        let mut flipped = good(0)?;
        flipped.shard[10] ^= 1;
        let mut short = good(1)?;
        short.shard.pop();
        let mut renumbered = good(2)?;
        renumbered.index = 3;
        let mut out_of_range = good(4)?;
        out_of_range.index = 7;
        let foreign = other
            .fragment(5)
            .ok_or(CodingError::Library("no fragment".into()))?;
        let duplicate = good(6)?;

        let all = vec![
            flipped,
            short,
            renumbered,
            out_of_range,
            foreign,
            good(6)?,
            duplicate,
        ];
        match reconstruct(&commitment, all) {
            Err(CodingError::NotEnoughFragments {
                found,
                needed,
                rejected,
            }) => {
                assert_eq!((found, needed), (1, 3));
                assert_eq!(rejected.len(), 6);
                assert!(matches!(
                    rejected[0],
                    FragmentError::BadProof { index: 0, .. }
                ));
                assert!(matches!(
                    rejected[1],
                    FragmentError::WrongSize { index: 1, .. }
                ));
                assert!(matches!(
                    rejected[2],
                    FragmentError::BadProof { index: 3, .. }
                ));
                assert!(matches!(
                    rejected[3],
                    FragmentError::IndexOutOfRange { index: 7, .. }
                ));
                assert!(matches!(
                    rejected[4],
                    FragmentError::BadProof { index: 5, .. }
                ));
                assert!(matches!(rejected[5], FragmentError::Duplicate { index: 6 }));
            }
            other => panic!("expected NotEnoughFragments, got {other:?}"),
        }
        let message = CodingError::NotEnoughFragments {
            found: 1,
            needed: 3,
            rejected: vec![],
        }
        .to_string();
        assert!(
            message.contains("only 1 valid") && message.contains("3 needed"),
            "{message}"
        );

        // With enough good ones alongside, the bad ones are reported and not used.
        let mut bad = good(0)?;
        bad.shard[0] ^= 0xff;
        let rebuilt = reconstruct(&commitment, vec![bad, good(1)?, good(5)?, good(6)?])?;
        assert_eq!(rebuilt.body, body);
        assert_eq!(rebuilt.rejected.len(), 1);
        Ok(())
    }

    /// A Byzantine encoder: shards that are not one codeword, committed in a valid tree.
    fn byzantine(
        body: &[u8],
        k: usize,
        n: usize,
        corrupt: usize,
    ) -> Result<(FragmentCommitment, Vec<Fragment>), CodingError> {
        let honest = encode(body, k, n)?;
        let mut shards: Vec<Vec<u8>> = honest.fragments().into_iter().map(|f| f.shard).collect();
        shards[corrupt][0] ^= 0x5a;
        let tree = MerkleTree::from_leaf_hashes(
            shards
                .iter()
                .enumerate()
                .map(|(i, s)| leaf_hash(i, s))
                .collect(),
        )
        .map_err(|e| CodingError::Library(e.to_string()))?;
        let commitment = FragmentCommitment {
            params: honest.commitment().params,
            root: tree.root(),
        };
        let fragments = shards
            .into_iter()
            .enumerate()
            .map(|(i, shard)| Fragment {
                index: i as u32,
                shard,
                proof: tree.proof(i).unwrap_or_else(|_| unreachable!()),
            })
            .collect();
        Ok((commitment, fragments))
    }

    #[test]
    fn bad_encoding_is_detected_whichever_fragments_are_used() -> Result<(), CodingError> {
        let body = body_of(5000, 9);
        let (k, n) = (3, 7);
        for corrupt in 0..n {
            let (commitment, fragments) = byzantine(&body, k, n, corrupt)?;
            // Each fragment proves membership on its own ...
            for f in &fragments {
                assert!(f.clone().check(&commitment).is_ok());
            }
            // ... but every k-subset that decodes must be caught, never return bytes.
            for subset in [
                [0, 1, 2],
                [4, 5, 6],
                [0, 3, 6],
                [corrupt, (corrupt + 1) % n, (corrupt + 2) % n],
            ] {
                let chosen: Vec<Fragment> = subset.iter().map(|&i| fragments[i].clone()).collect();
                match reconstruct(&commitment, chosen) {
                    Err(CodingError::BadEncoding { evidence, .. }) => assert_eq!(evidence.len(), k),
                    other => panic!(
                        "corrupt={corrupt} subset={subset:?}: expected BadEncoding, got {other:?}"
                    ),
                }
            }
            // And the proposer's claim does not survive the replicas' check.
            assert!(matches!(
                check_encoding(&body, &commitment),
                Err(CodingError::RootMismatch { .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn check_encoding_accepts_the_honest_commitment_only() -> Result<(), CodingError> {
        let body = body_of(777, 3);
        let encoded = encode(&body, 2, 4)?;
        check_encoding(&body, &encoded.commitment())?;
        let mut other = body.clone();
        other[5] ^= 1;
        assert!(matches!(
            check_encoding(&other, &encoded.commitment()),
            Err(CodingError::RootMismatch { .. })
        ));
        assert!(matches!(
            check_encoding(&body[1..], &encoded.commitment()),
            Err(CodingError::LengthMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn fragment_wire_format_is_stable() -> Result<(), Box<dyn std::error::Error>> {
        let encoded = encode(b"abc", 1, 2)?;
        let fragment = encoded.fragment(1).ok_or("no fragment")?;
        let bytes = mosaic_crypto::codec::encode(&fragment)?;
        // index u32 | shard len u64 | shard | leaf_count u32 | siblings len u64 | 1 sibling
        assert_eq!(bytes.len(), 4 + 8 + 3 + 4 + 8 + 32);
        assert_eq!(&bytes[..4], &1u32.to_le_bytes());
        let back: Fragment = mosaic_crypto::codec::decode(&bytes, 1024)?;
        assert_eq!(back, fragment);
        Ok(())
    }
}
