//! The replicated state machine on the node's side of consensus: the payload check
//! consensus calls before it votes ([`BlockCheck`]) and the execution of delivered
//! blocks into the ledger and the store ([`Chain::execute`]).
//!
//! The header of block h carries the state root *after block h - 1*
//! (docs/adr/006-state-root.md). A replica can check it only once it has executed
//! h - 1, so the node holds a PRE-PREPARE for h until then ([`Chain::tip`]), and
//! [`BlockCheck`] checks the state root whenever the proposal extends the executed
//! tip. A proposal further ahead (re-issued by NEW-VIEW, or delivered in the same
//! step as its parent) carries a certificate that 2f+1 replicas voted for after the
//! full check; for it the structural checks run and execution re-checks the root.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use mosaic_consensus::{CommitCertificate, Digest, PayloadCheck, SeqNum};
use mosaic_crypto::{ChainId, Hash};
use mosaic_storage::{CommittedBlock, coding, placement};

use crate::block::{
    AfterParent, Block, BlockError, BlockHeader, Position, body_bytes, outcome_root,
};
use crate::ledger::{AccountTrie, FailedTransfers, Ledger, TxOutcome, VerifiedTransfer};
use crate::mempool::Mempool;
use crate::proof_cache::{BlockProofs, ProofCache};
use crate::schema::{NodeStore, TxRecord};

/// The last executed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// Height (0: genesis).
    pub height: u64,
    /// Its header hash (the genesis hash at height 0): the consensus digest.
    pub hash: Hash,
    /// The state root after it.
    pub state_root: Hash,
    /// The root of its outcomes ([`crate::block::outcome_root`]).
    pub outcome_root: Hash,
}

impl Tip {
    /// What the header of the next block must record of this one.
    pub fn after(&self) -> AfterParent {
        AfterParent {
            state_root: self.state_root,
            outcome_root: self.outcome_root,
        }
    }
}

/// State shared between the event loop, the payload check and the HTTP API. Held
/// only briefly; never across an await or a call into consensus.
#[derive(Debug)]
pub struct Shared {
    /// Accounts after the tip.
    pub ledger: Ledger,
    /// Pending transactions and the verified-signature cache.
    pub mempool: Mempool,
    /// The last executed block.
    pub tip: Tip,
    /// Queued work against the commit rate, for shedding submissions.
    pub backlog: crate::backlog::Backlog,
    /// The newest state a client can check against the genesis validators
    /// (`None` until a block makes one provable).
    pub proven: Option<Proven>,
}

/// The accounts after block h - 1, which header h commits to (`state_root`) under
/// its commit certificate: what an account proof is made from. The ledger moves on
/// after h, so this is a snapshot (the trie's nodes are shared, so holding it costs
/// the paths that change, not a copy).
#[derive(Debug, Clone)]
pub struct Proven {
    /// Header h.
    pub header: BlockHeader,
    /// Its commit certificate.
    pub certificate: CommitCertificate,
    /// The accounts after block h - 1; their root is `header.state_root`.
    pub accounts: AccountTrie,
}

impl Proven {
    /// The proof of `address` (its account, or its absence) in this state.
    pub fn prove(&self, address: &mosaic_crypto::PublicKey) -> mosaic_ledger::proof::AccountProof {
        mosaic_ledger::proof::AccountProof {
            address: *address,
            account: self.accounts.get(address).copied(),
            trie: self.accounts.prove(address),
            at: mosaic_ledger::proof::CertifiedHeader {
                header: self.header.clone(),
                certificate: self.certificate.clone(),
            },
        }
    }
}

/// What a restart can prove before the next block: the state after the tip is the
/// state after its parent when the tip is empty (as it is once the chain goes
/// idle: an empty block always follows the last block with transfers), so header
/// tip proves it; otherwise nothing until the next block executes.
pub fn proven_at_restart(
    store: &NodeStore,
    ledger: &mut Ledger,
    tip: Tip,
) -> Result<Option<Proven>, mosaic_storage::StoreError> {
    if tip.height == 0 {
        return Ok(None);
    }
    let (Some(header), Some(certificate)) =
        (store.header(tip.height)?, store.certificate(tip.height)?)
    else {
        return Ok(None);
    };
    if header.tx_count != 0 || header.state_root != ledger.state_root() {
        return Ok(None);
    }
    Ok(Some(Proven {
        header,
        certificate,
        accounts: ledger.snapshot(),
    }))
}

