//! The scrub: a background task that keeps this validator's own fragment of every
//! committed block present and intact, for the life of the chain.
//!
//! It walks the own fragments oldest to newest, reads each and checks it against
//! its block's commitment ([`Store::own_fragment_state`]), and repairs every one
//! that is missing or corrupt with [`Store::repair`]: from the body while the body
//! is still kept, otherwise from k fragments of peers, each checked against the
//! commitment and the rebuilt body re-encoded and compared before this validator's
//! fragment is re-derived from it. After a full pass it rests for
//! [`ScrubConfig::pass_pause`] and starts again at height 1.
//!
//! Reads are rate limited in bytes per second ([`ScrubConfig::bytes_per_second`]),
//! so a long chain costs the node a bounded share of its disk. All store work runs
//! on blocking threads, one batch at a time; the event loop is only asked for peers'
//! fragments ([`PeerFragments`]), through the same channel the HTTP API uses.
//!
//! The room is generic over the store's [`Schema`] and over where peers' fragments
//! come from, so it is tested with a plain store and no swarm.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mosaic_storage::{Fragment, FragmentState, Schema, Store, StoreError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::Command;

/// Heights checked per blocking batch at most.
const BATCH_HEIGHTS_MAX: u64 = 256;
/// A rest shorter than this is carried over to the next batch (a sleep per tiny
/// fragment would cost more than the reads).
const REST_MIN: Duration = Duration::from_millis(20);
/// How long one request for peers' fragments may take.
const PEER_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// What the scrub does and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Whether the scrub runs.
    pub enabled: bool,
    /// Fragment bytes read per second at most (repairs count what they read too).
    pub bytes_per_second: u64,
    /// Rest between the end of a pass and the start of the next.
    pub pass_pause: Duration,
}

/// The scrub's metrics (shared with [`crate::metrics::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct ScrubMetrics {
    /// Own fragments read and checked.
    pub checked: Counter,
    /// Own fragments found missing or corrupt.
    pub missing: Counter,
    /// Own fragments re-derived and stored.
    pub repaired: Counter,
    /// Repairs that failed (too few good fragments from peers, for now).
    pub failed: Counter,
    /// The height the scrub is at.
    pub position: Gauge,
    /// Full passes done.
    pub passes: Counter,
    /// Heights found bad and not repaired yet (for the status report).
    pub unrepaired: crate::overview::Unrepaired,
}

/// Where the fragments of peers come from: the event loop's fragment gathering in
/// the node, a fixed set in tests.
pub trait PeerFragments: Send + Sync + 'static {
    /// Fragments of the block at `height` from peers, each checked against the
    /// stored commitment (the store checks them again); empty if none came.
    fn fetch(&self, height: u64) -> impl Future<Output = Vec<Fragment>> + Send;
}

/// Peers' fragments gathered by the event loop ([`Command::Fragments`]).
#[derive(Debug, Clone)]
pub struct GatheredByNode {
    commands: mpsc::Sender<Command>,
}

impl GatheredByNode {
    /// Asks through the event loop's command channel.
    pub fn new(commands: mpsc::Sender<Command>) -> Self {
        GatheredByNode { commands }
    }
}

impl PeerFragments for GatheredByNode {
    async fn fetch(&self, height: u64) -> Vec<Fragment> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Fragments { height, reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        tokio::time::timeout(PEER_FETCH_TIMEOUT, answer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }
}

/// How one height was found.
#[derive(Debug)]
enum Found {
    Good(u64),
    Bad(String),
    Nothing,
}

/// Why a repair failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// The store refused (too few good fragments, a read error, a failed write).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A blocking task did not finish (the runtime is shutting down).
    #[error("scrub task stopped: {0}")]
    Task(String),
}

/// The scrub of one store.
pub struct Scrub<S: Schema, P> {
    store: Arc<Store<S>>,
    peers: P,
    config: ScrubConfig,
    metrics: ScrubMetrics,
    /// The next height to check.
    position: u64,
    /// Rest owed by the rate limit and not yet taken.
    rest_owed: Duration,
}

