//! Append-only segment files for the store's large values: this validator's
//! fragments and the recent bodies (ADR 007).
//!
//! redb rounds a large value up to a power-of-two run of pages and keeps freed pages
//! in its file, so a fragment of half a block cost ~0.78x of the body and pruned
//! bodies never gave their space back. Here a value costs its exact size plus a
//! 28-byte record header, and pruned bodies are returned to the file system by
//! deleting whole segment files.
//!
//! A record is `height u64 LE | payload length u32 LE | 16-byte checksum | payload`,
//! the checksum over (log name, height, payload) as for redb values. Where a record
//! lives ([`Loc`]) and where the log's committed end is are written in the same redb
//! transaction as the rest of the block, after the record is appended and fsynced.
//! On open, bytes past the committed end (an append whose transaction never
//! committed) are cut off and later segments deleted, so the files and redb always
//! agree.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::durable::{create_dir_durably, sync_dir};
use crate::error::StoreError;

/// Bytes before each payload: height, length, checksum.
pub(crate) const RECORD_HEADER: usize = 8 + 4 + CHECKSUM_LEN;
const CHECKSUM_LEN: usize = 16;
const SUFFIX: &str = "seg";

/// Where a record is: segment number, offset of its header, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// The committed end of a log: everything before `end` in `segment` (and all of
/// the earlier segments) is referenced by committed redb state or garbage from a
/// repair; everything after it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogEnd {
    pub segment: u64,
    pub end: u64,
}

/// A committed segment file found shorter than its committed end when the log
/// opened (a truncated or deleted file): the bytes past `found` are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// The segment number.
    pub segment: u64,
    /// Its committed length.
    pub committed: u64,
    /// The length found on disk.
    pub found: u64,
}

/// When to start a new segment file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Roll {
    /// Size of a segment before the next append goes to a new one.
    pub bytes: u64,
    /// Records in a segment before the next append goes to a new one (bounds how
    /// long pruned bodies wait for their file to be deleted).
    pub records: u64,
}

struct Writer {
    /// The segment appends go to.
    segment: u64,
    file: Option<File>,
    len: u64,
    records: u64,
    /// Segment files on disk.
    on_disk: BTreeSet<u64>,
}

/// One append-only log of records in numbered segment files.
pub(crate) struct Log {
    dir: PathBuf,
    name: &'static str,
    roll: Roll,
    writer: Mutex<Writer>,
}

/// The writer of a log, held from append until its locations are committed.
pub(crate) struct Appender<'a> {
    log: &'a Log,
    writer: MutexGuard<'a, Writer>,
    dirty: bool,
}

/// An fdatasync of one log's appended records (see [`Appender::take_sync`]).
pub(crate) struct PendingSync {
    name: &'static str,
    segment: u64,
    file: File,
}

impl PendingSync {
    /// Makes the records durable.
    pub(crate) fn run(self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|e| {
            io_error(
                self.name,
                format!("cannot sync segment {:016x}", self.segment),
                e,
            )
        })
    }
}

fn io_error(name: &'static str, what: String, e: std::io::Error) -> StoreError {
    StoreError::Io {
        what: format!("{name} segment files: {what}"),
        source: e,
    }
}

fn checksum(name: &str, height: u64, payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(name.len() as u64).to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.update(&height.to_le_bytes());
    hasher.update(payload);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..CHECKSUM_LEN]);
    out
}

