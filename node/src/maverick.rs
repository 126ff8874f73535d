//! Byzantine behaviours for tests: a validator that runs the honest replica but
//! lies at the edges (what it sends, what it answers), so real-process tests can
//! show what the honest validators do about it.
//!
//! Compiled only with the `byzantine` cargo feature, which release builds do not
//! enable (the workspace's test build does, through a dev-dependency of the
//! `mosaic-testnet` crate). Without it [`Mode`] has no values and none of the
//! behaviours is compiled: the event loop's edge is always [`crate::edge::Honest`].
//!
//! | mode | what it does |
//! |------|--------------|
//! | `garbage` | undecodable frames on every protocol to every peer, twice a second |
//! | `equivocate` | as primary, a different valid block for the same (view, seq) to every other backup |
//! | `lie-height` | reports `u64::MAX` as its height, answers block requests with errors |
//! | `lie-height-bodies` | reports `u64::MAX`, answers block requests with bodies that fail the check |
//! | `flood-held` | maximal future-view PRE-PREPAREs it signs, on one key and on new keys |
//! | `replay` | re-sends old validly signed consensus frames at a high rate |
//! | `bad-fragments` | serves its fragments with a proof that does not match the shard, or withholds them |
//! | `silent` | stays connected, sends and answers nothing |
//! | `hoard` | as primary, keeps the transfers it admits from gossip (backups fetch them from its compact proposals) |
//! | `bad-supply` | hoards as `hoard`, and answers wants for them with the transfers out of order |
//! | `forge-answers` | honest consensus, lying API: forged balances, statuses and proofs to clients ([`crate::forge`]) |

use std::fmt;

/// A maverick mode (see the module docs).
#[cfg(feature = "byzantine")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Undecodable frames on every protocol.
    Garbage,
    /// Different valid PRE-PREPAREs for one (view, seq) to different backups.
    Equivocate,
    /// `u64::MAX` in status; block requests answered with errors.
    LieHeight,
    /// `u64::MAX` in status; block requests answered with bad bodies.
    LieHeightBodies,
    /// Maximal future-view PRE-PREPAREs, on one key and on new keys.
    FloodHeld,
    /// Old validly signed consensus frames re-sent at a high rate.
    Replay,
    /// Fragments served with proofs of other bytes, or withheld.
    BadFragments,
    /// Connected, but sends and answers nothing.
    Silent,
    /// As primary, does not gossip the transfers it admits.
    Hoard,
    /// Hoards, and answers wants with the wrong transfers.
    BadSupply,
    /// Forges what its API tells clients.
    ForgeAnswers,
}

/// A maverick mode: none exist in a build without the `byzantine` feature.
#[cfg(not(feature = "byzantine"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {}

/// The names `--maverick` accepts in a build with the `byzantine` feature.
pub const NAMES: [&str; 11] = [
    "garbage",
    "equivocate",
    "lie-height",
    "lie-height-bodies",
    "flood-held",
    "replay",
    "bad-fragments",
    "silent",
    "hoard",
    "bad-supply",
    "forge-answers",
];

/// Why a maverick mode cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// This binary was built without the `byzantine` feature.
    #[error(
        "this mosaic was built without the `byzantine` feature: Byzantine behaviours exist only in test builds (cargo nextest run --workspace builds them)"
    )]
    NotBuilt,
    /// No mode has this name.
    #[error("no maverick mode {0:?}: use one of {NAMES:?}")]
    Unknown(String),
}

