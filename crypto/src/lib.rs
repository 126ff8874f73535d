//! Cryptographic building blocks of Mosaic: blake3 [`Hash`]es, ed25519 keys and
//! domain-separated signatures with batch verification, Merkle trees and proofs,
//! the one canonical binary [`codec`], and key files.
//!
//! Invariants the rest of the system relies on:
//! - Every signature covers a domain tag and the chain id ([`sign`]); no signature is
//!   valid for another kind of message or another chain.
//! - Single and batch verification accept exactly the same signatures (see the
//!   [`sign`] module docs), so validity never depends on how work was batched.
//! - [`codec`] is the only encoder: fixed, canonical, and limit-checked on decode.
//! - Merkle leaves and inner nodes are hashed under different prefixes.
//!
//! ```
//! use mosaic_crypto::{ChainId, Domain, Keypair, codec, merkle::MerkleTree};
//!
//! let chain = ChainId::new("mosaic-dev")?;
//! let key = Keypair::from_seed_for_tests(1);
//! let message = codec::encode(&(7u64, "transfer"))?;
//! let signature = key.sign(Domain::Transaction, &chain, &message);
//! key.public().verify(Domain::Transaction, &chain, &message, &signature)?;
//! assert!(key.public().verify(Domain::Commit, &chain, &message, &signature).is_err());
//!
//! let tree = MerkleTree::from_leaves(&[b"a", b"b", b"c"])?;
//! tree.proof(2)?.verify(&tree.root(), 2, b"c")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod codec;
pub mod hash;
mod hexfmt;
pub mod keyfile;
pub mod merkle;
pub mod sign;
pub mod trie;

pub use codec::CodecError;
pub use hash::{HASH_LEN, Hash};
pub use hexfmt::HexError;
pub use keyfile::{KeyFileError, read_key_file, write_key_file};
pub use merkle::{MerkleError, MerkleProof, MerkleTree};
pub use sign::{
    ChainId, Domain, Keypair, PublicKey, SignError, Signature, SignedItem, batch_holds, verify,
    verify_batch,
};
pub use trie::{
    MerkleTrie, PathStep, ProofKind, TRIE_DEPTH_MAX, TrieKey, TrieNeighbour, TriePath, TrieProof,
    TrieProofError, TrieValue,
};
