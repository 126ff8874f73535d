//! The ledger's data, and what a client holding only the genesis file can check:
//! the [`block`] format, transfers and accounts with their execution ([`ledger`]),
//! the [`genesis`] file, and [`proof`]s of an account or a transfer against a
//! commit certificate of the genesis validators.
//!
//! This crate is pure (no I/O but reading the genesis file, no clock, no network):
//! the validator node builds on it, and the CLI and the auditor use it to check
//! what a node answers without trusting that node.
//!
//! ```
//! use mosaic_ledger::ledger::{Account, Ledger};
//! let key = mosaic_crypto::Keypair::from_seed_for_tests(1).public();
//! let ledger = Ledger::from_balances(&[(key, 10)]).unwrap();
//! assert_eq!(ledger.account(&key), Account { balance: 10, nonce: 0 });
//! ```

pub mod block;
pub mod genesis;
pub mod ledger;
pub mod proof;
