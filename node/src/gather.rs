//! Fragment gathering: collecting k fragments of a block from the validators so
//! its pruned body can be rebuilt (for catch-up and for the HTTP API).
//!
//! One gathering per height, shared by everyone waiting for that height; at most
//! [`GatherLimits::gatherings_max`] at once, and each ends when it holds k
//! fragments, when every peer asked has answered, or at its deadline, whichever
//! comes first. Every fragment is checked against the block's commitment (from this
//! node's store, so trusted) before it is kept: a fragment that fails its proof
//! blames the peer that sent it. A peer that answered "busy" is not asked again for
//! [`BUSY_REST`].
//!
//! The room owns no sockets and no store: the event loop sends the requests it
//! names, reports each answer, and hands finished gatherings to their waiters
//! (rebuilding the body is theirs to do, with `coding::reconstruct`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use mosaic_storage::{Fragment, FragmentCommitment};

/// How long a peer that answered "busy" is left out of new gatherings.
pub const BUSY_REST: Duration = Duration::from_secs(1);

/// The limits of the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherLimits {
    /// Gatherings in flight at most.
    pub gatherings_max: usize,
    /// How long a gathering waits for answers.
    pub timeout: Duration,
}

/// What a peer answered to a fragment request.
#[derive(Debug)]
pub enum Answer {
    /// Its fragment, or `None` if it has none at that height.
    Fragment(Option<Fragment>),
    /// No usable answer (an error, a failed stream, a timeout).
    Failed,
    /// It is serving this node as much as it will now.
    Busy,
}

/// What became of a request to gather a height.
#[derive(Debug)]
pub enum Start<W> {
    /// The height is being gathered already: the waiter joined.
    Joined,
    /// Too many gatherings: the waiter is handed back.
    Full(W),
    /// Ask these peers for their fragment of the height, reporting each answer
    /// (or a failure to send) through [`Gather::arrived`].
    Ask(Vec<PeerId>),
}

/// A finished gathering: the verified fragments (at least k unless too few peers
/// answered in time), and who waits for them.
#[derive(Debug)]
pub struct Done<W> {
    /// The height.
    pub height: u64,
    /// The block's commitment (every fragment checked against it).
    pub commitment: FragmentCommitment,
    /// Verified fragments, by ascending index.
    pub fragments: Vec<Fragment>,
    /// Whoever asked.
    pub waiters: Vec<W>,
}

#[derive(Debug)]
struct Gathering<W> {
    commitment: FragmentCommitment,
    fragments: BTreeMap<u32, Fragment>,
    outstanding: usize,
    deadline: Instant,
    waiters: Vec<W>,
}

impl<W> Gathering<W> {
    fn is_done(&self, now: Instant) -> bool {
        self.fragments.len() >= self.commitment.params.k()
            || self.outstanding == 0
            || self.deadline <= now
    }
}

/// Gatherings in flight.
#[derive(Debug)]
pub struct Gather<W> {
    limits: GatherLimits,
    gatherings: BTreeMap<u64, Gathering<W>>,
    /// Peers that answered "busy", left out until then.
    resting: HashMap<PeerId, Instant>,
}

impl<W> Gather<W> {
    /// No gatherings.
    pub fn new(limits: GatherLimits) -> Self {
        Gather {
            limits,
            gatherings: BTreeMap::new(),
            resting: HashMap::new(),
        }
    }

    /// Whether `height` is being gathered.
    pub fn is_gathering(&self, height: u64) -> bool {
        self.gatherings.contains_key(&height)
    }

    /// Gathers the fragments of `height` for `waiter`: `own` is this node's own
    /// fragment if it has one, `peers` the validators that could be asked.
    pub fn start(
        &mut self,
        height: u64,
        commitment: FragmentCommitment,
        own: Option<Fragment>,
        peers: &[PeerId],
        waiter: W,
        now: Instant,
    ) -> Start<W> {
        if let Some(g) = self.gatherings.get_mut(&height) {
            g.waiters.push(waiter);
            return Start::Joined;
        }
        if self.gatherings.len() >= self.limits.gatherings_max {
            return Start::Full(waiter);
        }
        self.resting.retain(|_, until| *until > now);
        let ask: Vec<PeerId> = peers
            .iter()
            .filter(|p| !self.resting.contains_key(*p))
            .copied()
            .collect();
        let mut fragments = BTreeMap::new();
        if let Some(own) = own.and_then(|f| f.check(&commitment).ok()) {
            let own = own.into_fragment();
            fragments.insert(own.index, own);
        }
        self.gatherings.insert(
            height,
            Gathering {
                commitment,
                fragments,
                outstanding: ask.len(),
                deadline: now + self.limits.timeout,
                waiters: vec![waiter],
            },
        );
        Start::Ask(ask)
    }

    /// `peer` answered the request for `height`; returns why to charge it, and how
    /// many points, if its fragment fails its proof.
    pub fn arrived(
        &mut self,
        height: u64,
        peer: PeerId,
        answer: Answer,
        now: Instant,
    ) -> Option<(&'static str, u32)> {
        if let Answer::Busy = answer {
            self.resting.insert(peer, now + BUSY_REST);
        }
        let g = self.gatherings.get_mut(&height)?;
        g.outstanding = g.outstanding.saturating_sub(1);
        let Answer::Fragment(Some(fragment)) = answer else {
            return None;
        };
        match fragment.check(&g.commitment) {
            Ok(checked) => {
                let fragment = checked.into_fragment();
                g.fragments.insert(fragment.index, fragment);
                None
            }
            Err(e) => {
                tracing::warn!(%peer, height, error = %e, "peer sent a bad fragment");
                Some(("bad-fragment", 10))
            }
        }
    }

