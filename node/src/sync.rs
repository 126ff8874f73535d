//! Catch-up: whom to ask for blocks, and what the answers say about the peer.
//!
//! No single peer's claim is trusted. The target height is the (f+1)-th highest
//! height the validators report, so at least one honest validator reached it; a
//! Byzantine peer can claim `u64::MAX` but cannot move the target. Block requests
//! rotate among the peers that claim to be ahead: the one with the fewest recent
//! failures that was asked longest ago goes first, and a peer whose answer fails
//! (an error, nothing although it claimed more, a block that does not verify or a
//! body that fails the block check) is rested for a time that doubles with each
//! failure in a row. The event loop charges misbehaviour points for the failures a
//! peer is to blame for; this room only decides whom to ask next.
//!
//! The room owns no sockets: the event loop sends the request it names and reports
//! the outcome back, so it is tested without a swarm.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::net::SyncBlock;

/// The first rest after a failed answer; it doubles with each failure in a row.
const REST_BASE: Duration = Duration::from_secs(1);
/// The longest rest.
const REST_MAX: Duration = Duration::from_secs(30);

/// What this node knows about one peer as a source of blocks.
#[derive(Debug, Clone, Copy, Default)]
struct Standing {
    /// Failed answers since its last good one.
    failures: u32,
    /// Not asked before this.
    rested_until: Option<Instant>,
    /// When it was last asked.
    last_asked: Option<Instant>,
}

/// A certified block waiting to go to consensus, with the peer it came from.
#[derive(Debug)]
pub struct Queued {
    /// The block (its certificate is verified).
    pub block: SyncBlock,
    /// Who sent it.
    pub from: PeerId,
    /// Whether its body came from `from` (false once rebuilt from fragments).
    pub body_from_sender: bool,
}

/// Catch-up state.
#[derive(Debug)]
pub struct CatchUp {
    /// f: how many validators may lie.
    faulty_max: usize,
    /// The height each connected validator reported last.
    heights: HashMap<PeerId, u64>,
    standing: HashMap<PeerId, Standing>,
    /// The peer a block request is in flight to.
    pub in_flight: Option<PeerId>,
    /// Blocks received but not yet handed to consensus (bodies missing are
    /// gathered first).
    pub queue: VecDeque<Queued>,
    /// The tip at the previous status round (no progress since: catch up).
    pub tip_at_last_round: u64,
    /// A state transfer asked for by consensus, up to this height.
    pub wanted_to: u64,
    /// No block requests before this (after a block that did not go in for a
    /// reason no peer is to blame for).
    pub backoff_until: Option<Instant>,
    /// When catching up started, and the height then (for the progress line).
    pub started: Option<(Instant, u64)>,
    /// When the progress line was last logged.
    pub last_progress_log: Option<Instant>,
}

impl CatchUp {
    /// Catch-up among `validators` validators (n = 3f + 1).
    pub fn new(validators: usize) -> Self {
        CatchUp {
            faulty_max: validators.saturating_sub(1) / 3,
            heights: HashMap::new(),
            standing: HashMap::new(),
            in_flight: None,
            queue: VecDeque::new(),
            tip_at_last_round: 0,
            wanted_to: 0,
            backoff_until: None,
            started: None,
            last_progress_log: None,
        }
    }

    /// `peer` says it executed `height`.
    pub fn report_height(&mut self, peer: PeerId, height: u64) {
        self.heights.insert(peer, height);
    }

    /// `peer` disconnected: its claim no longer counts.
    pub fn forget(&mut self, peer: &PeerId) {
        self.heights.remove(peer);
    }

    /// Whether at least f+1 peers reported a height, so that
    /// [`Sync::network_height`] is one an honest validator reached.
    pub fn network_known(&self) -> bool {
        self.heights.len() > self.faulty_max
    }

    /// The height at least one honest validator reached: the (f+1)-th highest
    /// reported, or what consensus proved.
    pub fn network_height(&self) -> u64 {
        let mut heights: Vec<u64> = self.heights.values().copied().collect();
        heights.sort_unstable_by(|a, b| b.cmp(a));
        heights
            .get(self.faulty_max)
            .copied()
            .unwrap_or(0)
            .max(self.wanted_to)
    }

    /// The peer to ask for the blocks after `tip`: among the connected peers that
    /// claim to be ahead and are not resting, the one with the fewest failures in a
    /// row, then the one asked longest ago. With no such claim (consensus asked for
    /// a state transfer before any report), any connected, rested validator of
    /// `fallback`.
    pub fn choose(
        &self,
        tip: u64,
        now: Instant,
        connected: impl Fn(&PeerId) -> bool,
        fallback: &[PeerId],
    ) -> Option<PeerId> {
        let ready = |peer: &PeerId| {
            connected(peer)
                && self
                    .standing
                    .get(peer)
                    .and_then(|s| s.rested_until)
                    .is_none_or(|until| until <= now)
        };
        let rank = |peer: &PeerId| {
            let standing = self.standing.get(peer).copied().unwrap_or_default();
            (standing.failures, standing.last_asked)
        };
        let ahead = self
            .heights
            .iter()
            .filter(|(peer, height)| **height > tip && ready(peer))
            .map(|(peer, _)| *peer)
            .min_by_key(|peer| (rank(peer), peer.to_bytes()));
        if ahead.is_some() || self.heights.values().any(|h| *h > tip) {
            return ahead;
        }
        fallback
            .iter()
            .filter(|peer| ready(peer))
            .min_by_key(|peer| rank(peer))
            .copied()
    }

