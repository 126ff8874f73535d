//! The mempool log: every transfer this node answers 202 to is on its disk first.
//!
//! - Records go to segment files `<seq>.log` in one folder, each record
//!   `[length u32 LE][first 8 bytes of blake3(payload)][payload]`, the payload the
//!   canonical encoding of the signed transfer, or, when the length's top bit is
//!   set, of a [`Tombstone`]. A segment starts with [`MAGIC`] (or [`MAGIC_V1`],
//!   which has no tombstones; both are read).
//! - One writer thread owns the files. It takes every append queued while it was
//!   busy, writes them together and syncs once (group commit), then answers each: a
//!   burst of submissions costs one fsync, not one each.
//! - A logged transfer that leaves the mempool is forgotten. One that a block
//!   carried (applied or failed) is forgotten in memory only: a restart that reads
//!   it back refuses it against the chain (its nonce is used, or it failed and a
//!   failed transfer is final). One that this node dropped (expired, its nonce used
//!   by another, behind a nonce gap) or refused after logging it gets a
//!   *tombstone*: a record naming the segment and offset of the record it kills,
//!   with the reason, written in the next group commit. Recovery skips every
//!   record a tombstone names, and hands the reasons back for the status API.
//! - A segment whose transfers were all forgotten is deleted once none of its
//!   tombstones still guards a record in a segment that exists; when the log
//!   passes half its byte bound, the live records (and the tombstones still
//!   guarding something) of the segments with the largest share of dead bytes move
//!   to the newest, so the log stays bounded by what is pending, however the
//!   long-pending transfers are spread.
//! - A segment's magic goes out with its first records, so a segment file is
//!   empty or starts with the magic.
//! - On start the node reads every segment ([`recover`]): a torn or corrupt record
//!   ends its segment (a crash mid-write leaves a torn tail; that is cut, never
//!   fatal), the transfers are re-checked by the caller like any input, and the ones
//!   kept are written to a fresh segment before the old ones are deleted.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use mosaic_crypto::{Hash, PublicKey, codec};
use tokio::sync::oneshot;

use crate::ledger::{SignedTransfer, TX_BYTES_MAX, TxHash};
use crate::mempool::Dropped;

/// The first bytes of every segment file written now.
pub const MAGIC: &[u8; 8] = b"mosmplg2";
/// The first bytes of a segment written before tombstones (read the same way).
pub const MAGIC_V1: &[u8; 8] = b"mosmplg1";
/// The length's top bit marks a tombstone record.
const TOMBSTONE_FLAG: u32 = 1 << 31;
/// Largest encoded tombstone.
const TOMBSTONE_BYTES_MAX: usize = 128;
/// A tombstone that kills no record, only keeps a reason (written at start for the
/// reasons a restart read back).
const NO_SEGMENT: u64 = u64::MAX;

/// A record that kills the transfer record at (`segment`, `offset`): the transfer
/// left this node's pool without a block deciding it, and a restart must not take
/// it back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tombstone {
    /// The transfer.
    pub id: TxHash,
    /// The segment of the record it kills ([`NO_SEGMENT`]: none).
    pub segment: u64,
    /// The record's offset in that segment's file.
    pub offset: u64,
    /// Why it left (`None`: refused after it was logged; the client was told so).
    pub reason: Option<Dropped>,
}
/// Bytes before each record's payload.
const RECORD_HEADER: usize = 4 + 8;
/// A current segment with nothing live in it is closed (and deleted) past this size.
const SPENT_CLOSE_BYTES: u64 = 64 * 1024;
/// Segments compacted after one group commit at most (the next group goes on).
const COMPACTIONS_PER_ROUND: usize = 4;

