//! The replica's host: feeds it inputs ([`EventLoop::drive`]), carries out its
//! outputs in order with writes made durable before anything leaves the node,
//! executes delivered blocks, fires timers, and builds the primary's proposal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mosaic_consensus::{CommitCertificate, Digest, Input, Output, ReplicaId, SeqNum, Timer};
use mosaic_crypto::Hash;

use crate::chain::lock;
use crate::error::NodeError;
use crate::ledger::{SignedTransfer, TxHash, VerifiedTransfer};
use crate::peers::StepCharges;

use super::state::{EventLoop, unix_ms};

/// Consensus writes not yet made durable (see [`EventLoop::apply_outputs`]).
#[derive(Default)]
pub(super) struct Unsaved {
    /// The safety record changed.
    record: bool,
    /// Payloads to save: (height, digest, bytes).
    payloads: Vec<(u64, [u8; 32], Vec<u8>)>,
}

impl EventLoop {
    /// Feeds one input and everything it leads to.
    pub(super) fn drive(&mut self, input: Input) -> Result<(), NodeError> {
        self.inbox.push_back(input);
        self.pump()
    }

    /// Feeds one input of the host's own (a certified payload fetched by catch-up)
    /// and everything it leads to; returns why consensus refused the host's inputs
    /// in that step ([`Output::Refused`] without a sender).
    pub(super) fn drive_own(&mut self, input: Input) -> Result<Vec<&'static str>, NodeError> {
        self.drive(input)?;
        Ok(std::mem::take(&mut self.own_refusals))
    }

    /// Feeds queued inputs, and the primary's proposal once one is ready.
    pub(super) fn pump(&mut self) -> Result<(), NodeError> {
        self.own_refusals.clear();
        loop {
            while let Some(input) = self.inbox.pop_front() {
                let outputs = self.replica.handle(input);
                self.apply_outputs(outputs)?;
            }
            self.maybe_propose();
            if self.inbox.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Carries out consensus outputs in order. Writes (`Persist`, `PersistPayload`)
    /// are gathered and made durable in one transaction before the next output that
    /// lets anything leave the node or the state change (send, deliver, checkpoint),
    /// and at the end: persist-before-send holds with one fsync per group.
    pub(super) fn apply_outputs(&mut self, outputs: Vec<Output>) -> Result<(), NodeError> {
        let mut unsaved = Unsaved::default();
        let mut charged = StepCharges::default();
        for output in outputs {
            if !matches!(
                output,
                Output::Persist(_)
                    | Output::PersistPayload { .. }
                    | Output::SetTimer { .. }
                    | Output::CancelTimer(_)
                    | Output::Refused { .. }
            ) {
                self.save(&mut unsaved)?;
            }
            match output {
                Output::Persist(record) => {
                    self.persisted.record = record;
                    unsaved.record = true;
                }
                Output::PersistPayload {
                    seq,
                    digest,
                    payload,
                } => {
                    unsaved
                        .payloads
                        .push((seq.0, *digest.0.as_bytes(), payload));
                    self.proposal_seen.entry(seq.0).or_insert_with(Instant::now);
                }
                Output::Send { to, message } => self.send_consensus(to, &message),
                Output::Broadcast(message) => {
                    if let Some(bytes) = self.frame_of(&message) {
                        let frame = Arc::new(bytes);
                        for to in 0..self.info.validator_peers.len() {
                            if to != self.info.index as usize {
                                self.send_frame(to, &message, frame.clone());
                            }
                        }
                    }
                }
                Output::Deliver {
                    seq,
                    digest,
                    payload,
                    certificate,
                } => self.on_deliver(seq, digest, &payload, certificate)?,
                Output::ProposalWanted { seq, parent } => {
                    self.wanted = Some((seq, parent));
                }
                Output::SetTimer { timer, after_ticks } => {
                    self.timers
                        .insert(timer, Instant::now() + Duration::from_millis(after_ticks));
                }
                Output::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Output::StateTransfer { from, to } => {
                    tracing::info!(from = from.0, to = to.0, "state transfer needed");
                    self.sync.wanted_to = self.sync.wanted_to.max(to.0);
                    self.request_blocks();
                }
                Output::CheckpointStable(proof) => {
                    let seq = proof.seq.0;
                    self.persisted.stable = Some(proof);
                    unsaved.record = true;
                    self.save(&mut unsaved)?;
                    self.store.prune_payloads(seq)?;
                }
                Output::Refused { from, reason } => self.refused(from, reason, &mut charged),
                Output::EnteredView { view, primary } => {
                    self.overview.entered_view(view.0, primary.0, unix_ms());
                    if self.entered_first_view {
                        self.metrics.view_changes.inc();
                        tracing::warn!(view = view.0, primary = primary.0, "entered new view");
                    } else {
                        tracing::info!(view = view.0, primary = primary.0, "in view");
                    }
                    self.entered_first_view = true;
                    self.metrics.view.set(view.0 as i64);
                    // Proposals asked for in an earlier view are void.
                    self.wanted = None;
                    self.batch_ready_since = None;
                }
            }
        }
        self.save(&mut unsaved)?;
        self.update_status();
        Ok(())
    }

    /// Makes gathered consensus writes durable (one transaction, one fsync).
    pub(super) fn save(&mut self, unsaved: &mut Unsaved) -> Result<(), NodeError> {
        if !unsaved.record && unsaved.payloads.is_empty() {
            return Ok(());
        }
        let payloads: Vec<(u64, [u8; 32], &[u8])> = unsaved
            .payloads
            .iter()
            .map(|(h, d, p)| (*h, *d, p.as_slice()))
            .collect();
        self.store
            .put_consensus(unsaved.record.then_some(&self.persisted), &payloads)?;
        unsaved.record = false;
        unsaved.payloads.clear();
        Ok(())
    }

    pub(super) fn on_deliver(
        &mut self,
        seq: SeqNum,
        digest: Digest,
        payload: &[u8],
        certificate: CommitCertificate,
    ) -> Result<(), NodeError> {
        let view = certificate.view.0;
        let executed = self.chain.execute(seq, digest, payload, certificate)?;
        self.relay.forget_through(seq.0);
        let (departed, dropped) = {
            let mut shared = lock(&self.shared);
            (
                shared.mempool.take_departed(),
                shared.mempool.take_dropped_count(),
            )
        };
        self.mempool_log.departed(departed);
        self.metrics.transactions_dropped.inc_by(dropped);
        let txs = executed.header.tx_count;
        self.metrics.blocks_committed.inc();
        self.metrics.transactions_committed.inc_by(u64::from(txs));
        self.metrics.height.set(seq.0 as i64);
        let latency_ms = self
            .proposal_seen
            .remove(&seq.0)
            .map(|t| t.elapsed().as_secs_f64());
        self.proposal_seen = self.proposal_seen.split_off(&seq.0);
        if let Some(seconds) = latency_ms {
            self.metrics.commit_latency.observe(seconds);
        }
        self.overview.committed(
            u64::from(txs),
            latency_ms.map(Duration::from_secs_f64),
            Instant::now(),
        );
        if self.sync.started.is_some() {
            tracing::debug!(height = seq.0, txs, "caught-up block executed");
        } else {
            tracing::info!(
                height = seq.0,
                txs,
                failed = executed.failed,
                view,
                proposer = executed.header.proposer,
                latency_ms = latency_ms.map(|s| (s * 1000.0).round() as u64),
                "committed block"
            );
        }
        // PRE-PREPAREs waiting for this block may go in now.
        for (from, message) in self.held.release_through(seq.next()) {
            self.inbox.push_back(Input::Message { from, message });
        }
        #[cfg(debug_assertions)]
        self.held.check_invariants();
        self.metrics.held_bytes.set(self.held.bytes() as i64);
        Ok(())
    }

    /// Consensus refused an input: counted, and charged to the validator that
    /// sent it when the reason proves it misbehaved, once per reason and sender
    /// in one step's outputs ([`StepCharges`]). A refusal of the host's own input
    /// is kept for [`Self::drive_own`].
    fn refused(
        &mut self,
        from: Option<ReplicaId>,
        reason: &'static str,
        charged: &mut StepCharges,
    ) {
        self.metrics.rejected(reason, 1);
        let Some(from) = from else {
            self.own_refusals.push(reason);
            return;
        };
        let Some(points) = charged.charge(from.0, reason) else {
            return;
        };
        if let Some(peer) = self.info.validator_peers.get(from.0 as usize).copied() {
            self.charge(peer, reason, points);
        }
    }

    pub(super) fn fire_timers(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| *t)
            .collect();
        for timer in due {
            self.timers.remove(&timer);
            let before = (self.replica.status(), self.replica.view());
            self.drive(Input::Timeout(timer))?;
            // The reason of the next view change, if this timer started or moved
            // one (a stale timer, or one that asked for a state transfer, did not).
            if (self.replica.status(), self.replica.view()) != before
                && self.replica.status() != mosaic_consensus::Status::Normal
            {
                self.overview.timer_fired(&timer);
            }
        }
        Ok(())
    }

    /// The primary proposes once consensus asked, the parent is executed here (the
    /// header names the state after it) and the batch is full or old enough (or, with
    /// nothing that can go in, `idle_block_ms` old: an empty block).
    pub(super) fn maybe_propose(&mut self) {
        let Some((seq, parent)) = self.wanted else {
            return;
        };
        let batching = &self.config.batching;
        let (txs, tip, since) = {
            let shared = lock(&self.shared);
            if shared.tip.height + 1 != seq.0 || shared.tip.hash != parent.0 {
                return;
            }
            // A block with transfers is followed by one more (empty if need be):
            // its header is what certifies their outcomes and the state after them,
            // so a client can prove a payment as soon as the chain goes quiet.
            let seal = shared.tip.outcome_root != Hash::ZERO;
            if shared.mempool.is_empty() && !seal {
                self.batch_ready_since = None;
                return;
            }
            let full = shared.mempool.len() >= batching.txs_max
                || shared.mempool.bytes() >= batching.bytes_max;
            let since = *self.batch_ready_since.get_or_insert_with(Instant::now);
            if !full && since.elapsed() < Duration::from_millis(batching.delay_ms) {
                return;
            }
            let ledger = &shared.ledger;
            let txs = shared.mempool.select(
                |k| ledger.account(k).nonce,
                batching.txs_max,
                batching.bytes_max,
            );
            (txs, shared.tip, since)
        };
        // Nothing can go in: an empty block now and then still moves the height on,
        // so waiting transactions reach their expiry.
        let seal = tip.outcome_root != Hash::ZERO;
        if txs.is_empty()
            && !seal
            && since.elapsed() < Duration::from_millis(batching.idle_block_ms)
        {
            return;
        }
        let signed: Vec<SignedTransfer> = txs.iter().map(|t| t.signed().clone()).collect();
        self.edge_proposing((seq, parent), tip.after(), &signed);
        let ids: Vec<TxHash> = txs.iter().map(VerifiedTransfer::hash).collect();
        match self.checked.build_own(
            &self.layout,
            (seq, parent),
            self.replica.view().0,
            self.info.index,
            tip.after(),
            txs,
        ) {
            Ok((payload, header)) => {
                self.relay.proposed(header, signed, ids);
                self.wanted = None;
                self.batch_ready_since = None;
                self.inbox.push_back(Input::Propose {
                    seq,
                    parent,
                    payload,
                });
            }
            Err(e) => tracing::error!(height = seq.0, error = %e, "cannot build a block"),
        }
    }
}