/// Locks the shared state. A poisoned lock means a thread panicked while holding it:
/// the state may be half-updated, so the node must stop rather than go on.
pub fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    match shared.lock() {
        Ok(guard) => guard,
        Err(_) => {
            tracing::error!("shared state lock poisoned by a panic: stopping");
            std::process::abort()
        }
    }
}

/// Block layout fixed by the genesis file.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The chain.
    pub chain: ChainId,
    /// k: data fragments.
    pub data_shards: usize,
    /// n: all fragments (one per validator).
    pub total_shards: usize,
}

/// Blocks checked by [`BlockCheck`], at most this many kept for execution (one is
/// in flight normally; a few more around view changes).
const CHECKED_KEPT_MAX: usize = 8;

/// A block [`BlockCheck`] accepted, with what execution would otherwise compute again:
/// decoded, its body bytes and fragments, its signatures verified.
#[derive(Debug)]
struct CheckedBlock {
    header: BlockHeader,
    body: Vec<u8>,
    encoded: coding::Encoded,
    verified: Vec<VerifiedTransfer>,
}

/// Accepted proposals by digest, handed from [`BlockCheck`] to [`Chain::execute`].
/// The digest is the header hash, and the header commits to the body (transaction
/// root and fragment commitment, both checked), so a payload delivered under the same
/// digest is the same block. Execution still checks everything that depends on the
/// state (parent, state root) itself.
///
/// It also holds the block this node last built as primary ([`Self::build_own`]):
/// checking its own proposal then compares bytes instead of decoding, coding and
/// looking up every signature again.
#[derive(Debug, Clone, Default)]
pub struct CheckedBlocks {
    kept: Arc<Mutex<std::collections::VecDeque<(Digest, CheckedBlock)>>>,
    own: Arc<Mutex<Option<Prebuilt>>>,
    assembled: Arc<Mutex<std::collections::VecDeque<Prebuilt>>>,
}

/// A block this node built as primary, or assembled from a compact proposal out of
/// transfers it verified, with the exact payload handed to consensus.
#[derive(Debug)]
struct Prebuilt {
    seq: SeqNum,
    parent: Digest,
    payload: Vec<u8>,
    block: CheckedBlock,
}

impl CheckedBlocks {
    /// Builds the block this node proposes as primary at `(seq, parent)` from
    /// transactions it verified, and returns its payload. Until another block is
    /// built, the check of exactly this payload at (`seq`, `parent`) reuses the
    /// decoded block, its fragments and its verified transactions.
    pub fn build_own(
        &self,
        layout: &Layout,
        (seq, parent): (SeqNum, Digest),
        view: u64,
        proposer: u32,
        after: AfterParent,
        txs: Vec<VerifiedTransfer>,
    ) -> Result<(Vec<u8>, BlockHeader), BlockError> {
        let position = Position {
            chain: layout.chain.clone(),
            height: seq.0,
            parent: parent.0,
        };
        let signed = txs.iter().map(|t| t.signed().clone()).collect();
        let (block, structure) = Block::build(
            &position,
            view,
            proposer,
            after,
            signed,
            layout.data_shards,
            layout.total_shards,
        )?;
        let payload = block.to_bytes();
        let header = block.header.clone();
        *lock_cache(&self.own) = Some(Prebuilt {
            seq,
            parent,
            payload: payload.clone(),
            block: CheckedBlock {
                header: block.header,
                body: structure.body,
                encoded: structure.encoded,
                verified: txs,
            },
        });
        Ok((payload, header))
    }

