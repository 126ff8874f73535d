//! Consensus links inbound: a frame is decoded within the frame limit and policed
//! here (non-validators, undecodable frames, forged or oversized held
//! PRE-PREPAREs are charged to the peer that sent them); compact PRE-PREPAREs are
//! completed from the mempool or wait for the transfers asked of their primary;
//! a PRE-PREPARE above the executed tip is held until its parent executes.

use std::sync::Arc;
use std::time::Instant;

use libp2p::PeerId;
use mosaic_consensus::{Input, Message, ReplicaId};

use crate::chain::lock;
use crate::error::NodeError;
use crate::held::HoldError;
use crate::links::Inbound;
use crate::net::CONSENSUS_FRAME_MAX;
use crate::proposal::{self, Frame, Received};

use super::state::EventLoop;

impl EventLoop {
    /// A frame or a complaint from the consensus links.
    pub(super) fn on_link_inbound(&mut self, inbound: Inbound) -> Result<(), NodeError> {
        match inbound {
            Inbound::Message {
                peer,
                bytes,
                permit,
            } => {
                let result = self.on_consensus_message(peer, &bytes);
                drop(permit);
                result
            }
            Inbound::Misbehaved {
                peer,
                reason,
                points,
            } => {
                tracing::debug!(%peer, reason, "consensus link refused");
                self.misbehaved(peer, reason, points);
                Ok(())
            }
        }
    }

