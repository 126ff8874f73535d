//! Proofs a client checks with the genesis file alone: an account's state (or its
//! absence) and a transfer's outcome, each tied to a header that 2f+1 genesis
//! validators signed.
//!
//! - **Account.** Header h names the state root after block h - 1; an
//!   [`AccountProof`] is the account (or `None`), its trie path under that root
//!   ([`mosaic_crypto::TrieProof`]: inclusion, or the neighbouring leaves for an
//!   absent account) and header h with its commit certificate.
//! - **Transfer.** A [`TxProof`] is the signed transfer, its position and Merkle path
//!   under block h's `tx_root`, block h's certified header, its outcome and path
//!   under the `outcome_root` of header h + 1 (which commits to block h's outcomes),
//!   and header h + 1 with its certificate.
//! - **Trust.** [`Checker`] holds the genesis validator set and chain id; nothing else
//!   is trusted: no trusting period, no header chain, no hash pasted by hand. A proof
//!   that verifies is true of the chain those validators certified, unless more than
//!   f of them are faulty. It can be old: it says which height it proves, and a
//!   client that knows a later height asks for a newer one.
//!
//! Proofs travel as canonical bytes ([`mosaic_crypto::codec`]), decoded with a
//! byte limit; what a client prints comes from the checked bytes, never from other
//! fields of an answer.

use mosaic_consensus::{CommitCertificate, ValidatorSet};
use mosaic_crypto::{ChainId, Hash, MerkleError, MerkleProof, PublicKey, TrieProofError, codec};
use serde::{Deserialize, Serialize};

use crate::block::{BlockHeader, outcome_leaf};
use crate::genesis::Genesis;
use crate::ledger::{Account, AccountProof as AccountTrieProof, SignedTransfer, TxOutcome};

/// Largest encoded proof decoded (a transfer proof carries two certificates of up
/// to 171 signatures at n = 256, two headers and two paths: well below this).
pub const PROOF_BYTES_MAX: usize = 256 * 1024;

/// A header and the commit certificate that signs its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedHeader {
    /// The header.
    pub header: BlockHeader,
    /// 2f+1 COMMITs for its hash.
    pub certificate: CommitCertificate,
}

/// An account's state after block `at.header.height - 1`, or its absence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountProof {
    /// The account proven.
    pub address: PublicKey,
    /// Its state; `None`: no such account (zero balance, nonce 0).
    pub account: Option<Account>,
    /// Its path under `at.header.state_root`.
    pub trie: AccountTrieProof,
    /// The header whose state root it is under, certified.
    pub at: CertifiedHeader,
}

/// A transfer's inclusion in block h and its outcome there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxProof {
    /// The transfer, as signed.
    pub transfer: SignedTransfer,
    /// Its position in block h.
    pub index: u32,
    /// Its id's path under `block.header.tx_root`.
    pub tx_path: MerkleProof,
    /// Block h's header, certified.
    pub block: CertifiedHeader,
    /// What executing it did.
    pub outcome: TxOutcome,
    /// The outcome's path under `next.header.outcome_root`.
    pub outcome_path: MerkleProof,
    /// Block h + 1's header, certified.
    pub next: CertifiedHeader,
}

