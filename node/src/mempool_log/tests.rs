use super::*;
use crate::ledger::Transfer;
use mosaic_crypto::{ChainId, Keypair};

fn tx(nonce: u64) -> SignedTransfer {
    let key = Keypair::from_seed_for_tests(1);
    Transfer {
        chain: ChainId::new("log-test").unwrap(),
        from: key.public(),
        to: Keypair::from_seed_for_tests(2).public(),
        amount: 1,
        nonce,
        valid_until: 100,
    }
    .sign(&key)
}

fn open(dir: &Path, config: LogConfig) -> (MempoolLog, Vec<SignedTransfer>) {
    let recovered = recover(dir, config).unwrap();
    let transfers = recovered.transfers.clone();
    (recovered.start(&transfers, &[]).unwrap(), transfers)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn files(dir: &Path) -> Vec<u64> {
    segments(dir).unwrap()
}

#[test]
fn appended_transfers_come_back_after_a_restart_and_forgotten_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, none) = open(dir.path(), LogConfig::default());
    assert!(none.is_empty());
    let txs: Vec<SignedTransfer> = (0..5).map(tx).collect();
    // Concurrent appends share group commits; each is answered.
    rt.block_on(async {
        let a = log.append(&txs[..2]);
        let b = log.append(&txs[2..]);
        let (a, b) = tokio::join!(a, b);
        a.unwrap();
        b.unwrap();
    });
    log.forget(vec![txs[1].hash()]);
    rt.block_on(log.append(&[])).unwrap(); // the forget is processed before this
    drop(log);
    let (_log, back) = open(dir.path(), LogConfig::default());
    // Recovery reads every record; the forgotten one is dropped by the caller
    // (it is committed), here it is still in the old segment.
    assert_eq!(back.len(), 5);
    assert_eq!(
        files(dir.path()).len(),
        1,
        "old segments are replaced by one"
    );
}

fn tx_of(key: u64, nonce: u64, valid_until: u64) -> SignedTransfer {
    let sender = Keypair::from_seed_for_tests(key);
    Transfer {
        chain: ChainId::new("log-test").unwrap(),
        from: sender.public(),
        to: Keypair::from_seed_for_tests(2).public(),
        amount: 5,
        nonce,
        valid_until,
    }
    .sign(&sender)
}

/// Forgets reach the writer before this returns (it answers in order).
fn flush(rt: &tokio::runtime::Runtime, log: &MempoolLog) {
    rt.block_on(log.append(&[])).unwrap();
}

#[test]
fn tombstoned_transfers_stay_gone_after_a_restart_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, _) = open(dir.path(), LogConfig::default());
    let txs: Vec<SignedTransfer> = (0..4).map(tx).collect();
    rt.block_on(log.append(&txs)).unwrap();
    let gap = Dropped::BehindGap {
        nonce: 1,
        next_nonce: 0,
    };
    // One dropped behind a gap, one refused after logging, one committed
    // (forgotten in memory only: the chain refuses it after a restart).
    log.departed(vec![(txs[1].hash(), Some(gap)), (txs[3].hash(), None)]);
    log.tombstone(vec![(txs[2].hash(), None)]);
    flush(&rt, &log);
    drop(log);
    let recovered = recover(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(recovered.transfers, vec![txs[0].clone(), txs[3].clone()]);
    assert_eq!(recovered.killed, 2);
    assert_eq!(recovered.dropped, vec![(txs[1].hash(), gap)]);
    // The reason is written again at start, so a second restart keeps it.
    let dropped = recovered.dropped.clone();
    let keep = recovered.transfers.clone();
    drop(recovered.start(&keep, &dropped).unwrap());
    let again = recover(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(again.transfers, keep);
    assert_eq!(again.dropped, vec![(txs[1].hash(), gap)]);
}

#[test]
fn a_transfer_logged_again_after_its_tombstone_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, _) = open(dir.path(), LogConfig::default());
    rt.block_on(log.append(&[tx(0)])).unwrap();
    log.tombstone(vec![(tx(0).hash(), None)]);
    flush(&rt, &log);
    // Sent again (say, once the nonces before it arrived) and answered 202.
    rt.block_on(log.append(&[tx(0)])).unwrap();
    drop(log);
    assert_eq!(
        recover(dir.path(), LogConfig::default()).unwrap().transfers,
        vec![tx(0)]
    );
}

