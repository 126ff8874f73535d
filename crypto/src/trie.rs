//! A Merkle crit-bit trie: a map from 32-byte keys to small values, iterated in key
//! order, whose root commits to every (key, value) pair and is kept up to date at
//! O(depth) per change instead of O(entries).
//!
//! - **Shape.** The trie is the crit-bit (compressed binary radix) tree of its keys: a
//!   branch splits the keys below it at the first bit, most significant first, where
//!   they differ; keys with that bit 0 go left. The shape depends on the set of keys
//!   only, never on the order of the changes that made it, so every replica that holds
//!   the same entries computes the same root. Its depth is at most 256 and, for keys
//!   that are hashes or public keys, about log2 of the entries.
//! - **Hashes.** A leaf hashes as [`TrieValue::leaf_hash`], which must bind the key
//!   and be a [`merkle::leaf_hash_parts`] (prefix `0x00`); a branch as
//!   `H(0x01 || left || right)` and the root as `H(0x02 || count as u64 LE || top)`,
//!   the prefixes of [`crate::merkle`]. An empty trie has root [`Hash::ZERO`]. Leaves
//!   and branches are hashed under different prefixes and leaves name their keys, so
//!   two different maps cannot share a root without a blake3 collision.
//! - **Cost.** Branch hashes are cached; a change clears the cache along its path, and
//!   [`MerkleTrie::root`] rehashes only cleared branches (paths of changes made since
//!   the last root share their upper branches).
//! - **Snapshots.** Nodes are shared behind [`Arc`]s and copied on write, so
//!   [`MerkleTrie::clone`] costs O(1) and gives an independent snapshot: a change to
//!   either copy copies only the nodes on its own path (and `root` copies the
//!   branches whose hashes it fills in, if they are still shared and uncached).
//!
//! # Proofs
//!
//! [`MerkleTrie::prove`] gives a [`TrieProof`] that a key is in the trie with a value,
//! or is not in it; [`TrieProof::verify`] checks it against a root alone. A proof
//! carries the trie's leaf count, which goes into the root as above, and one of:
//!
//! - [`ProofKind::Present`]: the [`TriePath`] from the top to the key's leaf, one
//!   [`PathStep`] per branch: which side the path goes and the hash on the other side.
//!   The verifier hashes the claimed (key, value) leaf up the path.
//! - [`ProofKind::Between`]: the key's two neighbours in key order, the largest key
//!   below it and the smallest above it, with their values. They meet at one branch:
//!   the proof gives the path down to it (`split`), then, for the neighbour below, the
//!   left-hand siblings on its way from the branch's left child down the right edge,
//!   and for the one above, the right-hand siblings from the right child down the
//!   left edge.
//! - [`ProofKind::BeforeFirst`] and [`ProofKind::AfterLast`]: the key sorts before
//!   every key (or after every key); the proof gives the first (or last) leaf and the
//!   siblings on the trie's left (or right) edge down to it.
//! - [`ProofKind::Empty`]: the trie is empty; only the root [`Hash::ZERO`] with a
//!   leaf count of 0 fits it.
//!
//! Absence goes through neighbours because a branch's bit is not hashed: a path to
//! the leaf an absent key's bits lead to does not show where the key would branch
//! off, so it cannot show that no leaf holds the key. Which side is which *is* bound
//! (`left || right` is hashed in order), and in a trie built by [`MerkleTrie`] the
//! left-to-right order of the leaves is their key order (bit 0 goes left, and keys
//! compare as bytes, which is bit order). So the two leaves of a `Between` proof are
//! adjacent in key order by the proof's very shape (the rightmost leaf of a branch's
//! left side and the leftmost of its right side), and the verifier checks that the
//! key sorts strictly between their keys; the first and last leaves are fixed by a
//! path that goes only left or only right. The shared upper path is sent once, so an
//! absence proof is about the size of an inclusion proof plus two keys and values.
//!
//! In the binary codec a step is 33 bytes, a sibling 32, and the proofs of a trie of
//! 2^20 random keys hold about 20 steps: an inclusion proof is about 700 bytes and an
//! absence proof about 800 (with 8-byte values). A verifier refuses paths longer than
//! [`TRIE_DEPTH_MAX`] before hashing anything, and never panics on any proof.
//!
//! [`merkle::leaf_hash_parts`]: crate::merkle::leaf_hash_parts

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::merkle;
use crate::sign::PublicKey;

/// Most branches on the way from the top to a leaf: a branch below another splits at
/// a later bit, and a key has 256.
pub const TRIE_DEPTH_MAX: usize = 256;

/// A key of the trie: 32 bytes, compared bit by bit from the first byte's top bit.
pub trait TrieKey: Copy {
    /// The key's bytes.
    fn key_bytes(&self) -> &[u8; 32];
}

impl TrieKey for [u8; 32] {
    fn key_bytes(&self) -> &[u8; 32] {
        self
    }
}

impl TrieKey for Hash {
    fn key_bytes(&self) -> &[u8; 32] {
        self.as_bytes()
    }
}

impl TrieKey for PublicKey {
    fn key_bytes(&self) -> &[u8; 32] {
        self.as_bytes()
    }
}

/// A value of the trie, which knows its leaf hash.
pub trait TrieValue<K>: Copy {
    /// The leaf's hash: must bind `key` and the value, and be made by
    /// [`crate::merkle::leaf_hash_parts`].
    fn leaf_hash(&self, key: &K) -> Hash;
}

/// The map (see the module docs). Cloning it is O(1): the clone shares every node.
#[derive(Debug, Clone)]
pub struct MerkleTrie<K, V> {
    top: Option<Node<K, V>>,
    len: usize,
}

