//! The account ledger: signed transfers, accounts, deterministic execution and the
//! state root.
//!
//! Rules (every validator and every auditor applies exactly these):
//! - A transfer is signed by `from` under [`Domain::Transaction`] and the chain id, and
//!   names the chain inside too; its hash (the transaction id) is the blake3 of the
//!   canonical bytes of the unsigned transfer.
//! - Executing a transfer in the block at height h: if `valid_until` < h, it fails
//!   with `Expired` (validators refuse blocks that carry one, so only a chain that
//!   broke this rule could show it); if `nonce` is not the sender's next nonce, it
//!   fails with `BadNonce`; if the sender's balance is below `amount`, `InsufficientBalance`; if
//!   the recipient's balance would overflow, `BalanceOverflow`. A failed transfer
//!   leaves the state untouched (the nonce does not move). Otherwise the amount moves
//!   and the sender's nonce goes up by one. A transfer to oneself only bumps the nonce.
//! - A transfer is included at most once with effect: one that failed in an earlier
//!   block and is included again before its `valid_until` fails with
//!   `AlreadyFailed` (state untouched), so a `failed` status is final. Without this
//!   rule the same signed bytes, which still carry the unused nonce, could be sent
//!   again by anyone once the sender has funds, and a payment its sender was told
//!   had failed would move money. The failed transfers that could still be included
//!   are kept with the ledger ([`FailedTransfers`]; not part of the state root, and
//!   rebuilt from the store after a restart). One that applied cannot apply again:
//!   its nonce is used, so it fails with `BadNonce`.
//! - The state root is the root of the Merkle crit-bit trie ([`mosaic_crypto::trie`])
//!   over the accounts by address, each leaf the canonical bytes of
//!   `(address, account)`; an empty ledger has root `Hash::ZERO`. Accounts with zero
//!   balance and zero nonce are not stored, so the root depends on the state only,
//!   and a block's root costs the paths of the accounts it changed, not all accounts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mosaic_crypto::{
    ChainId, Domain, Hash, Keypair, MerkleTrie, PublicKey, Signature, SignedItem, TrieValue, merkle,
};
use serde::{Deserialize, Serialize};

/// The id of a transaction: blake3 of its unsigned canonical bytes.
pub type TxHash = Hash;

/// Largest encoded transaction accepted anywhere.
pub const TX_BYTES_MAX: usize = 512;

/// A payment from one account to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The chain it is for.
    pub chain: ChainId,
    /// Sender (and signer).
    pub from: PublicKey,
    /// Recipient.
    pub to: PublicKey,
    /// Amount moved.
    pub amount: u64,
    /// The sender's nonce: its count of applied transfers before this one.
    pub nonce: u64,
    /// The last height whose block may include it. After that height it can never
    /// commit, so a client that sees the tip pass it may send the nonce again.
    pub valid_until: u64,
}

/// A transfer with the sender's signature. Unverified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTransfer {
    /// The transfer.
    pub transfer: Transfer,
    /// Signature by `transfer.from`.
    pub signature: Signature,
}

/// A transfer whose signature and chain were checked. Only the verifying functions
/// make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTransfer {
    signed: SignedTransfer,
    hash: TxHash,
}

/// Why a transaction is refused before execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Signed for another chain.
    #[error("transaction is for chain {got}, this is {expected}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The transaction's chain.
        got: String,
    },
    /// The signature does not verify.
    #[error("invalid signature by {from}")]
    BadSignature {
        /// The claimed sender.
        from: String,
    },
    /// Zero amount transfers are refused (they would only burn nonces).
    #[error("amount must be at least 1")]
    ZeroAmount,
}