    /// Assembles the block `header` at (`seq`, `parent`) from transfers this node
    /// verified, in block order (a compact proposal's), with every structural check
    /// a received payload gets, the fragment root included; returns its payload.
    /// The check of exactly this payload then reuses the assembled block instead of
    /// decoding it, and still checks what depends on the state.
    pub fn assemble(
        &self,
        layout: &Layout,
        (seq, parent): (SeqNum, Digest),
        header: BlockHeader,
        txs: Vec<VerifiedTransfer>,
    ) -> Result<Vec<u8>, BlockError> {
        let position = Position {
            chain: layout.chain.clone(),
            height: seq.0,
            parent: parent.0,
        };
        let (payload, structure) = Block::assemble(
            &header,
            &txs,
            &position,
            layout.data_shards,
            layout.total_shards,
        )?;
        let mut assembled = lock_cache(&self.assembled);
        let digest = header.hash();
        assembled.retain(|b| b.block.header.hash() != digest);
        if assembled.len() >= CHECKED_KEPT_MAX {
            assembled.pop_front();
        }
        assembled.push_back(Prebuilt {
            seq,
            parent,
            payload: payload.clone(),
            block: CheckedBlock {
                header,
                body: structure.body,
                encoded: structure.encoded,
                verified: txs,
            },
        });
        Ok(payload)
    }

    /// The block assembled by [`Self::assemble`] if `payload` is exactly its payload
    /// at (`seq`, `parent`). Taken: it is checked once.
    fn take_assembled(&self, seq: SeqNum, parent: Digest, payload: &[u8]) -> Option<CheckedBlock> {
        let mut assembled = lock_cache(&self.assembled);
        let at = assembled
            .iter()
            .position(|b| b.seq == seq && b.parent == parent && b.payload == payload)?;
        assembled.remove(at).map(|b| b.block)
    }

    /// The block built by [`Self::build_own`] if `payload` is exactly its payload at
    /// (`seq`, `parent`). Taken either way: it is checked once.
    fn take_own(&self, seq: SeqNum, parent: Digest, payload: &[u8]) -> Option<CheckedBlock> {
        let own = lock_cache(&self.own).take()?;
        (own.seq == seq && own.parent == parent && own.payload == payload).then_some(own.block)
    }

    fn put(&self, digest: Digest, block: CheckedBlock) {
        let mut kept = self.guard();
        kept.retain(|(d, _)| *d != digest);
        if kept.len() >= CHECKED_KEPT_MAX {
            kept.pop_front();
        }
        kept.push_back((digest, block));
    }

    fn take(&self, digest: &Digest) -> Option<CheckedBlock> {
        let mut kept = self.guard();
        let at = kept.iter().position(|(d, _)| d == digest)?;
        kept.remove(at).map(|(_, block)| block)
    }

    fn forget_through(&self, height: u64) {
        self.guard().retain(|(_, b)| b.header.height > height);
    }

    fn guard(&self) -> MutexGuard<'_, std::collections::VecDeque<(Digest, CheckedBlock)>> {
        lock_cache(&self.kept)
    }
}

fn lock_cache<T>(cache: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only a cache: a panic elsewhere cannot leave it inconsistent.
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`PayloadCheck`] for blocks.
pub struct BlockCheck {
    shared: Arc<Mutex<Shared>>,
    layout: Layout,
    checked: CheckedBlocks,
}

impl std::fmt::Debug for BlockCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCheck").finish_non_exhaustive()
    }
}

impl BlockCheck {
    /// A check over the shared state, handing what it checked to execution through
    /// `checked` (share it with [`Chain::new`]).
    pub fn new(shared: Arc<Mutex<Shared>>, layout: Layout, checked: CheckedBlocks) -> Self {
        BlockCheck {
            shared,
            layout,
            checked,
        }
    }
}

/// The checks that depend on the executed tip: a proposal right above it must extend
/// it and name the state and the outcomes after it.
fn check_against_tip(
    tip: &Tip,
    seq: SeqNum,
    parent: Digest,
    header: &BlockHeader,
) -> Result<(), String> {
    if seq.0 == tip.height + 1 {
        if parent.0 != tip.hash {
            return Err("does not extend this node's executed chain".into());
        }
        check_after(tip, header)?;
    }
    Ok(())
}

/// That `header` names the state root and the outcome root after `tip`.
fn check_after(tip: &Tip, header: &BlockHeader) -> Result<(), String> {
    if header.state_root != tip.state_root {
        return Err(format!(
            "state root {} differs from the state after block {} ({})",
            header.state_root, tip.height, tip.state_root
        ));
    }
    if header.outcome_root != tip.outcome_root {
        return Err(format!(
            "outcome root {} differs from the outcomes of block {} ({})",
            header.outcome_root, tip.height, tip.outcome_root
        ));
    }
    Ok(())
}