impl Mode {
    /// The mode called `name` (one of [`NAMES`]).
    pub fn parse(name: &str) -> Result<Mode, ModeError> {
        if !NAMES.contains(&name) {
            return Err(ModeError::Unknown(name.to_string()));
        }
        #[cfg(feature = "byzantine")]
        {
            Ok(match name {
                "garbage" => Mode::Garbage,
                "equivocate" => Mode::Equivocate,
                "lie-height" => Mode::LieHeight,
                "lie-height-bodies" => Mode::LieHeightBodies,
                "flood-held" => Mode::FloodHeld,
                "replay" => Mode::Replay,
                "bad-fragments" => Mode::BadFragments,
                "hoard" => Mode::Hoard,
                "bad-supply" => Mode::BadSupply,
                "forge-answers" => Mode::ForgeAnswers,
                _ => Mode::Silent,
            })
        }
        #[cfg(not(feature = "byzantine"))]
        Err(ModeError::NotBuilt)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        #[cfg(feature = "byzantine")]
        {
            match self {
                Mode::Garbage => NAMES[0],
                Mode::Equivocate => NAMES[1],
                Mode::LieHeight => NAMES[2],
                Mode::LieHeightBodies => NAMES[3],
                Mode::FloodHeld => NAMES[4],
                Mode::Replay => NAMES[5],
                Mode::BadFragments => NAMES[6],
                Mode::Silent => NAMES[7],
                Mode::Hoard => NAMES[8],
                Mode::BadSupply => NAMES[9],
                Mode::ForgeAnswers => NAMES[10],
            }
        }
        #[cfg(not(feature = "byzantine"))]
        match self {}
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a [`flood`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FloodReport {
    /// Gossip messages of badly signed transfers published.
    pub gossip_published: u64,
    /// Fragment and block requests sent.
    pub requests_sent: u64,
    /// Answers received to them.
    pub answers: u64,
    /// Connections that were established, and closed.
    pub connections: u64,
    /// Connections closed.
    pub disconnections: u64,
    /// Dials that failed (a ban refuses them).
    pub dials_failed: u64,
}

/// A non-validator flooder: from a fresh identity, dials `addresses` (with their
/// `/p2p/` ids, as multiaddress text) of the validators of `chain` and, for `duration`, publishes gossip of
/// badly signed transfers and sends fragment and block requests in a loop.
#[cfg(feature = "byzantine")]
pub async fn flood(
    chain: mosaic_crypto::ChainId,
    addresses: Vec<String>,
    duration: std::time::Duration,
) -> Result<FloodReport, String> {
    let addresses = addresses
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|e| format!("{a:?} is not a multiaddress: {e}"))
        })
        .collect::<Result<Vec<libp2p::Multiaddr>, String>>()?;
    flooder::flood(chain, addresses, duration).await
}

/// Refused: this build has no Byzantine behaviours.
#[cfg(not(feature = "byzantine"))]
pub async fn flood(
    _chain: mosaic_crypto::ChainId,
    _addresses: Vec<String>,
    _duration: std::time::Duration,
) -> Result<FloodReport, String> {
    Err(ModeError::NotBuilt.to_string())
}

/// The API routes as a maverick of `mode` serves them: forged for
/// `forge-answers`, as they are otherwise.
#[cfg(feature = "byzantine")]
pub fn wrap_api(
    mode: Option<Mode>,
    router: axum::Router,
    shared: std::sync::Arc<std::sync::Mutex<crate::chain::Shared>>,
) -> axum::Router {
    match mode {
        Some(Mode::ForgeAnswers) => crate::forge::wrap(router, shared),
        _ => router,
    }
}

/// The API routes: no mode exists in this build.
#[cfg(not(feature = "byzantine"))]
pub fn wrap_api(
    _mode: Option<Mode>,
    router: axum::Router,
    _shared: std::sync::Arc<std::sync::Mutex<crate::chain::Shared>>,
) -> axum::Router {
    router
}

/// The event loop's edge for `mode`: [`crate::edge::Honest`] without one.
pub fn edge(
    mode: Option<Mode>,
    setup: crate::edge::EdgeSetup<'_>,
) -> Result<Box<dyn crate::edge::Edge>, String> {
    match mode {
        None => Ok(Box::new(crate::edge::Honest)),
        #[cfg(feature = "byzantine")]
        Some(mode) => Ok(Box::new(crate::maverick::Maverick::new(
            mode,
            setup.key,
            setup.validators,
            setup.index,
            setup.window,
            setup.payload_bytes_max,
        )?)),
        #[cfg(not(feature = "byzantine"))]
        Some(mode) => {
            let _ = setup;
            match mode {}
        }
    }
}

#[cfg(feature = "byzantine")]
pub use enabled::Maverick;

#[cfg(feature = "byzantine")]
mod enabled {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use mosaic_consensus::messages::Body;
    use mosaic_consensus::{
        Digest, Message, PrePrepare, ReplicaId, SeqNum, Signed, ValidatorSet, View,
    };
    use mosaic_crypto::{Hash, Keypair, codec};

