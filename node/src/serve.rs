//! Serving sync requests: what a peer may make this node read from disk.
//!
//! Sync (`/mosaic/<chain>/sync/3`, request-response) is served to genesis
//! validators only; everyone else is refused before the request is decoded (clients
//! use the HTTP API). A validator's requests are then checked in this order:
//!
//! 1. undecodable, or asking for what no honest node asks (no blocks, more than
//!    [`SYNC_BLOCKS_MAX`], height 0): refused and charged;
//! 2. its token bucket ([`ServeLimits::requests_per_second`] refill, at most
//!    [`ServeLimits::requests_burst`] saved; a status or fragment costs one token,
//!    a block batch [`BLOCKS_COST`]): without tokens the answer is
//!    [`SyncResponse::Busy`], uncharged, and the bucket goes into debt down to
//!    minus the burst. A peer that keeps asking while at that floor ignored a burst
//!    of "busy" answers and pays a point per request; an honest peer rests a busy
//!    peer and never gets there;
//! 3. a status is answered at once (no disk); block and fragment requests are read
//!    off the event loop, one at a time per peer, at most
//!    [`ServeLimits::reads_running_max`] at once, peers taking turns; at most
//!    [`ServeLimits::queued_per_peer_max`] wait or run per peer, beyond which the
//!    answer is `Busy`.
//!
//! Each request has its own response stream, so answers may leave in any order.
//! The room owns no sockets and no store: the event loop runs the reads it names
//! ([`read`] on a blocking thread), reports their end with [`Serve::finished`],
//! charges the points and sends the answers.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use libp2p::PeerId;
use mosaic_crypto::codec;

use crate::net::{
    SYNC_BLOCKS_MAX, SYNC_REQUEST_MAX, SYNC_RESPONSE_MAX, SyncBlock, SyncRequest, SyncResponse,
};
use crate::schema::NodeStore;

/// Tokens a block request costs (it reads up to [`SYNC_BLOCKS_MAX`] blocks).
pub const BLOCKS_COST: u32 = 4;

/// The limits of serving, per peer unless said otherwise (see
/// [`crate::config::SyncServing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Tokens a peer's bucket gains per second.
    pub requests_per_second: u32,
    /// Tokens a bucket holds at most (and the debt it may run into).
    pub requests_burst: u32,
    /// Reads waiting or running for one peer, at most.
    pub queued_per_peer_max: usize,
    /// Reads running at once, for all peers.
    pub reads_running_max: usize,
}

/// A read to run off the event loop, and where its answer goes.
#[derive(Debug)]
pub struct Read<C> {
    /// Who asked.
    pub peer: PeerId,
    /// What it asked for (a block or fragment request).
    pub request: SyncRequest,
    /// The response channel.
    pub channel: C,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision<C> {
    /// Answer with this node's height now.
    Status(C),
    /// Run this read now (off the event loop) and report its end.
    Read(Read<C>),
    /// Waiting behind the peer's running read; [`Serve::finished`] hands it out.
    Queued,
    /// Refused: send `response`; count `reason`, and charge `points` if not zero.
    Refused {
        /// The response channel.
        channel: C,
        /// The answer.
        response: SyncResponse,
        /// The metric label.
        reason: &'static str,
        /// Misbehaviour points (0: not the peer's fault, or not yet).
        points: u32,
    },
}

#[derive(Debug)]
struct PeerServe<C> {
    tokens: f64,
    refilled: Instant,
    running: bool,
    waiting: VecDeque<Read<C>>,
}

/// Per-peer budgets and the queue of reads.
#[derive(Debug)]
pub struct Serve<C> {
    limits: ServeLimits,
    peers: HashMap<PeerId, PeerServe<C>>,
    /// Peers with waiting reads, in the order they get their next turn.
    turns: VecDeque<PeerId>,
    running: usize,
    closed: bool,
}

impl<C> Serve<C> {
    /// Nothing served yet.
    pub fn new(limits: ServeLimits) -> Self {
        Serve {
            limits,
            peers: HashMap::new(),
            turns: VecDeque::new(),
            running: 0,
            closed: false,
        }
    }

