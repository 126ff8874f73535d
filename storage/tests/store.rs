//! The durable store: ordering, reads, pruning and rebuild, repair, corruption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use common::{K, TestSchema, block, body_for, peer_fragment, tx_id};
use mosaic_storage::{CodingError, FragmentState, Store, StoreConfig, StoreError, placement};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn config(validator_index: u32, body_window_blocks: u64) -> StoreConfig {
    StoreConfig {
        validator_index,
        body_window_blocks,
        ..StoreConfig::default()
    }
}

#[test]
fn commits_in_order_and_reads_back_after_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.redb");
    {
        let store = Store::<TestSchema>::open(&path, config(1, 100))?;
        assert_eq!(store.tip()?, None);
        assert!(matches!(
            store.commit_block(block(2, 1)),
            Err(StoreError::OutOfOrder { tip: None, got: 2 })
        ));
        for h in 1..=5 {
            store.commit_block(block(h, 1))?;
        }
        assert!(matches!(
            store.commit_block(block(5, 1)),
            Err(StoreError::OutOfOrder { .. })
        ));
        store.put_safety_record(&(7, 9))?;
    }
    let store = Store::<TestSchema>::open(&path, config(1, 100))?;
    assert_eq!(store.tip()?, Some(5));
    for h in 1..=5 {
        let expected = block(h, 1);
        assert_eq!(store.header(h)?, Some(expected.header));
        assert_eq!(store.certificate(h)?, Some(expected.certificate));
        assert_eq!(store.body(h)?, Some(body_for(h)));
        assert_eq!(store.own_fragment(h)?, Some(expected.own_fragment));
    }
    assert_eq!(store.header(6)?, None);
    assert_eq!(store.account(&4)?, Some(4));
    assert_eq!(store.account(&1003)?, Some(6));
    assert_eq!(store.accounts()?.len(), 5 + 5);
    assert_eq!(store.safety_record()?, Some((7, 9)));
    assert_eq!(store.tx_records(&tx_id(3))?, vec![(3, (3, 0))]);
    assert_eq!(store.tx_records(&tx_id(6))?, vec![]);
    let sizes: std::collections::BTreeMap<&str, u64> = store.table_bytes()?.into_iter().collect();
    for table in [
        "headers",
        "certificates",
        "fragments",
        "bodies",
        "accounts",
        "tx_records",
        "meta",
        "fragment_segments",
        "body_segments",
    ] {
        assert!(
            sizes.get(table).is_some_and(|b| *b > 0),
            "{table}: {sizes:?}"
        );
    }
    // Five bodies of body_for(h) are in the segment files, each with a 28-byte header.
    let bodies: u64 = (1..=5).map(|h| body_for(h).len() as u64 + 28).sum();
    assert_eq!(sizes["body_segments"], bodies, "{sizes:?}");
    Ok(())
}

#[test]
fn initialize_writes_genesis_accounts_once_and_refuses_another_genesis() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.redb");
    {
        let store = Store::<TestSchema>::open(&path, config(0, 100))?;
        store.initialize([1; 32], &[(7, 70), (8, 80)])?;
        store.commit_block(block(1, 0))?;
    }
    let store = Store::<TestSchema>::open(&path, config(0, 100))?;
    // A second initialize with the same genesis changes nothing.
    store.initialize([1; 32], &[(7, 1)])?;
    assert_eq!(store.account(&7)?, Some(70));
    assert_eq!(store.account(&8)?, Some(80));
    assert!(matches!(
        store.initialize([2; 32], &[]),
        Err(StoreError::WrongGenesis { .. })
    ));
    Ok(())
}

