//! The event loop's fields, grouped by the concern that owns them, and the few
//! lookups every room of the driver makes. Each room's logic lives in its own
//! file ([`super`]); this file holds no behaviour beyond reading state.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub};
use mosaic_consensus::{Digest, Input, Replica, ReplicaId, SeqNum, Timer};
use mosaic_storage::Fragment;
use tokio::sync::{mpsc, oneshot};

use crate::chain::{Chain, CheckedBlocks, Layout, Shared};
use crate::config::NodeConfig;
use crate::control::{Command, NodeInfo, StatusInfo};
use crate::edge::Edge;
use crate::error::NodeError;
use crate::gather::{Gather, GatherLimits};
use crate::gossip::{Gossip, GossipLimits, Results as GossipResults, Ticket};
use crate::held::{Held, HeldLimits};
use crate::ledger::SignedTransfer;
use crate::links::Links;
use crate::mempool_log::MempoolLog;
use crate::metrics::Metrics;
use crate::net::{Behaviour, GOSSIP_BYTES_MAX, SyncResponse};
use crate::overview::Overview;
use crate::peers::Peers;
use crate::proposal::Relay;
use crate::schema::{NodeStore, PersistedConsensus};
use crate::serve::{Read, Serve, ServeLimits};
use crate::sigbatch::SigBatcher;
use crate::sync::CatchUp;

/// Held PRE-PREPAREs (waiting for their parent to execute) per sender.
const HELD_PER_SENDER_MAX: usize = 64;
/// Payload bytes of held PRE-PREPAREs in all, shared out among the validators.
const HELD_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Least time between two immediate redials of one validator after its last
/// connection closed (otherwise the slow tick dials it).
pub(super) const QUICK_REDIAL_GAP: Duration = Duration::from_secs(5);
/// Transactions waiting to be gossiped, at most.
pub(super) const GOSSIP_QUEUE_MAX: usize = 200_000;
/// Gossip checking requests in the signature queue at once, at most (this bounds
/// what gossip puts in [`crate::sigbatch`]). While they wait or run, later messages
/// wait in [`Gossip`] and are then handed over together: the busier the node, the
/// larger and cheaper per signature the batches.
const GOSSIP_VERIFY_IN_FLIGHT_MAX: usize = 2;
/// Transactions one gossip checking job takes from waiting messages, at most (it
/// always takes at least one message). Batches past ~100 signatures switch to the
/// cheaper multi-scalar method; past ~1,000 the gain is small and the wait grows.
const GOSSIP_VERIFY_JOB_TXS_MAX: usize = 1_024;
/// How long to wait for fragments from peers.
const FRAGMENT_GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Fragment gatherings in flight at most.
const GATHERINGS_MAX: usize = 64;

/// One checking job's verdicts, per gossip message, from the pool to the event loop.
pub(super) type GossipResult = Vec<(Ticket, GossipResults)>;

/// Why an outbound sync request was sent.
#[derive(Debug, Clone, Copy)]
pub(super) enum Purpose {
    Status,
    Blocks { from: u64 },
    Fragment { height: u64 },
}

/// Who waits for a fragment gathering.
pub(super) enum Waiter {
    Api(oneshot::Sender<Vec<Fragment>>),
    Sync,
}

/// A sync read that ended: `None` if it panicked.
pub(super) struct Served {
    pub(super) read: Read<ResponseChannel<Vec<u8>>>,
    pub(super) response: Option<SyncResponse>,
}

/// What [`crate::service::start`] builds and hands to the driver: the replica,
/// the swarm, the store and the rooms shared with the API.
pub(crate) struct Parts {
    pub(crate) overview: Arc<Overview>,
    pub(crate) replica: Replica,
    pub(crate) chain: Chain,
    pub(crate) checked: CheckedBlocks,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) store: Arc<NodeStore>,
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) info: Arc<NodeInfo>,
    pub(crate) status: Arc<RwLock<StatusInfo>>,
    pub(crate) metrics: Metrics,
    pub(crate) config: NodeConfig,
    pub(crate) layout: Layout,
    pub(crate) persisted: PersistedConsensus,
    pub(crate) topic: gossipsub::IdentTopic,
    pub(crate) commands: mpsc::Receiver<Command>,
    /// The honest edge, or a test build's Byzantine one ([`crate::edge`]).
    pub(crate) edge: Box<dyn Edge>,
    pub(crate) signatures: SigBatcher,
    pub(crate) links: Links,
    pub(crate) mempool_log: MempoolLog,
    /// Transfers waiting for their gossip signature check (the API reads it).
    pub(crate) verify_backlog: Arc<AtomicUsize>,
    /// The largest payload consensus accepts (the held buffer's share per sender).
    pub(crate) payload_bytes_max: usize,
}

