//! The mempool: verified transactions waiting to be ordered.
//!
//! - Each signature is checked once: on admission (in batches), and a bounded cache of
//!   (transaction id, signature) pairs lets block validation skip transactions this
//!   node already verified.
//! - Per sender, transactions are kept by nonce; a block takes each sender's
//!   transactions contiguously from its next nonce, round-robin over senders.
//! - Bounded in count and bytes ("mempool full" is an answer, not a crash); refuses
//!   duplicates, stale nonces, nonces too far ahead, and transactions it saw committed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use mosaic_crypto::{ChainId, Hash, PublicKey};

use crate::ledger::{self, Ledger, SignedTransfer, TxError, TxHash, VerifiedTransfer};

/// Limits of the mempool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub count_max: usize,
    /// Most bytes held (encoded transactions).
    pub bytes_max: usize,
    /// How far past a sender's next nonce a transaction may be.
    pub nonce_ahead_max: u64,
    /// Verified signatures remembered for block validation (at least half this many
    /// of the latest; keep it at least twice `count_max` so pending transactions are
    /// not forgotten).
    pub verified_cache_max: usize,
    /// Committed transaction ids remembered to refuse re-gossip (at least half this
    /// many of the latest).
    pub committed_memory_max: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            count_max: 200_000,
            bytes_max: 64 * 1024 * 1024,
            nonce_ahead_max: 1_000,
            verified_cache_max: 400_000,
            committed_memory_max: 200_000,
        }
    }
}

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// Invalid on its own.
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// No room; try again later.
    #[error("mempool full ({count} transactions, {bytes} bytes): try again later")]
    Full {
        /// Transactions held.
        count: usize,
        /// Bytes held.
        bytes: usize,
    },
    /// The node has more work waiting for signature checks than it lets new
    /// submissions queue behind; try again later.
    #[error("node busy with signature checks ({waiting} waiting); try again later")]
    Busy {
        /// Transactions waiting.
        waiting: usize,
    },
    /// Already waiting.
    #[error("transaction {0} is already pending")]
    AlreadyPending(TxHash),
    /// Already in a committed block.
    #[error("transaction {0} is already committed")]
    AlreadyCommitted(TxHash),
    /// The sender already used this nonce.
    #[error("nonce {got} is already used: the account's next nonce is {next}")]
    StaleNonce {
        /// The account's next nonce.
        next: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Too far ahead of the account's next nonce.
    #[error(
        "nonce {got} is too far ahead of the account's next nonce {next} (at most {max} ahead)"
    )]
    NonceTooFarAhead {
        /// The account's next nonce.
        next: u64,
        /// The transaction's nonce.
        got: u64,
        /// The allowed distance.
        max: u64,
    },
    /// Another transaction with the same sender and nonce is pending.
    #[error("another transaction from this sender with nonce {nonce} is pending ({pending})")]
    NonceTaken {
        /// The nonce.
        nonce: u64,
        /// The pending transaction's id.
        pending: TxHash,
    },
}

/// A set that remembers at least its last `⌈max/2⌉` and at most its last
/// `2⌈max/2⌉` insertions: two generations, the older dropped whole when the newer is
/// full. Inserting a value the older generation holds moves it to the newer one.
/// Each value is stored once (no separate order queue).
#[derive(Debug, Clone)]
struct BoundedSet<T: Eq + std::hash::Hash> {
    current: HashSet<T>,
    previous: HashSet<T>,
    max: usize,
}

impl<T: Eq + std::hash::Hash> BoundedSet<T> {
    fn new(max: usize) -> Self {
        BoundedSet {
            current: HashSet::new(),
            previous: HashSet::new(),
            max,
        }
    }
    fn insert(&mut self, value: T) {
        if self.max == 0 || self.current.contains(&value) {
            return;
        }
        self.previous.remove(&value);
        if self.current.len() >= self.max.div_ceil(2) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(value);
    }
    fn contains(&self, value: &T) -> bool {
        self.current.contains(value) || self.previous.contains(value)
    }
}