    /// A block request went to `peer`.
    pub fn asked(&mut self, peer: PeerId, now: Instant) {
        self.in_flight = Some(peer);
        self.standing.entry(peer).or_default().last_asked = Some(now);
    }

    /// `peer`'s answer made progress: it is first in line again.
    pub fn answered(&mut self, peer: &PeerId) {
        if let Some(standing) = self.standing.get_mut(peer) {
            standing.failures = 0;
            standing.rested_until = None;
        }
    }

    /// `peer`'s answer failed: it rests, longer with each failure in a row, and the
    /// next request goes to someone else. Returns how long it rests.
    pub fn failed(&mut self, peer: PeerId, now: Instant) -> Duration {
        if self.in_flight == Some(peer) {
            self.in_flight = None;
        }
        let standing = self.standing.entry(peer).or_default();
        standing.failures = standing.failures.saturating_add(1);
        let rest = REST_BASE
            .saturating_mul(1 << (standing.failures - 1).min(5))
            .min(REST_MAX);
        standing.rested_until = Some(now + rest);
        rest
    }

    /// Failed answers from `peer` since its last good one.
    pub fn failures(&self, peer: &PeerId) -> u32 {
        self.standing.get(peer).map_or(0, |s| s.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(count: usize) -> Vec<PeerId> {
        (0..count).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn the_target_is_the_f_plus_first_highest_report() {
        let p = peers(4);
        let mut sync = CatchUp::new(4);
        sync.report_height(p[0], u64::MAX);
        sync.report_height(p[1], 12);
        sync.report_height(p[2], 10);
        assert_eq!(sync.network_height(), 12);
        sync.forget(&p[1]);
        assert_eq!(sync.network_height(), 10);
        sync.wanted_to = 30;
        assert_eq!(sync.network_height(), 30);
    }

    #[test]
    fn a_liar_that_fails_is_rotated_away_from() {
        // The liar claims the greatest height and fails every answer: the honest
        // peers serve the requests, and the liar is asked ever more rarely.
        let p = peers(3);
        let liar = p[0];
        let mut sync = CatchUp::new(4);
        sync.report_height(liar, u64::MAX);
        sync.report_height(p[1], 100);
        sync.report_height(p[2], 100);
        let start = Instant::now();
        let mut asked_liar = 0u32;
        let mut asked_honest = 0;
        // One request per 100 ms for 20 s.
        for step in 0..200u64 {
            let now = start + Duration::from_millis(100 * step);
            let Some(peer) = sync.choose(10, now, |_| true, &p) else {
                continue;
            };
            sync.asked(peer, now);
            if peer == liar {
                asked_liar += 1;
                sync.failed(peer, now);
            } else {
                asked_honest += 1;
                sync.answered(&peer);
            }
        }
        assert!(asked_liar <= 6, "the liar was asked {asked_liar} times");
        assert!(
            asked_honest >= 190,
            "honest peers were asked {asked_honest} times"
        );
        assert_eq!(sync.failures(&liar), asked_liar);
    }

    #[test]
    fn honest_peers_take_turns() {
        let p = peers(3);
        let mut sync = CatchUp::new(4);
        for peer in &p {
            sync.report_height(*peer, 50);
        }
        let start = Instant::now();
        let mut asked = HashMap::new();
        for step in 0..30u64 {
            let now = start + Duration::from_millis(step);
            let peer = sync.choose(10, now, |_| true, &p);
            assert!(peer.is_some());
            if let Some(peer) = peer {
                sync.asked(peer, now);
                sync.answered(&peer);
                *asked.entry(peer).or_insert(0) += 1;
            }
        }
        assert_eq!(asked.len(), 3);
        assert!(asked.values().all(|count| *count == 10), "{asked:?}");
    }

    #[test]
    fn rest_doubles_and_is_capped_and_a_good_answer_ends_it() {
        let p = peers(1);
        let mut sync = CatchUp::new(4);
        sync.report_height(p[0], 20);
        let now = Instant::now();
        let rests: Vec<u64> = (0..8).map(|_| sync.failed(p[0], now).as_secs()).collect();
        assert_eq!(rests, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(sync.choose(10, now, |_| true, &p), None);
        assert_eq!(sync.choose(10, now + REST_MAX, |_| true, &p), Some(p[0]));
        sync.answered(&p[0]);
        assert_eq!(sync.failures(&p[0]), 0);
        assert_eq!(sync.choose(10, now, |_| true, &p), Some(p[0]));
    }

    #[test]
    fn only_connected_peers_ahead_are_asked_and_the_fallback_only_without_claims() {
        let p = peers(3);
        let mut sync = CatchUp::new(4);
        let now = Instant::now();
        // No reports: consensus asked for a transfer, any connected validator.
        assert_eq!(sync.choose(10, now, |peer| *peer == p[2], &p), Some(p[2]));
        sync.report_height(p[0], 5);
        sync.report_height(p[1], 40);
        assert_eq!(sync.choose(10, now, |peer| *peer != p[1], &p), None);
        assert_eq!(sync.choose(10, now, |_| true, &p), Some(p[1]));
        assert_eq!(sync.choose(40, now, |_| true, &p), Some(p[0]));
    }
}
