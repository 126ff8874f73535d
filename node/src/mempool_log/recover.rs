//! Reading the log back on start: tombstoned records skipped (their reasons kept
//! for the status API), the rest re-admitted in log order and rewritten to one
//! segment.

use super::*;

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
