//! The log's files: checksummed records and tombstones in numbered segment
//! files, read back with a torn tail cut.

use super::*;

pub(super) fn io_error(path: &Path, what: &'static str, error: std::io::Error) -> LogError {
    LogError::Io {
        path: path.display().to_string(),
        what,
        error: error.to_string(),
    }
}

pub(super) fn checksum(payload: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&Hash::of(payload).as_bytes()[..8]);
    out
}

pub(super) fn framed(payload: &[u8], flag: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32 | flag).to_le_bytes());
    out.extend_from_slice(&checksum(payload));
    out.extend_from_slice(payload);
    out
}

pub(super) fn record(tx: &SignedTransfer) -> Result<Vec<u8>, LogError> {
    let payload = codec::encode(tx).map_err(|e| LogError::Encode(e.to_string()))?;
    Ok(framed(&payload, 0))
}

pub(super) fn tombstone_record(tombstone: &Tombstone) -> Result<Vec<u8>, LogError> {
    let payload = codec::encode(tombstone).map_err(|e| LogError::Encode(e.to_string()))?;
    Ok(framed(&payload, TOMBSTONE_FLAG))
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.log"))
}

/// The segments in `dir`, oldest first. Files that are not segments are left alone.
pub(super) fn segments(dir: &Path) -> Result<Vec<u64>, LogError> {
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
pub(super) struct ReadRecord {
    pub(super) hash: TxHash,
    pub(super) tx: SignedTransfer,
    pub(super) bytes: Vec<u8>,
    pub(super) offset: u64,
}

/// One segment's records, up to the first that is torn or corrupt, and the length
/// of the good prefix.
pub(super) struct SegmentRead {
    pub(super) records: Vec<ReadRecord>,
    pub(super) tombstones: Vec<(Tombstone, Vec<u8>)>,
    pub(super) good_len: u64,
    pub(super) file_len: u64,
}

pub(super) fn read_segment(path: &Path) -> Result<SegmentRead, LogError> {
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

pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "syncing the folder", e))
}
