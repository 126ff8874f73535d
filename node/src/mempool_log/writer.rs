//! The writer thread: group commit (one sync per burst of appends), the index of
//! live records, tombstones and the segments they guard, deletion of spent
//! segments, and compaction past half the byte bound.

use super::*;

pub(super) struct Segment {
    /// Records in it that are live.
    pub(super) live: usize,
    /// Their bytes.
    pub(super) live_bytes: u64,
    /// Bytes in the file.
    pub(super) bytes: u64,
    /// Its tombstones that kill records of other segments: by that segment, their
    /// count and bytes. While such a segment exists, this one is not deleted
    /// (compaction moves those tombstones along).
    pub(super) guards: BTreeMap<u64, (usize, u64)>,
}

impl Segment {
    const EMPTY: Segment = Segment {
        live: 0,
        live_bytes: 0,
        bytes: 0,
        guards: BTreeMap::new(),
    };
}

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) config: LogConfig,
    pub(super) current: u64,
    pub(super) file: File,
    pub(super) segments: BTreeMap<u64, Segment>,
    /// Each logged transfer's records as (segment, offset, length) (a transfer
    /// appended twice has two).
    pub(super) placed: HashMap<TxHash, Vec<(u64, u64, u64)>>,
    /// A failed write left bytes it could not cut: later appends go to a new segment.
    pub(super) broken: bool,
}

impl Writer {
    pub(super) fn create(dir: PathBuf, config: LogConfig, seq: u64) -> Result<Writer, LogError> {
        let file = Self::new_segment(&dir, seq)?;
        let mut segments = BTreeMap::new();
        segments.insert(seq, Segment::EMPTY);
        Ok(Writer {
            dir,
            config,
            current: seq,
            file,
            segments,
            placed: HashMap::new(),
            broken: false,
        })
    }