    use super::Mode;
    use crate::block::{AfterParent, Block, Position};
    use crate::chain::Layout;
    use crate::edge::{Edge, TickContext};
    use crate::ledger::SignedTransfer;
    use crate::net::{SyncRequest, SyncResponse};
    use crate::proposal::Supply;

    /// Frames kept for `replay`, and their bytes at most.
    const REPLAY_FRAMES_MAX: usize = 512;
    const REPLAY_BYTES_MAX: usize = 64 * 1024 * 1024;
    /// Frames `replay` re-sends to each peer per tick (the loop ticks every 5 ms).
    const REPLAY_PER_TICK: usize = 4;
    /// How often `flood-held` sends its frames, and how many per peer each time.
    const FLOOD_PERIOD: Duration = Duration::from_millis(500);
    const FLOOD_FRAMES: u64 = 2;
    const GARBAGE_PERIOD: Duration = Duration::from_millis(500);

    /// A validator's Byzantine behaviour at the edges of the honest replica.
    pub struct Maverick {
        mode: Mode,
        key: Keypair,
        validators: ValidatorSet,
        index: u32,
        window: u64,
        payload_bytes_max: usize,
        /// `equivocate`: the other block proposed at each height.
        alternatives: BTreeMap<u64, Vec<u8>>,
        /// `replay`: consensus frames seen, oldest first.
        recorded: VecDeque<Arc<Vec<u8>>>,
        recorded_bytes: usize,
        replay_next: usize,
        last_burst: Instant,
        rounds: u64,
    }