/// That no transfer of a proposal right above the tip carries a nonce its sender
/// has used: the same transfer applied before (a faulty primary replaying it while
/// it is still valid) or another one with that nonce. Such a transfer can only fail,
/// and a certified failure of a payment that applied would let a proof show it as
/// failed. A proposal above the next height is checked when its parent is executed
/// (the event loop holds it until then), except a re-proposal in a NEW-VIEW, which
/// 2f+1 replicas prepared, so honest ones checked it here.
fn check_nonces(
    tip: &Tip,
    seq: SeqNum,
    ledger: &Ledger,
    verified: &[VerifiedTransfer],
) -> Result<(), String> {
    if seq.0 != tip.height + 1 {
        return Ok(());
    }
    for (i, tx) in verified.iter().enumerate() {
        let transfer = tx.transfer();
        let next = ledger.account(&transfer.from).nonce;
        if transfer.nonce < next {
            return Err(format!(
                "transaction {i} ({}): nonce {} is used, the sender's next nonce is {next}",
                tx.hash(),
                transfer.nonce
            ));
        }
    }
    Ok(())
}

fn check_proposer(header: &BlockHeader, validators: usize) -> Result<(), String> {
    if header.proposer as usize >= validators {
        return Err(format!("proposer {} is not a validator", header.proposer));
    }
    Ok(())
}

/// The checks of a proposal's verified transfers that the block format cannot
/// express: none expired at `seq`, none twice, none that already failed in a block
/// (`failed`: what this node's executed chain knows; a proposal above the next
/// height may carry one that failed in between, and execution fails it again).
fn check_transfers(
    seq: SeqNum,
    verified: &[VerifiedTransfer],
    failed: &FailedTransfers,
) -> Result<(), String> {
    // Validators refuse to include an expired transaction, so a client that sees the
    // tip pass its valid_until knows it can never commit.
    if let Some((i, tx)) = verified
        .iter()
        .enumerate()
        .find(|(_, tx)| tx.transfer().valid_until < seq.0)
    {
        return Err(format!(
            "transaction {i} expired: valid until height {}, proposed at {}",
            tx.transfer().valid_until,
            seq.0
        ));
    }
    // Ids come with the verified transfers (hashed once).
    let mut ids = HashSet::with_capacity(verified.len());
    for tx in verified {
        if !ids.insert(tx.hash()) {
            return Err(format!("transaction {} appears twice", tx.hash()));
        }
        if let Some(height) = failed.first_failure(&tx.hash()) {
            return Err(format!(
                "transaction {} already failed in block {height}: a failed transfer is final",
                tx.hash()
            ));
        }
    }
    Ok(())
}

impl PayloadCheck for BlockCheck {
    fn check(&self, seq: SeqNum, parent: Digest, payload: &[u8]) -> Result<Digest, String> {
        if let Some(own) = self.checked.take_own(seq, parent, payload) {
            // Built here from verified transactions by the same code that checks
            // structure (tests keep the two agreeing); only the tip may have moved.
            check_against_tip(&lock(&self.shared).tip, seq, parent, &own.header)?;
            let digest = Digest(own.header.hash());
            self.checked.put(digest, own);
            return Ok(digest);
        }
        if let Some(assembled) = self.checked.take_assembled(seq, parent, payload) {
            // Structure and fragment root were checked when it was assembled, its
            // transfers verified by this node: what remains depends on the state.
            check_proposer(&assembled.header, self.layout.total_shards)?;
            let failed = {
                let shared = lock(&self.shared);
                check_against_tip(&shared.tip, seq, parent, &assembled.header)?;
                check_nonces(&shared.tip, seq, &shared.ledger, &assembled.verified)?;
                shared
                    .ledger
                    .failed()
                    .subset(assembled.verified.iter().map(VerifiedTransfer::hash_ref))
            };
            check_transfers(seq, &assembled.verified, &failed)?;
            let digest = Digest(assembled.header.hash());
            self.checked.put(digest, assembled);
            return Ok(digest);
        }
        let block = Block::from_bytes(payload).map_err(|e| e.to_string())?;
        let position = Position {
            chain: self.layout.chain.clone(),
            height: seq.0,
            parent: parent.0,
        };
        let structure = block
            .check_structure(&position, self.layout.data_shards, self.layout.total_shards)
            .map_err(|e| e.to_string())?;
        check_proposer(&block.header, self.layout.total_shards)?;
        let mut shared = lock(&self.shared);
        check_against_tip(&shared.tip, seq, parent, &block.header)?;
        let mut verified = Vec::with_capacity(block.txs.len());
        for (i, result) in shared
            .mempool
            .verify_for_block(block.txs)
            .into_iter()
            .enumerate()
        {
            verified.push(result.map_err(|e| format!("transaction {i}: {e}"))?);
        }
        check_nonces(&shared.tip, seq, &shared.ledger, &verified)?;
        let failed = shared
            .ledger
            .failed()
            .subset(verified.iter().map(VerifiedTransfer::hash_ref));
        drop(shared);
        check_transfers(seq, &verified, &failed)?;
        let digest = Digest(block.header.hash());
        self.checked.put(
            digest,
            CheckedBlock {
                header: block.header,
                body: structure.body,
                encoded: structure.encoded,
                verified,
            },
        );
        Ok(digest)
    }
}