/// Bounds of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Most bytes on disk; an append past it is refused (the node answers 503).
    pub bytes_max: u64,
    /// A segment is closed and a new one started past this size (and past a
    /// quarter of `bytes_max`).
    pub segment_bytes: u64,
    /// Most bytes of appends waiting for the writer; more are refused at once.
    pub queued_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            bytes_max: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            queued_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// Why the log could not keep a transfer, or could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// A file operation failed (disk full, read-only, removed folder).
    #[error(
        "mempool log {path}: {what} failed: {error}; check the disk (free space, permissions) of the node's data_dir"
    )]
    Io {
        /// The file or folder.
        path: String,
        /// The operation.
        what: &'static str,
        /// The OS error.
        error: String,
    },
    /// The log holds as many bytes as it may.
    #[error("mempool log full ({bytes} bytes, at most {max}); try again later")]
    Full {
        /// Bytes on disk.
        bytes: u64,
        /// The bound.
        max: u64,
    },
    /// Too many appends wait for the writer.
    #[error("mempool log busy ({queued} bytes waiting to be written); try again later")]
    Busy {
        /// Bytes waiting.
        queued: usize,
    },
    /// The writer thread is gone (the node is stopping).
    #[error("mempool log stopped")]
    Stopped,
    /// A transfer could not be encoded.
    #[error("cannot encode a transfer for the mempool log: {0}")]
    Encode(String),
}

fn io_error(path: &Path, what: &'static str, error: std::io::Error) -> LogError {
    LogError::Io {
        path: path.display().to_string(),
        what,
        error: error.to_string(),
    }
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&Hash::of(payload).as_bytes()[..8]);
    out
}

fn framed(payload: &[u8], flag: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32 | flag).to_le_bytes());
    out.extend_from_slice(&checksum(payload));
    out.extend_from_slice(payload);
    out
}

fn record(tx: &SignedTransfer) -> Result<Vec<u8>, LogError> {
    let payload = codec::encode(tx).map_err(|e| LogError::Encode(e.to_string()))?;
    Ok(framed(&payload, 0))
}

fn tombstone_record(tombstone: &Tombstone) -> Result<Vec<u8>, LogError> {
    let payload = codec::encode(tombstone).map_err(|e| LogError::Encode(e.to_string()))?;
    Ok(framed(&payload, TOMBSTONE_FLAG))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.log"))
}

