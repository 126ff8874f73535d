//! Gossip checks: transfers that peers gossip, from arrival to a verdict.
//!
//! A gossip message costs this node a decode and one signature check per transfer,
//! so every peer gets its own budget of bytes that may wait for (or be in) a check,
//! and a message is weighed against it before a byte of it is decoded:
//!
//! 1. over [`GossipLimits::message_bytes_max`]: refused and charged;
//! 2. no room in the propagation source's budget (or, for peers outside the
//!    validator set, in the pool they share): dropped uncharged and counted, so a
//!    flood costs this node one length check per message and crowds out no one;
//! 3. undecodable or empty: refused and charged;
//! 4. queued; jobs for the signature-check threads take messages round-robin over
//!    the peers, so a peer with a long backlog delays the others by one message;
//! 5. a verdict with a transfer that fails its check (bad signature, another
//!    chain, zero amount) refuses the message and charges its source. An honest
//!    peer forwards only what it verified, so it never pays for another's forgery.
//!
//! A budget is given back when the message's verdict arrives, so it covers the
//! transfers waiting and those being checked. Validators never compete with other
//! peers for room: each has its own budget, and peers outside the set share one
//! pool besides.
//!
//! The room owns no sockets: the event loop reports the verdicts to gossipsub,
//! charges the points (see [`crate::peers`]) and feeds the mempool.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libp2p::PeerId;
use libp2p::gossipsub::MessageId;
use mosaic_crypto::codec;

use crate::ledger::{SignedTransfer, TxError, VerifiedTransfer};

/// The limits of the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipLimits {
    /// The largest message taken.
    pub message_bytes_max: usize,
    /// Bytes of one peer's messages waiting for or in a check, at most.
    pub peer_bytes_max: usize,
    /// Bytes of all messages from peers outside the validator set, at most.
    pub others_bytes_max: usize,
    /// Transfers one checking job takes, at most (it takes at least one message).
    pub job_txs_max: usize,
    /// Checking jobs queued or running at once, at most.
    pub jobs_in_flight_max: usize,
}

/// What happened to an arriving message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued for a signature check; its verdict comes through [`Gossip::judge`].
    Queued,
    /// Not taken and nobody blamed: tell gossipsub to ignore it, count `reason`.
    Dropped {
        /// The metric label.
        reason: &'static str,
    },
    /// Invalid: tell gossipsub to reject it, charge the source `points`.
    Rejected {
        /// The metric label.
        reason: &'static str,
        /// Misbehaviour points.
        points: u32,
    },
}

/// What the event loop does with a message once its check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Every transfer verified: forward it.
    Accept,
    /// The check did not run to its end (a panic): ignore it, blame no one.
    Ignore,
    /// A transfer failed its check: reject it, charge the source `points`.
    Reject {
        /// The metric label.
        reason: &'static str,
        /// Misbehaviour points.
        points: u32,
    },
}

/// One message's share of a checking job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Who sent it.
    pub source: PeerId,
    /// Its gossipsub id.
    pub id: MessageId,
    /// Bytes it holds of its source's budget.
    bytes: usize,
    /// Whether the source is a validator (which budget it holds).
    validator: bool,
}

/// A batch of messages for one signature check: one group of transfers each.
#[derive(Debug)]
pub struct Job {
    /// The messages, in the order of `groups`.
    pub tickets: Vec<Ticket>,
    /// The transfers of each message.
    pub groups: Vec<Vec<SignedTransfer>>,
}

/// The check results of one message, in its transfers' order; `None` if the check
/// did not run to its end.
pub type Results = Option<Vec<Result<VerifiedTransfer, TxError>>>;

#[derive(Debug)]
struct Waiting {
    ticket: Ticket,
    txs: Vec<SignedTransfer>,
}

#[derive(Debug, Default)]
struct PeerBacklog {
    /// Messages not yet taken into a job.
    waiting: VecDeque<Waiting>,
    /// Bytes of its messages waiting or in a check.
    bytes: usize,
}

/// Gossip waiting for signature checks, per peer.
#[derive(Debug)]
pub struct Gossip {
    limits: GossipLimits,
    peers: BTreeMap<PeerId, PeerBacklog>,
    /// Peers with waiting messages, in the order they get their next turn.
    turns: VecDeque<PeerId>,
    /// Bytes held by peers outside the validator set.
    others_bytes: usize,
    jobs_in_flight: usize,
    /// Transfers waiting for a job (shared with the API, which refuses
    /// submissions while many wait).
    waiting_txs: Arc<AtomicUsize>,
}

