//! Compact proposals: the wire between validators, and the room that turns a
//! PRE-PREPARE naming its transfers by id back into the full block.
//!
//! Every transfer already reaches every validator once, by gossip. A primary that
//! sent each block's full body again inside its PRE-PREPARE made every backup
//! receive, decode and hash each transfer twice. Instead, the primary sends the
//! signed PRE-PREPARE, the block header and the transfer ids ([`Compact`]); a backup
//! takes the transfers from its own mempool (already decoded and verified there),
//! asks the primary for the ones it lacks ([`Want`], answered by [`Supply`]), and
//! hands consensus the full block it rebuilt. Safety does not change: the digest
//! is the header hash, the header commits to the transaction root and the fragment
//! root, and the block check re-encodes the rebuilt body against that fragment root
//! before anything votes for it. Catch-up, NEW-VIEW and the auditor keep full
//! bodies.
//!
//! A transfer's id leaves its signature out, and its owner can sign it again with
//! another valid signature, so a proposal names each transfer by its id and a
//! digest of its signature: a backup holding another signature of the same
//! transfer asks for the primary's, instead of rebuilding a body that fails the
//! fragment root and blaming an honest primary for it.
//!
//! A backup that lacks transfers usually has them on the way: the primary
//! proposes what its clients just sent it, and the gossip of those transfers is
//! still being verified at the backup. So it waits [`WANT_DELAY`] for its own
//! gossip before it asks the primary, and fills the proposal from the gossip it
//! verifies meanwhile (once per tick; every [`WANT_RESEND`] after it asked).
//!
//! Everything here is bounded: relay frames to about a body, a few own proposals
//! kept to answer wants, two answers per validator and proposal, and a few
//! proposals waiting per sender. A waiting proposal is signed by the primary of
//! the current view, the next, or the one a view change moves to, within the
//! window; nobody else's frames can push it out. A copy of a proposal already
//! taken is counted without a signature check (the digest binds its content).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use mosaic_consensus::{
    Digest, Message, PrePrepare, ReplicaId, SeqNum, Signed, ValidatorSet, View,
};
use mosaic_crypto::{Hash, Signature, codec};
use serde::{Deserialize, Serialize};

use crate::block::BlockHeader;
use crate::ledger::{SignedTransfer, TxHash, VerifiedTransfer};

mod assembly;
mod frames;
mod wants;
use frames::FrameRef;
pub use frames::{
    Frame, consensus_frame, decode_frame, signature_digest, supply_frame, want_frame,
};

/// Own proposals kept to answer wants: the one in flight and a few around view
/// changes.
const OWN_KEPT: usize = 8;
/// Proposals waiting for transfers from one sender, at most.
const PENDING_PER_SENDER: usize = 8;
/// Answers to one validator's wants for one proposal: a link that fails mid-batch
/// makes an honest backup ask again once. A backup that asks for everything gets
/// at most twice the body, what the full PRE-PREPARE would have cost twice.
const ANSWERS_PER_PEER: u8 = 2;
/// How long a backup waits for gossip to bring missing transfers before it asks
/// the primary: about the time a gossip batch takes to reach the backup and be
/// verified, well under a view timeout.
pub const WANT_DELAY: Duration = Duration::from_millis(20);
/// How long a backup waits for a supply before it sends its want again (a link
/// may have dropped either), at least; it sends a want [`ANSWERS_PER_PEER`] times
/// at most. A proposal that has asked is refilled from gossip at this period too,
/// so one whose supplies were all lost still completes once gossip brings them.
pub const WANT_RESEND: Duration = Duration::from_millis(200);
/// Time added to [`WANT_RESEND`] per wanted transfer: a large supply takes longer
/// to arrive (about 1.3 s more for a maximal block).
const WANT_RESEND_PER_TRANSFER: Duration = Duration::from_micros(25);
/// Transfer ids waiting for transfers from one sender, at most (over all its
/// waiting proposals): two maximal blocks, a proposal and the next one.
const WAITING_IDS_PER_SENDER: usize = 2 * IDS_MAX;
/// Times one signed proposal is assembled at most: a primary that re-sends it
/// after a reconnect gets it taken again once; copies past that cost a lookup.
const ASSEMBLIES_PER_PROPOSAL: u8 = 2;
/// The smallest signed transfer in the canonical codec (a one-byte chain id).
const SIGNED_LEN_MIN: usize = 8 + 1 + 32 + 32 + 8 + 8 + 8 + 64;
/// Ids in one compact proposal, at most: a maximal body of the smallest transfers.
/// Checked before the ids are hashed into a root.
const IDS_MAX: usize = crate::block::BODY_BYTES_MAX / SIGNED_LEN_MIN;
/// The largest relay frame (proposal, want, supply): a maximal body and the
/// framing around it. Consensus frames have their own, larger bound (a NEW-VIEW
/// carries several payloads).
pub const RELAY_FRAME_MAX: usize = crate::block::BODY_BYTES_MAX + 1024 * 1024;