impl<S: Schema, P> std::fmt::Debug for Scrub<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrub")
            .field("config", &self.config)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl<S, P> Scrub<S, P>
where
    S: Schema + 'static,
    P: PeerFragments,
{
    /// A scrub starting at height 1.
    pub fn new(store: Arc<Store<S>>, peers: P, config: ScrubConfig, metrics: ScrubMetrics) -> Self {
        Scrub {
            store,
            peers,
            config,
            metrics,
            position: 1,
            rest_owed: Duration::ZERO,
        }
    }

    /// The next height to check.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Runs passes until `shutdown` turns true (or its sender is gone).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if !self.config.enabled {
            return;
        }
        let damage = self.store.open_damage();
        if damage.is_degraded() {
            tracing::warn!(
                ?damage,
                "store opened degraded: segment files are shorter than committed; the scrub re-derives the lost fragments"
            );
        }
        loop {
            let rest = match self.step().await {
                Ok(Some(rest)) => rest,
                Ok(None) => {
                    self.metrics.passes.inc();
                    self.metrics.unrepaired.pass_done();
                    self.config.pass_pause
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scrub step failed; retrying");
                    Duration::from_secs(1)
                }
            };
            if rest.is_zero() {
                if *shutdown.borrow() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                changed = shutdown.wait_for(|stop| *stop) => {
                    let _ = changed;
                    return;
                }
            }
        }
    }

    /// Checks one batch of heights from the current position and repairs what it
    /// finds missing or corrupt. `Ok(Some(rest))`: the pass goes on after resting
    /// that long; `Ok(None)`: the pass is done and the position is back at 1.
    pub async fn step(&mut self) -> Result<Option<Duration>, ScrubError> {
        let store = self.store.clone();
        let from = self.position;
        let budget = self.batch_bytes();
        let (tip, found) = tokio::task::spawn_blocking(move || check_batch(&store, from, budget))
            .await
            .map_err(|e| ScrubError::Task(e.to_string()))??;
        if found.is_empty() || from > tip {
            self.position = 1;
            self.metrics.position.set(0);
            return Ok(None);
        }
        let mut bytes = 0u64;
        for (height, state) in found {
            self.position = height + 1;
            self.metrics
                .position
                .set(i64::try_from(height).unwrap_or(i64::MAX));
            match state {
                Found::Nothing => {}
                Found::Good(read) => {
                    self.metrics.checked.inc();
                    self.metrics.unrepaired.good(height);
                    bytes += read;
                }
                Found::Bad(reason) => {
                    self.metrics.checked.inc();
                    self.metrics.missing.inc();
                    tracing::warn!(height, %reason, "own fragment missing or corrupt: repairing");
                    match self.repair(height).await {
                        Ok(source) => {
                            self.metrics.repaired.inc();
                            self.metrics.unrepaired.good(height);
                            tracing::info!(height, source, "repaired own fragment");
                        }
                        Err(e) => {
                            self.metrics.failed.inc();
                            self.metrics.unrepaired.failed(height);
                            tracing::warn!(height, error = %e, "cannot repair own fragment yet; the next pass retries");
                        }
                    }
                }
            }
        }
        Ok(Some(self.rest_for(bytes)))
    }

    /// Re-derives the own fragment at `height`: from the stored body, else from
    /// peers' fragments. Returns where it came from.
    async fn repair(&mut self, height: u64) -> Result<&'static str, ScrubError> {
        let store = self.store.clone();
        let from_body = tokio::task::spawn_blocking(move || match store.body(height) {
            Ok(Some(_)) => store.repair(height, |_| None).map(|_| true),
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| ScrubError::Task(e.to_string()))??;
        if from_body {
            return Ok("body");
        }
        let fragments = self.peers.fetch(height).await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.repair(height, |index| {
                fragments.iter().find(|f| f.index == index).cloned()
            })
        })
        .await
        .map_err(|e| ScrubError::Task(e.to_string()))??;
        Ok("peers")
    }

    /// Bytes one batch may read: a tenth of a second's worth, at least 64 KiB.
    fn batch_bytes(&self) -> u64 {
        (self.config.bytes_per_second / 10).max(64 * 1024)
    }

    /// The rest owed for having read `bytes`, paid once it adds up to
    /// [`REST_MIN`].
    fn rest_for(&mut self, bytes: u64) -> Duration {
        let rate = self.config.bytes_per_second.max(1);
        self.rest_owed += Duration::from_secs_f64(bytes as f64 / rate as f64);
        if self.rest_owed >= REST_MIN {
            std::mem::take(&mut self.rest_owed)
        } else {
            Duration::ZERO
        }
    }
}

