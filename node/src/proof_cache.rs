//! What the transfer proofs of one block share, made once per block: its
//! transfers, their positions by id, the tree under its `tx_root` and the tree of
//! its outcomes. Clients ask about the transfers they just sent, so the same few
//! blocks are asked about again and again; without this each request decodes a
//! whole body (a public-key decompression per transfer) and hashes every
//! transfer and outcome of it. Kept for the latest blocks asked about, within a
//! byte budget; a committed block never changes, so nothing is invalidated.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mosaic_crypto::{Hash, MerkleTree};

use crate::block::outcome_tree;
use crate::ledger::{SignedTransfer, TxOutcome};

/// Bytes the kept blocks' material may take, at most (one block is always kept).
pub const PROOF_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What one transfer's share of the material takes in memory besides the
/// transfer: its leaf and inner node in each of the two trees, and its position.
const PER_TRANSFER_BYTES: usize = 4 * 32 + 48 + 2 * 40;
/// What one block's entry takes besides its transfers (allocations, the list).
const PER_BLOCK_BYTES: usize = 1024;
/// Blocks kept at most, whatever their size: lookups scan the list.
pub const PROOF_CACHE_BLOCKS: usize = 1024;

/// One block's proof material.
#[derive(Debug)]
pub struct BlockProofs {
    /// The transfers, in block order.
    pub txs: Vec<SignedTransfer>,
    /// First position of each transfer id in the block.
    positions: HashMap<Hash, usize>,
    /// The tree whose root is the header's `tx_root`.
    pub tx_tree: MerkleTree,
    /// Each transfer's outcome, in block order.
    pub outcomes: Vec<TxOutcome>,
    /// The tree whose root is the next header's `outcome_root`.
    pub outcome_tree: MerkleTree,
    /// What the material is charged against the budget: the larger of the
    /// encoded body and the decoded transfers with their share of the trees.
    charged: usize,
}

/// Why a block's proof material cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofMaterialError {
    /// The block has no transfers: nothing in it can be proven.
    #[error("block has no transfers")]
    Empty,
    /// The trees could not be built.
    #[error("cannot build the block's trees: {0}")]
    Tree(String),
}

impl BlockProofs {
    /// The material of a block of `txs` (from a body of `body_bytes`) whose
    /// transfer at position i had outcome `outcome(i, id)`.
    pub fn new(
        txs: Vec<SignedTransfer>,
        body_bytes: usize,
        outcome: impl Fn(usize, &Hash) -> TxOutcome,
    ) -> Result<Self, ProofMaterialError> {
        let with_outcomes: Vec<(Hash, TxOutcome)> = txs
            .iter()
            .enumerate()
            .map(|(i, tx)| {
                let id = tx.hash();
                (id, outcome(i, &id))
            })
            .collect();
        Self::executed(txs, with_outcomes, body_bytes)
    }

    /// The material of a block as its execution left it: `txs` with each one's
    /// id and outcome, in block order (no transfer is hashed again).
    pub fn executed(
        txs: Vec<SignedTransfer>,
        with_outcomes: Vec<(Hash, TxOutcome)>,
        body_bytes: usize,
    ) -> Result<Self, ProofMaterialError> {
        if txs.is_empty() {
            return Err(ProofMaterialError::Empty);
        }
        if with_outcomes.len() != txs.len() {
            return Err(ProofMaterialError::Tree(format!(
                "{} outcomes for {} transfers",
                with_outcomes.len(),
                txs.len()
            )));
        }
        let ids: Vec<Hash> = with_outcomes.iter().map(|(id, _)| *id).collect();
        let mut positions = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            positions.entry(*id).or_insert(i);
        }
        let tx_tree =
            MerkleTree::from_leaves(&ids).map_err(|e| ProofMaterialError::Tree(e.to_string()))?;
        let outcome_tree = outcome_tree(&with_outcomes)
            .ok_or_else(|| ProofMaterialError::Tree("no outcome leaves".into()))?;
        let per_transfer = std::mem::size_of::<SignedTransfer>()
            + std::mem::size_of::<TxOutcome>()
            + PER_TRANSFER_BYTES
            + txs.first().map_or(0, |t| t.transfer.chain.as_str().len());
        let charged = PER_BLOCK_BYTES + body_bytes.max(txs.len() * per_transfer);
        Ok(BlockProofs {
            txs,
            positions,
            tx_tree,
            outcomes: with_outcomes.into_iter().map(|(_, o)| o).collect(),
            outcome_tree,
            charged,
        })
    }

    /// The position of transfer `id` in the block, if it is in it.
    pub fn position(&self, id: &Hash) -> Option<usize> {
        self.positions.get(id).copied()
    }
}

/// The latest blocks' proof material, within [`PROOF_CACHE_BYTES`] as charged.
#[derive(Debug)]
pub struct ProofCache {
    budget: usize,
    blocks: Mutex<VecDeque<(u64, Arc<BlockProofs>)>>,
    /// Whether a proof was asked for since the executor last looked: while
    /// clients ask, each executed block's material is made from what execution
    /// has at hand, and otherwise nothing is spent on it.
    asked: AtomicBool,
}

impl Default for ProofCache {
    fn default() -> Self {
        Self::with_budget(PROOF_CACHE_BYTES)
    }
}