#[derive(Debug, Clone)]
enum Node<K, V> {
    Leaf(Arc<Leaf<K, V>>),
    Branch(Arc<Branch<K, V>>),
}

#[derive(Debug, Clone)]
struct Leaf<K, V> {
    key: K,
    value: V,
}

#[derive(Debug, Clone)]
struct Branch<K, V> {
    /// The bit the keys below split at.
    bit: u16,
    /// `None` after a change below, until the next root.
    hash: Option<Hash>,
    children: [Node<K, V>; 2],
}

/// Bit `i` of `key` (0 is the top bit of byte 0), as a child index.
fn bit(key: &[u8; 32], i: u16) -> usize {
    usize::from((key[usize::from(i >> 3)] >> (7 - (i & 7))) & 1)
}

/// The first bit where `a` and `b` differ; `None` if equal.
fn crit_bit(a: &[u8; 32], b: &[u8; 32]) -> Option<u16> {
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i as u16) * 8 + (x ^ y).leading_zeros() as u16)
}

impl<K, V> Default for MerkleTrie<K, V> {
    fn default() -> Self {
        MerkleTrie { top: None, len: 0 }
    }
}

impl<K: TrieKey, V: TrieValue<K>> MerkleTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        let bytes = key.key_bytes();
        let mut node = self.top.as_ref()?;
        loop {
            match node {
                Node::Leaf(leaf) => {
                    return (leaf.key.key_bytes() == bytes).then_some(&leaf.value);
                }
                Node::Branch(branch) => node = &branch.children[bit(bytes, branch.bit)],
            }
        }
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let bytes = *key.key_bytes();
        let Some(top) = self.top.as_mut() else {
            self.top = Some(Node::Leaf(Arc::new(Leaf { key, value })));
            self.len = 1;
            return None;
        };
        // The crit-bit insertion: the new key's first difference from the leaf its bits
        // lead to is where it branches off.
        let mut nearest = &*top;
        let nearest_key = loop {
            match nearest {
                Node::Leaf(leaf) => break *leaf.key.key_bytes(),
                Node::Branch(branch) => nearest = &branch.children[bit(&bytes, branch.bit)],
            }
        };
        match crit_bit(&nearest_key, &bytes) {
            None => Some(replace_value(top, &bytes, value)),
            Some(split) => {
                insert_branch(top, &bytes, split, Leaf { key, value });
                self.len += 1;
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        // Looking first keeps a miss from copying the path of a shared trie.
        let value = *self.get(key)?;
        let bytes = key.key_bytes();
        let removed = match self.top.as_mut()? {
            Node::Leaf(_) => {
                self.top = None;
                true
            }
            top @ Node::Branch(_) => remove_below(top, bytes),
        };
        if !removed {
            return None;
        }
        self.len -= 1;
        Some(value)
    }

    /// The root (see the module docs); rehashes the branches changed since the last.
    pub fn root(&mut self) -> Hash {
        match self.top.as_mut() {
            None => Hash::ZERO,
            Some(top) => merkle::root_hash(self.len, &node_hash(top)),
        }
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            stack: self.top.iter().collect(),
        }
    }

    /// A proof that `key` is in the trie with its value, or is not in it (see the
    /// module docs), to check with [`TrieProof::verify`] against [`MerkleTrie::root`].
    ///
    /// It costs O(depth) once `root` has hashed the trie; branches changed since are
    /// hashed on the way, without caching (so it works on a shared snapshot).
    pub fn prove(&self, key: &K) -> TrieProof<K, V> {
        let leaf_count = self.len as u64;
        let Some(top) = self.top.as_ref() else {
            return TrieProof {
                leaf_count,
                kind: ProofKind::Empty,
            };
        };
        let bytes = key.key_bytes();
        let mut walk: Vec<&Branch<K, V>> = Vec::new();
        let mut node = top;
        let nearest = loop {
            match node {
                Node::Leaf(leaf) => break leaf,
                Node::Branch(branch) => {
                    walk.push(branch);
                    node = &branch.children[bit(bytes, branch.bit)];
                }
            }
        };
        let Some(split_bit) = crit_bit(nearest.key.key_bytes(), bytes) else {
            return TrieProof {
                leaf_count,
                kind: ProofKind::Present(path_of(&walk, bytes)),
            };
        };
        // The key would branch off at `split_bit`, above the first branch of the walk
        // that splits at a later bit (bits grow down a path). Every key of the subtree
        // there has the nearest leaf's bit at `split_bit`, the opposite of the key's,
        // so the key sorts next to that subtree's edge on its side; its neighbour on
        // the other side is across the lowest branch above where the walk went the
        // other way, or there is none.
        walk.truncate(walk.partition_point(|branch| branch.bit < split_bit));
        let side = bit(bytes, split_bit);
        let meeting = walk
            .iter()
            .enumerate()
            .rev()
            .find(|(_, branch)| bit(bytes, branch.bit) != side)
            .map(|(depth, branch)| (depth, *branch));
        let kind = match meeting {
            Some((depth, branch)) => {
                walk.truncate(depth);
                let [left, right] = &branch.children;
                ProofKind::Between {
                    split: path_of(&walk, bytes),
                    before: edge_leaf(left, 1),
                    after: edge_leaf(right, 0),
                }
            }
            None if side == 1 => ProofKind::AfterLast(edge_leaf(top, 1)),
            None => ProofKind::BeforeFirst(edge_leaf(top, 0)),
        };
        TrieProof { leaf_count, kind }
    }
}

/// Sets the value of the leaf at `bytes` (which is there), clearing the hashes above.
fn replace_value<K: TrieKey, V: Copy>(mut node: &mut Node<K, V>, bytes: &[u8; 32], value: V) -> V {
    loop {
        match node {
            Node::Leaf(leaf) => return std::mem::replace(&mut Arc::make_mut(leaf).value, value),
            Node::Branch(branch) => {
                let branch = Arc::make_mut(branch);
                branch.hash = None;
                node = &mut branch.children[bit(bytes, branch.bit)];
            }
        }
    }
}