impl Transfer {
    /// The canonical bytes that are hashed and signed.
    ///
    /// Written out by hand because it is on every node's hot path (ids, signatures,
    /// block checks); the layout is exactly what the canonical codec produces for this
    /// struct (a test compares them): the chain id with its u64 length, both keys, then
    /// amount, nonce and valid_until as little-endian u64.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let chain = self.chain.as_str().as_bytes();
        let mut out = Vec::with_capacity(8 + chain.len() + 32 + 32 + 8 + 8 + 8);
        out.extend_from_slice(&(chain.len() as u64).to_le_bytes());
        out.extend_from_slice(chain);
        out.extend_from_slice(self.from.as_bytes());
        out.extend_from_slice(self.to.as_bytes());
        out.extend_from_slice(&self.amount.to_le_bytes());
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out.extend_from_slice(&self.valid_until.to_le_bytes());
        out
    }

    /// Bytes of this transfer with its signature in the canonical codec.
    pub fn signed_len(&self) -> usize {
        8 + self.chain.as_str().len() + 32 + 32 + 8 + 8 + 8 + mosaic_crypto::sign::SIGNATURE_LEN
    }

    /// The transaction id.
    pub fn hash(&self) -> TxHash {
        Hash::of(&self.canonical_bytes())
    }

    /// Signs with `key` (which should be `from`'s key).
    pub fn sign(self, key: &Keypair) -> SignedTransfer {
        let signature = key.sign(Domain::Transaction, &self.chain, &self.canonical_bytes());
        SignedTransfer {
            transfer: self,
            signature,
        }
    }
}

impl SignedTransfer {
    /// The transaction id.
    pub fn hash(&self) -> TxHash {
        self.transfer.hash()
    }

    fn precheck(&self, chain: &ChainId) -> Result<(), TxError> {
        if self.transfer.chain != *chain {
            return Err(TxError::WrongChain {
                expected: chain.to_string(),
                got: self.transfer.chain.to_string(),
            });
        }
        if self.transfer.amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        Ok(())
    }

    /// Checks chain, amount and signature.
    pub fn verify(self, chain: &ChainId) -> Result<VerifiedTransfer, TxError> {
        self.precheck(chain)?;
        let bytes = self.transfer.canonical_bytes();
        self.transfer
            .from
            .verify(Domain::Transaction, chain, &bytes, &self.signature)
            .map_err(|_| TxError::BadSignature {
                from: self.transfer.from.to_string(),
            })?;
        Ok(VerifiedTransfer {
            hash: Hash::of(&bytes),
            signed: self,
        })
    }
}

impl VerifiedTransfer {
    /// The transfer.
    pub fn transfer(&self) -> &Transfer {
        &self.signed.transfer
    }
    /// The signed form (to gossip or store).
    pub fn signed(&self) -> &SignedTransfer {
        &self.signed
    }
    /// The transaction id.
    pub fn hash(&self) -> TxHash {
        self.hash
    }
    /// The transaction id, borrowed.
    pub fn hash_ref(&self) -> &TxHash {
        &self.hash
    }
    /// Wraps a transaction already verified by this node (its id and signature were
    /// checked and remembered), without checking again. Only the node's cache of
    /// verified transfers may call it: anything else must [`SignedTransfer::verify`].
    pub fn trusted(signed: SignedTransfer, hash: TxHash) -> Self {
        VerifiedTransfer { signed, hash }
    }
}

/// Verifies many transactions in one signature batch. Returns, in input order, each
/// one verified or refused with its reason.
pub fn verify_batch(
    txs: Vec<SignedTransfer>,
    chain: &ChainId,
) -> Vec<Result<VerifiedTransfer, TxError>> {
    verify_groups(vec![txs], chain).pop().unwrap_or_default()
}

