use super::*;
use crate::ledger::Transfer;
use mosaic_crypto::Keypair;

/// The last valid height of the test transactions.
const VALID_UNTIL: u64 = 100;

fn chain() -> ChainId {
    ChainId::new("pool").unwrap()
}

fn key(i: u64) -> Keypair {
    Keypair::from_seed_for_tests(i)
}

fn tx(from: u64, nonce: u64) -> SignedTransfer {
    Transfer {
        chain: chain(),
        from: key(from).public(),
        to: key(99).public(),
        amount: 1,
        nonce,
        valid_until: VALID_UNTIL,
    }
    .sign(&key(from))
}

fn ledger() -> Ledger {
    Ledger::from_balances(&(0..5).map(|i| (key(i).public(), 1_000)).collect::<Vec<_>>()).unwrap()
}

fn pool(count_max: usize) -> Mempool {
    Mempool::new(
        chain(),
        MempoolConfig {
            count_max,
            nonce_ahead_max: 10,
            ..MempoolConfig::default()
        },
        0,
    )
}

fn tx_until(from: u64, nonce: u64, valid_until: u64) -> SignedTransfer {
    Transfer {
        valid_until,
        ..tx(from, nonce).transfer
    }
    .sign(&key(from))
}

#[test]
fn admits_refuses_and_explains() {
    let l = ledger();
    let mut p = pool(100);
    assert!(p.add(tx(1, 0), &l).is_ok());
    assert!(matches!(
        p.add(tx(1, 0), &l),
        Err(MempoolError::AlreadyPending(_))
    ));
    let mut forged = tx(1, 1);
    forged.transfer.amount = 2;
    assert!(matches!(
        p.add(forged, &l),
        Err(MempoolError::Invalid(TxError::BadSignature { .. }))
    ));
    assert!(matches!(
        p.add(tx(2, 11), &l),
        Err(MempoolError::NonceTooFarAhead { .. })
    ));
    let other = Transfer {
        chain: chain(),
        from: key(1).public(),
        to: key(98).public(),
        amount: 1,
        nonce: 0,
        valid_until: VALID_UNTIL,
    }
    .sign(&key(1));
    assert!(matches!(
        p.add(other, &l),
        Err(MempoolError::NonceTaken { nonce: 0, .. })
    ));
    p.check_invariants();
}

