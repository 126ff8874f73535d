//! Binary Merkle trees over blake3.
//!
//! Leaves are hashed as `H(0x00 || leaf)` and inner nodes as `H(0x01 || left || right)`,
//! so a leaf can never be passed off as an inner node (no second-preimage trick). A
//! level with an odd count promotes its last node unchanged to the next level. The
//! root commits to the leaf count too, `H(0x02 || count as u64 LE || top node)`, and
//! a proof records that count, which fixes the tree's shape and so the side of every
//! sibling: a proof checked against the wrong index, leaf, leaf count or root fails.

use serde::{Deserialize, Serialize};

use crate::hash::Hash;

/// Most leaves a tree may have (keeps proof lengths and allocations bounded).
pub const LEAVES_MAX: usize = 1 << 20;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;
const ROOT_PREFIX: u8 = 0x02;

/// Errors from building trees and checking proofs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A tree needs at least one leaf.
    #[error("a Merkle tree needs at least one leaf")]
    Empty,
    /// More leaves than [`LEAVES_MAX`].
    #[error("{count} leaves exceed the maximum of {LEAVES_MAX}")]
    TooManyLeaves {
        /// Leaves given.
        count: usize,
    },
    /// Asked for a leaf that the tree does not have.
    #[error("leaf index {index} is out of range for a tree of {leaf_count} leaves")]
    IndexOutOfRange {
        /// Index asked for.
        index: u64,
        /// Leaves in the tree.
        leaf_count: u64,
    },
    /// The proof has the wrong number of siblings for its index and leaf count.
    #[error(
        "proof has {got} siblings, a tree of {leaf_count} leaves needs {expected} at index {index}"
    )]
    WrongProofLength {
        /// Index proven.
        index: u64,
        /// Leaves in the tree.
        leaf_count: u64,
        /// Siblings needed.
        expected: usize,
        /// Siblings present.
        got: usize,
    },
    /// The proof leads to a different root.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

/// The hash of a leaf's bytes.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Hash::of_parts(&[&[LEAF_PREFIX], leaf])
}

/// The hash of a leaf given as parts (hashed as their concatenation).
pub fn leaf_hash_parts(parts: &[&[u8]]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[LEAF_PREFIX]);
    for part in parts {
        hasher.update(part);
    }
    Hash::from_bytes(*hasher.finalize().as_bytes())
}

pub(crate) fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::of_parts(&[&[NODE_PREFIX], left.as_bytes(), right.as_bytes()])
}

pub(crate) fn root_hash(leaf_count: usize, top: &Hash) -> Hash {
    Hash::of_parts(&[
        &[ROOT_PREFIX],
        &(leaf_count as u64).to_le_bytes(),
        top.as_bytes(),
    ])
}

/// A tree with every level kept, to hand out proofs.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// levels[0] are the leaf hashes; the last level has one node, the root.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// Builds the tree over raw leaves.
    pub fn from_leaves<T: AsRef<[u8]>>(leaves: &[T]) -> Result<Self, MerkleError> {
        Self::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l.as_ref())).collect())
    }

    /// Builds the tree over leaf hashes already made with [`leaf_hash`] or
    /// [`leaf_hash_parts`].
    pub fn from_leaf_hashes(leaf_hashes: Vec<Hash>) -> Result<Self, MerkleError> {
        if leaf_hashes.is_empty() {
            return Err(MerkleError::Empty);
        }
        if leaf_hashes.len() > LEAVES_MAX {
            return Err(MerkleError::TooManyLeaves {
                count: leaf_hashes.len(),
            });
        }
        let mut levels = vec![leaf_hashes];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let next: Vec<Hash> = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    [odd] => *odd,
                    _ => unreachable!("chunks(2) yields one or two items"),
                })
                .collect();
            levels.push(next);
        }
        Ok(MerkleTree { levels })
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        // from_leaf_hashes guarantees a last level with exactly one node.
        root_hash(self.leaf_count(), &self.levels[self.levels.len() - 1][0])
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> usize {
        self.levels[0].len()
    }

    /// The proof that leaf `index` is in the tree.
    pub fn proof(&self, index: usize) -> Result<MerkleProof, MerkleError> {
        let leaf_count = self.leaf_count();
        if index >= leaf_count {
            return Err(MerkleError::IndexOutOfRange {
                index: index as u64,
                leaf_count: leaf_count as u64,
            });
        }
        let mut siblings = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                siblings.push(level[sibling]);
            }
            i /= 2;
        }
        Ok(MerkleProof {
            leaf_count: leaf_count as u32,
            siblings,
        })
    }
}

/// The root over raw leaves, without keeping the tree.
pub fn root<T: AsRef<[u8]>>(leaves: &[T]) -> Result<Hash, MerkleError> {
    MerkleTree::from_leaves(leaves).map(|t| t.root())
}

/// Evidence that a leaf is at some index of a tree with a given root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// Leaves in the tree; fixes its shape.
    pub leaf_count: u32,
    /// Sibling hashes from the leaf's level up to just below the root.
    pub siblings: Vec<Hash>,
}

impl MerkleProof {
    /// Checks that `leaf` (raw bytes) is leaf `index` of the tree with `root`.
    pub fn verify(&self, root: &Hash, index: usize, leaf: &[u8]) -> Result<(), MerkleError> {
        self.verify_hash(root, index, leaf_hash(leaf))
    }