/// [`verify_batch`] for several groups (e.g. gossip messages from different peers)
/// in one signature batch, which is cheaper per signature the larger it is. When the
/// combined check fails, each group is checked alone, so a group with a bad
/// signature costs the others only the failed combined check. Results per group, in
/// input order.
pub fn verify_groups(
    groups: Vec<Vec<SignedTransfer>>,
    chain: &ChainId,
) -> Vec<Vec<Result<VerifiedTransfer, TxError>>> {
    let prechecked: Vec<_> = groups
        .into_iter()
        .map(|group| precheck_all(group, chain))
        .collect();
    let all_good = {
        let items: Vec<SignedItem<'_>> = prechecked
            .iter()
            .flat_map(|group| signed_items(group, chain))
            .collect();
        mosaic_crypto::batch_holds(&items)
    };
    let single = prechecked.len() == 1;
    prechecked
        .into_iter()
        .map(|group| {
            let bad = if all_good {
                Vec::new()
            } else if single {
                // The batch of this group alone just failed: find the bad ones.
                signed_items(&group, chain)
                    .iter()
                    .enumerate()
                    .filter(|(_, item)| mosaic_crypto::verify(item).is_err())
                    .map(|(i, _)| i)
                    .collect()
            } else {
                bad_entries(&signed_items(&group, chain))
            };
            finish(group, &bad)
        })
        .collect()
}

type Prechecked = Vec<Result<(SignedTransfer, Vec<u8>), TxError>>;

/// The checks that need no signature, and each transfer's canonical bytes.
fn precheck_all(txs: Vec<SignedTransfer>, chain: &ChainId) -> Prechecked {
    txs.into_iter()
        .map(|tx| {
            tx.precheck(chain)?;
            let bytes = tx.transfer.canonical_bytes();
            Ok((tx, bytes))
        })
        .collect()
}

/// The signatures to check: one per transfer that passed [`precheck_all`].
fn signed_items<'a>(prechecked: &'a Prechecked, chain: &'a ChainId) -> Vec<SignedItem<'a>> {
    prechecked
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(tx, bytes)| SignedItem {
            key: &tx.transfer.from,
            domain: Domain::Transaction,
            chain,
            message: bytes,
            signature: &tx.signature,
        })
        .collect()
}

/// Indexes (into `items`, ascending) of the signatures that do not verify.
fn bad_entries(items: &[SignedItem<'_>]) -> Vec<usize> {
    match mosaic_crypto::verify_batch(items) {
        Ok(()) => Vec::new(),
        Err(mosaic_crypto::SignError::BadSignatures { bad, .. }) => bad,
        Err(_) => (0..items.len()).collect(),
    }
}

/// Pairs each prechecked transfer with its verdict; `bad` indexes the transfers
/// that passed the precheck.
fn finish(prechecked: Prechecked, bad: &[usize]) -> Vec<Result<VerifiedTransfer, TxError>> {
    let mut position = 0;
    prechecked
        .into_iter()
        .map(|r| {
            let (tx, bytes) = r?;
            let index = position;
            position += 1;
            if bad.binary_search(&index).is_ok() {
                return Err(TxError::BadSignature {
                    from: tx.transfer.from.to_string(),
                });
            }
            Ok(VerifiedTransfer {
                hash: Hash::of(&bytes),
                signed: tx,
            })
        })
        .collect()
}

/// An account's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: u64,
    /// Transfers applied from this account (the next expected nonce).
    pub nonce: u64,
}

/// Why a transfer failed at execution (state untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FailReason {
    /// The nonce is not the sender's next one.
    #[error("bad nonce: expected {expected}, got {got}")]
    BadNonce {
        /// The sender's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Not enough funds.
    #[error("insufficient balance: have {balance}, need {amount}")]
    InsufficientBalance {
        /// Sender's balance.
        balance: u64,
        /// Amount asked.
        amount: u64,
    },
    /// The recipient's balance would exceed u64::MAX.
    #[error("recipient balance would overflow")]
    BalanceOverflow,
    /// Included after its last valid height.
    #[error("expired: valid until height {valid_until}, included at {height}")]
    Expired {
        /// The transfer's last valid height.
        valid_until: u64,
        /// The block's height.
        height: u64,
    },
    /// It already failed in an earlier block: a failed transfer is final.
    #[error("already failed in block {height}: a failed transfer never applies later")]
    AlreadyFailed {
        /// The block it first failed in.
        height: u64,
    },
}

