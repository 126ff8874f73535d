//! What the node keeps in the store: the [`NodeSchema`] binding the storage crate's
//! generic store to the node's types.

use mosaic_consensus::{CheckpointProof, CommitCertificate, SafetyRecord};
use mosaic_crypto::PublicKey;
use mosaic_storage::{Schema, Store};
use serde::{Deserialize, Serialize};

use crate::block::BlockHeader;
use crate::ledger::{Account, TxOutcome};

/// The node's store types.
#[derive(Debug)]
pub enum NodeSchema {}

impl Schema for NodeSchema {
    type Header = BlockHeader;
    type Certificate = CommitCertificate;
    type AccountKey = PublicKey;
    type Account = Account;
    type SafetyRecord = PersistedConsensus;
    type TxRecord = TxRecord;
}

/// The node's store.
pub type NodeStore = Store<NodeSchema>;

/// What consensus needs after a restart besides the blocks: the safety record (what
/// this validator signed) and the latest stable checkpoint proof.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedConsensus {
    /// What the safety rules signed.
    pub record: SafetyRecord,
    /// The latest stable checkpoint (`None` until the first one).
    pub stable: Option<CheckpointProof>,
}

/// Where a committed transaction landed and how its execution went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// Block height.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// Applied, or failed with a reason (state untouched).
    pub outcome: TxOutcome,
}
