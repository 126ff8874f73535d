//! The loop's hands: consensus frames to the links, wants, sync requests and
//! block requests, answers to peers, gossip publishing, points and bans, dials,
//! and the status the API reads. With `relay.rs`, the only room that reaches the
//! edge ([`crate::edge`]: honest, or a test build's Byzantine behaviour).

use std::sync::Arc;
use std::time::Instant;

use libp2p::request_response::ResponseChannel;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{PeerId, gossipsub};
use mosaic_consensus::{Digest, Message, ReplicaId, SeqNum};
use mosaic_crypto::codec;

use crate::block::AfterParent;
use crate::edge::TickContext;
use crate::ledger::SignedTransfer;
use crate::net::{SYNC_BLOCKS_MAX, SyncRequest, SyncResponse};
use crate::overview::{PeerReport, REPORT_RANGES_MAX};
use crate::proposal;

use super::state::{EventLoop, Purpose};

impl EventLoop {
    pub(super) fn send_consensus(&mut self, to: ReplicaId, message: &Message) {
        if let Some(bytes) = self.frame_of(message) {
            self.send_frame(to.0 as usize, message, Arc::new(bytes));
        }
    }

    /// The frame carrying `message`: an own PRE-PREPARE goes compact.
    pub(super) fn frame_of(&self, message: &Message) -> Option<Vec<u8>> {
        self.relay
            .compact_frame(message)
            .or_else(|| proposal::consensus_frame(message).ok())
    }

    pub(super) fn send_frame(&mut self, to: usize, message: &Message, frame: Arc<Vec<u8>>) {
        let frame = self.edge.outgoing(to, message, frame);
        if let Some(frame) = frame {
            self.links.send(to, frame);
        }
    }

    /// Asks validator `to`, the primary of a waiting proposal, for its transfers.
    pub(super) fn send_want(&self, to: ReplicaId, want: &proposal::Want) {
        if let Ok(bytes) = proposal::want_frame(want) {
            self.links.send(to.0 as usize, Arc::new(bytes));
        }
    }

    pub(super) fn send_sync(
        &mut self,
        peer: PeerId,
        request: &SyncRequest,
        purpose: Purpose,
    ) -> bool {
        let Ok(bytes) = codec::encode(request) else {
            return false;
        };
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
        self.requests.insert(id, (peer, purpose));
        true
    }

    /// Asks the next peer in turn for the next blocks, if behind.
    pub(super) fn request_blocks(&mut self) {
        let tip = self.chain.tip().height;
        let target = self.network_height();
        if self.sync.backoff_until.is_some_and(|t| t > Instant::now()) {
            return;
        }
        if self.sync.in_flight.is_some() || !self.sync.queue.is_empty() || target <= tip {
            if target <= tip && self.sync.started.take().is_some() {
                tracing::info!(height = tip, "caught up");
            }
            return;
        }
        let now = Instant::now();
        let connected = &self.connected;
        let own = self.info.peer_id;
        let Some(peer) = self.sync.choose(
            tip,
            now,
            |p| *p != own && connected.contains_key(p),
            &self.info.validator_peers,
        ) else {
            return;
        };
        if self.sync.started.is_none() {
            self.sync.started = Some((Instant::now(), tip));
            tracing::info!(local = tip, network = target, "catching up");
        }
        let request = SyncRequest::Blocks {
            from: tip + 1,
            count: SYNC_BLOCKS_MAX,
        };
        if self.send_sync(peer, &request, Purpose::Blocks { from: tip + 1 }) {
            self.sync.asked(peer, now);
        }
    }

    pub(super) fn answer(
        &mut self,
        request: &SyncRequest,
        response: SyncResponse,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let response = self.edge.answer(request, response);
        if let Some(response) = response {
            self.respond(channel, &response);
        }
    }

