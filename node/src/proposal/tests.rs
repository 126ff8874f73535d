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