#[test]
fn keeps_consensus_payloads_across_reopen_until_pruned() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.redb");
    {
        let store = Store::<TestSchema>::open(&path, config(0, 100))?;
        for h in [3u64, 1, 2, 2] {
            store.put_payload(h, &[h as u8; 32], &body_for(h))?;
        }
        store.put_payload(2, &[9; 32], b"another digest at 2")?;
        // Record and payloads in one transaction.
        store.put_consensus(Some(&(4, 4)), &[(4, [4; 32], b"four".as_slice())])?;
    }
    let store = Store::<TestSchema>::open(&path, config(0, 100))?;
    let heights: Vec<(u64, u8)> = store
        .payloads()?
        .iter()
        .map(|(h, d, _)| (*h, d[0]))
        .collect();
    assert_eq!(heights, vec![(1, 1), (2, 2), (2, 9), (3, 3), (4, 4)]);
    assert_eq!(store.payloads()?[3].2, body_for(3));
    assert_eq!(store.payloads()?[4].2, b"four");
    assert_eq!(store.safety_record()?, Some((4, 4)));
    store.prune_payloads(2)?;
    let left: Vec<u64> = store.payloads()?.iter().map(|(h, _, _)| *h).collect();
    assert_eq!(left, vec![3, 4]);
    Ok(())
}

#[test]
fn refuses_a_fragment_this_validator_does_not_keep_or_that_is_forged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::<TestSchema>::open(&dir.path().join("s.redb"), config(0, 10))?;
    let mut wrong = block(1, 0);
    wrong.own_fragment = block(1, 1).own_fragment;
    assert!(matches!(
        store.commit_block(wrong),
        Err(StoreError::BadOwnFragment { .. })
    ));
    let mut forged = block(1, 0);
    forged.own_fragment.shard[0] ^= 1;
    assert!(matches!(
        store.commit_block(forged),
        Err(StoreError::BadOwnFragment { .. })
    ));
    let mut short_body = block(1, 0);
    short_body.body.pop();
    assert!(matches!(
        store.commit_block(short_body),
        Err(StoreError::BadBody { .. })
    ));
    assert_eq!(store.tip()?, None, "nothing of a refused block is written");
    store.commit_block(block(1, 0))?;
    Ok(())
}

#[test]
fn prunes_bodies_outside_the_window_and_rebuilds_them_from_fragments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::<TestSchema>::open(&dir.path().join("s.redb"), config(2, 3))?;
    for h in 1..=10 {
        store.commit_block(block(h, 2))?;
    }
    for h in 1..=7 {
        assert_eq!(store.body(h)?, None, "body {h} should be pruned");
        assert!(store.header(h)?.is_some() && store.certificate(h)?.is_some());
        assert!(store.own_fragment(h)?.is_some());
    }
    for h in 8..=10 {
        let rebuilt = store.body_or_rebuild(h, |_| None)?;
        assert!(rebuilt.from_store);
    }
    // Rebuild from the own fragment plus what peers serve; count fetches.
    for h in 1..=7 {
        let mut asked = 0;
        let rebuilt = store.body_or_rebuild(h, |i| {
            asked += 1;
            peer_fragment(h, i)
        })?;
        assert_eq!(rebuilt.body, body_for(h));
        assert!(!rebuilt.from_store);
        assert_eq!(asked, K - 1, "only as many fetches as needed");
    }
    // Peers serving garbage first: reported, then skipped.
    let rebuilt = store.body_or_rebuild(3, |i| {
        let mut f = peer_fragment(3, i)?;
        if i == 0 || i == 1 {
            f.shard[0] ^= 1;
        }
        Some(f)
    })?;
    assert_eq!(rebuilt.body, body_for(3));
    let own = placement::fragment_of(2, 3, 4);
    assert_eq!(
        rebuilt.rejected.len(),
        [0u32, 1].iter().filter(|&&i| i != own).count()
    );
    // Nobody answers: a clear error with counts.
    match store.body_or_rebuild(4, |_| None) {
        Err(StoreError::Rebuild {
            source: CodingError::NotEnoughFragments { found, needed, .. },
            ..
        }) => {
            assert_eq!((found, needed), (1, K));
        }
        other => panic!("expected NotEnoughFragments, got {other:?}"),
    }
    Ok(())
}