/// Transfers that failed in a block and could still be included again (the tip has
/// not passed their `valid_until`): each maps to the height it first failed at.
/// Part of what every validator and auditor must agree on, since including one
/// again fails it with [`FailReason::AlreadyFailed`]; entries whose `valid_until`
/// has passed are pruned (including one then fails with `Expired` anyway).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedTransfers {
    by_id: HashMap<TxHash, (u64, u64)>,
    /// (valid_until, id): what can be pruned first comes first.
    by_expiry: BTreeSet<(u64, TxHash)>,
}

impl FailedTransfers {
    /// The height `id` first failed at, if it failed and is not pruned.
    pub fn first_failure(&self, id: &TxHash) -> Option<u64> {
        self.by_id.get(id).map(|(height, _)| *height)
    }

    /// Records that `id`, valid until `valid_until`, failed at `height`. A transfer
    /// already recorded keeps its first height.
    pub fn insert(&mut self, id: TxHash, height: u64, valid_until: u64) {
        if self.by_id.contains_key(&id) {
            return;
        }
        self.by_id.insert(id, (height, valid_until));
        self.by_expiry.insert((valid_until, id));
    }

    /// Forgets every entry that no block from `height` on can include
    /// (`valid_until` below `height`).
    pub fn prune_below(&mut self, height: u64) {
        while let Some(&(valid_until, id)) = self.by_expiry.first() {
            if valid_until >= height {
                break;
            }
            self.by_expiry.remove(&(valid_until, id));
            self.by_id.remove(&id);
        }
    }

    /// The entries for `ids` only (what a block's execution needs to see).
    pub fn subset<'a>(&self, ids: impl IntoIterator<Item = &'a TxHash>) -> FailedTransfers {
        let mut out = FailedTransfers::default();
        for id in ids {
            if let Some(&(height, valid_until)) = self.by_id.get(id) {
                out.insert(*id, height, valid_until);
            }
        }
        out
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every entry as (id, height it failed at, valid_until).
    pub fn iter(&self) -> impl Iterator<Item = (TxHash, u64, u64)> + '_ {
        self.by_id.iter().map(|(id, (h, v))| (*id, *h, *v))
    }
}

/// What happened to one transaction of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxOutcome {
    /// Applied.
    Applied,
    /// Failed; state untouched.
    Failed(FailReason),
}

/// The result of executing a block's transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// One outcome per transaction, in block order.
    pub outcomes: Vec<(TxHash, TxOutcome)>,
    /// The accounts that changed, with their new state (`None`: now empty).
    pub changes: BTreeMap<PublicKey, Option<Account>>,
    /// Transfers that failed for the first time and may still be included again,
    /// as (id, valid_until): what [`Ledger::record_failures`] takes once the block
    /// is durable.
    pub new_failures: Vec<(TxHash, u64)>,
}

/// The accounts' trie: its root is the state root.
pub type AccountTrie = MerkleTrie<PublicKey, Account>;

/// A proof of an account's state, or of its absence, under a state root.
pub type AccountProof = mosaic_crypto::TrieProof<PublicKey, Account>;

/// All non-empty accounts, in the Merkle trie whose root is the state root.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    accounts: MerkleTrie<PublicKey, Account>,
    failed: FailedTransfers,
}

impl PartialEq for Ledger {
    fn eq(&self, other: &Self) -> bool {
        self.accounts.len() == other.accounts.len() && self.accounts().eq(other.accounts())
    }
}

impl Eq for Ledger {}

/// An account's leaf is the canonical bytes of `(key, account)`: the key's 32 bytes,
/// then balance and nonce as little-endian u64 (written out here, without the codec,
/// because every touched account is hashed on every block; the state-root property
/// test compares against the codec's bytes).
impl TrieValue<PublicKey> for Account {
    fn leaf_hash(&self, key: &PublicKey) -> Hash {
        merkle::leaf_hash_parts(&[
            key.as_bytes(),
            &self.balance.to_le_bytes(),
            &self.nonce.to_le_bytes(),
        ])
    }
}

