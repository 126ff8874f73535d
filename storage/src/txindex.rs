//! The compact transaction index: which blocks may hold a transaction id.
//!
//! A full id -> record entry in redb cost ~100 bytes per transfer (0.67x of a
//! ~164-byte transfer), more than the whole erasure-coding saving. This index keeps
//! 6 bytes per transaction: the id's first 4 bytes and the block height (16 bits
//! past the base height of its run). It answers
//! with candidate heights; the caller confirms the full id against the block (whose
//! body it can read or rebuild), so a prefix collision costs one extra block read and
//! never a wrong answer.
//!
//! - New entries go to the redb table `tx_recent` in the block's transaction: one
//!   value per block, its ids' prefixes packed (4 bytes each; appended in height
//!   order, so a commit touches one leaf). A lookup scans them (at most
//!   `index_run_entries` prefixes, 256 KiB by default).
//! - Once `tx_recent` holds `StoreConfig::index_run_entries` entries (65,536 by default) they are written, sorted, to an
//!   immutable run file `<store>.segments/txindex/<seq>.run`, fsynced, and the run
//!   is recorded in the table `tx_runs` in the same redb transaction that empties
//!   `tx_recent`. A run file with no record (a crash before that commit) is deleted
//!   on open.
//! - A run is blocks of [`BLOCK_ENTRIES`] entries (prefix u32 BE, height - base u16
//!   LE), each followed by a 16-byte checksum; a run spans at most [`RUN_SPAN`]
//!   heights (entries further apart go to separate runs); the first prefix of each block (its
//!   fence) is kept in the run's record and in memory, so a lookup reads one block
//!   (1 KiB) per run.
//! - Runs are merged so that lookups do not read one block per 65,536 transactions
//!   forever: [`MERGE_FANOUT`] neighbouring runs (by height) of one size level
//!   (level 0 below `FANOUT` x `index_run_entries` entries, level 1 below
//!   `FANOUT`^2 x, ...) whose heights fit one run's span are merged, streaming,
//!   into one new run; it replaces them in one redb transaction, then their files
//!   are deleted (a crash in between leaves unrecorded files, deleted on open).
//!   Runs keep their files open, so a lookup that started before a merge still
//!   reads the runs it chose. With N transactions and H heights, the runs number
//!   about `(FANOUT - 1) x log_FANOUT(N / index_run_entries)` plus one per
//!   [`RUN_SPAN`] heights.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Entries per checksummed block of a run file.
const BLOCK_ENTRIES: usize = 128;
const ENTRY_BYTES: usize = 6;
/// Heights a run may span (its entries hold height - base in 16 bits).
pub(crate) const RUN_SPAN: u64 = 1 << 16;
const CHECKSUM_LEN: usize = 16;
const BLOCK_BYTES: usize = BLOCK_ENTRIES * ENTRY_BYTES + CHECKSUM_LEN;
const SUFFIX: &str = "run";
/// Runs merged into one at a time.
pub(crate) const MERGE_FANOUT: usize = 8;
const NAME: &str = "tx_index";

/// What the store records of a run (sealed in the `tx_runs` table, keyed by seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// Lowest height in the run; entries hold height - base.
    pub base: u64,
    /// Entries in the run.
    pub entries: u64,
    /// The first prefix of each block.
    pub fences: Vec<u32>,
}

/// A run, with its file open: a merge that replaces it may delete the file while a
/// lookup still reads it.
#[derive(Debug)]
pub(crate) struct Run {
    seq: u64,
    record: RunRecord,
    file: File,
}

impl Run {
    /// Its sequence number.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

/// The runs on disk, shared by lookups, the writer and merges.
pub(crate) struct Runs {
    dir: PathBuf,
    /// Sorted by base height (runs never overlap in height).
    runs: RwLock<Vec<Arc<Run>>>,
    /// The next sequence number to hand out.
    next: AtomicU64,
}

fn io_error(what: String, e: std::io::Error) -> StoreError {
    StoreError::Io {
        what: format!("transaction index: {what}"),
        source: e,
    }
}

/// The prefix an id is indexed by.
pub(crate) fn prefix(id: &[u8; 32]) -> u32 {
    u32::from_be_bytes([id[0], id[1], id[2], id[3]])
}

fn block_checksum(seq: u64, block: u64, entries: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NAME.as_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(&block.to_le_bytes());
    hasher.update(entries);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..CHECKSUM_LEN]);
    out
}