/// Reads heights from `from` up to the tip until `budget` bytes or
/// [`BATCH_HEIGHTS_MAX`] heights. Returns the tip and what each height holds.
fn check_batch<S: Schema>(
    store: &Store<S>,
    from: u64,
    budget: u64,
) -> Result<(u64, Vec<(u64, Found)>), StoreError> {
    let tip = store.tip()?.unwrap_or(0);
    let mut out = Vec::new();
    let mut bytes = 0u64;
    let mut height = from.max(1);
    while height <= tip && (out.len() as u64) < BATCH_HEIGHTS_MAX && bytes < budget {
        let found = match store.own_fragment_state(height)? {
            FragmentState::NoBlock => Found::Nothing,
            FragmentState::Good { bytes: read } => {
                bytes += read;
                Found::Good(read)
            }
            FragmentState::Missing => Found::Bad("missing".into()),
            FragmentState::Corrupt { reason } => Found::Bad(reason),
        };
        out.push((height, found));
        height += 1;
    }
    Ok((tip, out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use mosaic_crypto::Hash;
    use mosaic_storage::{CommittedBlock, StoreConfig, coding, placement};
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    const K: usize = 2;
    const N: usize = 4;

    struct Plain;

    impl Schema for Plain {
        type Header = (u64, Hash);
        type Certificate = u64;
        type AccountKey = u64;
        type Account = u64;
        type SafetyRecord = u64;
        type TxRecord = u64;
    }

    fn body(height: u64) -> Vec<u8> {
        (0..2_000 + height as usize)
            .map(|i| (i as u64 ^ height) as u8)
            .collect()
    }

    fn block(height: u64, validator: u32) -> CommittedBlock<Plain> {
        let body = body(height);
        let encoded = coding::encode(&body, K, N).unwrap();
        let own = placement::fragment_of(validator, height, N as u16);
        CommittedBlock {
            height,
            header: (height, Hash::of(&body)),
            certificate: height,
            commitment: encoded.commitment(),
            own_fragment: encoded.fragment(own as usize).unwrap(),
            body,
            account_changes: Vec::new(),
            tx_ids: Vec::new(),
            tx_records: Vec::new(),
            outcome_root: [0; 32],
            live_ids: Vec::new(),
        }
    }

    /// Peers holding every fragment, or one wrong one per height.
    struct Peers {
        forged: bool,
        asked: std::sync::Mutex<Vec<u64>>,
    }

    impl PeerFragments for Arc<Peers> {
        async fn fetch(&self, height: u64) -> Vec<Fragment> {
            self.asked.lock().unwrap().push(height);
            let encoded = coding::encode(&body(height), K, N).unwrap();
            let mut out: Vec<Fragment> = (0..N).filter_map(|i| encoded.fragment(i)).collect();
            if self.forged {
                for f in &mut out {
                    f.shard[0] ^= 1;
                }
            }
            out
        }
    }

    fn scrub(
        store: &Arc<Store<Plain>>,
        peers: &Arc<Peers>,
        bytes_per_second: u64,
    ) -> Scrub<Plain, Arc<Peers>> {
        Scrub::new(
            store.clone(),
            peers.clone(),
            ScrubConfig {
                enabled: true,
                bytes_per_second,
                pass_pause: Duration::from_millis(10),
            },
            ScrubMetrics::default(),
        )
    }

    async fn pass(scrub: &mut Scrub<Plain, Arc<Peers>>) -> Duration {
        let mut rested = Duration::ZERO;
        for _ in 0..10_000 {
            match scrub.step().await.unwrap() {
                Some(rest) => rested += rest,
                None => return rested,
            }
        }
        panic!("a pass did not end");
    }

    fn counts(m: &ScrubMetrics) -> [u64; 4] {
        let c = |c: &Counter| c.get();
        [c(&m.checked), c(&m.missing), c(&m.repaired), c(&m.failed)]
    }

    fn open(window: u64) -> (tempfile::TempDir, Arc<Store<Plain>>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::<Plain>::open(
            &dir.path().join("s.redb"),
            StoreConfig {
                validator_index: 1,
                body_window_blocks: window,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        for h in 1..=20 {
            store.commit_block(block(h, 1)).unwrap();
        }
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn repairs_missing_fragments_from_the_body_or_from_peers() {
        let (_dir, store) = open(5);
        for h in [2, 9, 18] {
            store.forget_own_fragment(h).unwrap();
        }
        let peers = Arc::new(Peers {
            forged: false,
            asked: Default::default(),
        });
        let mut scrub = scrub(&store, &peers, 1 << 30);
        pass(&mut scrub).await;
        assert_eq!(counts(&scrub.metrics), [20, 3, 3, 0]);
        assert_eq!(scrub.position(), 1, "a pass ends back at the start");
        // 18 is inside the body window: derived from the body, peers not asked.
        assert_eq!(*peers.asked.lock().unwrap(), vec![2, 9]);
        assert!(store.missing_fragments(1, 20).unwrap().is_empty());
        for h in 1..=20 {
            assert_eq!(
                store.own_fragment(h).unwrap(),
                Some(block(h, 1).own_fragment)
            );
        }
        // A second pass finds nothing to do.
        pass(&mut scrub).await;
        assert_eq!(counts(&scrub.metrics), [40, 3, 3, 0]);
    }

    #[tokio::test]
    async fn forged_fragments_from_peers_never_become_the_own_fragment() {
        let (_dir, store) = open(1);
        store.forget_own_fragment(3).unwrap();
        let peers = Arc::new(Peers {
            forged: true,
            asked: Default::default(),
        });
        let mut scrub = scrub(&store, &peers, 1 << 30);
        pass(&mut scrub).await;
        assert_eq!(counts(&scrub.metrics), [20, 1, 0, 1]);
        assert_eq!(store.missing_fragments(1, 20).unwrap(), vec![3]);
        // What the status report says: height 3 unrepaired, until a repair works.
        assert_eq!(scrub.metrics.unrepaired.ranges(8), (vec![[3, 3]], false));
        scrub.peers = Arc::new(Peers {
            forged: false,
            asked: Default::default(),
        });
        pass(&mut scrub).await;
        assert_eq!(counts(&scrub.metrics), [40, 2, 1, 1]);
        assert_eq!(scrub.metrics.unrepaired.ranges(8), (vec![], false));
    }

    #[tokio::test]
    async fn reads_are_paced_by_the_byte_rate() {
        let (_dir, store) = open(100);
        let peers = Arc::new(Peers {
            forged: false,
            asked: Default::default(),
        });
        let fragment_bytes: u64 = (1..=20)
            .map(|h| {
                mosaic_crypto::codec::encode(&block(h, 1).own_fragment)
                    .unwrap()
                    .len() as u64
            })
            .sum();
        // 4 KiB/s: the pass owes about fragment_bytes / 4096 seconds of rest.
        let mut scrub = scrub(&store, &peers, 4096);
        let rested = pass(&mut scrub).await;
        let expected = Duration::from_secs_f64(fragment_bytes as f64 / 4096.0);
        assert!(
            rested + REST_MIN >= expected && rested <= expected + REST_MIN,
            "rested {rested:?}, expected about {expected:?}"
        );
    }

    #[tokio::test]
    async fn stops_when_told() {
        let (_dir, store) = open(100);
        let peers = Arc::new(Peers {
            forged: false,
            asked: Default::default(),
        });
        let scrub = scrub(&store, &peers, 1024);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(scrub.run(stopped));
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the scrub stops within 5 s")
            .unwrap();
    }
}
