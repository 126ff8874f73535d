//! Admission's measure of queued work: the pending transfers a block could take
//! (each next in line for its sender) against the rate the chain commits them.
//!
//! Past a bound the API refuses new submissions with 503 and `Retry-After`, so that
//! offered load above what the validators commit is shed at the door instead of
//! queued: a transfer that is admitted waits at most about `seconds_max` of commits
//! before its block, and latency under overload stays near latency at capacity.
//!
//! Transfers still waiting for their signature check (gossip from the other
//! validators, submissions in the checking queue) count too: under overload that
//! queue is where work piles up first, and each of them becomes ready work once
//! checked, so a bound on the pool alone would still let latency grow there.
//!
//! Only transfers that are ready count. A client that sends nonces with gaps (which
//! no block can take until the gap is filled) fills the pool's own limits, not this
//! one, so it cannot make the node refuse everyone else's executable transfers.
//!
//! The rate is what the chain committed over the last [`RATE_WINDOW`]; while the
//! queue is at its bound, blocks are full and that rate is the validators' capacity.
//! The bound never falls below `floor` (one full block), so an idle chain, or one
//! that has just stalled, still takes a block's worth.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back commits count toward the rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(4);

/// Commit samples kept at most (one per executed block; older ones fall out of the
/// window anyway).
const SAMPLES_MAX: usize = 4_096;

/// Why a submission is shed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overloaded {
    /// Ready transfers queued (including those admitted since the last block) and
    /// transfers waiting for their signature check.
    pub queued: usize,
    /// The bound.
    pub limit: usize,
    /// The committed rate the bound comes from, transfers per second.
    pub rate: f64,
}

/// The admission backlog.
#[derive(Debug, Clone)]
pub struct Backlog {
    seconds_max: f64,
    floor: usize,
    /// (when a block executed, its transfers), oldest first.
    commits: VecDeque<(Instant, u64)>,
    /// Ready transfers in the pool when the last block executed.
    ready: usize,
    /// Transfers admitted through the API since then.
    admitted_since: usize,
}

impl Default for Backlog {
    /// A backlog that never sheds.
    fn default() -> Self {
        Backlog::new(0.0, 1)
    }
}

impl Backlog {
    /// A backlog that holds about `seconds_max` of commits, and never less than
    /// `floor` transfers. `seconds_max` of 0 turns shedding off.
    pub fn new(seconds_max: f64, floor: usize) -> Self {
        Backlog {
            seconds_max: seconds_max.max(0.0),
            floor: floor.max(1),
            commits: VecDeque::new(),
            ready: 0,
            admitted_since: 0,
        }
    }

    /// A block with `count` transfers executed at `at`, leaving `ready` transfers
    /// ready in the pool.
    pub fn executed(&mut self, at: Instant, count: usize, ready: usize) {
        if self.commits.len() >= SAMPLES_MAX {
            self.commits.pop_front();
        }
        self.commits.push_back((at, count as u64));
        self.ready = ready;
        self.admitted_since = 0;
    }

    /// Transfers queued for blocks: ready in the pool when the last block executed,
    /// and admitted since.
    pub fn queued(&self) -> usize {
        self.ready.saturating_add(self.admitted_since)
    }

    /// `count` transfers were admitted through the API.
    pub fn admitted(&mut self, count: usize) {
        self.admitted_since = self.admitted_since.saturating_add(count);
    }

    /// Transfers per second committed over the [`RATE_WINDOW`] before `now`.
    pub fn rate(&mut self, now: Instant) -> f64 {
        let since = now.checked_sub(RATE_WINDOW);
        while let Some(&(at, _)) = self.commits.front() {
            match since {
                Some(since) if at < since => {
                    self.commits.pop_front();
                }
                _ => break,
            }
        }
        let committed: u64 = self.commits.iter().map(|(_, n)| n).sum();
        committed as f64 / RATE_WINDOW.as_secs_f64()
    }