impl ProofCache {
    /// A cache keeping material charged at most `budget` bytes (and always the
    /// last block).
    pub fn with_budget(budget: usize) -> Self {
        ProofCache {
            budget,
            blocks: Mutex::new(VecDeque::new()),
            asked: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<BlockProofs>)>> {
        // The list is valid after any panic of a holder (each change is one call).
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Block `height`'s material, if kept; it becomes the most recently used.
    pub fn get(&self, height: u64) -> Option<Arc<BlockProofs>> {
        self.asked.store(true, Ordering::Relaxed);
        let mut blocks = self.lock();
        let at = blocks.iter().position(|(h, _)| *h == height)?;
        let entry = blocks.remove(at)?;
        let found = entry.1.clone();
        blocks.push_back(entry);
        Some(found)
    }

    /// Keeps block `height`'s material, dropping the least recently used past
    /// the budget.
    pub fn insert(&self, height: u64, proofs: Arc<BlockProofs>) {
        let mut blocks = self.lock();
        blocks.retain(|(h, _)| *h != height);
        blocks.push_back((height, proofs));
        let mut bytes: usize = blocks.iter().map(|(_, p)| p.charged).sum();
        while (bytes > self.budget || blocks.len() > PROOF_CACHE_BLOCKS) && blocks.len() > 1 {
            if let Some((_, dropped)) = blocks.pop_front() {
                bytes -= dropped.charged;
            }
        }
    }

    /// Forgets block `height`'s material (it did not match the block's headers).
    pub fn remove(&self, height: u64) {
        self.lock().retain(|(h, _)| *h != height);
    }

    /// Whether a proof was asked for since the last call (which clears it).
    pub fn take_asked(&self) -> bool {
        self.asked.swap(false, Ordering::Relaxed)
    }

    /// Heights kept, least recently used first.
    pub fn heights(&self) -> Vec<u64> {
        self.lock().iter().map(|(h, _)| *h).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{FailReason, Transfer};
    use mosaic_crypto::{ChainId, Keypair};

    fn transfers(count: u64) -> Vec<SignedTransfer> {
        let chain = ChainId::new("proof-cache-test").unwrap();
        let key = Keypair::from_seed_for_tests(3);
        let to = Keypair::from_seed_for_tests(4).public();
        (0..count)
            .map(|nonce| {
                Transfer {
                    chain: chain.clone(),
                    from: key.public(),
                    to,
                    amount: 1,
                    nonce,
                    valid_until: 100,
                }
                .sign(&key)
            })
            .collect()
    }

    fn proofs(count: u64) -> Arc<BlockProofs> {
        Arc::new(BlockProofs::new(transfers(count), 100_000, |_, _| TxOutcome::Applied).unwrap())
    }

    #[test]
    fn the_material_proves_each_transfer_at_its_position() {
        let txs = transfers(5);
        let failed = txs[3].hash();
        let block = BlockProofs::new(txs.clone(), 1000, |_, id| {
            if *id == failed {
                TxOutcome::Failed(FailReason::BalanceOverflow)
            } else {
                TxOutcome::Applied
            }
        })
        .unwrap();
        let ids: Vec<Hash> = txs.iter().map(SignedTransfer::hash).collect();
        assert_eq!(block.tx_tree.root(), crate::block::root_of_ids(&ids));
        for (i, tx) in txs.iter().enumerate() {
            assert_eq!(block.position(&tx.hash()), Some(i));
        }
        assert_eq!(
            block.outcomes[3],
            TxOutcome::Failed(FailReason::BalanceOverflow)
        );
        assert_eq!(block.outcomes[2], TxOutcome::Applied);
        assert_eq!(block.position(&Hash::of(b"absent")), None);
        // The same material from what execution has at hand.
        let executed = BlockProofs::executed(
            txs.clone(),
            ids.iter()
                .zip(&block.outcomes)
                .map(|(id, o)| (*id, *o))
                .collect(),
            1000,
        )
        .unwrap();
        assert_eq!(executed.tx_tree.root(), block.tx_tree.root());
        assert_eq!(executed.outcome_tree.root(), block.outcome_tree.root());
        assert!(BlockProofs::executed(txs.clone(), Vec::new(), 1000).is_err());
        assert_eq!(
            BlockProofs::new(Vec::new(), 0, |_, _| TxOutcome::Applied).unwrap_err(),
            ProofMaterialError::Empty
        );
    }

    #[test]
    fn the_cache_keeps_the_latest_used_within_its_budget() {
        let cache = ProofCache::with_budget(250_000);
        cache.insert(1, proofs(1));
        cache.insert(2, proofs(2));
        assert!(cache.get(1).is_some());
        cache.insert(3, proofs(3));
        // 3 x 100,000 bytes > 250,000: the least recently used (2) goes.
        assert_eq!(cache.heights(), vec![1, 3]);
        assert!(cache.get(2).is_none());

        cache.remove(1);
        assert_eq!(cache.heights(), vec![3]);
        assert!(cache.take_asked(), "a lookup marks the cache as asked");
        assert!(!cache.take_asked());

        let tiny = ProofCache::with_budget(10);
        tiny.insert(7, proofs(1));
        tiny.insert(8, proofs(1));
        assert_eq!(tiny.heights(), vec![8], "one block is always kept");

        // However small the blocks, at most PROOF_CACHE_BLOCKS of them.
        let many = ProofCache::with_budget(usize::MAX);
        let one = proofs(1);
        for height in 0..=PROOF_CACHE_BLOCKS as u64 {
            many.insert(height, one.clone());
        }
        let kept = many.heights();
        assert_eq!(kept.len(), PROOF_CACHE_BLOCKS);
        assert_eq!(kept.first(), Some(&1), "the oldest went first");
    }
}