/// Puts `leaf` under a new branch at bit `split`, above the first node on its path that
/// splits at a later bit (or is a leaf), clearing the hashes above.
fn insert_branch<K: TrieKey, V: Copy>(
    node: &mut Node<K, V>,
    bytes: &[u8; 32],
    split: u16,
    leaf: Leaf<K, V>,
) {
    if let Node::Branch(branch) = node
        && branch.bit < split
    {
        let branch = Arc::make_mut(branch);
        branch.hash = None;
        return insert_branch(
            &mut branch.children[bit(bytes, branch.bit)],
            bytes,
            split,
            leaf,
        );
    }
    let new = Node::Leaf(Arc::new(leaf));
    // The new leaf's second handle holds `node`'s place until the branch replaces it.
    let old = std::mem::replace(node, new.clone());
    let children = if bit(bytes, split) == 0 {
        [new, old]
    } else {
        [old, new]
    };
    *node = Node::Branch(Arc::new(Branch {
        bit: split,
        hash: None,
        children,
    }));
}

/// Removes the leaf at `bytes` from below the branch `node`, which then becomes its
/// sibling; clears the hashes above. `false` if there is no such leaf.
fn remove_below<K: TrieKey, V: Copy>(node: &mut Node<K, V>, bytes: &[u8; 32]) -> bool {
    let Node::Branch(branch) = node else {
        return false;
    };
    let side = bit(bytes, branch.bit);
    if let Node::Leaf(leaf) = &branch.children[side] {
        if leaf.key.key_bytes() != bytes {
            return false;
        }
        // The branch is replaced by the other child.
        let sibling = branch.children[1 - side].clone();
        *node = sibling;
        return true;
    }
    let branch = Arc::make_mut(branch);
    let removed = remove_below(&mut branch.children[side], bytes);
    if removed {
        branch.hash = None;
    }
    removed
}

/// The hash of `node`, rehashing (and caching) cleared branches below it.
fn node_hash<K: TrieKey, V: TrieValue<K>>(node: &mut Node<K, V>) -> Hash {
    match node {
        Node::Leaf(leaf) => leaf.value.leaf_hash(&leaf.key),
        Node::Branch(branch) => {
            if let Some(hash) = branch.hash {
                return hash;
            }
            let branch = Arc::make_mut(branch);
            let [left, right] = &mut branch.children;
            let hash = merkle::node_hash(&node_hash(left), &node_hash(right));
            branch.hash = Some(hash);
            hash
        }
    }
}

/// The hash of `node`, hashing cleared branches below it without caching.
fn peek_hash<K: TrieKey, V: TrieValue<K>>(node: &Node<K, V>) -> Hash {
    match node {
        Node::Leaf(leaf) => leaf.value.leaf_hash(&leaf.key),
        Node::Branch(branch) => branch.hash.unwrap_or_else(|| {
            let [left, right] = &branch.children;
            merkle::node_hash(&peek_hash(left), &peek_hash(right))
        }),
    }
}

/// The steps of the branches `walk`, which `bytes` lead through.
fn path_of<K: TrieKey, V: TrieValue<K>>(walk: &[&Branch<K, V>], bytes: &[u8; 32]) -> TriePath {
    let steps = walk
        .iter()
        .map(|branch| {
            let side = bit(bytes, branch.bit);
            PathStep {
                right: side == 1,
                sibling: peek_hash(&branch.children[1 - side]),
            }
        })
        .collect();
    TriePath { steps }
}

/// The leaf at the end of the edge below `node` that always takes child `side`.
fn edge_leaf<K: TrieKey, V: TrieValue<K>>(
    mut node: &Node<K, V>,
    side: usize,
) -> TrieNeighbour<K, V> {
    let mut siblings = Vec::new();
    loop {
        match node {
            Node::Leaf(leaf) => {
                return TrieNeighbour {
                    key: leaf.key,
                    value: leaf.value,
                    siblings,
                };
            }
            Node::Branch(branch) => {
                siblings.push(peek_hash(&branch.children[1 - side]));
                node = &branch.children[side];
            }
        }
    }
}

/// The entries of a [`MerkleTrie`] in key order.
#[derive(Debug)]
pub struct Iter<'a, K, V> {
    stack: Vec<&'a Node<K, V>>,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.stack.pop()? {
                Node::Leaf(leaf) => return Some((&leaf.key, &leaf.value)),
                Node::Branch(branch) => {
                    let [left, right] = &branch.children;
                    self.stack.push(right);
                    self.stack.push(left);
                }
            }
        }
    }
}

/// The root of the map given as its entries sorted by key, computed directly from the
/// definition (for checks, and for one-off roots of entries not in a trie). Entries
/// that are not sorted and distinct give a hash that no trie has.
pub fn root_of_sorted<K: TrieKey, V: TrieValue<K>>(entries: &[(K, V)]) -> Hash {
    fn top<K: TrieKey, V: TrieValue<K>>(entries: &[(K, V)]) -> Hash {
        let (first, last) = match entries {
            [] => return Hash::ZERO,
            [(key, value)] => return value.leaf_hash(key),
            [first, .., last] => (first, last),
        };
        let Some(split) = crit_bit(first.0.key_bytes(), last.0.key_bytes()) else {
            // Equal first and last keys with more entries between: not sorted and
            // distinct. Hash them as a left-leaning chain so the result is defined.
            return merkle::node_hash(&top(&entries[..1]), &top(&entries[1..]));
        };
        let mid = entries.partition_point(|(k, _)| bit(k.key_bytes(), split) == 0);
        merkle::node_hash(&top(&entries[..mid]), &top(&entries[mid..]))
    }
    if entries.is_empty() {
        return Hash::ZERO;
    }
    merkle::root_hash(entries.len(), &top(entries))
}