/// Why a proof does not hold. Each variant says what was forged or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The bytes are not a proof.
    #[error("not a proof: {0}")]
    Malformed(String),
    /// The genesis file cannot be used to check anything.
    #[error("genesis is invalid: {0}")]
    Genesis(String),
    /// A proof of another account than the one asked.
    #[error("proof is for account {got}, not {asked}")]
    WrongAccount {
        /// Asked (hex).
        asked: String,
        /// Proven (hex).
        got: String,
    },
    /// A proof of another transfer than the one asked.
    #[error("proof is for transfer {got}, not {asked}")]
    WrongTransfer {
        /// Asked.
        asked: Hash,
        /// Proven.
        got: Hash,
    },
    /// A header of another chain.
    #[error("header is for chain {got}, not {expected}")]
    WrongChain {
        /// The genesis chain.
        expected: ChainId,
        /// The header's.
        got: ChainId,
    },
    /// The certificate does not sign this header at this height.
    #[error("certificate signs {digest} at height {seq}, not header {header} at height {height}")]
    CertificateMismatch {
        /// What the certificate signs.
        digest: Hash,
        /// At which sequence number.
        seq: u64,
        /// The header's hash.
        header: Hash,
        /// The header's height.
        height: u64,
    },
    /// The certificate's signatures do not come from 2f+1 genesis validators.
    #[error(
        "certificate at height {height} does not verify against the genesis validators: {reason}"
    )]
    BadCertificate {
        /// Its height.
        height: u64,
        /// Why.
        reason: String,
    },
    /// The account's trie path does not lead to the header's state root.
    #[error("account does not match the state root of height {height}: {source}")]
    Trie {
        /// The header's height.
        height: u64,
        /// What failed.
        #[source]
        source: TrieProofError,
    },
    /// A Merkle path does not lead to the header's root.
    #[error("{what} path does not lead to the root in header {height}: {source}")]
    Path {
        /// Which root (`tx_root`, `outcome_root`).
        what: &'static str,
        /// The header's height.
        height: u64,
        /// What failed.
        #[source]
        source: MerkleError,
    },
    /// The two headers of a transfer proof are not a block and its child.
    #[error("header {next} (parent {parent}) does not follow block {height} ({hash})")]
    NotConsecutive {
        /// Block h's height.
        height: u64,
        /// Block h's hash.
        hash: Hash,
        /// The next header's height.
        next: u64,
        /// The next header's parent.
        parent: Hash,
    },
    /// The transfer's signature or chain is wrong.
    #[error("transfer does not verify: {0}")]
    BadTransfer(String),
}

/// A value proven against the genesis validators, with what was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified<T> {
    /// The proven value.
    pub value: T,
    /// The height of the certified header that proves it.
    pub height: u64,
    /// Validators whose signatures the certificate carries.
    pub signers: usize,
    /// Validators in the genesis set.
    pub validators: usize,
    /// The genesis the validators came from.
    pub genesis: Hash,
}

/// A proven account: its state after block `height - 1` ([`Verified::height`] is
/// the header's height).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvenAccount {
    /// The address.
    pub address: PublicKey,
    /// Its state (zero if absent).
    pub account: Account,
    /// Whether the account exists (a proof of absence otherwise).
    pub exists: bool,
}

/// A proven transfer outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvenTransfer {
    /// The transfer's id.
    pub id: Hash,
    /// The block it is in.
    pub block: u64,
    /// Its position there.
    pub index: u32,
    /// What executing it did.
    pub outcome: TxOutcome,
    /// The transfer as signed.
    pub transfer: SignedTransfer,
}

/// Checks proofs against one genesis.
#[derive(Debug, Clone)]
pub struct Checker {
    genesis: Hash,
    chain: ChainId,
    validators: ValidatorSet,
}

impl Checker {
    /// A checker trusting `genesis` only.
    pub fn new(genesis: &Genesis) -> Result<Self, ProofError> {
        let validators = genesis
            .validator_set()
            .map_err(|e| ProofError::Genesis(e.to_string()))?;
        Ok(Checker {
            genesis: genesis.hash(),
            chain: genesis.chain_id.clone(),
            validators,
        })
    }

    /// The trusted genesis hash.
    pub fn genesis(&self) -> Hash {
        self.genesis
    }

    /// Checks an account proof given as canonical bytes, for `address`.
    pub fn account(
        &self,
        address: &PublicKey,
        bytes: &[u8],
    ) -> Result<Verified<ProvenAccount>, ProofError> {
        let proof: AccountProof = decode(bytes)?;
        self.check_account(address, &proof)
    }

    /// Checks a decoded account proof, for `address`.
    pub fn check_account(
        &self,
        address: &PublicKey,
        proof: &AccountProof,
    ) -> Result<Verified<ProvenAccount>, ProofError> {
        if proof.address != *address {
            return Err(ProofError::WrongAccount {
                asked: address.to_string(),
                got: proof.address.to_string(),
            });
        }
        let header = &proof.at.header;
        self.check_certified(&proof.at)?;
        proof
            .trie
            .verify(&header.state_root, address, proof.account.as_ref())
            .map_err(|source| ProofError::Trie {
                height: header.height,
                source,
            })?;
        Ok(self.verified(
            &proof.at,
            ProvenAccount {
                address: *address,
                account: proof.account.unwrap_or_default(),
                exists: proof.account.is_some(),
            },
        ))
    }