    /// Checks a leaf given by its [`leaf_hash`].
    pub fn verify_hash(&self, root: &Hash, index: usize, leaf: Hash) -> Result<(), MerkleError> {
        let leaf_count = self.leaf_count as usize;
        if leaf_count == 0 || leaf_count > LEAVES_MAX || index >= leaf_count {
            return Err(MerkleError::IndexOutOfRange {
                index: index as u64,
                leaf_count: leaf_count as u64,
            });
        }
        let expected = proof_len(index, leaf_count);
        if self.siblings.len() != expected {
            return Err(MerkleError::WrongProofLength {
                index: index as u64,
                leaf_count: leaf_count as u64,
                expected,
                got: self.siblings.len(),
            });
        }
        let mut node = leaf;
        let mut siblings = self.siblings.iter();
        let (mut i, mut width) = (index, leaf_count);
        while width > 1 {
            if i % 2 == 1 {
                let Some(left) = siblings.next() else {
                    return Err(MerkleError::RootMismatch);
                };
                node = node_hash(left, &node);
            } else if i + 1 < width {
                let Some(right) = siblings.next() else {
                    return Err(MerkleError::RootMismatch);
                };
                node = node_hash(&node, right);
            }
            i /= 2;
            width = width.div_ceil(2);
        }
        if root_hash(leaf_count, &node) == *root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        }
    }
}

/// Siblings on the path of leaf `index` in a tree of `leaf_count` leaves.
fn proof_len(index: usize, leaf_count: usize) -> usize {
    let (mut i, mut width, mut len) = (index, leaf_count, 0);
    while width > 1 {
        if i % 2 == 1 || i + 1 < width {
            len += 1;
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(count: usize, salt: u8) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| vec![salt, i as u8, (i >> 8) as u8])
            .collect()
    }

    #[test]
    fn single_leaf_tree_has_an_empty_proof() -> Result<(), MerkleError> {
        let tree = MerkleTree::from_leaves(&[b"only"])?;
        assert_eq!(tree.root(), root_hash(1, &leaf_hash(b"only")));
        let proof = tree.proof(0)?;
        assert!(proof.siblings.is_empty());
        proof.verify(&tree.root(), 0, b"only")
    }

    #[test]
    fn empty_tree_is_an_error() {
        let none: [&[u8]; 0] = [];
        assert_eq!(
            MerkleTree::from_leaves(&none).err(),
            Some(MerkleError::Empty)
        );
    }

    #[test]
    fn leaf_cannot_pose_as_inner_node() -> Result<(), MerkleError> {
        // A two-leaf tree's root is H(1 || h0 || h1); presenting h0 || h1 as a one-leaf
        // "tree" must give a different root.
        let tree = MerkleTree::from_leaves(&[b"a", b"b"])?;
        let mut forged = Vec::new();
        forged.extend_from_slice(leaf_hash(b"a").as_bytes());
        forged.extend_from_slice(leaf_hash(b"b").as_bytes());
        assert_ne!(root(&[forged])?, tree.root());
        Ok(())
    }

    #[test]
    fn out_of_range_proof_is_refused() -> Result<(), MerkleError> {
        let tree = MerkleTree::from_leaves(&leaves(5, 0))?;
        assert!(matches!(
            tree.proof(5),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
        let proof = tree.proof(4)?;
        assert!(proof.verify(&tree.root(), 5, &leaves(5, 0)[4]).is_err());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_index_verifies_and_every_change_fails(count in 1usize..300, salt: u8, pick: usize) {
            let data = leaves(count, salt);
            let tree = MerkleTree::from_leaves(&data).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let root = tree.root();
            for (i, leaf) in data.iter().enumerate() {
                let proof = tree.proof(i).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(proof.verify(&root, i, leaf).is_ok());
            }
            let i = pick % count;
            let proof = tree.proof(i).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // wrong leaf
            prop_assert!(proof.verify(&root, i, b"not a leaf").is_err());
            // wrong root
            prop_assert!(proof.verify(&Hash::of(b"other"), i, &data[i]).is_err());
            // wrong index (every other index)
            for j in (0..count).filter(|&j| j != i) {
                prop_assert!(proof.verify(&root, j, &data[i]).is_err());
            }
            // any changed sibling
            for s in 0..proof.siblings.len() {
                let mut bad = proof.clone();
                bad.siblings[s] = Hash::of(&[s as u8]);
                prop_assert!(bad.verify(&root, i, &data[i]).is_err());
            }
            // a wrong leaf count, larger or smaller
            let mut bad = proof.clone();
            bad.leaf_count += 1;
            prop_assert!(bad.verify(&root, i, &data[i]).is_err());
            if count > 1 && i < count - 1 {
                let mut bad = proof.clone();
                bad.leaf_count -= 1;
                prop_assert!(bad.verify(&root, i, &data[i]).is_err());
            }
            // a dropped or extra sibling
            if !proof.siblings.is_empty() {
                let mut bad = proof.clone();
                bad.siblings.pop();
                prop_assert!(bad.verify(&root, i, &data[i]).is_err());
            }
            let mut bad = proof;
            bad.siblings.push(root);
            prop_assert!(bad.verify(&root, i, &data[i]).is_err());
        }
    }
}