/// Why a delivered block could not be executed. Every variant stops the node: the
/// block is committed, so going on would diverge from the other replicas.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] mosaic_storage::StoreError),
    /// A committed block is invalid: more than f validators are faulty or this build
    /// differs from the others.
    #[error(
        "committed block {height} is invalid: {reason} (more than f faulty validators, or a mismatched build); stopping"
    )]
    InvalidCommitted {
        /// Height.
        height: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What executing a block produced, for logs, metrics and the mempool.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The block's header.
    pub header: BlockHeader,
    /// Transactions applied / failed.
    pub applied: usize,
    /// Transactions that failed (state untouched).
    pub failed: usize,
}

/// Executes delivered blocks in order, durably.
pub struct Chain {
    shared: Arc<Mutex<Shared>>,
    store: Arc<NodeStore>,
    layout: Layout,
    validator_index: u32,
    checked: CheckedBlocks,
    proofs: Arc<ProofCache>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").finish_non_exhaustive()
    }
}

impl Chain {
    /// The chain over the shared state and the store.
    pub fn new(
        shared: Arc<Mutex<Shared>>,
        store: Arc<NodeStore>,
        layout: Layout,
        validator_index: u32,
        checked: CheckedBlocks,
        proofs: Arc<ProofCache>,
    ) -> Self {
        Chain {
            proofs,
            shared,
            store,
            layout,
            validator_index,
            checked,
        }
    }

    /// The last executed block.
    pub fn tip(&self) -> Tip {
        lock(&self.shared).tip
    }