/// A PRE-PREPARE whose payload is named, not carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compact {
    /// The primary's signed PRE-PREPARE; its digest is `header.hash()`.
    pub pre_prepare: Signed<PrePrepare>,
    /// The block header.
    pub header: BlockHeader,
    /// The block's transfer ids, in block order.
    pub ids: Vec<TxHash>,
    /// [`signature_digest`] of each transfer's signature, in block order.
    pub signatures: Vec<Hash>,
}

/// Transfers of proposal `digest` a backup lacks, by position in the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    /// The proposal (header hash).
    pub digest: Digest,
    /// Positions in the block, ascending.
    pub indexes: Vec<u32>,
}

/// The primary's answer to a [`Want`]: the transfers at the wanted positions, in
/// the want's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    /// The proposal.
    pub digest: Digest,
    /// The positions of the want it answers (a backup that asked again with other
    /// positions takes an answer to its older want as unwanted, not as wrong).
    pub indexes: Vec<u32>,
    /// The wanted transfers.
    pub txs: Vec<SignedTransfer>,
}

/// Why a frame of the relay was refused; each one is the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// A proposal from a validator that is not the view's primary, or signed by
    /// another.
    #[error("compact proposal not from the view's primary")]
    NotPrimary,
    /// The PRE-PREPARE's signature does not verify.
    #[error("compact proposal's signature does not verify")]
    BadSignature,
    /// Another signed proposal for the same view and height.
    #[error("a second compact proposal for the same view and height")]
    Equivocation,
    /// The header does not hash to the signed digest, or names another height or parent.
    #[error("compact proposal's header does not match its pre-prepare")]
    HeaderMismatch,
    /// The ids or signature digests do not match the header's count or
    /// transaction root.
    #[error("compact proposal's ids do not match its header: {0}")]
    IdsMismatch(&'static str),
    /// A want names positions outside the proposal or not ascending.
    #[error("want names positions outside the proposal")]
    BadWant,
    /// A supply that answers no want of this node, or with other transfers.
    #[error("supply does not answer what was wanted: {0}")]
    BadSupply(&'static str),
}

impl RelayError {
    /// The reason label of the refusal in metrics and the points its sender is
    /// charged (a proposal not from the primary, or with a bad signature, counts as
    /// the full PRE-PREPARE would in consensus).
    pub fn reason(&self) -> (&'static str, u32) {
        match self {
            RelayError::NotPrimary => ("pre-prepare-not-from-primary", 2),
            RelayError::BadSignature => ("bad-signature", 5),
            RelayError::Equivocation => ("compact-proposal-equivocation", 10),
            RelayError::HeaderMismatch => ("compact-proposal-header-mismatch", 10),
            RelayError::IdsMismatch(_) => ("compact-proposal-ids-mismatch", 10),
            RelayError::BadWant => ("want-invalid", 5),
            RelayError::BadSupply(_) => ("supply-invalid", 10),
        }
    }
}

/// Where this node stands, to judge a compact proposal before anything is looked
/// up or kept for it.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    /// The replica's view.
    pub view: View,
    /// The latest view whose proposals are taken: as consensus buffers them, the
    /// next view or the one a view change is moving to.
    pub view_max: View,
    /// The executed height.
    pub tip: u64,
    /// How far above the tip a PRE-PREPARE may be (the consensus window).
    pub window: u64,
}

/// What receiving a compact proposal led to.
#[derive(Debug)]
pub enum Received {
    /// Every transfer was in the mempool: the block, ready to assemble.
    Complete(Box<Assembly>),
    /// This many are missing: the proposal waits for gossip, then for the want
    /// [`Relay::due`] hands out.
    Missing(usize),
    /// A copy of a proposal already waiting for transfers: the want again (the
    /// first one may have been lost with a link).
    AlreadyWaiting(Want),
    /// Not for now (an old view, a view too far ahead, a height outside the window):
    /// dropped uncharged, as consensus drops such PRE-PREPAREs.
    Ignored(&'static str),
}

/// A proposal with all its transfers, verified by this node, in block order.
#[derive(Debug)]
pub struct Assembly {
    /// The signed PRE-PREPARE.
    pub pre_prepare: Signed<PrePrepare>,
    /// The header.
    pub header: BlockHeader,
    /// The transfers.
    pub txs: Vec<VerifiedTransfer>,
}

/// An own proposal, kept to compact its PRE-PREPARE and answer wants.
#[derive(Debug)]
struct Own {
    digest: Digest,
    header: BlockHeader,
    txs: Vec<SignedTransfer>,
    ids: Vec<TxHash>,
    signatures: Vec<Hash>,
    /// Answers given, per validator.
    answers: Vec<u8>,
}

/// A received proposal waiting for transfers from its primary.
#[derive(Debug)]
struct Pending {
    from: ReplicaId,
    pre_prepare: Signed<PrePrepare>,
    header: BlockHeader,
    ids: Vec<TxHash>,
    signatures: Vec<Hash>,
    have: Vec<Option<VerifiedTransfer>>,
    /// The positions asked for, ascending; empty until the want is sent.
    asked: Vec<u32>,
    /// When it arrived: its want is due [`WANT_DELAY`] later.
    arrived: Instant,
    /// When the want was last sent, and how many times.
    asked_at: Option<Instant>,
    wants_sent: u8,
    /// When gossip was last looked up for it after its want was sent.
    refilled_at: Option<Instant>,
}

impl Pending {
    fn missing(&self) -> Vec<u32> {
        self.have
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_none())
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn want(&self) -> Want {
        Want {
            digest: self.pre_prepare.body.digest,
            indexes: self.asked.clone(),
        }
    }

