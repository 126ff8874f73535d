//! Blocks: a header that commits to everything, and a body of transactions.
//!
//! - The body's canonical bytes are `codec::encode(&txs)`; they are erasure-coded and
//!   the header records the fragment commitment (codec, k, n, length, fragment root).
//! - `tx_root` is the Merkle root of the transaction ids in block order (`Hash::ZERO`
//!   for an empty block); `tx_count` the number of transactions.
//! - `parent` is the hash of the previous header (the genesis hash for height 1), so
//!   headers form a hash chain; the header hash is what consensus orders and what
//!   the commit certificate signs.
//! - `state_root` is the state after executing the parent block, and
//!   `outcome_root` the root of the parent block's outcomes ([`outcome_root`]: per
//!   transfer, applied or failed with its reason), so header h + 1 commits to what
//!   block h did (docs/adr/006-state-root.md). A client proves that a transfer
//!   succeeded with a path under the next header's `outcome_root`.
//!
//! [`Block::check_structure`] checks everything a replica can check from the block
//! alone (chain, height, parent, counts, roots, the erasure encoding); signatures,
//! duplicates and the state root need the node's state and are checked by the caller.

use mosaic_crypto::{ChainId, Hash, MerkleTree, codec, merkle};
use mosaic_storage::{FragmentCommitment, coding};
use serde::{Deserialize, Serialize};

use crate::ledger::{SignedTransfer, TxOutcome, VerifiedTransfer};

/// Largest block body accepted.
pub const BODY_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest encoded header.
pub const HEADER_BYTES_MAX: usize = 1024;

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// The chain.
    pub chain: ChainId,
    /// Height (= PBFT sequence number; the first block is 1).
    pub height: u64,
    /// Hash of the previous header (genesis hash at height 1).
    pub parent: Hash,
    /// The view it was proposed in.
    pub view: u64,
    /// Index of the proposing validator.
    pub proposer: u32,
    /// Merkle root of the transaction ids, in order.
    pub tx_root: Hash,
    /// Number of transactions.
    pub tx_count: u32,
    /// State root after executing the parent block.
    pub state_root: Hash,
    /// Root of the parent block's outcomes ([`outcome_root`]; `Hash::ZERO` at
    /// height 1 and after an empty block).
    pub outcome_root: Hash,
    /// How the body was erasure-coded, and the fragment root.
    pub fragments: FragmentCommitment,
}

/// A block: header and transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The transactions.
    pub txs: Vec<SignedTransfer>,
}

/// What is wrong with a block's structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Bytes that are not a block.
    #[error("not a block: {0}")]
    Malformed(String),
    /// A header field does not match what this position requires.
    #[error("header field {field} is wrong: expected {expected}, got {got}")]
    WrongField {
        /// Which field.
        field: &'static str,
        /// What it should be.
        expected: String,
        /// What it is.
        got: String,
    },
    /// The body does not encode to the header's fragment commitment.
    #[error("body does not match the fragment commitment: {0}")]
    BadEncoding(#[from] coding::CodingError),
    /// Body too large.
    #[error("body of {len} bytes exceeds {BODY_BYTES_MAX}")]
    TooLarge {
        /// Size.
        len: usize,
    },
}

/// What a header records of its parent block's execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterParent {
    /// The state root after the parent block.
    pub state_root: Hash,
    /// The root of the parent block's outcomes.
    pub outcome_root: Hash,
}

/// The leaf of one transfer's outcome: `H(0x00 || id || codec(outcome))`.
pub fn outcome_leaf(id: &Hash, outcome: &TxOutcome) -> Hash {
    let bytes = codec::encode(outcome).unwrap_or_default();
    merkle::leaf_hash_parts(&[id.as_bytes(), &bytes])
}

/// The Merkle root of a block's outcomes, one leaf per transfer in block order
/// ([`outcome_leaf`]); `Hash::ZERO` for an empty block.
pub fn outcome_root(outcomes: &[(Hash, TxOutcome)]) -> Hash {
    outcome_tree(outcomes).map_or(Hash::ZERO, |t| t.root())
}

/// The Merkle tree of a block's outcomes (`None` for an empty block), for proofs.
pub fn outcome_tree(outcomes: &[(Hash, TxOutcome)]) -> Option<MerkleTree> {
    MerkleTree::from_leaf_hashes(outcomes.iter().map(|(id, o)| outcome_leaf(id, o)).collect()).ok()
}

/// The Merkle root of transaction ids (`Hash::ZERO` for none).
pub fn tx_root(txs: &[SignedTransfer]) -> Hash {
    let ids: Vec<Hash> = txs.iter().map(SignedTransfer::hash).collect();
    root_of_ids(&ids)
}

/// The Merkle root of transaction ids given in block order (`Hash::ZERO` for none).
pub fn root_of_ids(ids: &[Hash]) -> Hash {
    MerkleTree::from_leaves(ids).map_or(Hash::ZERO, |t| t.root())
}

/// The canonical body bytes of a list of transactions.
pub fn body_bytes(txs: &[SignedTransfer]) -> Vec<u8> {
    codec::encode(txs).unwrap_or_default()
}