impl Gossip {
    /// An empty room; `waiting_txs` counts the transfers waiting for a job.
    pub fn new(limits: GossipLimits, waiting_txs: Arc<AtomicUsize>) -> Self {
        Gossip {
            limits,
            peers: BTreeMap::new(),
            turns: VecDeque::new(),
            others_bytes: 0,
            jobs_in_flight: 0,
            waiting_txs,
        }
    }

    /// Weighs a message from `source` (`validator`: one of the genesis set) against
    /// its budget before decoding it, then queues it. `mempool_full`: no transfer
    /// could be admitted now, so none is checked.
    pub fn admit(
        &mut self,
        source: PeerId,
        id: MessageId,
        data: &[u8],
        validator: bool,
        mempool_full: bool,
    ) -> Admission {
        let bytes = data.len();
        if bytes > self.limits.message_bytes_max {
            return Admission::Rejected {
                reason: "gossip-oversized",
                points: 5,
            };
        }
        if mempool_full {
            return Admission::Dropped {
                reason: "gossip-dropped-mempool-full",
            };
        }
        let held = self.peers.get(&source).map_or(0, |p| p.bytes);
        if held + bytes > self.limits.peer_bytes_max {
            return Admission::Dropped {
                reason: "gossip-dropped-peer-budget",
            };
        }
        if !validator && self.others_bytes + bytes > self.limits.others_bytes_max {
            return Admission::Dropped {
                reason: "gossip-dropped-others-budget",
            };
        }
        let txs = match codec::decode::<Vec<SignedTransfer>>(data, self.limits.message_bytes_max) {
            Ok(txs) if txs.is_empty() => {
                // An honest node never publishes an empty batch.
                return Admission::Rejected {
                    reason: "gossip-empty",
                    points: 2,
                };
            }
            Ok(txs) => txs,
            Err(_) => {
                return Admission::Rejected {
                    reason: "gossip-undecodable",
                    points: 5,
                };
            }
        };
        self.waiting_txs.fetch_add(txs.len(), Ordering::Relaxed);
        if !validator {
            self.others_bytes += bytes;
        }
        let backlog = self.peers.entry(source).or_default();
        backlog.bytes += bytes;
        if backlog.waiting.is_empty() {
            self.turns.push_back(source);
        }
        backlog.waiting.push_back(Waiting {
            ticket: Ticket {
                source,
                id,
                bytes,
                validator,
            },
            txs,
        });
        Admission::Queued
    }

    /// The next checking job, if a job may start and messages wait: up to
    /// [`GossipLimits::job_txs_max`] transfers (at least one message), one message
    /// per peer in turn. The caller hands it to the checking threads and reports
    /// its end through [`Self::job_done`].
    pub fn next_job(&mut self) -> Option<Job> {
        if self.jobs_in_flight >= self.limits.jobs_in_flight_max {
            return None;
        }
        let mut job = Job {
            tickets: Vec::new(),
            groups: Vec::new(),
        };
        let mut txs_in_job = 0;
        while let Some(peer) = self.turns.pop_front() {
            let Some(backlog) = self.peers.get_mut(&peer) else {
                continue;
            };
            let fits = backlog.waiting.front().is_some_and(|next| {
                job.groups.is_empty() || txs_in_job + next.txs.len() <= self.limits.job_txs_max
            });
            if !fits {
                if !backlog.waiting.is_empty() {
                    // Still its turn: first in the next job.
                    self.turns.push_front(peer);
                }
                break;
            }
            let Some(next) = backlog.waiting.pop_front() else {
                continue;
            };
            if !backlog.waiting.is_empty() {
                self.turns.push_back(peer);
            }
            txs_in_job += next.txs.len();
            job.tickets.push(next.ticket);
            job.groups.push(next.txs);
        }
        if job.groups.is_empty() {
            return None;
        }
        self.waiting_txs.fetch_sub(txs_in_job, Ordering::Relaxed);
        self.jobs_in_flight += 1;
        Some(job)
    }

    /// A job's check ended (its verdicts follow through [`Self::judge`]).
    pub fn job_done(&mut self) {
        self.jobs_in_flight = self.jobs_in_flight.saturating_sub(1);
    }