/// One branch on a proof's path, top-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStep {
    /// Whether the path goes to the branch's right child (the proven leaf is on the
    /// right, the sibling on the left).
    pub right: bool,
    /// The hash of the branch's other child.
    pub sibling: Hash,
}

/// The branches from the top of a trie down to a node, top-down.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TriePath {
    /// One step per branch.
    pub steps: Vec<PathStep>,
}

impl TriePath {
    /// The hash at the top of the path, given the hash at its bottom.
    fn climb(&self, bottom: Hash) -> Hash {
        self.steps.iter().rev().fold(bottom, |hash, step| {
            if step.right {
                merkle::node_hash(&step.sibling, &hash)
            } else {
                merkle::node_hash(&hash, &step.sibling)
            }
        })
    }
}

/// A neighbour of an absent key: a leaf at the end of an edge that goes only right
/// (the neighbour below the key) or only left (the one above), with the hashes on the
/// other side of that edge, top-down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrieNeighbour<K, V> {
    /// The leaf's key.
    pub key: K,
    /// The leaf's value.
    pub value: V,
    /// The siblings on the edge from where it starts down to the leaf, top-down: on
    /// the left of an edge that goes right, on the right of one that goes left.
    pub siblings: Vec<Hash>,
}

impl<K, V: TrieValue<K>> TrieNeighbour<K, V> {
    /// The hash at the top of the edge; `right` is the edge's direction.
    fn climb(&self, right: bool) -> Hash {
        let leaf = self.value.leaf_hash(&self.key);
        self.siblings.iter().rev().fold(leaf, |hash, sibling| {
            if right {
                merkle::node_hash(sibling, &hash)
            } else {
                merkle::node_hash(&hash, sibling)
            }
        })
    }
}

/// Evidence that a key is in a trie with some value, or is not in it, checked against
/// the trie's root by [`TrieProof::verify`] (see the module docs for the format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrieProof<K, V> {
    /// The trie's entries (the root commits to it).
    pub leaf_count: u64,
    /// What the proof shows.
    pub kind: ProofKind<K, V>,
}

/// What a [`TrieProof`] shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProofKind<K, V> {
    /// The key is in the trie: the path from the top to its leaf.
    Present(TriePath),
    /// The key sorts between two adjacent keys of the trie, so it is not there.
    Between {
        /// The path from the top to the branch where the two neighbours' paths part.
        split: TriePath,
        /// The largest key below the key, on the right edge of that branch's left
        /// child.
        before: TrieNeighbour<K, V>,
        /// The smallest key above the key, on the left edge of its right child.
        after: TrieNeighbour<K, V>,
    },
    /// The key sorts before every key of the trie: the first leaf, on the left edge
    /// from the top.
    BeforeFirst(TrieNeighbour<K, V>),
    /// The key sorts after every key of the trie: the last leaf, on the right edge
    /// from the top.
    AfterLast(TrieNeighbour<K, V>),
    /// The trie is empty.
    Empty,
}

/// Why a [`TrieProof`] does not show what it was checked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrieProofError {
    /// An inclusion proof checked for absence, or an absence proof for inclusion.
    #[error("{}", wrong_kind(.claimed_present))]
    WrongKind {
        /// Whether the claim was that the key is in the trie.
        claimed_present: bool,
    },
    /// A path longer than any trie has.
    #[error("a path of {steps} steps is longer than the {TRIE_DEPTH_MAX} a trie can have")]
    PathTooLong {
        /// Steps in the longest path of the proof.
        steps: usize,
    },
    /// The leaf count cannot be the trie's: 0 for a trie with leaves, not 0 for an
    /// empty one, fewer than the proof's paths need, or too large for this machine.
    #[error("a leaf count of {leaf_count} does not fit the proof")]
    LeafCount {
        /// The proof's leaf count.
        leaf_count: u64,
    },
    /// The neighbours' keys are not below and above the key.
    #[error("the proof's neighbours do not sort on either side of the key")]
    NeighbourOrder,
    /// The proof leads to a different root.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

fn wrong_kind(claimed_present: &bool) -> &'static str {
    if *claimed_present {
        "a proof of absence cannot show that a key is present"
    } else {
        "a proof of inclusion cannot show that a key is absent"
    }
}