    /// Checks a transfer proof given as canonical bytes, for the transfer `id`.
    pub fn transfer(
        &self,
        id: &Hash,
        bytes: &[u8],
    ) -> Result<Verified<ProvenTransfer>, ProofError> {
        let proof: TxProof = decode(bytes)?;
        self.check_transfer(id, &proof)
    }

    /// Checks a decoded transfer proof, for the transfer `id`.
    pub fn check_transfer(
        &self,
        id: &Hash,
        proof: &TxProof,
    ) -> Result<Verified<ProvenTransfer>, ProofError> {
        let got = proof.transfer.hash();
        if got != *id {
            return Err(ProofError::WrongTransfer { asked: *id, got });
        }
        proof
            .transfer
            .clone()
            .verify(&self.chain)
            .map_err(|e| ProofError::BadTransfer(e.to_string()))?;
        self.check_certified(&proof.block)?;
        self.check_certified(&proof.next)?;
        let (block, next) = (&proof.block.header, &proof.next.header);
        let hash = block.hash();
        if Some(next.height) != block.height.checked_add(1) || next.parent != hash {
            return Err(ProofError::NotConsecutive {
                height: block.height,
                hash,
                next: next.height,
                parent: next.parent,
            });
        }
        let index = proof.index as usize;
        proof
            .tx_path
            .verify(&block.tx_root, index, id.as_bytes())
            .map_err(|source| ProofError::Path {
                what: "tx_root",
                height: block.height,
                source,
            })?;
        if proof.tx_path.leaf_count != block.tx_count {
            return Err(ProofError::Path {
                what: "tx_root",
                height: block.height,
                source: MerkleError::IndexOutOfRange {
                    index: u64::from(proof.index),
                    leaf_count: u64::from(block.tx_count),
                },
            });
        }
        proof
            .outcome_path
            .verify_hash(&next.outcome_root, index, outcome_leaf(id, &proof.outcome))
            .map_err(|source| ProofError::Path {
                what: "outcome_root",
                height: next.height,
                source,
            })?;
        Ok(self.verified(
            &proof.block,
            ProvenTransfer {
                id: *id,
                block: block.height,
                index: proof.index,
                outcome: proof.outcome,
                transfer: proof.transfer.clone(),
            },
        ))
    }

    /// That `certified` is a header of this chain signed by 2f+1 genesis validators.
    pub fn check_certified(&self, certified: &CertifiedHeader) -> Result<(), ProofError> {
        let (header, certificate) = (&certified.header, &certified.certificate);
        if header.chain != self.chain {
            return Err(ProofError::WrongChain {
                expected: self.chain.clone(),
                got: header.chain.clone(),
            });
        }
        let hash = header.hash();
        if certificate.digest.0 != hash || certificate.seq.0 != header.height {
            return Err(ProofError::CertificateMismatch {
                digest: certificate.digest.0,
                seq: certificate.seq.0,
                header: hash,
                height: header.height,
            });
        }
        certificate
            .verify(&self.validators)
            .map_err(|e| ProofError::BadCertificate {
                height: header.height,
                reason: e.to_string(),
            })
    }