    impl std::fmt::Debug for Maverick {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Maverick")
                .field("mode", &self.mode)
                .finish_non_exhaustive()
        }
    }

    impl Maverick {
        /// A maverick validator `index` of `validators` signing with `key`.
        pub fn new(
            mode: Mode,
            key: &Keypair,
            validators: ValidatorSet,
            index: u32,
            window: u64,
            payload_bytes_max: usize,
        ) -> Result<Maverick, String> {
            let key = Keypair::from_secret_bytes(key.secret_bytes())
                .map_err(|e| format!("maverick {mode}: cannot copy the validator key: {e}"))?;
            tracing::warn!(mode = %mode, "running as a Byzantine validator (test build)");
            Ok(Maverick {
                mode,
                key,
                validators,
                index,
                window,
                payload_bytes_max,
                alternatives: BTreeMap::new(),
                recorded: VecDeque::new(),
                recorded_bytes: 0,
                replay_next: 0,
                last_burst: Instant::now(),
                rounds: 0,
            })
        }

        /// Whether this node answers nothing and sends no consensus message.
        pub fn silent(&self) -> bool {
            self.mode == Mode::Silent
        }

        /// As primary, about to propose `txs` at `(seq, parent)`: `equivocate` builds
        /// a second valid block there, for every other backup.
        pub fn proposing(
            &mut self,
            layout: &Layout,
            (seq, parent): (SeqNum, Digest),
            view: View,
            after: AfterParent,
            txs: &[SignedTransfer],
        ) {
            if self.mode != Mode::Equivocate {
                return;
            }
            let position = Position {
                chain: layout.chain.clone(),
                height: seq.0,
                parent: parent.0,
            };
            // A prefix of a valid batch is valid (nonces only depend on earlier ones).
            let other = txs[..txs.len() / 2].to_vec();
            if let Ok((block, _)) = Block::build(
                &position,
                view.0,
                self.index,
                after,
                other,
                layout.data_shards,
                layout.total_shards,
            ) {
                self.alternatives.retain(|h, _| *h + 8 > seq.0);
                self.alternatives.insert(seq.0, block.to_bytes());
            }
        }

        /// A consensus frame this node is about to send to validator `to`: returns
        /// the frame to send instead (`None`: send nothing).
        pub fn outgoing(
            &mut self,
            to: usize,
            message: &Message,
            frame: Arc<Vec<u8>>,
        ) -> Option<Arc<Vec<u8>>> {
            match self.mode {
                Mode::Silent => None,
                Mode::Replay => {
                    self.record(&frame);
                    Some(frame)
                }
                Mode::Equivocate => Some(self.equivocated(to, message).unwrap_or(frame)),
                _ => Some(frame),
            }
        }

        /// `equivocate`: the other block's PRE-PREPARE for odd-numbered backups.
        fn equivocated(&self, to: usize, message: &Message) -> Option<Arc<Vec<u8>>> {
            let Message::PrePrepare { pre_prepare, .. } = message else {
                return None;
            };
            if pre_prepare.signer.0 != self.index || to.is_multiple_of(2) {
                return None;
            }
            let payload = self.alternatives.get(&pre_prepare.body.seq.0)?;
            let block = Block::from_bytes(payload).ok()?;
            let body = PrePrepare {
                digest: Digest(block.header.hash()),
                ..pre_prepare.body
            };
            let signed = self.sign(body)?;
            let message = Message::PrePrepare {
                pre_prepare: signed,
                payload: payload.clone(),
            };
            crate::proposal::consensus_frame(&message)
                .ok()
                .map(Arc::new)
        }

        /// Whether the transfers it admitted stay out of gossip for now.
        pub fn holds_gossip(&self, primary: bool) -> bool {
            primary && matches!(self.mode, Mode::Hoard | Mode::BadSupply)
        }

        /// What it answers to a want, given the honest `supply`.
        pub fn supply(&self, mut supply: Supply) -> Supply {
            if self.mode == Mode::BadSupply {
                if supply.txs.len() > 1 {
                    supply.txs.reverse();
                } else {
                    supply.txs.clear();
                }
            }
            supply
        }

        /// A consensus frame a validator sent this node.
        pub fn incoming(&mut self, frame: &[u8]) {
            if self.mode == Mode::Replay {
                self.record(&Arc::new(frame.to_vec()));
            }
        }

        fn record(&mut self, frame: &Arc<Vec<u8>>) {
            self.recorded_bytes += frame.len();
            self.recorded.push_back(frame.clone());
            while self.recorded.len() > REPLAY_FRAMES_MAX || self.recorded_bytes > REPLAY_BYTES_MAX
            {
                match self.recorded.pop_front() {
                    Some(old) => self.recorded_bytes -= old.len(),
                    None => break,
                }
            }
        }

        /// The answer to a sync request, given the honest one (`None`: no answer).
        pub fn answer(
            &mut self,
            request: &SyncRequest,
            honest: SyncResponse,
        ) -> Option<SyncResponse> {
            match (self.mode, request, honest) {
                (Mode::Silent, _, _) => None,
                (Mode::LieHeight | Mode::LieHeightBodies, SyncRequest::Status, _) => {
                    Some(SyncResponse::Status {
                        height: u64::MAX,
                        report: crate::overview::PeerReport::default(),
                    })
                }
                (Mode::LieHeight, SyncRequest::Blocks { .. }, _) => {
                    Some(SyncResponse::Error("no".into()))
                }
                (
                    Mode::LieHeightBodies,
                    SyncRequest::Blocks { .. },
                    SyncResponse::Blocks(mut b),
                ) => {
                    let empty = codec::encode(&Vec::<SignedTransfer>::new()).ok();
                    for block in &mut b {
                        block.body = empty.clone();
                    }
                    Some(SyncResponse::Blocks(b))
                }
                (Mode::BadFragments, SyncRequest::Fragment { .. }, honest) => {
                    self.rounds += 1;
                    match honest {
                        SyncResponse::Fragment(Some(mut fragment))
                            if self.rounds.is_multiple_of(2) =>
                        {
                            // The proof is the real one; the shard is not what it proves.
                            if let Some(byte) = fragment.shard.first_mut() {
                                *byte ^= 0xFF;
                            } else {
                                fragment.shard.push(0xFF);
                            }
                            Some(SyncResponse::Fragment(Some(fragment)))
                        }
                        _ => Some(SyncResponse::Fragment(None)),
                    }
                }
                (_, _, honest) => Some(honest),
            }
        }

        /// Called on every tick of the event loop: the behaviours that send on their own.
        pub fn tick(&mut self, ctx: TickContext<'_>) {
            match self.mode {
                Mode::Garbage => self.garbage(ctx),
                Mode::FloodHeld => self.flood(&ctx),
                Mode::Replay => self.replay(&ctx),
                _ => {}
            }
        }

        fn garbage(&mut self, ctx: TickContext<'_>) {
            if self.last_burst.elapsed() < GARBAGE_PERIOD {
                return;
            }
            self.last_burst = Instant::now();
            let junk = Arc::new(vec![0xA5u8; 333]);
            for to in 0..self.validators.len() {
                ctx.links.send(to, junk.clone());
            }
            for peer in ctx.connected.keys() {
                ctx.swarm
                    .behaviour_mut()
                    .sync
                    .send_request(peer, vec![0xA5u8; 333]);
            }
            let _ = ctx
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(ctx.topic.clone(), vec![0x5Au8; 77]);
        }

        /// The next view after `view` + 1 that this node leads.
        fn led_view(&self, view: View) -> View {
            let n = self.validators.len().max(1) as u64;
            let mut v = view.0 + 2;
            while v % n != u64::from(self.index) % n {
                v += 1;
            }
            View(v)
        }

        /// Signed future-view PRE-PREPAREs of maximal size: the first on the same
        /// (view, seq) every time, the others on a new seq each round.
        fn flood(&mut self, ctx: &TickContext<'_>) {
            if self.last_burst.elapsed() < FLOOD_PERIOD {
                return;
            }
            self.last_burst = Instant::now();
            self.rounds += 1;
            let view = self.led_view(ctx.view);
            let span = self.window.saturating_sub(2).max(1);
            for i in 0..FLOOD_FRAMES {
                let seq = if i == 0 {
                    ctx.tip + 2
                } else {
                    ctx.tip + 3 + (self.rounds * FLOOD_FRAMES + i) % span
                };
                let mut payload = vec![0u8; self.payload_bytes_max];
                let stamp = (self.rounds * FLOOD_FRAMES + i).to_le_bytes();
                payload[..stamp.len()].copy_from_slice(&stamp);
                let body = PrePrepare {
                    view,
                    seq: SeqNum(seq),
                    digest: Digest(Hash::of(&payload)),
                    parent: Digest(Hash::of(&seq.to_le_bytes())),
                };
                let Some(signed) = self.sign(body) else {
                    continue;
                };
                let message = Message::PrePrepare {
                    pre_prepare: signed,
                    payload,
                };
                if let Ok(bytes) = crate::proposal::consensus_frame(&message) {
                    self.send_to_others(ctx, Arc::new(bytes));
                }
            }
        }

        fn replay(&mut self, ctx: &TickContext<'_>) {
            if self.recorded.is_empty() {
                return;
            }
            for _ in 0..REPLAY_PER_TICK {
                self.replay_next = (self.replay_next + 1) % self.recorded.len();
                if let Some(frame) = self.recorded.get(self.replay_next).cloned() {
                    self.send_to_others(ctx, frame);
                }
            }
        }

        fn send_to_others(&self, ctx: &TickContext<'_>, frame: Arc<Vec<u8>>) {
            for to in 0..self.validators.len() {
                if to != self.index as usize {
                    ctx.links.send(to, frame.clone());
                }
            }
        }

        fn sign<T: Body>(&self, body: T) -> Option<Signed<T>> {
            let bytes = Signed::signing_bytes(&body).ok()?;
            let signature = self.key.sign(T::DOMAIN, self.validators.chain(), &bytes);
            Some(Signed {
                body,
                signer: ReplicaId(self.index),
                signature,
            })
        }
    }

    /// The hooks the driver calls, each one of the behaviours above.
    impl Edge for Maverick {
        fn proposing(
            &mut self,
            layout: &Layout,
            at: (SeqNum, Digest),
            view: View,
            after: AfterParent,
            txs: &[SignedTransfer],
        ) {
            Maverick::proposing(self, layout, at, view, after, txs);
        }

        fn outgoing(
            &mut self,
            to: usize,
            message: &Message,
            frame: Arc<Vec<u8>>,
        ) -> Option<Arc<Vec<u8>>> {
            Maverick::outgoing(self, to, message, frame)
        }

        fn incoming(&mut self, frame: &[u8]) {
            Maverick::incoming(self, frame);
        }

        fn holds_gossip(&self, primary: bool) -> bool {
            Maverick::holds_gossip(self, primary)
        }

        fn supply(&self, supply: Supply) -> Supply {
            Maverick::supply(self, supply)
        }

        fn answer(&mut self, request: &SyncRequest, honest: SyncResponse) -> Option<SyncResponse> {
            Maverick::answer(self, request, honest)
        }

        fn ticks(&self) -> bool {
            true
        }

        fn tick(&mut self, ctx: TickContext<'_>) {
            Maverick::tick(self, ctx);
        }
    }
}