/// The key under which a checked (id, signature) pair is remembered: 32 bytes
/// instead of 96, with blake3's collision resistance.
fn verified_key(hash: &TxHash, signature: &mosaic_crypto::Signature) -> Hash {
    Hash::of_parts(&[hash.as_bytes(), signature.as_bytes()])
}

#[derive(Debug, Clone)]
struct Entry {
    tx: VerifiedTransfer,
    bytes: usize,
}

/// The pool of pending transactions.
#[derive(Debug, Clone)]
pub struct Mempool {
    config: MempoolConfig,
    chain: ChainId,
    // Hash maps, entries boxed: a transfer with its two parsed keys is ~0.5 KB, and
    // B-tree maps shifted whole values and keys on every insert and remove
    // (`BTreeMap::remove` in `remove_committed` alone was 2.5% of a validator's CPU
    // at 5,000 transfers/s). A proposal
    // takes senders round-robin in the map's order; when a block fills up, the
    // senders late in that order wait for the next one (as with key order before).
    entries: HashMap<TxHash, Box<Entry>>,
    by_sender: HashMap<PublicKey, BTreeMap<u64, TxHash>>,
    bytes: usize,
    verified: BoundedSet<Hash>,
    committed: BoundedSet<TxHash>,
    /// Transactions of blocks whose signatures this node had not checked before the
    /// block carried them, since the last [`Mempool::take_unchecked_in_blocks`].
    unchecked_in_blocks: u64,
}

fn encoded_len(tx: &SignedTransfer) -> usize {
    tx.transfer.signed_len()
}

impl Mempool {
    /// An empty pool for `chain`.
    pub fn new(chain: ChainId, config: MempoolConfig) -> Self {
        Mempool {
            verified: BoundedSet::new(config.verified_cache_max),
            committed: BoundedSet::new(config.committed_memory_max),
            config,
            chain,
            entries: HashMap::new(),
            by_sender: HashMap::new(),
            bytes: 0,
            unchecked_in_blocks: 0,
        }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `hash` is pending.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.entries.contains_key(hash)
    }

    /// Whether `hash` was seen committed (recently).
    pub fn was_committed(&self, hash: &TxHash) -> bool {
        self.committed.contains(hash)
    }

    /// Admits one transaction (verifying its signature).
    pub fn add(&mut self, tx: SignedTransfer, ledger: &Ledger) -> Result<TxHash, MempoolError> {
        self.add_batch(vec![tx], ledger)
            .pop()
            .unwrap_or(Err(MempoolError::Full { count: 0, bytes: 0 }))
    }

