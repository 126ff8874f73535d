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
//!
//! [`merkle::leaf_hash_parts`]: crate::merkle::leaf_hash_parts

use crate::hash::Hash;
use crate::merkle;
use crate::sign::PublicKey;

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

/// The map (see the module docs).
#[derive(Debug, Clone)]
pub struct MerkleTrie<K, V> {
    top: Option<Node<K, V>>,
    len: usize,
}

#[derive(Debug, Clone)]
enum Node<K, V> {
    Leaf(Box<Leaf<K, V>>),
    Branch(Box<Branch<K, V>>),
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
            self.top = Some(Node::Leaf(Box::new(Leaf { key, value })));
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
        let bytes = key.key_bytes();
        let top = self.top.as_mut()?;
        let removed = match top {
            Node::Leaf(leaf) if leaf.key.key_bytes() == bytes => {
                let value = leaf.value;
                self.top = None;
                Some(value)
            }
            Node::Leaf(_) => None,
            Node::Branch(_) => remove_below(top, bytes),
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
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
}

/// Sets the value of the leaf at `bytes` (which is there), clearing the hashes above.
fn replace_value<K: TrieKey, V: Copy>(mut node: &mut Node<K, V>, bytes: &[u8; 32], value: V) -> V {
    loop {
        match node {
            Node::Leaf(leaf) => return std::mem::replace(&mut leaf.value, value),
            Node::Branch(branch) => {
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
        branch.hash = None;
        return insert_branch(
            &mut branch.children[bit(bytes, branch.bit)],
            bytes,
            split,
            leaf,
        );
    }
    let side = bit(bytes, split);
    let copy = || {
        Node::Leaf(Box::new(Leaf {
            key: leaf.key,
            value: leaf.value,
        }))
    };
    let mut branch = Box::new(Branch {
        bit: split,
        hash: None,
        children: [copy(), copy()],
    });
    // The old subtree goes to the other side; the new leaf's spare copy, swapped out
    // into `node`, is then replaced by the branch.
    std::mem::swap(node, &mut branch.children[1 - side]);
    *node = Node::Branch(branch);
}

/// Removes the leaf at `bytes` from below the branch `node`, which then becomes its
/// sibling; clears the hashes above. `None` if there is no such leaf.
fn remove_below<K: TrieKey, V: Copy>(node: &mut Node<K, V>, bytes: &[u8; 32]) -> Option<V> {
    let Node::Branch(branch) = node else {
        return None;
    };
    let side = bit(bytes, branch.bit);
    match &branch.children[side] {
        Node::Leaf(leaf) if leaf.key.key_bytes() == bytes => {
            let value = leaf.value;
            // The branch is replaced by the other child.
            let spare = Node::Leaf(Box::new(Leaf {
                key: leaf.key,
                value,
            }));
            let sibling = std::mem::replace(&mut branch.children[1 - side], spare);
            *node = sibling;
            Some(value)
        }
        Node::Leaf(_) => None,
        Node::Branch(_) => {
            let removed = remove_below(&mut branch.children[side], bytes);
            if removed.is_some() {
                branch.hash = None;
            }
            removed
        }
    }
}

/// The hash of `node`, rehashing cleared branches below it.
fn node_hash<K: TrieKey, V: TrieValue<K>>(node: &mut Node<K, V>) -> Hash {
    match node {
        Node::Leaf(leaf) => leaf.value.leaf_hash(&leaf.key),
        Node::Branch(branch) => {
            if let Some(hash) = branch.hash {
                return hash;
            }
            let [left, right] = &mut branch.children;
            let hash = merkle::node_hash(&node_hash(left), &node_hash(right));
            branch.hash = Some(hash);
            hash
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
}
