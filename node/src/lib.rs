//! The Mosaic validator node. So far: the account ledger ([`ledger`]: signed
//! transfers, deterministic execution, state root) and the [`mempool`]. Networking,
//! the HTTP API and the event loop are being built (see the project's issues).

pub mod block;
pub mod genesis;
pub mod ledger;
pub mod mempool;
