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

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// Entries per checksummed block of a run file.
const BLOCK_ENTRIES: usize = 128;
const ENTRY_BYTES: usize = 6;
/// Heights a run may span (its entries hold height - base in 16 bits).
pub(crate) const RUN_SPAN: u64 = 1 << 16;
const CHECKSUM_LEN: usize = 16;
const BLOCK_BYTES: usize = BLOCK_ENTRIES * ENTRY_BYTES + CHECKSUM_LEN;
const SUFFIX: &str = "run";
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

#[derive(Debug)]
struct Run {
    seq: u64,
    record: RunRecord,
}

/// The runs on disk, shared by lookups and the writer.
pub(crate) struct Runs {
    dir: PathBuf,
    runs: RwLock<Vec<Arc<Run>>>,
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
        crate::segments::create_dir_durably(&dir)
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
        };
        for (seq, record) in recorded {
            let path = runs.path(seq);
            let len = fs::metadata(&path)
                .map_err(|e| {
                    io_error(
                        format!("run {} is recorded but unreadable", path.display()),
                        e,
                    )
                })?
                .len();
            if len != run_bytes(record.entries)
                || record.fences.len() as u64 != blocks(record.entries)
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
            runs.write().push(Arc::new(Run { seq, record }));
        }
        Ok(runs)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Run>>> {
        self.runs.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016x}.{SUFFIX}"))
    }

    /// The next run's sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        let runs = self.runs.read().unwrap_or_else(PoisonError::into_inner);
        runs.last().map_or(0, |r| r.seq + 1)
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
            let path = self.path(run.seq);
            let file = File::open(&path)
                .map_err(|e| io_error(format!("cannot open {}", path.display()), e))?;
            for block in from..to {
                let in_block = block_entries(run.record.entries, block as u64);
                let mut bytes = vec![0u8; in_block * ENTRY_BYTES + CHECKSUM_LEN];
                file.read_exact_at(&mut bytes, (block * BLOCK_BYTES) as u64)
                    .map_err(|e| io_error(format!("cannot read {}", path.display()), e))?;
                let (entries, sum) = bytes.split_at(in_block * ENTRY_BYTES);
                if sum != block_checksum(run.seq, block as u64, entries) {
                    return Err(StoreError::Corrupt {
                        table: NAME,
                        key: format!("run {:016x} block {block}", run.seq),
                        reason: "checksum mismatch".into(),
                    });
                }
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

    /// Writes `entries` (sorted by prefix, then height, spanning at most
    /// [`RUN_SPAN`] heights) as run `seq`, durably, and returns its record. The caller records it in the transaction that removes
    /// the entries from `tx_recent`, then calls [`Self::publish`].
    pub(crate) fn write_run(
        &self,
        seq: u64,
        entries: &[(u32, u64)],
    ) -> Result<RunRecord, StoreError> {
        let base = entries.iter().map(|(_, h)| *h).min().unwrap_or(0);
        let path = self.path(seq);
        let mut out = Vec::with_capacity(run_bytes(entries.len() as u64) as usize);
        let mut fences = Vec::with_capacity(entries.len().div_ceil(BLOCK_ENTRIES));
        for (block, chunk) in entries.chunks(BLOCK_ENTRIES).enumerate() {
            fences.push(chunk[0].0);
            let start = out.len();
            for (prefix, height) in chunk {
                let delta = u16::try_from(height - base).map_err(|_| StoreError::Corrupt {
                    table: NAME,
                    key: format!("run {seq:016x}"),
                    reason: format!("heights {base}..={height} span more than {RUN_SPAN} blocks"),
                })?;
                out.extend_from_slice(&prefix.to_be_bytes());
                out.extend_from_slice(&delta.to_le_bytes());
            }
            let sum = block_checksum(seq, block as u64, &out[start..]);
            out.extend_from_slice(&sum);
        }
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)?;
            file.write_all(&out)?;
            file.sync_all()?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| io_error(format!("cannot write {}", path.display()), e))?;
        Ok(RunRecord {
            base,
            entries: entries.len() as u64,
            fences,
        })
    }

    /// Makes a written run visible to lookups (before its entries leave
    /// `tx_recent`, so a lookup in between sees them twice rather than not at all).
    pub(crate) fn publish(&self, seq: u64, record: RunRecord) {
        self.write().push(Arc::new(Run { seq, record }));
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
        runs.publish(0, record.clone());
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
            runs.publish(seq, record);
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
}
