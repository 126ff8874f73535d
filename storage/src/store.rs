//! The durable store: headers, commit certificates, fragment commitments, ledger
//! accounts and the consensus safety record in one redb file; this validator's own
//! fragments and the recent bodies in append-only segment files next to it
//! (`<file>.segments/`, ADR 007), located from redb.
//!
//! - A committed block's writes (header, certificate, commitment, own fragment, body,
//!   account changes, new tip) are durable before [`Store::commit_block`] returns:
//!   fragment and body are appended to their segment files and fsynced, then
//!   everything else, with where those records are, is one redb transaction. A
//!   crash between the two leaves unreferenced bytes that the next open cuts off.
//! - Every value is stored behind a 16-byte blake3 checksum of (table, key, value), so a
//!   flipped byte on disk is reported as [`StoreError::Corrupt`], never served.
//! - Bodies outside the configured window (a count of blocks and a budget of bytes)
//!   are dropped in the same transaction that commits the block that pushes them
//!   out, and their segment files deleted once every body in them is; they are
//!   rebuilt from fragments on demand ([`Store::body_or_rebuild`]).
//!
//! The store is generic over the node's types through [`Schema`], so this crate
//! knows nothing of transactions or PBFT, yet its API stays typed.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use mosaic_crypto::codec;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::coding::{
    self, CodingError, Fragment, FragmentCommitment, FragmentError, Reconstruction,
};
pub use crate::error::StoreError;
use crate::placement;
use crate::segments::{Damage, Loc, Log, LogEnd, Roll};
use crate::txindex::{self, RunRecord, Runs};

/// The types the node stores. One production implementation (the node's) and test
/// ones; the store only needs to encode and decode them.
pub trait Schema {
    /// A block header.
    type Header: Serialize + DeserializeOwned + Debug;
    /// A commit certificate.
    type Certificate: Serialize + DeserializeOwned + Debug;
    /// An account address.
    type AccountKey: Serialize + DeserializeOwned + Debug + Ord;
    /// An account's state.
    type Account: Serialize + DeserializeOwned + Debug;
    /// What consensus persists before it signs.
    type SafetyRecord: Serialize + DeserializeOwned + Debug;
    /// What the store keeps per transaction id (where it landed and how it went).
    type TxRecord: Serialize + DeserializeOwned + Debug;
}

/// Tunables of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// This validator's index in the validator set (decides its own fragments).
    pub validator_index: u32,
    /// How many of the most recent bodies to keep in full (0: none).
    pub body_window_blocks: u64,
    /// At most this many bytes of recent bodies are kept in full (0: no byte bound),
    /// whatever the block count; the newest body is always kept. Bounds the window's
    /// disk when blocks are large.
    pub body_window_bytes: u64,
    /// redb's page cache, in bytes. Memory use grows to about this much plus the
    /// node's own state; redb's own default is 1 GiB.
    pub cache_bytes: usize,
    /// Transaction index entries gathered in redb before they are written out as
    /// one immutable run file (6 bytes per entry there, ~16 in redb; a lookup reads
    /// one 784-byte block per run).
    pub index_run_entries: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            validator_index: 0,
            body_window_blocks: 1024,
            body_window_bytes: 256 << 20,
            cache_bytes: 64 << 20,
            index_run_entries: 1 << 16,
        }
    }
}

/// Everything written when a block commits.
#[derive(Debug)]
pub struct CommittedBlock<S: Schema> {
    /// Height: must be one more than the store's tip (1 for the first block).
    pub height: u64,
    /// The header.
    pub header: S::Header,
    /// Its commit certificate.
    pub certificate: S::Certificate,
    /// The fragment commitment from the header.
    pub commitment: FragmentCommitment,
    /// The body bytes.
    pub body: Vec<u8>,
    /// This validator's fragment (index by [`placement::fragment_of`]).
    pub own_fragment: Fragment,
    /// Account changes from executing the block: `None` deletes.
    pub account_changes: Vec<(S::AccountKey, Option<S::Account>)>,
    /// Every transaction id of the block, for [`Store::tx_heights`] (8 bytes each).
    pub tx_ids: Vec<[u8; 32]>,
    /// Records kept in full by id, for what cannot be read back from the block (the
    /// node keeps failed transfers with their reasons).
    pub tx_records: Vec<([u8; 32], S::TxRecord)>,
    /// The root of the block's outcomes, kept with [`Self::tx_records`] as its
    /// [`BlockOutcomes`] (a restart needs the tip's root; proofs need the records).
    pub outcome_root: [u8; 32],
    /// Ids that later blocks must still know about until a height: (id, last
    /// height that matters). Kept by [`Store::live_ids`] until the tip passes that
    /// height (the node keeps its failed transfers until their `valid_until`).
    pub live_ids: Vec<([u8; 32], u64)>,
}

/// What a block's execution did, beyond its account changes: the root its next
/// header commits to, and the records kept in full ([`CommittedBlock::tx_records`]).
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub struct BlockOutcomes<S: Schema> {
    /// [`CommittedBlock::outcome_root`].
    pub root: [u8; 32],
    /// [`CommittedBlock::tx_records`], in block order.
    pub records: Vec<([u8; 32], S::TxRecord)>,
}

/// Version of the on-disk layout, and of what it holds: 4 stores headers that commit
/// to their parent's outcomes and each block's outcome root (a store of format 3
/// holds headers this build cannot decode).
pub const STORE_FORMAT: u64 = 4;
const CHECKSUM_LEN: usize = 16;
/// Largest value the store decodes (bodies are at most coding::BODY_BYTES_MAX).
const VALUE_BYTES_MAX: usize = coding::BODY_BYTES_MAX + 1024 * 1024;

/// A table keyed by block height, with its name kept for checksums and errors.
#[derive(Clone, Copy)]
struct HeightTable {
    name: &'static str,
    definition: TableDefinition<'static, u64, &'static [u8]>,
}

impl HeightTable {
    const fn new(name: &'static str) -> Self {
        HeightTable {
            name,
            definition: TableDefinition::new(name),
        }
    }
}

