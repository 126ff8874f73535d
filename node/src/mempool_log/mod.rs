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

mod records;
mod recover;
mod writer;
use records::{io_error, read_segment, record, segment_path, segments, sync_dir, tombstone_record};
pub use recover::{Recovered, recover};
use writer::Writer;

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

#[cfg(test)]
mod tests;