    /// The bound at `now`: about `seconds_max` of commits, at least the floor.
    pub fn limit(&mut self, now: Instant) -> usize {
        let by_rate = self.rate(now) * self.seconds_max;
        // Saturating float-to-int conversion; the rate is finite and non-negative.
        (by_rate as usize).max(self.floor)
    }

    /// Whether a submission at `now` is shed, and why, with `verifying` transfers
    /// waiting for their signature check.
    pub fn refusal(&mut self, now: Instant, verifying: usize) -> Option<Overloaded> {
        if self.seconds_max == 0.0 {
            return None;
        }
        let queued = self
            .ready
            .saturating_add(self.admitted_since)
            .saturating_add(verifying);
        let limit = self.limit(now);
        (queued >= limit).then(|| Overloaded {
            queued,
            limit,
            rate: self.rate(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_chain_takes_the_floor_and_no_more() {
        let now = Instant::now();
        let mut b = Backlog::new(1.0, 100);
        assert_eq!(b.refusal(now, 0), None);
        b.admitted(99);
        assert_eq!(b.refusal(now, 0), None);
        b.admitted(1);
        let shed = b.refusal(now, 0).unwrap();
        assert_eq!((shed.queued, shed.limit), (100, 100));
    }

    #[test]
    fn the_bound_follows_the_committed_rate() {
        let t0 = Instant::now();
        let mut b = Backlog::new(1.0, 100);
        // 10 blocks of 2,000 over the last 4 s: 5,000/s, a bound of 5,000.
        for i in 0..10 {
            b.executed(t0 + Duration::from_millis(400 * i), 2_000, 1_000);
        }
        let now = t0 + Duration::from_millis(3_900);
        assert_eq!(b.rate(now), 5_000.0);
        assert_eq!(b.limit(now), 5_000);
        b.admitted(3_999);
        assert_eq!(b.refusal(now, 0), None);
        b.admitted(1);
        assert_eq!(b.refusal(now, 0).map(|o| o.queued), Some(5_000));
        // A block resets what was admitted since to what is ready after it.
        b.executed(now, 2_000, 500);
        assert_eq!(b.refusal(now, 0), None);
    }

    #[test]
    fn a_stalled_chain_falls_back_to_the_floor() {
        let t0 = Instant::now();
        let mut b = Backlog::new(2.0, 100);
        b.executed(t0, 10_000, 5_000);
        assert_eq!(b.limit(t0), 5_000);
        // Nothing commits for longer than the window: the rate is 0.
        let later = t0 + RATE_WINDOW + Duration::from_millis(1);
        assert_eq!(b.rate(later), 0.0);
        assert_eq!(b.limit(later), 100);
        assert!(
            b.refusal(later, 0).is_some(),
            "5,000 ready against a floor of 100"
        );
    }

    #[test]
    fn transfers_waiting_for_their_check_count_as_queued() {
        let now = Instant::now();
        let mut b = Backlog::new(1.0, 100);
        b.admitted(40);
        assert_eq!(b.refusal(now, 59), None);
        let shed = b.refusal(now, 60).unwrap();
        assert_eq!((shed.queued, shed.limit), (100, 100));
        // Once checked they are ready work in the next block's count instead.
        b.executed(now, 0, 50);
        assert_eq!(b.refusal(now, 49), None);
        assert!(b.refusal(now, 50).is_some());
    }

    #[test]
    fn zero_seconds_turns_shedding_off() {
        let now = Instant::now();
        let mut b = Backlog::new(0.0, 1);
        b.admitted(1_000_000);
        assert_eq!(b.refusal(now, 1_000_000), None);
    }

    #[test]
    fn samples_stay_bounded() {
        let now = Instant::now();
        let mut b = Backlog::new(1.0, 1);
        for _ in 0..SAMPLES_MAX + 10 {
            b.executed(now, 1, 0);
        }
        assert_eq!(b.commits.len(), SAMPLES_MAX);
    }
}