#[test]
fn repairs_lost_own_fragments_from_peers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::<TestSchema>::open(&dir.path().join("s.redb"), config(3, 2))?;
    for h in 1..=6 {
        store.commit_block(block(h, 3))?;
    }
    for h in [2, 5] {
        store.forget_own_fragment(h)?;
    }
    assert_eq!(store.missing_fragments(1, 6)?, vec![2, 5]);
    // The index answers the same without reading a fragment, bounded by `max`.
    assert_eq!(store.indexed_own_fragments(1, 6, 100)?, vec![1, 3, 4, 6]);
    assert_eq!(store.indexed_own_fragments(2, 9, 2)?, vec![3, 4]);
    assert!(store.indexed_own_fragments(7, 9, 100)?.is_empty());
    assert!(store.indexed_own_fragments(6, 1, 100)?.is_empty());
    // Height 2's body is pruned: rebuilt from peers. Height 5's is stored: derived.
    store.repair(2, |i| peer_fragment(2, i))?;
    store.repair(5, |_| None)?;
    assert!(store.missing_fragments(1, 6)?.is_empty());
    assert_eq!(store.own_fragment(2)?, Some(block(2, 3).own_fragment));
    assert_eq!(store.own_fragment(5)?, Some(block(5, 3).own_fragment));
    Ok(())
}

#[test]
fn a_flipped_byte_on_disk_is_reported_not_served() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    let marker_height = 3;
    {
        let store = Store::<TestSchema>::open(&path, config(0, 100))?;
        for h in 1..=5 {
            store.commit_block(block(h, 0))?;
        }
    }
    let body = body_for(marker_height);
    let needle = &body[100..164];
    let mut flipped = 0;
    let segments = mosaic_storage::store::segments_dir(&path);
    let mut files = vec![path.clone()];
    for log in ["bodies", "fragments"] {
        for entry in std::fs::read_dir(segments.join(log))? {
            files.push(entry?.path());
        }
    }
    for name in files {
        let mut file = std::fs::read(&name)?;
        let mut at = 0;
        while let Some(pos) = file[at..].windows(needle.len()).position(|w| w == needle) {
            file[at + pos + 10] ^= 0x01;
            flipped += 1;
            at += pos + needle.len();
        }
        std::fs::write(&name, &file)?;
    }
    assert!(flipped >= 1, "body bytes not found in the files");

    match Store::<TestSchema>::open(&path, config(0, 100)) {
        // Either the database itself notices ...
        Err(StoreError::Corrupt { .. }) | Err(StoreError::Database(_)) => {}
        Ok(store) => {
            // ... or our checksum does, on read: the body counts as pruned (it
            // is rebuilt from fragments) and the fragment as corrupt (repaired).
            match store.body(marker_height) {
                Ok(None) => {}
                other => panic!("corrupt body must not be served: {other:?}"),
            }
            assert!(!matches!(
                store.own_fragment_state(marker_height)?,
                FragmentState::Missing | FragmentState::NoBlock
            ));
            // Other heights are still fine.
            assert_eq!(store.body(1)?, Some(body_for(1)));
            assert!(store.own_fragment(1)?.is_some());
        }
        Err(other) => panic!("unexpected error {other}"),
    }
    Ok(())
}

