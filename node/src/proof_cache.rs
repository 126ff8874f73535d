//! What the transfer proofs of one block share, made once per block: its
//! transfers, their positions by id, the tree under its `tx_root` and the tree of
//! its outcomes. Clients ask about the transfers they just sent, so the same few
//! blocks are asked about again and again; without this each request decodes a
//! whole body (a public-key decompression per transfer) and hashes every
//! transfer and outcome of it. Kept for the latest blocks asked about, within a
//! byte budget; a committed block never changes, so nothing is invalidated.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use mosaic_crypto::{Hash, MerkleTree};

use crate::block::outcome_tree;
use crate::ledger::{SignedTransfer, TxOutcome};

/// Body bytes of the blocks kept, at most (one block is always kept).
pub const PROOF_CACHE_BYTES: usize = 32 * 1024 * 1024;

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
    /// The encoded body's size, charged to the budget.
    body_bytes: usize,
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
        if txs.is_empty() {
            return Err(ProofMaterialError::Empty);
        }
        let ids: Vec<Hash> = txs.iter().map(SignedTransfer::hash).collect();
        let mut positions = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            positions.entry(*id).or_insert(i);
        }
        let tx_tree =
            MerkleTree::from_leaves(&ids).map_err(|e| ProofMaterialError::Tree(e.to_string()))?;
        let with_outcomes: Vec<(Hash, TxOutcome)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, outcome(i, id)))
            .collect();
        let outcome_tree = outcome_tree(&with_outcomes)
            .ok_or_else(|| ProofMaterialError::Tree("no outcome leaves".into()))?;
        Ok(BlockProofs {
            txs,
            positions,
            tx_tree,
            outcomes: with_outcomes.into_iter().map(|(_, o)| o).collect(),
            outcome_tree,
            body_bytes,
        })
    }

    /// The position of transfer `id` in the block, if it is in it.
    pub fn position(&self, id: &Hash) -> Option<usize> {
        self.positions.get(id).copied()
    }
}

/// The latest blocks' proof material, within [`PROOF_CACHE_BYTES`].
#[derive(Debug)]
pub struct ProofCache {
    budget: usize,
    blocks: Mutex<VecDeque<(u64, Arc<BlockProofs>)>>,
}

impl Default for ProofCache {
    fn default() -> Self {
        Self::with_budget(PROOF_CACHE_BYTES)
    }
}

impl ProofCache {
    /// A cache keeping at most `budget` body bytes (and always the last block).
    pub fn with_budget(budget: usize) -> Self {
        ProofCache {
            budget,
            blocks: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<BlockProofs>)>> {
        // The list is valid after any panic of a holder (each change is one call).
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Block `height`'s material, if kept; it becomes the most recently used.
    pub fn get(&self, height: u64) -> Option<Arc<BlockProofs>> {
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
        let mut bytes: usize = blocks.iter().map(|(_, p)| p.body_bytes).sum();
        while bytes > self.budget && blocks.len() > 1 {
            if let Some((_, dropped)) = blocks.pop_front() {
                bytes -= dropped.body_bytes;
            }
        }
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
        Arc::new(BlockProofs::new(transfers(count), 1000, |_, _| TxOutcome::Applied).unwrap())
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
        assert_eq!(
            BlockProofs::new(Vec::new(), 0, |_, _| TxOutcome::Applied).unwrap_err(),
            ProofMaterialError::Empty
        );
    }

    #[test]
    fn the_cache_keeps_the_latest_used_within_its_budget() {
        let cache = ProofCache::with_budget(2500);
        cache.insert(1, proofs(1));
        cache.insert(2, proofs(2));
        assert!(cache.get(1).is_some());
        cache.insert(3, proofs(3));
        // 3 x 1000 bytes > 2500: the least recently used (2) goes.
        assert_eq!(cache.heights(), vec![1, 3]);
        assert!(cache.get(2).is_none());

        let tiny = ProofCache::with_budget(10);
        tiny.insert(7, proofs(1));
        tiny.insert(8, proofs(1));
        assert_eq!(tiny.heights(), vec![8], "one block is always kept");
    }
}
