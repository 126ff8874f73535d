//! Serving peers' sync requests: weighed by [`crate::serve`] (validators only, a
//! token bucket and one read at a time per peer), a status answered at once, block
//! and fragment reads run off the loop and answered when they end.

use std::time::Instant;

use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;

use crate::net::{SyncRequest, SyncResponse};
use crate::serve::{self, Decision, Read};

use super::state::{EventLoop, Served};

impl EventLoop {
    /// A sync request: weighed by [`Serve`] (validators only, a token bucket per
    /// peer, one read at a time per peer), then answered now (a status) or after a
    /// read off the event loop ([`Self::on_served`]).
    pub(super) fn serve_sync(
        &mut self,
        peer: PeerId,
        request: &[u8],
        channel: ResponseChannel<Vec<u8>>,
    ) {
        self.metrics.message_in("sync-request");
        let validator = self.validator_index(&peer).is_some();
        match self
            .serving
            .request(peer, validator, request, channel, Instant::now())
        {
            Decision::Status(channel) => {
                let height = self.chain.tip().height;
                let report = self.own_report();
                self.answer(
                    &SyncRequest::Status,
                    SyncResponse::Status { height, report },
                    channel,
                );
            }
            Decision::Read(read) => self.start_read(read),
            Decision::Queued => {}
            Decision::Refused {
                channel,
                response,
                reason,
                points,
            } => {
                if points > 0 {
                    self.misbehaved(peer, reason, points);
                } else {
                    self.metrics.rejected(reason, 1);
                }
                self.respond(channel, &response);
            }
        }
        self.metrics
            .sync_reads_queued
            .set(self.serving.queued() as i64);
    }

    /// Runs a block or fragment read on a blocking thread; its answer comes back
    /// through `served` (also when the read panics, so its slot is freed).
    pub(super) fn start_read(&mut self, read: Read<ResponseChannel<Vec<u8>>>) {
        let store = self.store.clone();
        let tip = self.chain.tip().height;
        let served = self.served.clone();
        let request = read.request.clone();
        tokio::spawn(async move {
            let response = tokio::task::spawn_blocking(move || serve::read(&store, tip, &request))
                .await
                .ok();
            let _ = served.send(Served { read, response });
        });
    }

    /// A read ended: the peer's next read (or another peer's) may start, and the
    /// answer goes out.
    pub(super) fn on_served(&mut self, served: Served) {
        let Served { read, response } = served;
        for next in self.serving.finished(&read.peer) {
            self.start_read(next);
        }
        self.metrics
            .sync_reads_queued
            .set(self.serving.queued() as i64);
        let response = response.unwrap_or_else(|| {
            tracing::error!(peer = %read.peer, "a sync read failed unexpectedly");
            SyncResponse::Error("internal error".into())
        });
        if matches!(response, SyncResponse::Fragment(Some(_))) {
            self.metrics.fragments_served.inc();
        }
        self.answer(&read.request, response, read.channel);
    }
}