fn segment_files(path: &std::path::Path, log: &str) -> Vec<std::path::PathBuf> {
    let dir = mosaic_storage::store::segments_dir(path).join(log);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn pruned_bodies_give_their_segment_files_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    // Window 8: body segments roll every 2 bodies.
    let store = Store::<TestSchema>::open(&path, config(1, 8))?;
    for h in 1..=40 {
        store.commit_block(block(h, 1))?;
        let files = segment_files(&path, "bodies").len();
        assert!(files <= 8 / 2 + 2, "height {h}: {files} body segment files");
    }
    let sizes: std::collections::BTreeMap<&str, u64> = store.table_bytes()?.into_iter().collect();
    let window: u64 = (33..=40).map(|h| body_for(h).len() as u64 + 28).sum();
    assert!(sizes["body_segments"] >= window, "{sizes:?}");
    assert!(sizes["body_segments"] <= window * 3 / 2, "{sizes:?}");
    for h in 33..=40 {
        assert_eq!(store.body(h)?, Some(body_for(h)), "body {h}");
    }
    for h in 1..=32 {
        assert_eq!(store.body(h)?, None, "body {h}");
        assert_eq!(store.own_fragment(h)?, Some(block(h, 1).own_fragment));
    }
    // Every fragment is in one segment file, at its exact size plus a header.
    assert_eq!(segment_files(&path, "fragments").len(), 1);
    drop(store);
    // Reopening keeps all of it.
    let store = Store::<TestSchema>::open(&path, config(1, 8))?;
    assert_eq!(store.body(40)?, Some(body_for(40)));
    assert_eq!(store.own_fragment(7)?, Some(block(7, 1).own_fragment));
    Ok(())
}

/// Heights whose bodies the store still keeps, checking each one it has.
fn kept_bodies(store: &Store<TestSchema>, tip: u64) -> Result<Vec<u64>, StoreError> {
    let mut kept = Vec::new();
    for h in 1..=tip {
        if let Some(body) = store.body(h)? {
            assert_eq!(body, body_for(h), "body {h}");
            kept.push(h);
        }
    }
    Ok(kept)
}

/// The longest run of newest bodies up to `tip` within `budget` bytes (at least one).
fn newest_within(tip: u64, budget: u64) -> Vec<u64> {
    let mut kept = vec![tip];
    let mut bytes = body_for(tip).len() as u64;
    for h in (1..tip).rev() {
        bytes += body_for(h).len() as u64;
        if bytes > budget {
            break;
        }
        kept.insert(0, h);
    }
    kept
}

#[test]
fn the_body_window_is_bounded_in_bytes_as_well_as_blocks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    let budget = 8_000;
    let bounded = |blocks, bytes| StoreConfig {
        body_window_bytes: bytes,
        ..config(1, blocks)
    };
    {
        let store = Store::<TestSchema>::open(&path, bounded(1_000, budget))?;
        for h in 1..=30 {
            store.commit_block(block(h, 1))?;
            assert_eq!(kept_bodies(&store, h)?, newest_within(h, budget), "tip {h}");
            // Segments roll every quarter budget: the pruned ones go soon after.
            let sizes: std::collections::BTreeMap<&str, u64> =
                store.table_bytes()?.into_iter().collect();
            assert!(sizes["body_segments"] <= 2 * budget, "tip {h}: {sizes:?}");
        }
    }
    {
        // Reopened with the same bounds, the count of kept bytes carries on.
        let store = Store::<TestSchema>::open(&path, bounded(1_000, budget))?;
        for h in 31..=40 {
            store.commit_block(block(h, 1))?;
            assert_eq!(kept_bodies(&store, h)?, newest_within(h, budget), "tip {h}");
        }
    }
    {
        // A smaller window in blocks after a restart is caught up at the next commit.
        let store = Store::<TestSchema>::open(&path, bounded(2, budget))?;
        store.commit_block(block(41, 1))?;
        assert_eq!(kept_bodies(&store, 41)?, vec![40, 41]);
    }
    {
        // A body larger than the whole budget is still kept while it is the newest.
        let store = Store::<TestSchema>::open(&path, bounded(1_000, 100))?;
        for h in 42..=45 {
            store.commit_block(block(h, 1))?;
            assert_eq!(kept_bodies(&store, h)?, vec![h]);
        }
        // Pruned bodies are still rebuilt from fragments.
        let rebuilt = store.body_or_rebuild(43, |i| peer_fragment(43, i))?;
        assert_eq!(rebuilt.body, body_for(43));
        assert!(!rebuilt.from_store);
    }
    {
        // No body window at all: the kept bodies go too.
        let store = Store::<TestSchema>::open(&path, bounded(0, 0))?;
        store.commit_block(block(46, 1))?;
        assert_eq!(kept_bodies(&store, 46)?, Vec::<u64>::new());
    }
    Ok(())
}

