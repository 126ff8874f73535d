//! The Mosaic validator node. So far: the account ledger ([`ledger`]: signed
//! transfers, deterministic execution, state root), the [`mempool`], the [`block`]
//! format, the [`genesis`] file and the node [`config`]. Networking, the HTTP API and
//! the event loop are being built (see the project's issues).

pub mod block;
pub mod config;
pub mod genesis;
pub mod ledger;
pub mod mempool;
