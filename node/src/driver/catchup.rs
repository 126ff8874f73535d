//! Catching up: answers to our sync requests (peers' heights and reports,
//! certified blocks, fragments), the queue of certified blocks handed to
//! consensus in order, fragment gatherings for bodies peers no longer hold and for
//! the scrub, and bodies rebuilt from fragments.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use mosaic_consensus::Input;
use mosaic_crypto::codec;
use mosaic_storage::{CodingError, Fragment, FragmentCommitment, coding};

use crate::block::{BODY_BYTES_MAX, Block};
use crate::error::NodeError;
use crate::gather::{Answer, Start};
use crate::ledger::SignedTransfer;
use crate::net::{SyncRequest, SyncResponse};
use crate::sync::Queued;

use super::state::{EventLoop, Purpose, Waiter};

impl EventLoop {
    pub(super) fn on_sync_response(
        &mut self,
        peer: PeerId,
        purpose: Purpose,
        response: SyncResponse,
    ) -> Result<(), NodeError> {
        match (purpose, response) {
            (Purpose::Status, SyncResponse::Status { height, report }) => {
                self.sync.report_height(peer, height);
                if let Some(index) = self.validator_index(&peer) {
                    match report.problem(height) {
                        None => {
                            self.overview
                                .reported(index.0 as usize, height, report, Instant::now())
                        }
                        Some(reason) => self.misbehaved(peer, reason, 2),
                    }
                }
            }
            (Purpose::Blocks { from }, SyncResponse::Blocks(blocks)) => {
                if self.sync.in_flight == Some(peer) {
                    self.sync.in_flight = None;
                }
                if blocks.is_empty() {
                    // It claimed to be past `from` when asked (heights only grow).
                    self.misbehaved(peer, "sync-empty", 2);
                    self.sync_request_failed(peer, purpose);
                    return Ok(());
                }
                for (i, block) in blocks.into_iter().enumerate() {
                    let height = from + i as u64;
                    let certificate = &block.certificate;
                    let good = block.header.height == height
                        && certificate.seq.0 == height
                        && certificate.digest.0 == block.header.hash()
                        && certificate.verify(&self.info.validators).is_ok();
                    if !good {
                        self.misbehaved(peer, "sync-bad-block", 10);
                        self.sync.failed(peer, Instant::now());
                        break;
                    }
                    // Blocks that consensus delivered meanwhile are skipped.
                    let expected = self.chain.tip().height + 1 + self.sync.queue.len() as u64;
                    match height.cmp(&expected) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => self.sync.queue.push_back(Queued {
                            body_from_sender: block.body.is_some(),
                            block,
                            from: peer,
                        }),
                        std::cmp::Ordering::Greater => break,
                    }
                }
                self.feed_sync_queue()?;
            }
            (Purpose::Fragment { height }, SyncResponse::Fragment(fragment)) => {
                self.fragment_answer(height, peer, Answer::Fragment(fragment))?;
            }
            (Purpose::Fragment { height }, SyncResponse::Busy) => {
                // Not a fault: it serves us as much as it will now. It rests.
                tracing::debug!(%peer, height, "peer is busy");
                self.fragment_answer(height, peer, Answer::Busy)?;
            }
            (purpose, SyncResponse::Busy) => {
                // Not a fault: it serves us as much as it will now. Ask others.
                tracing::debug!(%peer, ?purpose, "peer is busy");
                self.sync_request_failed(peer, purpose);
            }
            (purpose, SyncResponse::Error(reason)) => {
                tracing::debug!(%peer, reason, "peer could not serve sync request");
                if let Purpose::Blocks { .. } = purpose {
                    // A validator serves every height it reported to other validators.
                    self.misbehaved(peer, "sync-refused", 3);
                }
                self.sync_request_failed(peer, purpose);
            }
            (purpose, _) => {
                self.misbehaved(peer, "sync-wrong-response", 5);
                self.sync_request_failed(peer, purpose);
            }
        }
        Ok(())
    }

    /// A request to `peer` brought nothing usable; points, if it is to blame, are
    /// charged by the caller.
    pub(super) fn sync_request_failed(&mut self, peer: PeerId, purpose: Purpose) {
        match purpose {
            Purpose::Status => {}
            Purpose::Blocks { .. } => {
                let rest = self.sync.failed(peer, Instant::now());
                tracing::debug!(%peer, rest_ms = rest.as_millis() as u64, "block source rested");
                self.request_blocks();
            }
            Purpose::Fragment { height } => {
                // A failed request is only one missing fragment; fatal errors of the
                // rebuild that may follow surface through the next sync response.
                if let Err(e) = self.fragment_answer(height, peer, Answer::Failed) {
                    self.fatal = Some(e);
                }
            }
        }
    }

    /// Hands queued certified blocks to consensus in order; a block without a body
    /// waits for its fragments.
    pub(super) fn feed_sync_queue(&mut self) -> Result<(), NodeError> {
        while let Some(queued) = self.sync.queue.front() {
            let block = &queued.block;
            let height = block.header.height;
            let tip = self.chain.tip().height;
            if height <= tip {
                self.sync.queue.pop_front();
                continue;
            }
            if height != tip + 1 {
                // A gap (consensus moved on some other way): start over.
                self.sync.queue.clear();
                break;
            }
            let body = match &block.body {
                Some(body) => body.clone(),
                None => {
                    let commitment = block.header.fragments;
                    if !self.gather.is_gathering(height) {
                        self.gather_fragments(height, commitment, Waiter::Sync)?;
                    }
                    return Ok(());
                }
            };
            let Some(Queued {
                block,
                from,
                body_from_sender,
            }) = self.sync.queue.pop_front()
            else {
                break;
            };
            let txs = match codec::decode::<Vec<SignedTransfer>>(&body, BODY_BYTES_MAX) {
                Ok(txs) => txs,
                Err(_) => {
                    tracing::warn!(height, %from, "synced body does not decode; asking another peer");
                    self.sync.queue.clear();
                    if body_from_sender {
                        self.misbehaved(from, "sync-bad-body", 10);
                        self.sync.failed(from, Instant::now());
                    }
                    break;
                }
            };
            let payload = Block {
                header: block.header,
                txs,
            }
            .to_bytes();
            let refusals = self.drive_own(Input::CertifiedPayload {
                payload,
                certificate: block.certificate,
            })?;
            if self.chain.tip().height < height {
                self.sync.queue.clear();
                // The certificate is verified, so a body that fails the block check
                // is the sender's doing; anything else is retried after a pause.
                if body_from_sender && refusals.contains(&"invalid-payload") {
                    tracing::warn!(height, %from, "synced body fails the block check; asking another peer");
                    self.misbehaved(from, "sync-bad-body", 10);
                    self.sync.failed(from, Instant::now());
                } else {
                    tracing::warn!(
                        height,
                        "synced block was not accepted; retrying in a second"
                    );
                    self.sync.backoff_until = Some(Instant::now() + Duration::from_secs(1));
                }
                break;
            }
            self.sync.answered(&from);
        }
        self.log_sync_progress();
        if self.sync.queue.is_empty() {
            self.request_blocks();
        }
        Ok(())
    }

    pub(super) fn log_sync_progress(&mut self) {
        let Some((started, from)) = self.sync.started else {
            return;
        };
        if self
            .sync
            .last_progress_log
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.sync.last_progress_log = Some(Instant::now());
        let tip = self.chain.tip().height;
        let network = self.network_height().max(tip);
        let rate = (tip - from) as f64 / started.elapsed().as_secs_f64().max(0.001);
        let eta = if rate > 0.0 {
            format!("{:.0}s", (network - tip) as f64 / rate)
        } else {
            "unknown".to_string()
        };
        tracing::info!(
            local = tip,
            network,
            blocks_per_s = format!("{rate:.1}"),
            eta,
            "catching up"
        );
    }

    /// Gathers the fragments of `height` from the connected validators for
    /// `waiter` (see [`crate::gather`]).
    pub(super) fn gather_fragments(
        &mut self,
        height: u64,
        commitment: FragmentCommitment,
        waiter: Waiter,
    ) -> Result<(), NodeError> {
        let own = if self.gather.is_gathering(height) {
            None
        } else {
            self.store.own_fragment(height).ok().flatten()
        };
        let peers: Vec<PeerId> = self
            .info
            .validator_peers
            .iter()
            .filter(|p| **p != self.info.peer_id && self.connected.contains_key(*p))
            .copied()
            .collect();
        let now = Instant::now();
        match self
            .gather
            .start(height, commitment, own, &peers, waiter, now)
        {
            Start::Joined => {}
            Start::Full(Waiter::Api(reply)) => {
                let _ = reply.send(Vec::new());
            }
            Start::Full(Waiter::Sync) => {
                // Try again shortly rather than leave the queue stuck.
                self.sync.queue.clear();
                self.sync.backoff_until = Some(now + Duration::from_secs(1));
            }
            Start::Ask(peers) => {
                for peer in peers {
                    let sent = self.send_sync(
                        peer,
                        &SyncRequest::Fragment { height },
                        Purpose::Fragment { height },
                    );
                    if !sent {
                        self.gather.arrived(height, peer, Answer::Failed, now);
                    }
                }
            }
        }
        self.finish_gatherings()
    }

    /// `peer` answered (or failed to answer) the fragment request for `height`.
    pub(super) fn fragment_answer(
        &mut self,
        height: u64,
        peer: PeerId,
        answer: Answer,
    ) -> Result<(), NodeError> {
        if let Some((reason, points)) = self.gather.arrived(height, peer, answer, Instant::now()) {
            self.misbehaved(peer, reason, points);
        }
        self.finish_gatherings()
    }

    /// Hands every finished gathering to its waiters.
    pub(super) fn finish_gatherings(&mut self) -> Result<(), NodeError> {
        for done in self.gather.take_done(Instant::now()) {
            for waiter in done.waiters {
                match waiter {
                    Waiter::Api(reply) => {
                        let _ = reply.send(done.fragments.clone());
                    }
                    Waiter::Sync => {
                        self.rebuild_synced_body(done.height, &done.commitment, &done.fragments)?
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn rebuild_synced_body(
        &mut self,
        height: u64,
        commitment: &FragmentCommitment,
        fragments: &[Fragment],
    ) -> Result<(), NodeError> {
        let Some(front) = self.sync.queue.front_mut() else {
            return Ok(());
        };
        if front.block.header.height != height {
            return Ok(());
        }
        match coding::reconstruct(commitment, fragments.to_vec()) {
            Ok(rebuilt) => {
                tracing::info!(height, "rebuilt a pruned body from peers' fragments");
                front.block.body = Some(rebuilt.body);
                front.body_from_sender = false;
                self.feed_sync_queue()?;
            }
            Err(CodingError::NotEnoughFragments { found, needed, .. }) => {
                tracing::warn!(height, found, needed, "not enough fragments yet; retrying");
                self.sync.queue.clear();
            }
            Err(e) => {
                tracing::warn!(height, error = %e, "cannot rebuild body; retrying");
                self.sync.queue.clear();
            }
        }
        Ok(())
    }
}
