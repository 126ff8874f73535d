//! The event loop: still one tokio task, which owns the replica, the swarm and the
//! rooms and feeds them what arrives, one input at a time. Each concern's part of
//! the loop is its own file, and calls go one way (checked by `.ci/imports.py`):
//!
//! - `mod.rs`: [`launch`], the `select!` over the inputs, commands of the API;
//! - `ticks.rs` (the 5 ms and 1 s ticks) and `swarm.rs` (swarm and sync events:
//!   connection bookkeeping, then dispatch);
//! - `relay.rs` (consensus links in: frames, compact PRE-PREPAREs, wants and
//!   supplies, held PRE-PREPAREs), `gossip.rs` (gossip in: budgets, signature jobs,
//!   verdicts into the mempool), `catchup.rs` (sync answers, certified blocks,
//!   fragment gatherings, rebuilt bodies), `serving.rs` (peers' sync requests);
//! - `consensus.rs`: the replica's host (drive, outputs in order with the
//!   persist-before-send barrier, execution on delivery, timers, proposing);
//! - `outbound.rs`: the loop's hands (frames, block requests, answers, gossip
//!   publishing, points and bans, dials, the API's status) and the only door to
//!   the Byzantine test behaviour with `relay.rs`;
//! - `state.rs`: the fields, grouped by concern.

mod catchup;
mod consensus;
mod gossip;
mod outbound;
mod relay;
mod serving;
mod state;
mod swarm;
mod ticks;

pub(crate) use state::Parts;

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::control::Command;
use crate::error::NodeError;
use crate::ledger::SignedTransfer;
use crate::links::Inbound;

use state::{EventLoop, GOSSIP_QUEUE_MAX, GossipResult, Served, Waiter};

/// Starts the loop on its own task: queues the transfers read back from the
/// mempool log for gossip, learns the bootstrap addresses, carries out the
/// replica's first outputs and dials the validators.
pub(crate) fn launch(
    parts: Parts,
    reloaded: Vec<SignedTransfer>,
    shutdown: watch::Receiver<bool>,
    consensus_in: mpsc::Receiver<Inbound>,
) -> Result<JoinHandle<Result<(), NodeError>>, NodeError> {
    // Bounded by GOSSIP_VERIFY_IN_FLIGHT_MAX jobs, each sending one result.
    let (gossip_results, gossip_verified) = mpsc::unbounded_channel();
    // Bounded by sync_serving.reads_running_max reads, each sending one answer.
    let (served_tx, served_rx) = mpsc::unbounded_channel();
    let mut node = EventLoop::new(parts, gossip_results, served_tx);
    node.gossip_out.extend(reloaded);
    for address in node.config.bootstrap.clone() {
        node.add_bootstrap(&address);
    }
    let first = node.replica.start();
    node.apply_outputs(first)?;
    node.redial();
    Ok(tokio::spawn(node.run(
        shutdown,
        gossip_verified,
        consensus_in,
        served_rx,
    )))
}

impl EventLoop {
    pub(super) async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut gossip_verified: mpsc::UnboundedReceiver<GossipResult>,
        mut consensus_in: mpsc::Receiver<Inbound>,
        mut served: mpsc::UnboundedReceiver<Served>,
    ) -> Result<(), NodeError> {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slow_tick = tokio::time::interval(Duration::from_secs(1));
        slow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let next_timer = self
                .timers
                .values()
                .min()
                .copied()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let step = tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break Ok(());
                    }
                    Ok(())
                }
                Some(inbound) = consensus_in.recv() => self.on_link_inbound(inbound),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(command) = self.commands.recv() => {
                    self.on_command(command);
                    Ok(())
                }
                Some(verdicts) = gossip_verified.recv() => {
                    self.on_gossip_job_done(verdicts);
                    Ok(())
                }
                Some(done) = served.recv() => {
                    self.on_served(done);
                    Ok(())
                }
                _ = tokio::time::sleep_until(next_timer.into()) => self.fire_timers(),
                _ = tick.tick() => self.on_tick(),
                _ = slow_tick.tick() => self.on_slow_tick(),
            };
            if let Err(e) = step {
                tracing::error!(error = %e, "node stopping");
                break Err(e);
            }
        };
        if let Some(compaction) = self.compaction.take() {
            // It holds the store: let it finish its merge (crash-safe if killed).
            let _ = compaction.await;
        }
        // Running sync reads hold the store too: the store is closed only when
        // they ended.
        self.serving.close();
        while self.serving.running() > 0 {
            match tokio::time::timeout(Duration::from_secs(10), served.recv()).await {
                Ok(Some(done)) => {
                    self.serving.finished(&done.read.peer);
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("sync reads still running at stop");
                    break;
                }
            }
        }
        tracing::info!("node stopped");
        result
    }

    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Gossip(txs) => {
                let room = GOSSIP_QUEUE_MAX.saturating_sub(self.gossip_out.len());
                if txs.len() > room {
                    tracing::warn!(
                        dropped = txs.len() - room,
                        "gossip queue full: transactions stay in this node's mempool only"
                    );
                }
                self.gossip_out.extend(txs.into_iter().take(room));
            }
            Command::Fragments { height, reply } => match self.store.commitment(height) {
                Ok(Some(commitment)) => {
                    if let Err(e) = self.gather_fragments(height, commitment, Waiter::Api(reply)) {
                        self.fatal = Some(e);
                    }
                }
                _ => {
                    let _ = reply.send(Vec::new());
                }
            },
        }
    }
}
