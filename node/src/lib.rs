//! The Mosaic validator node: the account ledger ([`ledger`]), the [`mempool`], the
//! [`block`] format, the [`genesis`] file and node [`config`], the replicated
//! [`chain`] (payload check and execution), the store [`schema`], libp2p
//! networking ([`net`], [`links`]), the HTTP [`api`], [`metrics`], and the event
//! loop that runs them ([`service`] starts it; the loop itself, one file per
//! concern, is the private `driver` module; what the API and the scrub know of it
//! is in [`control`], its errors in [`error`], its door to test-only Byzantine
//! behaviour in [`edge`]) with its rooms, each owning one concern's
//! state: held PRE-PREPAREs ([`held`]), catch-up ([`sync`]), peer scores
//! ([`peers`]), gossip checks ([`gossip`]), sync serving ([`serve`]) and fragment
//! gathering ([`gather`]); beside it the [`scrub`] keeps every own fragment present
//! and intact.
//!
//! Invariants: a block is executed only after consensus delivered it with its
//! commit certificate, and it is durable in the store before anything reports it;
//! a PRE-PREPARE reaches consensus only once its parent is executed here (its
//! header names the state after the parent); nothing a peer or client sends can
//! panic the node: every input is size-limited, decoded with limits and verified.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mosaic_node::{config::NodeConfig, genesis::Genesis, service};
//! let config = NodeConfig::read("node.toml".as_ref())?;
//! let genesis = Genesis::read(&config.genesis_file)?;
//! let key = mosaic_crypto::keyfile::read_key_file(&config.key_file)?;
//! let node = service::start(config, genesis, key, service::TestOptions::default()).await?;
//! node.wait().await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod api_listener;
pub mod api_page;
pub mod api_proofs;
pub mod api_routes;
pub mod backlog;
pub use mosaic_ledger::block;
pub mod chain;
pub mod config;
pub mod control;
pub mod edge;
pub mod error;
#[cfg(feature = "byzantine")]
pub mod forge;
pub mod gather;
pub use mosaic_ledger::genesis;
pub mod gossip;
pub mod held;
pub use mosaic_ledger::ledger;
mod driver;
pub mod links;
pub mod maverick;
pub mod mempool;
pub mod mempool_log;
pub mod metrics;
pub mod net;
pub mod overview;
pub mod peers;
pub mod proof_cache;
pub mod proposal;
pub mod read_budget;
pub mod schema;
pub mod scrub;
pub mod serve;
pub mod service;
pub mod sigbatch;
pub mod sync;
pub mod verify_pool;