impl<K: TrieKey, V: TrieValue<K>> TrieProof<K, V> {
    /// Checks against `root` that `key` is in the trie with `value` (`Some`), or is
    /// not in it (`None`).
    pub fn verify(&self, root: &Hash, key: &K, value: Option<&V>) -> Result<(), TrieProofError> {
        let claimed_present = value.is_some();
        if matches!(self.kind, ProofKind::Present(_)) != claimed_present {
            return Err(TrieProofError::WrongKind { claimed_present });
        }
        // Shape first, before any hashing: the longest path, and the fewest leaves a
        // trie with these paths has (every branch has a leaf on its other side).
        let (depth, leaves_min) = match &self.kind {
            ProofKind::Empty => (0, 0),
            ProofKind::Present(path) => (path.steps.len(), path.steps.len().saturating_add(1)),
            ProofKind::BeforeFirst(leaf) | ProofKind::AfterLast(leaf) => {
                (leaf.siblings.len(), leaf.siblings.len().saturating_add(1))
            }
            ProofKind::Between {
                split,
                before,
                after,
            } => {
                let below = split.steps.len().saturating_add(1);
                (
                    below.saturating_add(before.siblings.len().max(after.siblings.len())),
                    below
                        .saturating_add(1)
                        .saturating_add(before.siblings.len())
                        .saturating_add(after.siblings.len()),
                )
            }
        };
        if depth > TRIE_DEPTH_MAX {
            return Err(TrieProofError::PathTooLong { steps: depth });
        }
        let leaf_count = self.leaf_count;
        let count = usize::try_from(leaf_count)
            .ok()
            .filter(|count| {
                if leaves_min == 0 {
                    *count == 0
                } else {
                    *count >= leaves_min
                }
            })
            .ok_or(TrieProofError::LeafCount { leaf_count })?;
        // An empty trie's root is not a root hash, and no other trie has it.
        if (count == 0) != (*root == Hash::ZERO) {
            return Err(TrieProofError::RootMismatch);
        }
        let key_bytes = key.key_bytes();
        let top = match (&self.kind, value) {
            (ProofKind::Empty, None) => return Ok(()),
            (ProofKind::Present(path), Some(value)) => path.climb(value.leaf_hash(key)),
            (ProofKind::BeforeFirst(first), None) => {
                if key_bytes >= first.key.key_bytes() {
                    return Err(TrieProofError::NeighbourOrder);
                }
                first.climb(false)
            }
            (ProofKind::AfterLast(last), None) => {
                if key_bytes <= last.key.key_bytes() {
                    return Err(TrieProofError::NeighbourOrder);
                }
                last.climb(true)
            }
            (
                ProofKind::Between {
                    split,
                    before,
                    after,
                },
                None,
            ) => {
                if key_bytes <= before.key.key_bytes() || key_bytes >= after.key.key_bytes() {
                    return Err(TrieProofError::NeighbourOrder);
                }
                split.climb(merkle::node_hash(&before.climb(true), &after.climb(false)))
            }
            (_, value) => {
                return Err(TrieProofError::WrongKind {
                    claimed_present: value.is_some(),
                });
            }
        };
        if merkle::root_hash(count, &top) == *root {
            Ok(())
        } else {
            Err(TrieProofError::RootMismatch)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    impl TrieValue<[u8; 32]> for u64 {
        fn leaf_hash(&self, key: &[u8; 32]) -> Hash {
            merkle::leaf_hash_parts(&[key, &self.to_le_bytes()])
        }
    }

    fn key(seed: u16) -> [u8; 32] {
        *Hash::of(&seed.to_le_bytes()).as_bytes()
    }

    fn spec_root(map: &BTreeMap<[u8; 32], u64>) -> Hash {
        let entries: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
        root_of_sorted(&entries)
    }

    #[test]
    fn empty_one_and_two_entries_hash_as_defined() {
        let mut trie = MerkleTrie::<[u8; 32], u64>::new();
        assert_eq!(trie.root(), Hash::ZERO);
        let a = [0u8; 32];
        let mut b = [0u8; 32];
        b[31] = 1;
        trie.insert(b, 7);
        let leaf_b = 7u64.leaf_hash(&b);
        assert_eq!(trie.root(), merkle::root_hash(1, &leaf_b));
        trie.insert(a, 5);
        let leaf_a = 5u64.leaf_hash(&a);
        assert_eq!(
            trie.root(),
            merkle::root_hash(2, &merkle::node_hash(&leaf_a, &leaf_b)),
            "a sorts first (its last bit is 0)"
        );
        assert_eq!(trie.remove(&a), Some(5));
        assert_eq!(trie.remove(&a), None);
        assert_eq!(trie.root(), merkle::root_hash(1, &leaf_b));
        assert_eq!(trie.remove(&b), Some(7));
        assert_eq!((trie.root(), trie.len()), (Hash::ZERO, 0));
    }

    #[test]
    fn keys_differing_in_the_last_bit_and_the_first_bit() {
        let mut trie = MerkleTrie::<[u8; 32], u64>::new();
        let mut keys = Vec::new();
        for (byte, value) in [(0usize, 0x80u8), (31, 0x01), (0, 0x01), (15, 0x10)] {
            let mut k = [0u8; 32];
            k[byte] = value;
            keys.push(k);
        }
        keys.push([0u8; 32]);
        keys.push([0xff; 32]);
        let mut map = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            trie.insert(*k, i as u64);
            map.insert(*k, i as u64);
            assert_eq!(trie.root(), spec_root(&map));
        }
        let order: Vec<_> = trie.iter().map(|(k, _)| *k).collect();
        assert_eq!(order, map.keys().copied().collect::<Vec<_>>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of inserts, updates and removes gives the map's entries, in
        /// order, and the root computed from scratch by the definition.
        #[test]
        fn matches_a_sorted_map_and_the_definition(
            ops in proptest::collection::vec((0u16..48, any::<Option<u64>>(), any::<bool>()), 1..160)
        ) {
            let mut trie = MerkleTrie::<[u8; 32], u64>::new();
            let mut map = BTreeMap::new();
            for (seed, value, check_root) in ops {
                let k = key(seed);
                match value {
                    Some(v) => prop_assert_eq!(trie.insert(k, v), map.insert(k, v)),
                    None => prop_assert_eq!(trie.remove(&k), map.remove(&k)),
                }
                prop_assert_eq!(trie.len(), map.len());
                prop_assert_eq!(trie.get(&k), map.get(&k));
                if check_root {
                    prop_assert_eq!(trie.root(), spec_root(&map));
                }
            }
            prop_assert_eq!(trie.root(), spec_root(&map));
            let entries: Vec<_> = trie.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(entries, map.into_iter().collect::<Vec<_>>());
        }

        /// The root depends on the entries only, not on the order they came in.
        #[test]
        fn the_root_does_not_depend_on_insertion_order(
            seeds in proptest::collection::btree_set(any::<u16>(), 1..64),
            shuffle in any::<u64>(),
        ) {
            let entries: Vec<_> = seeds.iter().map(|s| (key(*s), u64::from(*s))).collect();
            let mut forward = MerkleTrie::new();
            for (k, v) in &entries {
                forward.insert(*k, *v);
            }
            let mut shuffled = entries.clone();
            let mut state = shuffle | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut other = MerkleTrie::new();
            for (k, v) in &shuffled {
                other.insert(*k, *v);
            }
            prop_assert_eq!(forward.root(), other.root());
        }
    }

    type Trie = MerkleTrie<[u8; 32], u64>;
    type Proof = TrieProof<[u8; 32], u64>;
    type Entry = ([u8; 32], u64);

    /// Larger than any proof of these tests' tries.
    const PROOF_BYTES_MAX: usize = 64 * 1024;

    fn trie_of(map: &BTreeMap<[u8; 32], u64>) -> Trie {
        let mut trie = Trie::new();
        for (k, v) in map {
            trie.insert(*k, *v);
        }
        trie
    }

    /// Random keys, and keys of mostly zeros that share long prefixes (for deep,
    /// lopsided tries).
    fn trie_key() -> impl Strategy<Value = [u8; 32]> {
        prop_oneof![
            any::<[u8; 32]>(),
            (0usize..32, any::<u8>(), any::<u8>()).prop_map(|(at, a, b)| {
                let mut k = [0u8; 32];
                k[at] = a;
                k[31] ^= b;
                k
            }),
        ]
    }

    /// The neighbours an absence proof names (below, above); `None` for inclusion.
    fn neighbours(proof: &Proof) -> Option<(Option<Entry>, Option<Entry>)> {
        let entry = |leaf: &TrieNeighbour<[u8; 32], u64>| (leaf.key, leaf.value);
        match &proof.kind {
            ProofKind::Present(_) => None,
            ProofKind::Between { before, after, .. } => {
                Some((Some(entry(before)), Some(entry(after))))
            }
            ProofKind::BeforeFirst(first) => Some((None, Some(entry(first)))),
            ProofKind::AfterLast(last) => Some((Some(entry(last)), None)),
            ProofKind::Empty => Some((None, None)),
        }
    }

    /// The neighbours of `k` in `map`.
    fn map_neighbours(
        map: &BTreeMap<[u8; 32], u64>,
        k: &[u8; 32],
    ) -> (Option<Entry>, Option<Entry>) {
        (
            map.range(..*k).next_back().map(|(k, v)| (*k, *v)),
            map.range(*k..).next().map(|(k, v)| (*k, *v)),
        )
    }

    /// Every entry's proof shows it with its value only, and every probe that is not
    /// an entry is shown absent between its neighbours in `map`.
    fn check_proofs(
        trie: &Trie,
        root: &Hash,
        map: &BTreeMap<[u8; 32], u64>,
        probes: &[[u8; 32]],
    ) -> Result<(), TestCaseError> {
        for (k, v) in map {
            let proof = trie.prove(k);
            prop_assert_eq!(proof.leaf_count, map.len() as u64);
            prop_assert!(matches!(proof.kind, ProofKind::Present(_)));
            prop_assert_eq!(proof.verify(root, k, Some(v)), Ok(()));
            prop_assert!(proof.verify(root, k, Some(&v.wrapping_add(1))).is_err());
            prop_assert!(proof.verify(root, k, Some(&!v)).is_err());
            prop_assert_eq!(
                proof.verify(root, k, None),
                Err(TrieProofError::WrongKind {
                    claimed_present: false
                })
            );
        }
        let ends = [[0u8; 32], [0xff; 32]];
        for k in probes.iter().chain(&ends).filter(|k| !map.contains_key(*k)) {
            let proof = trie.prove(k);
            prop_assert_eq!(proof.verify(root, k, None), Ok(()));
            prop_assert_eq!(neighbours(&proof), Some(map_neighbours(map, k)));
            prop_assert!(proof.verify(root, k, Some(&0)).is_err());
        }
        Ok(())
    }

    /// Whether `k` sorts strictly between an absence proof's neighbours.
    fn in_gap(proof: &Proof, k: &[u8; 32]) -> bool {
        let Some((before, after)) = neighbours(proof) else {
            return false;
        };
        before.is_none_or(|(b, _)| b < *k) && after.is_none_or(|(a, _)| *k < a)
    }

    /// The proof for `k` verifies, and stops verifying when any one byte of its
    /// encoding, of the root or of the value changes; a changed key keeps an absence
    /// proof valid exactly when it stays between the neighbours.
    fn every_change_fails(trie: &mut Trie, k: [u8; 32]) {
        let root = trie.root();
        let value = trie.get(&k).copied();
        let proof = trie.prove(&k);
        assert_eq!(proof.verify(&root, &k, value.as_ref()), Ok(()));
        let bytes = crate::codec::encode(&proof).unwrap();
        let back: Proof = crate::codec::decode(&bytes, PROOF_BYTES_MAX).unwrap();
        assert_eq!(back, proof);
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80] {
                let mut changed = bytes.clone();
                changed[i] ^= flip;
                if let Ok(changed) = crate::codec::decode::<Proof>(&changed, PROOF_BYTES_MAX) {
                    assert!(
                        changed.verify(&root, &k, value.as_ref()).is_err(),
                        "byte {i} of {} ^ {flip:#x}: {changed:?}",
                        bytes.len()
                    );
                }
            }
        }
        for i in 0..32 {
            let mut changed = *root.as_bytes();
            changed[i] ^= 0x01;
            let changed = Hash::from_bytes(changed);
            assert!(
                proof.verify(&changed, &k, value.as_ref()).is_err(),
                "root byte {i}"
            );
        }
        for i in 0..32 {
            let mut changed = k;
            changed[i] ^= 0x01;
            let result = proof.verify(&root, &changed, value.as_ref());
            match value {
                Some(_) => assert!(result.is_err(), "key byte {i}"),
                None => assert_eq!(result.is_ok(), in_gap(&proof, &changed), "key byte {i}"),
            }
        }
        match value {
            Some(v) => {
                for i in 0..8 {
                    let changed = v ^ (1 << (8 * i));
                    assert!(
                        proof.verify(&root, &k, Some(&changed)).is_err(),
                        "value byte {i}"
                    );
                }
            }
            None => {
                for claimed in [0, 1, u64::MAX] {
                    assert!(proof.verify(&root, &k, Some(&claimed)).is_err());
                }
            }
        }
    }