    /// The verdict on one message of a finished job: gives its bytes back to its
    /// source's budget and says what to tell gossipsub and whom to charge.
    pub fn judge(&mut self, ticket: &Ticket, results: &Results) -> Judgement {
        if let Some(backlog) = self.peers.get_mut(&ticket.source) {
            backlog.bytes = backlog.bytes.saturating_sub(ticket.bytes);
            if backlog.bytes == 0 && backlog.waiting.is_empty() {
                self.peers.remove(&ticket.source);
            }
        }
        if !ticket.validator {
            self.others_bytes = self.others_bytes.saturating_sub(ticket.bytes);
        }
        match results {
            None => Judgement::Ignore,
            Some(results) if results.iter().any(Result::is_err) => Judgement::Reject {
                reason: "gossip-invalid-transaction",
                points: 5,
            },
            Some(_) => Judgement::Accept,
        }
    }

    /// Bytes of `peer`'s messages waiting or in a check.
    pub fn peer_bytes(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.bytes)
    }

    /// Checks the room's own bookkeeping (tests and debug builds).
    pub fn check_invariants(&self) {
        let mut waiting_txs = 0;
        for (peer, backlog) in &self.peers {
            let waiting_bytes: usize = backlog.waiting.iter().map(|w| w.ticket.bytes).sum();
            assert!(waiting_bytes <= backlog.bytes, "{peer}: waiting over held");
            assert!(
                backlog.bytes <= self.limits.peer_bytes_max,
                "{peer}: over budget"
            );
            assert_eq!(
                !backlog.waiting.is_empty(),
                self.turns.contains(peer),
                "{peer}: turn out of step with its backlog"
            );
            waiting_txs += backlog.waiting.iter().map(|w| w.txs.len()).sum::<usize>();
        }
        assert_eq!(waiting_txs, self.waiting_txs.load(Ordering::Relaxed));
        assert!(self.others_bytes <= self.limits.others_bytes_max);
        assert!(self.jobs_in_flight <= self.limits.jobs_in_flight_max);
    }
}

#[cfg(test)]
mod tests {
    use mosaic_crypto::{ChainId, Keypair};

    /// The last valid height of the test transfers.
    const VALID_UNTIL: u64 = 1_000;

    use super::*;
    use crate::ledger::Transfer;

    const LIMITS: GossipLimits = GossipLimits {
        message_bytes_max: 64 * 1024,
        peer_bytes_max: 4 * 1024,
        others_bytes_max: 6 * 1024,
        job_txs_max: 8,
        jobs_in_flight_max: 2,
    };

    fn room() -> Gossip {
        Gossip::new(LIMITS, Arc::new(AtomicUsize::new(0)))
    }

    fn message(count: usize, seed: u64) -> Vec<u8> {
        let chain = ChainId::new("gossip").unwrap();
        let txs: Vec<SignedTransfer> = (0..count as u64)
            .map(|nonce| {
                let key = Keypair::from_seed_for_tests(seed);
                Transfer {
                    chain: chain.clone(),
                    from: key.public(),
                    to: Keypair::from_seed_for_tests(999).public(),
                    amount: 1,
                    nonce,
                    valid_until: VALID_UNTIL,
                }
                .sign(&key)
            })
            .collect();
        codec::encode(&txs).unwrap()
    }

    fn id(i: u64) -> MessageId {
        MessageId::new(&i.to_be_bytes())
    }

    /// Takes every job and judges its messages as `results` says.
    fn drain(room: &mut Gossip, valid: bool) -> Vec<PeerId> {
        let mut order = Vec::new();
        while let Some(job) = room.next_job() {
            for (ticket, group) in job.tickets.iter().zip(&job.groups) {
                order.push(ticket.source);
                let results = Some(
                    group
                        .iter()
                        .map(|tx| {
                            if valid {
                                Ok(tx.clone().verify(&tx.transfer.chain).unwrap())
                            } else {
                                Err(TxError::ZeroAmount)
                            }
                        })
                        .collect(),
                );
                let judgement = room.judge(ticket, &results);
                assert_eq!(judgement == Judgement::Accept, valid);
            }
            room.job_done();
            room.check_invariants();
        }
        order
    }

