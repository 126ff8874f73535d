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
//! Everything here is bounded: a few own proposals kept to answer wants, a few
//! answers per validator and proposal, a few proposals waiting for transfers, and
//! each waiting proposal belongs to the view's primary that sent it.

use std::collections::VecDeque;

use mosaic_consensus::{Digest, Message, PrePrepare, ReplicaId, SeqNum, Signed, ValidatorSet};
use mosaic_crypto::codec;
use serde::{Deserialize, Serialize};

use crate::block::BlockHeader;
use crate::ledger::{SignedTransfer, TxHash, VerifiedTransfer};

/// Own proposals kept to answer wants: the one in flight and a few around view
/// changes.
const OWN_KEPT: usize = 8;
/// Proposals waiting for transfers from their primary, at most.
const PENDING_MAX: usize = 8;
/// Answers to one validator's wants for one proposal: a link that fails mid-batch
/// makes an honest backup ask again.
const ANSWERS_PER_PEER: u8 = 3;
/// The smallest signed transfer in the canonical codec (a one-byte chain id).
const SIGNED_LEN_MIN: usize = 8 + 1 + 32 + 32 + 8 + 8 + 8 + 64;
/// Ids in one compact proposal, at most: a maximal body of the smallest transfers.
/// Checked before the ids are hashed into a root.
const IDS_MAX: usize = crate::block::BODY_BYTES_MAX / SIGNED_LEN_MIN;

/// One frame on a consensus link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A consensus message, as the replica sent it.
    Consensus(Message),
    /// A PRE-PREPARE with the block's header and transfer ids instead of its body.
    Proposal(Compact),
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

/// Decodes a frame from a validator, refusing more than `limit` bytes.
pub fn decode_frame(bytes: &[u8], limit: usize) -> Result<Frame, codec::CodecError> {
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
    /// The header does not hash to the signed digest, or names another height or parent.
    #[error("compact proposal's header does not match its pre-prepare")]
    HeaderMismatch,
    /// The ids do not match the header's count or transaction root.
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
    /// The reason label of the refusal in metrics (a proposal not from the primary
    /// is counted as the full PRE-PREPARE would be).
    pub fn reason(&self) -> &'static str {
        match self {
            RelayError::NotPrimary => "pre-prepare-not-from-primary",
            RelayError::HeaderMismatch => "compact-proposal-header-mismatch",
            RelayError::IdsMismatch(_) => "compact-proposal-ids-mismatch",
            RelayError::BadWant => "want-invalid",
            RelayError::BadSupply(_) => "supply-invalid",
        }
    }
}

/// What receiving a compact proposal led to.
#[derive(Debug)]
pub enum Received {
    /// Every transfer was in the mempool: the block, ready to assemble.
    Complete(Box<Assembly>),
    /// Some are missing: send this want to the primary.
    Missing(Want),
    /// A copy of a proposal already waiting for transfers: the want again (the
    /// first one may have been lost with a link).
    AlreadyWaiting(Want),
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
    have: Vec<Option<VerifiedTransfer>>,
    /// The positions asked for, ascending.
    asked: Vec<u32>,
}

/// The relay's state: own proposals and proposals waiting for transfers.
#[derive(Debug)]
pub struct Relay {
    validators: usize,
    own: VecDeque<Own>,
    pending: VecDeque<Pending>,
}