/// The segments in `dir`, oldest first. Files that are not segments are left alone.
fn segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, "listing", e))? {
        let entry = entry.map_err(|e| io_error(dir, "listing", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(seq);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// One transfer record read back: its id, the transfer, its bytes and offset.
struct ReadRecord {
    hash: TxHash,
    tx: SignedTransfer,
    bytes: Vec<u8>,
    offset: u64,
}

/// One segment's records, up to the first that is torn or corrupt, and the length
/// of the good prefix.
struct SegmentRead {
    records: Vec<ReadRecord>,
    tombstones: Vec<(Tombstone, Vec<u8>)>,
    good_len: u64,
    file_len: u64,
}

fn read_segment(path: &Path) -> Result<SegmentRead, LogError> {
    let file = File::open(path).map_err(|e| io_error(path, "opening", e))?;
    let file_len = file
        .metadata()
        .map_err(|e| io_error(path, "reading the size of", e))?
        .len();
    let mut reader = std::io::BufReader::new(file);
    let mut records = Vec::new();
    let mut tombstones = Vec::new();
    let mut magic = [0; MAGIC.len()];
    if file_len < MAGIC.len() as u64
        || reader.read_exact(&mut magic).is_err()
        || (&magic != MAGIC && &magic != MAGIC_V1)
    {
        return Ok(SegmentRead {
            records,
            tombstones,
            good_len: 0,
            file_len,
        });
    }
    let mut at = MAGIC.len() as u64;
    // Each record's length is checked against TX_BYTES_MAX before its payload is
    // read; a torn, rotten or undecodable record ends the segment.
    let mut header = [0; RECORD_HEADER];
    while file_len - at >= RECORD_HEADER as u64 {
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let mut len = [0; 4];
        len.copy_from_slice(&header[..4]);
        let len = u32::from_le_bytes(len);
        let is_tombstone = len & TOMBSTONE_FLAG != 0;
        let len = (len & !TOMBSTONE_FLAG) as usize;
        let max = if is_tombstone {
            TOMBSTONE_BYTES_MAX
        } else {
            TX_BYTES_MAX
        };
        if len > max || file_len - at - (RECORD_HEADER as u64) < len as u64 {
            break;
        }
        let mut bytes = vec![0; RECORD_HEADER + len];
        bytes[..RECORD_HEADER].copy_from_slice(&header);
        if reader.read_exact(&mut bytes[RECORD_HEADER..]).is_err() {
            break;
        }
        let payload = &bytes[RECORD_HEADER..];
        if checksum(payload) != header[4..] {
            break;
        }
        if is_tombstone {
            let Ok(tombstone) = codec::decode::<Tombstone>(payload, TOMBSTONE_BYTES_MAX) else {
                break;
            };
            tombstones.push((tombstone, bytes));
        } else {
            let Ok(tx) = codec::decode::<SignedTransfer>(payload, TX_BYTES_MAX) else {
                break;
            };
            records.push(ReadRecord {
                hash: tx.hash(),
                tx,
                bytes,
                offset: at,
            });
        }
        at += (RECORD_HEADER + len) as u64;
    }
    Ok(SegmentRead {
        records,
        tombstones,
        good_len: at,
        file_len,
    })
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "syncing the folder", e))
}

/// What [`recover`] read back.
#[derive(Debug)]
pub struct Recovered {
    dir: PathBuf,
    config: LogConfig,
    old: Vec<u64>,
    /// The logged transfers no tombstone kills, oldest first (not verified: the
    /// caller checks them).
    pub transfers: Vec<SignedTransfer>,
    /// Why this node had dropped the transfers its tombstones name.
    pub dropped: Vec<(TxHash, Dropped)>,
    /// Records killed by tombstones.
    pub killed: usize,
    /// Bytes after the last good record of some segment (a torn tail or rot).
    pub cut_bytes: u64,
}

/// Reads every segment in `dir` (created if missing).
pub fn recover(dir: &Path, config: LogConfig) -> Result<Recovered, LogError> {
    fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating", e))?;
    let old = segments(dir)?;
    let mut records = Vec::new();
    let mut killed = std::collections::HashSet::new();
    let mut dropped = Vec::new();
    let mut cut_bytes = 0;
    let mut good_bytes = 0;
    // Every segment is read whole, whatever the bound is now: a bound lowered since
    // the records were written must not lose transfers that were answered 202.
    for &seq in &old {
        let path = segment_path(dir, seq);
        let read = read_segment(&path)?;
        good_bytes += read.good_len;
        if read.good_len < read.file_len {
            cut_bytes += read.file_len - read.good_len;
            tracing::warn!(
                segment = %path.display(),
                good = read.good_len,
                cut = read.file_len - read.good_len,
                "mempool log: a torn or corrupt tail is cut off"
            );
        }
        for (tombstone, _) in read.tombstones {
            if tombstone.segment != NO_SEGMENT {
                killed.insert((tombstone.segment, tombstone.offset));
            }
            if let Some(reason) = tombstone.reason {
                dropped.push((tombstone.id, reason));
            }
        }
        records.extend(read.records.into_iter().map(|r| (seq, r.offset, r.tx)));
    }
    let before = records.len();
    let transfers: Vec<SignedTransfer> = records
        .into_iter()
        .filter(|(seq, offset, _)| !killed.contains(&(*seq, *offset)))
        .map(|(_, _, tx)| tx)
        .collect();
    let killed = before - transfers.len();
    if good_bytes > config.bytes_max {
        tracing::warn!(
            bytes = good_bytes,
            max = config.bytes_max,
            "mempool log: more on disk than mempool.log_bytes_max; every record is read back"
        );
    }
    Ok(Recovered {
        dir: dir.to_path_buf(),
        config,
        old,
        transfers,
        dropped,
        killed,
        cut_bytes,
    })
}

impl Recovered {
    /// Puts the recovered transfers back into `mempool`, checked like any input
    /// against `ledger` (what committed, failed or expired meanwhile is refused;
    /// in log order, so of two logged transfers with one nonce the one still
    /// admissible is taken), and the recovered drop reasons with them. Returns
    /// the transfers taken back: what [`Recovered::start`] keeps.
    pub fn readmit(
        &mut self,
        mempool: &mut crate::mempool::Mempool,
        ledger: &crate::ledger::Ledger,
        chain: &mosaic_crypto::ChainId,
    ) -> Vec<SignedTransfer> {
        mempool.restore_dropped(self.dropped.iter().copied());
        // Of two records with one sender and nonce the later one was logged only
        // after the pool had let go of the earlier (a reservation holds the nonce
        // while its write is in flight): the later one was answered 202 last, and
        // the earlier one's tombstone may have been lost with a crash or a failed
        // write.
        let mut last: HashMap<(PublicKey, u64), usize> = HashMap::new();
        for (i, tx) in self.transfers.iter().enumerate() {
            last.insert((tx.transfer.from, tx.transfer.nonce), i);
        }
        let transfers: Vec<SignedTransfer> = self
            .transfers
            .iter()
            .enumerate()
            .filter(|(i, tx)| last.get(&(tx.transfer.from, tx.transfer.nonce)) == Some(i))
            .map(|(_, tx)| tx.clone())
            .collect();
        let results = mempool.add_logged(
            crate::ledger::verify_batch(transfers.clone(), chain),
            ledger,
        );
        transfers
            .iter()
            .zip(results)
            .filter(|(_, r)| r.is_ok())
            .map(|(tx, _)| tx.clone())
            .collect()
    }

    /// Writes `keep` (the recovered transfers the node admitted again) and the
    /// drop reasons in `reasons` (kept for the status API across this restart too)
    /// to a fresh segment, syncs it, deletes the old segments and starts the writer.
    pub fn start(
        self,
        keep: &[SignedTransfer],
        reasons: &[(TxHash, Dropped)],
    ) -> Result<MempoolLog, LogError> {
        let seq = self.old.last().map_or(0, |s| s + 1);
        let mut writer = Writer::create(self.dir.clone(), self.config, seq)?;
        let mut buffer = Vec::new();
        for tx in keep {
            let bytes = record(tx)?;
            let offset = (MAGIC.len() + buffer.len()) as u64;
            writer.index(tx.hash(), seq, offset, bytes.len() as u64);
            buffer.extend_from_slice(&bytes);
        }
        for (id, reason) in reasons {
            buffer.extend_from_slice(&tombstone_record(&Tombstone {
                id: *id,
                segment: NO_SEGMENT,
                offset: 0,
                reason: Some(*reason),
            })?);
        }
        writer.write_synced(&buffer)?;
        for old in &self.old {
            let path = segment_path(&self.dir, *old);
            fs::remove_file(&path).map_err(|e| io_error(&path, "deleting", e))?;
        }
        sync_dir(&self.dir)?;
        let (requests, receive) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let thread_queued = queued.clone();
        std::thread::Builder::new()
            .name("mempool-log".into())
            .spawn(move || writer.run(receive, thread_queued))
            .map_err(|e| io_error(&self.dir, "starting the writer thread for", e))?;
        Ok(MempoolLog {
            requests,
            queued,
            queued_max: self.config.queued_bytes_max,
        })
    }
}

enum Request {
    Append {
        records: Vec<(TxHash, Vec<u8>)>,
        bytes: usize,
        done: oneshot::Sender<Result<(), LogError>>,
    },
    Forget(Vec<TxHash>),
    Tombstone(Vec<(TxHash, Option<Dropped>)>),
}

/// The handle to the log (cheap to clone).
#[derive(Debug, Clone)]
pub struct MempoolLog {
    requests: mpsc::Sender<Request>,
    queued: Arc<AtomicUsize>,
    queued_max: usize,
}

impl MempoolLog {
    /// Writes `txs` durably; resolves once they are synced to disk (or refused).
    pub async fn append(&self, txs: &[SignedTransfer]) -> Result<(), LogError> {
        let mut records = Vec::with_capacity(txs.len());
        let mut bytes = 0;
        for tx in txs {
            let r = record(tx)?;
            bytes += r.len();
            records.push((tx.hash(), r));
        }
        let queued = self.queued.fetch_add(bytes, Ordering::Relaxed);
        if queued + bytes > self.queued_max {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return Err(LogError::Busy { queued });
        }
        let (done, answer) = oneshot::channel();
        if self
            .requests
            .send(Request::Append {
                records,
                bytes,
                done,
            })
            .is_err()
        {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return Err(LogError::Stopped);
        }
        answer.await.unwrap_or(Err(LogError::Stopped))
    }

    /// Forgets logged transfers that a block carried (in memory: a restart refuses
    /// them against the chain).
    pub fn forget(&self, hashes: Vec<TxHash>) {
        if !hashes.is_empty() {
            // A stopped writer has nothing left to forget.
            let _ = self.requests.send(Request::Forget(hashes));
        }
    }

    /// Forgets logged transfers that left the pool with no block deciding them
    /// (dropped, with the reason; or refused after logging, `None`): tombstones go
    /// out with the next group commit, so a restart does not take them back.
    pub fn tombstone(&self, departed: Vec<(TxHash, Option<Dropped>)>) {
        if !departed.is_empty() {
            // A stopped writer has nothing left to forget.
            let _ = self.requests.send(Request::Tombstone(departed));
        }
    }

    /// What left the mempool ([`crate::mempool::Mempool::take_departed`]): those a
    /// block carried are forgotten, the dropped ones get tombstones.
    pub fn departed(&self, departed: Vec<(TxHash, Option<Dropped>)>) {
        let (dropped, carried): (Vec<_>, Vec<_>) =
            departed.into_iter().partition(|(_, why)| why.is_some());
        self.forget(carried.into_iter().map(|(h, _)| h).collect());
        self.tombstone(dropped);
    }
}

struct Segment {
    /// Records in it that are live.
    live: usize,
    /// Their bytes.
    live_bytes: u64,
    /// Bytes in the file.
    bytes: u64,
    /// Its tombstones that kill records of other segments: by that segment, their
    /// count and bytes. While such a segment exists, this one is not deleted
    /// (compaction moves those tombstones along).
    guards: BTreeMap<u64, (usize, u64)>,
}

impl Segment {
    const EMPTY: Segment = Segment {
        live: 0,
        live_bytes: 0,
        bytes: 0,
        guards: BTreeMap::new(),
    };
}

struct Writer {
    dir: PathBuf,
    config: LogConfig,
    current: u64,
    file: File,
    segments: BTreeMap<u64, Segment>,
    /// Each logged transfer's records as (segment, offset, length) (a transfer
    /// appended twice has two).
    placed: HashMap<TxHash, Vec<(u64, u64, u64)>>,
    /// A failed write left bytes it could not cut: later appends go to a new segment.
    broken: bool,
}

impl Writer {
    fn create(dir: PathBuf, config: LogConfig, seq: u64) -> Result<Writer, LogError> {
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

    fn new_segment(dir: &Path, seq: u64) -> Result<File, LogError> {
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

    fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    /// Bytes of `seq`'s tombstones that still guard a record of an existing
    /// segment.
    fn guard_bytes(&self, seq: u64) -> u64 {
        self.segments.get(&seq).map_or(0, |s| {
            s.guards
                .iter()
                .filter(|(target, _)| self.segments.contains_key(target))
                .map(|(_, (_, bytes))| bytes)
                .sum()
        })
    }

    /// Bytes that compacting `seq` would free.
    fn garbage(&self, seq: u64) -> u64 {
        self.segments.get(&seq).map_or(0, |s| {
            s.bytes
                .saturating_sub(s.live_bytes + self.guard_bytes(seq) + MAGIC.len() as u64)
        })
    }

    fn guard(&mut self, seq: u64, target: u64, bytes: u64) {
        if target == seq {
            return;
        }
        if let Some(segment) = self.segments.get_mut(&seq) {
            let entry = segment.guards.entry(target).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += bytes;
        }
    }

    fn index(&mut self, hash: TxHash, seq: u64, offset: u64, len: u64) {
        self.placed
            .entry(hash)
            .or_default()
            .push((seq, offset, len));
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.live += 1;
            segment.live_bytes += len;
        }
    }

    fn dead(&mut self, seq: u64, len: u64) {
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.live -= 1;
            segment.live_bytes -= len;
        }
    }

    fn unindex(&mut self, hash: &TxHash, seq: u64) {
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
    fn forget(&mut self, hash: &TxHash) -> Vec<(u64, u64)> {
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
    fn write_offset(&self) -> u64 {
        match self.segments.get(&self.current) {
            Some(s) if s.bytes > 0 => s.bytes,
            _ => MAGIC.len() as u64,
        }
    }

    /// Appends `bytes` to the current segment and syncs it. On failure the segment
    /// is cut back to where it was; if even that fails, the next write starts a
    /// new segment.
    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), LogError> {
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

    fn run(mut self, requests: mpsc::Receiver<Request>, queued: Arc<AtomicUsize>) {
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
    fn group(&mut self, batch: Vec<Request>, queued: &AtomicUsize) {
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

    fn rotate(&mut self) -> Result<(), LogError> {
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
    fn housekeeping(&mut self) {
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
    fn compaction_candidate(&self) -> Option<u64> {
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
    fn compact(&mut self, seq: u64) -> Result<(), LogError> {
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

#[cfg(test)]
mod tests {
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
        let ledger =
            Ledger::from_balances(&[(Keypair::from_seed_for_tests(7).public(), 100)]).unwrap();
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
}
