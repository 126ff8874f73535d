//! All that the HTTP API and the scrub know of the event loop: the commands they
//! send it, the live status it publishes, and the fixed facts of the node. They
//! import this file, never the loop itself.

use libp2p::PeerId;
use mosaic_consensus::ValidatorSet;
use mosaic_crypto::ChainId;
use mosaic_storage::Fragment;
use tokio::sync::oneshot;

use crate::genesis::Genesis;
use crate::ledger::SignedTransfer;

/// Requests from the HTTP API to the event loop.
#[derive(Debug)]
pub enum Command {
    /// Transactions admitted to the mempool through the API: gossip them.
    Gossip(Vec<SignedTransfer>),
    /// Gather fragments of the block at `height` from peers.
    Fragments {
        /// Height.
        height: u64,
        /// Where to send what was gathered (checked against the block's commitment).
        reply: oneshot::Sender<Vec<Fragment>>,
    },
}

/// What the node reports in `/v1/status`.
#[derive(Debug, Clone, Default)]
pub struct StatusInfo {
    /// Current view.
    pub view: u64,
    /// Its primary.
    pub primary: u32,
    /// Whether a view change is under way.
    pub view_changing: bool,
    /// Connected peers.
    pub peers: Vec<String>,
    /// The height at least one honest validator reached, as peers report.
    pub network_height: u64,
    /// Whether f+1 peers reported, so `network_height` means that.
    pub network_known: bool,
    /// Whether the node is catching up.
    pub syncing: bool,
}

/// Read-only facts about a running node, shared with the API.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The chain.
    pub chain: ChainId,
    /// This validator.
    pub index: u32,
    /// The validators.
    pub validators: ValidatorSet,
    /// Their peer ids, by index.
    pub validator_peers: Vec<PeerId>,
    /// The genesis file.
    pub genesis: Genesis,
    /// This node's peer id.
    pub peer_id: PeerId,
    /// k.
    pub data_shards: usize,
    /// `mempool.behind_heights_max`.
    pub behind_heights_max: u64,
}