impl Relay {
    /// A relay among `validators` validators.
    pub fn new(validators: usize) -> Self {
        Relay {
            validators,
            own: VecDeque::new(),
            pending: VecDeque::new(),
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
        self.own.push_back(Own {
            digest,
            header,
            txs,
            ids,
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
        };
        codec::encode(&FrameRef::Proposal(&compact)).ok()
    }

    /// A compact proposal from validator `from`. `lookup` finds a transfer this node
    /// verified (its mempool).
    pub fn receive(
        &mut self,
        from: ReplicaId,
        compact: Compact,
        validators: &ValidatorSet,
        lookup: impl Fn(&TxHash) -> Option<VerifiedTransfer>,
    ) -> Result<Received, RelayError> {
        let pp = &compact.pre_prepare.body;
        if compact.pre_prepare.signer != from || validators.primary(pp.view) != from {
            return Err(RelayError::NotPrimary);
        }
        let header = &compact.header;
        if header.height != pp.seq.0 || header.parent != pp.parent.0 || header.hash() != pp.digest.0
        {
            return Err(RelayError::HeaderMismatch);
        }
        if compact.ids.len() > IDS_MAX {
            return Err(RelayError::IdsMismatch("more than a maximal body holds"));
        }
        if compact.ids.len() != header.tx_count as usize {
            return Err(RelayError::IdsMismatch("count differs from tx_count"));
        }
        if crate::block::root_of_ids(&compact.ids) != header.tx_root {
            return Err(RelayError::IdsMismatch("root differs from tx_root"));
        }
        if let Some(waiting) = self
            .pending
            .iter()
            .find(|p| p.pre_prepare.body.digest == pp.digest && p.from == from)
        {
            return Ok(Received::AlreadyWaiting(Want {
                digest: pp.digest,
                indexes: waiting.asked.clone(),
            }));
        }
        let have: Vec<Option<VerifiedTransfer>> = compact.ids.iter().map(&lookup).collect();
        let asked: Vec<u32> = have
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_none())
            .map(|(i, _)| i as u32)
            .collect();
        if asked.is_empty() {
            return Ok(Received::Complete(Box::new(Assembly {
                pre_prepare: compact.pre_prepare,
                header: compact.header,
                txs: have.into_iter().flatten().collect(),
            })));
        }
        let want = Want {
            digest: pp.digest,
            indexes: asked.clone(),
        };
        if self.pending.len() >= PENDING_MAX {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending {
            from,
            pre_prepare: compact.pre_prepare,
            header: compact.header,
            ids: compact.ids,
            have,
            asked,
        });
        Ok(Received::Missing(want))
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
        if supply.txs.len() != pending.asked.len() {
            return Err(RelayError::BadSupply("number of transfers"));
        }
        for (tx, &i) in supply.txs.iter().zip(&pending.asked) {
            if tx.hash() != pending.ids[i as usize] {
                return Err(RelayError::BadSupply("a transfer with another id"));
            }
        }
        Ok(true)
    }

    /// The supplied transfers of proposal `digest`, verified, in the order asked:
    /// the proposal leaves the waiting list, whole. `None` if it is not waiting or
    /// the count is wrong.
    pub fn complete(
        &mut self,
        digest: &Digest,
        supplied: Vec<VerifiedTransfer>,
    ) -> Option<Assembly> {
        let at = self
            .pending
            .iter()
            .position(|p| p.pre_prepare.body.digest == *digest)?;
        if self.pending[at].asked.len() != supplied.len() {
            return None;
        }
        let mut pending = self.pending.remove(at)?;
        for (tx, &i) in supplied.into_iter().zip(&pending.asked) {
            if tx.hash() != pending.ids[i as usize] {
                return None;
            }
            pending.have[i as usize] = Some(tx);
        }
        let txs: Vec<VerifiedTransfer> = pending.have.into_iter().flatten().collect();
        (txs.len() == pending.ids.len()).then_some(Assembly {
            pre_prepare: pending.pre_prepare,
            header: pending.header,
            txs,
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, Position};
    use crate::ledger::{Transfer, verify_batch};
    use mosaic_consensus::View;
    use mosaic_crypto::{ChainId, Hash, Keypair, Signature};
    use std::collections::HashMap;

    fn chain() -> ChainId {
        ChainId::new("relay").unwrap()
    }

    fn validators() -> ValidatorSet {
        let keys = (0..4)
            .map(|i| Keypair::from_seed_for_tests(100 + i).public())
            .collect();
        ValidatorSet::new(chain(), keys).unwrap()
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

    /// A compact proposal by the primary of view 1 (validator 1) at height 5.
    fn proposal(txs: &[VerifiedTransfer]) -> Compact {
        let parent = Hash::of(b"parent");
        let position = Position {
            chain: chain(),
            height: 5,
            parent,
        };
        let signed = txs.iter().map(|t| t.signed().clone()).collect();
        let (block, _) = Block::build(&position, 1, 1, Hash::ZERO, signed, 2, 4).unwrap();
        Compact {
            pre_prepare: Signed {
                body: PrePrepare {
                    view: View(1),
                    seq: SeqNum(5),
                    digest: Digest(block.header.hash()),
                    parent: Digest(parent),
                },
                signer: ReplicaId(1),
                signature: Signature::from_bytes([0; 64]),
            },
            header: block.header,
            ids: txs.iter().map(VerifiedTransfer::hash).collect(),
        }
    }

    fn pool(txs: &[VerifiedTransfer]) -> HashMap<TxHash, VerifiedTransfer> {
        txs.iter().map(|t| (t.hash(), t.clone())).collect()
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
            txs: vec![transfers(1)[0].signed().clone()],
        };
        assert_eq!(
            decode_frame(&supply_frame(&supply).unwrap(), 1 << 20).unwrap(),
            Frame::Supply(supply)
        );
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
            Frame::Proposal(compact)
        );
    }

    #[test]
    fn a_backup_completes_from_its_pool_or_asks_for_exactly_what_it_lacks() {
        let txs = transfers(6);
        let compact = proposal(&txs);
        let v = validators();
        let mut relay = Relay::new(4);
        let all = pool(&txs);
        match relay.receive(ReplicaId(1), compact.clone(), &v, |id| all.get(id).cloned()) {
            Ok(Received::Complete(a)) => assert_eq!(a.txs, txs),
            other => panic!("expected a complete proposal, got {other:?}"),
        }
        let some = pool(&[txs[0].clone(), txs[2].clone(), txs[3].clone()]);
        let want = match relay.receive(ReplicaId(1), compact.clone(), &v, |id| {
            some.get(id).cloned()
        }) {
            Ok(Received::Missing(want)) => want,
            other => panic!("expected a want, got {other:?}"),
        };
        assert_eq!(want.indexes, vec![1, 4, 5]);
        match relay.receive(ReplicaId(1), compact.clone(), &v, |id| {
            some.get(id).cloned()
        }) {
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
        let mut short = supply.clone();
        short.txs.pop();
        assert!(relay.supplied(ReplicaId(1), &short).is_err());
        assert_eq!(relay.supplied(ReplicaId(1), &supply), Ok(true));
        let verified = verify_batch(supply.txs.clone(), &chain())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let assembly = relay.complete(&want.digest, verified).unwrap();
        assert_eq!(assembly.txs, txs, "block order restored");
        assert_eq!(relay.waiting(), 0);
        assert_eq!(
            relay.supplied(ReplicaId(1), &supply),
            Ok(false),
            "a supply nobody waits for"
        );
    }

    #[test]
    fn proposals_that_do_not_match_their_pre_prepare_are_refused() {
        let txs = transfers(3);
        let compact = proposal(&txs);
        let v = validators();
        let all = pool(&txs);
        let mut relay = Relay::new(4);
        let mut cases: Vec<(&str, ReplicaId, Compact)> =
            vec![("not the primary", ReplicaId(2), compact.clone())];
        let mut c = compact.clone();
        c.pre_prepare.signer = ReplicaId(2);
        cases.push(("signed by another", ReplicaId(1), c));
        let mut c = compact.clone();
        c.header.state_root = Hash::of(b"other");
        cases.push(("header not the digest", ReplicaId(1), c));
        let mut c = compact.clone();
        c.ids.pop();
        cases.push(("an id missing", ReplicaId(1), c));
        let mut c = compact.clone();
        c.ids.swap(0, 1);
        cases.push(("ids out of order", ReplicaId(1), c));
        let mut c = compact.clone();
        c.ids = vec![Hash::ZERO; IDS_MAX + 1];
        c.header.tx_count = c.ids.len() as u32;
        c.pre_prepare.body.digest = Digest(c.header.hash());
        assert_eq!(
            relay
                .receive(ReplicaId(1), c, &v, |id| all.get(id).cloned())
                .err(),
            Some(RelayError::IdsMismatch("more than a maximal body holds"))
        );
        for (what, from, c) in cases {
            assert!(
                relay
                    .receive(from, c, &v, |id| all.get(id).cloned())
                    .is_err(),
                "{what} went unnoticed"
            );
        }
        assert_eq!(relay.waiting(), 0);
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
    fn waiting_proposals_are_bounded_and_forgotten_once_executed() {
        let v = validators();
        let mut relay = Relay::new(4);
        let none = |_: &TxHash| None;
        for n in 1..=(PENDING_MAX as u64 + 4) {
            let compact = proposal(&transfers(n));
            assert!(matches!(
                relay.receive(ReplicaId(1), compact, &v, none),
                Ok(Received::Missing(_))
            ));
            assert!(relay.waiting() <= PENDING_MAX);
        }
        assert_eq!(relay.waiting(), PENDING_MAX);
        relay.forget_through(4);
        assert_eq!(relay.waiting(), PENDING_MAX);
        relay.forget_through(5);
        assert_eq!(relay.waiting(), 0);
    }

    proptest::proptest! {
        /// Whatever a validator's bytes turn into, the relay answers without
        /// panicking, and what it completes matches the header's transaction root.
        #[test]
        fn mangled_compact_frames_are_refused_or_consistent(
            flips in proptest::collection::vec((0usize..4096, 0u8..=255), 1..6),
        ) {
            let txs = transfers(4);
            let compact = proposal(&txs);
            let v = validators();
            let all = pool(&txs);
            let mut relay = Relay::new(4);
            relay.proposed(
                compact.header.clone(),
                txs.iter().map(|t| t.signed().clone()).collect(),
                compact.ids.clone(),
            );
            let message = Message::PrePrepare {
                pre_prepare: compact.pre_prepare.clone(),
                payload: Vec::new(),
            };
            let mut frame = relay.compact_frame(&message).unwrap();
            for (at, byte) in flips {
                let at = at % frame.len();
                frame[at] ^= byte;
            }
            match decode_frame(&frame, 1 << 20) {
                Ok(Frame::Proposal(c)) => {
                    let root = c.header.tx_root;
                    if let Ok(Received::Complete(a)) =
                        relay.receive(ReplicaId(1), c, &v, |id| all.get(id).cloned())
                    {
                        let ids: Vec<TxHash> = a.txs.iter().map(VerifiedTransfer::hash).collect();
                        proptest::prop_assert_eq!(crate::block::root_of_ids(&ids), root);
                    }
                }
                Ok(Frame::Want(w)) => {
                    let _ = relay.answer(ReplicaId(2), &w);
                }
                Ok(Frame::Supply(s)) => {
                    let _ = relay.supplied(ReplicaId(1), &s);
                }
                Ok(Frame::Consensus(_)) | Err(_) => {}
            }
        }
    }
}