#[test]
fn a_tombstone_outlives_the_segment_it_is_in_while_its_record_exists() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let one = record(&tx(0)).unwrap().len() as u64;
    // Every group closes its segment.
    let config = LogConfig {
        bytes_max: one * 1_000,
        segment_bytes: 1,
        queued_bytes_max: 1 << 20,
    };
    let (log, _) = open(dir.path(), config);
    // Segment A: a long-pending transfer and one that will be dropped.
    rt.block_on(log.append(&[tx(0), tx(1)])).unwrap();
    // Segment B: the drop's tombstone, with a transfer that commits at once.
    log.tombstone(vec![(tx(1).hash(), None)]);
    rt.block_on(log.append(&[tx(2)])).unwrap();
    log.forget(vec![tx(2).hash()]);
    // More groups: housekeeping runs after each and would delete B, which has
    // nothing live, if its tombstone did not keep it.
    for n in 3..6 {
        rt.block_on(log.append(&[tx(n)])).unwrap();
        log.forget(vec![tx(n).hash()]);
    }
    flush(&rt, &log);
    drop(log);
    let back = recover(dir.path(), config).unwrap().transfers;
    assert!(back.contains(&tx(0)), "{back:?}");
    assert!(
        !back.contains(&tx(1)),
        "the dropped transfer stays dropped: {back:?}"
    );
}

/// The sequence a client saw: its first transfer failed in a block (no funds
/// yet; a failed transfer keeps its nonce), it was funded and signed its next
/// transfer with the same nonce, which this node answered 202, and the node
/// restarted before the transfer spread. The restart must take back the second
/// one, not the first.
#[test]
fn a_restart_takes_back_the_transfer_answered_202_not_the_one_that_failed() {
    use crate::ledger::Ledger;
    use crate::mempool::{Mempool, MempoolConfig};
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let chain = ChainId::new("log-test").unwrap();
    let sender = Keypair::from_seed_for_tests(7).public();
    let funder = Keypair::from_seed_for_tests(1).public();
    let mut ledger = Ledger::from_balances(&[(funder, 1_000)]).unwrap();
    let mut mempool = Mempool::new(chain.clone(), MempoolConfig::default(), 0);
    let (log, _) = open(dir.path(), LogConfig::default());

    // The first transfer: logged (answered 202), in a block at height 1, failed.
    let first = tx_of(7, 0, 500);
    rt.block_on(log.append(std::slice::from_ref(&first)))
        .unwrap();
    // Admitted as a restart would (no balance check for a logged transfer).
    let admitted = mempool.add_logged(vec![first.clone().verify(&chain)], &ledger);
    assert!(admitted[0].is_ok(), "{admitted:?}");
    let block = mempool.select(|k| ledger.account(k).nonce, 10, usize::MAX);
    let execution = ledger.apply(1, &block);
    assert!(matches!(
        execution.outcomes[0].1,
        crate::ledger::TxOutcome::Failed(_)
    ));
    ledger.record_failures(1, &execution.new_failures);
    mempool.remove_committed(1, &block, &ledger);
    log.departed(mempool.take_departed());

    // Funded at height 2, then the second transfer with the same nonce: 202.
    let funding = Transfer {
        chain: chain.clone(),
        from: funder,
        to: sender,
        amount: 100,
        nonce: 0,
        valid_until: 500,
    }
    .sign(&Keypair::from_seed_for_tests(1))
    .verify(&chain)
    .unwrap();
    let execution = ledger.apply(2, std::slice::from_ref(&funding));
    ledger.record_failures(2, &execution.new_failures);
    mempool.remove_committed(2, std::slice::from_ref(&funding), &ledger);
    let second = tx_of(7, 0, 600);
    let verified = second.clone().verify(&chain).unwrap();
    mempool.reserve(&verified, &ledger).unwrap();
    rt.block_on(log.append(std::slice::from_ref(&second)))
        .unwrap();
    assert!(mempool.add_logged(vec![Ok(verified)], &ledger)[0].is_ok());
    flush(&rt, &log);
    drop(log);

    // The restart: a fresh pool over the same chain state (the failed
    // transfers come from the store, as the node's start does).
    let mut restarted = Ledger::from_accounts(ledger.accounts().map(|(k, a)| (*k, *a)));
    let mut failed = crate::ledger::FailedTransfers::default();
    for (id, height, until) in ledger.failed().iter() {
        failed.insert(id, height, until);
    }
    restarted.set_failed(failed);
    let mut pool = Mempool::new(chain.clone(), MempoolConfig::default(), 2);
    let mut recovered = recover(dir.path(), LogConfig::default()).unwrap();
    let back = recovered.readmit(&mut pool, &restarted, &chain);
    assert_eq!(back, vec![second.clone()], "the 202'd transfer is back");
    assert!(pool.contains(&second.hash()));
    assert!(!pool.contains(&first.hash()), "the failed one stays failed");
    // And a block of the pool applies the second one.
    let block = pool.select(|k| restarted.account(k).nonce, 10, usize::MAX);
    let execution = restarted.apply(3, &block);
    assert_eq!(
        execution.outcomes,
        vec![(second.hash(), crate::ledger::TxOutcome::Applied)]
    );
}