/// Where a block goes and what it builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The chain.
    pub chain: ChainId,
    /// Height.
    pub height: u64,
    /// Parent header hash.
    pub parent: Hash,
}

impl BlockHeader {
    /// The header hash (what consensus orders and certificates sign).
    pub fn hash(&self) -> Hash {
        Hash::of(&codec::encode(self).unwrap_or_default())
    }
}

impl Block {
    /// Builds a block at `position` with `txs`, coding the body into `n` fragments of
    /// which `k` rebuild it. Also returns the body bytes and fragments it computed
    /// (what [`Self::check_structure`] would return for the block).
    pub fn build(
        position: &Position,
        view: u64,
        proposer: u32,
        after: AfterParent,
        txs: Vec<SignedTransfer>,
        data_shards: usize,
        total_shards: usize,
    ) -> Result<(Block, Structure), BlockError> {
        let body = body_bytes(&txs);
        if body.len() > BODY_BYTES_MAX {
            return Err(BlockError::TooLarge { len: body.len() });
        }
        let encoded = coding::encode(&body, data_shards, total_shards)?;
        let block = Block {
            header: BlockHeader {
                chain: position.chain.clone(),
                height: position.height,
                parent: position.parent,
                view,
                proposer,
                tx_root: tx_root(&txs),
                tx_count: txs.len() as u32,
                state_root: after.state_root,
                outcome_root: after.outcome_root,
                fragments: encoded.commitment(),
            },
            txs,
        };
        Ok((block, Structure { body, encoded }))
    }

    /// The canonical bytes sent as a consensus payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self).unwrap_or_default()
    }

    /// Decodes a payload, refusing more than a header plus a maximal body.
    pub fn from_bytes(bytes: &[u8]) -> Result<Block, BlockError> {
        codec::decode(bytes, HEADER_BYTES_MAX + BODY_BYTES_MAX)
            .map_err(|e| BlockError::Malformed(e.to_string()))
    }

    /// Checks what the block alone can prove at `position` with `k` of `n` coding.
    ///
    /// Returns the body bytes and their fragments, which it computes anyway, so that
    /// executing the block need not compute them again.
    pub fn check_structure(
        &self,
        position: &Position,
        data_shards: usize,
        total_shards: usize,
    ) -> Result<Structure, BlockError> {
        let ids: Vec<Hash> = self.txs.iter().map(SignedTransfer::hash).collect();
        let body = body_bytes(&self.txs);
        check_parts(
            &self.header,
            &ids,
            body,
            position,
            data_shards,
            total_shards,
        )
    }

    /// The payload and structure of the block `header` over `txs`, transfers this
    /// node verified (so their ids are known), with every check of
    /// [`Self::check_structure`]: the same bytes as [`Self::to_bytes`] of that block,
    /// without encoding or hashing the transfers' signed forms again one by one.
    pub fn assemble(
        header: &BlockHeader,
        txs: &[VerifiedTransfer],
        position: &Position,
        data_shards: usize,
        total_shards: usize,
    ) -> Result<(Vec<u8>, Structure), BlockError> {
        let ids: Vec<Hash> = txs.iter().map(VerifiedTransfer::hash).collect();
        let body =
            codec::encode(&SignedForms(txs)).map_err(|e| BlockError::Malformed(e.to_string()))?;
        let structure = check_parts(header, &ids, body, position, data_shards, total_shards)?;
        let mut payload =
            codec::encode(header).map_err(|e| BlockError::Malformed(e.to_string()))?;
        payload.extend_from_slice(&structure.body);
        Ok((payload, structure))
    }
}

/// Verified transfers encoded as the list of their signed forms (a block body).
struct SignedForms<'a>(&'a [VerifiedTransfer]);

impl Serialize for SignedForms<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(VerifiedTransfer::signed))
    }
}

/// The checks of [`Block::check_structure`] over a header, the ids of its transfers
/// in order and their body bytes.
fn check_parts(
    h: &BlockHeader,
    ids: &[Hash],
    body: Vec<u8>,
    position: &Position,
    data_shards: usize,
    total_shards: usize,
) -> Result<Structure, BlockError> {
    let wrong = |field: &'static str, expected: String, got: String| {
        Err(BlockError::WrongField {
            field,
            expected,
            got,
        })
    };
    if h.chain != position.chain {
        return wrong("chain", position.chain.to_string(), h.chain.to_string());
    }
    if h.height != position.height {
        return wrong("height", position.height.to_string(), h.height.to_string());
    }
    if h.parent != position.parent {
        return wrong("parent", position.parent.to_string(), h.parent.to_string());
    }
    if h.tx_count as usize != ids.len() {
        return wrong("tx_count", ids.len().to_string(), h.tx_count.to_string());
    }
    let root = root_of_ids(ids);
    if h.tx_root != root {
        return wrong("tx_root", root.to_string(), h.tx_root.to_string());
    }
    let params = h.fragments.params;
    if params.k() != data_shards || params.n() != total_shards {
        return wrong(
            "fragments.k/n",
            format!("{data_shards}/{total_shards}"),
            format!("{}/{}", params.k(), params.n()),
        );
    }
    if body.len() > BODY_BYTES_MAX {
        return Err(BlockError::TooLarge { len: body.len() });
    }
    let encoded = coding::check_encoding(&body, &h.fragments)?;
    Ok(Structure { body, encoded })
}