impl Ledger {
    /// A ledger with the given balances (genesis). Repeated addresses add up;
    /// `None` if the total overflows.
    pub fn from_balances(balances: &[(PublicKey, u64)]) -> Option<Self> {
        let mut accounts: BTreeMap<PublicKey, Account> = BTreeMap::new();
        for (key, amount) in balances {
            let account = accounts.entry(*key).or_default();
            account.balance = account.balance.checked_add(*amount)?;
        }
        Some(Ledger::from_accounts(accounts))
    }

    /// A ledger from stored accounts (after a restart). Empty accounts are left out.
    pub fn from_accounts(accounts: impl IntoIterator<Item = (PublicKey, Account)>) -> Self {
        let mut ledger = Ledger::default();
        for (key, account) in accounts {
            ledger.put(key, account);
        }
        ledger
    }

    /// An account's state (zero if never used).
    pub fn account(&self, address: &PublicKey) -> Account {
        self.accounts.get(address).copied().unwrap_or_default()
    }

    /// Every non-empty account, in address order.
    pub fn accounts(&self) -> impl Iterator<Item = (&PublicKey, &Account)> {
        self.accounts.iter()
    }

    /// The accounts as they are now, kept apart from later changes (the trie's
    /// nodes are shared until either side changes them). Call
    /// [`Self::state_root`] first so the snapshot carries its hashes and proves
    /// at O(depth).
    pub fn snapshot(&self) -> AccountTrie {
        self.accounts.clone()
    }

    /// The failed transfers that could still be included (see the module docs).
    pub fn failed(&self) -> &FailedTransfers {
        &self.failed
    }

    /// The height `id` failed at, if it failed and could still be included.
    pub fn failed_at(&self, id: &TxHash) -> Option<u64> {
        self.failed.first_failure(id)
    }

    /// Replaces the failed transfers (a scratch ledger gets the entries of the
    /// block it executes; a restart gets what the store kept).
    pub fn set_failed(&mut self, failed: FailedTransfers) {
        self.failed = failed;
    }

    /// Takes the new failures of the block executed at `height` (its
    /// [`Execution::new_failures`]) and prunes what no later block can include.
    pub fn record_failures(&mut self, height: u64, failures: &[(TxHash, u64)]) {
        for (id, valid_until) in failures {
            self.failed.insert(*id, height, *valid_until);
        }
        self.failed.prune_below(height.saturating_add(1));
    }

    /// Number of non-empty accounts.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether no account holds anything.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The state root (see the module docs). Rehashes only the paths of the accounts
    /// changed since the last call: O(changes x depth), not O(accounts).
    pub fn state_root(&mut self) -> Hash {
        self.accounts.root()
    }

    /// Executes one transfer of the block at `height` against the state.
    fn apply_one(&mut self, height: u64, tx: &Transfer) -> TxOutcome {
        if tx.valid_until < height {
            return TxOutcome::Failed(FailReason::Expired {
                valid_until: tx.valid_until,
                height,
            });
        }
        let sender = self.account(&tx.from);
        if tx.nonce != sender.nonce {
            return TxOutcome::Failed(FailReason::BadNonce {
                expected: sender.nonce,
                got: tx.nonce,
            });
        }
        if sender.balance < tx.amount {
            return TxOutcome::Failed(FailReason::InsufficientBalance {
                balance: sender.balance,
                amount: tx.amount,
            });
        }
        if tx.from == tx.to {
            self.put(
                tx.from,
                Account {
                    nonce: sender.nonce + 1,
                    ..sender
                },
            );
            return TxOutcome::Applied;
        }
        let recipient = self.account(&tx.to);
        let Some(credited) = recipient.balance.checked_add(tx.amount) else {
            return TxOutcome::Failed(FailReason::BalanceOverflow);
        };
        self.put(
            tx.from,
            Account {
                balance: sender.balance - tx.amount,
                nonce: sender.nonce + 1,
            },
        );
        self.put(
            tx.to,
            Account {
                balance: credited,
                ..recipient
            },
        );
        TxOutcome::Applied
    }

    fn put(&mut self, key: PublicKey, account: Account) {
        if account == Account::default() {
            self.accounts.remove(&key);
        } else {
            self.accounts.insert(key, account);
        }
    }