    /// Takes the gatherings that are done at `now` (enough fragments, every
    /// answer in, or past the deadline).
    pub fn take_done(&mut self, now: Instant) -> Vec<Done<W>> {
        let heights: Vec<u64> = self
            .gatherings
            .iter()
            .filter(|(_, g)| g.is_done(now))
            .map(|(h, _)| *h)
            .collect();
        heights
            .into_iter()
            .filter_map(|height| {
                let g = self.gatherings.remove(&height)?;
                Some(Done {
                    height,
                    commitment: g.commitment,
                    fragments: g.fragments.into_values().collect(),
                    waiters: g.waiters,
                })
            })
            .collect()
    }

    /// Gatherings in flight.
    pub fn len(&self) -> usize {
        self.gatherings.len()
    }

    /// Whether no gathering is in flight.
    pub fn is_empty(&self) -> bool {
        self.gatherings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use mosaic_storage::coding;

    use super::*;

    const LIMITS: GatherLimits = GatherLimits {
        gatherings_max: 2,
        timeout: Duration::from_secs(5),
    };

    /// A body coded for k = 2 of n = 4, and its fragments.
    fn coded() -> (FragmentCommitment, Vec<Fragment>) {
        let encoded = coding::encode(b"a block body of some length, for gathering", 2, 4).unwrap();
        (encoded.commitment(), encoded.fragments())
    }

    fn peers(count: usize) -> Vec<PeerId> {
        (0..count).map(|_| PeerId::random()).collect()
    }

    fn asked(start: Start<u32>) -> Vec<PeerId> {
        match start {
            Start::Ask(peers) => peers,
            other => panic!("expected peers to ask, got {other:?}"),
        }
    }

    #[test]
    fn k_verified_fragments_finish_a_gathering_for_every_waiter() {
        let (commitment, fragments) = coded();
        let p = peers(3);
        let mut gather = Gather::new(LIMITS);
        let now = Instant::now();
        let ask = asked(gather.start(7, commitment, Some(fragments[0].clone()), &p, 1, now));
        assert_eq!(ask, p);
        assert!(matches!(
            gather.start(7, commitment, None, &p, 2, now),
            Start::Joined
        ));
        assert!(gather.take_done(now).is_empty());
        assert_eq!(
            gather.arrived(7, p[0], Answer::Fragment(Some(fragments[1].clone())), now),
            None
        );
        let done = gather.take_done(now);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].waiters, vec![1, 2]);
        let indices: Vec<u32> = done[0].fragments.iter().map(|f| f.index).collect();
        assert_eq!(indices, vec![0, 1]);
        let body = coding::reconstruct(&commitment, done[0].fragments.clone())
            .unwrap()
            .body;
        assert_eq!(body, b"a block body of some length, for gathering");
        assert!(gather.is_empty());
        // A late answer for a finished gathering is dropped.
        assert_eq!(
            gather.arrived(7, p[1], Answer::Fragment(Some(fragments[2].clone())), now),
            None
        );
    }

    #[test]
    fn a_fragment_that_fails_its_proof_blames_its_sender_and_is_not_kept() {
        let (commitment, fragments) = coded();
        let p = peers(2);
        let mut gather = Gather::new(LIMITS);
        let now = Instant::now();
        asked(gather.start(3, commitment, None, &p, 1, now));
        let mut forged = fragments[1].clone();
        forged.shard[0] ^= 0xFF;
        assert_eq!(
            gather.arrived(3, p[0], Answer::Fragment(Some(forged)), now),
            Some(("bad-fragment", 10))
        );
        assert_eq!(gather.arrived(3, p[1], Answer::Failed, now), None);
        // Every answer is in: done, with what it has (too few to rebuild).
        let done = gather.take_done(now);
        assert_eq!(done.len(), 1);
        assert!(done[0].fragments.is_empty());
    }

    #[test]
    fn an_own_fragment_is_checked_too_and_the_deadline_ends_a_gathering() {
        let (commitment, fragments) = coded();
        let p = peers(3);
        let mut gather = Gather::new(LIMITS);
        let now = Instant::now();
        let mut corrupt = fragments[0].clone();
        corrupt.shard[0] ^= 1;
        asked(gather.start(9, commitment, Some(corrupt), &p, 1, now));
        assert!(
            gather
                .take_done(now + LIMITS.timeout - Duration::from_millis(1))
                .is_empty()
        );
        let done = gather.take_done(now + LIMITS.timeout);
        assert_eq!(done.len(), 1);
        assert!(
            done[0].fragments.is_empty(),
            "a corrupt own fragment is not kept"
        );
    }

    #[test]
    fn gatherings_are_bounded_and_busy_peers_rest() {
        let (commitment, _) = coded();
        let p = peers(3);
        let mut gather = Gather::new(LIMITS);
        let now = Instant::now();
        asked(gather.start(1, commitment, None, &p, 1, now));
        asked(gather.start(2, commitment, None, &p, 2, now));
        assert!(matches!(
            gather.start(3, commitment, None, &p, 3, now),
            Start::Full(3)
        ));
        assert_eq!(gather.arrived(1, p[0], Answer::Busy, now), None);
        for peer in &p[1..] {
            gather.arrived(1, *peer, Answer::Failed, now);
        }
        assert_eq!(gather.take_done(now).len(), 1);
        assert_eq!(gather.len(), 1);
        let ask = asked(gather.start(3, commitment, None, &p, 3, now));
        assert_eq!(ask, p[1..].to_vec(), "the busy peer rests");
        gather.take_done(now + LIMITS.timeout);
        let ask = asked(gather.start(4, commitment, None, &p, 4, now + BUSY_REST));
        assert_eq!(ask, p, "and is asked again after its rest");
    }
}
