//! What can go wrong in the store, shared by the store and its parts (the segment
//! log, the transaction index), which import it from here rather than from each
//! other.

use mosaic_crypto::codec::CodecError;

use crate::coding::CodingError;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written. A failed write is fatal to
    /// the node: stop, check the disk, restart.
    #[error("database error: {0}")]
    Database(#[from] redb::Error),
    /// A stored value failed its checksum or could not be decoded.
    #[error(
        "corrupt data in table {table} at key {key}: {reason}; the store must be repaired (re-fetch the block from peers)"
    )]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// The key, as text.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode value for table {table}: {source}")]
    Encode {
        /// Table name.
        table: &'static str,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// Blocks must be committed in order.
    #[error(
        "block {got} cannot follow tip {tip:?}: blocks are committed in height order starting at 1"
    )]
    OutOfOrder {
        /// The current tip.
        tip: Option<u64>,
        /// The height offered.
        got: u64,
    },
    /// The own fragment given with a block is not the one this validator keeps, or
    /// does not match the block's commitment.
    #[error("own fragment for block {height} is wrong: {reason}")]
    BadOwnFragment {
        /// Height.
        height: u64,
        /// What is wrong.
        reason: String,
    },
    /// The body does not match the commitment.
    #[error("body of block {height} does not match its commitment: {source}")]
    BadBody {
        /// Height.
        height: u64,
        /// Why.
        #[source]
        source: CodingError,
    },
    /// A segment file could not be created, read, written or synced. A failed write
    /// is fatal to the node: stop, check the disk (space, permissions), restart.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Nothing is stored for that height.
    #[error("no block at height {height}")]
    UnknownHeight {
        /// Height.
        height: u64,
    },
    /// A body could not be rebuilt from fragments.
    #[error("cannot rebuild block {height}: {source}")]
    Rebuild {
        /// Height.
        height: u64,
        /// Why.
        #[source]
        source: CodingError,
    },
    /// The store was initialized for another chain.
    #[error(
        "the store belongs to genesis {found}, not {expected}: use a fresh data dir for this chain"
    )]
    WrongGenesis {
        /// The genesis id this store was initialized with.
        found: String,
        /// The genesis id asked for.
        expected: String,
    },
    /// The file was written by an incompatible version.
    #[error(
        "store format {found} is not supported (this build reads format {supported}); use a matching release or a fresh data dir"
    )]
    Format {
        /// Version found.
        found: u64,
        /// The version this build reads ([`crate::store::STORE_FORMAT`]).
        supported: u64,
    },
}

impl StoreError {
    pub(crate) fn db(e: impl Into<redb::Error>) -> Self {
        let e: redb::Error = e.into();
        match e {
            redb::Error::Corrupted(reason) => StoreError::Corrupt {
                table: "(database file)",
                key: String::new(),
                reason,
            },
            other => StoreError::Database(other),
        }
    }
}
