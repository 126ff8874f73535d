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

/// The digest naming one signature of a transfer in a compact proposal.
pub fn signature_digest(signature: &Signature) -> Hash {
    Hash::of(signature.as_bytes())
}

/// One frame on a consensus link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A consensus message, as the replica sent it.
    Consensus(Message),
    /// A PRE-PREPARE with the block's header and transfer ids instead of its body.
    Proposal(Box<Compact>),
    /// A backup asks the primary for transfers of a proposal it lacks.
    Want(Want),
    /// The primary answers a [`Want`].
    Supply(Supply),
}

/// [`Frame`] by reference, for encoding without copying (the same bytes: variants in
/// the same order).
#[derive(Serialize)]
enum FrameRef<'a> {
    Consensus(&'a Message),
    Proposal(&'a Compact),
    Want(&'a Want),
    Supply(&'a Supply),
}

/// The canonical frame carrying consensus `message`.
pub fn consensus_frame(message: &Message) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&FrameRef::Consensus(message))
}

/// The canonical frame carrying `want`.
pub fn want_frame(want: &Want) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&FrameRef::Want(want))
}

/// The canonical frame carrying `supply`.
pub fn supply_frame(supply: &Supply) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&FrameRef::Supply(supply))
}

/// Decodes a frame from a validator, refusing a consensus frame over
/// `consensus_limit` bytes and a relay frame over [`RELAY_FRAME_MAX`], before
/// anything is allocated.
pub fn decode_frame(bytes: &[u8], consensus_limit: usize) -> Result<Frame, codec::CodecError> {
    // The codec writes a variant as a little-endian u32 first; 0 is `Consensus`.
    let consensus = bytes.get(..4).is_some_and(|tag| tag == [0, 0, 0, 0]);
    let limit = if consensus {
        consensus_limit
    } else {
        RELAY_FRAME_MAX.min(consensus_limit)
    };
    codec::decode(bytes, limit)
}

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

    /// A compact proposal from validator `from`, received `now` and judged
    /// against where this node `stands`. `lookup` finds a transfer this node
    /// verified (its mempool).
    pub fn receive(
        &mut self,
        from: ReplicaId,
        compact: Compact,
        (stands, now): (Standing, Instant),
        validators: &ValidatorSet,
        lookup: impl Fn(&TxHash) -> Option<VerifiedTransfer>,
    ) -> Result<Received, RelayError> {
        let pp = &compact.pre_prepare.body;
        if compact.pre_prepare.signer != from || validators.primary(pp.view) != from {
            return Err(RelayError::NotPrimary);
        }
        if pp.view < stands.view {
            return Ok(Received::Ignored("old-view"));
        }
        if pp.view > stands.view_max.max(stands.view.next()) {
            return Ok(Received::Ignored("too-far-in-the-future"));
        }
        if pp.seq.0 <= stands.tip || pp.seq.0 > stands.tip + 1 + stands.window {
            return Ok(Received::Ignored("compact-proposal-outside-window"));
        }
        // A copy of a proposal already taken (the digest binds its content) costs
        // no signature check: its want again while it waits, else a count.
        if let Some(waiting) = self
            .pending
            .iter()
            .find(|p| p.pre_prepare.body.digest == pp.digest && p.from == from)
        {
            return Ok(if waiting.asked.is_empty() {
                Received::Ignored("compact-proposal-duplicate")
            } else {
                Received::AlreadyWaiting(waiting.want())
            });
        }
        self.seen
            .retain(|&(_, view, seq), _| view >= stands.view && seq.0 > stands.tip);
        if let Some((digest, times)) = self.seen.get(&(from, pp.view, pp.seq))
            && *digest == pp.digest
            && *times >= ASSEMBLIES_PER_PROPOSAL
        {
            return Ok(Received::Ignored("compact-proposal-duplicate"));
        }
        if compact.pre_prepare.verify(validators).is_err() {
            return Err(RelayError::BadSignature);
        }
        let header = &compact.header;
        if header.height != pp.seq.0
            || header.parent != pp.parent.0
            || header.view != pp.view.0
            || header.proposer != from.0
            || header.hash() != pp.digest.0
        {
            return Err(RelayError::HeaderMismatch);
        }
        if compact.ids.len() > IDS_MAX {
            return Err(RelayError::IdsMismatch("more than a maximal body holds"));
        }
        if compact.ids.len() != header.tx_count as usize {
            return Err(RelayError::IdsMismatch("count differs from tx_count"));
        }
        if compact.signatures.len() != compact.ids.len() {
            return Err(RelayError::IdsMismatch("one signature digest per id"));
        }
        if crate::block::root_of_ids(&compact.ids) != header.tx_root {
            return Err(RelayError::IdsMismatch("root differs from tx_root"));
        }
        // One proposal per view and height from its primary, assembled a bounded
        // number of times: copies and conflicting proposals cost no encoding.
        match self.seen.get_mut(&(from, pp.view, pp.seq)) {
            Some((digest, _)) if *digest != pp.digest => return Err(RelayError::Equivocation),
            Some((_, times)) if *times >= ASSEMBLIES_PER_PROPOSAL => {
                return Ok(Received::Ignored("compact-proposal-duplicate"));
            }
            Some((_, times)) => *times += 1,
            None => {
                self.seen.insert((from, pp.view, pp.seq), (pp.digest, 1));
            }
        }
        // Another signature of the same transfer is not this block's transfer.
        let have: Vec<Option<VerifiedTransfer>> = compact
            .ids
            .iter()
            .zip(&compact.signatures)
            .map(|(id, signature)| matching(id, signature, &lookup))
            .collect();
        let missing = have.iter().filter(|t| t.is_none()).count();
        if missing == 0 {
            return Ok(Received::Complete(Box::new(Assembly {
                pre_prepare: compact.pre_prepare,
                header: compact.header,
                txs: have.into_iter().flatten().collect(),
            })));
        }
        // Only the sender's own oldest entries make room: one validator's frames
        // never push out another's proposal.
        while self.pending.iter().any(|p| p.from == from) {
            let (count, ids) = self
                .pending
                .iter()
                .filter(|p| p.from == from)
                .fold((0, 0), |(c, n), p| (c + 1, n + p.ids.len()));
            if count < PENDING_PER_SENDER && ids + compact.ids.len() <= WAITING_IDS_PER_SENDER {
                break;
            }
            if let Some(oldest) = self.pending.iter().position(|p| p.from == from) {
                self.pending.remove(oldest);
            }
        }
        self.pending.push_back(Pending {
            from,
            pre_prepare: compact.pre_prepare,
            header: compact.header,
            ids: compact.ids,
            signatures: compact.signatures,
            have,
            asked: Vec::new(),
            arrived: now,
            asked_at: None,
            wants_sent: 0,
            refilled_at: None,
        });
        Ok(Received::Missing(missing))
    }

    /// Fills waiting proposals from `lookup` `now`, after gossip was verified: the
    /// ones now whole leave the waiting list, with their senders. A proposal is
    /// refilled at every call before its want is sent (its [`WANT_DELAY`]) and once
    /// per [`WANT_RESEND`] after, so the lookups it costs stay bounded.
    pub fn refill(
        &mut self,
        now: Instant,
        lookup: impl Fn(&TxHash) -> Option<VerifiedTransfer>,
    ) -> Vec<(ReplicaId, Assembly)> {
        let mut whole = Vec::new();
        for pending in self.pending.iter_mut() {
            if !pending.asked.is_empty() {
                let since = pending.refilled_at.or(pending.asked_at);
                if since.is_some_and(|at| now.saturating_duration_since(at) < WANT_RESEND) {
                    continue;
                }
                pending.refilled_at = Some(now);
            }
            let Pending {
                ids,
                signatures,
                have,
                ..
            } = pending;
            for ((slot, id), signature) in have.iter_mut().zip(ids.iter()).zip(signatures.iter()) {
                if slot.is_none() {
                    *slot = matching(id, signature, &lookup);
                }
            }
        }
        let mut at = 0;
        while at < self.pending.len() {
            if self.pending[at].have.iter().all(Option::is_some)
                && let Some(pending) = self.pending.remove(at)
            {
                let from = pending.from;
                if let Some(assembly) = pending.into_assembly() {
                    whole.push((from, assembly));
                }
                continue;
            }
            at += 1;
        }
        whole
    }

    /// The wants due `now`: for each proposal that gossip has not filled within
    /// [`WANT_DELAY`], what it still lacks, to send to its primary; sent again
    /// after [`WANT_RESEND`] without a supply, [`ANSWERS_PER_PEER`] times in all.
    pub fn due(&mut self, now: Instant) -> Vec<(ReplicaId, Want)> {
        let mut wants = Vec::new();
        for pending in &mut self.pending {
            let due = match pending.asked_at {
                None => now.saturating_duration_since(pending.arrived) >= WANT_DELAY,
                Some(at) => {
                    let wait = WANT_RESEND
                        + WANT_RESEND_PER_TRANSFER.saturating_mul(pending.asked.len() as u32);
                    pending.wants_sent < ANSWERS_PER_PEER
                        && now.saturating_duration_since(at) >= wait
                }
            };
            if due {
                if pending.asked.is_empty() {
                    pending.asked = pending.missing();
                }
                pending.asked_at = Some(now);
                pending.wants_sent += 1;
                wants.push((pending.from, pending.want()));
            }
        }
        wants
    }

    /// Forgets proposals of views before `view` (entered: their primary was
    /// replaced, and the new one re-proposes what was prepared in its NEW-VIEW).
    pub fn forget_views_before(&mut self, view: View) {
        self.pending.retain(|p| p.pre_prepare.body.view >= view);
    }

    /// Validator `from` wants transfers of an own proposal: the answer, or `Ok(None)`
    /// when the proposal is no longer kept or `from` was answered enough.
    pub fn answer(&mut self, from: ReplicaId, want: &Want) -> Result<Option<Supply>, RelayError> {
        let Some(own) = self.own.iter_mut().find(|o| o.digest == want.digest) else {
            return Ok(None);
        };
        let ascending = want.indexes.windows(2).all(|w| w[0] < w[1]);
        if !ascending || want.indexes.iter().any(|&i| i as usize >= own.txs.len()) {
            return Err(RelayError::BadWant);
        }
        let Some(answers) = own.answers.get_mut(from.0 as usize) else {
            return Ok(None);
        };
        if *answers >= ANSWERS_PER_PEER {
            return Ok(None);
        }
        *answers += 1;
        Ok(Some(Supply {
            digest: want.digest,
            indexes: want.indexes.clone(),
            txs: want
                .indexes
                .iter()
                .map(|&i| own.txs[i as usize].clone())
                .collect(),
        }))
    }

    /// Checks a supply from `from` against what this node asked it for: `Ok(true)`
    /// if it answers a waiting proposal (verify its transfers, then
    /// [`Self::complete`]), `Ok(false)` if nothing waits for it (already completed,
    /// or a copy of a frame a failed link wrote again: not the sender's fault).
    pub fn supplied(&self, from: ReplicaId, supply: &Supply) -> Result<bool, RelayError> {
        let Some(pending) = self
            .pending
            .iter()
            .find(|p| p.pre_prepare.body.digest == supply.digest && p.from == from)
        else {
            return Ok(false);
        };
        if pending.asked.is_empty() || supply.indexes != pending.asked {
            return Ok(false);
        }
        if supply.txs.len() != pending.asked.len() {
            return Err(RelayError::BadSupply("number of transfers"));
        }
        for (tx, &i) in supply.txs.iter().zip(&pending.asked) {
            if tx.hash() != pending.ids[i as usize] {
                return Err(RelayError::BadSupply("a transfer with another id"));
            }
            if signature_digest(&tx.signature) != pending.signatures[i as usize] {
                return Err(RelayError::BadSupply("a transfer with another signature"));
            }
        }
        Ok(true)
    }

    /// Gives up proposal `digest` from `from`: its primary supplied transfers that
    /// do not verify, so the block is invalid and the view change replaces it.
    pub fn abandon(&mut self, from: ReplicaId, digest: &Digest) {
        self.pending
            .retain(|p| !(p.from == from && p.pre_prepare.body.digest == *digest));
    }

    /// The transfers `from` supplied for proposal `digest`, verified, in the order
    /// asked: the proposal leaves the waiting list, whole. `None` if `from`'s
    /// proposal is not waiting or the transfers are not the ones asked for.
    pub fn complete(
        &mut self,
        from: ReplicaId,
        digest: &Digest,
        supplied: Vec<VerifiedTransfer>,
    ) -> Option<Assembly> {
        let at = self
            .pending
            .iter()
            .position(|p| p.pre_prepare.body.digest == *digest && p.from == from)?;
        if self.pending[at].asked.is_empty() || self.pending[at].asked.len() != supplied.len() {
            return None;
        }
        let mut pending = self.pending.remove(at)?;
        for (tx, &i) in supplied.into_iter().zip(&pending.asked) {
            if tx.hash() != pending.ids[i as usize]
                || signature_digest(&tx.signed().signature) != pending.signatures[i as usize]
            {
                return None;
            }
            pending.have[i as usize] = Some(tx);
        }
        pending.into_assembly()
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
mod tests {
    use super::*;
    use crate::block::{Block, Position};
    use crate::ledger::{Transfer, verify_batch};
    use mosaic_consensus::messages::Body;
    use mosaic_crypto::{ChainId, Keypair, Signature};
    use std::collections::HashMap;

    fn chain() -> ChainId {
        ChainId::new("relay").unwrap()
    }

    fn key(index: u32) -> Keypair {
        Keypair::from_seed_for_tests(100 + u64::from(index))
    }

    fn validators() -> ValidatorSet {
        let keys = (0..4).map(|i| key(i).public()).collect();
        ValidatorSet::new(chain(), keys).unwrap()
    }

    /// This node: in view 1, block 4 executed.
    fn stands() -> Standing {
        Standing {
            view: View(1),
            view_max: View(1),
            tip: 4,
            window: 8,
        }
    }

    fn transfers(count: u64) -> Vec<VerifiedTransfer> {
        let k = Keypair::from_seed_for_tests(1);
        let signed = (0..count)
            .map(|n| {
                Transfer {
                    chain: chain(),
                    from: k.public(),
                    to: Keypair::from_seed_for_tests(2).public(),
                    amount: 1,
                    nonce: n,
                    valid_until: 1_000,
                }
                .sign(&k)
            })
            .collect();
        verify_batch(signed, &chain())
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    fn sign(index: u32, body: PrePrepare) -> Signed<PrePrepare> {
        let bytes = Signed::signing_bytes(&body).unwrap();
        let signature = key(index).sign(PrePrepare::DOMAIN, &chain(), &bytes);
        Signed {
            body,
            signer: ReplicaId(index),
            signature,
        }
    }

    /// A compact proposal at `height` by the primary of `view`, signed by it.
    fn proposal_at(txs: &[VerifiedTransfer], view: u64, height: u64) -> Compact {
        let parent = Hash::of(b"parent");
        let position = Position {
            chain: chain(),
            height,
            parent,
        };
        let proposer = validators().primary(View(view));
        let signed = txs.iter().map(|t| t.signed().clone()).collect();
        let (block, _) = Block::build(
            &position,
            view,
            proposer.0,
            crate::block::AfterParent {
                state_root: Hash::ZERO,
                outcome_root: Hash::ZERO,
            },
            signed,
            2,
            4,
        )
        .unwrap();
        let body = PrePrepare {
            view: View(view),
            seq: SeqNum(height),
            digest: Digest(block.header.hash()),
            parent: Digest(parent),
        };
        Compact {
            pre_prepare: sign(proposer.0, body),
            header: block.header,
            ids: txs.iter().map(VerifiedTransfer::hash).collect(),
            signatures: txs
                .iter()
                .map(|t| signature_digest(&t.signed().signature))
                .collect(),
        }
    }

    /// A compact proposal by the primary of view 1 (validator 1) at height 5.
    fn proposal(txs: &[VerifiedTransfer]) -> Compact {
        proposal_at(txs, 1, 5)
    }

    fn pool(txs: &[VerifiedTransfer]) -> HashMap<TxHash, VerifiedTransfer> {
        txs.iter().map(|t| (t.hash(), t.clone())).collect()
    }

    /// `compact` from `from`, received at `at` by a node that `stands()`, whose
    /// mempool is `pool`.
    fn offer(
        relay: &mut Relay,
        from: ReplicaId,
        compact: Compact,
        at: Instant,
        lookup: impl Fn(&TxHash) -> Option<VerifiedTransfer>,
    ) -> Result<Received, RelayError> {
        relay.receive(from, compact, (stands(), at), &validators(), lookup)
    }

    fn verified(supply: &Supply) -> Vec<VerifiedTransfer> {
        verify_batch(supply.txs.clone(), &chain())
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn frames_by_reference_encode_as_frames() {
        let compact = proposal(&transfers(3));
        let message = Message::FetchPayload {
            seq: SeqNum(3),
            digest: compact.pre_prepare.body.digest,
        };
        let frame = consensus_frame(&message).unwrap();
        assert_eq!(
            frame,
            codec::encode(&Frame::Consensus(message.clone())).unwrap()
        );
        assert_eq!(
            decode_frame(&frame, 1 << 20).unwrap(),
            Frame::Consensus(message)
        );
        let want = Want {
            digest: compact.pre_prepare.body.digest,
            indexes: vec![0, 2],
        };
        assert_eq!(
            decode_frame(&want_frame(&want).unwrap(), 1 << 20).unwrap(),
            Frame::Want(want)
        );
        let supply = Supply {
            digest: compact.pre_prepare.body.digest,
            indexes: vec![0],
            txs: vec![transfers(1)[0].signed().clone()],
        };
        assert_eq!(
            decode_frame(&supply_frame(&supply).unwrap(), 1 << 20).unwrap(),
            Frame::Supply(supply)
        );
    }

    #[test]
    fn relay_frames_have_their_own_bound() {
        // A want claiming more positions than a relay frame may hold is refused
        // before its vector is allocated, even under a larger consensus bound.
        let want = Want {
            digest: Digest(Hash::of(b"d")),
            indexes: (0..(RELAY_FRAME_MAX / 4 + 1) as u32).collect(),
        };
        let bytes = want_frame(&want).unwrap();
        assert!(decode_frame(&bytes, 64 * RELAY_FRAME_MAX).is_err());
        // The same size is fine for a consensus frame.
        let message = Message::Payload {
            seq: SeqNum(1),
            payload: vec![7; RELAY_FRAME_MAX + 1],
        };
        let bytes = consensus_frame(&message).unwrap();
        assert!(decode_frame(&bytes, 64 * RELAY_FRAME_MAX).is_ok());
    }

    #[test]
    fn own_proposals_go_out_compact_and_others_whole() {
        let txs = transfers(4);
        let compact = proposal(&txs);
        let mut relay = Relay::new(4);
        let message = Message::PrePrepare {
            pre_prepare: compact.pre_prepare.clone(),
            payload: vec![1, 2, 3],
        };
        assert_eq!(relay.compact_frame(&message), None, "not an own proposal");
        relay.proposed(
            compact.header.clone(),
            txs.iter().map(|t| t.signed().clone()).collect(),
            compact.ids.clone(),
        );
        let frame = relay.compact_frame(&message).unwrap();
        assert_eq!(
            decode_frame(&frame, 1 << 20).unwrap(),
            Frame::Proposal(Box::new(compact))
        );
    }

    #[test]
    fn a_backup_completes_from_its_pool_or_asks_for_exactly_what_it_lacks() {
        let txs = transfers(6);
        let compact = proposal(&txs);
        let v = validators();
        let mut relay = Relay::new(4);
        let all = pool(&txs);
        match offer(
            &mut relay,
            ReplicaId(1),
            compact.clone(),
            Instant::now(),
            |id| all.get(id).cloned(),
        ) {
            Ok(Received::Complete(a)) => assert_eq!(a.txs, txs),
            other => panic!("expected a complete proposal, got {other:?}"),
        }
        let some = pool(&[txs[0].clone(), txs[2].clone(), txs[3].clone()]);
        let arrived = Instant::now();
        match offer(&mut relay, ReplicaId(1), compact.clone(), arrived, |id| {
            some.get(id).cloned()
        }) {
            Ok(Received::Missing(3)) => {}
            other => panic!("expected three missing, got {other:?}"),
        }
        // Gossip gets its chance first: no want before the delay, and a copy of the
        // proposal meanwhile is only counted.
        assert!(relay.due(arrived + WANT_DELAY / 2).is_empty());
        assert!(matches!(
            relay.receive(
                ReplicaId(1),
                compact.clone(),
                (stands(), arrived),
                &v,
                |id| { some.get(id).cloned() }
            ),
            Ok(Received::Ignored("compact-proposal-duplicate"))
        ));
        let mut due = relay.due(arrived + WANT_DELAY);
        assert_eq!(due.len(), 1);
        let (to, want) = due.remove(0);
        assert_eq!(to, ReplicaId(1));
        assert_eq!(want.indexes, vec![1, 4, 5]);
        assert!(relay.due(arrived + WANT_DELAY * 2).is_empty(), "sent once");
        match offer(
            &mut relay,
            ReplicaId(1),
            compact.clone(),
            Instant::now(),
            |id| some.get(id).cloned(),
        ) {
            Ok(Received::AlreadyWaiting(again)) => assert_eq!(again, want, "asked again"),
            other => panic!("expected the want again, got {other:?}"),
        }
        // The primary answers from its own proposal.
        let mut primary = Relay::new(4);
        primary.proposed(
            compact.header.clone(),
            txs.iter().map(|t| t.signed().clone()).collect(),
            compact.ids.clone(),
        );
        let supply = primary.answer(ReplicaId(2), &want).unwrap().unwrap();
        // Wrong answers are refused: another order, another sender, too few.
        let mut reordered = supply.clone();
        reordered.txs.swap(0, 1);
        assert!(relay.supplied(ReplicaId(1), &reordered).is_err());
        assert_eq!(
            relay.supplied(ReplicaId(3), &supply),
            Ok(false),
            "not asked of it"
        );
        assert!(
            relay
                .complete(ReplicaId(3), &want.digest, verified(&supply))
                .is_none(),
            "another validator cannot complete the primary's proposal"
        );
        let mut short = supply.clone();
        short.txs.pop();
        assert!(relay.supplied(ReplicaId(1), &short).is_err());
        assert_eq!(relay.supplied(ReplicaId(1), &supply), Ok(true));
        let assembly = relay
            .complete(ReplicaId(1), &want.digest, verified(&supply))
            .unwrap();
        assert_eq!(assembly.txs, txs, "block order restored");
        assert_eq!(relay.waiting(), 0);
        assert_eq!(
            relay.supplied(ReplicaId(1), &supply),
            Ok(false),
            "a supply nobody waits for"
        );
    }

    #[test]
    fn another_signature_of_a_pooled_transfer_is_asked_for_not_used() {
        // The primary's block holds a version of transfer 1 whose signature differs
        // from the one in this backup's pool (its owner signed it twice).
        let txs = transfers(3);
        let mut compact = proposal(&txs);
        compact.signatures[1] = Hash::of(b"the primary's other signature");
        let all = pool(&txs);
        let mut relay = Relay::new(4);
        let arrived = Instant::now();
        match offer(&mut relay, ReplicaId(1), compact.clone(), arrived, |id| {
            all.get(id).cloned()
        }) {
            Ok(Received::Missing(1)) => {}
            other => panic!("expected the other version missing, got {other:?}"),
        }
        // Gossip of the pool's version does not fill it either.
        assert!(relay.refill(arrived, |id| all.get(id).cloned()).is_empty());
        let (_, want) = relay.due(arrived + WANT_DELAY).remove(0);
        assert_eq!(want.indexes, vec![1]);
        // The pool's version is not what was asked for.
        let supply = Supply {
            digest: want.digest,
            indexes: want.indexes.clone(),
            txs: vec![txs[1].signed().clone()],
        };
        assert_eq!(
            relay.supplied(ReplicaId(1), &supply),
            Err(RelayError::BadSupply("a transfer with another signature"))
        );
        assert!(
            relay
                .complete(ReplicaId(1), &want.digest, verified(&supply))
                .is_none()
        );
    }

    #[test]
    fn proposals_that_do_not_match_their_pre_prepare_are_refused() {
        let txs = transfers(3);
        let compact = proposal(&txs);
        let all = pool(&txs);
        let mut relay = Relay::new(4);
        let mut cases: Vec<(RelayError, ReplicaId, Compact)> =
            vec![(RelayError::NotPrimary, ReplicaId(2), compact.clone())];
        let mut c = compact.clone();
        c.pre_prepare.signer = ReplicaId(2);
        cases.push((RelayError::NotPrimary, ReplicaId(1), c));
        let mut c = compact.clone();
        c.pre_prepare.body.digest = Digest(Hash::of(b"forged"));
        cases.push((RelayError::BadSignature, ReplicaId(1), c));
        let mut c = compact.clone();
        c.header.state_root = Hash::of(b"other");
        cases.push((RelayError::HeaderMismatch, ReplicaId(1), c));
        // Another view's header under this view's signed digest.
        let mut c = compact.clone();
        let other = proposal_at(&txs, 2, 5);
        c.header = other.header;
        cases.push((RelayError::HeaderMismatch, ReplicaId(1), c));
        let mut c = compact.clone();
        c.ids.pop();
        cases.push((
            RelayError::IdsMismatch("count differs from tx_count"),
            ReplicaId(1),
            c,
        ));
        let mut c = compact.clone();
        c.signatures.pop();
        cases.push((
            RelayError::IdsMismatch("one signature digest per id"),
            ReplicaId(1),
            c,
        ));
        let mut c = compact.clone();
        c.ids.swap(0, 1);
        cases.push((
            RelayError::IdsMismatch("root differs from tx_root"),
            ReplicaId(1),
            c,
        ));
        for (expected, from, c) in cases {
            assert_eq!(
                offer(&mut relay, from, c, Instant::now(), |id| all
                    .get(id)
                    .cloned())
                .err(),
                Some(expected.clone()),
                "{expected:?} went unnoticed"
            );
        }
        assert_eq!(relay.waiting(), 0);
    }

    #[test]
    fn a_proposal_of_too_many_ids_is_refused_before_hashing_them() {
        let v = validators();
        let mut c = proposal(&transfers(1));
        c.ids = vec![Hash::ZERO; IDS_MAX + 1];
        c.signatures = c.ids.clone();
        c.header.tx_count = c.ids.len() as u32;
        let body = PrePrepare {
            digest: Digest(c.header.hash()),
            ..c.pre_prepare.body
        };
        c.pre_prepare = sign(1, body);
        assert_eq!(
            Relay::new(4)
                .receive(ReplicaId(1), c, (stands(), Instant::now()), &v, |_| None)
                .err(),
            Some(RelayError::IdsMismatch("more than a maximal body holds"))
        );
    }

    #[test]
    fn proposals_out_of_view_or_window_are_dropped_uncharged_and_not_kept() {
        let txs = transfers(2);
        let mut relay = Relay::new(4);
        let none = |_: &TxHash| None;
        let cases = [
            (proposal_at(&txs, 0, 5), "old-view"),
            (proposal_at(&txs, 3, 5), "too-far-in-the-future"),
            (proposal_at(&txs, 1, 4), "compact-proposal-outside-window"),
            (proposal_at(&txs, 1, 14), "compact-proposal-outside-window"),
        ];
        for (c, reason) in cases {
            let from = c.pre_prepare.signer;
            match offer(&mut relay, from, c, Instant::now(), none) {
                Ok(Received::Ignored(r)) => assert_eq!(r, reason),
                other => panic!("expected {reason}, got {other:?}"),
            }
        }
        assert_eq!(relay.waiting(), 0);
        // The next view's primary and the window's last height are taken.
        for c in [proposal_at(&txs, 2, 5), proposal_at(&txs, 1, 13)] {
            let from = c.pre_prepare.signer;
            assert!(matches!(
                offer(&mut relay, from, c, Instant::now(), none),
                Ok(Received::Missing(2))
            ));
        }
        assert_eq!(relay.waiting(), 2);
    }

    #[test]
    fn wants_are_checked_and_answers_bounded() {
        let txs = transfers(3);
        let compact = proposal(&txs);
        let mut primary = Relay::new(4);
        primary.proposed(
            compact.header.clone(),
            txs.iter().map(|t| t.signed().clone()).collect(),
            compact.ids.clone(),
        );
        let digest = compact.pre_prepare.body.digest;
        for indexes in [vec![3], vec![1, 0], vec![1, 1]] {
            let want = Want { digest, indexes };
            assert_eq!(
                primary.answer(ReplicaId(2), &want),
                Err(RelayError::BadWant)
            );
        }
        let want = Want {
            digest,
            indexes: vec![0, 2],
        };
        for _ in 0..ANSWERS_PER_PEER {
            assert!(primary.answer(ReplicaId(2), &want).unwrap().is_some());
        }
        assert_eq!(
            primary.answer(ReplicaId(2), &want),
            Ok(None),
            "answered enough"
        );
        assert!(
            primary.answer(ReplicaId(3), &want).unwrap().is_some(),
            "another backup keeps its answers"
        );
        assert_eq!(primary.answer(ReplicaId(9), &want), Ok(None));
        let unknown = Want {
            digest: Digest(Hash::of(b"unknown")),
            indexes: vec![0],
        };
        assert_eq!(primary.answer(ReplicaId(2), &unknown), Ok(None));
    }

    #[test]
    fn waiting_proposals_are_bounded_per_sender_and_forgotten_once_executed() {
        let mut relay = Relay::new(4);
        let none = |_: &TxHash| None;
        // The primary of view 1 has one proposal waiting.
        let honest = proposal(&transfers(1));
        let honest_digest = honest.pre_prepare.body.digest;
        assert!(matches!(
            offer(&mut relay, ReplicaId(1), honest, Instant::now(), none),
            Ok(Received::Missing(_))
        ));
        // The next view's primary floods the window: only its own entries make room.
        for seq in 5..=13 {
            let c = proposal_at(&transfers(seq), 2, seq);
            assert!(matches!(
                offer(&mut relay, ReplicaId(2), c, Instant::now(), none),
                Ok(Received::Missing(_))
            ));
            assert!(relay.waiting() <= PENDING_PER_SENDER + 1);
        }
        assert_eq!(relay.waiting(), PENDING_PER_SENDER + 1);
        assert!(
            relay
                .pending
                .iter()
                .any(|p| p.from == ReplicaId(1) && p.pre_prepare.body.digest == honest_digest),
            "the flood pushed out the primary's proposal"
        );
        relay.abandon(ReplicaId(1), &honest_digest);
        assert_eq!(relay.waiting(), PENDING_PER_SENDER);
        relay.forget_through(4);
        assert_eq!(relay.waiting(), PENDING_PER_SENDER);
        relay.forget_through(8);
        assert_eq!(relay.waiting(), 5, "heights 9 to 13 wait");
        relay.forget_through(13);
        assert_eq!(relay.waiting(), 0);
    }

    #[test]
    fn copies_are_assembled_a_bounded_number_of_times_and_conflicts_charged() {
        let v = validators();
        let txs = transfers(2);
        let all = pool(&txs);
        let mut relay = Relay::new(4);
        let compact = proposal(&txs);
        for _ in 0..ASSEMBLIES_PER_PROPOSAL {
            assert!(matches!(
                offer(
                    &mut relay,
                    ReplicaId(1),
                    compact.clone(),
                    Instant::now(),
                    |id| all.get(id).cloned()
                ),
                Ok(Received::Complete(_))
            ));
        }
        match offer(
            &mut relay,
            ReplicaId(1),
            compact.clone(),
            Instant::now(),
            |id| all.get(id).cloned(),
        ) {
            Ok(Received::Ignored(reason)) => assert_eq!(reason, "compact-proposal-duplicate"),
            other => panic!("a third copy was taken: {other:?}"),
        }
        // Copies past that cost no signature check (the digest binds their content).
        let mut unchecked = compact.clone();
        unchecked.pre_prepare.signature = Signature::from_bytes([0; 64]);
        assert!(matches!(
            offer(&mut relay, ReplicaId(1), unchecked, Instant::now(), |id| {
                all.get(id).cloned()
            }),
            Ok(Received::Ignored("compact-proposal-duplicate"))
        ));
        // Another block for the same view and height, signed by the same primary.
        let other = proposal(&txs[..1]);
        assert_eq!(
            offer(
                &mut relay,
                ReplicaId(1),
                other.clone(),
                Instant::now(),
                |id| all.get(id).cloned()
            )
            .err(),
            Some(RelayError::Equivocation)
        );
        // Once the height is executed, what was seen there is forgotten.
        let later = Standing { tip: 5, ..stands() };
        let next = proposal_at(&txs, 1, 6);
        assert!(matches!(
            relay.receive(ReplicaId(1), next, (later, Instant::now()), &v, |id| all
                .get(id)
                .cloned()),
            Ok(Received::Complete(_))
        ));
        assert_eq!(relay.seen.len(), 1);
    }

    #[test]
    fn gossip_that_arrives_in_time_completes_a_proposal_without_a_want() {
        let txs = transfers(4);
        let compact = proposal(&txs);
        let mut relay = Relay::new(4);
        let early = pool(&txs[..1]);
        let arrived = Instant::now();
        assert!(matches!(
            offer(&mut relay, ReplicaId(1), compact, arrived, |id| early
                .get(id)
                .cloned()),
            Ok(Received::Missing(3))
        ));
        assert!(
            relay
                .refill(arrived, |id| pool(&txs[..3]).get(id).cloned())
                .is_empty()
        );
        assert_eq!(relay.waiting(), 1);
        let all = pool(&txs);
        let whole = relay.refill(arrived, |id| all.get(id).cloned());
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].0, ReplicaId(1));
        assert_eq!(whole[0].1.txs, txs, "block order");
        assert_eq!(relay.waiting(), 0);
        assert!(
            relay.due(arrived + WANT_DELAY).is_empty(),
            "nothing left to ask"
        );
    }

    /// A proposal of `count` made-up transfer ids by the primary of `view`.
    fn made_up(view: u64, height: u64, count: usize) -> Compact {
        let mut c = proposal_at(&transfers(1), view, height);
        c.ids = (0..count as u64)
            .map(|i| Hash::of(&i.to_le_bytes()))
            .collect();
        c.signatures = c.ids.clone();
        c.header.tx_count = count as u32;
        c.header.tx_root = crate::block::root_of_ids(&c.ids);
        let body = PrePrepare {
            digest: Digest(c.header.hash()),
            ..c.pre_prepare.body
        };
        c.pre_prepare = sign(c.pre_prepare.signer.0, body);
        c
    }

    #[test]
    fn a_want_is_sent_again_without_a_supply_and_an_answer_to_an_older_one_is_unwanted() {
        let mut relay = Relay::new(4);
        let c = made_up(1, 5, 3);
        let t = Instant::now();
        assert!(matches!(
            offer(&mut relay, ReplicaId(1), c.clone(), t, |_| None),
            Ok(Received::Missing(3))
        ));
        let first = relay.due(t + WANT_DELAY);
        assert_eq!(first.len(), 1);
        // The wait grows with the want: three transfers here.
        let resend = WANT_RESEND + WANT_RESEND_PER_TRANSFER * 3;
        assert!(relay.due(t + WANT_DELAY + WANT_RESEND).is_empty());
        let again = relay.due(t + WANT_DELAY + resend);
        assert_eq!(again, first, "the same want again");
        for later in 2..6 {
            assert!(
                relay.due(t + WANT_DELAY + resend * later).is_empty(),
                "sent {ANSWERS_PER_PEER} times at most"
            );
        }
        // An answer naming other positions answers another want: not charged.
        let older = Supply {
            digest: c.pre_prepare.body.digest,
            indexes: vec![0, 1],
            txs: Vec::new(),
        };
        assert_eq!(relay.supplied(ReplicaId(1), &older), Ok(false));
        assert_eq!(relay.waiting(), 1);
        // A view change forgets what the replaced primary left waiting.
        assert!(relay.waiting_in(View(1)));
        assert!(!relay.waiting_in(View(2)));
        relay.forget_views_before(View(1));
        assert_eq!(relay.waiting(), 1);
        relay.forget_views_before(View(2));
        assert_eq!(relay.waiting(), 0);
    }

    #[test]
    fn a_proposal_that_asked_is_still_completed_by_gossip_at_the_resend_period() {
        let txs = transfers(3);
        let compact = proposal(&txs);
        let mut relay = Relay::new(4);
        let t = Instant::now();
        assert!(matches!(
            offer(&mut relay, ReplicaId(1), compact, t, |_| None),
            Ok(Received::Missing(3))
        ));
        let asked = t + WANT_DELAY;
        assert_eq!(relay.due(asked).len(), 1);
        // The supplies are lost; gossip brings the transfers.
        let all = pool(&txs);
        assert!(
            relay
                .refill(asked + WANT_RESEND / 2, |id| all.get(id).cloned())
                .is_empty(),
            "not looked up again before the resend period"
        );
        let whole = relay.refill(asked + WANT_RESEND, |id| all.get(id).cloned());
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].1.txs, txs);
        assert_eq!(relay.waiting(), 0);
    }

    #[test]
    fn one_sender_waits_for_two_maximal_blocks_of_ids_at_most() {
        let mut relay = Relay::new(4);
        let t = Instant::now();
        let half = IDS_MAX;
        let first = made_up(1, 5, half);
        let first_digest = first.pre_prepare.body.digest;
        assert!(matches!(
            offer(&mut relay, ReplicaId(1), first, t, |_| None),
            Ok(Received::Missing(_))
        ));
        let other = made_up(2, 5, 10);
        assert!(matches!(
            offer(&mut relay, ReplicaId(2), other, t, |_| None),
            Ok(Received::Missing(10))
        ));
        let second = made_up(1, 6, half);
        assert!(matches!(
            offer(&mut relay, ReplicaId(1), second, t, |_| None),
            Ok(Received::Missing(_))
        ));
        assert_eq!(relay.waiting(), 3, "a proposal and the next one wait");
        let third = made_up(1, 7, half);
        assert!(matches!(
            offer(&mut relay, ReplicaId(1), third, t, |_| None),
            Ok(Received::Missing(_))
        ));
        assert_eq!(relay.waiting(), 3, "the sender's oldest proposal made room");
        assert!(
            relay
                .pending
                .iter()
                .all(|p| p.pre_prepare.body.digest != first_digest)
        );
        assert!(relay.pending.iter().any(|p| p.from == ReplicaId(2)));
    }

    #[test]
    fn a_view_change_in_progress_takes_the_target_views_proposals() {
        let v = validators();
        let mut relay = Relay::new(4);
        let moving = Standing {
            view_max: View(3),
            ..stands()
        };
        let c = made_up(3, 5, 2);
        assert!(matches!(
            relay.receive(ReplicaId(3), c, (moving, Instant::now()), &v, |_| None),
            Ok(Received::Missing(2))
        ));
    }

    proptest::proptest! {
        /// Whatever a validator's bytes turn into, the relay answers without
        /// panicking; what it completes, from the pool or from the primary's genuine
        /// supply, is the primary's block: its ids hash to the header's root and its
        /// signatures are the primary's.
        #[test]
        fn mangled_relay_frames_are_refused_or_yield_the_primary_block(
            flips in proptest::collection::vec((0usize..4096, 0u8..=255), 1..6),
            pooled in proptest::collection::vec(proptest::bool::ANY, 4),
        ) {
            let txs = transfers(4);
            let compact = proposal(&txs);
            let pool: HashMap<TxHash, VerifiedTransfer> = txs
                .iter()
                .zip(&pooled)
                .filter(|(_, p)| **p)
                .map(|(t, _)| (t.hash(), t.clone()))
                .collect();
            let mut primary = Relay::new(4);
            primary.proposed(
                compact.header.clone(),
                txs.iter().map(|t| t.signed().clone()).collect(),
                compact.ids.clone(),
            );
            let message = Message::PrePrepare {
                pre_prepare: compact.pre_prepare.clone(),
                payload: Vec::new(),
            };
            let mut frame = primary.compact_frame(&message).unwrap();
            for (at, byte) in flips {
                let at = at % frame.len();
                frame[at] ^= byte;
            }
            let mut relay = Relay::new(4);
            let assembly = match decode_frame(&frame, 1 << 20) {
                Ok(Frame::Proposal(c)) => {
                    match offer(&mut relay, ReplicaId(1), *c, Instant::now(), |id| pool.get(id).cloned()) {
                        Ok(Received::Complete(a)) => Some(*a),
                        Ok(Received::Missing(_)) => {
                            let due = relay.due(Instant::now() + WANT_DELAY);
                            proptest::prop_assert_eq!(due.len(), 1);
                            let want = due[0].1.clone();
                            match primary.answer(ReplicaId(2), &want) {
                                Ok(Some(supply)) => match relay.supplied(ReplicaId(1), &supply) {
                                    Ok(true) => relay.complete(ReplicaId(1), &want.digest, verified(&supply)),
                                    _ => None,
                                },
                                _ => None,
                            }
                        }
                        _ => None,
                    }
                }
                Ok(Frame::Want(w)) => {
                    let _ = primary.answer(ReplicaId(2), &w);
                    None
                }
                Ok(Frame::Supply(s)) => {
                    let _ = relay.supplied(ReplicaId(1), &s);
                    None
                }
                Ok(Frame::Consensus(_)) | Err(_) => None,
            };
            if let Some(a) = assembly {
                proptest::prop_assert_eq!(a.header.hash(), compact.header.hash());
                proptest::prop_assert_eq!(a.pre_prepare.body, compact.pre_prepare.body);
                let ids: Vec<TxHash> = a.txs.iter().map(VerifiedTransfer::hash).collect();
                proptest::prop_assert_eq!(&ids, &compact.ids);
                proptest::prop_assert_eq!(&a.txs, &txs);
            }
        }
    }
}
