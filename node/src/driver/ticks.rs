//! The periodic work: every 5 ms the Byzantine test hook, the API's status, gossip
//! out, the relay's due wants, queued consensus inputs, whether client work waits
//! (every 50 ms) and the gatherings past their deadline; every second redials,
//! gossip again of long-pending transfers, index compaction, bans that ended,
//! status requests to the validators (and catch-up if behind), link drop counts
//! and the overview's second.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use mosaic_consensus::Input;

use crate::chain::{Shared, lock};
use crate::error::NodeError;
use crate::net::SyncRequest;

use super::state::{EventLoop, GOSSIP_QUEUE_MAX, Purpose, unix_ms};

/// Slow ticks (seconds) a transaction stays pending before it is gossiped again.
const REGOSSIP_AGE_ROUNDS: u64 = 3;
/// Transactions gossiped again per slow tick at most: a stalled chain costs each
/// node at most this much gossip a second.
const REGOSSIP_TXS_MAX: usize = 4_096;

impl EventLoop {
    pub(super) fn on_tick(&mut self) -> Result<(), NodeError> {
        self.edge_tick();
        if self.status_dirty {
            self.status_dirty = false;
            self.update_status();
        }
        self.flush_gossip();
        self.relay_tick()?;
        self.pump()?;
        if self.last_pending_check.elapsed() >= Duration::from_millis(50) {
            self.last_pending_check = Instant::now();
            self.signal_pending()?;
        }
        // Gatherings past their deadline.
        self.finish_gatherings()?;
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        Ok(())
    }

    /// Tells consensus whether transactions are waiting (arms the view-change timer
    /// while the primary does not propose them). A proposal of the current view
    /// waiting for transfers counts: a primary that never supplies them is
    /// replaced.
    pub(super) fn signal_pending(&mut self) -> Result<(), NodeError> {
        let pending = {
            let mut shared = lock(&self.shared);
            self.metrics
                .mempool_transactions
                .set(shared.mempool.len() as i64);
            self.metrics
                .block_transactions_unchecked
                .inc_by(shared.mempool.take_unchecked_in_blocks());
            let ledger = &shared.ledger;
            shared.mempool.has_ready(|k| ledger.account(k).nonce)
                || self.relay.waiting_in(self.replica.view())
        };
        if self.pending_sent != Some(pending) {
            self.pending_sent = Some(pending);
            self.drive(Input::Pending(pending))?;
        }
        Ok(())
    }

    pub(super) fn on_slow_tick(&mut self) -> Result<(), NodeError> {
        self.redial();
        let stale = {
            let mut shared = lock(&self.shared);
            let Shared {
                mempool, ledger, ..
            } = &mut *shared;
            mempool.stale(REGOSSIP_AGE_ROUNDS, REGOSSIP_TXS_MAX, ledger)
        };
        if !stale.is_empty() {
            self.metrics
                .transactions_regossiped
                .inc_by(stale.len() as u64);
            let room = GOSSIP_QUEUE_MAX.saturating_sub(self.gossip_out.len());
            self.gossip_out.extend(stale.into_iter().take(room));
        }
        self.compact_index();
        for peer in self.peers.second_passed(Instant::now()) {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            tracing::info!(%peer, "ban ended");
        }
        self.metrics
            .peers_banned
            .set(self.peers.banned_count() as i64);
        // Ask connected validators how far they are; no progress since the last
        // round while someone is ahead means we fell behind: catch up.
        let tip = self.chain.tip().height;
        let peers: Vec<PeerId> = self
            .info
            .validator_peers
            .iter()
            .filter(|p| self.connected.contains_key(*p))
            .copied()
            .collect();
        for peer in peers {
            self.send_sync(peer, &SyncRequest::Status, Purpose::Status);
        }
        if self.network_height() > tip && self.sync.tip_at_last_round == tip {
            self.request_blocks();
        }
        self.sync.tip_at_last_round = tip;
        let dropped = self.links.dropped();
        if dropped > self.links_dropped_seen {
            self.metrics
                .consensus_dropped
                .inc_by(dropped - self.links_dropped_seen);
            self.links_dropped_seen = dropped;
        }
        self.update_status();
        let (mempool, backlog) = {
            let shared = lock(&self.shared);
            (shared.mempool.len(), shared.backlog.queued())
        };
        self.overview.second(
            unix_ms(),
            tip,
            mempool,
            backlog,
            self.metrics.api_unavailable.get(),
        );
        Ok(())
    }

    /// Starts merging transaction index runs on a blocking thread if some are due
    /// and no merge is running (a few merges per round, so a stop waits little).
    pub(super) fn compact_index(&mut self) {
        self.metrics
            .tx_index_runs
            .set(i64::try_from(self.store.index_runs()).unwrap_or(i64::MAX));
        if self.compaction.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        let store = self.store.clone();
        self.compaction = Some(tokio::task::spawn_blocking(move || {
            for _ in 0..4 {
                match store.compact_index() {
                    Ok(true) => {
                        tracing::debug!(runs = store.index_runs(), "merged transaction index runs");
                    }
                    Ok(false) => break,
                    Err(e) => {
                        // Lookups go on with the unmerged runs; retried next round.
                        tracing::warn!(error = %e, "cannot merge transaction index runs");
                        break;
                    }
                }
            }
        }));
    }
}
