//! Peer scores and bans: what a peer's invalid input costs it.
//!
//! Every input that proves invalid charges its sender points; points fade by one a
//! second, so only sustained misbehaviour reaches [`BAN_POINTS`], at which the peer
//! is banned for [`BAN_DURATION`] (the event loop closes and refuses its
//! connections). [`consensus_points`] prices the replica's refusals, which name the
//! validator whose message raised them.
//!
//! The room owns no sockets: it says whom to ban and unban, and the event loop
//! does it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Misbehaviour points after which a peer is disconnected and banned for a while.
pub const BAN_POINTS: u32 = 20;
/// How long a banned peer stays banned.
pub const BAN_DURATION: Duration = Duration::from_secs(60);

/// Scores and bans.
#[derive(Debug, Default)]
pub struct Peers {
    points: HashMap<PeerId, u32>,
    banned: HashMap<PeerId, Instant>,
}

impl Peers {
    /// No scores, no bans.
    pub fn new() -> Self {
        Self::default()
    }

    /// Charges `peer` `points`; returns true if that bans it now (its points are
    /// then cleared: the ban is the penalty).
    pub fn charge(&mut self, peer: PeerId, points: u32, now: Instant) -> bool {
        if self.banned.contains_key(&peer) {
            return false;
        }
        let score = self.points.entry(peer).or_insert(0);
        *score = score.saturating_add(points);
        if *score < BAN_POINTS {
            return false;
        }
        self.points.remove(&peer);
        self.banned.insert(peer, now + BAN_DURATION);
        true
    }

    /// Whether `peer` is banned.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.contains_key(peer)
    }

    /// Peers banned now.
    pub fn banned_count(&self) -> usize {
        self.banned.len()
    }

    /// `peer`'s points now.
    pub fn points(&self, peer: &PeerId) -> u32 {
        self.points.get(peer).copied().unwrap_or(0)
    }

    /// One second passed: points fade by one, and the bans that ended are lifted
    /// (returned, for the event loop to unblock).
    pub fn second_passed(&mut self, now: Instant) -> Vec<PeerId> {
        self.points.retain(|_, points| {
            *points = points.saturating_sub(1);
            *points > 0
        });
        let ended: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &ended {
            self.banned.remove(peer);
        }
        ended
    }
}

/// The consensus rejections that prove the sender of the message misbehaved, and
/// their points. Reasons an honest peer meets in a healthy network (an old view, a
/// seq out of our window, a view too far ahead of ours: it is ahead, or we are
/// behind) cost nothing.
const BLAMED: [(&str, u32); 9] = [
    // A signature that does not verify: forged, or relayed without checking.
    ("bad-signature", 5),
    ("bad-certificate", 5),
    ("bad-new-view", 5),
    ("unknown-sender", 5),
    // Two different pre-prepares or view changes for one slot: equivocation.
    ("conflicting-pre-prepare", 5),
    ("conflicting-view-change", 5),
    // A payload over the limit is never signed by an honest primary.
    ("oversized-payload", 5),
    // The sender's share of the future-view buffer is spent: replays.
    ("future-buffer-full", 1),
    ("pre-prepare-not-from-primary", 2),
];

/// The points a consensus refusal ([`mosaic_consensus::Output::Refused`]) costs the
/// validator whose message raised it: `None` for the reasons honest peers meet.
pub fn consensus_points(reason: &str) -> Option<u32> {
    BLAMED
        .iter()
        .find(|(blamed, _)| *blamed == reason)
        .map(|(_, points)| *points)
}

/// The consensus charges of one step's outputs: each (validator, reason) at most
/// once. A step that feeds buffered messages again can refuse many of one
/// sender's messages for one reason (a full buffer share): one fault, not a ban.
#[derive(Debug, Default)]
pub struct StepCharges {
    charged: Vec<(u32, &'static str)>,
}

impl StepCharges {
    /// The points to charge validator `from` for a refusal for `reason`: `None`
    /// for a reason honest peers meet, or one already charged to it in this step.
    pub fn charge(&mut self, from: u32, reason: &'static str) -> Option<u32> {
        let points = consensus_points(reason)?;
        if self.charged.contains(&(from, reason)) {
            return None;
        }
        self.charged.push((from, reason));
        Some(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_add_up_to_a_ban_that_ends() {
        let peer = PeerId::random();
        let mut peers = Peers::new();
        let now = Instant::now();
        assert!(!peers.charge(peer, 10, now));
        assert!(!peers.charge(peer, 9, now));
        assert!(peers.charge(peer, 1, now));
        assert!(peers.is_banned(&peer));
        assert!(
            !peers.charge(peer, 50, now),
            "a banned peer is not banned again"
        );
        assert!(peers.second_passed(now + Duration::from_secs(1)).is_empty());
        assert_eq!(peers.second_passed(now + BAN_DURATION), vec![peer]);
        assert!(!peers.is_banned(&peer));
        assert_eq!(peers.points(&peer), 0);
    }

    #[test]
    fn points_fade_so_occasional_faults_never_ban() {
        let peer = PeerId::random();
        let mut peers = Peers::new();
        let now = Instant::now();
        for second in 0..600 {
            assert!(!peers.charge(peer, 1, now));
            peers.second_passed(now + Duration::from_secs(second));
        }
        assert_eq!(peers.points(&peer), 0);
    }

    #[test]
    fn only_the_reasons_that_prove_misbehaviour_cost_points() {
        for honest in [
            "old-view",
            "out-of-window",
            "too-far-in-the-future",
            "future-duplicate",
        ] {
            assert_eq!(consensus_points(honest), None, "honest peers meet {honest}");
        }
        assert_eq!(consensus_points("bad-signature"), Some(5));
        assert_eq!(consensus_points("conflicting-pre-prepare"), Some(5));
        assert_eq!(consensus_points("future-buffer-full"), Some(1));
        for (reason, points) in BLAMED {
            assert_eq!(consensus_points(reason), Some(points));
        }
    }

    #[test]
    fn a_step_charges_each_sender_once_per_reason() {
        let mut step = StepCharges::default();
        assert_eq!(step.charge(1, "future-buffer-full"), Some(1));
        assert_eq!(step.charge(1, "future-buffer-full"), None, "the same fault");
        assert_eq!(
            step.charge(2, "future-buffer-full"),
            Some(1),
            "another sender"
        );
        assert_eq!(step.charge(1, "bad-signature"), Some(5), "another reason");
        assert_eq!(step.charge(1, "old-view"), None, "honest peers meet it");
        let mut next = StepCharges::default();
        assert_eq!(next.charge(1, "future-buffer-full"), Some(1), "a new step");
    }
}
