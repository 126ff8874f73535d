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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use mosaic_consensus::{CommitCertificate, Digest, PayloadCheck, SeqNum};
use mosaic_crypto::{ChainId, Hash};
use mosaic_storage::{CommittedBlock, coding, placement};

use crate::block::{Block, BlockHeader, Position, body_bytes};
use crate::ledger::{Ledger, TxOutcome, VerifiedTransfer};
use crate::mempool::Mempool;
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

/// [`PayloadCheck`] for blocks.
pub struct BlockCheck {
    shared: Arc<Mutex<Shared>>,
    layout: Layout,
}

impl std::fmt::Debug for BlockCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCheck").finish_non_exhaustive()
    }
}

impl BlockCheck {
    /// A check over the shared state.
    pub fn new(shared: Arc<Mutex<Shared>>, layout: Layout) -> Self {
        BlockCheck { shared, layout }
    }
}

impl PayloadCheck for BlockCheck {
    fn check(&self, seq: SeqNum, parent: Digest, payload: &[u8]) -> Result<Digest, String> {
        let block = Block::from_bytes(payload).map_err(|e| e.to_string())?;
        let position = Position {
            chain: self.layout.chain.clone(),
            height: seq.0,
            parent: parent.0,
        };
        block
            .check_structure(&position, self.layout.data_shards, self.layout.total_shards)
            .map_err(|e| e.to_string())?;
        if block.header.proposer as usize >= self.layout.total_shards {
            return Err(format!(
                "proposer {} is not a validator",
                block.header.proposer
            ));
        }
        let mut ids = BTreeSet::new();
        for tx in &block.txs {
            if !ids.insert(tx.hash()) {
                return Err(format!("transaction {} appears twice", tx.hash()));
            }
        }
        let mut shared = lock(&self.shared);
        if seq.0 == shared.tip.height + 1 {
            if parent.0 != shared.tip.hash {
                return Err("does not extend this node's executed chain".into());
            }
            if block.header.state_root != shared.tip.state_root {
                return Err(format!(
                    "state root {} differs from the state after block {} ({})",
                    block.header.state_root, shared.tip.height, shared.tip.state_root
                ));
            }
        }
        if let Some((i, e)) = shared
            .mempool
            .verify_for_block(block.txs)
            .into_iter()
            .enumerate()
            .find_map(|(i, r)| r.err().map(|e| (i, e)))
        {
            return Err(format!("transaction {i}: {e}"));
        }
        Ok(Digest(block.header.hash()))
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
    ) -> Self {
        Chain {
            shared,
            store,
            layout,
            validator_index,
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
        let block = Block::from_bytes(payload).map_err(|e| invalid(e.to_string()))?;
        if block.header.hash() != digest.0 {
            return Err(invalid(
                "header hash differs from the certified digest".into(),
            ));
        }
        let body = body_bytes(&block.txs);
        let encoded = coding::encode(&body, self.layout.data_shards, self.layout.total_shards)
            .map_err(|e| invalid(e.to_string()))?;
        if encoded.commitment() != block.header.fragments {
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
        if height != shared.tip.height + 1 || block.header.parent != shared.tip.hash {
            return Err(invalid(format!(
                "does not follow the executed tip {}",
                shared.tip.height
            )));
        }
        if block.header.state_root != shared.tip.state_root {
            return Err(invalid(format!(
                "state root {} differs from the state after block {} ({})",
                block.header.state_root, shared.tip.height, shared.tip.state_root
            )));
        }
        let mut verified: Vec<VerifiedTransfer> = Vec::with_capacity(block.txs.len());
        for (i, result) in shared
            .mempool
            .verify_for_block(block.txs)
            .into_iter()
            .enumerate()
        {
            verified.push(result.map_err(|e| invalid(format!("transaction {i}: {e}")))?);
        }
        // Execute on a copy of the touched accounts first: the ledger changes only
        // once the block is durable.
        let mut scratch = Ledger::from_accounts(verified.iter().flat_map(|tx| {
            let t = tx.transfer();
            [
                (t.from, shared.ledger.account(&t.from)),
                (t.to, shared.ledger.account(&t.to)),
            ]
        }));
        drop(shared);
        let execution = scratch.apply(&verified);
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
        let changes: Vec<_> = execution.changes.into_iter().collect();
        self.store.commit_block(CommittedBlock {
            height,
            header: block.header.clone(),
            certificate,
            commitment: block.header.fragments,
            body,
            own_fragment,
            account_changes: changes.clone(),
            tx_ids,
            tx_records,
        })?;
        let mut shared = lock(&self.shared);
        shared.ledger.update(&changes);
        let state_root = shared.ledger.state_root();
        shared.tip = Tip {
            height,
            hash: digest.0,
            state_root,
        };
        let Shared {
            mempool, ledger, ..
        } = &mut *shared;
        mempool.remove_committed(verified.iter(), ledger);
        let failed = verified.len() - applied;
        Ok(Executed {
            header: block.header,
            applied,
            failed,
        })
    }
}