const HEADERS: HeightTable = HeightTable::new("headers");
const CERTIFICATES: HeightTable = HeightTable::new("certificates");
const COMMITMENTS: HeightTable = HeightTable::new("commitments");
const FRAGMENTS: HeightTable = HeightTable::new("fragments");
const BODIES: HeightTable = HeightTable::new("bodies");
/// Runs of the transaction index, by sequence number.
const TX_RUNS: HeightTable = HeightTable::new("tx_runs");
/// Transaction index entries not yet in a run: height -> the block's id prefixes.
const TX_RECENT: HeightTable = HeightTable::new("tx_recent");
/// [`BlockOutcomes`] by height.
const OUTCOMES: HeightTable = HeightTable::new("outcomes");
const ACCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accounts");
const TX_RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tx_records");
/// [`CommittedBlock::live_ids`]: until (big endian) || id -> the height that wrote it
/// (big endian); pruned as the tip passes `until`.
const LIVE_IDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("live_ids");
/// Consensus payloads persisted before a vote, keyed by height (big endian) || digest.
const PAYLOADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("payloads");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const META_FORMAT: &str = "format";
const META_TIP: &str = "tip";
const META_SAFETY: &str = "safety";
const META_GENESIS: &str = "genesis";
const META_FRAGMENT_LOG: &str = "log.fragments";
const META_BODY_LOG: &str = "log.bodies";
/// A segment file is closed at this size and the next append starts another.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Where the segment files of the store at `path` live.
pub fn segments_dir(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".segments");
    path.with_file_name(name)
}

fn checksum(table: &str, key: &[u8], payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(table.len() as u64).to_le_bytes());
    hasher.update(table.as_bytes());
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(payload);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..CHECKSUM_LEN]);
    out
}

fn seal<T: Serialize + ?Sized>(
    table: &'static str,
    key: &[u8],
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![0u8; CHECKSUM_LEN];
    codec::encode_into(value, &mut out).map_err(|source| StoreError::Encode { table, source })?;
    let sum = checksum(table, key, &out[CHECKSUM_LEN..]);
    out[..CHECKSUM_LEN].copy_from_slice(&sum);
    Ok(out)
}

fn unseal<T: DeserializeOwned>(
    table: &'static str,
    key: &[u8],
    stored: &[u8],
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table,
        key: key_text(key),
        reason,
    };
    if stored.len() < CHECKSUM_LEN {
        return Err(corrupt("value shorter than its checksum".into()));
    }
    let (sum, payload) = stored.split_at(CHECKSUM_LEN);
    if sum != checksum(table, key, payload) {
        return Err(corrupt("checksum mismatch".into()));
    }
    codec::decode(payload, VALUE_BYTES_MAX).map_err(|e| corrupt(e.to_string()))
}

fn key_text(key: &[u8]) -> String {
    match <[u8; 8]>::try_from(key) {
        Ok(b) => u64::from_be_bytes(b).to_string(),
        Err(_) => mosaic_crypto::Hash::of(key).to_string(),
    }
}

fn payload_key(height: u64, digest: &[u8; 32]) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&height.to_be_bytes());
    key[8..].copy_from_slice(digest);
    key
}

/// Key of a full transaction record: id, then height (big endian).
/// A [`LIVE_IDS`] key: `until` first, so pruning is one range.
fn record_key_until(id: &[u8; 32], until: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&until.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

fn record_key(id: &[u8; 32], height: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(id);
    key[32..].copy_from_slice(&height.to_be_bytes());
    key
}

fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

/// Calls `f(height, packed 4-byte id prefixes)` for each block in `tx_recent`.
fn for_each_recent(
    txn: &redb::ReadTransaction,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<(), StoreError> {
    let table = txn
        .open_table(TX_RECENT.definition)
        .map_err(StoreError::db)?;
    for entry in table.iter().map_err(StoreError::db)? {
        let (k, v) = entry.map_err(StoreError::db)?;
        let height = k.value();
        let prefixes: Vec<u8> = unseal(TX_RECENT.name, &height_key(height), v.value())?;
        f(height, &prefixes);
    }
    Ok(())
}

/// The transaction index entries not yet in a run, by prefix.
#[derive(Debug, Default)]
struct Recent {
    heights: std::collections::HashMap<u32, Vec<u64>>,
    entries: u64,
}

impl Recent {
    fn add(&mut self, height: u64, prefix: u32) {
        let heights = self.heights.entry(prefix).or_default();
        if heights.last() != Some(&height) {
            heights.push(height);
        }
        self.entries += 1;
    }
}

/// A saved consensus payload: height, digest, bytes.
pub type SavedPayload = (u64, [u8; 32], Vec<u8>);

/// Every stored account with its key.
pub type AccountList<S> = Vec<(<S as Schema>::AccountKey, <S as Schema>::Account)>;

/// The outcome of a rebuild: the body and the fragments that were refused.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The body bytes.
    pub body: Vec<u8>,
    /// `true` when it came from the stored body, `false` when rebuilt from fragments.
    pub from_store: bool,
    /// Fragments that were fetched but refused, with reasons.
    pub rejected: Vec<FragmentError>,
}

/// The durable store. Cheap to share behind an `Arc`: redb serializes writers and
/// lets readers run alongside.
pub struct Store<S: Schema> {
    db: Database,
    /// This validator's fragments (`fragments` table: height -> location).
    fragments: Log,
    /// Recent bodies (`bodies` table: height -> location).
    bodies: Log,
    /// The transaction index's run files.
    runs: Runs,
    /// Held by a merge of runs (one at a time).
    compacting: std::sync::Mutex<()>,
    /// The entries of `tx_recent` in memory, by prefix (written out as a run at
    /// `index_run_entries`).
    recent: std::sync::Mutex<Recent>,
    /// Payload bytes of the bodies in the `bodies` table (changed only by a commit,
    /// which holds the body log's appender).
    body_bytes: std::sync::atomic::AtomicU64,
    /// Segment files found short when the store opened.
    damage: OpenDamage,
    config: StoreConfig,
    _schema: PhantomData<fn() -> S>,
}

/// Segment files found shorter than their committed end when the store opened
/// (truncated or deleted by something other than the store). The store opens
/// degraded: the records they lost read as missing, own fragments are re-derived by
/// [`Store::repair`] and bodies rebuilt from fragments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenDamage {
    /// The fragment log's damaged segment.
    pub fragments: Option<Damage>,
    /// The body log's damaged segment.
    pub bodies: Option<Damage>,
}

impl OpenDamage {
    /// Whether anything was found damaged.
    pub fn is_degraded(&self) -> bool {
        self.fragments.is_some() || self.bodies.is_some()
    }
}

/// The state of this validator's own fragment at one height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragmentState {
    /// No block is committed at that height.
    NoBlock,
    /// Present and checked against the block's commitment; its size in bytes.
    Good {
        /// Encoded bytes read.
        bytes: u64,
    },
    /// Not stored (never written, forgotten, or in a lost segment file).
    Missing,
    /// Stored but failing its checksum, decoding or proof.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