    /// Admits many transactions, verifying the new ones in one signature batch.
    /// Results are in input order.
    pub fn add_batch(
        &mut self,
        txs: Vec<SignedTransfer>,
        ledger: &Ledger,
    ) -> Vec<Result<TxHash, MempoolError>> {
        let mut results: Vec<Option<Result<TxHash, MempoolError>>> = Vec::with_capacity(txs.len());
        let mut to_verify = Vec::new();
        let mut slots = Vec::new();
        // Room left decides how many new ones are worth verifying: signature checks
        // are the expensive part, and a full pool must answer "full" cheaply.
        let mut room = self.config.count_max.saturating_sub(self.entries.len());
        for tx in txs {
            let hash = tx.hash();
            if self.committed.contains(&hash) {
                results.push(Some(Err(MempoolError::AlreadyCommitted(hash))));
            } else if self.entries.contains_key(&hash) {
                results.push(Some(Err(MempoolError::AlreadyPending(hash))));
            } else if room == 0 {
                results.push(Some(Err(MempoolError::Full {
                    count: self.entries.len(),
                    bytes: self.bytes,
                })));
            } else {
                room -= 1;
                slots.push(results.len());
                results.push(None);
                to_verify.push(tx);
            }
        }
        let verified = ledger::verify_batch(to_verify, &self.chain);
        for (slot, outcome) in slots.into_iter().zip(verified) {
            results[slot] = Some(match outcome {
                Ok(tx) => {
                    self.verified
                        .insert(verified_key(&tx.hash(), &tx.signed().signature));
                    self.admit(tx, ledger)
                }
                Err(e) => Err(MempoolError::Invalid(e)),
            });
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(MempoolError::Full { count: 0, bytes: 0 })))
            .collect()
    }

    /// Admits transactions whose signatures the caller already checked (with
    /// [`ledger::verify_batch`], outside any lock). Results are in input order.
    pub fn add_verified(
        &mut self,
        txs: Vec<Result<VerifiedTransfer, TxError>>,
        ledger: &Ledger,
    ) -> Vec<Result<TxHash, MempoolError>> {
        txs.into_iter()
            .map(|result| {
                let tx = result?;
                let hash = tx.hash();
                if self.committed.contains(&hash) {
                    return Err(MempoolError::AlreadyCommitted(hash));
                }
                if self.entries.contains_key(&hash) {
                    return Err(MempoolError::AlreadyPending(hash));
                }
                self.verified
                    .insert(verified_key(&hash, &tx.signed().signature));
                self.admit(tx, ledger)
            })
            .collect()
    }

    /// Why a new submission would be refused before its signatures are checked, if
    /// it would: the pool is full, or more than [`VERIFY_BACKLOG_MAX`] transactions
    /// (`verify_backlog`: gossiped ones and those in the signature queue) wait for
    /// signature checks. Either way the node
    /// answers at once and keeps its CPU for the transactions it already has.
    pub fn refusal(&self, verify_backlog: usize) -> Option<MempoolError> {
        if verify_backlog > VERIFY_BACKLOG_MAX {
            return Some(MempoolError::Busy {
                waiting: verify_backlog,
            });
        }
        self.is_full().then(|| MempoolError::Full {
            count: self.len(),
            bytes: self.bytes(),
        })
    }

    /// Whether the pool is at its count limit (callers skip verification then).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.config.count_max
    }

    fn admit(&mut self, tx: VerifiedTransfer, ledger: &Ledger) -> Result<TxHash, MempoolError> {
        let hash = tx.hash();
        let t = tx.transfer();
        let next = ledger.account(&t.from).nonce;
        if t.nonce < next {
            return Err(MempoolError::StaleNonce { next, got: t.nonce });
        }
        if t.nonce - next > self.config.nonce_ahead_max {
            return Err(MempoolError::NonceTooFarAhead {
                next,
                got: t.nonce,
                max: self.config.nonce_ahead_max,
            });
        }
        if let Some(pending) = self.by_sender.get(&t.from).and_then(|m| m.get(&t.nonce)) {
            return Err(MempoolError::NonceTaken {
                nonce: t.nonce,
                pending: *pending,
            });
        }
        let bytes = encoded_len(tx.signed());
        if self.entries.len() >= self.config.count_max || self.bytes + bytes > self.config.bytes_max
        {
            return Err(MempoolError::Full {
                count: self.entries.len(),
                bytes: self.bytes,
            });
        }
        self.by_sender
            .entry(t.from)
            .or_default()
            .insert(t.nonce, hash);
        self.bytes += bytes;
        self.entries.insert(hash, Box::new(Entry { tx, bytes }));
        Ok(hash)
    }

    /// Picks transactions for a block: per sender contiguously from `next_nonce`,
    /// round-robin over senders, within the count and byte limits. Costs one lookup
    /// per sender plus one per transaction picked, however many are pending.
    pub fn select(
        &self,
        next_nonce: impl Fn(&PublicKey) -> u64,
        count_max: usize,
        bytes_max: usize,
    ) -> Vec<VerifiedTransfer> {
        // (sender's pending by nonce, the next nonce to take)
        let mut queues: Vec<(&BTreeMap<u64, TxHash>, u64)> = self
            .by_sender
            .iter()
            .map(|(sender, by_nonce)| (by_nonce, next_nonce(sender)))
            .collect();
        let mut out = Vec::new();
        let mut bytes = 0;
        'rounds: while !queues.is_empty() {
            for queue in queues.iter_mut() {
                let Some(entry) = queue.0.get(&queue.1).and_then(|h| self.entries.get(h)) else {
                    // Mark the run as ended; removed after the round.
                    queue.1 = u64::MAX;
                    continue;
                };
                if out.len() >= count_max || bytes + entry.bytes > bytes_max {
                    break 'rounds;
                }
                bytes += entry.bytes;
                out.push(entry.tx.clone());
                queue.1 += 1;
            }
            queues.retain(|q| q.1 != u64::MAX);
        }
        out
    }

    /// Whether some sender has a transaction at its next nonce, i.e. whether a block
    /// proposed now would hold anything. Stops at the first such sender.
    pub fn has_ready(&self, next_nonce: impl Fn(&PublicKey) -> u64) -> bool {
        self.by_sender
            .iter()
            .any(|(sender, by_nonce)| by_nonce.contains_key(&next_nonce(sender)))
    }

    /// Sorts [`prepare`]d transactions into those this node already verified (same
    /// id, chain and signature: wrapped as verified, without checking again) and the
    /// rest (to be checked with [`verify_unknown`]). Input order is kept. Only set
    /// lookups: the hashing was done by [`prepare`], outside any lock.
    pub fn known(&self, txs: Vec<Prepared>) -> Vec<Known> {
        txs.into_iter()
            .map(|p| {
                if p.tx.transfer.chain == self.chain && self.verified.contains(&p.key) {
                    Known::Verified(VerifiedTransfer::trusted(p.tx, p.hash))
                } else {
                    Known::Unchecked(p.tx)
                }
            })
            .collect()
    }

    /// Verifies a block's transactions, skipping the signature check for those this
    /// node already verified (same id and signature), and remembers the new ones.
    /// Results in input order.
    pub fn verify_for_block(
        &mut self,
        txs: Vec<SignedTransfer>,
    ) -> Vec<Result<VerifiedTransfer, TxError>> {
        let sorted = self.known(prepare(txs));
        let unchecked = sorted
            .iter()
            .filter(|k| matches!(k, Known::Unchecked(_)))
            .count();
        self.unchecked_in_blocks += unchecked as u64;
        let results = verify_unknown(sorted, &self.chain);
        for tx in results.iter().flatten() {
            self.verified
                .insert(verified_key(&tx.hash(), &tx.signed().signature));
        }
        results
    }

    /// How many transactions blocks carried before this node had checked their
    /// signatures (checked then, on the critical path), since the last call.
    pub fn take_unchecked_in_blocks(&mut self) -> u64 {
        std::mem::take(&mut self.unchecked_in_blocks)
    }

    /// Forgets what a committed block contained, and whatever its execution made stale.
    pub fn remove_committed<'a>(
        &mut self,
        committed: impl IntoIterator<Item = &'a VerifiedTransfer>,
        ledger: &Ledger,
    ) {
        let mut senders = BTreeSet::new();
        for tx in committed {
            self.committed.insert(tx.hash());
            self.remove(&tx.hash());
            senders.insert(tx.transfer().from);
        }
        for sender in senders {
            let next = ledger.account(&sender).nonce;
            let stale: Vec<TxHash> = self
                .by_sender
                .get(&sender)
                .map(|m| m.range(..next).map(|(_, h)| *h).collect())
                .unwrap_or_default();
            for hash in stale {
                self.remove(&hash);
            }
        }
    }

    fn remove(&mut self, hash: &TxHash) {
        if let Some(entry) = self.entries.remove(hash) {
            self.bytes -= entry.bytes;
            let t = entry.tx.transfer();
            if let Some(m) = self.by_sender.get_mut(&t.from) {
                m.remove(&t.nonce);
                if m.is_empty() {
                    self.by_sender.remove(&t.from);
                }
            }
        }
    }

    /// Checks internal consistency (tests).
    pub fn check_invariants(&self) {
        let bytes: usize = self.entries.values().map(|e| e.bytes).sum();
        assert_eq!(bytes, self.bytes);
        let indexed: usize = self.by_sender.values().map(BTreeMap::len).sum();
        assert_eq!(indexed, self.entries.len());
        assert!(self.entries.len() <= self.config.count_max);
        assert!(self.bytes <= self.config.bytes_max);
    }
}