    pub(super) fn new_segment(dir: &Path, seq: u64) -> Result<File, LogError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, "creating", e))?;
        sync_dir(dir)?;
        Ok(file)
    }

    pub(super) fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    /// Bytes of `seq`'s tombstones that still guard a record of an existing
    /// segment.
    pub(super) fn guard_bytes(&self, seq: u64) -> u64 {
        self.segments.get(&seq).map_or(0, |s| {
            s.guards
                .iter()
                .filter(|(target, _)| self.segments.contains_key(target))
                .map(|(_, (_, bytes))| bytes)
                .sum()
        })
    }

    /// Bytes that compacting `seq` would free.
    pub(super) fn garbage(&self, seq: u64) -> u64 {
        self.segments.get(&seq).map_or(0, |s| {
            s.bytes
                .saturating_sub(s.live_bytes + self.guard_bytes(seq) + MAGIC.len() as u64)
        })
    }

    pub(super) fn guard(&mut self, seq: u64, target: u64, bytes: u64) {
        if target == seq {
            return;
        }
        if let Some(segment) = self.segments.get_mut(&seq) {
            let entry = segment.guards.entry(target).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += bytes;
        }
    }

    pub(super) fn index(&mut self, hash: TxHash, seq: u64, offset: u64, len: u64) {
        self.placed
            .entry(hash)
            .or_default()
            .push((seq, offset, len));
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.live += 1;
            segment.live_bytes += len;
        }
    }

    pub(super) fn dead(&mut self, seq: u64, len: u64) {
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.live -= 1;
            segment.live_bytes -= len;
        }
    }

    pub(super) fn unindex(&mut self, hash: &TxHash, seq: u64) {
        if let Some(places) = self.placed.get_mut(hash) {
            let mut gone = None;
            if let Some(i) = places.iter().position(|(s, _, _)| *s == seq) {
                gone = Some(places.swap_remove(i));
            }
            if places.is_empty() {
                self.placed.remove(hash);
            }
            if let Some((seq, _, len)) = gone {
                self.dead(seq, len);
            }
        }
    }

    /// Forgets `hash`'s records; returns where they were, as (segment, offset).
    pub(super) fn forget(&mut self, hash: &TxHash) -> Vec<(u64, u64)> {
        let places = self.placed.remove(hash).unwrap_or_default();
        for (seq, _, len) in &places {
            self.dead(*seq, *len);
        }
        places
            .into_iter()
            .map(|(seq, offset, _)| (seq, offset))
            .collect()
    }

    /// Where the next byte written to the current segment lands (after the magic a
    /// new segment's first write carries).
    pub(super) fn write_offset(&self) -> u64 {
        match self.segments.get(&self.current) {
            Some(s) if s.bytes > 0 => s.bytes,
            _ => MAGIC.len() as u64,
        }
    }

    /// Appends `bytes` to the current segment and syncs it. On failure the segment
    /// is cut back to where it was; if even that fails, the next write starts a
    /// new segment.
    pub(super) fn write_synced(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        let path = segment_path(&self.dir, self.current);
        let before = self.segments.get(&self.current).map_or(0, |s| s.bytes);
        let magic: &[u8] = if before == 0 { MAGIC } else { &[] };
        let result = self
            .file
            .write_all(&[magic, bytes].concat())
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                if let Some(segment) = self.segments.get_mut(&self.current) {
                    segment.bytes += (magic.len() + bytes.len()) as u64;
                }
                Ok(())
            }
            Err(e) => {
                // Cut what got in and put the cursor back, so the next write follows
                // the last good record with no gap; if either fails, the next write
                // starts a new segment.
                use std::io::Seek;
                let cut = self
                    .file
                    .set_len(before)
                    .and_then(|()| self.file.seek(std::io::SeekFrom::Start(before)).map(|_| ()));
                if cut.is_err() {
                    self.broken = true;
                }
                Err(io_error(&path, "writing", e))
            }
        }
    }

    pub(super) fn run(mut self, requests: mpsc::Receiver<Request>, queued: Arc<AtomicUsize>) {
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            while batch.len() < 4_096 {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.group(batch, &queued);
            self.housekeeping();
        }
    }

    /// Writes every append of `batch` with one sync, in order with its forgets.
    pub(super) fn group(&mut self, batch: Vec<Request>, queued: &AtomicUsize) {
        if self.broken
            && let Err(e) = self.rotate()
        {
            tracing::warn!(error = %e, "mempool log: cannot start a new segment");
        }
        // A new segment's first write carries the magic too.
        let magic = match self.segments.get(&self.current) {
            Some(s) if s.bytes > 0 => 0,
            _ => MAGIC.len() as u64,
        };
        let room = self
            .config
            .bytes_max
            .saturating_sub(self.total_bytes() + magic);
        let mut buffer = Vec::new();
        let mut waiting = Vec::new();
        let mut refused = Vec::new();
        let base = self.write_offset();
        // (target segment, bytes) of the tombstones in this group, for the guards.
        let mut guards: Vec<(u64, u64)> = Vec::new();
        for request in batch {
            match request {
                Request::Append {
                    records,
                    bytes,
                    done,
                } => {
                    queued.fetch_sub(bytes, Ordering::Relaxed);
                    if self.broken || (buffer.len() + bytes) as u64 > room {
                        refused.push(done);
                        continue;
                    }
                    let mut hashes = Vec::with_capacity(records.len());
                    for (hash, bytes) in records {
                        let offset = base + buffer.len() as u64;
                        buffer.extend_from_slice(&bytes);
                        self.index(hash, self.current, offset, bytes.len() as u64);
                        hashes.push(hash);
                    }
                    waiting.push((hashes, done));
                }
                Request::Forget(hashes) => {
                    for hash in &hashes {
                        self.forget(hash);
                    }
                }
                Request::Tombstone(departed) => {
                    for (hash, reason) in departed {
                        for (segment, offset) in self.forget(&hash) {
                            let tombstone = Tombstone {
                                id: hash,
                                segment,
                                offset,
                                reason,
                            };
                            match tombstone_record(&tombstone) {
                                Ok(bytes) => {
                                    guards.push((segment, bytes.len() as u64));
                                    buffer.extend_from_slice(&bytes);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "mempool log: cannot encode a tombstone")
                                }
                            }
                        }
                    }
                }
            }
        }
        let full = LogError::Full {
            bytes: self.total_bytes(),
            max: self.config.bytes_max,
        };
        for done in refused {
            let _ = done.send(Err(if self.broken {
                LogError::Io {
                    path: self.dir.display().to_string(),
                    what: "writing",
                    error: "an earlier write failed and no new segment could be started".into(),
                }
            } else {
                full.clone()
            }));
        }
        if buffer.is_empty() {
            for (_, done) in waiting {
                // A caller that stopped waiting has nothing to be told.
                let _ = done.send(Ok(()));
            }
            return;
        }
        let result = self.write_synced(&buffer);
        if result.is_err() {
            for (hashes, _) in &waiting {
                for hash in hashes {
                    self.unindex(hash, self.current);
                }
            }
            // The tombstones are lost with the write: a restart reads those
            // transfers back and checks them again like any input.
            tracing::warn!(error = ?result, "mempool log: a group commit failed");
        } else {
            for (target, bytes) in guards {
                self.guard(self.current, target, bytes);
            }
        }
        for (_, done) in waiting {
            // A caller that stopped waiting has nothing to be told.
            let _ = done.send(result.clone());
        }
    }

    pub(super) fn rotate(&mut self) -> Result<(), LogError> {
        let seq = self.current + 1;
        self.file = Self::new_segment(&self.dir, seq)?;
        self.current = seq;
        self.broken = false;
        self.segments.insert(seq, Segment::EMPTY);
        Ok(())
    }

    /// Deletes segments nothing live is in, starts a new segment past the size
    /// bound, and past half the byte bound compacts the segments with the most dead
    /// bytes.
    pub(super) fn housekeeping(&mut self) {
        // Oldest first: deleting a segment can release the segments whose
        // tombstones guarded its records.
        let mut dead = Vec::new();
        for (&seq, segment) in &self.segments {
            if seq != self.current && segment.live == 0 {
                dead.push(seq);
            }
        }
        let dead: Vec<u64> = {
            let mut gone = std::collections::BTreeSet::new();
            for seq in dead {
                let guarding = self.segments.get(&seq).is_some_and(|s| {
                    s.guards
                        .keys()
                        .any(|t| self.segments.contains_key(t) && !gone.contains(t))
                });
                if !guarding {
                    gone.insert(seq);
                }
            }
            gone.into_iter().collect()
        };
        let mut deleted = false;
        for seq in dead {
            let path = segment_path(&self.dir, seq);
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.segments.remove(&seq);
                    deleted = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.segments.remove(&seq);
                    deleted = true;
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "mempool log: cannot delete a spent segment");
                }
            }
        }
        if deleted && let Err(e) = sync_dir(&self.dir) {
            tracing::warn!(error = %e, "mempool log");
        }
        let (current_bytes, current_live) = self
            .segments
            .get(&self.current)
            .map_or((0, 0), |s| (s.bytes, s.live));
        // The current segment is closed when it is full, when nothing in it is live
        // any more (so it can be deleted), or when it holds much of the bound (so
        // compaction can reach it).
        let close = current_bytes > self.config.segment_bytes
            || (current_live == 0 && current_bytes > SPENT_CLOSE_BYTES)
            || current_bytes > self.config.bytes_max / 4;
        if close && let Err(e) = self.rotate() {
            tracing::warn!(error = %e, "mempool log: cannot start a new segment");
        }
        for _ in 0..COMPACTIONS_PER_ROUND {
            if self.total_bytes() <= self.config.bytes_max / 2 {
                break;
            }
            let Some(seq) = self.compaction_candidate() else {
                break;
            };
            if let Err(e) = self.compact(seq) {
                tracing::warn!(error = %e, "mempool log: cannot compact");
                break;
            }
        }
    }

    /// The closed segment with the largest share of dead bytes, if at least a
    /// quarter of it is dead: a segment is only rewritten to free at least a third
    /// of what it copies, and the log fills up only when most of what it holds is
    /// pending (the mempool's byte bound keeps that below the log's).
    pub(super) fn compaction_candidate(&self) -> Option<u64> {
        self.segments
            .iter()
            .filter(|(seq, s)| {
                **seq != self.current && self.garbage(**seq) * 4 >= s.bytes && s.bytes > 0
            })
            .max_by(|(a_seq, a), (b_seq, b)| {
                // a.garbage/a.bytes vs b.garbage/b.bytes without division.
                (u128::from(self.garbage(**a_seq)) * u128::from(b.bytes))
                    .cmp(&(u128::from(self.garbage(**b_seq)) * u128::from(a.bytes)))
            })
            .map(|(seq, _)| *seq)
    }

    /// Copies the live records of closed segment `seq` into the current one,
    /// syncs, and deletes the old segment.
    pub(super) fn compact(&mut self, seq: u64) -> Result<(), LogError> {
        if seq == self.current {
            return Ok(());
        }
        let path = segment_path(&self.dir, seq);
        let read = read_segment(&path)?;
        let base = self.write_offset();
        let mut buffer = Vec::new();
        let mut moved = Vec::new();
        let mut guards = Vec::new();
        for record in read.records {
            if self.placed.get(&record.hash).is_some_and(|places| {
                places
                    .iter()
                    .any(|(s, o, _)| *s == seq && *o == record.offset)
            }) {
                let offset = base + buffer.len() as u64;
                buffer.extend_from_slice(&record.bytes);
                moved.push((
                    record.hash,
                    record.offset,
                    offset,
                    record.bytes.len() as u64,
                ));
            }
        }
        // Tombstones whose records still exist elsewhere go along.
        for (tombstone, bytes) in read.tombstones {
            if tombstone.segment != seq
                && tombstone.segment != NO_SEGMENT
                && self.segments.contains_key(&tombstone.segment)
            {
                guards.push((tombstone.segment, bytes.len() as u64));
                buffer.extend_from_slice(&bytes);
            }
        }
        self.write_synced(&buffer)?;
        for (hash, old_offset, offset, len) in &moved {
            if let Some(places) = self.placed.get_mut(hash)
                && let Some(i) = places
                    .iter()
                    .position(|(s, o, _)| *s == seq && o == old_offset)
            {
                places.swap_remove(i);
            }
            self.dead(seq, *len);
            self.index(*hash, self.current, *offset, *len);
        }
        for (target, bytes) in guards {
            self.guard(self.current, target, bytes);
        }
        // Whatever was not found in the file (rot) cannot be moved: it is dropped
        // from the index with the file.
        let leftover: Vec<TxHash> = self
            .placed
            .iter()
            .filter(|(_, places)| places.iter().any(|(s, _, _)| *s == seq))
            .map(|(h, _)| *h)
            .collect();
        for hash in leftover {
            self.unindex(&hash, seq);
        }
        fs::remove_file(&path).map_err(|e| io_error(&path, "deleting", e))?;
        self.segments.remove(&seq);
        sync_dir(&self.dir)
    }
}