#[test]
fn bytes_appended_but_never_committed_are_cut_off_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    {
        let store = Store::<TestSchema>::open(&path, config(0, 100))?;
        for h in 1..=3 {
            store.commit_block(block(h, 0))?;
        }
    }
    // What a crash between the append and the redb commit leaves: a torn record at
    // the end of the active segment and a segment file after it.
    let fragments = segment_files(&path, "fragments");
    let last = fragments.last().ok_or("no fragment segment")?.clone();
    let committed_len = std::fs::metadata(&last)?.len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&last)?;
        f.write_all(&[0xAB; 300])?;
    }
    let stray = last.with_file_name("00000000000000ff.seg");
    std::fs::write(&stray, b"half a segment")?;
    std::fs::write(last.with_file_name("notes.txt"), b"not ours")?;

    let store = Store::<TestSchema>::open(&path, config(0, 100))?;
    assert_eq!(std::fs::metadata(&last)?.len(), committed_len);
    assert!(!stray.exists(), "an uncommitted segment is removed");
    assert!(
        last.with_file_name("notes.txt").exists(),
        "other files are left alone"
    );
    for h in 1..=3 {
        assert_eq!(store.own_fragment(h)?, Some(block(h, 0).own_fragment));
    }
    // Appends go on from the committed end.
    store.commit_block(block(4, 0))?;
    drop(store);
    let store = Store::<TestSchema>::open(&path, config(0, 100))?;
    assert_eq!(store.own_fragment(4)?, Some(block(4, 0).own_fragment));
    assert_eq!(store.body(4)?, Some(body_for(4)));
    Ok(())
}

#[test]
fn a_store_with_short_segment_files_opens_degraded_and_repairs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    {
        let store = Store::<TestSchema>::open(&path, config(1, 100))?;
        for h in 1..=6 {
            store.commit_block(block(h, 1))?;
        }
    }
    // The fragment file loses its second half, the body file a few bytes (height
    // 6's body).
    for (log, keep) in [("fragments", 2u64), ("bodies", 0)] {
        let files = segment_files(&path, log);
        let last = files.last().ok_or("no segment")?;
        let len = std::fs::metadata(last)?.len();
        let cut = len.checked_div(keep).unwrap_or(len - 10);
        std::fs::OpenOptions::new()
            .write(true)
            .open(last)?
            .set_len(cut)?;
    }
    let store = Store::<TestSchema>::open(&path, config(1, 100))?;
    let damage = store.open_damage();
    assert!(damage.is_degraded());
    assert!(damage.fragments.is_some_and(|d| d.found < d.committed));
    assert!(damage.bodies.is_some());
    // What survived is served; what was lost reads as missing or corrupt.
    assert_eq!(store.own_fragment(1)?, Some(block(1, 1).own_fragment));
    assert_eq!(store.body(1)?, Some(body_for(1)));
    assert_eq!(store.body(6)?, None);
    let lost: Vec<u64> = (1..=6)
        .filter(|h| !matches!(store.own_fragment_state(*h), Ok(FragmentState::Good { .. })))
        .collect();
    assert!(lost.contains(&6) && !lost.contains(&1), "{lost:?}");
    assert_eq!(store.missing_fragments(1, 6)?, lost);
    // Repair: from the body where it is kept, from peers otherwise.
    for h in &lost {
        store.repair(*h, |i| peer_fragment(*h, i))?;
    }
    assert!(store.missing_fragments(1, 6)?.is_empty());
    // The store goes on committing, and reopens clean.
    store.commit_block(block(7, 1))?;
    drop(store);
    let store = Store::<TestSchema>::open(&path, config(1, 100))?;
    assert!(!store.open_damage().is_degraded());
    for h in 1..=7 {
        assert_eq!(
            store.own_fragment(h)?,
            Some(block(h, 1).own_fragment),
            "{h}"
        );
    }
    assert_eq!(
        store.own_fragment_state(8)?,
        FragmentState::NoBlock,
        "no block at 8"
    );
    Ok(())
}