    /// Executes the block consensus delivered at `seq` and commits it to the store
    /// (durable before this returns), then updates the ledger and the mempool.
    pub fn execute(
        &self,
        seq: SeqNum,
        digest: Digest,
        payload: &[u8],
        certificate: CommitCertificate,
    ) -> Result<Executed, ExecuteError> {
        let height = seq.0;
        let invalid = |reason: String| ExecuteError::InvalidCommitted { height, reason };
        // A block this node checked as a proposal comes decoded, coded and verified;
        // one it did not (caught up, or delivered from a certificate) is done here.
        let (header, body, encoded, txs) = match self.checked.take(&digest) {
            Some(checked) => (
                checked.header,
                checked.body,
                checked.encoded,
                Ok(checked.verified),
            ),
            None => {
                let block = Block::from_bytes(payload).map_err(|e| invalid(e.to_string()))?;
                let body = body_bytes(&block.txs);
                let encoded =
                    coding::encode(&body, self.layout.data_shards, self.layout.total_shards)
                        .map_err(|e| invalid(e.to_string()))?;
                (block.header, body, encoded, Err(block.txs))
            }
        };
        self.checked.forget_through(height);
        if header.hash() != digest.0 {
            return Err(invalid(
                "header hash differs from the certified digest".into(),
            ));
        }
        if encoded.commitment() != header.fragments {
            return Err(invalid("fragment commitment differs from the body".into()));
        }
        let own_index = placement::fragment_of(
            self.validator_index,
            height,
            self.layout.total_shards as u16,
        );
        let own_fragment = encoded
            .fragment(own_index as usize)
            .ok_or_else(|| invalid(format!("no fragment {own_index}")))?;

        // The lock is held to read the tip and the touched accounts, released while
        // the block is written and fsynced (the API goes on meanwhile and sees the old
        // tip; it reports the block's transactions as pending until the tip moves),
        // and taken again to move the tip. Only the event loop executes blocks or
        // checks proposals, so nothing else changes the ledger in between.
        let mut shared = lock(&self.shared);
        if height != shared.tip.height + 1 || header.parent != shared.tip.hash {
            return Err(invalid(format!(
                "does not follow the executed tip {}",
                shared.tip.height
            )));
        }
        check_after(&shared.tip, &header).map_err(invalid)?;
        let verified = match txs {
            Ok(verified) => verified,
            Err(txs) => {
                let mut verified: Vec<VerifiedTransfer> = Vec::with_capacity(txs.len());
                for (i, result) in shared.mempool.verify_for_block(txs).into_iter().enumerate() {
                    verified.push(result.map_err(|e| invalid(format!("transaction {i}: {e}")))?);
                }
                verified
            }
        };
        // Execute on a copy of the touched accounts first: the ledger changes only
        // once the block is durable.
        let mut scratch = Ledger::from_accounts(verified.iter().flat_map(|tx| {
            let t = tx.transfer();
            [
                (t.from, shared.ledger.account(&t.from)),
                (t.to, shared.ledger.account(&t.to)),
            ]
        }));
        scratch.set_failed(
            shared
                .ledger
                .failed()
                .subset(verified.iter().map(VerifiedTransfer::hash_ref)),
        );
        drop(shared);
        let execution = scratch.apply(height, &verified);
        let mut applied = 0;
        // Every id goes to the compact index; only failures need a full record
        // (their reason cannot be read back from the block).
        let mut tx_ids = Vec::with_capacity(execution.outcomes.len());
        let mut tx_records = Vec::new();
        for (index, (id, outcome)) in execution.outcomes.iter().enumerate() {
            tx_ids.push(*id.as_bytes());
            if *outcome == TxOutcome::Applied {
                applied += 1;
            } else {
                tx_records.push((
                    *id.as_bytes(),
                    TxRecord {
                        height,
                        index: index as u32,
                        outcome: *outcome,
                    },
                ));
            }
        }
        let outcome_root = outcome_root(&execution.outcomes);
        let body_len = body.len();
        let proven_header = header.clone();
        let proven_certificate = certificate.clone();
        let changes: Vec<_> = execution.changes.into_iter().collect();
        let new_failures = execution.new_failures;
        self.store.commit_block(CommittedBlock {
            height,
            header: header.clone(),
            certificate,
            commitment: header.fragments,
            body,
            own_fragment,
            account_changes: changes.clone(),
            tx_ids,
            tx_records,
            outcome_root: *outcome_root.as_bytes(),
            live_ids: new_failures
                .iter()
                .map(|(id, until)| (*id.as_bytes(), *until))
                .collect(),
        })?;
        // While clients ask for proofs, the block's material is made from what
        // execution has at hand, so the API does not decode the body again.
        if !verified.is_empty() && self.proofs.take_asked() {
            let txs = verified.iter().map(|t| t.signed().clone()).collect();
            match BlockProofs::executed(txs, execution.outcomes, body_len) {
                Ok(material) => self.proofs.insert(height, Arc::new(material)),
                Err(e) => tracing::warn!(height, error = %e, "no proof material for the block"),
            }
        }
        let mut shared = lock(&self.shared);
        // The state before this block is the one this block's header proves.
        shared.proven = Some(Proven {
            header: proven_header,
            certificate: proven_certificate,
            accounts: shared.ledger.snapshot(),
        });
        shared.ledger.update(&changes);
        shared.ledger.record_failures(height, &new_failures);
        let state_root = shared.ledger.state_root();
        shared.tip = Tip {
            height,
            hash: digest.0,
            state_root,
            outcome_root,
        };
        let Shared {
            mempool,
            ledger,
            backlog,
            ..
        } = &mut *shared;
        mempool.remove_committed(height, verified.iter(), ledger);
        let ready = mempool.ready_at_block();
        backlog.executed(std::time::Instant::now(), verified.len(), ready);
        let failed = verified.len() - applied;
        Ok(Executed {
            header,
            applied,
            failed,
        })
    }
}

#[cfg(test)]
mod tests;
