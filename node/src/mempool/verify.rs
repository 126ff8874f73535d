//! Signature checks: what the pool already verified is not checked again (a
//! bounded cache of transaction id and signature pairs), the rest is checked in
//! batches; block validation goes through here too.

use super::*;

impl Mempool {
    /// Sorts [`prepare`]d transactions into those this node already verified (same
    /// id, chain and signature: wrapped as verified, without checking again) and the
    /// rest (to be checked with [`verify_unknown`]). Input order is kept. Only set
    /// lookups: the hashing was done by [`prepare`], outside any lock.
    pub fn known(&self, txs: Vec<Prepared>) -> Vec<Known> {
        txs.into_iter()
            .map(|p| {
                if p.tx.transfer.chain == self.chain && self.verified.contains(&p.key) {
                    Known::Verified(VerifiedTransfer::trusted(p.tx, p.hash))
                } else {
                    Known::Unchecked(p.tx)
                }
            })
            .collect()
    }

    /// Verifies a block's transactions, skipping the signature check for those this
    /// node already verified (same id and signature), and remembers the new ones.
    /// Results in input order.
    pub fn verify_for_block(
        &mut self,
        txs: Vec<SignedTransfer>,
    ) -> Vec<Result<VerifiedTransfer, TxError>> {
        let sorted = self.known(prepare(txs));
        let unchecked = sorted
            .iter()
            .filter(|k| matches!(k, Known::Unchecked(_)))
            .count();
        self.unchecked_in_blocks += unchecked as u64;
        let results = verify_unknown(sorted, &self.chain);
        for tx in results.iter().flatten() {
            self.verified
                .insert(verified_key(&tx.hash(), &tx.signed().signature));
        }
        results
    }

    /// How many transactions blocks carried before this node had checked their
    /// signatures (checked then, on the critical path), since the last call.
    pub fn take_unchecked_in_blocks(&mut self) -> u64 {
        std::mem::take(&mut self.unchecked_in_blocks)
    }
}

/// Above this many gossiped transactions waiting for signature checks, submissions
/// are refused (503): about two seconds of checks on a small machine. A node that
/// keeps accepting more than it can check only adds latency and starves consensus.
pub const VERIFY_BACKLOG_MAX: usize = 10_000;

/// A transaction with its id and verified-cache key computed (see [`prepare`]).
#[derive(Debug)]
pub struct Prepared {
    tx: SignedTransfer,
    hash: TxHash,
    key: Hash,
}

/// Hashes transactions for [`Mempool::known`]; call it before taking the shared lock.
pub fn prepare(txs: Vec<SignedTransfer>) -> Vec<Prepared> {
    txs.into_iter()
        .map(|tx| {
            let hash = tx.hash();
            let key = verified_key(&hash, &tx.signature);
            Prepared { tx, hash, key }
        })
        .collect()
}

/// A transaction sorted by [`Mempool::known`].
#[derive(Debug)]
pub enum Known {
    /// Verified by this node before.
    Verified(VerifiedTransfer),
    /// Not verified yet.
    Unchecked(SignedTransfer),
}

/// Completes [`Mempool::known`]: checks the unknown transactions in one signature
/// batch and returns every result in input order.
pub fn verify_unknown(
    sorted: Vec<Known>,
    chain: &ChainId,
) -> Vec<Result<VerifiedTransfer, TxError>> {
    verify_unknown_groups(vec![sorted], chain)
        .pop()
        .unwrap_or_default()
}

/// [`verify_unknown`] for several groups at once (see [`ledger::verify_groups`]):
/// results per group, each in input order.
pub fn verify_unknown_groups(
    groups: Vec<Vec<Known>>,
    chain: &ChainId,
) -> Vec<Vec<Result<VerifiedTransfer, TxError>>> {
    let mut all_slots: Vec<Vec<Option<VerifiedTransfer>>> = Vec::with_capacity(groups.len());
    let mut unknown: Vec<Vec<SignedTransfer>> = Vec::with_capacity(groups.len());
    for group in groups {
        let mut slots = Vec::with_capacity(group.len());
        let mut checking = Vec::new();
        for r in group {
            match r {
                Known::Verified(tx) => slots.push(Some(tx)),
                Known::Unchecked(tx) => {
                    slots.push(None);
                    checking.push(tx);
                }
            }
        }
        all_slots.push(slots);
        unknown.push(checking);
    }
    // verify_groups answers once per input, so the fallback is never used.
    ledger::verify_groups(unknown, chain)
        .into_iter()
        .zip(all_slots)
        .map(|(checked, slots)| {
            let mut checked = checked.into_iter();
            slots
                .into_iter()
                .map(|slot| match slot {
                    Some(tx) => Ok(tx),
                    None => checked.next().unwrap_or(Err(TxError::ZeroAmount)),
                })
                .collect()
        })
        .collect()
}
