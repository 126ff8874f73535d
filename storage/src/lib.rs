//! Erasure-coded block storage for Mosaic.
//!
//! - [`coding`]: a body becomes n Reed-Solomon fragments of which any k rebuild it;
//!   each fragment carries a Merkle proof against the fragment root in the header,
//!   is checked before decoding, and every decode is re-encoded and compared, so a
//!   bad encoding is reported with evidence and never returned as bytes.
//! - [`placement`]: validator j keeps fragment (j + height) mod n.
//! - [`store`]: a redb file plus append-only segment files for own fragments and
//!   recent bodies; a committed block is durable before `commit_block` returns;
//!   bodies outside a window are pruned (their files deleted) and rebuilt from
//!   fragments on demand; own fragments can be repaired; every value is
//!   checksummed; a compact transaction index (6 bytes per transaction) names the
//!   blocks that may hold an id.
//!
//! ```
//! use mosaic_storage::coding;
//!
//! let body = b"any bytes at all".to_vec();
//! let encoded = coding::encode(&body, 2, 4)?; // k = 2 of n = 4
//! let commitment = encoded.commitment();
//! // Any two fragments rebuild the body, after their proofs are checked.
//! let some = vec![encoded.fragment(3).unwrap(), encoded.fragment(1).unwrap()];
//! let rebuilt = coding::reconstruct(&commitment, some)?;
//! assert_eq!(rebuilt.body, body);
//! # Ok::<(), coding::CodingError>(())
//! ```

pub mod coding;
mod durable;
mod error;
pub mod placement;
mod segments;
pub mod store;
mod txindex;

pub use coding::{
    CheckedFragment, CodecId, CodingError, CodingParams, Fragment, FragmentCommitment,
    FragmentError, check_encoding, decode, default_data_shards, encode, reconstruct,
};
pub use segments::Damage;
pub use store::{
    BlockOutcomes, CommittedBlock, FragmentState, OpenDamage, Rebuilt, Schema, Store, StoreConfig,
    StoreError,
};
