//! Why a node could not start or had to stop.

use std::net::SocketAddr;

use crate::chain::ExecuteError;
use crate::genesis::GenesisError;
use crate::mempool_log;
use crate::net::NetError;

/// Why the node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The genesis file is unusable.
    #[error("genesis: {0}")]
    Genesis(#[from] GenesisError),
    /// The validator key is not in the genesis validator set.
    #[error(
        "key {public_key} is not a validator of chain {chain}: use one of the genesis validators' key files"
    )]
    NotAValidator {
        /// The key's public half.
        public_key: String,
        /// The chain.
        chain: String,
    },
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The store failed (fatal: check the disk, then restart).
    #[error("store: {0}")]
    Store(#[from] mosaic_storage::StoreError),
    /// Network setup failed.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// The mempool log could not be read back or started.
    #[error("{0}")]
    MempoolLog(#[from] mempool_log::LogError),
    /// A listen address could not be used.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The signature-check threads could not be started.
    #[error("cannot start the signature-check threads: {0} (check the process and thread limits)")]
    Threads(#[source] std::io::Error),
    /// The HTTP API could not bind.
    #[error("cannot serve the HTTP API on {address}: {source}")]
    Api {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A committed block could not be executed or stored.
    #[error("{0}")]
    Execute(#[from] ExecuteError),
    /// The event loop task ended abnormally.
    #[error("node task failed: {0}")]
    Task(String),
}