    #[test]
    fn tries_and_their_nodes_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Trie>();
        send_sync::<MerkleTrie<PublicKey, u64>>();
        send_sync::<MerkleTrie<Hash, u64>>();
        send_sync::<Proof>();
    }

    #[test]
    fn a_clone_keeps_its_entries_and_root_when_the_original_changes_and_back() {
        let mut original: Trie =
            (0..200)
                .map(|s| (key(s), u64::from(s)))
                .fold(Trie::new(), |mut trie, (k, v)| {
                    trie.insert(k, v);
                    trie
                });
        let entries: Vec<Entry> = original.iter().map(|(k, v)| (*k, *v)).collect();
        let root = original.root();
        let mut clone = original.clone();
        for s in 0..50 {
            original.insert(key(s), 1000);
            original.remove(&key(s + 50));
            original.insert(key(s + 1000), 7);
        }
        let changed: Vec<Entry> = original.iter().map(|(k, v)| (*k, *v)).collect();
        let changed_root = original.root();
        assert_ne!(changed_root, root);
        assert_eq!(
            clone.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            entries
        );
        assert_eq!((clone.len(), clone.root()), (200, root));
        assert_eq!(clone.get(&key(60)), Some(&60));

        for s in 0..200 {
            clone.remove(&key(s));
        }
        assert_eq!((clone.len(), clone.root()), (0, Hash::ZERO));
        assert_eq!(
            original.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            changed
        );
        assert_eq!(original.root(), changed_root);
        assert_eq!(original.get(&key(0)), Some(&1000));
    }

    /// Pointers to every node of `node`.
    fn node_ptrs(node: &Node<[u8; 32], u64>, out: &mut std::collections::HashSet<usize>) {
        match node {
            Node::Leaf(leaf) => {
                out.insert(Arc::as_ptr(leaf) as usize);
            }
            Node::Branch(branch) => {
                out.insert(Arc::as_ptr(branch) as usize);
                branch
                    .children
                    .iter()
                    .for_each(|child| node_ptrs(child, out));
            }
        }
    }

    /// Nodes of `node` that are not in `shared`.
    fn unshared(node: &Node<[u8; 32], u64>, shared: &std::collections::HashSet<usize>) -> usize {
        match node {
            Node::Leaf(leaf) => usize::from(!shared.contains(&(Arc::as_ptr(leaf) as usize))),
            Node::Branch(branch) if shared.contains(&(Arc::as_ptr(branch) as usize)) => 0,
            Node::Branch(branch) => {
                1 + branch
                    .children
                    .iter()
                    .map(|child| unshared(child, shared))
                    .sum::<usize>()
            }
        }
    }

    #[test]
    fn a_clone_shares_every_node_and_a_change_copies_only_its_path() {
        let mut original = Trie::new();
        for s in 0..1000 {
            original.insert(key(s), u64::from(s));
        }
        let root = original.root();
        let mut clone = original.clone();
        let mut shared = std::collections::HashSet::new();
        node_ptrs(original.top.as_ref().unwrap(), &mut shared);
        assert_eq!(unshared(clone.top.as_ref().unwrap(), &shared), 0);

        let new = key(5000);
        clone.insert(new, 1);
        clone.root();
        let ProofKind::Present(path) = clone.prove(&new).kind else {
            panic!("the key was just inserted");
        };
        // The new leaf and the branches above it, one of them new.
        assert_eq!(
            unshared(clone.top.as_ref().unwrap(), &shared),
            path.steps.len() + 1
        );
        assert!(path.steps.len() < 40);

        clone.insert(key(7), 70);
        clone.remove(&key(8));
        clone.remove(&key(9999));
        assert_eq!(original.root(), root);
        assert_eq!(original.get(&key(7)), Some(&7));
        assert_eq!(original.get(&key(8)), Some(&8));
        assert_eq!(original.get(&new), None);
        assert_eq!(clone.get(&key(7)), Some(&70));
    }

    #[test]
    fn every_one_byte_change_of_a_proof_or_its_claim_fails() {
        let mut trie = Trie::new();
        every_change_fails(&mut trie, key(1));

        let mut single = Trie::new();
        single.insert(key(1), 10);
        for k in [key(1), [0; 32], [0xff; 32], key(2)] {
            every_change_fails(&mut single, k);
        }

        let mut small = Trie::new();
        for s in 0..12 {
            small.insert(key(s), u64::from(s) * 1_000_003);
        }
        let mut probes: Vec<[u8; 32]> = (0..12).map(key).collect();
        probes.extend((100..120).map(key));
        probes.extend([[0; 32], [0xff; 32]]);
        let mut seen = std::collections::HashSet::new();
        for k in probes {
            let proof = small.prove(&k);
            seen.insert(std::mem::discriminant(&proof.kind));
            every_change_fails(&mut small, k);
        }
        assert_eq!(
            seen.len(),
            4,
            "present, between, before the first, after the last"
        );
    }

    #[test]
    fn verify_refuses_malformed_proofs() {
        let mut trie = Trie::new();
        for s in 0..20 {
            trie.insert(key(s), u64::from(s));
        }
        let root = trie.root();
        let k = key(3);
        let good = trie.prove(&k);
        let ProofKind::Present(path) = &good.kind else {
            panic!("key 3 is in the trie");
        };

        let mut long = path.clone();
        long.steps.resize(TRIE_DEPTH_MAX + 1, path.steps[0]);
        let proof = Proof {
            leaf_count: u64::MAX,
            kind: ProofKind::Present(long),
        };
        assert_eq!(
            proof.verify(&root, &k, Some(&3)),
            Err(TrieProofError::PathTooLong {
                steps: TRIE_DEPTH_MAX + 1
            })
        );

        for leaf_count in [0, path.steps.len() as u64] {
            let proof = Proof {
                leaf_count,
                ..good.clone()
            };
            assert_eq!(
                proof.verify(&root, &k, Some(&3)),
                Err(TrieProofError::LeafCount { leaf_count })
            );
        }
        let proof = Proof {
            leaf_count: 21,
            ..good.clone()
        };
        assert_eq!(
            proof.verify(&root, &k, Some(&3)),
            Err(TrieProofError::RootMismatch)
        );
        assert_eq!(
            good.verify(&Hash::ZERO, &k, Some(&3)),
            Err(TrieProofError::RootMismatch)
        );

        let empty = Trie::new().prove(&k);
        assert_eq!(empty.verify(&Hash::ZERO, &k, None), Ok(()));
        assert_eq!(
            empty.verify(&root, &k, None),
            Err(TrieProofError::RootMismatch)
        );
        assert_eq!(
            empty.verify(&Hash::ZERO, &k, Some(&3)),
            Err(TrieProofError::WrongKind {
                claimed_present: true
            })
        );
        let proof = Proof {
            leaf_count: 1,
            kind: ProofKind::Empty,
        };
        assert_eq!(
            proof.verify(&Hash::ZERO, &k, None),
            Err(TrieProofError::LeafCount { leaf_count: 1 })
        );

        let absent = key(100);
        let proof = trie.prove(&absent);
        let ProofKind::Between {
            split,
            before,
            after,
        } = proof.kind.clone()
        else {
            panic!("a random key falls between two of 20 random keys: {proof:?}");
        };
        assert_eq!(proof.verify(&root, &absent, None), Ok(()));
        assert_eq!(
            proof.verify(&root, &before.key, None),
            Err(TrieProofError::NeighbourOrder)
        );
        assert_eq!(
            proof.verify(&root, &after.key, None),
            Err(TrieProofError::NeighbourOrder)
        );
        let swapped = Proof {
            leaf_count: proof.leaf_count,
            kind: ProofKind::Between {
                split,
                before: after,
                after: before,
            },
        };
        assert_eq!(
            swapped.verify(&root, &absent, None),
            Err(TrieProofError::NeighbourOrder)
        );
    }

    #[test]
    fn proofs_of_a_large_trie_follow_its_depth() {
        let n = 100_000u32;
        let big_key = |i: u32| *Hash::of(&i.to_le_bytes()).as_bytes();
        let mut trie = Trie::new();
        for i in 0..n {
            trie.insert(big_key(i), u64::from(i));
        }
        let root = trie.root();
        let (mut present, mut absent) = (Vec::new(), Vec::new());
        let mut depth_max = 0;
        for i in 0..500 {
            let k = big_key(i * (n / 500));
            let proof = trie.prove(&k);
            proof.verify(&root, &k, trie.get(&k)).unwrap();
            let ProofKind::Present(path) = &proof.kind else {
                panic!("the key is in the trie");
            };
            depth_max = depth_max.max(path.steps.len());
            present.push(crate::codec::encode(&proof).unwrap().len());

            let k = big_key(n + i);
            let proof = trie.prove(&k);
            proof.verify(&root, &k, None).unwrap();
            absent.push(crate::codec::encode(&proof).unwrap().len());
        }
        let mean = |sizes: &[usize]| sizes.iter().sum::<usize>() / sizes.len();
        let max = |sizes: &[usize]| sizes.iter().copied().max().unwrap_or(0);
        println!(
            "{n} entries: inclusion proof {} bytes on average, {} at most (depth at most {depth_max}); \
             absence proof {} bytes on average, {} at most",
            mean(&present),
            max(&present),
            mean(&absent),
            max(&absent),
        );
        // log2(100k) is about 17.
        assert!(depth_max < 64, "{depth_max}");
        assert!(max(&present) < 64 * 33 && max(&absent) < 64 * 33 + 200);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Proofs of present and absent keys verify as what they are and nothing else,
        /// on a snapshot and on a trie changed since its last root (whose uncached
        /// branches the prover hashes on the way).
        #[test]
        fn proofs_show_exactly_what_is_in_the_trie(
            map in proptest::collection::btree_map(trie_key(), any::<u64>(), 0..200),
            probes in proptest::collection::vec(trie_key(), 0..24),
            changes in proptest::collection::vec((trie_key(), any::<Option<u64>>()), 0..8),
        ) {
            let mut trie = trie_of(&map);
            let root = trie.root();
            prop_assert_eq!(root, spec_root(&map));
            let snapshot = trie.clone();
            let mut changed = map.clone();
            for (k, v) in &changes {
                match v {
                    Some(v) => {
                        trie.insert(*k, *v);
                        changed.insert(*k, *v);
                    }
                    None => {
                        trie.remove(k);
                        changed.remove(k);
                    }
                }
            }
            let probes: Vec<_> = probes.iter().chain(changes.iter().map(|(k, _)| k)).copied().collect();
            check_proofs(&trie, &spec_root(&changed), &changed, &probes)?;
            check_proofs(&snapshot, &root, &map, &probes)?;
        }
    }
}