    /// Decides what to do with `bytes` from `peer` (`validator`: of the genesis
    /// set), answered through `channel`.
    pub fn request(
        &mut self,
        peer: PeerId,
        validator: bool,
        bytes: &[u8],
        channel: C,
        now: Instant,
    ) -> Decision<C> {
        let refuse = |channel, response, reason, points| Decision::Refused {
            channel,
            response,
            reason,
            points,
        };
        if !validator {
            return refuse(
                channel,
                SyncResponse::Error(
                    "sync is served to validators; clients use the HTTP API".into(),
                ),
                "sync-from-non-validator",
                2,
            );
        }
        let request = match codec::decode::<SyncRequest>(bytes, SYNC_REQUEST_MAX) {
            Ok(request) => request,
            Err(_) => {
                return refuse(
                    channel,
                    SyncResponse::Error("undecodable request".into()),
                    "sync-undecodable",
                    5,
                );
            }
        };
        let cost = match request {
            SyncRequest::Status => 1,
            SyncRequest::Fragment { height } if height >= 1 => 1,
            SyncRequest::Blocks { from, count }
                if from >= 1 && (1..=SYNC_BLOCKS_MAX).contains(&count) =>
            {
                BLOCKS_COST
            }
            SyncRequest::Fragment { .. } | SyncRequest::Blocks { .. } => {
                return refuse(
                    channel,
                    SyncResponse::Error(format!(
                        "heights start at 1, and a block request asks for 1 to {SYNC_BLOCKS_MAX}"
                    )),
                    "sync-invalid-request",
                    2,
                );
            }
        };
        let limits = self.limits;
        let state = self.peers.entry(peer).or_insert_with(|| PeerServe {
            tokens: f64::from(limits.requests_burst),
            refilled: now,
            running: false,
            waiting: VecDeque::new(),
        });
        let burst = f64::from(limits.requests_burst);
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * f64::from(limits.requests_per_second)).min(burst);
        state.refilled = now;
        let cost = f64::from(cost);
        if state.tokens < cost {
            let debt = state.tokens - cost;
            state.tokens = debt.max(-burst);
            return if debt < -burst {
                refuse(channel, SyncResponse::Busy, "sync-over-rate", 1)
            } else {
                refuse(channel, SyncResponse::Busy, "sync-rate-limited", 0)
            };
        }
        state.tokens -= cost;
        if request == SyncRequest::Status {
            return Decision::Status(channel);
        }
        let queued = state.waiting.len() + usize::from(state.running);
        if self.closed || queued >= limits.queued_per_peer_max {
            return refuse(channel, SyncResponse::Busy, "sync-queue-full", 0);
        }
        let read = Read {
            peer,
            request,
            channel,
        };
        if state.running || self.running >= limits.reads_running_max {
            if state.waiting.is_empty() {
                self.turns.push_back(peer);
            }
            state.waiting.push_back(read);
            return Decision::Queued;
        }
        state.running = true;
        self.running += 1;
        Decision::Read(read)
    }

    /// `peer`'s running read ended; returns the reads to run now (peers in turn).
    pub fn finished(&mut self, peer: &PeerId) -> Vec<Read<C>> {
        if let Some(state) = self.peers.get_mut(peer)
            && state.running
        {
            state.running = false;
            self.running -= 1;
            // It just had its turn: peers waiting go first.
            if let Some(at) = self.turns.iter().position(|p| p == peer) {
                self.turns.remove(at);
                self.turns.push_back(*peer);
            }
        }
        let mut start = Vec::new();
        let mut passed = 0;
        while self.running < self.limits.reads_running_max && passed < self.turns.len() {
            let Some(next) = self.turns.pop_front() else {
                break;
            };
            let Some(state) = self.peers.get_mut(&next) else {
                continue;
            };
            if state.running {
                // Its turn comes after its running read.
                self.turns.push_back(next);
                passed += 1;
                continue;
            }
            let Some(read) = state.waiting.pop_front() else {
                continue;
            };
            if !state.waiting.is_empty() {
                self.turns.push_back(next);
            }
            state.running = true;
            self.running += 1;
            passed = 0;
            start.push(read);
        }
        start
    }

    /// Stops handing out reads: waiting ones are dropped (their requesters see the
    /// stream close) and new ones are refused; running ones still end through
    /// [`Self::finished`].
    pub fn close(&mut self) {
        self.closed = true;
        self.turns.clear();
        for state in self.peers.values_mut() {
            state.waiting.clear();
        }
    }

    /// Reads running now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Reads running or waiting now.
    pub fn queued(&self) -> usize {
        self.running + self.peers.values().map(|s| s.waiting.len()).sum::<usize>()
    }