#[cfg(feature = "byzantine")]
mod flooder {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, Swarm, noise, tcp, yamux};
    use mosaic_crypto::{ChainId, Keypair, Signature, codec};

    use super::FloodReport;
    use crate::ledger::{SignedTransfer, Transfer};
    use crate::net::{self, Behaviour, BehaviourEvent, SyncRequest};

    /// Transfers per gossip message, and messages per round.
    const GOSSIP_TXS: u64 = 200;
    const ROUND: Duration = Duration::from_millis(20);
    /// Requests in flight per peer at most.
    const REQUESTS_IN_FLIGHT: u64 = 8;

    pub(super) async fn flood(
        chain: ChainId,
        addresses: Vec<Multiaddr>,
        duration: Duration,
    ) -> Result<FloodReport, String> {
        let identity = libp2p::identity::Keypair::generate_ed25519();
        let behaviour = Behaviour::new(
            &identity,
            &chain,
            false,
            &crate::config::ConnectionLimits::default(),
            &[],
        )
        .map_err(|e| e.to_string())?;
        let mut swarm: Swarm<Behaviour> = libp2p::SwarmBuilder::with_existing_identity(identity)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| e.to_string())?
            .with_behaviour(|_| behaviour)
            .map_err(|e| e.to_string())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let topic = net::tx_topic(&chain);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| e.to_string())?;
        let sender = Keypair::generate().map_err(|e| e.to_string())?.public();
        let recipient = Keypair::generate().map_err(|e| e.to_string())?.public();
        let mut report = FloodReport::default();
        let mut in_flight: std::collections::HashMap<libp2p::PeerId, u64> = Default::default();
        let deadline = tokio::time::Instant::now() + duration;
        let mut round = tokio::time::interval(ROUND);
        let mut redial = tokio::time::interval(Duration::from_secs(1));
        let mut nonce = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = redial.tick() => {
                    for address in &addresses {
                        let _ = swarm.dial(address.clone());
                    }
                }
                _ = round.tick() => {
                    let txs: Vec<SignedTransfer> = (0..GOSSIP_TXS)
                        .map(|i| SignedTransfer {
                            transfer: Transfer {
                                chain: chain.clone(),
                                from: sender,
                                to: recipient,
                                amount: 1,
                                nonce: nonce + i,
                                valid_until: u64::MAX,
                            },
                            signature: Signature::from_bytes([0x11; 64]),
                        })
                        .collect();
                    nonce += GOSSIP_TXS;
                    if let Ok(bytes) = codec::encode(&txs)
                        && swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes).is_ok()
                    {
                        report.gossip_published += 1;
                    }
                    let peers: Vec<libp2p::PeerId> = swarm.connected_peers().copied().collect();
                    for peer in peers {
                        let count = in_flight.entry(peer).or_insert(0);
                        while *count < REQUESTS_IN_FLIGHT {
                            let request = if nonce.is_multiple_of(2) {
                                SyncRequest::Fragment { height: nonce % 64 + 1 }
                            } else {
                                SyncRequest::Blocks { from: 1, count: 64 }
                            };
                            nonce += 1;
                            if let Ok(bytes) = codec::encode(&request) {
                                swarm.behaviour_mut().sync.send_request(&peer, bytes);
                                *count += 1;
                                report.requests_sent += 1;
                            }
                        }
                    }
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => report.connections += 1,
                    SwarmEvent::ConnectionClosed { peer_id, num_established, .. } => {
                        report.disconnections += 1;
                        if num_established == 0 {
                            in_flight.remove(&peer_id);
                        }
                    }
                    SwarmEvent::OutgoingConnectionError { .. } => report.dials_failed += 1,
                    SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => {
                        use libp2p::request_response::{Event, Message};
                        let peer = match event {
                            Event::Message { peer, message: Message::Response { .. }, .. } => {
                                report.answers += 1;
                                Some(peer)
                            }
                            Event::OutboundFailure { peer, .. } => Some(peer),
                            _ => None,
                        };
                        if let Some(count) = peer.and_then(|p| in_flight.get_mut(&p)) {
                            *count = count.saturating_sub(1);
                        }
                    }
                    _ => {}
                },
            }
        }
        Ok(report)
    }
}