impl<S: Schema> Debug for Store<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Schema> Store<S> {
    /// Opens the store at `path`, creating it if needed. After a crash redb recovers
    /// to the last committed transaction.
    pub fn open(path: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(config.cache_bytes)
            .create(path)
            .map_err(StoreError::db)?;
        let txn = db.begin_write().map_err(StoreError::db)?;
        {
            let mut meta = txn.open_table(META).map_err(StoreError::db)?;
            let existing = match meta.get(META_FORMAT).map_err(StoreError::db)? {
                Some(v) => Some(unseal::<u64>("meta", META_FORMAT.as_bytes(), v.value())?),
                None => None,
            };
            match existing {
                Some(STORE_FORMAT) => {}
                Some(found) => {
                    return Err(StoreError::Format {
                        found,
                        supported: STORE_FORMAT,
                    });
                }
                None => {
                    let v = seal("meta", META_FORMAT.as_bytes(), &STORE_FORMAT)?;
                    meta.insert(META_FORMAT, v.as_slice())
                        .map_err(StoreError::db)?;
                }
            }
            for table in [
                HEADERS,
                CERTIFICATES,
                COMMITMENTS,
                FRAGMENTS,
                BODIES,
                TX_RUNS,
                TX_RECENT,
                OUTCOMES,
            ] {
                txn.open_table(table.definition).map_err(StoreError::db)?;
            }
            for table in [ACCOUNTS, TX_RECORDS, LIVE_IDS, PAYLOADS] {
                txn.open_table(table).map_err(StoreError::db)?;
            }
        }
        txn.commit().map_err(StoreError::db)?;
        let (fragment_end, body_end) = {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let meta = txn.open_table(META).map_err(StoreError::db)?;
            let end = |key: &'static str| -> Result<Option<LogEnd>, StoreError> {
                match meta.get(key).map_err(StoreError::db)? {
                    Some(v) => unseal("meta", key.as_bytes(), v.value()).map(Some),
                    None => Ok(None),
                }
            };
            (end(META_FRAGMENT_LOG)?, end(META_BODY_LOG)?)
        };
        let (recorded_runs, recent) = {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let table = txn.open_table(TX_RUNS.definition).map_err(StoreError::db)?;
            let mut runs = Vec::new();
            for entry in table.iter().map_err(StoreError::db)? {
                let (k, v) = entry.map_err(StoreError::db)?;
                let seq = k.value();
                runs.push((
                    seq,
                    unseal::<RunRecord>(TX_RUNS.name, &height_key(seq), v.value())?,
                ));
            }
            let mut recent = Recent::default();
            for_each_recent(&txn, |height, prefixes| {
                for p in prefixes.chunks_exact(4) {
                    recent.add(height, u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                }
            })?;
            (runs, recent)
        };
        let body_bytes = {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let table = txn.open_table(BODIES.definition).map_err(StoreError::db)?;
            let mut bytes = 0u64;
            for entry in table.iter().map_err(StoreError::db)? {
                let (k, v) = entry.map_err(StoreError::db)?;
                let loc: Loc = unseal(BODIES.name, &height_key(k.value()), v.value())?;
                bytes += u64::from(loc.len);
            }
            bytes
        };
        let dir = segments_dir(path);
        let (fragments, fragment_damage) = Log::open(
            dir.join("fragments"),
            FRAGMENTS.name,
            Roll {
                bytes: SEGMENT_BYTES,
                records: u64::MAX,
            },
            fragment_end,
        )?;
        // Bodies roll every quarter window (in blocks and in bytes), so a pruned
        // body's file goes at most a quarter window after it.
        let (bodies, body_damage) = Log::open(
            dir.join("bodies"),
            BODIES.name,
            Roll {
                bytes: match config.body_window_bytes {
                    0 => SEGMENT_BYTES,
                    budget => (budget / 4).clamp(1, SEGMENT_BYTES),
                },
                records: (config.body_window_blocks / 4).max(1),
            },
            body_end,
        )?;
        let runs = Runs::open(dir.join("txindex"), recorded_runs)?;
        let store = Store {
            db,
            fragments,
            bodies,
            runs,
            compacting: std::sync::Mutex::new(()),
            recent: std::sync::Mutex::new(recent),
            body_bytes: std::sync::atomic::AtomicU64::new(body_bytes),
            damage: OpenDamage {
                fragments: fragment_damage,
                bodies: body_damage,
            },
            config,
            _schema: PhantomData,
        };
        store.remove_pruned_body_segments()?;
        Ok(store)
    }

    /// Deletes the body segment files before the one holding the oldest stored body.
    fn remove_pruned_body_segments(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let table = txn.open_table(BODIES.definition).map_err(StoreError::db)?;
        let first = match table.first().map_err(StoreError::db)? {
            Some((k, v)) => {
                let height = k.value();
                Some(unseal::<Loc>(BODIES.name, &height_key(height), v.value())?)
            }
            None => None,
        };
        drop(table);
        drop(txn);
        self.bodies
            .remove_before(first.map_or(u64::MAX, |loc| loc.segment))
    }

    fn read_loc(
        &self,
        table: HeightTable,
        log: &Log,
        height: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.get_at::<Loc>(table, height)? {
            Some(loc) => log.read(loc, height),
            None => Ok(None),
        }
    }