#[test]
fn a_deleted_fragment_segment_file_opens_degraded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    {
        let store = Store::<TestSchema>::open(&path, config(2, 2))?;
        for h in 1..=4 {
            store.commit_block(block(h, 2))?;
        }
    }
    for file in segment_files(&path, "fragments") {
        std::fs::remove_file(file)?;
    }
    let store = Store::<TestSchema>::open(&path, config(2, 2))?;
    assert!(store.open_damage().fragments.is_some());
    assert_eq!(store.missing_fragments(1, 4)?, vec![1, 2, 3, 4]);
    for h in 1..=4 {
        store.repair(h, |i| peer_fragment(h, i))?;
    }
    assert!(store.missing_fragments(1, 4)?.is_empty());
    Ok(())
}

fn ids_of(height: u64, count: u64) -> Vec<[u8; 32]> {
    (0..count)
        .map(|j| {
            *mosaic_crypto::Hash::of(&[height.to_le_bytes(), j.to_le_bytes()].concat()).as_bytes()
        })
        .collect()
}

#[test]
fn the_transaction_index_finds_every_height_across_runs_and_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    let config = StoreConfig {
        index_run_entries: 64,
        ..config(0, 100)
    };
    // An id that shares its first 4 bytes with one at height 7 but is not there.
    let lookalike = {
        let mut id = ids_of(7, 20)[3];
        id[31] ^= 0xFF;
        id
    };
    let check = |store: &Store<TestSchema>| -> TestResult {
        for h in 1..=30 {
            for id in ids_of(h, 20) {
                let heights = store.tx_heights(&id)?;
                assert!(heights.contains(&h), "height {h} missing: {heights:?}");
                assert!(heights.windows(2).all(|w| w[0] < w[1]), "{heights:?}");
            }
        }
        // The prefix collision is a candidate the caller must check; an id that
        // was never committed almost surely finds nothing.
        assert!(store.tx_heights(&lookalike)?.contains(&7));
        assert!(store.tx_heights(&[0x5a; 32])?.is_empty());
        Ok(())
    };
    {
        let store = Store::<TestSchema>::open(&path, config)?;
        for h in 1..=30 {
            let mut block = block(h, 0);
            block.tx_ids = ids_of(h, 20);
            store.commit_block(block)?;
        }
        check(&store)?;
        let sizes: std::collections::BTreeMap<&str, u64> =
            store.table_bytes()?.into_iter().collect();
        // 20 entries per block, a run once 64 are gathered: 7 runs of 80 6-byte
        // entries, each one checksummed block; the last 40 entries wait in redb.
        assert_eq!(sizes["tx_index_runs"], 7 * (80 * 6 + 16), "{sizes:?}");
    }
    let store = Store::<TestSchema>::open(&path, config)?;
    check(&store)?;
    // Commits go on after a reopen, into new runs.
    let mut block31 = block(31, 0);
    block31.tx_ids = ids_of(31, 100);
    store.commit_block(block31)?;
    for id in ids_of(31, 100) {
        assert_eq!(store.tx_heights(&id)?, vec![31]);
    }
    check(&store)?;
    Ok(())
}

