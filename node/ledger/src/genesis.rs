//! The genesis file, shared by every validator of a chain: chain id, validators,
//! erasure-coding k, and initial balances. JSON a person can read and edit.
//!
//! ```json
//! {
//!   "chain_id": "mosaic-local",
//!   "data_shards": 2,
//!   "validators": [{ "name": "v0", "public_key": "<64 hex>" }, ...],
//!   "balances": [{ "address": "<64 hex>", "amount": 1000000 }]
//! }
//! ```
//! Its hash (blake3 of the canonical encoding) is the parent of block 1 and the
//! consensus genesis digest, so validators with different genesis files never agree.

use std::path::Path;

use mosaic_consensus::ValidatorSet;
use mosaic_crypto::{ChainId, Hash, PublicKey, codec};
use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;

/// Largest genesis file read.
const GENESIS_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// One validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// A name for logs and tables.
    pub name: String,
    /// Its consensus key (also its libp2p identity).
    pub public_key: PublicKey,
}

/// One initial balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisBalance {
    /// The account.
    pub address: PublicKey,
    /// Its balance.
    pub amount: u64,
}

/// The genesis of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain id.
    pub chain_id: ChainId,
    /// k: fragments needed to rebuild a block (default f + 1).
    pub data_shards: u16,
    /// The validators, in index order.
    pub validators: Vec<GenesisValidator>,
    /// Initial balances.
    pub balances: Vec<GenesisBalance>,
}

/// What is wrong with a genesis file.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// Cannot read it.
    #[error("cannot read genesis file {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid JSON for a genesis.
    #[error("genesis file {path} is malformed: {reason}")]
    Malformed {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Valid JSON, but not a usable chain.
    #[error("genesis is invalid: {0}")]
    Invalid(String),
}

impl Genesis {
    /// Checks the rules: 4 to 256 distinct validators, 1 <= k <= n, balances that
    /// fit in u64.
    pub fn validate(&self) -> Result<(), GenesisError> {
        self.validator_set()
            .map_err(|e| GenesisError::Invalid(e.to_string()))?;
        let n = self.validators.len();
        let k = self.data_shards as usize;
        if k == 0 || k > n {
            return Err(GenesisError::Invalid(format!(
                "data_shards (k) = {k} must be between 1 and the number of validators ({n})"
            )));
        }
        self.ledger()?;
        Ok(())
    }

    /// Reads and validates a genesis file.
    pub fn read(path: &Path) -> Result<Genesis, GenesisError> {
        let shown = path.display().to_string();
        let io = |source| GenesisError::Io {
            path: shown.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > GENESIS_BYTES_MAX {
            return Err(GenesisError::Malformed {
                path: shown,
                reason: format!("{len} bytes is more than the {GENESIS_BYTES_MAX} allowed"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let genesis: Genesis =
            serde_json::from_str(&text).map_err(|e| GenesisError::Malformed {
                path: shown,
                reason: e.to_string(),
            })?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// The validator set.
    pub fn validator_set(&self) -> Result<ValidatorSet, mosaic_consensus::ValidatorSetError> {
        ValidatorSet::new(
            self.chain_id.clone(),
            self.validators.iter().map(|v| v.public_key).collect(),
        )
    }

    /// The initial ledger.
    pub fn ledger(&self) -> Result<Ledger, GenesisError> {
        let balances: Vec<(PublicKey, u64)> = self
            .balances
            .iter()
            .map(|b| (b.address, b.amount))
            .collect();
        Ledger::from_balances(&balances)
            .ok_or_else(|| GenesisError::Invalid("balances overflow u64".into()))
    }

    /// The genesis hash.
    pub fn hash(&self) -> Hash {
        Hash::of(&codec::encode(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_crypto::Keypair;

    fn genesis(n: u64, k: u16) -> Genesis {
        Genesis {
            chain_id: ChainId::new("g").unwrap(),
            data_shards: k,
            validators: (0..n)
                .map(|i| GenesisValidator {
                    name: format!("v{i}"),
                    public_key: Keypair::from_seed_for_tests(i).public(),
                })
                .collect(),
            balances: vec![GenesisBalance {
                address: Keypair::from_seed_for_tests(100).public(),
                amount: 5,
            }],
        }
    }

    #[test]
    fn json_round_trip_and_validation() {
        let g = genesis(4, 2);
        g.validate().unwrap();
        let json = serde_json::to_string_pretty(&g).unwrap();
        let dir = std::env::temp_dir().join(format!("mosaic-genesis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("genesis.json");
        std::fs::write(&path, &json).unwrap();
        let back = Genesis::read(&path).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.hash(), g.hash());
        std::fs::write(
            &path,
            json.replace("\"data_shards\": 2", "\"data_shards\": 9"),
        )
        .unwrap();
        assert!(matches!(
            Genesis::read(&path),
            Err(GenesisError::Invalid(_))
        ));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            Genesis::read(&path),
            Err(GenesisError::Malformed { .. })
        ));
        assert!(matches!(
            Genesis::read(&dir.join("missing.json")),
            Err(GenesisError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_chains_are_refused() {
        assert!(genesis(3, 1).validate().is_err(), "fewer than 4 validators");
        assert!(genesis(4, 0).validate().is_err(), "k = 0");
        let mut g = genesis(4, 2);
        g.validators[1].public_key = g.validators[0].public_key;
        assert!(g.validate().is_err(), "duplicate validator");
        let mut g = genesis(4, 2);
        g.balances.push(GenesisBalance {
            address: g.balances[0].address,
            amount: u64::MAX,
        });
        assert!(g.validate().is_err(), "overflowing supply");
    }

    #[test]
    fn different_genesis_different_hash() {
        assert_ne!(genesis(4, 2).hash(), genesis(4, 1).hash());
    }
}