/// The body bytes and fragments of a block whose structure was checked.
#[derive(Debug)]
pub struct Structure {
    /// [`body_bytes`] of the block's transactions.
    pub body: Vec<u8>,
    /// The body's fragments; their commitment is the header's.
    pub encoded: coding::Encoded,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Transfer;
    use mosaic_crypto::Keypair;

    /// The last valid height of the test transfers.
    const VALID_UNTIL: u64 = 1_000;

    fn chain() -> ChainId {
        ChainId::new("blocks").unwrap()
    }

    fn after() -> AfterParent {
        AfterParent {
            state_root: Hash::of(b"state"),
            outcome_root: Hash::of(b"outcomes"),
        }
    }

    fn txs(count: u64) -> Vec<SignedTransfer> {
        let k = Keypair::from_seed_for_tests(1);
        (0..count)
            .map(|n| {
                Transfer {
                    chain: chain(),
                    from: k.public(),
                    to: Keypair::from_seed_for_tests(2).public(),
                    amount: 1,
                    nonce: n,
                    valid_until: VALID_UNTIL,
                }
                .sign(&k)
            })
            .collect()
    }

    fn position() -> Position {
        Position {
            chain: chain(),
            height: 7,
            parent: Hash::of(b"parent"),
        }
    }

    #[test]
    fn built_blocks_pass_and_round_trip() {
        for count in [0, 1, 50] {
            let (block, built) =
                Block::build(&position(), 3, 1, after(), txs(count), 2, 4).unwrap();
            let checked = block.check_structure(&position(), 2, 4).unwrap();
            // What building computed is what checking computes.
            assert_eq!(built.body, checked.body);
            assert_eq!(built.encoded.commitment(), checked.encoded.commitment());
            assert_eq!(built.encoded.commitment(), block.header.fragments);
            let back = Block::from_bytes(&block.to_bytes()).unwrap();
            assert_eq!(back, block);
            assert_eq!(back.header.hash(), block.header.hash());
        }
    }

    #[test]
    fn assembled_payloads_are_the_built_bytes_and_checked_alike() {
        for count in [0, 1, 50] {
            let (block, built) =
                Block::build(&position(), 3, 1, after(), txs(count), 2, 4).unwrap();
            let verified: Vec<VerifiedTransfer> =
                crate::ledger::verify_batch(block.txs.clone(), &chain())
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
            let (payload, structure) =
                Block::assemble(&block.header, &verified, &position(), 2, 4).unwrap();
            assert_eq!(payload, block.to_bytes());
            assert_eq!(structure.body, built.body);
            assert_eq!(structure.encoded.commitment(), block.header.fragments);
        }
        let (block, _) = Block::build(&position(), 3, 1, after(), txs(5), 2, 4).unwrap();
        let verified: Vec<VerifiedTransfer> =
            crate::ledger::verify_batch(block.txs.clone(), &chain())
                .into_iter()
                .map(Result::unwrap)
                .collect();
        let mut swapped = verified.clone();
        swapped.swap(0, 1);
        let mut other_root = block.header.clone();
        other_root.fragments.root = Hash::ZERO;
        let mut other_height = block.header.clone();
        other_height.height += 1;
        for (what, header, txs) in [
            ("order", &block.header, &swapped[..]),
            ("missing", &block.header, &verified[1..]),
            ("fragment root", &other_root, &verified[..]),
            ("height", &other_height, &verified[..]),
        ] {
            assert!(
                Block::assemble(header, txs, &position(), 2, 4).is_err(),
                "{what} went unnoticed"
            );
        }
    }

    #[test]
    fn every_tampered_field_is_caught() {
        let (block, _) = Block::build(&position(), 3, 1, after(), txs(5), 2, 4).unwrap();
        let mut cases: Vec<(&str, Block)> = Vec::new();
        let mut b = block.clone();
        b.header.height = 8;
        cases.push(("height", b));
        let mut b = block.clone();
        b.header.parent = Hash::ZERO;
        cases.push(("parent", b));
        let mut b = block.clone();
        b.txs.pop();
        cases.push(("tx_count", b));
        let mut b = block.clone();
        b.txs.swap(0, 1);
        cases.push(("tx_root", b));
        let mut b = block.clone();
        b.header.fragments.root = Hash::ZERO;
        cases.push(("fragments", b));
        let mut b = block.clone();
        b.header.chain = ChainId::new("other").unwrap();
        cases.push(("chain", b));
        for (what, b) in cases {
            assert!(
                b.check_structure(&position(), 2, 4).is_err(),
                "{what} tampering went unnoticed"
            );
        }
        assert!(
            block.check_structure(&position(), 3, 4).is_err(),
            "coding parameters are part of the rules"
        );
        assert!(Block::from_bytes(&[1, 2, 3]).is_err());
    }
}