    /// Checks the room's own bookkeeping (tests and debug builds).
    pub fn check_invariants(&self) {
        let running = self.peers.values().filter(|s| s.running).count();
        assert_eq!(running, self.running);
        assert!(self.running <= self.limits.reads_running_max);
        for (peer, state) in &self.peers {
            assert!(
                state.waiting.len() + usize::from(state.running) <= self.limits.queued_per_peer_max
            );
            assert_eq!(!state.waiting.is_empty(), self.turns.contains(peer));
            assert!(state.tokens >= -f64::from(self.limits.requests_burst));
        }
    }
}

/// The answer to a block or fragment request, read from `store` (`tip`: the
/// executed height). Runs on a blocking thread.
pub fn read(store: &NodeStore, tip: u64, request: &SyncRequest) -> SyncResponse {
    match *request {
        SyncRequest::Status => SyncResponse::Status {
            height: tip,
            report: crate::overview::PeerReport::default(),
        },
        SyncRequest::Blocks { from, count } => blocks(store, tip, from, count),
        SyncRequest::Fragment { height } if height > tip => SyncResponse::Fragment(None),
        SyncRequest::Fragment { height } => match store.own_fragment(height) {
            Ok(fragment) => SyncResponse::Fragment(fragment),
            Err(e) => SyncResponse::Error(e.to_string()),
        },
    }
}