    pub(super) fn on_consensus_message(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        let Some(from) = self.validator_index(&peer) else {
            self.misbehaved(peer, "consensus-from-non-validator", 5);
            return Ok(());
        };
        let frame = match proposal::decode_frame(bytes, CONSENSUS_FRAME_MAX) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "undecodable consensus message");
                self.misbehaved(peer, "consensus-undecodable", 5);
                return Ok(());
            }
        };
        self.edge.incoming(bytes);
        match frame {
            Frame::Consensus(message) => {
                self.metrics.message_in(message.kind());
                self.on_message(peer, from, message)
            }
            Frame::Proposal(compact) => {
                self.metrics.message_in("compact-proposal");
                self.on_compact(peer, from, *compact)
            }
            Frame::Want(want) => {
                self.metrics.message_in("want-transfers");
                match self.relay.answer(from, &want) {
                    Ok(Some(supply)) => {
                        let supply = self.edge.supply(supply);
                        if let Ok(bytes) = proposal::supply_frame(&supply) {
                            self.links.send(from.0 as usize, Arc::new(bytes));
                        }
                    }
                    Ok(None) => self.metrics.rejected("want-unanswered", 1),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "invalid want");
                        let (reason, points) = e.reason();
                        self.misbehaved(peer, reason, points);
                    }
                }
                Ok(())
            }
            Frame::Supply(supply) => {
                self.metrics.message_in("supply-transfers");
                self.on_supply(peer, from, supply)
            }
        }
    }

    /// A compact proposal: completed from the mempool, or waiting for the transfers
    /// this node lacks, asked of the primary.
    pub(super) fn on_compact(
        &mut self,
        peer: PeerId,
        from: ReplicaId,
        compact: proposal::Compact,
    ) -> Result<(), NodeError> {
        let stands = proposal::Standing {
            view: self.replica.view(),
            view_max: self.replica.target_view(),
            tip: self.chain.tip().height,
            window: self.config.consensus.window,
        };
        let received = {
            let shared = lock(&self.shared);
            let mempool = &shared.mempool;
            self.relay.receive(
                from,
                compact,
                (stands, Instant::now()),
                &self.info.validators,
                |id| mempool.verified(id),
            )
        };
        match received {
            Ok(Received::Complete(assembly)) => self.on_assembled(peer, from, *assembly),
            // Gossip may bring them first; otherwise the want goes out from the tick.
            Ok(Received::Missing(_)) => Ok(()),
            Ok(Received::AlreadyWaiting(want)) => {
                self.metrics.rejected("compact-proposal-duplicate", 1);
                self.send_want(from, &want);
                Ok(())
            }
            Ok(Received::Ignored(reason)) => {
                self.metrics.rejected(reason, 1);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "invalid compact proposal");
                let (reason, points) = e.reason();
                self.misbehaved(peer, reason, points);
                Ok(())
            }
        }
    }

    /// The primary's answer to a want: checked, its signatures verified, and the
    /// proposal completed.
    pub(super) fn on_supply(
        &mut self,
        peer: PeerId,
        from: ReplicaId,
        supply: proposal::Supply,
    ) -> Result<(), NodeError> {
        match self.relay.supplied(from, &supply) {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.rejected("supply-unwanted", 1);
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "invalid supply");
                let (reason, points) = e.reason();
                self.misbehaved(peer, reason, points);
                return Ok(());
            }
        }
        let results = lock(&self.shared).mempool.verify_for_block(supply.txs);
        let mut verified = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Ok(tx) => verified.push(tx),
                Err(e) => {
                    // The primary proposed a transfer that does not verify: its block
                    // is invalid, and the view change replaces it.
                    tracing::debug!(%peer, error = %e, "supplied transfer refused");
                    self.relay.abandon(from, &supply.digest);
                    self.misbehaved(peer, "supply-invalid-transfer", 10);
                    return Ok(());
                }
            }
        }
        self.metrics
            .proposal_transfers_fetched
            .inc_by(verified.len() as u64);
        match self.relay.complete(from, &supply.digest, verified) {
            Some(assembly) => self.on_assembled(peer, from, assembly),
            None => Ok(()),
        }
    }

    /// A compact proposal with all its transfers: assembled into the full block and
    /// handed on as the PRE-PREPARE it stands for.
    pub(super) fn on_assembled(
        &mut self,
        peer: PeerId,
        from: ReplicaId,
        assembly: proposal::Assembly,
    ) -> Result<(), NodeError> {
        let pp = assembly.pre_prepare.body;
        match self.checked.assemble(
            &self.layout,
            (pp.seq, pp.parent),
            assembly.header,
            assembly.txs,
        ) {
            Ok(payload) => {
                let message = Message::PrePrepare {
                    pre_prepare: assembly.pre_prepare,
                    payload,
                };
                self.metrics.message_in(message.kind());
                self.on_message(peer, from, message)
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "compact proposal does not make a valid block");
                self.misbehaved(peer, "compact-proposal-invalid-block", 10);
                Ok(())
            }
        }
    }

    /// A consensus message from validator `from`.
    pub(super) fn on_message(
        &mut self,
        peer: PeerId,
        from: ReplicaId,
        message: Message,
    ) -> Result<(), NodeError> {
        if let Message::PrePrepare { pre_prepare, .. } = &message {
            let seq = pre_prepare.body.seq;
            let tip = self.chain.tip().height;
            if seq.0 > tip + 1 {
                // Its header names the state after seq - 1: hold it until that is
                // executed. Only what the view's primary signed, within the window
                // and the sender's budget, is held.
                let from_primary = self.info.validators.primary(pre_prepare.body.view) == from
                    && pre_prepare.signer == from;
                if !from_primary || pre_prepare.verify(&self.info.validators).is_err() {
                    self.misbehaved(peer, "pre-prepare-forged", 5);
                } else if seq.0 > tip + 1 + self.config.consensus.window {
                    self.metrics.rejected("pre-prepare-too-far-ahead", 1);
                } else {
                    match self.held.hold(from, message) {
                        Ok(()) => {}
                        Err(HoldError::PayloadTooLarge { .. }) => {
                            self.misbehaved(peer, "pre-prepare-oversized", 5);
                        }
                        Err(HoldError::SenderFull { .. }) => {
                            self.metrics.rejected("pre-prepare-sender-budget-full", 1);
                        }
                        Err(HoldError::Equivocation { .. }) => {
                            self.misbehaved(peer, "pre-prepare-equivocation", 10);
                        }
                        Err(HoldError::Duplicate) => {
                            // Not charged: a link that fails mid-batch writes the batch
                            // again on a new stream, so an honest primary's frames can
                            // arrive twice. A copy costs one signature check.
                            self.metrics.rejected("pre-prepare-duplicate", 1);
                        }
                        Err(HoldError::Stale { .. } | HoldError::NotPrePrepare) => {
                            self.metrics.rejected("pre-prepare-stale", 1);
                        }
                    }
                    #[cfg(debug_assertions)]
                    self.held.check_invariants();
                    self.metrics.held_bytes.set(self.held.bytes() as i64);
                }
                return Ok(());
            }
        }
        self.drive(Input::Message { from, message })
    }

    /// The relay's periodic work: proposals that gossip filled go to consensus,
    /// those of replaced primaries are forgotten, and due wants go out.
    pub(super) fn relay_tick(&mut self) -> Result<(), NodeError> {
        if std::mem::take(&mut self.refill_due) && self.relay.waiting() > 0 {
            let whole = {
                let shared = lock(&self.shared);
                let mempool = &shared.mempool;
                self.relay.refill(Instant::now(), |id| mempool.verified(id))
            };
            for (from, assembly) in whole {
                if let Some(peer) = self.info.validator_peers.get(from.0 as usize).copied() {
                    self.on_assembled(peer, from, assembly)?;
                }
            }
        }
        self.relay.forget_views_before(self.replica.view());
        for (to, want) in self.relay.due(Instant::now()) {
            self.send_want(to, &want);
        }
        Ok(())
    }
}
