//! The one door between the honest event loop and a test build's Byzantine
//! behaviour: [`Edge`], a set of hooks at the node's edges (what it sends, what it
//! answers, what it does on a tick). The honest node's edge is [`Honest`], whose
//! hooks change nothing. Only a build with the `byzantine` feature has another
//! ([`crate::maverick`]'s `Maverick`); in every other build
//! [`crate::maverick::edge`] can only return [`Honest`], because
//! [`crate::maverick::Mode`] has no values there. Inside the driver,
//! only the relay (frames in) and outbound (frames and answers out) rooms call it.

use std::sync::Arc;

use mosaic_consensus::{Digest, Message, SeqNum, ValidatorSet, View};
use mosaic_crypto::Keypair;

use crate::block::AfterParent;
use crate::chain::Layout;
use crate::ledger::SignedTransfer;
use crate::net::{SyncRequest, SyncResponse};
use crate::proposal::Supply;

/// Hooks at the edges of the honest replica. Every default is the honest
/// behaviour.
pub trait Edge: Send {
    /// As primary, about to propose `txs` at `at` in `view`.
    fn proposing(
        &mut self,
        _layout: &Layout,
        _at: (SeqNum, Digest),
        _view: View,
        _after: AfterParent,
        _txs: &[SignedTransfer],
    ) {
    }

    /// The frame to send to validator `to` for `message` (`None`: send nothing).
    fn outgoing(
        &mut self,
        _to: usize,
        _message: &Message,
        frame: Arc<Vec<u8>>,
    ) -> Option<Arc<Vec<u8>>> {
        Some(frame)
    }

    /// A consensus frame arrived (after its decoding succeeded).
    fn incoming(&mut self, _frame: &[u8]) {}

    /// Whether to keep the gossip queue unpublished this tick.
    fn holds_gossip(&self, _primary: bool) -> bool {
        false
    }

    /// The supply to send for a want.
    fn supply(&self, supply: Supply) -> Supply {
        supply
    }

    /// The answer to send to a sync request (`None`: send nothing).
    fn answer(&mut self, _request: &SyncRequest, honest: SyncResponse) -> Option<SyncResponse> {
        Some(honest)
    }

    /// Whether [`Self::tick`] does anything (the honest edge's does not, so the
    /// loop does not build its context every 5 ms).
    fn ticks(&self) -> bool {
        false
    }

    /// Every 5 ms tick, if [`Self::ticks`].
    fn tick(&mut self, _ctx: TickContext<'_>) {}
}

/// The honest node's edge: every hook leaves what passes unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Honest;

impl Edge for Honest {}

/// What the event loop hands to [`Edge::tick`].
#[allow(missing_debug_implementations)] // borrows the swarm, which has no useful Debug
pub struct TickContext<'a> {
    /// The consensus links, by validator index.
    pub links: &'a crate::links::Links,
    /// The swarm (sync requests and gossip).
    pub swarm: &'a mut libp2p::Swarm<crate::net::Behaviour>,
    /// The transactions topic.
    pub topic: &'a libp2p::gossipsub::IdentTopic,
    /// Connected peers, with their connection counts.
    pub connected: &'a std::collections::BTreeMap<libp2p::PeerId, u32>,
    /// This node's executed height.
    pub tip: u64,
    /// Its current view.
    pub view: mosaic_consensus::View,
}

/// What validator `index` of `validators` (signing with `key`) needs to build a
/// maverick's edge.
#[derive(Debug)]
pub struct EdgeSetup<'a> {
    /// The validator's key (a maverick signs its lies with it).
    pub key: &'a Keypair,
    /// The validator set.
    pub validators: ValidatorSet,
    /// This validator's index.
    pub index: u32,
    /// The consensus window.
    pub window: u64,
    /// The largest payload consensus accepts.
    pub payload_bytes_max: usize,
}