    fn verified<T>(&self, at: &CertifiedHeader, value: T) -> Verified<T> {
        Verified {
            value,
            height: at.header.height,
            signers: at.certificate.signatures.len(),
            validators: self.validators.len(),
            genesis: self.genesis,
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProofError> {
    codec::decode(bytes, PROOF_BYTES_MAX).map_err(|e| ProofError::Malformed(e.to_string()))
}

/// The canonical bytes of a proof, as served.
pub fn encode<T: Serialize>(proof: &T) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(proof)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod tests {
    use super::*;
    use crate::block::{AfterParent, Block, Position, outcome_root, outcome_tree, tx_root};
    use crate::genesis::{GenesisBalance, GenesisValidator};
    use crate::ledger::{FailReason, Ledger, Transfer, verify_batch};
    use mosaic_consensus::messages::{Commit, Signed};
    use mosaic_consensus::{Digest, ReplicaId, SeqNum, View};
    use mosaic_crypto::{Domain, Keypair, MerkleTree};

    fn key(seed: u64) -> Keypair {
        Keypair::from_seed_for_tests(seed)
    }

    fn genesis() -> Genesis {
        Genesis {
            chain_id: ChainId::new("proofs").unwrap(),
            data_shards: 2,
            validators: (0..4)
                .map(|i| GenesisValidator {
                    name: format!("v{i}"),
                    public_key: key(i).public(),
                })
                .collect(),
            balances: vec![GenesisBalance {
                address: key(100).public(),
                amount: 1_000,
            }],
        }
    }

    /// A certificate over `header` signed by the validators `signers` (keys by seed).
    fn certify(header: &BlockHeader, signers: &[u64]) -> CertifiedHeader {
        let g = genesis();
        let validators = g.validator_set().unwrap();
        let body = Commit {
            view: View(0),
            seq: SeqNum(header.height),
            digest: Digest(header.hash()),
        };
        let bytes = Signed::signing_bytes(&body).unwrap();
        let signatures = signers
            .iter()
            .map(|&i| {
                (
                    ReplicaId(i as u32),
                    key(i).sign(Domain::Commit, validators.chain(), &bytes),
                )
            })
            .collect();
        CertifiedHeader {
            header: header.clone(),
            certificate: CommitCertificate {
                view: View(0),
                seq: SeqNum(header.height),
                digest: Digest(header.hash()),
                signatures,
            },
        }
    }

    /// Block 1 (a payment and an overdraft), block 2 after it, and the ledger
    /// before and after block 1.
    struct Chain {
        one: Block,
        two: Block,
        outcomes: Vec<(Hash, TxOutcome)>,
        before: Ledger,
        after: Ledger,
    }

    fn chain() -> Chain {
        let g = genesis();
        let mut ledger = g.ledger().unwrap();
        let before = ledger.clone();
        let pay = |from: u64, amount: u64| {
            Transfer {
                chain: g.chain_id.clone(),
                from: key(from).public(),
                to: key(200).public(),
                amount,
                nonce: 0,
                valid_until: 100,
            }
            .sign(&key(from))
        };
        let txs = vec![pay(100, 10), pay(101, 5)];
        let position = Position {
            chain: g.chain_id.clone(),
            height: 1,
            parent: g.hash(),
        };
        let after = AfterParent {
            state_root: ledger.state_root(),
            outcome_root: Hash::ZERO,
        };
        let (one, _) = Block::build(&position, 0, 0, after, txs.clone(), 2, 4).unwrap();
        let verified: Vec<_> = verify_batch(txs, &g.chain_id)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let execution = ledger.apply(1, &verified);
        let position = Position {
            chain: g.chain_id.clone(),
            height: 2,
            parent: one.header.hash(),
        };
        let after = AfterParent {
            state_root: ledger.state_root(),
            outcome_root: outcome_root(&execution.outcomes),
        };
        let (two, _) = Block::build(&position, 0, 1, after, Vec::new(), 2, 4).unwrap();
        Chain {
            one,
            two,
            outcomes: execution.outcomes,
            before,
            after: ledger,
        }
    }

    const QUORUM: [u64; 3] = [0, 1, 3];

    fn account_proof(c: &Chain, who: u64) -> AccountProof {
        let mut ledger = c.after.clone();
        ledger.state_root();
        let address = key(who).public();
        let trie = ledger.snapshot();
        AccountProof {
            address,
            account: trie.get(&address).copied(),
            trie: trie.prove(&address),
            at: certify(&c.two.header, &QUORUM),
        }
    }

    fn tx_proof(c: &Chain, index: usize) -> TxProof {
        let ids: Vec<Hash> = c.one.txs.iter().map(SignedTransfer::hash).collect();
        assert_eq!(tx_root(&c.one.txs), c.one.header.tx_root);
        TxProof {
            transfer: c.one.txs[index].clone(),
            index: index as u32,
            tx_path: MerkleTree::from_leaves(&ids).unwrap().proof(index).unwrap(),
            block: certify(&c.one.header, &QUORUM),
            outcome: c.outcomes[index].1,
            outcome_path: outcome_tree(&c.outcomes).unwrap().proof(index).unwrap(),
            next: certify(&c.two.header, &QUORUM),
        }
    }

    #[test]
    fn honest_proofs_verify_from_the_genesis_file_alone() {
        let c = chain();
        let checker = Checker::new(&genesis()).unwrap();
        let payer = key(100).public();
        let proven = checker
            .account(&payer, &encode(&account_proof(&c, 100)).unwrap())
            .unwrap();
        assert_eq!(proven.value.account, c.after.account(&payer));
        assert_eq!(proven.value.account.balance, 990);
        assert_eq!(
            (proven.height, proven.signers, proven.validators),
            (2, 3, 4)
        );
        assert_eq!(proven.genesis, genesis().hash());
        // An account that does not exist is proven absent.
        let nobody = checker
            .account(
                &key(555).public(),
                &encode(&account_proof(&c, 555)).unwrap(),
            )
            .unwrap();
        assert!(!nobody.value.exists);
        assert_eq!(nobody.value.account, Account::default());

        let applied = tx_proof(&c, 0);
        let proven = checker
            .transfer(&applied.transfer.hash(), &encode(&applied).unwrap())
            .unwrap();
        assert_eq!(
            (proven.value.block, proven.value.outcome),
            (1, TxOutcome::Applied)
        );
        let failed = tx_proof(&c, 1);
        let proven = checker
            .transfer(&failed.transfer.hash(), &encode(&failed).unwrap())
            .unwrap();
        assert!(matches!(
            proven.value.outcome,
            TxOutcome::Failed(FailReason::InsufficientBalance { .. })
        ));
    }

    #[test]
    fn a_forged_balance_or_absence_is_refused() {
        let c = chain();
        let checker = Checker::new(&genesis()).unwrap();
        let payer = key(100).public();
        let mut forged = account_proof(&c, 100);
        forged.account = Some(Account {
            balance: 1_000_000,
            nonce: 1,
        });
        assert!(matches!(
            checker.check_account(&payer, &forged),
            Err(ProofError::Trie { height: 2, .. })
        ));
        let mut hidden = account_proof(&c, 100);
        hidden.account = None;
        assert!(checker.check_account(&payer, &hidden).is_err());
        // Another account's (true) proof is not this account's.
        let other = account_proof(&c, 200);
        assert!(matches!(
            checker.check_account(&payer, &other),
            Err(ProofError::WrongAccount { .. })
        ));
        // The state before the payment, under the header that names the state after.
        let mut old = c.before.clone();
        old.state_root();
        let trie = old.snapshot();
        let stale = AccountProof {
            address: payer,
            account: trie.get(&payer).copied(),
            trie: trie.prove(&payer),
            at: certify(&c.two.header, &QUORUM),
        };
        assert!(checker.check_account(&payer, &stale).is_err());
        // Garbage bytes.
        assert!(matches!(
            checker.account(&payer, b"not a proof"),
            Err(ProofError::Malformed(_))
        ));
    }

    #[test]
    fn certificates_must_be_2f_plus_1_genesis_validators_over_the_header() {
        let c = chain();
        let checker = Checker::new(&genesis()).unwrap();
        let payer = key(100).public();
        let mut short = account_proof(&c, 100);
        short.at = certify(&c.two.header, &[0, 1]);
        assert!(matches!(
            checker.check_account(&payer, &short),
            Err(ProofError::BadCertificate { .. })
        ));
        // Signed by keys that are not the genesis validators (a chain of liars).
        let mut outsiders = account_proof(&c, 100);
        let mut fake = certify(&c.two.header, &[0, 1, 3]);
        for (i, (_, signature)) in fake.certificate.signatures.iter_mut().enumerate() {
            let bytes = Signed::signing_bytes(&Commit {
                view: View(0),
                seq: SeqNum(2),
                digest: Digest(c.two.header.hash()),
            })
            .unwrap();
            *signature = key(50 + i as u64).sign(
                Domain::Commit,
                genesis().validator_set().unwrap().chain(),
                &bytes,
            );
        }
        outsiders.at = fake;
        assert!(matches!(
            checker.check_account(&payer, &outsiders),
            Err(ProofError::BadCertificate { .. })
        ));
        // A genuine certificate of another header.
        let mut swapped = account_proof(&c, 100);
        swapped.at.certificate = certify(&c.one.header, &QUORUM).certificate;
        assert!(matches!(
            checker.check_account(&payer, &swapped),
            Err(ProofError::CertificateMismatch { .. })
        ));
        // A header edited after it was certified.
        let mut edited = account_proof(&c, 100);
        edited.at.header.state_root = Hash::of(b"mine");
        assert!(matches!(
            checker.check_account(&payer, &edited),
            Err(ProofError::CertificateMismatch { .. })
        ));
        // Another genesis trusts other validators.
        let mut other = genesis();
        other.validators[0].public_key = key(77).public();
        let theirs = Checker::new(&other).unwrap();
        assert!(
            theirs
                .check_account(&payer, &account_proof(&c, 100))
                .is_err()
        );
    }

    #[test]
    fn a_forged_outcome_or_inclusion_is_refused() {
        let c = chain();
        let checker = Checker::new(&genesis()).unwrap();
        // The overdraft claimed applied.
        let mut forged = tx_proof(&c, 1);
        let id = forged.transfer.hash();
        forged.outcome = TxOutcome::Applied;
        assert!(matches!(
            checker.check_transfer(&id, &forged),
            Err(ProofError::Path {
                what: "outcome_root",
                ..
            })
        ));
        // A payment claimed in a block it is not in.
        let mut elsewhere = tx_proof(&c, 0);
        let id = elsewhere.transfer.hash();
        elsewhere.index = 1;
        assert!(checker.check_transfer(&id, &elsewhere).is_err());
        // Another transfer's proof.
        let other = tx_proof(&c, 0);
        assert!(matches!(
            checker.check_transfer(&tx_proof(&c, 1).transfer.hash(), &other),
            Err(ProofError::WrongTransfer { .. })
        ));
        // The next header must be block 2: block 1 twice is not.
        let mut same = tx_proof(&c, 0);
        let id = same.transfer.hash();
        same.next = same.block.clone();
        assert!(matches!(
            checker.check_transfer(&id, &same),
            Err(ProofError::NotConsecutive { .. })
        ));
        // Each half of "the next block": the height right, the parent another
        // block's; the parent right, the height skipping one.
        let mut wrong_parent = c.two.header.clone();
        wrong_parent.parent = Hash::of(b"another block 1");
        let mut wrong_height = c.two.header.clone();
        wrong_height.height += 1;
        for header in [wrong_parent, wrong_height] {
            let mut proof = tx_proof(&c, 0);
            let id = proof.transfer.hash();
            proof.next = certify(&header, &QUORUM);
            assert!(matches!(
                checker.check_transfer(&id, &proof),
                Err(ProofError::NotConsecutive { .. })
            ));
        }
        // The outcome under header 2's root, but header 2 not certified.
        let mut unsigned = tx_proof(&c, 0);
        let id = unsigned.transfer.hash();
        unsigned.next.certificate.signatures.pop();
        assert!(checker.check_transfer(&id, &unsigned).is_err());
        // Every one-byte change of an honest proof's bytes fails or decodes to
        // the same proof.
        let honest = tx_proof(&c, 0);
        let id = honest.transfer.hash();
        let bytes = encode(&honest).unwrap();
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            if let Ok(proof) = codec::decode::<TxProof>(&changed, PROOF_BYTES_MAX) {
                assert!(
                    proof == honest || checker.check_transfer(&id, &proof).is_err(),
                    "byte {i} changed and still verifies"
                );
            }
        }
    }

    #[test]
    fn the_largest_proof_a_set_allows_fits_the_decode_limit() {
        // n = 256, the most a validator set allows: certificates of 2f+1 = 171.
        let c = chain();
        let signers: Vec<u64> = (0..171).collect();
        let mut proof = tx_proof(&c, 0);
        proof.block = certify(&c.one.header, &signers);
        proof.next = certify(&c.two.header, &signers);
        let bytes = encode(&proof).unwrap();
        assert!(bytes.len() > 20 * 1024, "{} bytes", bytes.len());
        assert!(bytes.len() < PROOF_BYTES_MAX, "{} bytes", bytes.len());
        let back: TxProof = decode(&bytes).unwrap();
        assert_eq!(back, proof);
        let mut over = bytes;
        over.resize(PROOF_BYTES_MAX + 1, 0);
        assert!(matches!(
            decode::<TxProof>(&over),
            Err(ProofError::Malformed(_))
        ));
    }

    #[test]
    fn the_checker_names_the_genesis_it_trusts() {
        let g = genesis();
        let checker = Checker::new(&g).unwrap();
        assert_eq!(checker.genesis(), g.hash());
        let c = chain();
        let proof = tx_proof(&c, 0);
        let verified = checker
            .transfer(&proof.transfer.hash(), &encode(&proof).unwrap())
            .unwrap();
        assert_eq!(verified.genesis, g.hash());
    }
}