#[test]
fn gapped_transfers_take_at_most_a_quarter_and_never_lock_out_the_ones_that_fill_the_gaps() {
    let l = ledger();
    let mut p = pool(8);
    assert_eq!(p.gapped_max(), 2);
    // Nonces out of order: none of these can be in a block before nonce 0.
    let gapped: Vec<_> = [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 2), (2, 3)]
        .into_iter()
        .map(|(from, nonce)| p.add(tx(from, nonce), &l))
        .collect();
    assert!(gapped[..2].iter().all(Result::is_ok), "{gapped:?}");
    for refused in &gapped[2..] {
        assert!(
            matches!(
                refused,
                Err(MempoolError::Gapped {
                    next: 0,
                    held: 2,
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    assert_eq!(p.gapped(), 2);
    // The transfers blocks can take still find room: the rest of the pool.
    for (from, nonce) in [(1, 0), (3, 0), (4, 0), (0, 0), (3, 1), (4, 1)] {
        assert!(p.add(tx(from, nonce), &l).is_ok(), "{from}/{nonce}");
    }
    assert!(matches!(
        p.add(tx(0, 1), &l),
        Err(MempoolError::Full { .. })
    ));
    assert_eq!(p.ready_count(|k| l.account(k).nonce), 8);
    p.check_invariants();
    // A block recounts: sender 1's 1 and 2 are in line behind its 0 now.
    let block = vec![p.verified(&tx(0, 0).hash()).unwrap()];
    p.remove_committed(1, &block, &l);
    assert_eq!((p.gapped(), p.ready_at_block()), (0, 7));
    assert!(p.add(tx(2, 2), &l).is_ok());
    assert_eq!(p.gapped(), 1);
    p.check_invariants();
}

#[test]
fn logged_transfers_are_taken_back_past_the_gapped_share() {
    // What a restart reads back from the mempool log was answered 202: the
    // share for gapped transfers does not refuse it.
    let l = ledger();
    let mut p = pool(8);
    let verify = |t: SignedTransfer| Ok(t.verify(&chain()).unwrap());
    let back = p.add_logged(
        vec![verify(tx(1, 1)), verify(tx(1, 2)), verify(tx(1, 3))],
        &l,
    );
    assert!(back.iter().all(Result::is_ok), "{back:?}");
    assert_eq!(p.gapped(), 3);
    // New arrivals still meet it.
    assert!(matches!(
        p.add(tx(2, 1), &l),
        Err(MempoolError::Gapped { .. })
    ));
    p.check_invariants();
}

#[test]
fn reservations_behind_gaps_count_toward_the_share() {
    // A batch reserves all its transfers before any is admitted: gapped ones
    // among them must meet the share, or one request could fill the pool.
    let l = ledger();
    let mut p = pool(8);
    let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
    p.reserve(&verify(tx(1, 1)), &l).unwrap();
    p.reserve(&verify(tx(1, 2)), &l).unwrap();
    assert_eq!(p.gapped(), 2);
    let refused = p.reserve(&verify(tx(1, 3)), &l).unwrap_err();
    assert!(
        matches!(refused, MempoolError::Gapped { held: 2, .. }),
        "{refused}"
    );
    assert!(matches!(
        p.add(tx(2, 1), &l),
        Err(MempoolError::Gapped { .. })
    ));
    // In line, reserved or not, still goes in.
    p.reserve(&verify(tx(3, 0)), &l).unwrap();
    assert!(p.add(tx(4, 0), &l).is_ok());
    p.check_invariants();
    // A reservation given back gives its part of the share back.
    p.release(&[tx(1, 2).hash()]);
    assert_eq!(p.gapped(), 1);
    p.check_invariants();
}

#[test]
fn transfers_stranded_behind_a_failed_transfer_leave_past_the_share() {
    // Key 7's transfers are in line and paid for when admitted, but its funds
    // are gone when its nonce 0 executes (as when another validator's transfer
    // of the same sender committed first): nonce 0 fails and leaves the nonce
    // where it was, so the rest can never be in a block. Left in the pool they
    // would hold it past the gapped share and lock out the transfers blocks
    // can take.
    let mut l = ledger();
    let funded = Ledger::from_balances(&[(key(7).public(), 1_000)]).unwrap();
    let mut p = pool(8);
    for nonce in 0..8 {
        assert!(p.add(tx(7, nonce), &funded).is_ok(), "7/{nonce}");
    }
    let block = p.select(|k| l.account(k).nonce, 1, usize::MAX);
    assert_eq!(block.len(), 1);
    l.apply(1, &block);
    assert_eq!(l.account(&key(7).public()).nonce, 0);
    p.remove_committed(1, &block, &l);
    assert_eq!((p.len(), p.gapped()), (p.gapped_max(), p.gapped_max()));
    // The furthest ahead of their sender's next nonce leave first.
    assert!(p.contains(&tx(7, 1).hash()) && p.contains(&tx(7, 2).hash()));
    let dropped = p.dropped(&tx(7, 7).hash());
    assert_eq!(
        dropped,
        Some(Dropped::BehindGap {
            nonce: 7,
            next_nonce: 0
        })
    );
    assert!(
        dropped
            .unwrap()
            .to_string()
            .contains("send the same signed transfer again")
    );
    for from in 0..5 {
        assert!(p.add(tx(from, 0), &l).is_ok(), "{from}/0");
    }
    p.check_invariants();
}

#[test]
fn a_transfer_dropped_behind_a_gap_that_commits_elsewhere_is_not_reported_dropped() {
    // Its head expires: nonces 1 to 4 can no longer be taken, and 3 and 4 leave.
    let mut l = ledger();
    let mut p = pool(8);
    assert!(p.add(tx_until(1, 0, 1), &l).is_ok());
    for nonce in 1..5 {
        assert!(p.add(tx(1, nonce), &l).is_ok(), "1/{nonce}");
    }
    p.remove_committed(1, &[], &l);
    assert_eq!(p.len(), 2);
    assert!(matches!(
        p.dropped(&tx(1, 3).hash()),
        Some(Dropped::BehindGap { nonce: 3, .. })
    ));
    // Another validator kept it and proposes it behind a new nonce 0.
    let block: Vec<_> = p
        .verify_for_block(vec![tx(1, 0), tx(1, 1), tx(1, 2), tx(1, 3)])
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    l.apply(2, &block);
    p.remove_committed(2, &block, &l);
    assert_eq!(p.dropped(&tx(1, 3).hash()), None);
    assert!(matches!(
        p.dropped(&tx(1, 4).hash()),
        Some(Dropped::BehindGap { .. })
    ));
    p.check_invariants();
}

#[test]
fn pending_and_reserved_nonces_in_turn_are_in_line() {
    let l = ledger();
    let mut p = pool(8);
    let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
    assert!(p.add(tx(3, 5), &l).is_ok());
    assert!(p.add(tx(3, 6), &l).is_ok());
    assert_eq!(p.gapped(), p.gapped_max());
    // 0 reserved (its log write in flight), 1 pending, 2 reserved: 3 is in line.
    p.reserve(&verify(tx(1, 0)), &l).unwrap();
    assert!(p.add(tx(1, 1), &l).is_ok());
    p.reserve(&verify(tx(1, 2)), &l).unwrap();
    assert!(p.add(tx(1, 3), &l).is_ok());
    assert_eq!(p.gapped(), p.gapped_max());
    p.check_invariants();
}

#[test]
fn a_transfer_behind_a_reserved_nonce_is_in_line() {
    let l = ledger();
    let mut p = pool(8);
    let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
    for nonce in [4, 5] {
        assert!(p.add(tx(1, nonce), &l).is_ok());
    }
    assert!(matches!(
        p.add(tx(2, 1), &l),
        Err(MempoolError::Gapped { .. })
    ));
    // Nonces 0 and 1 on their way to the log: 1 and 2 behind them are in line,
    // 3 (with 2 neither pending nor reserved) is not.
    p.reserve(&verify(tx(2, 0)), &l).unwrap();
    p.reserve(&verify(tx(2, 1)), &l).unwrap();
    p.reserve(&verify(tx(2, 2)), &l).unwrap();
    p.release(&[tx(2, 2).hash()]);
    assert!(matches!(
        p.add(tx(2, 3), &l),
        Err(MempoolError::Gapped { .. })
    ));
    assert!(p.add(tx(2, 2), &l).is_ok());
    assert_eq!(p.gapped(), 2, "2 is in line behind the reservations");
    p.check_invariants();
}

#[test]
fn a_full_pool_or_a_verification_backlog_refuses_before_checking() {
    let l = ledger();
    let mut p = pool(1);
    assert!(p.refusal(0).is_none());
    assert!(p.refusal(VERIFY_BACKLOG_MAX).is_none());
    assert!(matches!(
        p.refusal(VERIFY_BACKLOG_MAX + 1),
        Some(MempoolError::Busy { waiting }) if waiting == VERIFY_BACKLOG_MAX + 1
    ));
    p.add(tx(1, 0), &l).unwrap();
    assert!(matches!(
        p.refusal(0),
        Some(MempoolError::Full { count: 1, .. })
    ));
}

#[test]
fn full_is_an_answer() {
    let l = ledger();
    let mut p = pool(2);
    p.add(tx(1, 0), &l).unwrap();
    p.add(tx(1, 1), &l).unwrap();
    let err = p.add(tx(1, 2), &l).unwrap_err();
    assert!(matches!(err, MempoolError::Full { count: 2, .. }));
    assert!(err.to_string().contains("try again later"));
    // A full pool answers "full" before spending a signature check: a forged
    // transaction is refused as Full, not as Invalid.
    let mut forged = tx(2, 0);
    forged.transfer.amount += 1;
    let results = p.add_batch(vec![forged], &l);
    assert!(matches!(results[0], Err(MempoolError::Full { .. })));
    assert!(p.is_full());
    p.check_invariants();
}

#[test]
fn selection_is_contiguous_per_sender_and_round_robin() {
    let l = ledger();
    let mut p = pool(100);
    for t in [tx(1, 0), tx(1, 1), tx(1, 3), tx(2, 0), tx(2, 1), tx(3, 1)] {
        p.add(t, &l).unwrap();
    }
    let picked = p.select(|k| l.account(k).nonce, 100, usize::MAX);
    let order: Vec<(PublicKey, u64)> = picked
        .iter()
        .map(|t| (t.transfer().from, t.transfer().nonce))
        .collect();
    // Sender 3 has a gap (nonce 0 missing); sender 1 stops before its gap.
    assert_eq!(order.len(), 4);
    assert!(order.iter().all(|(k, _)| *k != key(3).public()));
    assert!(!order.contains(&(key(1).public(), 3)));
    // Round robin: the first two picks are from two different senders.
    assert_ne!(order[0].0, order[1].0);
    assert_eq!(p.select(|k| l.account(k).nonce, 3, usize::MAX).len(), 3);
}

#[test]
fn blocks_count_the_transactions_not_checked_before() {
    let l = ledger();
    let mut p = pool(100);
    p.add(tx(1, 0), &l).unwrap();
    assert_eq!(p.take_unchecked_in_blocks(), 0);
    let results = p.verify_for_block(vec![tx(1, 0), tx(2, 0), tx(3, 0)]);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(p.take_unchecked_in_blocks(), 2);
    assert_eq!(p.take_unchecked_in_blocks(), 0);
    // Checked by the block, they are known now.
    p.verify_for_block(vec![tx(2, 0), tx(3, 0)]);
    assert_eq!(p.take_unchecked_in_blocks(), 0);
}

#[test]
fn bounded_set_remembers_at_least_the_latest_half() {
    let mut set = BoundedSet::new(10);
    for i in 0..1_000u32 {
        set.insert(i);
        // The latest max/2 are always there; never more than max in all.
        assert!((i.saturating_sub(4)..=i).all(|j| set.contains(&j)), "{i}");
        assert!(set.map.current.len() + set.map.previous.len() <= 10);
    }
    assert!(!set.contains(&0));
    // Inserting again keeps a value alive across rotations.
    let mut kept = BoundedSet::new(4);
    for i in 0..100u32 {
        kept.insert(0);
        kept.insert(1_000 + i);
        assert!(kept.contains(&0), "{i}");
    }
    let mut off = BoundedSet::new(0);
    off.insert(1u32);
    assert!(!off.contains(&1));
}

#[test]
fn ready_means_a_block_would_hold_something() {
    let l = ledger();
    let mut p = pool(100);
    let ready = |p: &Mempool| p.has_ready(|k| l.account(k).nonce);
    assert!(!ready(&p));
    // Only a gapped run (nonce 0 missing): nothing can go in a block yet.
    p.add(tx(3, 1), &l).unwrap();
    assert!(!ready(&p));
    assert!(p.select(|k| l.account(k).nonce, 1, usize::MAX).is_empty());
    p.add(tx(3, 0), &l).unwrap();
    assert!(ready(&p));
    assert_eq!(p.select(|k| l.account(k).nonce, 10, usize::MAX).len(), 2);
}

#[test]
fn the_ready_count_stops_at_each_senders_first_gap() {
    let mut l = ledger();
    let mut p = pool(100);
    let next = |l: &Ledger, i: u64| l.account(&key(i).public()).nonce;
    // Sender 1: 0, 1, 2 ready. Sender 2: 0 ready, 2 and 3 behind the gap at 1.
    // Sender 3: 5 and 6 only, behind a gap at 0.
    for (from, nonce) in [
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 2),
        (2, 3),
        (3, 5),
        (3, 6),
    ] {
        p.add(tx(from, nonce), &l).unwrap();
    }
    assert_eq!(p.ready_count(|k| l.account(k).nonce), 4);
    assert!(p.is_ready(&key(1).public(), 2, next(&l, 1)));
    assert!(p.is_ready(&key(2).public(), 0, next(&l, 2)));
    assert!(!p.is_ready(&key(2).public(), 2, next(&l, 2)));
    assert!(!p.is_ready(&key(3).public(), 6, next(&l, 3)));
    assert!(
        !p.is_ready(&key(4).public(), 0, next(&l, 4)),
        "nothing pending"
    );
    // The gap filled: sender 2's run goes on to 3.
    p.add(tx(2, 1), &l).unwrap();
    assert_eq!(p.ready_count(|k| l.account(k).nonce), 7);
    assert!(p.is_ready(&key(2).public(), 3, next(&l, 2)));
    // Sender 1's first two commit: its run now starts at 2.
    let block: Vec<VerifiedTransfer> = [tx(1, 0), tx(1, 1)]
        .into_iter()
        .map(|t| t.verify(&chain()).unwrap())
        .collect();
    l.apply(1, &block);
    p.remove_committed(1, &block, &l);
    assert_eq!(p.ready_count(|k| l.account(k).nonce), 5);
    assert!(p.is_ready(&key(1).public(), 2, next(&l, 1)));
}

#[test]
fn committed_transactions_leave_and_are_not_readmitted() {
    let mut l = ledger();
    let mut p = pool(100);
    for n in 0..3 {
        p.add(tx(1, n), &l).unwrap();
    }
    let block = p.select(|k| l.account(k).nonce, 2, usize::MAX);
    l.apply(1, &block);
    p.remove_committed(1, &block, &l);
    assert_eq!(p.len(), 1);
    assert!(matches!(
        p.add(block[0].signed().clone(), &l),
        Err(MempoolError::AlreadyCommitted(_))
    ));
    p.check_invariants();
}

#[test]
fn block_validation_reuses_verified_signatures() {
    let l = ledger();
    let mut p = pool(100);
    p.add(tx(1, 0), &l).unwrap();
    // Same id, different (invalid) signature: must not ride on the cache.
    let mut swapped = tx(1, 0);
    swapped.signature = tx(2, 0).signature;
    let results = p.verify_for_block(vec![tx(1, 0), swapped, tx(2, 0)]);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(TxError::BadSignature { .. })));
    assert!(results[2].is_ok());
}

#[test]
fn known_skips_only_exactly_verified_transactions() {
    let l = ledger();
    let mut p = pool(100);
    p.add(tx(1, 0), &l).unwrap();
    let mut swapped = tx(1, 0);
    swapped.signature = tx(2, 0).signature;
    let sorted = p.known(prepare(vec![tx(2, 0), tx(1, 0), swapped]));
    let shape: Vec<bool> = sorted
        .iter()
        .map(|k| matches!(k, Known::Verified(_)))
        .collect();
    assert_eq!(shape, vec![false, true, false]);
    let results = verify_unknown(sorted, &chain());
    assert_eq!(results[0].as_ref().map(|t| t.hash()), Ok(tx(2, 0).hash()));
    assert_eq!(results[1].as_ref().map(|t| t.hash()), Ok(tx(1, 0).hash()));
    assert!(matches!(results[2], Err(TxError::BadSignature { .. })));
}

#[test]
fn validity_is_bounded_on_both_sides_of_the_tip() {
    let l = ledger();
    let mut p = Mempool::new(
        chain(),
        MempoolConfig {
            valid_for_max: 50,
            ..MempoolConfig::default()
        },
        10,
    );
    let err = p.add(tx_until(1, 0, 10), &l).unwrap_err();
    assert_eq!(
        err,
        MempoolError::Expired {
            valid_until: 10,
            tip: 10
        }
    );
    assert!(err.to_string().contains("expired"), "{err}");
    let err = p.add(tx_until(1, 0, 61), &l).unwrap_err();
    assert!(matches!(err, MempoolError::ValidTooLong { max: 50, .. }));
    assert!(err.to_string().contains("at most 60"), "{err}");
    assert!(p.add(tx_until(1, 0, 11), &l).is_ok());
    assert!(p.add(tx_until(2, 0, 60), &l).is_ok());
    p.check_invariants();
}

#[test]
fn expired_and_superseded_transactions_are_dropped_with_a_reason() {
    let mut l = ledger();
    let mut p = pool(100);
    // Sender 1: nonce 0 missing, nonce 1 waits and expires at 5. Sender 2: ready,
    // valid until 5 as well, but committed first.
    let gapped = p.add(tx_until(1, 1, 5), &l).unwrap();
    let ready = p.add(tx_until(2, 0, 5), &l).unwrap();
    // Sender 3: two transfers with nonce 0 reach different nodes; the other commits.
    let loser = p.add(tx_until(3, 0, 50), &l).unwrap();
    let winner = Transfer {
        to: key(97).public(),
        ..tx_until(3, 0, 50).transfer
    }
    .sign(&key(3))
    .verify(&chain())
    .unwrap();
    assert_eq!(
        p.pending_state(&gapped, &l),
        Some(PendingState {
            nonce: 1,
            valid_until: 5,
            waiting_for: Some(0)
        })
    );
    assert_eq!(
        p.pending_state(&ready, &l).map(|s| s.waiting_for),
        Some(None)
    );
    let block = p.select(|k| l.account(k).nonce, 1, usize::MAX);
    assert_eq!(block.len(), 1);
    let block = vec![winner];
    l.apply(4, &block);
    p.remove_committed(4, &block, &l);
    assert_eq!(p.dropped(&loser), Some(Dropped::NonceUsed { nonce: 0 }));
    assert!(p.contains(&gapped) && p.contains(&ready));
    // Height 5 is the last at which they could go in; after it they are gone.
    p.remove_committed(5, &[], &l);
    assert_eq!(
        p.dropped(&gapped),
        Some(Dropped::Expired {
            valid_until: 5,
            next_nonce: 0
        })
    );
    assert!(
        p.dropped(&gapped)
            .unwrap()
            .to_string()
            .contains("may be sent again")
    );
    assert!(matches!(p.dropped(&ready), Some(Dropped::Expired { .. })));
    assert!(p.is_empty());
    p.check_invariants();
    // A dropped transaction is not readmitted: it is expired now.
    assert!(matches!(
        p.add(tx_until(1, 1, 5), &l),
        Err(MempoolError::Expired { .. })
    ));
}

#[test]
fn a_proposal_never_takes_what_expires_at_the_tip() {
    let l = ledger();
    let mut p = pool(100);
    p.add(tx_until(1, 0, 3), &l).unwrap();
    p.add(tx_until(1, 1, 9), &l).unwrap();
    assert_eq!(p.select(|k| l.account(k).nonce, 10, usize::MAX).len(), 2);
    // Executed through height 3 without including them (a block of others):
    // nonce 0 expires, and nonce 1 waits behind it.
    p.remove_committed(3, &[], &l);
    assert!(p.select(|k| l.account(k).nonce, 10, usize::MAX).is_empty());
    assert_eq!(p.len(), 1);
}

#[test]
fn only_logged_transactions_report_their_departure() {
    let mut l = ledger();
    let mut p = pool(100);
    let gossiped = p.add(tx(1, 0), &l).unwrap();
    let unlogged = p.add(tx(4, 0), &l).unwrap();
    let signed = vec![tx(2, 0).verify(&chain()), tx(2, 1).verify(&chain())];
    let results = p.add_logged(signed, &l);
    assert!(results.iter().all(Result::is_ok));
    assert!(p.take_departed().is_empty());
    // The same transaction arriving through the log later marks it logged.
    let again = p.add_logged(vec![tx(1, 0).verify(&chain())], &l);
    assert!(matches!(again[0], Err(MempoolError::AlreadyPending(_))));
    let block = p.select(|k| l.account(k).nonce, 10, usize::MAX);
    assert_eq!(block.len(), 4);
    l.apply(1, &block);
    p.remove_committed(1, &block, &l);
    assert!(p.is_empty());
    let mut departed: Vec<TxHash> = p.take_departed().into_iter().map(|(h, _)| h).collect();
    departed.sort();
    let mut expected: Vec<TxHash> = block
        .iter()
        .map(|t| t.hash())
        .filter(|h| *h != unlogged)
        .collect();
    expected.sort();
    assert_eq!(departed, expected);
    assert!(departed.contains(&gossiped));
    assert!(p.take_departed().is_empty(), "taken once");
    assert!(p.reserve(&tx(2, 1).verify(&chain()).unwrap(), &l).is_err());
    assert!(p.reserve(&tx(3, 0).verify(&chain()).unwrap(), &l).is_ok());
}

#[test]
fn long_pending_transactions_are_handed_out_again_ready_ones_first_and_not_every_round() {
    let l = ledger();
    let mut p = pool(100);
    p.add(tx(1, 0), &l).unwrap();
    p.add(tx(2, 5), &l).unwrap();
    assert!(p.stale(2, 10, &l).is_empty(), "round 1: too young");
    let handed = p.stale(2, 1, &l);
    assert_eq!(
        handed,
        vec![tx(1, 0)],
        "round 2: the ready one first, within max"
    );
    assert_eq!(p.stale(2, 10, &l), vec![tx(2, 5)], "round 3: the other one");
    assert_eq!(
        p.stale(2, 10, &l),
        vec![tx(1, 0)],
        "round 4: two rounds after the first"
    );
    assert_eq!(
        p.stale(2, 10, &l),
        vec![tx(2, 5)],
        "round 5: the other again"
    );
    p.add(tx(3, 0), &l).unwrap();
    assert_eq!(
        p.stale(2, 10, &l),
        vec![tx(1, 0)],
        "round 6: the first again; the new one is too young"
    );
}

#[test]
fn a_reservation_holds_its_nonce_and_room_until_the_log_answers() {
    let l = ledger();
    let mut p = pool(3);
    let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
    let a = tx(1, 0);
    // Another transfer of the same sender and nonce (a different amount).
    let b = Transfer {
        amount: 2,
        ..a.transfer.clone()
    }
    .sign(&key(1));
    p.reserve(&verify(a.clone()), &l).unwrap();
    // Two submissions of the same bytes at once both go to the log.
    p.reserve(&verify(a.clone()), &l).unwrap();
    let taken = p.reserve(&verify(b.clone()), &l).unwrap_err();
    assert!(
        matches!(taken, MempoolError::NonceTaken { nonce: 0, .. }),
        "{taken}"
    );
    // Gossip cannot take the nonce meanwhile either.
    assert!(matches!(
        p.add(b.clone(), &l),
        Err(MempoolError::NonceTaken { .. })
    ));
    // The reservation counts against the pool's room.
    p.reserve(&verify(tx(2, 0)), &l).unwrap();
    p.add(tx(3, 0), &l).unwrap();
    assert!(p.is_full());
    assert!(matches!(
        p.add(tx(4, 0), &l),
        Err(MempoolError::Full { .. })
    ));
    p.check_invariants();
    // The first answer admits it, the second finds it pending.
    let first = p.add_logged(vec![Ok(verify(a.clone()))], &l);
    assert_eq!(first, vec![Ok(a.hash())]);
    let second = p.add_logged(vec![Ok(verify(a.clone()))], &l);
    assert_eq!(second, vec![Err(MempoolError::AlreadyPending(a.hash()))]);
    // A failed write gives back what it held.
    p.release(&[tx(2, 0).hash()]);
    p.check_invariants();
    assert!(!p.is_full());
    p.add(tx(4, 0), &l).unwrap();
    assert_eq!(p.len(), 3);
    p.check_invariants();
}

fn tx_amount(from: u64, nonce: u64, amount: u64) -> SignedTransfer {
    Transfer {
        amount,
        ..tx(from, nonce).transfer
    }
    .sign(&key(from))
}

#[test]
fn a_transfer_its_sender_cannot_pay_after_its_pending_spends_is_refused_with_the_numbers() {
    let l = ledger(); // keys 0..5 hold 1,000 each
    let mut p = pool(16);
    let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
    // Nothing at all: refused, whatever the nonce.
    let refused = p.add(tx(7, 0), &l).unwrap_err();
    assert_eq!(
        refused,
        MempoolError::Unfunded {
            balance: 0,
            pending: 0,
            available: 0,
            amount: 1
        }
    );
    assert!(refused.to_string().contains("balance is 0"), "{refused}");
    // Behind a gap, everything held counts: pending and reserved alike.
    p.add(tx_amount(1, 0, 600), &l).unwrap();
    p.reserve(&verify(tx_amount(1, 2, 300)), &l).unwrap();
    let refused = p.add(tx_amount(1, 3, 101), &l).unwrap_err();
    assert_eq!(
        refused,
        MempoolError::Unfunded {
            balance: 1_000,
            pending: 900,
            available: 100,
            amount: 101
        }
    );
    // In line, only the transfers before it count: it executes first.
    let refused = p.add(tx_amount(1, 1, 401), &l).unwrap_err();
    assert_eq!(
        refused,
        MempoolError::Unfunded {
            balance: 1_000,
            pending: 600,
            available: 400,
            amount: 401
        }
    );
    p.add(tx_amount(1, 1, 400), &l).unwrap();
    assert_eq!(p.pending_spend(&key(1).public()), 1_300);
    p.check_invariants();
    // A reservation given back frees what it held.
    p.release(&[tx_amount(1, 2, 300).hash()]);
    assert_eq!(p.pending_spend(&key(1).public()), 1_000);
    // An earlier nonce that arrives after a later one (gossip from another
    // validator) is not refused for the later one's spend.
    p.add(tx_amount(3, 1, 500), &l).unwrap();
    p.add(tx_amount(3, 0, 600), &l).unwrap();
    // Its own reservation is not counted against a transfer.
    p.reserve(&verify(tx_amount(2, 0, 1_000)), &l).unwrap();
    assert_eq!(
        p.add_logged(vec![Ok(verify(tx_amount(2, 0, 1_000)))], &l),
        vec![Ok(tx_amount(2, 0, 1_000).hash())]
    );
    p.check_invariants();
    // A block that takes them moves the balance and the spends together.
    let mut l = l;
    let block = p.select(|k| l.account(k).nonce, 16, usize::MAX);
    l.apply(1, &block);
    p.remove_committed(1, &block, &l);
    assert_eq!(p.pending_spend(&key(1).public()), 0);
    assert_eq!(l.account(&key(1).public()).balance, 0);
    assert!(matches!(
        p.add(tx(1, 2), &l),
        Err(MempoolError::Unfunded { balance: 0, .. })
    ));
    p.check_invariants();
}

#[test]
fn a_submission_pending_by_gossip_and_dropped_during_its_log_write_arrives_anew() {
    // Key 7's transfers came by gossip; a client submits nonce 7 while it is
    // pending (the reservation holds nothing for it). During the log write a
    // block strands them behind a failed nonce 0 and the furthest ahead leave
    // past the gapped share: the written one must not come back past it.
    let l = ledger();
    let funded = Ledger::from_balances(&[(key(7).public(), 1_000)]).unwrap();
    let mut p = pool(8);
    for nonce in 0..8 {
        p.add(tx(7, nonce), &funded).unwrap();
    }
    let submitted = tx(7, 7).verify(&chain()).unwrap();
    p.reserve(&submitted, &funded).unwrap();
    let mut l = l;
    let block = p.select(|k| l.account(k).nonce, 1, usize::MAX);
    l.apply(1, &block);
    p.remove_committed(1, &block, &l);
    assert!(!p.contains(&tx(7, 7).hash()), "dropped behind the gap");
    let written = p.add_written(vec![Ok(submitted)], &l);
    assert!(
        matches!(written[0], Err(MempoolError::Gapped { .. })),
        "{written:?}"
    );
    assert_eq!(p.gapped(), p.gapped_max());
    p.check_invariants();
}

#[test]
fn a_transfer_read_back_from_the_log_is_not_refused_for_its_balance() {
    // Answered 202 when the sender could pay; after a restart the spends are
    // counted again in log order, and a 202 is not taken back for a sum.
    let l = ledger();
    let mut p = pool(16);
    let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
    let logged = vec![Ok(verify(tx_amount(7, 0, 5)))];
    assert_eq!(
        p.add_logged(logged, &l),
        vec![Ok(tx_amount(7, 0, 5).hash())]
    );
    p.check_invariants();
}

#[test]
fn the_run_of_nonces_follows_admissions_reservations_blocks_and_drops() {
    let mut l = ledger();
    let mut p = pool(64);
    let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
    let k1 = key(1).public();
    // Out of order: 2 and 3 wait behind 0 and 1.
    p.add(tx(1, 2), &l).unwrap();
    p.add(tx(1, 3), &l).unwrap();
    assert_eq!(p.pending_nonce(&k1, 0), 0);
    assert!(!p.in_line(&k1, 2, 0));
    p.reserve(&verify(tx(1, 0)), &l).unwrap();
    assert_eq!(p.pending_nonce(&k1, 0), 1);
    p.add(tx(1, 1), &l).unwrap();
    // Filling the gap joins the run behind it.
    assert_eq!(p.pending_nonce(&k1, 0), 4);
    assert!(p.in_line(&k1, 4, 0) && !p.in_line(&k1, 5, 0));
    p.check_invariants();
    // A failed write cuts the run at its nonce.
    p.release(&[tx(1, 0).hash()]);
    assert_eq!(p.pending_nonce(&k1, 0), 0);
    p.check_invariants();
    p.add(tx(1, 0), &l).unwrap();
    assert_eq!(p.pending_nonce(&k1, 0), 4);
    // A block takes the front of the run: the rest is the run from the new
    // next nonce.
    let block = p.select(|k| l.account(k).nonce, 2, usize::MAX);
    l.apply(1, &block);
    p.remove_committed(1, &block, &l);
    assert_eq!(l.account(&k1).nonce, 2);
    assert_eq!(p.pending_nonce(&k1, 2), 4);
    p.check_invariants();
    // Asked with a next nonce outside the run, it still answers.
    assert_eq!(p.pending_nonce(&k1, 3), 4);
    assert_eq!(p.pending_nonce(&k1, 9), 9);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever the order of admissions, reservations, failed writes, log
    /// answers and blocks, the books (runs and spends) match what the pool
    /// holds, and the one-lookup answers match a walk over every nonce.
    #[test]
    fn the_books_match_the_pool_under_any_order_of_events(
        ops in proptest::collection::vec((0u8..6, 0u64..3, 0u64..8, 1u64..400), 1..80)
    ) {
        let mut l = ledger();
        let mut p = pool(32);
        let mut height = 0;
        let mut reserved: Vec<SignedTransfer> = Vec::new();
        for (op, sender, ahead, amount) in ops {
            let next = l.account(&key(sender).public()).nonce;
            let t = tx_amount(sender, next + ahead, amount);
            match op {
                0 | 1 => {
                    let _ = p.add(t, &l);
                }
                2 => {
                    if p.reserve(&t.clone().verify(&chain()).unwrap(), &l).is_ok() {
                        reserved.push(t);
                    }
                }
                3 => {
                    if let Some(t) = reserved.pop() {
                        let _ = p.add_logged(vec![t.verify(&chain())], &l);
                    }
                }
                4 => {
                    if let Some(t) = reserved.pop() {
                        p.release(&[t.hash()]);
                    }
                }
                _ => {
                    height += 1;
                    let block = p.select(|k| l.account(k).nonce, 3, usize::MAX);
                    l.apply(height, &block);
                    p.remove_committed(height, &block, &l);
                }
            }
            p.check_invariants();
            for s in 0..3 {
                let k = key(s).public();
                let next = l.account(&k).nonce;
                for from in next..next + 10 {
                    proptest::prop_assert_eq!(p.pending_nonce(&k, from), p.walk(&k, from));
                }
            }
        }
    }
}