pub(super) struct EventLoop {
    // ----- consensus hosting (consensus.rs) -----
    pub(super) replica: Replica,
    pub(super) chain: Chain,
    /// Hands the block this node builds as primary to its own proposal check.
    pub(super) checked: CheckedBlocks,
    pub(super) persisted: PersistedConsensus,
    /// Inputs produced while carrying out outputs, fed after them.
    pub(super) inbox: VecDeque<Input>,
    pub(super) timers: BTreeMap<Timer, Instant>,
    /// The proposal consensus asked for.
    pub(super) wanted: Option<(SeqNum, Digest)>,
    pub(super) batch_ready_since: Option<Instant>,
    pub(super) pending_sent: Option<bool>,
    pub(super) last_pending_check: Instant,
    /// When each in-flight height's proposal reached this node (commit latency).
    pub(super) proposal_seen: BTreeMap<u64, Instant>,
    pub(super) entered_first_view: bool,
    /// Why consensus refused the host's own inputs in the current step.
    pub(super) own_refusals: Vec<&'static str>,

    // ----- consensus links inbound (relay.rs) -----
    /// PRE-PREPAREs whose parent is not executed here yet.
    pub(super) held: Held,
    /// Compact proposals: own ones to compact and supply, received ones to complete.
    pub(super) relay: Relay,
    /// Gossip was verified since the relay last refilled its waiting proposals.
    pub(super) refill_due: bool,

    // ----- gossip (gossip.rs, outbound.rs) -----
    /// Gossiped transfers waiting for signature checks, per peer.
    pub(super) gossip: Gossip,
    /// The signature-check queue, shared with the API.
    pub(super) signatures: SigBatcher,
    pub(super) gossip_results: mpsc::UnboundedSender<GossipResult>,
    pub(super) gossip_out: Vec<SignedTransfer>,
    pub(super) topic: gossipsub::IdentTopic,

    // ----- catch-up and fragments (catchup.rs) -----
    pub(super) sync: CatchUp,
    /// Fragment gatherings in flight.
    pub(super) gather: Gather<Waiter>,
    pub(super) requests: HashMap<OutboundRequestId, (PeerId, Purpose)>,

    // ----- serving peers (serving.rs) -----
    /// Sync requests of peers: budgets and reads.
    pub(super) serving: Serve<ResponseChannel<Vec<u8>>>,
    /// Where sync reads send their answers (at most `reads_running_max` at once).
    pub(super) served: mpsc::UnboundedSender<Served>,

    // ----- the network and peers (swarm.rs, outbound.rs) -----
    pub(super) swarm: Swarm<Behaviour>,
    /// Outbound consensus links, by validator index.
    pub(super) links: Links,
    /// `links.dropped()` at the last metrics update.
    pub(super) links_dropped_seen: u64,
    /// Connected peers and their connection counts.
    pub(super) connected: BTreeMap<PeerId, u32>,
    pub(super) addresses: HashMap<PeerId, BTreeSet<Multiaddr>>,
    /// Misbehaviour points and bans.
    pub(super) peers: Peers,
    /// When each validator was last redialled at once on losing its connection: at
    /// most once per [`QUICK_REDIAL_GAP`], so a peer that closes every connection
    /// right after its handshake (it bans us) costs a dial per gap, not a loop.
    pub(super) quick_redials: HashMap<PeerId, Instant>,
    /// The edge ([`crate::edge`]): honest, or a test build's Byzantine behaviour;
    /// outbound.rs and relay.rs are the only rooms that call it.
    pub(super) edge: Box<dyn Edge>,