impl Log {
    /// Opens the log in `dir`, cutting it back to `committed` (`None`: nothing was
    /// ever committed, so every segment file is removed). A committed segment found
    /// shorter than its committed end (or gone) is padded back and reported as
    /// [`Damage`]: the records it lost read as corrupt, and the store opens anyway.
    pub(crate) fn open(
        dir: PathBuf,
        name: &'static str,
        roll: Roll,
        committed: Option<LogEnd>,
    ) -> Result<(Self, Option<Damage>), StoreError> {
        create_dir_durably(&dir)
            .map_err(|e| io_error(name, format!("cannot create {}", dir.display()), e))?;
        let mut on_disk = BTreeSet::new();
        let entries = fs::read_dir(&dir)
            .map_err(|e| io_error(name, format!("cannot list {}", dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| io_error(name, format!("cannot list {}", dir.display()), e))?;
            let file_name = entry.file_name();
            let Some(segment) = file_name
                .to_str()
                .and_then(|f| f.strip_suffix(SUFFIX))
                .and_then(|f| f.strip_suffix('.'))
                .and_then(|f| u64::from_str_radix(f, 16).ok())
            else {
                continue; // not ours: left alone
            };
            on_disk.insert(segment);
        }
        let log = Log {
            dir,
            name,
            roll,
            writer: Mutex::new(Writer {
                segment: 0,
                file: None,
                len: 0,
                records: 0,
                on_disk: BTreeSet::new(),
            }),
        };
        let (segment, len) = match committed {
            Some(end) => (end.segment, end.end),
            None => (0, 0),
        };
        // Uncommitted segments go; the committed one is cut to its committed end.
        for &later in on_disk.range(segment.saturating_add(u64::from(committed.is_some()))..) {
            let path = log.path(later);
            fs::remove_file(&path)
                .map_err(|e| io_error(name, format!("cannot remove {}", path.display()), e))?;
        }
        on_disk.retain(|s| *s < segment || (committed.is_some() && *s == segment));
        let mut file = None;
        let mut damage = None;
        if committed.is_some() && len > 0 {
            let path = log.path(segment);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_error(name, format!("cannot open {}", path.display()), e))?;
            let actual = f
                .metadata()
                .map_err(|e| io_error(name, format!("cannot stat {}", path.display()), e))?
                .len();
            if actual != len {
                // A longer file holds an append whose transaction never committed.
                // A shorter one lost committed records: it is padded back to its
                // committed length so that later appends keep their offsets, and
                // the lost records read as corrupt until the scrub re-derives them.
                if actual < len {
                    damage = Some(Damage {
                        segment,
                        committed: len,
                        found: actual,
                    });
                }
                f.set_len(len)
                    .map_err(|e| io_error(name, format!("cannot resize {}", path.display()), e))?;
                f.sync_all()
                    .map_err(|e| io_error(name, format!("cannot sync {}", path.display()), e))?;
                sync_dir(&log.dir)
                    .map_err(|e| io_error(name, format!("cannot sync {}", log.dir.display()), e))?;
                on_disk.insert(segment);
            }
            file = Some(f);
        }
        {
            let mut w = log.lock();
            w.segment = segment;
            w.file = file;
            w.len = len;
            w.on_disk = on_disk;
        }
        Ok((log, damage))
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the writer cannot leave a committed record half
        // written (commits happen after appends), so the state is still usable.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(format!("{segment:016x}.{SUFFIX}"))
    }