#[test]
fn index_runs_are_merged_and_every_transaction_is_still_found() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    let config = StoreConfig {
        index_run_entries: 16,
        ..config(0, 100)
    };
    let check = |store: &Store<TestSchema>, top: u64| -> TestResult {
        for h in 1..=top {
            for id in ids_of(h, 16) {
                let heights = store.tx_heights(&id)?;
                assert!(heights.contains(&h), "height {h} missing: {heights:?}");
            }
        }
        assert!(store.tx_heights(&[0x5a; 32])?.is_empty());
        Ok(())
    };
    let runs_dir = dir.path().join("s.redb.segments").join("txindex");
    let files = || -> std::io::Result<usize> { Ok(std::fs::read_dir(&runs_dir)?.count()) };
    {
        let store = Store::<TestSchema>::open(&path, config)?;
        // One 16-entry run per block: 8 of them are due for a merge, and the 8
        // merged runs of 128 in turn.
        for h in 1..=200 {
            let mut block = block(h, 0);
            block.tx_ids = ids_of(h, 16);
            store.commit_block(block)?;
            while store.compact_index()? {}
            match h {
                7 => assert_eq!(store.index_runs(), 7, "merges wait for 8 runs of a level"),
                8 => assert_eq!(store.index_runs(), 1, "8 runs of 16 make one of 128"),
                _ => {}
            }
            // At most 7 runs of each size level (16, 128 and 1,024 entries here).
            assert!(
                store.index_runs() <= 3 * 7,
                "{} runs at {h}",
                store.index_runs()
            );
            if h % 50 == 0 {
                check(&store, h)?;
            }
        }
        // 200 runs of 16 merged, as 200 in base 8 (3*64 + 1*8 + 0): 3 runs of
        // 1,024 entries and 1 of 128.
        assert_eq!(store.index_runs(), 3 + 1);
        assert_eq!(
            files()?,
            store.index_runs(),
            "merged inputs' files are deleted"
        );
        let sizes: std::collections::BTreeMap<&str, u64> =
            store.table_bytes()?.into_iter().collect();
        let blocks = |entries: u64| entries.div_ceil(128);
        assert_eq!(
            sizes["tx_index_runs"],
            200 * 16 * 6 + (3 * blocks(1024) + blocks(128)) * 16,
            "{sizes:?}"
        );
    }
    let store = Store::<TestSchema>::open(&path, config)?;
    assert_eq!(store.index_runs(), 4);
    check(&store, 200)?;
    assert!(!store.compact_index()?, "nothing due");
    Ok(())
}

#[test]
fn full_records_of_one_id_are_kept_per_height() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::<TestSchema>::open(&dir.path().join("s.redb"), config(0, 100))?;
    let again = [7u8; 32];
    for h in 1..=4 {
        let mut block = block(h, 0);
        if h == 2 || h == 4 {
            block.tx_ids.push(again);
            block.tx_records.push((again, (h, 1)));
        }
        store.commit_block(block)?;
    }
    assert_eq!(store.tx_records(&again)?, vec![(2, (2, 1)), (4, (4, 1))]);
    assert_eq!(store.tx_heights(&again)?, vec![2, 4]);
    // Neighbouring ids are not mixed in.
    let mut next = again;
    next[31] += 1;
    assert!(store.tx_records(&next)?.is_empty());
    Ok(())
}

#[test]
fn live_ids_are_kept_until_the_tip_passes_them_and_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    {
        let store = Store::<TestSchema>::open(&path, config(0, 100))?;
        for h in 1..=3 {
            let mut block = block(h, 0);
            // Each block names an id that matters until height h + 2, and one that
            // never matters past its own height.
            block.live_ids.push(([h as u8; 32], h + 2));
            block.live_ids.push(([100 + h as u8; 32], h));
            store.commit_block(block)?;
        }
        let mut live = store.live_ids()?;
        live.sort();
        assert_eq!(
            live,
            vec![([2u8; 32], 2, 4), ([3u8; 32], 3, 5)],
            "id 1 (until 3) is gone at tip 3; ids until their own height never stay"
        );
    }
    let store = Store::<TestSchema>::open(&path, config(0, 100))?;
    store.commit_block(block(4, 0))?;
    assert_eq!(store.live_ids()?, vec![([3u8; 32], 3, 5)]);
    Ok(())
}