impl Runs {
    /// Loads the recorded runs and deletes run files with no record.
    pub(crate) fn open(dir: PathBuf, recorded: Vec<(u64, RunRecord)>) -> Result<Self, StoreError> {
        crate::durable::create_dir_durably(&dir)
            .map_err(|e| io_error(format!("cannot create {}", dir.display()), e))?;
        let entries = fs::read_dir(&dir)
            .map_err(|e| io_error(format!("cannot list {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(format!("cannot list {}", dir.display()), e))?;
            let file_name = entry.file_name();
            let Some(seq) = file_name
                .to_str()
                .and_then(|f| f.strip_suffix(SUFFIX))
                .and_then(|f| f.strip_suffix('.'))
                .and_then(|f| u64::from_str_radix(f, 16).ok())
            else {
                continue;
            };
            if !recorded.iter().any(|(s, _)| *s == seq) {
                fs::remove_file(entry.path()).map_err(|e| {
                    io_error(format!("cannot remove {}", entry.path().display()), e)
                })?;
            }
        }
        let runs = Runs {
            dir,
            runs: RwLock::new(Vec::new()),
            next: AtomicU64::new(recorded.iter().map(|(s, _)| s + 1).max().unwrap_or(0)),
        };
        for (seq, record) in recorded {
            runs.publish(seq, record)?;
        }
        Ok(runs)
    }

    /// Opens run `seq`'s file and checks its length against `record`.
    fn load(&self, seq: u64, record: RunRecord) -> Result<Run, StoreError> {
        let path = self.path(seq);
        let unreadable = |e| {
            io_error(
                format!("run {} is recorded but unreadable", path.display()),
                e,
            )
        };
        let file = File::open(&path).map_err(unreadable)?;
        let len = file.metadata().map_err(unreadable)?.len();
        if len != run_bytes(record.entries) || record.fences.len() as u64 != blocks(record.entries)
        {
            return Err(StoreError::Corrupt {
                table: NAME,
                key: format!("run {seq:016x}"),
                reason: format!(
                    "file is {len} bytes with {} fences for {} entries",
                    record.fences.len(),
                    record.entries
                ),
            });
        }
        Ok(Run { seq, record, file })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Run>>> {
        self.runs.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016x}.{SUFFIX}"))
    }

    /// A new run's sequence number (never handed out twice).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of runs.
    pub(crate) fn count(&self) -> usize {
        self.runs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Number of runs and bytes of their files.
    pub(crate) fn bytes(&self) -> u64 {
        let runs = self.runs.read().unwrap_or_else(PoisonError::into_inner);
        runs.iter().map(|r| run_bytes(r.record.entries)).sum()
    }

    /// Heights in the runs whose entries carry `prefix`.
    pub(crate) fn lookup(&self, prefix: u32, out: &mut Vec<u64>) -> Result<(), StoreError> {
        let runs: Vec<Arc<Run>> = self
            .runs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for run in runs {
            let fences = &run.record.fences;
            // Entries with this prefix start in the last block whose fence is below
            // it (or the first block) and end before the first fence above it.
            let from = fences.partition_point(|f| *f < prefix).saturating_sub(1);
            let to = fences.partition_point(|f| *f <= prefix);
            if from >= to {
                continue;
            }
            for block in from..to {
                let entries = self.read_block(&run, block as u64)?;
                for entry in entries.chunks_exact(ENTRY_BYTES) {
                    let p = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
                    if p == prefix {
                        let delta = u16::from_le_bytes([entry[4], entry[5]]);
                        out.push(run.record.base + u64::from(delta));
                    }
                }
            }
        }
        Ok(())
    }

    /// Block `block` of `run`: its entries, checksum checked.
    fn read_block(&self, run: &Run, block: u64) -> Result<Vec<u8>, StoreError> {
        let in_block = block_entries(run.record.entries, block);
        let mut bytes = vec![0u8; in_block * ENTRY_BYTES + CHECKSUM_LEN];
        run.file
            .read_exact_at(&mut bytes, block * BLOCK_BYTES as u64)
            .map_err(|e| io_error(format!("cannot read {}", self.path(run.seq).display()), e))?;
        let sum = bytes.split_off(in_block * ENTRY_BYTES);
        if sum != block_checksum(run.seq, block, &bytes) {
            return Err(StoreError::Corrupt {
                table: NAME,
                key: format!("run {:016x} block {block}", run.seq),
                reason: "checksum mismatch".into(),
            });
        }
        Ok(bytes)
    }

    /// Writes `entries` (sorted by prefix, then height, spanning at most
    /// [`RUN_SPAN`] heights) as run `seq`, durably, and returns its record. The caller records it in the transaction that removes
    /// the entries from `tx_recent`, then calls [`Self::publish`].
    pub(crate) fn write_run(
        &self,
        seq: u64,
        entries: &[(u32, u64)],
    ) -> Result<RunRecord, StoreError> {
        let base = entries.iter().map(|(_, h)| *h).min().unwrap_or(0);
        let written = RunWriter::create(self, seq, base).and_then(|mut writer| {
            for (prefix, height) in entries {
                writer.push(*prefix, *height)?;
            }
            writer.finish()
        });
        if written.is_err() {
            self.discard(seq);
        }
        written
    }

    /// Runs due for a merge: the oldest [`MERGE_FANOUT`] neighbours of one size
    /// level whose heights fit one run. `unit` is `index_run_entries`; `tip` gives
    /// the highest committed height, read after the runs are listed (a run is
    /// published only after its heights commit, so it bounds every listed run).
    pub(crate) fn merge_candidates(
        &self,
        unit: u64,
        tip: impl FnOnce() -> Result<u64, StoreError>,
    ) -> Result<Option<Vec<Arc<Run>>>, StoreError> {
        let runs: Vec<Arc<Run>> = self
            .runs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if runs.len() < MERGE_FANOUT {
            return Ok(None);
        }
        let tip = tip()?;
        let level = |entries: u64| {
            let mut level = 0u32;
            let mut bound = unit.max(1).saturating_mul(MERGE_FANOUT as u64);
            while entries >= bound && bound < u64::MAX {
                level += 1;
                bound = bound.saturating_mul(MERGE_FANOUT as u64);
            }
            level
        };
        Ok((0..=runs.len() - MERGE_FANOUT).find_map(|i| {
            let group = &runs[i..i + MERGE_FANOUT];
            let first = level(group[0].record.entries);
            if group.iter().any(|r| level(r.record.entries) != first) {
                return None;
            }
            // Every height of the group is below the next run's base (or at most
            // the tip): the merged run's heights must fit its 16-bit offsets.
            let end = runs
                .get(i + MERGE_FANOUT)
                .map_or(tip.saturating_add(1), |next| next.record.base);
            (end.saturating_sub(group[0].record.base) <= RUN_SPAN).then(|| group.to_vec())
        }))
    }

    /// Merges `inputs` (see [`Self::merge_candidates`]) into run `seq`, durably,
    /// reading and writing one block at a time. The caller records it in place of
    /// the inputs, then calls [`Self::replace`].
    pub(crate) fn merge(&self, seq: u64, inputs: &[Arc<Run>]) -> Result<RunRecord, StoreError> {
        let base = inputs.iter().map(|r| r.record.base).min().unwrap_or(0);
        let merged = self.merge_into(RunWriter::create(self, seq, base)?, inputs);
        if merged.is_err() {
            self.discard(seq);
        }
        merged
    }

    fn merge_into(
        &self,
        mut writer: RunWriter<'_>,
        inputs: &[Arc<Run>],
    ) -> Result<RunRecord, StoreError> {
        // One cursor per input: its current block, position in it, next block.
        struct Cursor {
            entries: Vec<u8>,
            at: usize,
            next_block: u64,
        }
        let mut cursors: Vec<Cursor> = inputs
            .iter()
            .map(|_| Cursor {
                entries: Vec::new(),
                at: 0,
                next_block: 0,
            })
            .collect();
        let mut heap = BinaryHeap::new();
        let advance = |i: usize, cursor: &mut Cursor| -> Result<Option<(u32, u64)>, StoreError> {
            let run = &inputs[i];
            if cursor.at >= cursor.entries.len() {
                if cursor.next_block >= blocks(run.record.entries) {
                    return Ok(None);
                }
                cursor.entries = self.read_block(run, cursor.next_block)?;
                cursor.next_block += 1;
                cursor.at = 0;
            }
            let e = &cursor.entries[cursor.at..cursor.at + ENTRY_BYTES];
            cursor.at += ENTRY_BYTES;
            let prefix = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let height = run.record.base + u64::from(u16::from_le_bytes([e[4], e[5]]));
            Ok(Some((prefix, height)))
        };
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if let Some((prefix, height)) = advance(i, cursor)? {
                heap.push(Reverse((prefix, height, i)));
            }
        }
        while let Some(Reverse((prefix, height, i))) = heap.pop() {
            writer.push(prefix, height)?;
            if let Some((prefix, height)) = advance(i, &mut cursors[i])? {
                heap.push(Reverse((prefix, height, i)));
            }
        }
        writer.finish()
    }

    /// Makes a merged run visible in place of `inputs`, in one step for lookups,
    /// then deletes the inputs' files (lookups that hold them keep reading them).
    pub(crate) fn replace(
        &self,
        inputs: &[Arc<Run>],
        seq: u64,
        record: RunRecord,
    ) -> Result<(), StoreError> {
        let merged = Arc::new(self.load(seq, record)?);
        {
            let mut runs = self.write();
            runs.retain(|r| !inputs.iter().any(|i| i.seq == r.seq));
            let at = runs.partition_point(|r| r.record.base < merged.record.base);
            runs.insert(at, merged);
        }
        for input in inputs {
            let path = self.path(input.seq);
            fs::remove_file(&path)
                .map_err(|e| io_error(format!("cannot remove {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Deletes the file of a run that was written but not recorded.
    pub(crate) fn discard(&self, seq: u64) {
        // An unrecorded file is deleted on the next open anyway.
        let _ = fs::remove_file(self.path(seq));
    }

    /// Makes a written run visible to lookups (before its entries leave
    /// `tx_recent`, so a lookup in between sees them twice rather than not at all).
    pub(crate) fn publish(&self, seq: u64, record: RunRecord) -> Result<(), StoreError> {
        let run = Arc::new(self.load(seq, record)?);
        let mut runs = self.write();
        let at = runs.partition_point(|r| r.record.base < run.record.base);
        runs.insert(at, run);
        Ok(())
    }

    /// Forgets a run whose recording failed. Its file stays: the commit may have
    /// become durable despite the error, and an unrecorded file is deleted on the
    /// next open.
    pub(crate) fn unpublish(&self, seq: u64) {
        self.write().retain(|r| r.seq != seq);
    }

    /// The directory of run files.
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// Writes a run file block by block.
struct RunWriter<'a> {
    runs: &'a Runs,
    seq: u64,
    base: u64,
    out: BufWriter<File>,
    block: Vec<u8>,
    in_block: usize,
    blocks: u64,
    entries: u64,
    fences: Vec<u32>,
}

impl<'a> RunWriter<'a> {
    fn create(runs: &'a Runs, seq: u64, base: u64) -> Result<Self, StoreError> {
        let path = runs.path(seq);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(format!("cannot create {}", path.display()), e))?;
        Ok(RunWriter {
            runs,
            seq,
            base,
            out: BufWriter::with_capacity(256 * 1024, file),
            block: Vec::with_capacity(BLOCK_ENTRIES * ENTRY_BYTES),
            in_block: 0,
            blocks: 0,
            entries: 0,
            fences: Vec::new(),
        })
    }

    fn error(&self, e: std::io::Error) -> StoreError {
        io_error(
            format!("cannot write {}", self.runs.path(self.seq).display()),
            e,
        )
    }

    /// Adds an entry (entries come sorted by prefix, then height).
    fn push(&mut self, prefix: u32, height: u64) -> Result<(), StoreError> {
        let delta = height
            .checked_sub(self.base)
            .and_then(|d| u16::try_from(d).ok())
            .ok_or_else(|| StoreError::Corrupt {
                table: NAME,
                key: format!("run {:016x}", self.seq),
                reason: format!(
                    "heights {}..={height} span more than {RUN_SPAN} blocks",
                    self.base
                ),
            })?;
        if self.in_block == 0 {
            self.fences.push(prefix);
        }
        self.block.extend_from_slice(&prefix.to_be_bytes());
        self.block.extend_from_slice(&delta.to_le_bytes());
        self.in_block += 1;
        self.entries += 1;
        if self.in_block == BLOCK_ENTRIES {
            self.end_block()?;
        }
        Ok(())
    }

    fn end_block(&mut self) -> Result<(), StoreError> {
        let sum = block_checksum(self.seq, self.blocks, &self.block);
        let written = self
            .out
            .write_all(&self.block)
            .and_then(|()| self.out.write_all(&sum));
        written.map_err(|e| self.error(e))?;
        self.block.clear();
        self.in_block = 0;
        self.blocks += 1;
        Ok(())
    }

    /// Ends the last block and makes the file durable.
    fn finish(mut self) -> Result<RunRecord, StoreError> {
        if self.in_block > 0 {
            self.end_block()?;
        }
        let synced = self
            .out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all())
            .and_then(|()| File::open(&self.runs.dir)?.sync_all());
        synced.map_err(|e| self.error(e))?;
        Ok(RunRecord {
            base: self.base,
            entries: self.entries,
            fences: self.fences,
        })
    }
}

fn blocks(entries: u64) -> u64 {
    entries.div_ceil(BLOCK_ENTRIES as u64)
}

fn block_entries(entries: u64, block: u64) -> usize {
    let before = block * BLOCK_ENTRIES as u64;
    (entries - before).min(BLOCK_ENTRIES as u64) as usize
}

fn run_bytes(entries: u64) -> u64 {
    entries * ENTRY_BYTES as u64 + blocks(entries) * CHECKSUM_LEN as u64
}

/// Splits entries sorted by (prefix, height) into groups that each span at most
/// [`RUN_SPAN`] heights, each still sorted.
pub(crate) fn split_by_span(entries: Vec<(u32, u64)>) -> Vec<Vec<(u32, u64)>> {
    let base = entries.iter().map(|(_, h)| *h).min().unwrap_or(0);
    let mut groups: std::collections::BTreeMap<u64, Vec<(u32, u64)>> = Default::default();
    for entry in entries {
        groups
            .entry((entry.1 - base) / RUN_SPAN)
            .or_default()
            .push(entry);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn runs_find_every_entry_and_only_matching_ones() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::open(dir.path().join("tx"), Vec::new()).unwrap();
        // Many entries share a few prefixes, so matches straddle block boundaries.
        let mut entries: Vec<(u32, u64)> = (0..1000u64)
            .map(|i| (((i * 7919) % 13) as u32 * 1000, 500 + i))
            .collect();
        entries.sort_unstable();
        let record = runs.write_run(runs.next_seq(), &entries).unwrap();
        assert_eq!(record.base, 500);
        assert_eq!(record.fences.len(), 8);
        runs.publish(0, record.clone()).unwrap();
        for p in 0..13u32 {
            let mut found = Vec::new();
            runs.lookup(p * 1000, &mut found).unwrap();
            let mut expected: Vec<u64> = entries
                .iter()
                .filter(|(q, _)| *q == p * 1000)
                .map(|(_, h)| *h)
                .collect();
            found.sort_unstable();
            expected.sort_unstable();
            assert_eq!(found, expected, "prefix {p}");
        }
        let mut none = Vec::new();
        runs.lookup(1, &mut none).unwrap();
        runs.lookup(u32::MAX, &mut none).unwrap();
        assert!(none.is_empty());

        // Reopened with its record it answers the same; without one it is deleted.
        drop(runs);
        let runs = Runs::open(dir.path().join("tx"), vec![(0, record.clone())]).unwrap();
        let mut found = Vec::new();
        runs.lookup(0, &mut found).unwrap();
        assert_eq!(found.len(), entries.iter().filter(|(q, _)| *q == 0).count());
        let path = runs.dir().join("0000000000000000.run");
        drop(runs);

        // A flipped byte is reported, not answered around.
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let runs = Runs::open(dir.path().join("tx"), vec![(0, record)]).unwrap();
        let mut found = Vec::new();
        assert!(matches!(
            runs.lookup(0, &mut found),
            Err(StoreError::Corrupt { .. })
        ));
        drop(runs);
        let runs = Runs::open(dir.path().join("tx"), Vec::new()).unwrap();
        assert!(!path.exists(), "an unrecorded run file is deleted");
        assert_eq!(runs.bytes(), 0);
    }

    #[test]
    fn entries_far_apart_in_height_go_to_separate_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::open(dir.path().join("tx"), Vec::new()).unwrap();
        let entries = vec![(5, 1), (5, 140_001), (9, 65_536), (9, 70_000), (12, 3)];
        let groups = split_by_span(entries.clone());
        assert_eq!(
            groups,
            vec![
                vec![(5, 1), (9, 65_536), (12, 3)],
                vec![(9, 70_000)],
                vec![(5, 140_001)]
            ]
        );
        for group in groups {
            let seq = runs.next_seq();
            let record = runs.write_run(seq, &group).unwrap();
            runs.publish(seq, record).unwrap();
        }
        for prefix in [5, 9, 12] {
            let mut found = Vec::new();
            runs.lookup(prefix, &mut found).unwrap();
            found.sort_unstable();
            let expected: Vec<u64> = entries
                .iter()
                .filter(|(p, _)| *p == prefix)
                .map(|(_, h)| *h)
                .collect();
            assert_eq!(found, expected, "prefix {prefix}");
        }
        // A group wider than a run is refused, not truncated.
        assert!(
            runs.write_run(runs.next_seq(), &[(1, 0), (1, RUN_SPAN)])
                .is_err()
        );
    }

    #[test]
    fn merges_keep_every_entry_within_the_span_and_running_lookups_reading() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::open(dir.path().join("tx"), Vec::new()).unwrap();
        let mut recorded = Vec::new();
        for r in 0..8u64 {
            // Few prefixes, so equal prefixes meet across runs and blocks.
            let mut entries: Vec<(u32, u64)> = (0..50u64)
                .map(|i| (((i * 31 + r * 7) % 11) as u32, 100 + r * 10 + i % 10))
                .collect();
            entries.sort_unstable();
            let seq = runs.next_seq();
            let record = runs.write_run(seq, &entries).unwrap();
            runs.publish(seq, record.clone()).unwrap();
            recorded.push((seq, record));
        }
        let found = |runs: &Runs| -> Vec<Vec<u64>> {
            (0..11)
                .map(|p| {
                    let mut out = Vec::new();
                    runs.lookup(p, &mut out).unwrap();
                    out.sort_unstable();
                    out
                })
                .collect()
        };
        let before = found(&runs);
        assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 400);
        // Heights 100..=179: with a tip that far, one run could not hold them.
        assert!(
            runs.merge_candidates(50, || Ok(100 + RUN_SPAN))
                .unwrap()
                .is_none()
        );
        let inputs = runs.merge_candidates(50, || Ok(179)).unwrap().unwrap();
        assert_eq!(inputs.len(), MERGE_FANOUT);
        let seq = runs.next_seq();
        let record = runs.merge(seq, &inputs).unwrap();
        assert_eq!((record.base, record.entries), (100, 400));
        // A crash now: the merged run is unrecorded, so it goes on open.
        let path = runs.path(seq);
        assert!(path.exists());
        drop(runs);
        let runs = Runs::open(dir.path().join("tx"), recorded.clone()).unwrap();
        assert!(!path.exists());
        assert_eq!(found(&runs), before);
        // Merged and recorded this time.
        let inputs = runs.merge_candidates(50, || Ok(179)).unwrap().unwrap();
        let seq = runs.next_seq();
        let record = runs.merge(seq, &inputs).unwrap();
        runs.replace(&inputs, seq, record.clone()).unwrap();
        assert_eq!(runs.count(), 1);
        assert_eq!(found(&runs), before);
        assert_eq!(runs.bytes(), run_bytes(400));
        // The inputs' files are gone, and a lookup that still holds them reads on.
        assert!(!runs.path(inputs[0].seq).exists());
        assert_eq!(
            runs.read_block(&inputs[0], 0).unwrap().len(),
            50 * ENTRY_BYTES
        );
        drop(inputs);
        drop(runs);
        let runs = Runs::open(dir.path().join("tx"), vec![(seq, record)]).unwrap();
        assert_eq!(found(&runs), before);
        assert_eq!(fs::read_dir(runs.dir()).unwrap().count(), 1);
        // Runs merge with runs of their own size level only: the merged one (400
        // entries, level 1 for a unit of 50) waits while 8 new small ones merge.
        for r in 0..8u64 {
            assert!(
                runs.merge_candidates(50, || Ok(300)).unwrap().is_none(),
                "{r} small runs"
            );
            let seq = runs.next_seq();
            let record = runs.write_run(seq, &[(3, 200 + r)]).unwrap();
            runs.publish(seq, record).unwrap();
        }
        let inputs = runs.merge_candidates(50, || Ok(300)).unwrap().unwrap();
        assert!(inputs.iter().all(|r| r.record.entries == 1));
    }
}
