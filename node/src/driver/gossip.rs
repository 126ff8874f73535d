//! Gossip in: each batch is weighed against its source's budget
//! ([`crate::gossip`]), its signatures are checked on the checking threads, and
//! the verdicts put the transfers in the mempool and tell gossipsub whether to
//! pass the message on.

use libp2p::{PeerId, gossipsub};

use crate::chain::{Shared, lock};
use crate::gossip::{Admission, Judgement, Results as GossipResults, Ticket};

use super::state::{EventLoop, GossipResult};

impl EventLoop {
    /// A gossiped batch: weighed against its source's budget, decoded, and its
    /// signatures checked on a checking thread (at most a few jobs at once) so
    /// consensus messages are not kept waiting; see [`crate::gossip`].
    pub(super) fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: &[u8]) {
        self.metrics.message_in("gossip-transactions");
        let validator = self.validator_index(&source).is_some();
        let mempool_full = lock(&self.shared).mempool.is_full();
        let acceptance = match self
            .gossip
            .admit(source, id.clone(), data, validator, mempool_full)
        {
            Admission::Queued => None,
            Admission::Dropped { reason } => {
                self.metrics.rejected(reason, 1);
                Some(gossipsub::MessageAcceptance::Ignore)
            }
            Admission::Rejected { reason, points } => {
                self.misbehaved(source, reason, points);
                Some(gossipsub::MessageAcceptance::Reject)
            }
        };
        if let Some(acceptance) = acceptance {
            self.report_gossip(&id, &source, acceptance);
        }
        self.start_gossip_verification();
    }

    /// Queues jobs for the signature checks while the room lets them start (each
    /// message a group, checked with whatever else waits: see [`crate::sigbatch`]).
    /// Transactions already verified here (e.g. in a proposal that overtook the
    /// gossip) are not checked again.
    pub(super) fn start_gossip_verification(&mut self) {
        while let Some(job) = self.gossip.next_job() {
            let results = self.gossip_results.clone();
            let tickets = job.tickets;
            self.signatures.submit(job.groups, move |verified| {
                let verdicts: GossipResult = match verified {
                    Some(per_message) => tickets
                        .into_iter()
                        .zip(per_message)
                        .map(|(ticket, results)| (ticket, Some(results)))
                        .collect(),
                    None => tickets.into_iter().map(|ticket| (ticket, None)).collect(),
                };
                let _ = results.send(verdicts);
            });
        }
    }

    pub(super) fn on_gossip_job_done(&mut self, verdicts: GossipResult) {
        self.gossip.job_done();
        for (ticket, results) in verdicts {
            self.on_gossip_verified(&ticket, results);
        }
        #[cfg(debug_assertions)]
        self.gossip.check_invariants();
        self.start_gossip_verification();
    }

    pub(super) fn on_gossip_verified(&mut self, ticket: &Ticket, results: GossipResults) {
        let judgement = self.gossip.judge(ticket, &results);
        if let Some(verified) = results {
            let mut shared = lock(&self.shared);
            let Shared {
                mempool, ledger, ..
            } = &mut *shared;
            mempool.add_verified(verified, ledger);
        }
        // Proposals waiting for gossip are refilled once per tick, not per message.
        self.refill_due = true;
        let acceptance = match judgement {
            Judgement::Accept => gossipsub::MessageAcceptance::Accept,
            Judgement::Ignore => {
                tracing::error!("a gossip signature check failed unexpectedly; message ignored");
                gossipsub::MessageAcceptance::Ignore
            }
            Judgement::Reject { reason, points } => {
                self.misbehaved(ticket.source, reason, points);
                gossipsub::MessageAcceptance::Reject
            }
        };
        self.report_gossip(&ticket.id, &ticket.source, acceptance);
    }
}