    /// Writes account changes (as [`Execution::changes`] lists them): `None` or an
    /// empty account removes the entry.
    pub fn update(&mut self, changes: &[(PublicKey, Option<Account>)]) {
        for (key, account) in changes {
            self.put(*key, account.unwrap_or_default());
        }
    }

    /// Executes a block's transactions in order against the accounts and the
    /// failed transfers this ledger holds. The accounts change here; the failed
    /// transfers do not (the caller hands [`Execution::new_failures`] to
    /// [`Ledger::record_failures`], on a scratch ledger or once the block is
    /// durable), but a transfer that fails twice in one block is caught too.
    pub fn apply(&mut self, height: u64, txs: &[VerifiedTransfer]) -> Execution {
        let mut outcomes = Vec::with_capacity(txs.len());
        let mut touched = Vec::new();
        let mut new_failures: Vec<(TxHash, u64)> = Vec::new();
        let mut failed_here: HashMap<TxHash, ()> = HashMap::new();
        for tx in txs {
            let t = tx.transfer();
            let earlier = self
                .failed
                .first_failure(&tx.hash())
                .or_else(|| failed_here.contains_key(&tx.hash()).then_some(height));
            let outcome = match earlier {
                // An expired one fails as expired, whatever happened before.
                Some(first) if t.valid_until >= height => {
                    TxOutcome::Failed(FailReason::AlreadyFailed { height: first })
                }
                _ => self.apply_one(height, t),
            };
            match outcome {
                TxOutcome::Applied => {
                    touched.push(t.from);
                    touched.push(t.to);
                }
                TxOutcome::Failed(_) => {
                    if earlier.is_none() && t.valid_until > height {
                        failed_here.insert(tx.hash(), ());
                        new_failures.push((tx.hash(), t.valid_until));
                    }
                }
            }
            outcomes.push((tx.hash(), outcome));
        }
        let changes = touched
            .into_iter()
            .map(|k| (k, self.accounts.get(&k).copied()))
            .collect();
        // No state root here: execution runs on a scratch ledger of the touched
        // accounts, whose root would mean nothing; the caller's ledger gives it.
        Execution {
            outcomes,
            changes,
            new_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_crypto::codec;
    use proptest::prelude::*;

    /// The last valid height of the test transfers (executed at height 1).
    const VALID_UNTIL: u64 = 1_000;

    fn chain() -> ChainId {
        ChainId::new("ledger-test").unwrap()
    }

    fn key(i: u64) -> Keypair {
        Keypair::from_seed_for_tests(i)
    }

    fn transfer(from: u64, to: u64, amount: u64, nonce: u64) -> VerifiedTransfer {
        Transfer {
            chain: chain(),
            from: key(from).public(),
            to: key(to).public(),
            amount,
            nonce,
            valid_until: VALID_UNTIL,
        }
        .sign(&key(from))
        .verify(&chain())
        .unwrap()
    }

    fn funded() -> Ledger {
        Ledger::from_balances(&[(key(1).public(), 100), (key(2).public(), 50)]).unwrap()
    }

    #[test]
    fn transfers_move_funds_and_nonces() {
        let mut ledger = funded();
        let root_before = ledger.state_root();
        let exec = ledger.apply(1, &[transfer(1, 2, 30, 0), transfer(1, 3, 10, 1)]);
        assert!(exec.outcomes.iter().all(|(_, o)| *o == TxOutcome::Applied));
        assert_eq!(
            ledger.account(&key(1).public()),
            Account {
                balance: 60,
                nonce: 2
            }
        );
        assert_eq!(ledger.account(&key(2).public()).balance, 80);
        assert_eq!(ledger.account(&key(3).public()).balance, 10);
        assert_ne!(ledger.state_root(), root_before);
        assert_eq!(exec.changes.len(), 3);
    }

    #[test]
    fn failures_leave_state_untouched_with_a_reason() {
        let cases = [
            (
                transfer(1, 2, 10, 5),
                FailReason::BadNonce {
                    expected: 0,
                    got: 5,
                },
            ),
            (
                transfer(1, 2, 101, 0),
                FailReason::InsufficientBalance {
                    balance: 100,
                    amount: 101,
                },
            ),
            (
                transfer(3, 2, 1, 0),
                FailReason::InsufficientBalance {
                    balance: 0,
                    amount: 1,
                },
            ),
        ];
        for (tx, reason) in cases {
            let mut ledger = funded();
            let root = ledger.state_root();
            let exec = ledger.apply(1, &[tx]);
            assert_eq!(exec.outcomes[0].1, TxOutcome::Failed(reason));
            assert_eq!(
                ledger.state_root(),
                root,
                "the root changes only with state"
            );
            assert!(exec.changes.is_empty());
            assert_eq!(ledger, funded());
        }
        let mut rich =
            Ledger::from_balances(&[(key(1).public(), 10), (key(2).public(), u64::MAX)]).unwrap();
        let exec = rich.apply(1, &[transfer(1, 2, 1, 0)]);
        assert_eq!(
            exec.outcomes[0].1,
            TxOutcome::Failed(FailReason::BalanceOverflow)
        );
    }

    #[test]
    fn a_transfer_executes_up_to_its_last_valid_height_and_fails_after() {
        let mut ledger = funded();
        let exec = ledger.apply(VALID_UNTIL, &[transfer(1, 2, 10, 0)]);
        assert_eq!(exec.outcomes[0].1, TxOutcome::Applied);
        let mut ledger = funded();
        let exec = ledger.apply(VALID_UNTIL + 1, &[transfer(1, 2, 10, 0)]);
        assert_eq!(
            exec.outcomes[0].1,
            TxOutcome::Failed(FailReason::Expired {
                valid_until: VALID_UNTIL,
                height: VALID_UNTIL + 1
            })
        );
        assert!(exec.changes.is_empty());
        assert_eq!(
            ledger,
            funded(),
            "an expired transfer leaves the state untouched"
        );
    }

    #[test]
    fn self_transfer_only_bumps_the_nonce() {
        let mut ledger = funded();
        ledger.apply(1, &[transfer(1, 1, 40, 0)]);
        assert_eq!(
            ledger.account(&key(1).public()),
            Account {
                balance: 100,
                nonce: 1
            }
        );
    }

    #[test]
    fn verification_refuses_wrong_chain_zero_amount_and_forgeries() {
        let t = Transfer {
            chain: chain(),
            from: key(1).public(),
            to: key(2).public(),
            amount: 5,
            nonce: 0,
            valid_until: VALID_UNTIL,
        };
        let other = ChainId::new("other").unwrap();
        assert!(matches!(
            t.clone().sign(&key(1)).verify(&other),
            Err(TxError::WrongChain { .. })
        ));
        assert!(matches!(
            Transfer {
                amount: 0,
                ..t.clone()
            }
            .sign(&key(1))
            .verify(&chain()),
            Err(TxError::ZeroAmount)
        ));
        assert!(matches!(
            t.clone().sign(&key(2)).verify(&chain()),
            Err(TxError::BadSignature { .. })
        ));
        let mut tampered = t.clone().sign(&key(1));
        tampered.transfer.amount = 6;
        assert!(matches!(
            tampered.verify(&chain()),
            Err(TxError::BadSignature { .. })
        ));
    }

    #[test]
    fn batch_verification_names_the_bad_ones_in_order() {
        let good = |n| {
            Transfer {
                chain: chain(),
                from: key(1).public(),
                to: key(2).public(),
                amount: 1,
                nonce: n,
                valid_until: VALID_UNTIL,
            }
            .sign(&key(1))
        };
        let mut forged = good(3);
        forged.transfer.amount = 9;
        let wrong_chain = Transfer {
            chain: ChainId::new("x").unwrap(),
            ..good(4).transfer
        }
        .sign(&key(1));
        let results = verify_batch(
            vec![good(0), forged, good(1), wrong_chain, good(2)],
            &chain(),
        );
        let shape: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(shape, vec![true, false, true, false, true]);
        assert!(matches!(results[1], Err(TxError::BadSignature { .. })));
        assert!(matches!(results[3], Err(TxError::WrongChain { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The hand-written canonical bytes are the codec's bytes.
        #[test]
        fn canonical_bytes_are_the_codec_bytes(chain_len in 1usize..=64, from: u64, to: u64, amount: u64, nonce: u64, valid_until: u64) {
            let transfer = Transfer {
                chain: ChainId::new("a".repeat(chain_len)).map_err(|e| TestCaseError::fail(e.to_string()))?,
                from: key(from).public(),
                to: key(to).public(),
                amount,
                nonce,
                valid_until,
            };
            let codec_bytes = codec::encode(&transfer).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(transfer.canonical_bytes(), codec_bytes);
            let signed = transfer.clone().sign(&key(from));
            let signed_bytes = codec::encode(&signed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(transfer.signed_len(), signed_bytes.len());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Checking groups together gives each transfer the verdict it gets alone,
        /// whichever groups hold forged signatures.
        #[test]
        fn groups_get_the_same_verdicts_as_alone(shape in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 0..6), 0..5)) {
            let groups: Vec<Vec<SignedTransfer>> = shape
                .iter()
                .enumerate()
                .map(|(g, forged)| {
                    forged
                        .iter()
                        .enumerate()
                        .map(|(i, &forge)| {
                            let mut tx = Transfer {
                                chain: chain(),
                                from: key(g as u64).public(),
                                to: key(9).public(),
                                amount: 1 + i as u64,
                                nonce: i as u64,
                                valid_until: VALID_UNTIL,
                            }
                            .sign(&key(g as u64));
                            if forge {
                                tx.transfer.amount += 1000;
                            }
                            tx
                        })
                        .collect()
                })
                .collect();
            let alone: Vec<Vec<bool>> = groups
                .iter()
                .map(|g| verify_batch(g.clone(), &chain()).iter().map(Result::is_ok).collect())
                .collect();
            let together: Vec<Vec<bool>> = verify_groups(groups, &chain())
                .iter()
                .map(|g| g.iter().map(Result::is_ok).collect())
                .collect();
            let expected: Vec<Vec<bool>> = shape.iter().map(|g| g.iter().map(|f| !f).collect()).collect();
            prop_assert_eq!(&alone, &expected);
            prop_assert_eq!(together, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Execution conserves money and is deterministic.
        #[test]
        fn execution_conserves_supply_and_is_deterministic(ops in proptest::collection::vec((0u64..4, 0u64..4, 1u64..60, 0u64..4), 0..40)) {
            let start = Ledger::from_balances(&[(key(0).public(), 100), (key(1).public(), 100), (key(2).public(), 100)]).unwrap();
            let txs: Vec<VerifiedTransfer> = ops.iter().map(|&(f, t, a, n)| transfer(f, t, a, n)).collect();
            let mut a = start.clone();
            let mut b = start.clone();
            let ea = a.apply(1, &txs);
            let eb = b.apply(1, &txs);
            prop_assert_eq!(&ea, &eb);
            let total: u64 = (0..4).map(|i| a.account(&key(i).public()).balance).sum();
            prop_assert_eq!(total, 300);
            prop_assert_eq!(a.state_root(), Ledger::from_accounts((0..4).map(|i| (key(i).public(), a.account(&key(i).public())))).state_root());
            // Leaves hash the codec's bytes of (address, account), and the trie kept up
            // to date through execution gives the root the module docs define.
            for (k, acc) in a.accounts() {
                prop_assert_eq!(acc.leaf_hash(k), merkle::leaf_hash(&codec::encode(&(k, acc)).unwrap()));
            }
            let entries: Vec<(PublicKey, Account)> = a.accounts().map(|(k, acc)| (*k, *acc)).collect();
            prop_assert_eq!(a.state_root(), mosaic_crypto::trie::root_of_sorted(&entries));
        }
    }
}