/// Above this many gossiped transactions waiting for signature checks, submissions
/// are refused (503): about two seconds of checks on a small machine. A node that
/// keeps accepting more than it can check only adds latency and starves consensus.
pub const VERIFY_BACKLOG_MAX: usize = 10_000;

/// A transaction with its id and verified-cache key computed (see [`prepare`]).
#[derive(Debug)]
pub struct Prepared {
    tx: SignedTransfer,
    hash: TxHash,
    key: Hash,
}

/// Hashes transactions for [`Mempool::known`]; call it before taking the shared lock.
pub fn prepare(txs: Vec<SignedTransfer>) -> Vec<Prepared> {
    txs.into_iter()
        .map(|tx| {
            let hash = tx.hash();
            let key = verified_key(&hash, &tx.signature);
            Prepared { tx, hash, key }
        })
        .collect()
}

/// A transaction sorted by [`Mempool::known`].
#[derive(Debug)]
pub enum Known {
    /// Verified by this node before.
    Verified(VerifiedTransfer),
    /// Not verified yet.
    Unchecked(SignedTransfer),
}

/// Completes [`Mempool::known`]: checks the unknown transactions in one signature
/// batch and returns every result in input order.
pub fn verify_unknown(
    sorted: Vec<Known>,
    chain: &ChainId,
) -> Vec<Result<VerifiedTransfer, TxError>> {
    verify_unknown_groups(vec![sorted], chain)
        .pop()
        .unwrap_or_default()
}