    // ----- shared with the API and the scrub -----
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) store: Arc<NodeStore>,
    pub(super) info: Arc<NodeInfo>,
    pub(super) status: Arc<RwLock<StatusInfo>>,
    /// The API's status is behind the connections (refreshed on the next tick).
    pub(super) status_dirty: bool,
    /// What the operator's page shows ([`crate::overview`]).
    pub(super) overview: Arc<Overview>,
    pub(super) metrics: Metrics,
    pub(super) commands: mpsc::Receiver<Command>,
    /// Where accepted transactions are kept until they commit or drop.
    pub(super) mempool_log: MempoolLog,

    // ----- the loop itself (mod.rs, ticks.rs) -----
    pub(super) config: NodeConfig,
    pub(super) layout: Layout,
    /// Merges of the transaction index's runs, off the event loop (one at a time).
    pub(super) compaction: Option<tokio::task::JoinHandle<()>>,
    /// A fatal error raised where it could not be returned; the next tick stops.
    pub(super) fatal: Option<NodeError>,
}

impl EventLoop {
    /// The loop over `parts`, with nothing received yet. Gossip verdicts come back
    /// through `gossip_results`, sync reads' answers through `served`.
    pub(super) fn new(
        parts: Parts,
        gossip_results: mpsc::UnboundedSender<GossipResult>,
        served: mpsc::UnboundedSender<Served>,
    ) -> Self {
        let validators = parts.info.validator_peers.len();
        let config = parts.config;
        EventLoop {
            overview: parts.overview,
            replica: parts.replica,
            checked: parts.checked,
            chain: parts.chain,
            shared: parts.shared,
            store: parts.store,
            swarm: parts.swarm,
            info: parts.info,
            status: parts.status,
            metrics: parts.metrics,
            layout: parts.layout,
            persisted: parts.persisted,
            topic: parts.topic,
            commands: parts.commands,
            inbox: VecDeque::new(),
            timers: BTreeMap::new(),
            held: Held::new(HeldLimits::shared(
                HELD_BYTES_MAX,
                validators,
                HELD_PER_SENDER_MAX,
                parts.payload_bytes_max,
            )),
            relay: Relay::new(validators),
            wanted: None,
            batch_ready_since: None,
            pending_sent: None,
            gossip_out: Vec::new(),
            compaction: None,
            connected: BTreeMap::new(),
            addresses: HashMap::new(),
            peers: Peers::new(),
            requests: HashMap::new(),
            sync: CatchUp::new(validators),
            gather: Gather::new(GatherLimits {
                gatherings_max: GATHERINGS_MAX,
                timeout: FRAGMENT_GATHER_TIMEOUT,
            }),
            proposal_seen: BTreeMap::new(),
            entered_first_view: false,
            own_refusals: Vec::new(),
            edge: parts.edge,
            status_dirty: false,
            quick_redials: HashMap::new(),
            last_pending_check: Instant::now(),
            fatal: None,
            refill_due: false,
            gossip: Gossip::new(
                GossipLimits {
                    message_bytes_max: GOSSIP_BYTES_MAX,
                    peer_bytes_max: config.gossip.peer_waiting_bytes_max,
                    others_bytes_max: config.gossip.others_waiting_bytes_max,
                    job_txs_max: GOSSIP_VERIFY_JOB_TXS_MAX,
                    jobs_in_flight_max: GOSSIP_VERIFY_IN_FLIGHT_MAX,
                },
                parts.verify_backlog,
            ),
            serving: Serve::new(ServeLimits {
                requests_per_second: config.sync_serving.requests_per_second,
                requests_burst: config.sync_serving.requests_burst,
                queued_per_peer_max: config.sync_serving.queued_per_peer_max,
                reads_running_max: config.sync_serving.reads_running_max,
            }),
            served,
            signatures: parts.signatures,
            gossip_results,
            links: parts.links,
            links_dropped_seen: 0,
            mempool_log: parts.mempool_log,
            config,
        }
    }

    pub(super) fn validator_index(&self, peer: &PeerId) -> Option<ReplicaId> {
        self.info
            .validator_peers
            .iter()
            .position(|p| p == peer)
            .map(|i| ReplicaId(i as u32))
    }

    /// The height at least one honest validator reached (see [`CatchUp`]).
    pub(super) fn network_height(&self) -> u64 {
        self.sync.network_height()
    }
}

/// Now in Unix milliseconds (0 if the clock is before 1970).
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