#[test]
fn of_two_logged_transfers_with_one_nonce_a_restart_takes_the_later_one() {
    // The earlier one left the pool (dropped behind a gap) but its tombstone was
    // lost with a crash before the group write; the later one, logged after,
    // was answered 202 last and is what the restart keeps.
    use crate::ledger::Ledger;
    use crate::mempool::{Mempool, MempoolConfig};
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let chain = ChainId::new("log-test").unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let earlier = tx_of(7, 3, 500);
    let later = tx_of(7, 3, 600);
    rt.block_on(log.append(std::slice::from_ref(&earlier)))
        .unwrap();
    rt.block_on(log.append(std::slice::from_ref(&later)))
        .unwrap();
    flush(&rt, &log);
    drop(log);
    let ledger = Ledger::from_balances(&[(Keypair::from_seed_for_tests(7).public(), 100)]).unwrap();
    let mut pool = Mempool::new(chain.clone(), MempoolConfig::default(), 0);
    let mut recovered = recover(dir.path(), LogConfig::default()).unwrap();
    let back = recovered.readmit(&mut pool, &ledger, &chain);
    assert_eq!(back, vec![later.clone()]);
    assert!(pool.contains(&later.hash()) && !pool.contains(&earlier.hash()));
}

#[test]
fn a_torn_tail_is_cut_and_the_records_before_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, _) = open(dir.path(), LogConfig::default());
    rt.block_on(log.append(&[tx(0), tx(1)])).unwrap();
    drop(log);
    let seq = files(dir.path())[0];
    let path = segment_path(dir.path(), seq);
    let mut bytes = fs::read(&path).unwrap();
    let whole = bytes.len();
    // A crash mid-record: half of a third record.
    let third = record(&tx(2)).unwrap();
    bytes.extend_from_slice(&third[..third.len() / 2]);
    fs::write(&path, &bytes).unwrap();
    let recovered = recover(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(recovered.transfers, vec![tx(0), tx(1)]);
    assert_eq!(recovered.cut_bytes, (bytes.len() - whole) as u64);
    // Rot inside the second record ends the segment there.
    let mut rotten = fs::read(&path).unwrap();
    let last = whole - 3;
    rotten[last] ^= 0xff;
    fs::write(&path, &rotten).unwrap();
    let recovered = recover(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(recovered.transfers, vec![tx(0)]);
    // Garbage that is not a segment at all is not fatal either.
    fs::write(&path, b"not a log").unwrap();
    let recovered = recover(dir.path(), LogConfig::default()).unwrap();
    assert!(recovered.transfers.is_empty());
    assert_eq!(recovered.cut_bytes, 9);
    recovered.start(&[], &[]).unwrap();
}

#[test]
fn spent_segments_are_deleted_and_the_byte_bound_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let one = record(&tx(0)).unwrap().len() as u64;
    let config = LogConfig {
        bytes_max: (MAGIC.len() as u64 + one) * 3 + one / 2,
        segment_bytes: one,
        queued_bytes_max: 1 << 20,
    };
    let (log, _) = open(dir.path(), config);
    for n in 0..3 {
        rt.block_on(log.append(&[tx(n)])).unwrap();
    }
    assert!(files(dir.path()).len() >= 3, "one segment per record here");
    let err = rt.block_on(log.append(&[tx(3), tx(4)])).unwrap_err();
    assert!(matches!(err, LogError::Full { .. }), "{err}");
    assert!(err.to_string().contains("try again later"));
    log.forget((0..3).map(|n| tx(n).hash()).collect());
    // Housekeeping after this group deletes the spent segments.
    rt.block_on(log.append(&[])).unwrap();
    rt.block_on(log.append(&[tx(3)])).unwrap();
    assert!(
        files(dir.path()).len() <= 2,
        "spent segments are gone: {:?}",
        files(dir.path())
    );
    drop(log);
    let recovered = recover(dir.path(), config).unwrap();
    assert_eq!(recovered.transfers, vec![tx(3)]);
}

