//! The paper's nouns as types, the validator set and quorum arithmetic.

use std::fmt;

use mosaic_crypto::{ChainId, Hash, PublicKey};
use serde::{Deserialize, Serialize};

/// A view number; the primary of view v is replica v mod n.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct View(pub u64);

/// A sequence number; sequence s is ledger height s (the first block is 1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct SeqNum(pub u64);

/// A replica's index in the validator set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub u32);

/// The digest of a payload, as computed by the caller's [`crate::PayloadCheck`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Digest(pub Hash);

impl View {
    /// The next view.
    pub fn next(self) -> View {
        View(self.0 + 1)
    }
}

impl SeqNum {
    /// The next sequence number.
    pub fn next(self) -> SeqNum {
        SeqNum(self.0 + 1)
    }

    /// The previous sequence number (0 stays 0).
    pub fn prev(self) -> SeqNum {
        SeqNum(self.0.saturating_sub(1))
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}
impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}
impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.0.to_string()[..8])
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// The fixed set of validators of a chain, in index order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorSet {
    chain: ChainId,
    keys: Vec<PublicKey>,
}

/// Why a validator set is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    /// PBFT needs n = 3f + 1 >= 4 and at most 256 validators (one fragment each).
    #[error("{n} validators: need 4 <= n <= 256 (n = 3f+1 tolerates f faults)")]
    BadSize {
        /// The count.
        n: usize,
    },
    /// The same key twice.
    #[error("validator key {key} appears more than once")]
    DuplicateKey {
        /// The repeated key, hex.
        key: String,
    },
}

impl ValidatorSet {
    /// A validator set; `keys[i]` is replica i.
    pub fn new(chain: ChainId, keys: Vec<PublicKey>) -> Result<Self, ValidatorSetError> {
        if keys.len() < 4 || keys.len() > 256 {
            return Err(ValidatorSetError::BadSize { n: keys.len() });
        }
        let mut sorted = keys.clone();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(ValidatorSetError::DuplicateKey {
                key: w[0].to_string(),
            });
        }
        Ok(ValidatorSet { chain, keys })
    }

    /// The chain these validators run.
    pub fn chain(&self) -> &ChainId {
        &self.chain
    }

    /// n.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a valid set; present for clippy's len-without-is-empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// f = (n - 1) / 3: the faults tolerated.
    pub fn f(&self) -> usize {
        (self.len() - 1) / 3
    }

    /// The quorum for prepared (with the pre-prepare), committed, stable checkpoints
    /// and new views: ceil((n + f + 1) / 2), which is 2f + 1 when n = 3f + 1. Any two
    /// quorums share at least f + 1 replicas, so at least one honest replica.
    pub fn quorum(&self) -> usize {
        #[cfg(test)]
        if canary::broken_quorum() {
            return self.f() + 1;
        }
        (self.len() + self.f() + 1).div_ceil(2)
    }

    /// f + 1: enough to contain one honest replica.
    pub fn weak_quorum(&self) -> usize {
        self.f() + 1
    }

    /// The primary of `view`.
    pub fn primary(&self, view: View) -> ReplicaId {
        ReplicaId((view.0 % self.len() as u64) as u32)
    }

    /// The key of `replica`, if it is in the set.
    pub fn key(&self, replica: ReplicaId) -> Option<&PublicKey> {
        self.keys.get(replica.0 as usize)
    }

    /// All keys, in replica order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The index of `key`, if it is a validator.
    pub fn index_of(&self, key: &PublicKey) -> Option<ReplicaId> {
        self.keys
            .iter()
            .position(|k| k == key)
            .map(|i| ReplicaId(i as u32))
    }

    /// Every replica id.
    pub fn ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        (0..self.len() as u32).map(ReplicaId)
    }
}

/// Test-only switches that inject textbook bugs, to prove the simulator's oracles
/// catch each of them (the canaries in `sim`). Thread-local so parallel tests are
/// unaffected; compiled only into the crate's own tests.
#[cfg(test)]
pub mod canary {
    use std::cell::Cell;