    #[test]
    fn a_full_budget_drops_before_decoding() {
        // Garbage that would be charged if decoded is only dropped once the budget
        // is spent: the length check comes first.
        let mut room = room();
        let flooder = PeerId::random();
        let one = message(4, 1);
        let mut queued = 0;
        while room.admit(flooder, id(queued), &one, true, false) == Admission::Queued {
            queued += 1;
        }
        assert!(queued * one.len() as u64 <= LIMITS.peer_bytes_max as u64);
        let garbage = vec![0xA5; one.len()];
        assert_eq!(
            room.admit(flooder, id(1000), &garbage, true, false),
            Admission::Dropped {
                reason: "gossip-dropped-peer-budget"
            }
        );
        room.check_invariants();
        // With room, the same garbage is decoded and charged.
        assert_eq!(
            room.admit(PeerId::random(), id(1001), &garbage, true, false),
            Admission::Rejected {
                reason: "gossip-undecodable",
                points: 5
            }
        );
    }

    #[test]
    fn one_peer_cannot_fill_another_peers_budget() {
        let mut room = room();
        let flooder = PeerId::random();
        let honest = PeerId::random();
        for i in 0..100 {
            room.admit(flooder, id(i), &message(4, i), true, false);
        }
        assert!(room.peer_bytes(&flooder) <= LIMITS.peer_bytes_max);
        assert_eq!(
            room.admit(honest, id(500), &message(4, 500), true, false),
            Admission::Queued
        );
        room.check_invariants();
    }

    #[test]
    fn peers_outside_the_validator_set_share_a_pool_validators_never_need() {
        let mut room = room();
        let mut dropped_others = 0;
        for i in 0..20 {
            if room.admit(PeerId::random(), id(i), &message(8, i), false, false)
                == (Admission::Dropped {
                    reason: "gossip-dropped-others-budget",
                })
            {
                dropped_others += 1;
            }
        }
        assert!(dropped_others > 0);
        assert_eq!(
            room.admit(PeerId::random(), id(100), &message(8, 100), true, false),
            Admission::Queued
        );
        room.check_invariants();
    }

    #[test]
    fn jobs_take_one_message_per_peer_in_turn() {
        let mut room = room();
        let busy = PeerId::random();
        let quiet = PeerId::random();
        for i in 0..6 {
            assert_eq!(
                room.admit(busy, id(i), &message(2, i), true, false),
                Admission::Queued
            );
        }
        assert_eq!(
            room.admit(quiet, id(99), &message(2, 99), true, false),
            Admission::Queued
        );
        let order = drain(&mut room, true);
        assert_eq!(order.len(), 7);
        assert_eq!(order[1], quiet, "{order:?}");
        assert_eq!(room.peer_bytes(&busy), 0);
        assert_eq!(room.waiting_txs.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn jobs_respect_their_size_and_number() {
        let mut room = room();
        for i in 0..8 {
            room.admit(PeerId::random(), id(i), &message(3, i), true, false);
        }
        let first = room.next_job().unwrap();
        let txs: usize = first.groups.iter().map(Vec::len).sum();
        assert!(txs <= LIMITS.job_txs_max, "{txs}");
        assert!(room.next_job().is_some());
        assert!(room.next_job().is_none(), "two jobs in flight at most");
        room.job_done();
        assert!(room.next_job().is_some());
    }

    #[test]
    fn verdicts_give_the_budget_back_and_charge_invalid_transfers() {
        let mut room = room();
        let peer = PeerId::random();
        let mut i = 0;
        while room.admit(peer, id(i), &message(4, 7), true, false) == Admission::Queued {
            i += 1;
        }
        let order = drain(&mut room, false);
        assert!(!order.is_empty());
        assert_eq!(room.peer_bytes(&peer), 0);
        assert_eq!(
            room.admit(peer, id(10_000), &message(4, 8), true, false),
            Admission::Queued
        );
        let job = room.next_job().unwrap();
        assert_eq!(room.judge(&job.tickets[0], &None), Judgement::Ignore);
    }

    #[test]
    fn oversized_empty_and_mempool_full() {
        let mut room = room();
        let peer = PeerId::random();
        assert_eq!(
            room.admit(
                peer,
                id(1),
                &vec![0; LIMITS.message_bytes_max + 1],
                true,
                false
            ),
            Admission::Rejected {
                reason: "gossip-oversized",
                points: 5
            }
        );
        assert_eq!(
            room.admit(
                peer,
                id(2),
                &codec::encode(&Vec::<SignedTransfer>::new()).unwrap(),
                true,
                false
            ),
            Admission::Rejected {
                reason: "gossip-empty",
                points: 2
            }
        );
        assert_eq!(
            room.admit(peer, id(3), &message(1, 1), true, true),
            Admission::Dropped {
                reason: "gossip-dropped-mempool-full"
            }
        );
        room.check_invariants();
    }
}