    fn into_assembly(self) -> Option<Assembly> {
        let txs: Vec<VerifiedTransfer> = self.have.into_iter().flatten().collect();
        (txs.len() == self.ids.len()).then_some(Assembly {
            pre_prepare: self.pre_prepare,
            header: self.header,
            txs,
        })
    }
}

/// A transfer of the pool for block position (`id`, `signature`): only the same
/// signed form.
fn matching(
    id: &TxHash,
    signature: &Hash,
    lookup: &impl Fn(&TxHash) -> Option<VerifiedTransfer>,
) -> Option<VerifiedTransfer> {
    lookup(id).filter(|t| signature_digest(&t.signed().signature) == *signature)
}

/// The relay's state: own proposals and proposals waiting for transfers.
#[derive(Debug)]
pub struct Relay {
    validators: usize,
    own: VecDeque<Own>,
    pending: VecDeque<Pending>,
    /// Signed proposals received, by (sender, view, height), with the times each
    /// was assembled: views from the current one to the target or next one, inside
    /// the window, and a view has one primary, so at most window + 1 per view.
    seen: BTreeMap<(ReplicaId, View, SeqNum), (Digest, u8)>,
}

impl Relay {
    /// A relay among `validators` validators.
    pub fn new(validators: usize) -> Self {
        Relay {
            validators,
            own: VecDeque::new(),
            pending: VecDeque::new(),
            seen: BTreeMap::new(),
        }
    }

    /// Remembers a block this node proposes (its header and transfers in order), so
    /// its PRE-PREPARE goes out compact and wants for it can be answered.
    pub fn proposed(&mut self, header: BlockHeader, txs: Vec<SignedTransfer>, ids: Vec<TxHash>) {
        let digest = Digest(header.hash());
        self.own.retain(|o| o.digest != digest);
        if self.own.len() >= OWN_KEPT {
            self.own.pop_front();
        }
        let signatures = txs.iter().map(|t| signature_digest(&t.signature)).collect();
        self.own.push_back(Own {
            digest,
            header,
            txs,
            ids,
            signatures,
            answers: vec![0; self.validators],
        });
    }

    /// The compact frame for `message` if it is the PRE-PREPARE of an own proposal
    /// this relay remembers; `None` sends the message whole.
    pub fn compact_frame(&self, message: &Message) -> Option<Vec<u8>> {
        let Message::PrePrepare { pre_prepare, .. } = message else {
            return None;
        };
        let own = self
            .own
            .iter()
            .find(|o| o.digest == pre_prepare.body.digest)?;
        let compact = Compact {
            pre_prepare: pre_prepare.clone(),
            header: own.header.clone(),
            ids: own.ids.clone(),
            signatures: own.signatures.clone(),
        };
        codec::encode(&FrameRef::Proposal(&compact)).ok()
    }

    /// Forgets proposals of views before `view` (entered: their primary was
    /// replaced, and the new one re-proposes what was prepared in its NEW-VIEW).
    pub fn forget_views_before(&mut self, view: View) {
        self.pending.retain(|p| p.pre_prepare.body.view >= view);
    }

    /// Forgets proposals waiting at heights up to `height` (executed).
    pub fn forget_through(&mut self, height: u64) {
        self.pending
            .retain(|p| p.pre_prepare.body.seq > SeqNum(height));
    }

    /// Proposals waiting for transfers.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Whether a proposal of `view` itself waits for transfers (not one of a later
    /// view, which a future primary could leave waiting to force a view change).
    pub fn waiting_in(&self, view: View) -> bool {
        self.pending.iter().any(|p| p.pre_prepare.body.view == view)
    }
}

#[cfg(test)]
mod tests;