#[test]
fn a_write_error_is_an_answer_and_the_log_goes_on_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let one = record(&tx(0)).unwrap().len() as u64;
    let config = LogConfig {
        segment_bytes: one / 2,
        ..LogConfig::default()
    };
    let (log, _) = open(dir.path(), config);
    let seq = files(dir.path())[0];
    // The segment after the first rotation is a full disk.
    std::os::unix::fs::symlink("/dev/full", segment_path(dir.path(), seq + 1)).unwrap();
    rt.block_on(log.append(&[tx(0)])).unwrap();
    let err = rt.block_on(log.append(&[tx(1)])).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    assert!(err.to_string().contains("check the disk"), "{err}");
    fs::remove_file(segment_path(dir.path(), seq + 1)).unwrap();
    rt.block_on(log.append(&[tx(2)])).unwrap();
    drop(log);
    let back = recover(dir.path(), config).unwrap().transfers;
    assert_eq!(
        back,
        vec![tx(0), tx(2)],
        "the refused one is not in the log"
    );
}

fn bytes_on_disk(dir: &Path) -> u64 {
    // The writer thread compacts while the test reads: a segment listed here may
    // be gone by the time its size is read, and then holds no bytes.
    files(dir)
        .iter()
        .filter_map(|seq| fs::metadata(segment_path(dir, *seq)).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn long_pending_records_spread_over_every_segment_do_not_fill_the_log() {
    // A few transfers in every batch stay pending (say, waiting for a nonce that
    // never comes) while the rest commit: every segment keeps some live records,
    // and only compacting the segments with the most dead bytes keeps room.
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let one = record(&tx(0)).unwrap().len() as u64;
    let config = LogConfig {
        bytes_max: one * 400,
        segment_bytes: one * 40,
        queued_bytes_max: 1 << 20,
    };
    let (log, _) = open(dir.path(), config);
    let mut live = Vec::new();
    for round in 0..100u64 {
        let txs: Vec<SignedTransfer> = (round * 20..round * 20 + 20).map(tx).collect();
        rt.block_on(log.append(&txs))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // Four in twenty stay in the first 30 rounds: 120 records, under 3/8 of
        // the bound, and a fifth of each segment.
        let keep = |i: usize| round < 30 && i % 5 == 3;
        live.extend(
            txs.iter()
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .map(|(_, t)| t.clone()),
        );
        log.forget(
            txs.iter()
                .enumerate()
                .filter(|(i, _)| !keep(*i))
                .map(|(_, t)| t.hash())
                .collect(),
        );
        assert!(
            bytes_on_disk(dir.path()) <= config.bytes_max,
            "round {round}: {} bytes on disk",
            bytes_on_disk(dir.path())
        );
    }
    rt.block_on(log.append(&[])).unwrap();
    drop(log);
    // Forgotten records in segments not yet compacted come back too (the
    // caller drops them against its ledger); every live one must.
    let back: std::collections::HashSet<TxHash> = recover(dir.path(), config)
        .unwrap()
        .transfers
        .iter()
        .map(SignedTransfer::hash)
        .collect();
    let lost = live.iter().filter(|t| !back.contains(&t.hash())).count();
    assert_eq!(lost, 0, "every live record, moved or not, comes back");
}

#[test]
fn the_bound_counts_a_new_segments_magic() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let one = record(&tx(0)).unwrap().len() as u64;
    let magic = MAGIC.len() as u64;
    // Every group ends its segment; after the first there is room for one more
    // record but not for the next segment's magic with it.
    let config = LogConfig {
        bytes_max: magic + 2 * one,
        segment_bytes: 1,
        queued_bytes_max: 1 << 20,
    };
    let (log, _) = open(dir.path(), config);
    rt.block_on(log.append(&[tx(0)])).unwrap();
    let err = rt.block_on(log.append(&[tx(1)])).unwrap_err();
    assert!(matches!(err, LogError::Full { .. }), "{err}");
    assert!(
        bytes_on_disk(dir.path()) <= config.bytes_max,
        "{} bytes on disk, at most {}",
        bytes_on_disk(dir.path()),
        config.bytes_max
    );
}

#[test]
fn a_lowered_bound_reads_every_record_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, _) = open(dir.path(), LogConfig::default());
    let txs: Vec<SignedTransfer> = (0..50).map(tx).collect();
    rt.block_on(log.append(&txs)).unwrap();
    drop(log);
    let small = LogConfig {
        bytes_max: 1024,
        ..LogConfig::default()
    };
    assert_eq!(recover(dir.path(), small).unwrap().transfers, txs);
}