/// Certified blocks `from..` up to the tip, at most [`SYNC_BLOCKS_MAX`] and about
/// half a response's limit in bytes.
fn blocks(store: &NodeStore, tip: u64, from: u64, count: u64) -> SyncResponse {
    let mut blocks = Vec::new();
    let mut bytes = 0usize;
    let last = from
        .saturating_add(count.min(SYNC_BLOCKS_MAX))
        .min(tip.saturating_add(1));
    for height in from.max(1)..last {
        let (Ok(Some(header)), Ok(Some(certificate))) =
            (store.header(height), store.certificate(height))
        else {
            break;
        };
        let body = store.body(height).ok().flatten();
        bytes += body.as_ref().map_or(0, Vec::len) + 4096;
        blocks.push(SyncBlock {
            header,
            certificate,
            body,
        });
        if bytes > SYNC_RESPONSE_MAX / 2 {
            break;
        }
    }
    SyncResponse::Blocks(blocks)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: ServeLimits = ServeLimits {
        requests_per_second: 10,
        requests_burst: 20,
        queued_per_peer_max: 3,
        reads_running_max: 2,
    };

    fn bytes(request: &SyncRequest) -> Vec<u8> {
        codec::encode(request).unwrap()
    }

    fn fragment(height: u64) -> Vec<u8> {
        bytes(&SyncRequest::Fragment { height })
    }

    /// Label and points of a refusal, or what else was decided.
    fn outcome(decision: &Decision<u32>) -> (&'static str, u32) {
        match decision {
            Decision::Status(_) => ("status", 0),
            Decision::Read(_) => ("read", 0),
            Decision::Queued => ("queued", 0),
            Decision::Refused { reason, points, .. } => (reason, *points),
        }
    }

    #[test]
    fn strangers_and_bad_requests_are_refused_before_any_read() {
        let mut serve = Serve::new(LIMITS);
        let now = Instant::now();
        let peer = PeerId::random();
        let cases = [
            (false, fragment(3), ("sync-from-non-validator", 2)),
            (true, vec![0xA5; 33], ("sync-undecodable", 5)),
            (true, fragment(0), ("sync-invalid-request", 2)),
            (
                true,
                bytes(&SyncRequest::Blocks { from: 1, count: 0 }),
                ("sync-invalid-request", 2),
            ),
            (
                true,
                bytes(&SyncRequest::Blocks {
                    from: 1,
                    count: SYNC_BLOCKS_MAX + 1,
                }),
                ("sync-invalid-request", 2),
            ),
            (
                true,
                bytes(&SyncRequest::Blocks { from: 0, count: 4 }),
                ("sync-invalid-request", 2),
            ),
        ];
        for (i, (validator, request, expected)) in cases.into_iter().enumerate() {
            let decision = serve.request(peer, validator, &request, i as u32, now);
            assert_eq!(outcome(&decision), expected, "case {i}");
        }
        assert_eq!(serve.queued(), 0);
        serve.check_invariants();
    }

    #[test]
    fn a_flood_is_told_busy_then_charged_while_an_honest_rate_never_is() {
        let mut serve = Serve::new(LIMITS);
        let start = Instant::now();
        let flooder = PeerId::random();
        let honest = PeerId::random();
        let status = bytes(&SyncRequest::Status);
        let mut points = 0;
        let mut busy = 0;
        let mut served = 0;
        // The flooder asks 1,000 times a second for 2 s; the honest peer 5 times.
        for ms in 0..2_000u64 {
            let now = start + Duration::from_millis(ms);
            match outcome(&serve.request(flooder, true, &status, 0, now)) {
                ("status", _) => served += 1,
                ("sync-rate-limited", 0) => busy += 1,
                ("sync-over-rate", p) => points += p,
                other => panic!("{other:?}"),
            }
            if ms % 200 == 0 {
                assert_eq!(
                    outcome(&serve.request(honest, true, &status, 0, now)),
                    ("status", 0)
                );
            }
        }
        // The burst, then what refills in 2 s; then as many "busy" as the burst.
        assert!((20..=41).contains(&served), "{served}");
        assert!((18..=22).contains(&busy), "{busy}");
        assert!(points >= 1_900, "{points}");
        serve.check_invariants();
    }

    #[test]
    fn block_requests_cost_more() {
        let mut serve = Serve::new(LIMITS);
        let now = Instant::now();
        let peer = PeerId::random();
        let blocks = bytes(&SyncRequest::Blocks { from: 1, count: 32 });
        let mut taken = 0;
        for i in 0..10 {
            if let Decision::Read(read) = serve.request(peer, true, &blocks, i, now) {
                taken += 1;
                assert!(serve.finished(&read.peer).is_empty());
            }
        }
        assert_eq!(taken, LIMITS.requests_burst / BLOCKS_COST);
    }

    #[test]
    fn reads_run_one_per_peer_peers_take_turns_and_queues_are_bounded() {
        let mut serve = Serve::new(LIMITS);
        let now = Instant::now();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let ask = |serve: &mut Serve<u32>, peer, channel| {
            outcome(&serve.request(peer, true, &fragment(5), channel, now))
        };
        assert_eq!(ask(&mut serve, a, 1), ("read", 0));
        assert_eq!(ask(&mut serve, a, 2), ("queued", 0));
        assert_eq!(ask(&mut serve, a, 3), ("queued", 0));
        assert_eq!(ask(&mut serve, a, 4), ("sync-queue-full", 0));
        assert_eq!(ask(&mut serve, b, 5), ("read", 0));
        // Both running slots are taken: c waits although it has nothing running.
        assert_eq!(ask(&mut serve, c, 6), ("queued", 0));
        serve.check_invariants();
        // a's read ends: c goes before a's next (a just had its turn).
        let next: Vec<u32> = serve.finished(&a).into_iter().map(|r| r.channel).collect();
        assert_eq!(next, vec![6]);
        let next: Vec<u32> = serve.finished(&b).into_iter().map(|r| r.channel).collect();
        assert_eq!(next, vec![2]);
        let next: Vec<u32> = serve.finished(&c).into_iter().map(|r| r.channel).collect();
        assert!(next.is_empty(), "a's next waits for its running read");
        let next: Vec<u32> = serve.finished(&a).into_iter().map(|r| r.channel).collect();
        assert_eq!(next, vec![3]);
        serve.check_invariants();
        serve.close();
        assert!(serve.finished(&a).is_empty());
        assert_eq!(serve.running(), 0);
        assert_eq!(ask(&mut serve, b, 7), ("sync-queue-full", 0));
        serve.check_invariants();
    }

    #[test]
    fn an_empty_store_serves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(
            &dir.path().join("store.redb"),
            mosaic_storage::StoreConfig::default(),
        )
        .unwrap();
        assert_eq!(
            read(&store, 0, &SyncRequest::Blocks { from: 1, count: 32 }),
            SyncResponse::Blocks(Vec::new())
        );
        assert_eq!(
            read(&store, 0, &SyncRequest::Fragment { height: 1 }),
            SyncResponse::Fragment(None)
        );
        assert_eq!(
            read(&store, 5, &SyncRequest::Fragment { height: 3 }),
            SyncResponse::Fragment(None)
        );
    }
}