    /// A deliberate bug.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Bug {
        /// Every quorum is f+1 instead of 2f+1.
        QuorumFPlusOne,
        /// NEW-VIEW re-issues the LOWEST-view prepared certificate of a slot.
        LowestViewCertificate,
        /// NEW-VIEW is built from (and accepted with) f+1 VIEW-CHANGEs.
        WeakNewViewQuorum,
        /// Receivers take a NEW-VIEW's re-issued chain as sent instead of
        /// recomputing it from its VIEW-CHANGEs.
        NoChainRecompute,
        /// Prepared certificates are accepted without checking their PREPAREs'
        /// signatures.
        NoPrepareSignatureCheck,
        /// Votes are sent without their safety record being persisted first.
        NoPersistBeforeSend,
    }

    thread_local! {
        static BUG: Cell<Option<Bug>> = const { Cell::new(None) };
    }

    /// Whether `bug` is injected on this thread.
    pub fn has(bug: Bug) -> bool {
        BUG.with(Cell::get) == Some(bug)
    }

    /// Injects `bug` (or none) on this thread.
    pub fn inject(bug: Option<Bug>) {
        BUG.with(|b| b.set(bug));
    }

    /// Whether the quorum is deliberately broken on this thread.
    pub fn broken_quorum() -> bool {
        has(Bug::QuorumFPlusOne)
    }

    /// Breaks (or restores) the quorum on this thread.
    pub fn set_broken_quorum(broken: bool) {
        inject(broken.then_some(Bug::QuorumFPlusOne));
    }
}

/// Whether a test injected `bug` (always false outside the crate's tests).
#[cfg(test)]
pub(crate) fn injected(bug: canary::Bug) -> bool {
    canary::has(bug)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_crypto::Keypair;

    fn set(n: usize) -> ValidatorSet {
        let keys = (0..n as u64)
            .map(|i| Keypair::from_seed_for_tests(i).public())
            .collect();
        ValidatorSet::new(ChainId::new("t").unwrap(), keys).unwrap()
    }

    #[test]
    fn quorum_arithmetic() {
        for (n, f, q) in [
            (4, 1, 3),
            (7, 2, 5),
            (10, 3, 7),
            (31, 10, 21),
            (5, 1, 4),
            (6, 1, 4),
        ] {
            let s = set(n);
            assert_eq!((s.f(), s.quorum(), s.weak_quorum()), (f, q, f + 1), "n={n}");
            // Two quorums intersect in at least f + 1 replicas, so in an honest one.
            assert!(2 * s.quorum() > n + f);
        }
    }

    proptest::proptest! {
        /// For every n: two quorums share f+1 replicas (so an honest one), and the
        /// n-f replicas that are not faulty can form a quorum on their own.
        #[test]
        fn quorums_intersect_and_are_reachable(n in 4usize..=256) {
            let f = (n - 1) / 3;
            let q = (n + f + 1).div_ceil(2);
            proptest::prop_assert!(2 * q > n + f, "two quorums must share f + 1 replicas");
            proptest::prop_assert!(q <= n - f);
        }
    }

    #[test]
    fn wire_format_is_stable() {
        // Golden bytes: changing them breaks every peer and every stored record.
        let p = crate::messages::Prepare {
            view: View(2),
            seq: SeqNum(7),
            digest: Digest(mosaic_crypto::Hash::ZERO),
            parent: Digest(mosaic_crypto::Hash::of(b"parent")),
        };
        let signed = crate::messages::Signed {
            body: p,
            signer: ReplicaId(3),
            signature: mosaic_crypto::Signature::from_bytes([9; 64]),
        };
        let bytes = crate::messages::Message::Prepare(signed).encode().unwrap();
        let mut expected = vec![1, 0, 0, 0]; // variant 1: Prepare
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&7u64.to_le_bytes());
        expected.extend_from_slice(&[0; 32]);
        expected.extend_from_slice(mosaic_crypto::Hash::of(b"parent").as_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(&[9; 64]);
        assert_eq!(bytes, expected);
        assert!(crate::messages::Message::decode(&bytes, bytes.len()).is_ok());
        assert!(crate::messages::Message::decode(&bytes[..bytes.len() - 1], 1024).is_err());
    }

    #[test]
    fn bad_sets_are_refused() {
        let k = Keypair::from_seed_for_tests(1).public();
        assert!(ValidatorSet::new(ChainId::new("t").unwrap(), vec![k; 3]).is_err());
        assert!(matches!(
            ValidatorSet::new(ChainId::new("t").unwrap(), vec![k; 4]),
            Err(ValidatorSetError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn primary_rotates() {
        let s = set(4);
        assert_eq!(s.primary(View(0)), ReplicaId(0));
        assert_eq!(s.primary(View(5)), ReplicaId(1));
    }
}