/// [`verify_unknown`] for several groups at once (see [`ledger::verify_groups`]):
/// results per group, each in input order.
pub fn verify_unknown_groups(
    groups: Vec<Vec<Known>>,
    chain: &ChainId,
) -> Vec<Vec<Result<VerifiedTransfer, TxError>>> {
    let mut all_slots: Vec<Vec<Option<VerifiedTransfer>>> = Vec::with_capacity(groups.len());
    let mut unknown: Vec<Vec<SignedTransfer>> = Vec::with_capacity(groups.len());
    for group in groups {
        let mut slots = Vec::with_capacity(group.len());
        let mut checking = Vec::new();
        for r in group {
            match r {
                Known::Verified(tx) => slots.push(Some(tx)),
                Known::Unchecked(tx) => {
                    slots.push(None);
                    checking.push(tx);
                }
            }
        }
        all_slots.push(slots);
        unknown.push(checking);
    }
    // verify_groups answers once per input, so the fallback is never used.
    ledger::verify_groups(unknown, chain)
        .into_iter()
        .zip(all_slots)
        .map(|(checked, slots)| {
            let mut checked = checked.into_iter();
            slots
                .into_iter()
                .map(|slot| match slot {
                    Some(tx) => Ok(tx),
                    None => checked.next().unwrap_or(Err(TxError::ZeroAmount)),
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Transfer;
    use mosaic_crypto::Keypair;

    fn chain() -> ChainId {
        ChainId::new("pool").unwrap()
    }

    fn key(i: u64) -> Keypair {
        Keypair::from_seed_for_tests(i)
    }

    fn tx(from: u64, nonce: u64) -> SignedTransfer {
        Transfer {
            chain: chain(),
            from: key(from).public(),
            to: key(99).public(),
            amount: 1,
            nonce,
        }
        .sign(&key(from))
    }

    fn ledger() -> Ledger {
        Ledger::from_balances(&(0..5).map(|i| (key(i).public(), 1_000)).collect::<Vec<_>>())
            .unwrap()
    }

    fn pool(count_max: usize) -> Mempool {
        Mempool::new(
            chain(),
            MempoolConfig {
                count_max,
                nonce_ahead_max: 10,
                ..MempoolConfig::default()
            },
        )
    }

    #[test]
    fn admits_refuses_and_explains() {
        let l = ledger();
        let mut p = pool(100);
        assert!(p.add(tx(1, 0), &l).is_ok());
        assert!(matches!(
            p.add(tx(1, 0), &l),
            Err(MempoolError::AlreadyPending(_))
        ));
        let mut forged = tx(1, 1);
        forged.transfer.amount = 2;
        assert!(matches!(
            p.add(forged, &l),
            Err(MempoolError::Invalid(TxError::BadSignature { .. }))
        ));
        assert!(matches!(
            p.add(tx(2, 11), &l),
            Err(MempoolError::NonceTooFarAhead { .. })
        ));
        let other = Transfer {
            chain: chain(),
            from: key(1).public(),
            to: key(98).public(),
            amount: 1,
            nonce: 0,
        }
        .sign(&key(1));
        assert!(matches!(
            p.add(other, &l),
            Err(MempoolError::NonceTaken { nonce: 0, .. })
        ));
        p.check_invariants();
    }

    #[test]
    fn a_full_pool_or_a_verification_backlog_refuses_before_checking() {
        let l = ledger();
        let mut p = pool(1);
        assert!(p.refusal(0).is_none());
        assert!(p.refusal(VERIFY_BACKLOG_MAX).is_none());
        assert!(matches!(
            p.refusal(VERIFY_BACKLOG_MAX + 1),
            Some(MempoolError::Busy { waiting }) if waiting == VERIFY_BACKLOG_MAX + 1
        ));
        p.add(tx(1, 0), &l).unwrap();
        assert!(matches!(
            p.refusal(0),
            Some(MempoolError::Full { count: 1, .. })
        ));
    }

    #[test]
    fn full_is_an_answer() {
        let l = ledger();
        let mut p = pool(2);
        p.add(tx(1, 0), &l).unwrap();
        p.add(tx(1, 1), &l).unwrap();
        let err = p.add(tx(1, 2), &l).unwrap_err();
        assert!(matches!(err, MempoolError::Full { count: 2, .. }));
        assert!(err.to_string().contains("try again later"));
        // A full pool answers "full" before spending a signature check: a forged
        // transaction is refused as Full, not as Invalid.
        let mut forged = tx(2, 0);
        forged.transfer.amount += 1;
        let results = p.add_batch(vec![forged], &l);
        assert!(matches!(results[0], Err(MempoolError::Full { .. })));
        assert!(p.is_full());
        p.check_invariants();
    }

    #[test]
    fn selection_is_contiguous_per_sender_and_round_robin() {
        let l = ledger();
        let mut p = pool(100);
        for t in [tx(1, 0), tx(1, 1), tx(1, 3), tx(2, 0), tx(2, 1), tx(3, 1)] {
            p.add(t, &l).unwrap();
        }
        let picked = p.select(|k| l.account(k).nonce, 100, usize::MAX);
        let order: Vec<(PublicKey, u64)> = picked
            .iter()
            .map(|t| (t.transfer().from, t.transfer().nonce))
            .collect();
        // Sender 3 has a gap (nonce 0 missing); sender 1 stops before its gap.
        assert_eq!(order.len(), 4);
        assert!(order.iter().all(|(k, _)| *k != key(3).public()));
        assert!(!order.contains(&(key(1).public(), 3)));
        // Round robin: the first two picks are from two different senders.
        assert_ne!(order[0].0, order[1].0);
        assert_eq!(p.select(|k| l.account(k).nonce, 3, usize::MAX).len(), 3);
    }

    #[test]
    fn blocks_count_the_transactions_not_checked_before() {
        let l = ledger();
        let mut p = pool(100);
        p.add(tx(1, 0), &l).unwrap();
        assert_eq!(p.take_unchecked_in_blocks(), 0);
        let results = p.verify_for_block(vec![tx(1, 0), tx(2, 0), tx(3, 0)]);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(p.take_unchecked_in_blocks(), 2);
        assert_eq!(p.take_unchecked_in_blocks(), 0);
        // Checked by the block, they are known now.
        p.verify_for_block(vec![tx(2, 0), tx(3, 0)]);
        assert_eq!(p.take_unchecked_in_blocks(), 0);
    }

    #[test]
    fn bounded_set_remembers_at_least_the_latest_half() {
        let mut set = BoundedSet::new(10);
        for i in 0..1_000u32 {
            set.insert(i);
            // The latest max/2 are always there; never more than max in all.
            assert!((i.saturating_sub(4)..=i).all(|j| set.contains(&j)), "{i}");
            assert!(set.current.len() + set.previous.len() <= 10);
        }
        assert!(!set.contains(&0));
        // Inserting again keeps a value alive across rotations.
        let mut kept = BoundedSet::new(4);
        for i in 0..100u32 {
            kept.insert(0);
            kept.insert(1_000 + i);
            assert!(kept.contains(&0), "{i}");
        }
        let mut off = BoundedSet::new(0);
        off.insert(1u32);
        assert!(!off.contains(&1));
    }

    #[test]
    fn ready_means_a_block_would_hold_something() {
        let l = ledger();
        let mut p = pool(100);
        let ready = |p: &Mempool| p.has_ready(|k| l.account(k).nonce);
        assert!(!ready(&p));
        // Only a gapped run (nonce 0 missing): nothing can go in a block yet.
        p.add(tx(3, 1), &l).unwrap();
        assert!(!ready(&p));
        assert!(p.select(|k| l.account(k).nonce, 1, usize::MAX).is_empty());
        p.add(tx(3, 0), &l).unwrap();
        assert!(ready(&p));
        assert_eq!(p.select(|k| l.account(k).nonce, 10, usize::MAX).len(), 2);
    }

    #[test]
    fn committed_transactions_leave_and_are_not_readmitted() {
        let mut l = ledger();
        let mut p = pool(100);
        for n in 0..3 {
            p.add(tx(1, n), &l).unwrap();
        }
        let block = p.select(|k| l.account(k).nonce, 2, usize::MAX);
        l.apply(&block);
        p.remove_committed(&block, &l);
        assert_eq!(p.len(), 1);
        assert!(matches!(
            p.add(block[0].signed().clone(), &l),
            Err(MempoolError::AlreadyCommitted(_))
        ));
        p.check_invariants();
    }

    #[test]
    fn block_validation_reuses_verified_signatures() {
        let l = ledger();
        let mut p = pool(100);
        p.add(tx(1, 0), &l).unwrap();
        // Same id, different (invalid) signature: must not ride on the cache.
        let mut swapped = tx(1, 0);
        swapped.signature = tx(2, 0).signature;
        let results = p.verify_for_block(vec![tx(1, 0), swapped, tx(2, 0)]);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(TxError::BadSignature { .. })));
        assert!(results[2].is_ok());
    }

    #[test]
    fn known_skips_only_exactly_verified_transactions() {
        let l = ledger();
        let mut p = pool(100);
        p.add(tx(1, 0), &l).unwrap();
        let mut swapped = tx(1, 0);
        swapped.signature = tx(2, 0).signature;
        let sorted = p.known(prepare(vec![tx(2, 0), tx(1, 0), swapped]));
        let shape: Vec<bool> = sorted
            .iter()
            .map(|k| matches!(k, Known::Verified(_)))
            .collect();
        assert_eq!(shape, vec![false, true, false]);
        let results = verify_unknown(sorted, &chain());
        assert_eq!(results[0].as_ref().map(|t| t.hash()), Ok(tx(2, 0).hash()));
        assert_eq!(results[1].as_ref().map(|t| t.hash()), Ok(tx(1, 0).hash()));
        assert!(matches!(results[2], Err(TxError::BadSignature { .. })));
    }
}