    /// Binds the store to a chain: the first call writes the genesis accounts and
    /// `genesis_id` in one transaction; later calls only check that `genesis_id`
    /// matches ([`StoreError::WrongGenesis`] otherwise).
    pub fn initialize(
        &self,
        genesis_id: [u8; 32],
        accounts: &[(S::AccountKey, S::Account)],
    ) -> Result<(), StoreError> {
        if let Some(found) = self.get_meta::<[u8; 32]>(META_GENESIS)? {
            if found != genesis_id {
                return Err(StoreError::WrongGenesis {
                    found: hex::encode(found),
                    expected: hex::encode(genesis_id),
                });
            }
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(StoreError::db)?;
        {
            let mut table = txn.open_table(ACCOUNTS).map_err(StoreError::db)?;
            for (account, value) in accounts {
                let k = codec::encode(account).map_err(|source| StoreError::Encode {
                    table: "accounts",
                    source,
                })?;
                let v = seal("accounts", &k, value)?;
                table
                    .insert(k.as_slice(), v.as_slice())
                    .map_err(StoreError::db)?;
            }
            let mut meta = txn.open_table(META).map_err(StoreError::db)?;
            let v = seal("meta", META_GENESIS.as_bytes(), &genesis_id)?;
            meta.insert(META_GENESIS, v.as_slice())
                .map_err(StoreError::db)?;
        }
        txn.commit().map_err(StoreError::db)
    }

    /// The configuration.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// The height of the last committed block, `None` before the first.
    pub fn tip(&self) -> Result<Option<u64>, StoreError> {
        self.get_meta(META_TIP)
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let table = txn.open_table(META).map_err(StoreError::db)?;
        match table.get(key).map_err(StoreError::db)? {
            Some(v) => unseal("meta", key.as_bytes(), v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn get_at<T: DeserializeOwned>(
        &self,
        table: HeightTable,
        height: u64,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let t = txn.open_table(table.definition).map_err(StoreError::db)?;
        match t.get(height).map_err(StoreError::db)? {
            Some(v) => unseal(table.name, &height_key(height), v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Writes one committed block atomically and durably.
    pub fn commit_block(&self, block: CommittedBlock<S>) -> Result<(), StoreError> {
        // The log writers are held to the end: one commit at a time, in log order.
        let mut fragment_log = self.fragments.appender();
        let mut body_log = self.bodies.appender();
        let height = block.height;
        let tip = self.tip()?;
        if height != tip.map_or(1, |t| t + 1) {
            return Err(StoreError::OutOfOrder { tip, got: height });
        }
        let params = block.commitment.params;
        params
            .validate()
            .map_err(|source| StoreError::BadBody { height, source })?;
        if block.body.len() as u64 != params.body_len {
            return Err(StoreError::BadBody {
                height,
                source: CodingError::LengthMismatch {
                    expected: params.body_len,
                    got: block.body.len(),
                },
            });
        }
        let own_index =
            placement::fragment_of(self.config.validator_index, height, params.total_shards);
        if block.own_fragment.index != own_index {
            return Err(StoreError::BadOwnFragment {
                height,
                reason: format!(
                    "validator {} keeps fragment {own_index}, got fragment {}",
                    self.config.validator_index, block.own_fragment.index
                ),
            });
        }
        let own_fragment = block
            .own_fragment
            .check(&block.commitment)
            .map_err(|e| StoreError::BadOwnFragment {
                height,
                reason: e.to_string(),
            })?
            .into_fragment();

        let key = height_key(height);
        let window = self.config.body_window_blocks;
        let mut body_bytes = self.body_bytes.load(std::sync::atomic::Ordering::Acquire);
        let fragment_bytes = codec::encode(&own_fragment).map_err(|source| StoreError::Encode {
            table: FRAGMENTS.name,
            source,
        })?;
        // Appends first, durable before the transaction that references them.
        let fragment_loc = fragment_log.append(height, &fragment_bytes)?;
        let body_loc = if window > 0 {
            Some(body_log.append(height, &block.body)?)
        } else {
            None
        };
        // Both logs' appends become durable at once (two fdatasyncs on other threads,
        // which the file system can serve with one journal commit) while the
        // transaction that references them is prepared here; it commits only after both.
        let fragment_sync = fragment_log.take_sync()?;
        let body_sync = body_log.take_sync()?;
        std::thread::scope(|scope| -> Result<(), StoreError> {
            let syncs: Vec<_> = [fragment_sync, body_sync]
                .into_iter()
                .flatten()
                .map(|pending| scope.spawn(move || pending.run()))
                .collect();
            let txn = self.db.begin_write().map_err(StoreError::db)?;
            {
                let put = |table: HeightTable, bytes: Vec<u8>| -> Result<(), StoreError> {
                    let mut t = txn.open_table(table.definition).map_err(StoreError::db)?;
                    t.insert(height, bytes.as_slice()).map_err(StoreError::db)?;
                    Ok(())
                };
                put(HEADERS, seal(HEADERS.name, &key, &block.header)?)?;
                put(
                    CERTIFICATES,
                    seal(CERTIFICATES.name, &key, &block.certificate)?,
                )?;
                put(
                    COMMITMENTS,
                    seal(COMMITMENTS.name, &key, &block.commitment)?,
                )?;
                put(FRAGMENTS, seal(FRAGMENTS.name, &key, &fragment_loc)?)?;
                if let Some(loc) = body_loc {
                    put(BODIES, seal(BODIES.name, &key, &loc)?)?;
                    body_bytes += u64::from(loc.len);
                }
                body_bytes = self.prune_bodies(&txn, height, body_bytes)?;

                let mut accounts = txn.open_table(ACCOUNTS).map_err(StoreError::db)?;
                for (account, value) in &block.account_changes {
                    let k = codec::encode(account).map_err(|source| StoreError::Encode {
                        table: "accounts",
                        source,
                    })?;
                    match value {
                        Some(v) => {
                            let v = seal("accounts", &k, v)?;
                            accounts
                                .insert(k.as_slice(), v.as_slice())
                                .map_err(StoreError::db)?;
                        }
                        None => {
                            accounts.remove(k.as_slice()).map_err(StoreError::db)?;
                        }
                    }
                }
                put(
                    OUTCOMES,
                    seal(
                        OUTCOMES.name,
                        &key,
                        // Encodes as a BlockOutcomes (fields in order).
                        &(&block.outcome_root, &block.tx_records),
                    )?,
                )?;
                if !block.tx_ids.is_empty() {
                    let prefixes: Vec<u8> = block
                        .tx_ids
                        .iter()
                        .flat_map(|id| txindex::prefix(id).to_be_bytes())
                        .collect();
                    put(TX_RECENT, seal(TX_RECENT.name, &key, &prefixes)?)?;
                }
                let mut records = txn.open_table(TX_RECORDS).map_err(StoreError::db)?;
                for (id, record) in &block.tx_records {
                    let k = record_key(id, height);
                    let v = seal("tx_records", &k, record)?;
                    records
                        .insert(k.as_slice(), v.as_slice())
                        .map_err(StoreError::db)?;
                }
                let mut live = txn.open_table(LIVE_IDS).map_err(StoreError::db)?;
                for (id, until) in &block.live_ids {
                    if *until > height {
                        live.insert(
                            record_key_until(id, *until).as_slice(),
                            height.to_be_bytes().as_slice(),
                        )
                        .map_err(StoreError::db)?;
                    }
                }
                // What no later block can need: `until` at or below this height.
                let below = (height.saturating_add(1)).to_be_bytes();
                live.retain_in(..below.as_slice(), |_, _| false)
                    .map_err(StoreError::db)?;
                let mut meta = txn.open_table(META).map_err(StoreError::db)?;
                let tip = seal("meta", META_TIP.as_bytes(), &height)?;
                meta.insert(META_TIP, tip.as_slice())
                    .map_err(StoreError::db)?;
                let end = seal("meta", META_FRAGMENT_LOG.as_bytes(), &fragment_log.end())?;
                meta.insert(META_FRAGMENT_LOG, end.as_slice())
                    .map_err(StoreError::db)?;
                if body_loc.is_some() {
                    let end = seal("meta", META_BODY_LOG.as_bytes(), &body_log.end())?;
                    meta.insert(META_BODY_LOG, end.as_slice())
                        .map_err(StoreError::db)?;
                }
            }
            for sync in syncs {
                sync.join().map_err(|_| StoreError::Io {
                    what: "a segment sync thread panicked".into(),
                    source: std::io::Error::other("panic"),
                })??;
            }
            txn.commit().map_err(StoreError::db)
        })?;
        self.body_bytes
            .store(body_bytes, std::sync::atomic::Ordering::Release);
        drop(body_log);
        let due = {
            let mut recent = self.recent();
            for id in &block.tx_ids {
                recent.add(height, txindex::prefix(id));
            }
            recent.entries >= self.config.index_run_entries.max(1)
        };
        if due {
            // Still holding the fragment log: no other commit adds to tx_recent.
            self.write_index_run()?;
        }
        drop(fragment_log);
        self.remove_pruned_body_segments()
    }

    /// Drops the oldest bodies in `txn` while they are outside the window of blocks
    /// ending at `height`, or while the kept bodies (`bytes` of them) exceed the byte
    /// budget; never `height`'s own. Returns the bytes still kept. Oldest first also
    /// catches up after the window was made smaller between runs.
    fn prune_bodies(
        &self,
        txn: &redb::WriteTransaction,
        height: u64,
        mut bytes: u64,
    ) -> Result<u64, StoreError> {
        let window = self.config.body_window_blocks;
        let budget = self.config.body_window_bytes;
        let mut bodies = txn.open_table(BODIES.definition).map_err(StoreError::db)?;
        loop {
            let (oldest, loc) = match bodies.first().map_err(StoreError::db)? {
                Some((k, v)) => {
                    let oldest = k.value();
                    let loc: Loc = unseal(BODIES.name, &height_key(oldest), v.value())?;
                    (oldest, loc)
                }
                None => return Ok(bytes),
            };
            let outside_blocks = oldest.saturating_add(window) <= height;
            let over_budget = budget > 0 && bytes > budget && oldest < height;
            if !(outside_blocks || over_budget) {
                return Ok(bytes);
            }
            bodies.remove(oldest).map_err(StoreError::db)?;
            bytes = bytes.saturating_sub(u64::from(loc.len));
        }
    }

    /// Moves every entry of `tx_recent` into a new run file.
    fn write_index_run(&self) -> Result<(), StoreError> {
        let entries: Vec<(u32, u64)> = {
            let txn = self.db.begin_read().map_err(StoreError::db)?;
            let mut entries = Vec::new();
            for_each_recent(&txn, |height, prefixes| {
                for p in prefixes.chunks_exact(4) {
                    entries.push((u32::from_be_bytes([p[0], p[1], p[2], p[3]]), height));
                }
            })?;
            entries.sort_unstable();
            entries
        };
        if entries.is_empty() {
            return Ok(());
        }
        // Entries far apart in height (a quiet chain) go to separate runs, each
        // spanning at most txindex::RUN_SPAN heights; order by prefix is kept.
        let mut written = Vec::new();
        let result = (|| -> Result<(), StoreError> {
            for group in txindex::split_by_span(entries) {
                let seq = self.runs.next_seq();
                let record = self.runs.write_run(seq, &group)?;
                let sealed = seal(TX_RUNS.name, &height_key(seq), &record)?;
                self.runs.publish(seq, record)?;
                written.push((seq, sealed));
            }
            let txn = self.db.begin_write().map_err(StoreError::db)?;
            txn.delete_table(TX_RECENT.definition)
                .map_err(StoreError::db)?;
            txn.open_table(TX_RECENT.definition)
                .map_err(StoreError::db)?;
            {
                let mut runs = txn.open_table(TX_RUNS.definition).map_err(StoreError::db)?;
                for (seq, sealed) in &written {
                    runs.insert(*seq, sealed.as_slice())
                        .map_err(StoreError::db)?;
                }
            }
            txn.commit().map_err(StoreError::db)
        })();
        match result {
            Ok(()) => {
                *self.recent() = Recent::default();
                Ok(())
            }
            Err(e) => {
                for (seq, _) in written {
                    self.runs.unpublish(seq);
                }
                Err(e)
            }
        }
    }

    /// Merges one group of transaction index runs if one is due (see
    /// [`crate::txindex`]); true if it did, so the caller may call again. Safe
    /// alongside commits and lookups; reads and writes the group's entries (6 bytes
    /// each) once, so run it off the latency-critical path.
    pub fn compact_index(&self) -> Result<bool, StoreError> {
        let _one_at_a_time = self
            .compacting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unit = self.config.index_run_entries.max(1);
        let Some(inputs) = self
            .runs
            .merge_candidates(unit, || Ok(self.tip()?.unwrap_or(0)))?
        else {
            return Ok(false);
        };
        let seq = self.runs.next_seq();
        let record = self.runs.merge(seq, &inputs)?;
        // Only recorded runs are replaced: a commit may have published a run it
        // has not recorded yet (or failed to record). redb runs one write
        // transaction at a time, so the check and the replacement are atomic.
        let recorded = (|| -> Result<bool, StoreError> {
            let sealed = seal(TX_RUNS.name, &height_key(seq), &record)?;
            let txn = self.db.begin_write().map_err(StoreError::db)?;
            {
                let mut runs = txn.open_table(TX_RUNS.definition).map_err(StoreError::db)?;
                for input in &inputs {
                    if runs.remove(input.seq()).map_err(StoreError::db)?.is_none() {
                        return Ok(false);
                    }
                }
                runs.insert(seq, sealed.as_slice())
                    .map_err(StoreError::db)?;
            }
            txn.commit().map_err(StoreError::db)?;
            Ok(true)
        })();
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                // Dropping the transaction aborted it; the merge is tried again.
                self.runs.discard(seq);
                return Ok(false);
            }
            // On an error the merged run may still have been recorded (a commit
            // error after the write became durable): then the next open keeps it and
            // deletes the inputs' files. Until then lookups use the inputs, still on
            // disk, and a later merge of them finds their records gone and stops.
            Err(e) => return Err(e),
        }
        self.runs.replace(&inputs, seq, record)?;
        Ok(true)
    }

    /// Number of transaction index run files (what a lookup reads one block of
    /// each).
    pub fn index_runs(&self) -> usize {
        self.runs.count()
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Entries are added after their transaction commits and cleared after a
        // run is recorded; a panic in between leaves a usable map.
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Heights of committed blocks that may hold transaction `id`, ascending. The
    /// index keeps 4 bytes of each id, so a height can be a false candidate: check
    /// the block's transactions before answering.
    pub fn tx_heights(&self, id: &[u8; 32]) -> Result<Vec<u64>, StoreError> {
        let prefix = txindex::prefix(id);
        let mut heights = self
            .recent()
            .heights
            .get(&prefix)
            .cloned()
            .unwrap_or_default();
        self.runs.lookup(prefix, &mut heights)?;
        heights.sort_unstable();
        heights.dedup();
        Ok(heights)
    }

    /// The header at `height`.
    pub fn header(&self, height: u64) -> Result<Option<S::Header>, StoreError> {
        self.get_at(HEADERS, height)
    }

    /// The outcome root and the full records of the block at `height`.
    pub fn block_outcomes(&self, height: u64) -> Result<Option<BlockOutcomes<S>>, StoreError> {
        self.get_at(OUTCOMES, height)
    }

    /// The commit certificate at `height`.
    pub fn certificate(&self, height: u64) -> Result<Option<S::Certificate>, StoreError> {
        self.get_at(CERTIFICATES, height)
    }

    /// The fragment commitment at `height`.
    pub fn commitment(&self, height: u64) -> Result<Option<FragmentCommitment>, StoreError> {
        self.get_at(COMMITMENTS, height)
    }

    /// This validator's fragment at `height`, checked against the commitment.
    pub fn own_fragment(&self, height: u64) -> Result<Option<Fragment>, StoreError> {
        let Some(commitment) = self.commitment(height)? else {
            return Ok(None);
        };
        let Some(bytes) = self.read_loc(FRAGMENTS, &self.fragments, height)? else {
            return Ok(None);
        };
        let fragment: Fragment =
            codec::decode(&bytes, VALUE_BYTES_MAX).map_err(|e| StoreError::Corrupt {
                table: FRAGMENTS.name,
                key: height.to_string(),
                reason: e.to_string(),
            })?;
        fragment
            .check(&commitment)
            .map(|c| Some(c.into_fragment()))
            .map_err(|e| StoreError::Corrupt {
                table: "fragments",
                key: height.to_string(),
                reason: e.to_string(),
            })
    }

    /// The stored body at `height`, if still inside the window. A body whose
    /// record fails its checksum counts as pruned: callers rebuild it from
    /// fragments, which are checked against the header's commitment.
    pub fn body(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.read_loc(BODIES, &self.bodies, height) {
            Err(StoreError::Corrupt { .. }) => Ok(None),
            other => other,
        }
    }

    /// Segment files found short when the store opened (see [`OpenDamage`]).
    pub fn open_damage(&self) -> OpenDamage {
        self.damage
    }

    /// Reads and checks this validator's own fragment at `height` (the scrub's
    /// unit of work).
    pub fn own_fragment_state(&self, height: u64) -> Result<FragmentState, StoreError> {
        let Some(commitment) = self.commitment(height)? else {
            return Ok(FragmentState::NoBlock);
        };
        let bytes = match self.read_loc(FRAGMENTS, &self.fragments, height) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(FragmentState::Missing),
            Err(StoreError::Corrupt { reason, .. }) => {
                return Ok(FragmentState::Corrupt { reason });
            }
            Err(e) => return Err(e),
        };
        let fragment: Fragment = match codec::decode(&bytes, VALUE_BYTES_MAX) {
            Ok(f) => f,
            Err(e) => {
                return Ok(FragmentState::Corrupt {
                    reason: format!("does not decode: {e}"),
                });
            }
        };
        let own_index = placement::fragment_of(
            self.config.validator_index,
            height,
            commitment.params.total_shards,
        );
        if fragment.index != own_index {
            return Ok(FragmentState::Corrupt {
                reason: format!("holds fragment {} instead of {own_index}", fragment.index),
            });
        }
        match fragment.check(&commitment) {
            Ok(_) => Ok(FragmentState::Good {
                bytes: bytes.len() as u64,
            }),
            Err(e) => Ok(FragmentState::Corrupt {
                reason: e.to_string(),
            }),
        }
    }

    /// An account's state.
    pub fn account(&self, account: &S::AccountKey) -> Result<Option<S::Account>, StoreError> {
        let k = codec::encode(account).map_err(|source| StoreError::Encode {
            table: "accounts",
            source,
        })?;
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let t = txn.open_table(ACCOUNTS).map_err(StoreError::db)?;
        match t.get(k.as_slice()).map_err(StoreError::db)? {
            Some(v) => unseal("accounts", &k, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every account, in key-byte order (for loading the ledger at start).
    pub fn accounts(&self) -> Result<AccountList<S>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let t = txn.open_table(ACCOUNTS).map_err(StoreError::db)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(StoreError::db)? {
            let (k, v) = entry.map_err(StoreError::db)?;
            let key: S::AccountKey =
                codec::decode(k.value(), 1024).map_err(|e| StoreError::Corrupt {
                    table: "accounts",
                    key: key_text(k.value()),
                    reason: e.to_string(),
                })?;
            out.push((key, unseal("accounts", k.value(), v.value())?));
        }
        Ok(out)
    }

    /// The full records of transaction `id` that committed blocks carried
    /// ([`CommittedBlock::tx_records`]), with their heights, ascending (a transfer
    /// that failed can be included again later).
    pub fn tx_records(&self, id: &[u8; 32]) -> Result<Vec<(u64, S::TxRecord)>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let table = txn.open_table(TX_RECORDS).map_err(StoreError::db)?;
        let (from, to) = (record_key(id, 0), record_key(id, u64::MAX));
        let mut out = Vec::new();
        for entry in table
            .range(from.as_slice()..=to.as_slice())
            .map_err(StoreError::db)?
        {
            let (k, v) = entry.map_err(StoreError::db)?;
            let key = k.value();
            let mut height = [0u8; 8];
            height.copy_from_slice(key.get(32..40).unwrap_or(&[0; 8]));
            out.push((
                u64::from_be_bytes(height),
                unseal("tx_records", key, v.value())?,
            ));
        }
        Ok(out)
    }

    /// The ids of [`CommittedBlock::live_ids`] the tip has not passed yet, as (id,
    /// the height that wrote it, until).
    pub fn live_ids(&self) -> Result<Vec<([u8; 32], u64, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let table = txn.open_table(LIVE_IDS).map_err(StoreError::db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(StoreError::db)? {
            let (k, v) = entry.map_err(StoreError::db)?;
            let (key, value) = (k.value(), v.value());
            let corrupt = || StoreError::Corrupt {
                table: "live_ids",
                key: format!("{key:02x?}"),
                reason: format!("{} key bytes and {} value bytes", key.len(), value.len()),
            };
            let (Some(until), Some(id), Ok(height)) = (
                key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
                key.get(8..).and_then(|b| <[u8; 32]>::try_from(b).ok()),
                <[u8; 8]>::try_from(value),
            ) else {
                return Err(corrupt());
            };
            out.push((id, u64::from_be_bytes(height), u64::from_be_bytes(until)));
        }
        Ok(out)
    }

    /// Saves a consensus payload durably (fsynced before returning): consensus
    /// persists a payload before the vote that depends on it.
    pub fn put_payload(
        &self,
        height: u64,
        digest: &[u8; 32],
        payload: &[u8],
    ) -> Result<(), StoreError> {
        self.put_consensus(None, &[(height, *digest, payload)])
    }

    /// Saves the safety record (if given) and consensus payloads `(height, digest,
    /// bytes)` in one durable transaction: one fsync where separate calls to
    /// [`Store::put_safety_record`] and [`Store::put_payload`] would cost one each.
    pub fn put_consensus(
        &self,
        record: Option<&S::SafetyRecord>,
        payloads: &[(u64, [u8; 32], &[u8])],
    ) -> Result<(), StoreError> {
        if record.is_none() && payloads.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(StoreError::db)?;
        {
            if let Some(record) = record {
                let bytes = seal("meta", META_SAFETY.as_bytes(), record)?;
                let mut meta = txn.open_table(META).map_err(StoreError::db)?;
                meta.insert(META_SAFETY, bytes.as_slice())
                    .map_err(StoreError::db)?;
            }
            if !payloads.is_empty() {
                let mut t = txn.open_table(PAYLOADS).map_err(StoreError::db)?;
                for (height, digest, payload) in payloads {
                    let key = payload_key(*height, digest);
                    let bytes = seal("payloads", &key, payload)?;
                    t.insert(key.as_slice(), bytes.as_slice())
                        .map_err(StoreError::db)?;
                }
            }
        }
        txn.commit().map_err(StoreError::db)
    }

    /// Every saved consensus payload: (height, digest, bytes), in height order.
    /// A payload whose checksum fails is skipped (peers can send it again).
    pub fn payloads(&self) -> Result<Vec<SavedPayload>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let table = txn.open_table(PAYLOADS).map_err(StoreError::db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(StoreError::db)? {
            let (k, v) = entry.map_err(StoreError::db)?;
            let key = k.value();
            let Ok(head) = <[u8; 40]>::try_from(key) else {
                continue;
            };
            let mut height = [0u8; 8];
            height.copy_from_slice(&head[..8]);
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&head[8..]);
            if let Ok(payload) = unseal::<Vec<u8>>("payloads", key, v.value()) {
                out.push((u64::from_be_bytes(height), digest, payload));
            }
        }
        Ok(out)
    }

    /// Deletes saved consensus payloads at heights up to `through` (they are below a
    /// stable checkpoint and no longer needed after a restart).
    pub fn prune_payloads(&self, through: u64) -> Result<(), StoreError> {
        let end = payload_key(through.saturating_add(1), &[0u8; 32]);
        let txn = self.db.begin_write().map_err(StoreError::db)?;
        {
            let mut t = txn.open_table(PAYLOADS).map_err(StoreError::db)?;
            t.retain_in(..end.as_slice(), |_, _| false)
                .map_err(StoreError::db)?;
        }
        txn.commit().map_err(StoreError::db)
    }

    /// Bytes each table takes in the file (stored, B-tree metadata and
    /// fragmentation), by table name, for sizing and benchmarks, then the bytes of
    /// the segment files (`fragment_segments`, `body_segments`). Tables not created
    /// yet are left out.
    pub fn table_bytes(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        fn size(stats: redb::TableStats) -> u64 {
            stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes()
        }
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let mut out = Vec::new();
        for table in [
            HEADERS,
            CERTIFICATES,
            COMMITMENTS,
            FRAGMENTS,
            BODIES,
            TX_RUNS,
            TX_RECENT,
            OUTCOMES,
        ] {
            match txn.open_table(table.definition) {
                Ok(t) => out.push((table.name, size(t.stats().map_err(StoreError::db)?))),
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(StoreError::db(e)),
            }
        }
        for (name, definition) in [
            ("accounts", ACCOUNTS),
            ("tx_records", TX_RECORDS),
            ("payloads", PAYLOADS),
        ] {
            match txn.open_table(definition) {
                Ok(t) => out.push((name, size(t.stats().map_err(StoreError::db)?))),
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(StoreError::db(e)),
            }
        }
        match txn.open_table(META) {
            Ok(t) => out.push(("meta", size(t.stats().map_err(StoreError::db)?))),
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(StoreError::db(e)),
        }
        out.push(("tx_index_runs", self.runs.bytes()));
        out.push(("fragment_segments", self.fragments.bytes()));
        out.push(("body_segments", self.bodies.bytes()));
        Ok(out)
    }

    /// The consensus safety record, if one was saved.
    pub fn safety_record(&self) -> Result<Option<S::SafetyRecord>, StoreError> {
        self.get_meta(META_SAFETY)
    }

    /// Saves the consensus safety record durably (fsynced before returning).
    pub fn put_safety_record(&self, record: &S::SafetyRecord) -> Result<(), StoreError> {
        self.put_consensus(Some(record), &[])
    }

    /// The body at `height`: the stored copy if inside the window, otherwise rebuilt
    /// from this validator's fragment plus fragments from `fetch(index)` (asked for
    /// one index at a time, only until k valid fragments are in hand).
    pub fn body_or_rebuild(
        &self,
        height: u64,
        mut fetch: impl FnMut(u32) -> Option<Fragment>,
    ) -> Result<Rebuilt, StoreError> {
        if let Some(body) = self.body(height)? {
            return Ok(Rebuilt {
                body,
                from_store: true,
                rejected: Vec::new(),
            });
        }
        let reconstruction = self.rebuild(height, &mut fetch)?;
        Ok(Rebuilt {
            body: reconstruction.body,
            from_store: false,
            rejected: reconstruction.rejected,
        })
    }

    fn rebuild(
        &self,
        height: u64,
        fetch: &mut dyn FnMut(u32) -> Option<Fragment>,
    ) -> Result<Reconstruction, StoreError> {
        let commitment = self
            .commitment(height)?
            .ok_or(StoreError::UnknownHeight { height })?;
        let params = commitment.params;
        let mut checked = Vec::new();
        let mut rejected = Vec::new();
        let mut have = vec![false; params.n()];
        // A corrupt own fragment is simply not used; repair() will replace it.
        if let Ok(Some(own)) = self.own_fragment(height) {
            have[own.index as usize] = true;
            checked.push(own);
        }
        for index in 0..params.total_shards as u32 {
            if checked.len() >= params.k() {
                break;
            }
            if have[index as usize] {
                continue;
            }
            let Some(fragment) = fetch(index) else {
                continue;
            };
            if fragment.index != index {
                rejected.push(FragmentError::IndexOutOfRange {
                    index: fragment.index,
                    total_shards: params.n(),
                });
                continue;
            }
            match fragment.check(&commitment) {
                Ok(c) => {
                    have[index as usize] = true;
                    checked.push(c.into_fragment());
                }
                Err(e) => rejected.push(e),
            }
        }
        let mut reconstruction =
            coding::reconstruct(&commitment, checked).map_err(|source| match source {
                CodingError::NotEnoughFragments { found, needed, .. } => StoreError::Rebuild {
                    height,
                    source: CodingError::NotEnoughFragments {
                        found,
                        needed,
                        rejected: rejected.clone(),
                    },
                },
                source => StoreError::Rebuild { height, source },
            })?;
        reconstruction.rejected.extend(rejected);
        Ok(reconstruction)
    }

    /// Heights in `from..=to` whose own fragment is missing or corrupt.
    pub fn missing_fragments(&self, from: u64, to: u64) -> Result<Vec<u64>, StoreError> {
        let mut missing = Vec::new();
        for height in from..=to {
            if self.commitment(height)?.is_none() {
                continue;
            }
            match self.own_fragment(height) {
                Ok(Some(_)) => {}
                Ok(None) | Err(StoreError::Corrupt { .. }) => missing.push(height),
                Err(e) => return Err(e),
            }
        }
        Ok(missing)
    }

    /// Heights in `from..=to` that the index holds an own fragment for, at most
    /// `max` of them, in order: one range scan of the index, no fragment read (the
    /// scrub reads and checks the bytes at its own disk rate, and re-derives or
    /// drops what fails).
    pub fn indexed_own_fragments(
        &self,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let mut heights = Vec::new();
        if from > to {
            return Ok(heights);
        }
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let t = txn
            .open_table(FRAGMENTS.definition)
            .map_err(StoreError::db)?;
        for item in t.range(from..=to).map_err(StoreError::db)?.take(max) {
            let (height, _) = item.map_err(StoreError::db)?;
            heights.push(height.value());
        }
        Ok(heights)
    }

    /// Rebuilds the block at `height` from fragments (`fetch` as in
    /// [`Self::body_or_rebuild`]), re-derives this validator's fragment and stores it.
    pub fn repair(
        &self,
        height: u64,
        mut fetch: impl FnMut(u32) -> Option<Fragment>,
    ) -> Result<Vec<FragmentError>, StoreError> {
        let commitment = self
            .commitment(height)?
            .ok_or(StoreError::UnknownHeight { height })?;
        let reconstruction = match self.body(height) {
            Ok(Some(body)) => coding::check_encoding(&body, &commitment)
                .map(|encoded| Reconstruction {
                    body,
                    rejected: Vec::new(),
                    encoded,
                })
                .map_err(|source| StoreError::BadBody { height, source })?,
            _ => self.rebuild(height, &mut fetch)?,
        };
        let own_index = placement::fragment_of(
            self.config.validator_index,
            height,
            commitment.params.total_shards,
        );
        let fragment = reconstruction.encoded.fragment(own_index as usize).ok_or(
            StoreError::BadOwnFragment {
                height,
                reason: format!(
                    "index {own_index} outside the block's {} fragments",
                    commitment.params.n()
                ),
            },
        )?;
        let bytes = codec::encode(&fragment).map_err(|source| StoreError::Encode {
            table: FRAGMENTS.name,
            source,
        })?;
        // The old record, if any, stays in its segment unreferenced.
        let mut log = self.fragments.appender();
        let loc = log.append(height, &bytes)?;
        log.sync()?;
        let txn = self.db.begin_write().map_err(StoreError::db)?;
        {
            let mut t = txn
                .open_table(FRAGMENTS.definition)
                .map_err(StoreError::db)?;
            let value = seal(FRAGMENTS.name, &height_key(height), &loc)?;
            t.insert(height, value.as_slice()).map_err(StoreError::db)?;
            let mut meta = txn.open_table(META).map_err(StoreError::db)?;
            let end = seal("meta", META_FRAGMENT_LOG.as_bytes(), &log.end())?;
            meta.insert(META_FRAGMENT_LOG, end.as_slice())
                .map_err(StoreError::db)?;
        }
        txn.commit().map_err(StoreError::db)?;
        Ok(reconstruction.rejected)
    }

    /// Drops this validator's fragment at `height` (an operator's disk-loss drill, or
    /// to force a re-derivation by [`Self::repair`]).
    pub fn forget_own_fragment(&self, height: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::db)?;
        {
            let mut t = txn
                .open_table(FRAGMENTS.definition)
                .map_err(StoreError::db)?;
            t.remove(height).map_err(StoreError::db)?;
        }
        txn.commit().map_err(StoreError::db)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    struct Plain;

    impl Schema for Plain {
        type Header = u64;
        type Certificate = u64;
        type AccountKey = u64;
        type Account = u64;
        type SafetyRecord = u64;
        type TxRecord = u64;
    }

    fn record(store: &Store<Plain>, seq: u64, record: &RunRecord) {
        let sealed = seal(TX_RUNS.name, &height_key(seq), record).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(TX_RUNS.definition)
            .unwrap()
            .insert(seq, sealed.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    /// A commit publishes its run before its transaction records it: a merge in
    /// between must leave that run alone (else it deletes a file the commit then
    /// records, and the store cannot open again).
    #[test]
    fn a_merge_never_takes_a_run_its_commit_has_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let config = StoreConfig {
            index_run_entries: 1,
            ..StoreConfig::default()
        };
        let store = Store::<Plain>::open(&path, config).unwrap();
        let mut records = Vec::new();
        for h in 1..=8u64 {
            let seq = store.runs.next_seq();
            let run = store.runs.write_run(seq, &[(h as u32, h)]).unwrap();
            store.runs.publish(seq, run.clone()).unwrap();
            records.push((seq, run));
        }
        // The first 7 are recorded; the 8th is still in its commit.
        for (seq, run) in &records[..7] {
            record(&store, *seq, run);
        }
        assert!(!store.compact_index().unwrap(), "merged an unrecorded run");
        assert_eq!(store.index_runs(), 8);
        let files = || std::fs::read_dir(store.runs.dir()).unwrap().count();
        assert_eq!(files(), 8, "the abandoned merge's file is removed");
        // Once recorded, the 8 merge.
        let (seq, run) = &records[7];
        record(&store, *seq, run);
        assert!(store.compact_index().unwrap());
        assert_eq!(store.index_runs(), 1);
        assert_eq!(files(), 1);
        for h in 1..=8u64 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&(h as u32).to_be_bytes());
            assert_eq!(store.tx_heights(&id).unwrap(), vec![h]);
        }
        drop(store);
        let store = Store::<Plain>::open(&path, config).unwrap();
        assert_eq!(store.index_runs(), 1);
    }
}