    pub(super) fn respond(&mut self, channel: ResponseChannel<Vec<u8>>, response: &SyncResponse) {
        if let Ok(bytes) = codec::encode(response) {
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, bytes);
        }
    }

    pub(super) fn report_gossip(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: gossipsub::MessageAcceptance,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    pub(super) fn flush_gossip(&mut self) {
        if self.gossip_out.is_empty() {
            return;
        }
        if self
            .edge
            .holds_gossip(self.replica.primary() == ReplicaId(self.info.index))
        {
            return;
        }
        let mut start = 0;
        while start < self.gossip_out.len() {
            // Batches well under the gossip limit (a transfer encodes to ~150 bytes).
            let end = (start + 8_192).min(self.gossip_out.len());
            let Ok(bytes) = codec::encode(&self.gossip_out[start..end].to_vec()) else {
                break;
            };
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), bytes)
            {
                Ok(_) | Err(gossipsub::PublishError::Duplicate) => start = end,
                Err(e) => {
                    // No subscribed peer yet: keep them for the next tick.
                    tracing::debug!(error = %e, "gossip publish deferred");
                    break;
                }
            }
        }
        self.gossip_out.drain(..start);
    }

    /// Counts an input of `peer` refused for `reason` and charges it `points`.
    pub(super) fn misbehaved(&mut self, peer: PeerId, reason: &'static str, points: u32) {
        self.metrics.rejected(reason, 1);
        self.charge(peer, reason, points);
    }

    /// Charges `peer` `points` for `reason`; at the ban threshold it is disconnected.
    pub(super) fn charge(&mut self, peer: PeerId, reason: &'static str, points: u32) {
        self.metrics.misbehaved(reason, points);
        if self.peers.charge(peer, points, Instant::now()) {
            tracing::warn!(%peer, reason, "peer sent invalid data: disconnecting and banning");
            self.metrics
                .peers_banned
                .set(self.peers.banned_count() as i64);
            // Closes its connections and refuses new ones, both ways, until the ban ends.
            self.swarm.behaviour_mut().blocked.block_peer(peer);
        }
    }

    /// Dials every validator we are not connected to and have an address for.
    pub(super) fn redial(&mut self) {
        let peers: Vec<PeerId> = self.info.validator_peers.clone();
        for peer in peers {
            if peer == self.info.peer_id
                || self.connected.contains_key(&peer)
                || self.peers.is_banned(&peer)
            {
                continue;
            }
            let Some(addresses) = self.addresses.get(&peer) else {
                continue;
            };
            let opts = DialOpts::peer_id(peer)
                .addresses(addresses.iter().cloned().collect())
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "dial failed");
            }
        }
    }

    /// What this validator says of itself in its status answers.
    pub(super) fn own_report(&self) -> PeerReport {
        let scrub = &self.metrics.scrub;
        let (unrepaired, unrepaired_more) = scrub.unrepaired.ranges(REPORT_RANGES_MAX);
        PeerReport {
            view: self.replica.view().0,
            primary: self.replica.primary().0,
            view_changing: self.replica.status() != mosaic_consensus::Status::Normal,
            peers: u32::try_from(self.connected.len()).unwrap_or(u32::MAX),
            syncing: self.sync.started.is_some(),
            commit_age_ms: self.overview.commit_age_ms(Instant::now()),
            scrub_position: u64::try_from(scrub.position.get()).unwrap_or(0),
            scrub_passes: scrub.passes.get(),
            unrepaired,
            unrepaired_more,
        }
    }

    pub(super) fn update_status(&mut self) {
        let mut status = match self.status.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        status.view = self.replica.view().0;
        status.primary = self.replica.primary().0;
        status.view_changing = self.replica.status() != mosaic_consensus::Status::Normal;
        status.peers = self.connected.keys().map(|p| p.to_string()).collect();
        status.network_height = self.network_height();
        status.network_known = self.sync.network_known();
        status.syncing = self.sync.started.is_some();
    }

    /// The edge's tick (see [`crate::edge`]).
    pub(super) fn edge_tick(&mut self) {
        if !self.edge.ticks() {
            return;
        }
        self.edge.tick(TickContext {
            links: &self.links,
            swarm: &mut self.swarm,
            topic: &self.topic,
            connected: &self.connected,
            tip: self.chain.tip().height,
            view: self.replica.view(),
        });
    }

    /// The edge hears of the proposal about to be built at `at`.
    pub(super) fn edge_proposing(
        &mut self,
        at: (SeqNum, Digest),
        after: AfterParent,
        txs: &[SignedTransfer],
    ) {
        let view = self.replica.view();
        self.edge.proposing(&self.layout, at, view, after, txs);
    }
}