    /// Takes the writer; appends through it are durable after [`Appender::sync`]
    /// and referenced once the caller's redb transaction commits.
    pub(crate) fn appender(&self) -> Appender<'_> {
        Appender {
            log: self,
            writer: self.lock(),
            dirty: false,
        }
    }

    /// Reads the record at `loc` and checks it is `height`'s and intact. `None`
    /// when its segment file is gone (a body pruned after `loc` was read).
    pub(crate) fn read(&self, loc: Loc, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(loc.segment);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(io_error(
                    self.name,
                    format!("cannot open {}", path.display()),
                    e,
                ));
            }
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            table: self.name,
            key: height.to_string(),
            reason,
        };
        let mut record = vec![0u8; RECORD_HEADER + loc.len as usize];
        file.read_exact_at(&mut record, loc.offset).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                corrupt(format!(
                    "segment {:016x} ends before the record at offset {}",
                    loc.segment, loc.offset
                ))
            } else {
                io_error(self.name, format!("cannot read {}", path.display()), e)
            }
        })?;
        let (head, payload) = record.split_at(RECORD_HEADER);
        let mut h = [0u8; 8];
        h.copy_from_slice(&head[..8]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&head[8..12]);
        if u64::from_le_bytes(h) != height || u32::from_le_bytes(l) != loc.len {
            return Err(corrupt(format!(
                "record at segment {:016x} offset {} is for height {} with {} bytes",
                loc.segment,
                loc.offset,
                u64::from_le_bytes(h),
                u32::from_le_bytes(l)
            )));
        }
        if head[12..] != checksum(self.name, height, payload) {
            return Err(corrupt("checksum mismatch".into()));
        }
        record.drain(..RECORD_HEADER);
        Ok(Some(record))
    }

    /// Deletes the segment files wholly before `segment` (never the one being
    /// appended to). Their records must no longer be referenced.
    pub(crate) fn remove_before(&self, segment: u64) -> Result<(), StoreError> {
        let mut w = self.lock();
        let active = w.segment;
        let old: Vec<u64> = w.on_disk.range(..segment.min(active)).copied().collect();
        for s in old {
            let path = self.path(s);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io_error(
                        self.name,
                        format!("cannot remove {}", path.display()),
                        e,
                    ));
                }
            }
            w.on_disk.remove(&s);
        }
        Ok(())
    }

    /// Bytes in this log's files.
    pub(crate) fn bytes(&self) -> u64 {
        let w = self.lock();
        w.on_disk
            .iter()
            .filter_map(|s| fs::metadata(self.path(*s)).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Appender<'_> {
    /// Appends `height`'s record; the returned location is valid once
    /// [`Self::sync`] returned and the caller committed it.
    pub(crate) fn append(&mut self, height: u64, payload: &[u8]) -> Result<Loc, StoreError> {
        let name = self.log.name;
        let len = u32::try_from(payload.len()).map_err(|_| StoreError::Corrupt {
            table: name,
            key: height.to_string(),
            reason: format!(
                "a {}-byte value does not fit a segment record",
                payload.len()
            ),
        })?;
        let w = &mut *self.writer;
        let full = w.len >= self.log.roll.bytes || w.records >= self.log.roll.records;
        if w.file.is_none() || (full && w.len > 0) {
            let next = if w.file.is_none() && w.len == 0 {
                w.segment
            } else {
                w.segment + 1
            };
            let path = self.log.path(next);
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_error(name, format!("cannot create {}", path.display()), e))?;
            sync_dir(&self.log.dir).map_err(|e| {
                io_error(name, format!("cannot sync {}", self.log.dir.display()), e)
            })?;
            w.segment = next;
            w.file = Some(file);
            w.len = 0;
            w.records = 0;
            w.on_disk.insert(next);
        }
        let offset = w.len;
        let mut record = Vec::with_capacity(RECORD_HEADER + payload.len());
        record.extend_from_slice(&height.to_le_bytes());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&checksum(name, height, payload));
        record.extend_from_slice(payload);
        let segment = w.segment;
        let path = self.log.path(segment);
        let Some(file) = w.file.as_mut() else {
            return Err(io_error(
                name,
                format!("{} is not open", path.display()),
                std::io::Error::from(ErrorKind::NotFound),
            ));
        };
        if let Err(e) = file.write_all_at(&record, offset) {
            // Best effort: drop a partial record so the next append starts clean.
            let _ = file.set_len(offset);
            return Err(io_error(
                name,
                format!("cannot write {}", path.display()),
                e,
            ));
        }
        w.len = offset + record.len() as u64;
        w.records += 1;
        self.dirty = true;
        Ok(Loc {
            segment,
            offset,
            len,
        })
    }

    /// Makes the appended records durable (one fdatasync).
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        match self.take_sync()? {
            Some(pending) => pending.run(),
            None => Ok(()),
        }
    }

    /// The fdatasync that makes the appended records durable, to run on any thread
    /// (`None` when nothing was appended). From here on the records count as synced:
    /// the caller must not reference them unless [`PendingSync::run`] succeeded.
    pub(crate) fn take_sync(&mut self) -> Result<Option<PendingSync>, StoreError> {
        if !self.dirty {
            return Ok(None);
        }
        let segment = self.writer.segment;
        let Some(file) = self.writer.file.as_ref() else {
            self.dirty = false;
            return Ok(None);
        };
        let file = file.try_clone().map_err(|e| {
            io_error(
                self.log.name,
                format!("cannot open segment {segment:016x} for syncing"),
                e,
            )
        })?;
        self.dirty = false;
        Ok(Some(PendingSync {
            name: self.log.name,
            segment,
            file,
        }))
    }

    /// The end to record in the same transaction as the locations.
    pub(crate) fn end(&self) -> LogEnd {
        LogEnd {
            segment: self.writer.segment,
            end: self.writer.len,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;

    use super::*;

    fn roll() -> Roll {
        Roll {
            bytes: 1 << 20,
            records: u64::MAX,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever happens to a segment file's bytes, a read returns the record
        /// that was written or an error, never other bytes and never a panic.
        #[test]
        fn damaged_segment_files_never_serve_wrong_bytes(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
            flips in proptest::collection::vec((any::<u16>(), 1u8..=255), 0..4),
            cut in proptest::option::of(any::<u16>()),
            bogus_len in any::<u32>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = Log::open(dir.path().join("log"), "bodies", roll(), None).unwrap();
            let mut locs = Vec::new();
            {
                let mut appender = log.appender();
                for (h, p) in payloads.iter().enumerate() {
                    locs.push(appender.append(h as u64, p).unwrap());
                }
                appender.sync().unwrap();
            }
            let path = log.path(0);
            let mut bytes = fs::read(&path).unwrap();
            for (at, mask) in &flips {
                let i = *at as usize % bytes.len();
                bytes[i] ^= mask;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut as usize % (bytes.len() + 1));
            }
            fs::write(&path, &bytes).unwrap();
            for (h, (loc, payload)) in locs.iter().zip(&payloads).enumerate() {
                match log.read(*loc, h as u64) {
                    Ok(Some(read)) => prop_assert_eq!(&read, payload),
                    Ok(None) => prop_assert!(false, "file is there"),
                    Err(StoreError::Corrupt { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected error {}", e),
                }
                // A wrong height or length is refused too.
                prop_assert!(log.read(*loc, h as u64 + 1).is_err());
                let wrong = Loc { len: bogus_len % 4096, ..*loc };
                if wrong.len != loc.len {
                    prop_assert!(log.read(wrong, h as u64).is_err());
                }
            }
        }
    }

    #[test]
    fn segments_roll_by_size_and_count_and_reopen_at_the_committed_end() {
        let dir = tempfile::tempdir().unwrap();
        let roll = Roll {
            bytes: 100,
            records: 3,
        };
        let (log, _) = Log::open(dir.path().join("log"), "fragments", roll, None).unwrap();
        let mut locs = Vec::new();
        let end = {
            let mut appender = log.appender();
            for h in 0..10u64 {
                // Records of 28 + 40 bytes: two fit under 100 bytes.
                locs.push(appender.append(h, &[h as u8; 40]).unwrap());
            }
            appender.sync().unwrap();
            appender.end()
        };
        assert_eq!(
            end,
            LogEnd {
                segment: 4,
                end: 2 * (RECORD_HEADER + 40) as u64
            }
        );
        let segments: Vec<u64> = locs.iter().map(|l| l.segment).collect();
        assert_eq!(segments, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        drop(log);
        // Reopened at the end of record 7: records 8 and 9 were never committed.
        let committed = LogEnd {
            segment: locs[7].segment,
            end: locs[7].offset + (RECORD_HEADER + 40) as u64,
        };
        let (log, _) =
            Log::open(dir.path().join("log"), "fragments", roll, Some(committed)).unwrap();
        for (h, loc) in locs.iter().enumerate().take(8) {
            assert_eq!(log.read(*loc, h as u64).unwrap(), Some(vec![h as u8; 40]));
        }
        assert_eq!(log.read(locs[8], 8).unwrap(), None, "segment 4 removed");
        let mut appender = log.appender();
        let next = appender.append(8, &[9; 40]).unwrap();
        assert_eq!(next.segment, 4, "the full segment 3 is not appended to");
        drop(appender);
        log.remove_before(2).unwrap();
        assert_eq!(log.read(locs[1], 1).unwrap(), None);
        assert!(log.read(locs[4], 4).unwrap().is_some());
    }
}
