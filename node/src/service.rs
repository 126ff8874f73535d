//! The validator process: one tokio task (the event loop) owns the consensus
//! replica, the libp2p swarm and the timers; it feeds the replica its inputs and
//! carries out its outputs in order (persist before send, execute on deliver). The
//! HTTP API runs beside it and talks to it through [`Command`]s and the shared
//! state. Each concern's state lives in a room the loop calls ([`crate::held`],
//! [`crate::sync`], [`crate::peers`], [`crate::gossip`], [`crate::serve`],
//! [`crate::gather`]); the loop does what they decide with the swarm and the store.
//! The scrub ([`crate::scrub`]) runs beside it too and asks it only for peers'
//! fragments.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify};
use mosaic_consensus::{
    CheckpointProof, CommitCertificate, Config as ConsensusConfig, Digest, Input, Message, Output,
    Replica, ReplicaId, Restored, SeqNum, Timer, View,
};
use mosaic_crypto::{Hash, Keypair, codec};
use mosaic_storage::{CodingError, Fragment, FragmentCommitment, StoreConfig, coding};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::api;
use crate::block::{BODY_BYTES_MAX, Block};
use crate::chain::{BlockCheck, Chain, CheckedBlocks, Layout, Shared, Tip, lock};
use crate::config::NodeConfig;
pub use crate::control::{Command, NodeInfo, StatusInfo};
pub use crate::error::NodeError;
use crate::gather::{Answer, Gather, GatherLimits, Start};
use crate::genesis::Genesis;
use crate::gossip::{Admission, Gossip, GossipLimits, Judgement, Results as GossipResults, Ticket};
use crate::held::{Held, HeldLimits, HoldError};
use crate::ledger::{Ledger, SignedTransfer, TxHash, VerifiedTransfer};
use crate::links::{self, Inbound, Links};
use crate::maverick::{self, Maverick};
use crate::mempool::{Mempool, MempoolConfig};
use crate::mempool_log::{self, LogConfig, MempoolLog};
use crate::metrics::Metrics;
use crate::net::{
    self, Behaviour, BehaviourEvent, CONSENSUS_FRAME_MAX, GOSSIP_BYTES_MAX, NetError,
    SYNC_BLOCKS_MAX, SYNC_RESPONSE_MAX, SyncRequest, SyncResponse,
};
use crate::overview::{Overview, PeerReport, REPORT_RANGES_MAX};
use crate::peers::{ConsensusBlame, Peers};
use crate::proposal::{self, Frame, Received, Relay};
use crate::schema::{NodeStore, PersistedConsensus};
use crate::scrub::{GatheredByNode, Scrub, ScrubConfig};
use crate::serve::{self, Decision, Read, Serve, ServeLimits};
use crate::sigbatch::SigBatcher;
use crate::sync::{CatchUp, Queued};
use crate::verify_pool::VerifyPool;

/// Held PRE-PREPAREs (waiting for their parent to execute) per sender.
const HELD_PER_SENDER_MAX: usize = 64;
/// Payload bytes of held PRE-PREPAREs in all, shared out among the validators.
const HELD_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Consensus messages read from the links and waiting for the event loop, at most
/// (the links also cap their bytes per validator).
const CONSENSUS_INBOUND_QUEUE: usize = 1_024;
/// Least time between two immediate redials of one validator after its last
/// connection closed (otherwise the slow tick dials it).
const QUICK_REDIAL_GAP: Duration = Duration::from_secs(5);
/// Transactions waiting to be gossiped, at most.
const GOSSIP_QUEUE_MAX: usize = 200_000;
/// Slow ticks (seconds) a transaction stays pending before it is gossiped again.
const REGOSSIP_AGE_ROUNDS: u64 = 3;
/// Transactions gossiped again per slow tick at most: a stalled chain costs each
/// node at most this much gossip a second.
const REGOSSIP_TXS_MAX: usize = 4_096;
/// Gossip checking requests in the signature queue at once, at most (this bounds
/// what gossip puts in [`crate::sigbatch`]). While they wait or run, later messages
/// wait in [`Gossip`] and are then handed over together: the busier the node, the
/// larger and cheaper per signature the batches.
const GOSSIP_VERIFY_IN_FLIGHT_MAX: usize = 2;
/// Transactions one gossip checking job takes from waiting messages, at most (it
/// always takes at least one message). Batches past ~100 signatures switch to the
/// cheaper multi-scalar method; past ~1,000 the gain is small and the wait grows.
const GOSSIP_VERIFY_JOB_TXS_MAX: usize = 1_024;
/// One checking job's verdicts, per gossip message, from the pool to the event loop.
type GossipResult = Vec<(Ticket, GossipResults)>;
/// How long to wait for fragments from peers.
const FRAGMENT_GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Fragment gatherings in flight at most.
const GATHERINGS_MAX: usize = 64;

/// Options that tests and tools set; operators never need them.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Run as a Byzantine validator (see [`crate::maverick`]; only a build with the
    /// `byzantine` feature has modes).
    pub maverick: Option<maverick::Mode>,
}

/// A running node.
pub struct NodeHandle {
    /// This node's libp2p peer id.
    pub peer_id: PeerId,
    /// Where the HTTP API listens.
    pub api_address: SocketAddr,
    /// Where libp2p listens.
    pub listen_addresses: Vec<Multiaddr>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), NodeError>>,
    api_task: JoinHandle<()>,
    scrub_task: JoinHandle<()>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Stops the node and waits for it (the store is closed when this returns).
    pub async fn stop(self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        let result = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Task(e.to_string())),
        };
        let _ = self.api_task.await;
        let _ = self.scrub_task.await;
        result
    }

    /// Waits until the node stops by itself (a fatal error) or `stop` is signalled
    /// through [`Self::shutdown_signal`].
    pub async fn wait(self) -> Result<(), NodeError> {
        let result = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Task(e.to_string())),
        };
        let _ = self.shutdown.send(true);
        let _ = self.api_task.await;
        let _ = self.scrub_task.await;
        result
    }

    /// A sender that stops the node when `true` is sent.
    pub fn shutdown_signal(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts a validator: opens the store, restores consensus, starts libp2p and the
/// HTTP API. Returns once both listen.
pub async fn start(
    config: NodeConfig,
    genesis: Genesis,
    key: Keypair,
    options: TestOptions,
) -> Result<NodeHandle, NodeError> {
    config.check().map_err(NodeError::Config)?;
    genesis.validate()?;
    let chain = genesis.chain_id.clone();
    let public_key = key.public();
    let validators = genesis
        .validator_set()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let index = genesis
        .validators
        .iter()
        .position(|v| v.public_key == public_key)
        .ok_or_else(|| NodeError::NotAValidator {
            public_key: public_key.to_string(),
            chain: chain.to_string(),
        })? as u32;
    let total_shards = genesis.validators.len();
    let data_shards = genesis.data_shards as usize;
    let layout = Layout {
        chain: chain.clone(),
        data_shards,
        total_shards,
    };

    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        NodeError::Config(format!(
            "cannot create data dir {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let store = Arc::new(NodeStore::open(
        &config.data_dir.join("store.redb"),
        StoreConfig {
            validator_index: index,
            body_window_blocks: config.storage.body_window_blocks,
            body_window_bytes: config.storage.body_window_mib.saturating_mul(1 << 20),
            cache_bytes: (config.storage.cache_mib as usize).saturating_mul(1 << 20),
            ..StoreConfig::default()
        },
    )?);

    // The ledger and the tip: genesis accounts are written once, then blocks.
    let genesis_hash = genesis.hash();
    let genesis_accounts: Vec<_> = genesis
        .ledger()?
        .accounts()
        .map(|(k, a)| (*k, *a))
        .collect();
    store.initialize(*genesis_hash.as_bytes(), &genesis_accounts)?;
    let tip_height = store.tip()?.unwrap_or(0);
    let tip_hash = match tip_height {
        0 => genesis_hash,
        h => store
            .header(h)?
            .ok_or(mosaic_storage::StoreError::UnknownHeight { height: h })?
            .hash(),
    };
    let mut ledger = Ledger::from_accounts(store.accounts()?);
    // Transfers that failed and could still be included: including one again fails
    // it (a failed status is final), so every replica must know the same ones.
    let mut failed = crate::ledger::FailedTransfers::default();
    for (id, height, until) in store.live_ids()? {
        failed.insert(Hash::from_bytes(id), height, until);
    }
    ledger.set_failed(failed);
    let outcome_root = match tip_height {
        0 => Hash::ZERO,
        h => Hash::from_bytes(
            store
                .block_outcomes(h)?
                .ok_or(mosaic_storage::StoreError::UnknownHeight { height: h })?
                .root,
        ),
    };
    let tip = Tip {
        height: tip_height,
        hash: tip_hash,
        state_root: ledger.state_root(),
        outcome_root,
    };
    let proven = crate::chain::proven_at_restart(&store, &mut ledger, tip)?;
    let mut mempool = Mempool::new(
        chain.clone(),
        MempoolConfig {
            count_max: config.mempool.txs_max,
            bytes_max: config.mempool.bytes_max,
            verified_cache_max: config
                .mempool
                .txs_max
                .saturating_mul(2)
                .max(MempoolConfig::default().verified_cache_max),
            valid_for_max: config.mempool.valid_for_max,
            ..MempoolConfig::default()
        },
        tip_height,
    );
    if config.mempool.log_bytes_max < 3 * config.mempool.bytes_max as u64 {
        // Compaction keeps the log within its bound while what is pending takes at
        // most about 3/8 of it; a pool allowed to hold more answers 503 when full.
        tracing::warn!(
            log_bytes_max = config.mempool.log_bytes_max,
            bytes_max = config.mempool.bytes_max,
            "mempool.log_bytes_max is below 3 x mempool.bytes_max: the mempool log may refuse transfers (503) before the pool is full; raise it"
        );
    }
    // What this node accepted before it stopped: re-checked like any input, what is
    // still admissible goes back into the pool (and out by gossip again), the rest
    // (committed or expired meanwhile) is dropped from the log.
    let mut recovered = mempool_log::recover(
        &config.data_dir.join("mempool-log"),
        LogConfig {
            bytes_max: config.mempool.log_bytes_max,
            ..LogConfig::default()
        },
    )?;
    let reloaded_total = recovered.transfers.len();
    let reloaded = recovered.readmit(&mut mempool, &ledger, &chain);
    if reloaded_total > 0 || recovered.cut_bytes > 0 || recovered.killed > 0 {
        tracing::info!(
            reloaded = reloaded.len(),
            left_out = reloaded_total - reloaded.len(),
            tombstoned = recovered.killed,
            cut_bytes = recovered.cut_bytes,
            "mempool log read back: accepted transfers pending again (left out: committed, expired or invalid meanwhile)"
        );
    }
    // Why this node had let go of the transfers its tombstones name: kept for the
    // status API, and written again so a later restart keeps them too.
    let dropped = std::mem::take(&mut recovered.dropped);
    let mempool_log = recovered.start(&reloaded, &dropped)?;
    // Shedding bound: about backlog_ms_max of commits, never less than a full block.
    let backlog = crate::backlog::Backlog::new(
        config.mempool.backlog_ms_max as f64 / 1000.0,
        config.batching.txs_max,
    );
    let shared = Arc::new(Mutex::new(Shared {
        ledger,
        mempool,
        tip,
        backlog,
        proven,
    }));

    // Consensus, restored from the store.
    let mut consensus_config =
        ConsensusConfig::new(ReplicaId(index), validators.clone(), Digest(genesis_hash));
    consensus_config.checkpoint_interval = config.consensus.checkpoint_interval;
    consensus_config.window = config.consensus.window;
    consensus_config.view_change_timeout_ticks = config.consensus.view_change_timeout_ms;
    consensus_config.view_change_timeout_max_ticks = config.consensus.view_change_timeout_max_ms;
    let payload_bytes_max = BODY_BYTES_MAX + 64 * 1024;
    consensus_config.payload_bytes_max = payload_bytes_max;
    let persisted = store.safety_record()?.unwrap_or_default();
    let restored = if tip_height == 0 && persisted == PersistedConsensus::default() {
        None
    } else {
        let floor = tip_height.saturating_sub(config.consensus.window).max(1);
        let mut delivered = Vec::new();
        for h in floor..tip_height {
            if let Some(header) = store.header(h)? {
                delivered.push((SeqNum(h), Digest(header.hash())));
            }
        }
        Some(Restored {
            record: persisted.record.clone(),
            last_delivered: (SeqNum(tip_height), Digest(tip_hash)),
            stable: persisted
                .stable
                .clone()
                .unwrap_or_else(|| CheckpointProof::genesis(Digest(genesis_hash))),
            payloads: store
                .payloads()?
                .into_iter()
                .map(|(h, d, p)| (SeqNum(h), Digest(mosaic_crypto::Hash::from_bytes(d)), p))
                .collect(),
            delivered,
        })
    };
    let maverick = options
        .maverick
        .map(|mode| {
            Maverick::new(
                mode,
                &key,
                validators.clone(),
                index,
                config.consensus.window,
                payload_bytes_max,
            )
        })
        .transpose()
        .map_err(NodeError::Config)?;
    let identity = net::identity_of(&key)?;
    let checked = CheckedBlocks::default();
    let replica = Replica::new(
        consensus_config,
        key,
        Box::new(BlockCheck::new(
            shared.clone(),
            layout.clone(),
            checked.clone(),
        )),
        restored,
    );

    // libp2p.
    let peer_id = identity.public().to_peer_id();
    let validator_peers = genesis
        .validators
        .iter()
        .map(|v| net::peer_id_of(&v.public_key))
        .collect::<Result<Vec<_>, _>>()?;
    let behaviour = Behaviour::new(
        &identity,
        &chain,
        config.mdns,
        &config.connections,
        &validator_peers,
    )?;
    let transport = net::transport(&identity)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_other_transport(|_| transport)
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(3600))
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .with_connection_timeout(net::DIAL_TIMEOUT)
        .build();
    // Consensus links: inbound streams are read by their own tasks and handed to the
    // event loop through a bounded channel; outbound ones are written by one task per
    // validator.
    let consensus_protocol = net::consensus_protocol(&chain)?;
    let mut control = swarm.behaviour().consensus.new_control();
    let incoming = control
        .accept(consensus_protocol.clone())
        .map_err(|e| NetError::Build(e.to_string()))?;
    let (consensus_in_tx, consensus_in) = mpsc::channel(CONSENSUS_INBOUND_QUEUE);
    tokio::spawn(links::accept_loop(
        incoming,
        validator_peers.clone(),
        consensus_in_tx,
    ));
    let links = Links::start(&control, &consensus_protocol, &validator_peers, peer_id);
    for address in &config.listen {
        let multiaddr: Multiaddr = address.parse().map_err(|e| NodeError::Listen {
            address: address.clone(),
            reason: format!("not a multiaddress: {e}"),
        })?;
        swarm.listen_on(multiaddr).map_err(|e| NodeError::Listen {
            address: address.clone(),
            reason: e.to_string(),
        })?;
    }
    let topic = net::tx_topic(&chain);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NetError::Build(e.to_string()))?;
    let mut listen_addresses = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listen_addresses.len() < config.listen.len() {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => listen_addresses.push(address),
            Ok(SwarmEvent::ListenerError { error, .. }) => {
                return Err(NodeError::Listen {
                    address: config.listen.join(", "),
                    reason: error.to_string(),
                });
            }
            Ok(SwarmEvent::ListenerClosed { reason, .. }) => {
                return Err(NodeError::Listen {
                    address: config.listen.join(", "),
                    reason: format!("{reason:?}"),
                });
            }
            Ok(_) => {}
            Err(_) => {
                return Err(NodeError::Listen {
                    address: config.listen.join(", "),
                    reason: "no listen address within 10 s".into(),
                });
            }
        }
    }

    // HTTP API.
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let metrics = Metrics::new();
    let status = Arc::new(RwLock::new(StatusInfo::default()));
    let info = Arc::new(NodeInfo {
        chain: chain.clone(),
        index,
        validators: validators.clone(),
        validator_peers: validator_peers.clone(),
        genesis: genesis.clone(),
        peer_id,
        data_shards,
        behind_heights_max: config.mempool.behind_heights_max,
    });
    let listener = tokio::net::TcpListener::bind(config.api_address)
        .await
        .map_err(|source| NodeError::Api {
            address: config.api_address,
            source,
        })?;
    let api_address = listener.local_addr().map_err(|source| NodeError::Api {
        address: config.api_address,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let verify_backlog = Arc::new(AtomicUsize::new(0));
    let verify_pool = VerifyPool::start(
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
    )
    .map_err(NodeError::Threads)?;
    let signatures = SigBatcher::new(layout.chain.clone(), shared.clone(), verify_pool);
    let proofs = Arc::new(crate::proof_cache::ProofCache::default());
    let overview = Arc::new(Overview::new(validator_peers.len()));
    let api_state = api::ApiState {
        shared: shared.clone(),
        store: store.clone(),
        info: info.clone(),
        status: status.clone(),
        metrics: metrics.clone(),
        commands: commands_tx.clone(),
        verify_backlog: verify_backlog.clone(),
        signatures: signatures.clone(),
        log: mempool_log.clone(),
        reads: crate::read_budget::HeavyReads::new(crate::read_budget::HEAVY_READS_MAX),
        proofs: proofs.clone(),
        overview: overview.clone(),
    };
    let listener = crate::api_listener::LimitedListener::new(
        listener,
        config.api.connections_max,
        Duration::from_secs(config.api.idle_timeout_secs),
    );
    let app = maverick::wrap_api(
        options.maverick,
        crate::api_routes::router(api_state),
        shared.clone(),
    );
    let api_task = tokio::spawn(api::serve(listener, app, shutdown_rx.clone()));
    let scrub = Scrub::new(
        store.clone(),
        GatheredByNode::new(commands_tx),
        ScrubConfig {
            enabled: config.scrub.enabled,
            bytes_per_second: config.scrub.bytes_per_second,
            pass_pause: Duration::from_secs(config.scrub.pass_pause_secs),
        },
        metrics.scrub.clone(),
    );
    let scrub_task = tokio::spawn(scrub.run(shutdown_rx.clone()));

    // Bounded by GOSSIP_VERIFY_IN_FLIGHT_MAX jobs, each sending one result.
    let (gossip_results, gossip_verified) = mpsc::unbounded_channel();
    // Bounded by sync_serving.reads_running_max reads, each sending one answer.
    let (served_tx, served_rx) = mpsc::unbounded_channel();
    let chain_exec = Chain::new(
        shared.clone(),
        store.clone(),
        layout.clone(),
        index,
        checked.clone(),
        proofs,
    );
    let mut node = EventLoop {
        overview,
        replica,
        checked,
        chain: chain_exec,
        shared,
        store,
        swarm,
        info,
        status,
        metrics,
        config: config.clone(),
        layout,
        persisted,
        topic,
        commands: commands_rx,
        inbox: VecDeque::new(),
        timers: BTreeMap::new(),
        held: Held::new(HeldLimits::shared(
            HELD_BYTES_MAX,
            validator_peers.len(),
            HELD_PER_SENDER_MAX,
            payload_bytes_max,
        )),
        relay: Relay::new(validator_peers.len()),
        wanted: None,
        batch_ready_since: None,
        pending_sent: None,
        gossip_out: Vec::new(),
        compaction: None,
        connected: BTreeMap::new(),
        addresses: HashMap::new(),
        peers: Peers::new(),
        requests: HashMap::new(),
        sync: CatchUp::new(validator_peers.len()),
        gather: Gather::new(GatherLimits {
            gatherings_max: GATHERINGS_MAX,
            timeout: FRAGMENT_GATHER_TIMEOUT,
        }),
        proposal_seen: BTreeMap::new(),
        entered_first_view: false,
        rejections_seen: BTreeMap::new(),
        maverick,
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
            verify_backlog,
        ),
        serving: Serve::new(ServeLimits {
            requests_per_second: config.sync_serving.requests_per_second,
            requests_burst: config.sync_serving.requests_burst,
            queued_per_peer_max: config.sync_serving.queued_per_peer_max,
            reads_running_max: config.sync_serving.reads_running_max,
        }),
        served: served_tx,
        signatures,
        gossip_results,
        links,
        links_dropped_seen: 0,
        mempool_log,
    };
    node.gossip_out.extend(reloaded);
    for address in &config.bootstrap {
        node.add_bootstrap(address);
    }
    let first = node.replica.start();
    node.apply_outputs(first)?;
    node.redial();
    let task = tokio::spawn(node.run(shutdown_rx, gossip_verified, consensus_in, served_rx));
    tracing::info!(
        chain = %chain, validator = index, %peer_id, height = tip_height,
        api = %api_address, listen = ?listen_addresses, "node started"
    );
    Ok(NodeHandle {
        peer_id,
        api_address,
        listen_addresses,
        shutdown,
        task,
        api_task,
        scrub_task,
    })
}

/// Why an outbound sync request was sent.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Status,
    Blocks { from: u64 },
    Fragment { height: u64 },
}

/// Who waits for a fragment gathering.
enum Waiter {
    Api(oneshot::Sender<Vec<Fragment>>),
    Sync,
}

/// A sync read that ended: `None` if it panicked.
struct Served {
    read: Read<ResponseChannel<Vec<u8>>>,
    response: Option<SyncResponse>,
}

/// Consensus writes not yet made durable (see [`EventLoop::apply_outputs`]).
#[derive(Default)]
struct Unsaved {
    /// The safety record changed.
    record: bool,
    /// Payloads to save: (height, digest, bytes).
    payloads: Vec<(u64, [u8; 32], Vec<u8>)>,
}

struct EventLoop {
    /// What the operator's page shows ([`crate::overview`]).
    overview: Arc<Overview>,
    replica: Replica,
    chain: Chain,
    /// Hands the block this node builds as primary to its own proposal check.
    checked: CheckedBlocks,
    shared: Arc<Mutex<Shared>>,
    store: Arc<NodeStore>,
    swarm: Swarm<Behaviour>,
    info: Arc<NodeInfo>,
    status: Arc<RwLock<StatusInfo>>,
    metrics: Metrics,
    config: NodeConfig,
    layout: Layout,
    persisted: PersistedConsensus,
    topic: gossipsub::IdentTopic,
    commands: mpsc::Receiver<Command>,
    /// Inputs produced while carrying out outputs, fed after them.
    inbox: VecDeque<Input>,
    timers: BTreeMap<Timer, Instant>,
    /// PRE-PREPAREs whose parent is not executed here yet.
    held: Held,
    /// Compact proposals: own ones to compact and supply, received ones to complete.
    relay: Relay,
    /// The proposal consensus asked for.
    wanted: Option<(SeqNum, Digest)>,
    batch_ready_since: Option<Instant>,
    pending_sent: Option<bool>,
    gossip_out: Vec<SignedTransfer>,
    /// Merges of the transaction index's runs, off the event loop (one at a time).
    compaction: Option<tokio::task::JoinHandle<()>>,
    /// Connected peers and their connection counts.
    connected: BTreeMap<PeerId, u32>,
    addresses: HashMap<PeerId, BTreeSet<Multiaddr>>,
    /// Misbehaviour points and bans.
    peers: Peers,
    requests: HashMap<OutboundRequestId, (PeerId, Purpose)>,
    sync: CatchUp,
    /// Fragment gatherings in flight.
    gather: Gather<Waiter>,
    /// When each in-flight height's proposal reached this node (commit latency).
    proposal_seen: BTreeMap<u64, Instant>,
    entered_first_view: bool,
    rejections_seen: BTreeMap<&'static str, u64>,
    /// The Byzantine behaviour of a test build's maverick validator.
    maverick: Option<Maverick>,
    /// The API's status is behind the connections (refreshed on the next tick).
    status_dirty: bool,
    /// When each validator was last redialled at once on losing its connection: at
    /// most once per [`QUICK_REDIAL_GAP`], so a peer that closes every connection
    /// right after its handshake (it bans us) costs a dial per gap, not a loop.
    quick_redials: HashMap<PeerId, Instant>,
    last_pending_check: Instant,
    /// A fatal error raised where it could not be returned; the next tick stops.
    fatal: Option<NodeError>,
    /// Gossip was verified since the relay last refilled its waiting proposals.
    refill_due: bool,
    /// Gossiped transfers waiting for signature checks, per peer.
    gossip: Gossip,
    /// Sync requests of peers: budgets and reads.
    serving: Serve<ResponseChannel<Vec<u8>>>,
    /// Where sync reads send their answers (at most `reads_running_max` at once).
    served: mpsc::UnboundedSender<Served>,
    /// The signature-check queue, shared with the API.
    signatures: SigBatcher,
    gossip_results: mpsc::UnboundedSender<GossipResult>,
    /// Outbound consensus links, by validator index.
    links: Links,
    /// `links.dropped()` at the last metrics update.
    links_dropped_seen: u64,
    /// Where accepted transactions are kept until they commit or drop.
    mempool_log: MempoolLog,
}

impl EventLoop {
    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut gossip_verified: mpsc::UnboundedReceiver<GossipResult>,
        mut consensus_in: mpsc::Receiver<Inbound>,
        mut served: mpsc::UnboundedReceiver<Served>,
    ) -> Result<(), NodeError> {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slow_tick = tokio::time::interval(Duration::from_secs(1));
        slow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let next_timer = self
                .timers
                .values()
                .min()
                .copied()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let step = tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break Ok(());
                    }
                    Ok(())
                }
                Some(inbound) = consensus_in.recv() => self.on_link_inbound(inbound),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(command) = self.commands.recv() => {
                    self.on_command(command);
                    Ok(())
                }
                Some(verdicts) = gossip_verified.recv() => {
                    self.on_gossip_job_done(verdicts);
                    Ok(())
                }
                Some(done) = served.recv() => {
                    self.on_served(done);
                    Ok(())
                }
                _ = tokio::time::sleep_until(next_timer.into()) => self.fire_timers(),
                _ = tick.tick() => self.on_tick(),
                _ = slow_tick.tick() => self.on_slow_tick(),
            };
            if let Err(e) = step {
                tracing::error!(error = %e, "node stopping");
                break Err(e);
            }
        };
        if let Some(compaction) = self.compaction.take() {
            // It holds the store: let it finish its merge (crash-safe if killed).
            let _ = compaction.await;
        }
        // Running sync reads hold the store too: the store is closed only when
        // they ended.
        self.serving.close();
        while self.serving.running() > 0 {
            match tokio::time::timeout(Duration::from_secs(10), served.recv()).await {
                Ok(Some(done)) => {
                    self.serving.finished(&done.read.peer);
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("sync reads still running at stop");
                    break;
                }
            }
        }
        tracing::info!("node stopped");
        result
    }

    /// Starts merging transaction index runs on a blocking thread if some are due
    /// and no merge is running (a few merges per round, so a stop waits little).
    fn compact_index(&mut self) {
        self.metrics
            .tx_index_runs
            .set(i64::try_from(self.store.index_runs()).unwrap_or(i64::MAX));
        if self.compaction.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        let store = self.store.clone();
        self.compaction = Some(tokio::task::spawn_blocking(move || {
            for _ in 0..4 {
                match store.compact_index() {
                    Ok(true) => {
                        tracing::debug!(runs = store.index_runs(), "merged transaction index runs");
                    }
                    Ok(false) => break,
                    Err(e) => {
                        // Lookups go on with the unmerged runs; retried next round.
                        tracing::warn!(error = %e, "cannot merge transaction index runs");
                        break;
                    }
                }
            }
        }));
    }

    // ----- consensus -----

    /// Feeds one input and everything it leads to.
    fn drive(&mut self, input: Input) -> Result<(), NodeError> {
        self.inbox.push_back(input);
        self.pump()
    }

    /// Feeds queued inputs, and the primary's proposal once one is ready.
    fn pump(&mut self) -> Result<(), NodeError> {
        loop {
            while let Some(input) = self.inbox.pop_front() {
                let sender = match &input {
                    Input::Message { from, .. } => Some((
                        *from,
                        (self.replica.view(), self.replica.replays()),
                        ConsensusBlame::before(self.replica.rejections()),
                    )),
                    _ => None,
                };
                let outputs = self.replica.handle(input);
                if let Some((from, view, blame)) = sender {
                    self.blame_consensus_sender(from, view, &blame);
                }
                self.apply_outputs(outputs)?;
            }
            self.maybe_propose();
            if self.inbox.is_empty() {
                break;
            }
        }
        self.count_rejections();
        Ok(())
    }

    /// Carries out consensus outputs in order. Writes (`Persist`, `PersistPayload`)
    /// are gathered and made durable in one transaction before the next output that
    /// lets anything leave the node or the state change (send, deliver, checkpoint),
    /// and at the end: persist-before-send holds with one fsync per group.
    fn apply_outputs(&mut self, outputs: Vec<Output>) -> Result<(), NodeError> {
        let mut unsaved = Unsaved::default();
        for output in outputs {
            if !matches!(
                output,
                Output::Persist(_)
                    | Output::PersistPayload { .. }
                    | Output::SetTimer { .. }
                    | Output::CancelTimer(_)
            ) {
                self.save(&mut unsaved)?;
            }
            match output {
                Output::Persist(record) => {
                    self.persisted.record = record;
                    unsaved.record = true;
                }
                Output::PersistPayload {
                    seq,
                    digest,
                    payload,
                } => {
                    unsaved
                        .payloads
                        .push((seq.0, *digest.0.as_bytes(), payload));
                    self.proposal_seen.entry(seq.0).or_insert_with(Instant::now);
                }
                Output::Send { to, message } => self.send_consensus(to, &message),
                Output::Broadcast(message) => {
                    if let Some(bytes) = self.frame_of(&message) {
                        let frame = Arc::new(bytes);
                        for to in 0..self.info.validator_peers.len() {
                            if to != self.info.index as usize {
                                self.send_frame(to, &message, frame.clone());
                            }
                        }
                    }
                }
                Output::Deliver {
                    seq,
                    digest,
                    payload,
                    certificate,
                } => self.on_deliver(seq, digest, &payload, certificate)?,
                Output::ProposalWanted { seq, parent } => {
                    self.wanted = Some((seq, parent));
                }
                Output::SetTimer { timer, after_ticks } => {
                    self.timers
                        .insert(timer, Instant::now() + Duration::from_millis(after_ticks));
                }
                Output::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Output::StateTransfer { from, to } => {
                    tracing::info!(from = from.0, to = to.0, "state transfer needed");
                    self.sync.wanted_to = self.sync.wanted_to.max(to.0);
                    self.request_blocks();
                }
                Output::CheckpointStable(proof) => {
                    let seq = proof.seq.0;
                    self.persisted.stable = Some(proof);
                    unsaved.record = true;
                    self.save(&mut unsaved)?;
                    self.store.prune_payloads(seq)?;
                }
                Output::EnteredView { view, primary } => {
                    self.overview.entered_view(view.0, primary.0, unix_ms());
                    if self.entered_first_view {
                        self.metrics.view_changes.inc();
                        tracing::warn!(view = view.0, primary = primary.0, "entered new view");
                    } else {
                        tracing::info!(view = view.0, primary = primary.0, "in view");
                    }
                    self.entered_first_view = true;
                    self.metrics.view.set(view.0 as i64);
                    // Proposals asked for in an earlier view are void.
                    self.wanted = None;
                    self.batch_ready_since = None;
                }
            }
        }
        self.save(&mut unsaved)?;
        self.update_status();
        Ok(())
    }

    /// Makes gathered consensus writes durable (one transaction, one fsync).
    fn save(&mut self, unsaved: &mut Unsaved) -> Result<(), NodeError> {
        if !unsaved.record && unsaved.payloads.is_empty() {
            return Ok(());
        }
        let payloads: Vec<(u64, [u8; 32], &[u8])> = unsaved
            .payloads
            .iter()
            .map(|(h, d, p)| (*h, *d, p.as_slice()))
            .collect();
        self.store
            .put_consensus(unsaved.record.then_some(&self.persisted), &payloads)?;
        unsaved.record = false;
        unsaved.payloads.clear();
        Ok(())
    }

    fn on_deliver(
        &mut self,
        seq: SeqNum,
        digest: Digest,
        payload: &[u8],
        certificate: CommitCertificate,
    ) -> Result<(), NodeError> {
        let view = certificate.view.0;
        let executed = self.chain.execute(seq, digest, payload, certificate)?;
        self.relay.forget_through(seq.0);
        let (departed, dropped) = {
            let mut shared = lock(&self.shared);
            (
                shared.mempool.take_departed(),
                shared.mempool.take_dropped_count(),
            )
        };
        self.mempool_log.departed(departed);
        self.metrics.transactions_dropped.inc_by(dropped);
        let txs = executed.header.tx_count;
        self.metrics.blocks_committed.inc();
        self.metrics.transactions_committed.inc_by(u64::from(txs));
        self.metrics.height.set(seq.0 as i64);
        let latency_ms = self
            .proposal_seen
            .remove(&seq.0)
            .map(|t| t.elapsed().as_secs_f64());
        self.proposal_seen = self.proposal_seen.split_off(&seq.0);
        if let Some(seconds) = latency_ms {
            self.metrics.commit_latency.observe(seconds);
        }
        self.overview.committed(
            u64::from(txs),
            latency_ms.map(Duration::from_secs_f64),
            Instant::now(),
        );
        if self.sync.started.is_some() {
            tracing::debug!(height = seq.0, txs, "caught-up block executed");
        } else {
            tracing::info!(
                height = seq.0,
                txs,
                failed = executed.failed,
                view,
                proposer = executed.header.proposer,
                latency_ms = latency_ms.map(|s| (s * 1000.0).round() as u64),
                "committed block"
            );
        }
        // PRE-PREPAREs waiting for this block may go in now.
        for (from, message) in self.held.release_through(seq.next()) {
            self.inbox.push_back(Input::Message { from, message });
        }
        #[cfg(debug_assertions)]
        self.held.check_invariants();
        self.metrics.held_bytes.set(self.held.bytes() as i64);
        Ok(())
    }

    /// Charges `from` for the blamed rejections its message raised. A message that
    /// moved the view (a NEW-VIEW) or the window (a CHECKPOINT) can make the replica
    /// feed others' buffered messages in the same step, so what it raised is not all
    /// its own: nothing is charged then.
    fn blame_consensus_sender(
        &mut self,
        from: ReplicaId,
        (view, replays): (View, u64),
        blame: &ConsensusBlame,
    ) {
        if self.replica.view() != view || self.replica.replays() != replays {
            return;
        }
        let charged = blame.charged(self.replica.rejections());
        let Some(peer) = self.info.validator_peers.get(from.0 as usize).copied() else {
            return;
        };
        for (reason, points) in charged {
            // The replica counted the rejection itself (see count_rejections).
            self.charge(peer, reason, points);
        }
    }

    fn count_rejections(&mut self) {
        for (reason, count) in self.replica.rejections() {
            let seen = self.rejections_seen.entry(reason).or_insert(0);
            if *count > *seen {
                self.metrics.rejected(reason, count - *seen);
                *seen = *count;
            }
        }
    }

    fn fire_timers(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| *t)
            .collect();
        for timer in due {
            self.timers.remove(&timer);
            let before = (self.replica.status(), self.replica.view());
            self.drive(Input::Timeout(timer))?;
            // The reason of the next view change, if this timer started or moved
            // one (a stale timer, or one that asked for a state transfer, did not).
            if (self.replica.status(), self.replica.view()) != before
                && self.replica.status() != mosaic_consensus::Status::Normal
            {
                self.overview.timer_fired(&timer);
            }
        }
        Ok(())
    }

    /// The primary proposes once consensus asked, the parent is executed here (the
    /// header names the state after it) and the batch is full or old enough (or, with
    /// nothing that can go in, `idle_block_ms` old: an empty block).
    fn maybe_propose(&mut self) {
        let Some((seq, parent)) = self.wanted else {
            return;
        };
        let batching = &self.config.batching;
        let (txs, tip, since) = {
            let shared = lock(&self.shared);
            if shared.tip.height + 1 != seq.0 || shared.tip.hash != parent.0 {
                return;
            }
            // A block with transfers is followed by one more (empty if need be):
            // its header is what certifies their outcomes and the state after them,
            // so a client can prove a payment as soon as the chain goes quiet.
            let seal = shared.tip.outcome_root != Hash::ZERO;
            if shared.mempool.is_empty() && !seal {
                self.batch_ready_since = None;
                return;
            }
            let full = shared.mempool.len() >= batching.txs_max
                || shared.mempool.bytes() >= batching.bytes_max;
            let since = *self.batch_ready_since.get_or_insert_with(Instant::now);
            if !full && since.elapsed() < Duration::from_millis(batching.delay_ms) {
                return;
            }
            let ledger = &shared.ledger;
            let txs = shared.mempool.select(
                |k| ledger.account(k).nonce,
                batching.txs_max,
                batching.bytes_max,
            );
            (txs, shared.tip, since)
        };
        // Nothing can go in: an empty block now and then still moves the height on,
        // so waiting transactions reach their expiry.
        let seal = tip.outcome_root != Hash::ZERO;
        if txs.is_empty()
            && !seal
            && since.elapsed() < Duration::from_millis(batching.idle_block_ms)
        {
            return;
        }
        if let Some(maverick) = self.maverick.as_mut() {
            let signed: Vec<SignedTransfer> = txs.iter().map(|t| t.signed().clone()).collect();
            maverick.proposing(
                &self.layout,
                (seq, parent),
                self.replica.view(),
                tip.after(),
                &signed,
            );
        }
        let signed: Vec<SignedTransfer> = txs.iter().map(|t| t.signed().clone()).collect();
        let ids: Vec<TxHash> = txs.iter().map(VerifiedTransfer::hash).collect();
        match self.checked.build_own(
            &self.layout,
            (seq, parent),
            self.replica.view().0,
            self.info.index,
            tip.after(),
            txs,
        ) {
            Ok((payload, header)) => {
                self.relay.proposed(header, signed, ids);
                self.wanted = None;
                self.batch_ready_since = None;
                self.inbox.push_back(Input::Propose {
                    seq,
                    parent,
                    payload,
                });
            }
            Err(e) => tracing::error!(height = seq.0, error = %e, "cannot build a block"),
        }
    }

    fn send_consensus(&mut self, to: ReplicaId, message: &Message) {
        if let Some(bytes) = self.frame_of(message) {
            self.send_frame(to.0 as usize, message, Arc::new(bytes));
        }
    }

    /// The frame carrying `message`: an own PRE-PREPARE goes compact.
    fn frame_of(&self, message: &Message) -> Option<Vec<u8>> {
        self.relay
            .compact_frame(message)
            .or_else(|| proposal::consensus_frame(message).ok())
    }

    fn send_frame(&mut self, to: usize, message: &Message, frame: Arc<Vec<u8>>) {
        let frame = match self.maverick.as_mut() {
            Some(maverick) => maverick.outgoing(to, message, frame),
            None => Some(frame),
        };
        if let Some(frame) = frame {
            self.links.send(to, frame);
        }
    }

    /// A frame or a complaint from the consensus links.
    fn on_link_inbound(&mut self, inbound: Inbound) -> Result<(), NodeError> {
        match inbound {
            Inbound::Message {
                peer,
                bytes,
                permit,
            } => {
                let result = self.on_consensus_message(peer, &bytes);
                drop(permit);
                result
            }
            Inbound::Misbehaved {
                peer,
                reason,
                points,
            } => {
                tracing::debug!(%peer, reason, "consensus link refused");
                self.misbehaved(peer, reason, points);
                Ok(())
            }
        }
    }

    fn on_consensus_message(&mut self, peer: PeerId, bytes: &[u8]) -> Result<(), NodeError> {
        let Some(from) = self.validator_index(&peer) else {
            self.misbehaved(peer, "consensus-from-non-validator", 5);
            return Ok(());
        };
        let frame = match proposal::decode_frame(bytes, CONSENSUS_FRAME_MAX) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "undecodable consensus message");
                self.misbehaved(peer, "consensus-undecodable", 5);
                return Ok(());
            }
        };
        if let Some(maverick) = self.maverick.as_mut() {
            maverick.incoming(bytes);
        }
        match frame {
            Frame::Consensus(message) => {
                self.metrics.message_in(message.kind());
                self.on_message(peer, from, message)
            }
            Frame::Proposal(compact) => {
                self.metrics.message_in("compact-proposal");
                self.on_compact(peer, from, *compact)
            }
            Frame::Want(want) => {
                self.metrics.message_in("want-transfers");
                match self.relay.answer(from, &want) {
                    Ok(Some(supply)) => {
                        let supply = match self.maverick.as_ref() {
                            Some(maverick) => maverick.supply(supply),
                            None => supply,
                        };
                        if let Ok(bytes) = proposal::supply_frame(&supply) {
                            self.links.send(from.0 as usize, Arc::new(bytes));
                        }
                    }
                    Ok(None) => self.metrics.rejected("want-unanswered", 1),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "invalid want");
                        let (reason, points) = e.reason();
                        self.misbehaved(peer, reason, points);
                    }
                }
                Ok(())
            }
            Frame::Supply(supply) => {
                self.metrics.message_in("supply-transfers");
                self.on_supply(peer, from, supply)
            }
        }
    }

    /// A compact proposal: completed from the mempool, or waiting for the transfers
    /// this node lacks, asked of the primary.
    fn on_compact(
        &mut self,
        peer: PeerId,
        from: ReplicaId,
        compact: proposal::Compact,
    ) -> Result<(), NodeError> {
        let stands = proposal::Standing {
            view: self.replica.view(),
            view_max: self.replica.target_view(),
            tip: self.chain.tip().height,
            window: self.config.consensus.window,
        };
        let received = {
            let shared = lock(&self.shared);
            let mempool = &shared.mempool;
            self.relay.receive(
                from,
                compact,
                (stands, Instant::now()),
                &self.info.validators,
                |id| mempool.verified(id),
            )
        };
        match received {
            Ok(Received::Complete(assembly)) => self.on_assembled(peer, from, *assembly),
            // Gossip may bring them first; otherwise the want goes out from the tick.
            Ok(Received::Missing(_)) => Ok(()),
            Ok(Received::AlreadyWaiting(want)) => {
                self.metrics.rejected("compact-proposal-duplicate", 1);
                self.send_want(from, &want);
                Ok(())
            }
            Ok(Received::Ignored(reason)) => {
                self.metrics.rejected(reason, 1);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "invalid compact proposal");
                let (reason, points) = e.reason();
                self.misbehaved(peer, reason, points);
                Ok(())
            }
        }
    }

    /// The primary's answer to a want: checked, its signatures verified, and the
    /// proposal completed.
    fn on_supply(
        &mut self,
        peer: PeerId,
        from: ReplicaId,
        supply: proposal::Supply,
    ) -> Result<(), NodeError> {
        match self.relay.supplied(from, &supply) {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.rejected("supply-unwanted", 1);
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "invalid supply");
                let (reason, points) = e.reason();
                self.misbehaved(peer, reason, points);
                return Ok(());
            }
        }
        let results = lock(&self.shared).mempool.verify_for_block(supply.txs);
        let mut verified = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Ok(tx) => verified.push(tx),
                Err(e) => {
                    // The primary proposed a transfer that does not verify: its block
                    // is invalid, and the view change replaces it.
                    tracing::debug!(%peer, error = %e, "supplied transfer refused");
                    self.relay.abandon(from, &supply.digest);
                    self.misbehaved(peer, "supply-invalid-transfer", 10);
                    return Ok(());
                }
            }
        }
        self.metrics
            .proposal_transfers_fetched
            .inc_by(verified.len() as u64);
        match self.relay.complete(from, &supply.digest, verified) {
            Some(assembly) => self.on_assembled(peer, from, assembly),
            None => Ok(()),
        }
    }

    /// A compact proposal with all its transfers: assembled into the full block and
    /// handed on as the PRE-PREPARE it stands for.
    fn on_assembled(
        &mut self,
        peer: PeerId,
        from: ReplicaId,
        assembly: proposal::Assembly,
    ) -> Result<(), NodeError> {
        let pp = assembly.pre_prepare.body;
        match self.checked.assemble(
            &self.layout,
            (pp.seq, pp.parent),
            assembly.header,
            assembly.txs,
        ) {
            Ok(payload) => {
                let message = Message::PrePrepare {
                    pre_prepare: assembly.pre_prepare,
                    payload,
                };
                self.metrics.message_in(message.kind());
                self.on_message(peer, from, message)
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "compact proposal does not make a valid block");
                self.misbehaved(peer, "compact-proposal-invalid-block", 10);
                Ok(())
            }
        }
    }

    /// A consensus message from validator `from`.
    fn on_message(
        &mut self,
        peer: PeerId,
        from: ReplicaId,
        message: Message,
    ) -> Result<(), NodeError> {
        if let Message::PrePrepare { pre_prepare, .. } = &message {
            let seq = pre_prepare.body.seq;
            let tip = self.chain.tip().height;
            if seq.0 > tip + 1 {
                // Its header names the state after seq - 1: hold it until that is
                // executed. Only what the view's primary signed, within the window
                // and the sender's budget, is held.
                let from_primary = self.info.validators.primary(pre_prepare.body.view) == from
                    && pre_prepare.signer == from;
                if !from_primary || pre_prepare.verify(&self.info.validators).is_err() {
                    self.misbehaved(peer, "pre-prepare-forged", 5);
                } else if seq.0 > tip + 1 + self.config.consensus.window {
                    self.metrics.rejected("pre-prepare-too-far-ahead", 1);
                } else {
                    match self.held.hold(from, message) {
                        Ok(()) => {}
                        Err(HoldError::PayloadTooLarge { .. }) => {
                            self.misbehaved(peer, "pre-prepare-oversized", 5);
                        }
                        Err(HoldError::SenderFull { .. }) => {
                            self.metrics.rejected("pre-prepare-sender-budget-full", 1);
                        }
                        Err(HoldError::Equivocation { .. }) => {
                            self.misbehaved(peer, "pre-prepare-equivocation", 10);
                        }
                        Err(HoldError::Duplicate) => {
                            // Not charged: a link that fails mid-batch writes the batch
                            // again on a new stream, so an honest primary's frames can
                            // arrive twice. A copy costs one signature check.
                            self.metrics.rejected("pre-prepare-duplicate", 1);
                        }
                        Err(HoldError::Stale { .. } | HoldError::NotPrePrepare) => {
                            self.metrics.rejected("pre-prepare-stale", 1);
                        }
                    }
                    #[cfg(debug_assertions)]
                    self.held.check_invariants();
                    self.metrics.held_bytes.set(self.held.bytes() as i64);
                }
                return Ok(());
            }
        }
        self.drive(Input::Message { from, message })
    }

    // ----- network -----

    fn validator_index(&self, peer: &PeerId) -> Option<ReplicaId> {
        self.info
            .validator_peers
            .iter()
            .position(|p| p == peer)
            .map(|i| ReplicaId(i as u32))
    }

    /// Counts an input of `peer` refused for `reason` and charges it `points`.
    fn misbehaved(&mut self, peer: PeerId, reason: &'static str, points: u32) {
        self.metrics.rejected(reason, 1);
        self.charge(peer, reason, points);
    }

    /// Charges `peer` `points` for `reason`; at the ban threshold it is disconnected.
    fn charge(&mut self, peer: PeerId, reason: &'static str, points: u32) {
        self.metrics.misbehaved(reason, points);
        if self.peers.charge(peer, points, Instant::now()) {
            tracing::warn!(%peer, reason, "peer sent invalid data: disconnecting and banning");
            self.metrics
                .peers_banned
                .set(self.peers.banned_count() as i64);
            // Closes its connections and refuses new ones, both ways, until the ban ends.
            self.swarm.behaviour_mut().blocked.block_peer(peer);
        }
    }

    fn add_bootstrap(&mut self, address: &str) {
        let Ok(multiaddr) = address.parse::<Multiaddr>() else {
            tracing::warn!(address, "bootstrap address is not a multiaddress; skipped");
            return;
        };
        let peer = multiaddr.iter().find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        });
        match peer {
            Some(peer) if peer != self.info.peer_id => {
                let without_peer: Multiaddr = multiaddr
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                self.learn_address(peer, without_peer);
            }
            Some(_) => {}
            None => {
                if let Err(e) = self.swarm.dial(multiaddr) {
                    tracing::warn!(address, error = %e, "cannot dial bootstrap address");
                }
            }
        }
    }

    fn learn_address(&mut self, peer: PeerId, address: Multiaddr) {
        if self.validator_index(&peer).is_none() {
            return;
        }
        if address.iter().any(|p| {
            matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())
                || matches!(p, Protocol::Ip6(ip) if ip.is_unspecified())
        }) {
            return;
        }
        let set = self.addresses.entry(peer).or_default();
        if set.len() < 8 && set.insert(address.clone()) {
            self.swarm.add_peer_address(peer, address.clone());
            self.swarm.behaviour_mut().kad.add_address(&peer, address);
        }
    }

    /// Dials every validator we are not connected to and have an address for.
    fn redial(&mut self) {
        let peers: Vec<PeerId> = self.info.validator_peers.clone();
        for peer in peers {
            if peer == self.info.peer_id
                || self.connected.contains_key(&peer)
                || self.peers.is_banned(&peer)
            {
                continue;
            }
            let Some(addresses) = self.addresses.get(&peer) else {
                continue;
            };
            let opts = DialOpts::peer_id(peer)
                .addresses(addresses.iter().cloned().collect())
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "dial failed");
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> Result<(), NodeError> {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let count = self.connected.entry(peer_id).or_insert(0);
                *count += 1;
                if *count == 1 {
                    tracing::debug!(peer = %peer_id, address = %endpoint.get_remote_address(), "connected");
                    if let Some(i) = self.validator_index(&peer_id) {
                        tracing::info!(validator = i.0, peer = %peer_id, "validator connected");
                        // A healed partition: tell the replica, which re-sends its
                        // view change to that validator now.
                        self.drive(Input::Reconnected { peer: i })?;
                    }
                }
                self.metrics
                    .peers_connected
                    .set(self.connected.len() as i64);
                // The API's peer list follows the connections on the next tick.
                self.status_dirty = true;
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.sync.forget(&peer_id);
                    if let Some(i) = self.validator_index(&peer_id) {
                        tracing::info!(validator = i.0, peer = %peer_id, "validator disconnected");
                        // Dial it again now rather than on the next slow tick: a
                        // connection the kernel dropped after a healed cut comes back
                        // at once.
                        let now = Instant::now();
                        let recent = self
                            .quick_redials
                            .get(&peer_id)
                            .is_some_and(|at| now.duration_since(*at) < QUICK_REDIAL_GAP);
                        if !recent {
                            self.quick_redials.insert(peer_id, now);
                            self.redial();
                        }
                    }
                } else {
                    self.connected.insert(peer_id, num_established);
                }
                self.metrics
                    .peers_connected
                    .set(self.connected.len() as i64);
                // The API's peer list follows the connections on the next tick.
                self.status_dirty = true;
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { cause },
                ..
            }
            | SwarmEvent::OutgoingConnectionError {
                error: libp2p::swarm::DialError::Denied { cause },
                ..
            } => {
                let reason = net::denial_reason(&cause);
                tracing::debug!(reason, "connection denied");
                self.metrics.connection_denied(reason);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(error),
            })) => {
                tracing::info!(%peer, %error, "peer stopped answering pings; closing the connection and dialling again");
                self.metrics.connections_dead.inc();
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for address in info.listen_addrs.into_iter().take(8) {
                    self.learn_address(peer_id, address);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(list))) => {
                for (peer, address) in list {
                    self.learn_address(peer, address);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync_event(event)?,
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, &message.data),
            _ => {}
        }
        Ok(())
    }

    /// A gossiped batch: weighed against its source's budget, decoded, and its
    /// signatures checked on a checking thread (at most a few jobs at once) so
    /// consensus messages are not kept waiting; see [`crate::gossip`].
    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: &[u8]) {
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
    fn start_gossip_verification(&mut self) {
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

    fn on_gossip_job_done(&mut self, verdicts: GossipResult) {
        self.gossip.job_done();
        for (ticket, results) in verdicts {
            self.on_gossip_verified(&ticket, results);
        }
        #[cfg(debug_assertions)]
        self.gossip.check_invariants();
        self.start_gossip_verification();
    }

    fn on_gossip_verified(&mut self, ticket: &Ticket, results: GossipResults) {
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

    fn report_gossip(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: gossipsub::MessageAcceptance,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Gossip(txs) => {
                let room = GOSSIP_QUEUE_MAX.saturating_sub(self.gossip_out.len());
                if txs.len() > room {
                    tracing::warn!(
                        dropped = txs.len() - room,
                        "gossip queue full: transactions stay in this node's mempool only"
                    );
                }
                self.gossip_out.extend(txs.into_iter().take(room));
            }
            Command::Fragments { height, reply } => match self.store.commitment(height) {
                Ok(Some(commitment)) => {
                    if let Err(e) = self.gather_fragments(height, commitment, Waiter::Api(reply)) {
                        self.fatal = Some(e);
                    }
                }
                _ => {
                    let _ = reply.send(Vec::new());
                }
            },
        }
    }

    fn flush_gossip(&mut self) {
        if self.gossip_out.is_empty() {
            return;
        }
        if let Some(maverick) = self.maverick.as_ref()
            && maverick.holds_gossip(self.replica.primary() == ReplicaId(self.info.index))
        {
            return;
        }
        let mut start = 0;
        while start < self.gossip_out.len() {
            // Batches well under the gossip limit (a transfer encodes to ~150 bytes).
            let end = (start + 8_192).min(self.gossip_out.len());
            let Ok(bytes) = codec::encode(&self.gossip_out[start..end].to_vec()) else {
                break;
            };
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), bytes)
            {
                Ok(_) | Err(gossipsub::PublishError::Duplicate) => start = end,
                Err(e) => {
                    // No subscribed peer yet: keep them for the next tick.
                    tracing::debug!(error = %e, "gossip publish deferred");
                    break;
                }
            }
        }
        self.gossip_out.drain(..start);
    }

    // ----- sync -----

    fn send_sync(&mut self, peer: PeerId, request: &SyncRequest, purpose: Purpose) -> bool {
        let Ok(bytes) = codec::encode(request) else {
            return false;
        };
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
        self.requests.insert(id, (peer, purpose));
        true
    }

    fn on_sync_event(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Result<(), NodeError> {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.serve_sync(peer, &request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, purpose)) = self.requests.remove(&request_id) else {
                    return Ok(());
                };
                match codec::decode::<SyncResponse>(&response, SYNC_RESPONSE_MAX) {
                    Ok(response) => self.on_sync_response(peer, purpose, response)?,
                    Err(_) => {
                        self.misbehaved(peer, "sync-undecodable", 5);
                        self.sync_request_failed(peer, purpose);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "sync request failed");
                if let Some((_, purpose)) = self.requests.remove(&request_id) {
                    self.sync_request_failed(peer, purpose);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync stream failed");
                if matches!(error, request_response::InboundFailure::Io(_)) {
                    self.misbehaved(peer, "sync-bad-frame", 2);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A request to `peer` brought nothing usable; points, if it is to blame, are
    /// charged by the caller.
    fn sync_request_failed(&mut self, peer: PeerId, purpose: Purpose) {
        match purpose {
            Purpose::Status => {}
            Purpose::Blocks { .. } => {
                let rest = self.sync.failed(peer, Instant::now());
                tracing::debug!(%peer, rest_ms = rest.as_millis() as u64, "block source rested");
                self.request_blocks();
            }
            Purpose::Fragment { height } => {
                // A failed request is only one missing fragment; fatal errors of the
                // rebuild that may follow surface through the next sync response.
                if let Err(e) = self.fragment_answer(height, peer, Answer::Failed) {
                    self.fatal = Some(e);
                }
            }
        }
    }

    /// A sync request: weighed by [`Serve`] (validators only, a token bucket per
    /// peer, one read at a time per peer), then answered now (a status) or after a
    /// read off the event loop ([`Self::on_served`]).
    fn serve_sync(&mut self, peer: PeerId, request: &[u8], channel: ResponseChannel<Vec<u8>>) {
        self.metrics.message_in("sync-request");
        let validator = self.validator_index(&peer).is_some();
        match self
            .serving
            .request(peer, validator, request, channel, Instant::now())
        {
            Decision::Status(channel) => {
                let height = self.chain.tip().height;
                let report = self.own_report();
                self.answer(
                    &SyncRequest::Status,
                    SyncResponse::Status { height, report },
                    channel,
                );
            }
            Decision::Read(read) => self.start_read(read),
            Decision::Queued => {}
            Decision::Refused {
                channel,
                response,
                reason,
                points,
            } => {
                if points > 0 {
                    self.misbehaved(peer, reason, points);
                } else {
                    self.metrics.rejected(reason, 1);
                }
                self.respond(channel, &response);
            }
        }
        self.metrics
            .sync_reads_queued
            .set(self.serving.queued() as i64);
    }

    /// Runs a block or fragment read on a blocking thread; its answer comes back
    /// through `served` (also when the read panics, so its slot is freed).
    fn start_read(&mut self, read: Read<ResponseChannel<Vec<u8>>>) {
        let store = self.store.clone();
        let tip = self.chain.tip().height;
        let served = self.served.clone();
        let request = read.request.clone();
        tokio::spawn(async move {
            let response = tokio::task::spawn_blocking(move || serve::read(&store, tip, &request))
                .await
                .ok();
            let _ = served.send(Served { read, response });
        });
    }

    /// A read ended: the peer's next read (or another peer's) may start, and the
    /// answer goes out.
    fn on_served(&mut self, served: Served) {
        let Served { read, response } = served;
        for next in self.serving.finished(&read.peer) {
            self.start_read(next);
        }
        self.metrics
            .sync_reads_queued
            .set(self.serving.queued() as i64);
        let response = response.unwrap_or_else(|| {
            tracing::error!(peer = %read.peer, "a sync read failed unexpectedly");
            SyncResponse::Error("internal error".into())
        });
        if matches!(response, SyncResponse::Fragment(Some(_))) {
            self.metrics.fragments_served.inc();
        }
        self.answer(&read.request, response, read.channel);
    }

    fn answer(
        &mut self,
        request: &SyncRequest,
        response: SyncResponse,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let response = match self.maverick.as_mut() {
            Some(maverick) => maverick.answer(request, response),
            None => Some(response),
        };
        if let Some(response) = response {
            self.respond(channel, &response);
        }
    }

    fn respond(&mut self, channel: ResponseChannel<Vec<u8>>, response: &SyncResponse) {
        if let Ok(bytes) = codec::encode(response) {
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, bytes);
        }
    }

    fn on_sync_response(
        &mut self,
        peer: PeerId,
        purpose: Purpose,
        response: SyncResponse,
    ) -> Result<(), NodeError> {
        match (purpose, response) {
            (Purpose::Status, SyncResponse::Status { height, report }) => {
                self.sync.report_height(peer, height);
                if let Some(index) = self.validator_index(&peer) {
                    match report.problem(height) {
                        None => {
                            self.overview
                                .reported(index.0 as usize, height, report, Instant::now())
                        }
                        Some(reason) => self.misbehaved(peer, reason, 2),
                    }
                }
            }
            (Purpose::Blocks { from }, SyncResponse::Blocks(blocks)) => {
                if self.sync.in_flight == Some(peer) {
                    self.sync.in_flight = None;
                }
                if blocks.is_empty() {
                    // It claimed to be past `from` when asked (heights only grow).
                    self.misbehaved(peer, "sync-empty", 2);
                    self.sync_request_failed(peer, purpose);
                    return Ok(());
                }
                for (i, block) in blocks.into_iter().enumerate() {
                    let height = from + i as u64;
                    let certificate = &block.certificate;
                    let good = block.header.height == height
                        && certificate.seq.0 == height
                        && certificate.digest.0 == block.header.hash()
                        && certificate.verify(&self.info.validators).is_ok();
                    if !good {
                        self.misbehaved(peer, "sync-bad-block", 10);
                        self.sync.failed(peer, Instant::now());
                        break;
                    }
                    // Blocks that consensus delivered meanwhile are skipped.
                    let expected = self.chain.tip().height + 1 + self.sync.queue.len() as u64;
                    match height.cmp(&expected) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => self.sync.queue.push_back(Queued {
                            body_from_sender: block.body.is_some(),
                            block,
                            from: peer,
                        }),
                        std::cmp::Ordering::Greater => break,
                    }
                }
                self.feed_sync_queue()?;
            }
            (Purpose::Fragment { height }, SyncResponse::Fragment(fragment)) => {
                self.fragment_answer(height, peer, Answer::Fragment(fragment))?;
            }
            (Purpose::Fragment { height }, SyncResponse::Busy) => {
                // Not a fault: it serves us as much as it will now. It rests.
                tracing::debug!(%peer, height, "peer is busy");
                self.fragment_answer(height, peer, Answer::Busy)?;
            }
            (purpose, SyncResponse::Busy) => {
                // Not a fault: it serves us as much as it will now. Ask others.
                tracing::debug!(%peer, ?purpose, "peer is busy");
                self.sync_request_failed(peer, purpose);
            }
            (purpose, SyncResponse::Error(reason)) => {
                tracing::debug!(%peer, reason, "peer could not serve sync request");
                if let Purpose::Blocks { .. } = purpose {
                    // A validator serves every height it reported to other validators.
                    self.misbehaved(peer, "sync-refused", 3);
                }
                self.sync_request_failed(peer, purpose);
            }
            (purpose, _) => {
                self.misbehaved(peer, "sync-wrong-response", 5);
                self.sync_request_failed(peer, purpose);
            }
        }
        Ok(())
    }

    /// Hands queued certified blocks to consensus in order; a block without a body
    /// waits for its fragments.
    fn feed_sync_queue(&mut self) -> Result<(), NodeError> {
        while let Some(queued) = self.sync.queue.front() {
            let block = &queued.block;
            let height = block.header.height;
            let tip = self.chain.tip().height;
            if height <= tip {
                self.sync.queue.pop_front();
                continue;
            }
            if height != tip + 1 {
                // A gap (consensus moved on some other way): start over.
                self.sync.queue.clear();
                break;
            }
            let body = match &block.body {
                Some(body) => body.clone(),
                None => {
                    let commitment = block.header.fragments;
                    if !self.gather.is_gathering(height) {
                        self.gather_fragments(height, commitment, Waiter::Sync)?;
                    }
                    return Ok(());
                }
            };
            let Some(Queued {
                block,
                from,
                body_from_sender,
            }) = self.sync.queue.pop_front()
            else {
                break;
            };
            let txs = match codec::decode::<Vec<SignedTransfer>>(&body, BODY_BYTES_MAX) {
                Ok(txs) => txs,
                Err(_) => {
                    tracing::warn!(height, %from, "synced body does not decode; asking another peer");
                    self.sync.queue.clear();
                    if body_from_sender {
                        self.misbehaved(from, "sync-bad-body", 10);
                        self.sync.failed(from, Instant::now());
                    }
                    break;
                }
            };
            let payload = Block {
                header: block.header,
                txs,
            }
            .to_bytes();
            let invalid_before = self.rejection_count("invalid-payload");
            self.drive(Input::CertifiedPayload {
                payload,
                certificate: block.certificate,
            })?;
            if self.chain.tip().height < height {
                self.sync.queue.clear();
                // The certificate is verified, so a body that fails the block check
                // is the sender's doing; anything else is retried after a pause.
                if body_from_sender && self.rejection_count("invalid-payload") > invalid_before {
                    tracing::warn!(height, %from, "synced body fails the block check; asking another peer");
                    self.misbehaved(from, "sync-bad-body", 10);
                    self.sync.failed(from, Instant::now());
                } else {
                    tracing::warn!(
                        height,
                        "synced block was not accepted; retrying in a second"
                    );
                    self.sync.backoff_until = Some(Instant::now() + Duration::from_secs(1));
                }
                break;
            }
            self.sync.answered(&from);
        }
        self.log_sync_progress();
        if self.sync.queue.is_empty() {
            self.request_blocks();
        }
        Ok(())
    }

    /// The height at least one honest validator reached (see [`CatchUp`]).
    fn network_height(&self) -> u64 {
        self.sync.network_height()
    }

    /// How often consensus refused an input for `reason` so far.
    fn rejection_count(&self, reason: &str) -> u64 {
        self.replica.rejections().get(reason).copied().unwrap_or(0)
    }

    /// Asks the next peer in turn for the next blocks, if behind.
    fn request_blocks(&mut self) {
        let tip = self.chain.tip().height;
        let target = self.network_height();
        if self.sync.backoff_until.is_some_and(|t| t > Instant::now()) {
            return;
        }
        if self.sync.in_flight.is_some() || !self.sync.queue.is_empty() || target <= tip {
            if target <= tip && self.sync.started.take().is_some() {
                tracing::info!(height = tip, "caught up");
            }
            return;
        }
        let now = Instant::now();
        let connected = &self.connected;
        let own = self.info.peer_id;
        let Some(peer) = self.sync.choose(
            tip,
            now,
            |p| *p != own && connected.contains_key(p),
            &self.info.validator_peers,
        ) else {
            return;
        };
        if self.sync.started.is_none() {
            self.sync.started = Some((Instant::now(), tip));
            tracing::info!(local = tip, network = target, "catching up");
        }
        let request = SyncRequest::Blocks {
            from: tip + 1,
            count: SYNC_BLOCKS_MAX,
        };
        if self.send_sync(peer, &request, Purpose::Blocks { from: tip + 1 }) {
            self.sync.asked(peer, now);
        }
    }

    fn log_sync_progress(&mut self) {
        let Some((started, from)) = self.sync.started else {
            return;
        };
        if self
            .sync
            .last_progress_log
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.sync.last_progress_log = Some(Instant::now());
        let tip = self.chain.tip().height;
        let network = self.network_height().max(tip);
        let rate = (tip - from) as f64 / started.elapsed().as_secs_f64().max(0.001);
        let eta = if rate > 0.0 {
            format!("{:.0}s", (network - tip) as f64 / rate)
        } else {
            "unknown".to_string()
        };
        tracing::info!(
            local = tip,
            network,
            blocks_per_s = format!("{rate:.1}"),
            eta,
            "catching up"
        );
    }

    /// Gathers the fragments of `height` from the connected validators for
    /// `waiter` (see [`crate::gather`]).
    fn gather_fragments(
        &mut self,
        height: u64,
        commitment: FragmentCommitment,
        waiter: Waiter,
    ) -> Result<(), NodeError> {
        let own = if self.gather.is_gathering(height) {
            None
        } else {
            self.store.own_fragment(height).ok().flatten()
        };
        let peers: Vec<PeerId> = self
            .info
            .validator_peers
            .iter()
            .filter(|p| **p != self.info.peer_id && self.connected.contains_key(*p))
            .copied()
            .collect();
        let now = Instant::now();
        match self
            .gather
            .start(height, commitment, own, &peers, waiter, now)
        {
            Start::Joined => {}
            Start::Full(Waiter::Api(reply)) => {
                let _ = reply.send(Vec::new());
            }
            Start::Full(Waiter::Sync) => {
                // Try again shortly rather than leave the queue stuck.
                self.sync.queue.clear();
                self.sync.backoff_until = Some(now + Duration::from_secs(1));
            }
            Start::Ask(peers) => {
                for peer in peers {
                    let sent = self.send_sync(
                        peer,
                        &SyncRequest::Fragment { height },
                        Purpose::Fragment { height },
                    );
                    if !sent {
                        self.gather.arrived(height, peer, Answer::Failed, now);
                    }
                }
            }
        }
        self.finish_gatherings()
    }

    /// `peer` answered (or failed to answer) the fragment request for `height`.
    fn fragment_answer(
        &mut self,
        height: u64,
        peer: PeerId,
        answer: Answer,
    ) -> Result<(), NodeError> {
        if let Some((reason, points)) = self.gather.arrived(height, peer, answer, Instant::now()) {
            self.misbehaved(peer, reason, points);
        }
        self.finish_gatherings()
    }

    /// Hands every finished gathering to its waiters.
    fn finish_gatherings(&mut self) -> Result<(), NodeError> {
        for done in self.gather.take_done(Instant::now()) {
            for waiter in done.waiters {
                match waiter {
                    Waiter::Api(reply) => {
                        let _ = reply.send(done.fragments.clone());
                    }
                    Waiter::Sync => {
                        self.rebuild_synced_body(done.height, &done.commitment, &done.fragments)?
                    }
                }
            }
        }
        Ok(())
    }

    fn rebuild_synced_body(
        &mut self,
        height: u64,
        commitment: &FragmentCommitment,
        fragments: &[Fragment],
    ) -> Result<(), NodeError> {
        let Some(front) = self.sync.queue.front_mut() else {
            return Ok(());
        };
        if front.block.header.height != height {
            return Ok(());
        }
        match coding::reconstruct(commitment, fragments.to_vec()) {
            Ok(rebuilt) => {
                tracing::info!(height, "rebuilt a pruned body from peers' fragments");
                front.block.body = Some(rebuilt.body);
                front.body_from_sender = false;
                self.feed_sync_queue()?;
            }
            Err(CodingError::NotEnoughFragments { found, needed, .. }) => {
                tracing::warn!(height, found, needed, "not enough fragments yet; retrying");
                self.sync.queue.clear();
            }
            Err(e) => {
                tracing::warn!(height, error = %e, "cannot rebuild body; retrying");
                self.sync.queue.clear();
            }
        }
        Ok(())
    }

    // ----- periodic work -----

    fn on_tick(&mut self) -> Result<(), NodeError> {
        if let Some(maverick) = self.maverick.as_mut() {
            maverick.tick(maverick::TickContext {
                links: &self.links,
                swarm: &mut self.swarm,
                topic: &self.topic,
                connected: self.connected.keys().copied().collect(),
                tip: self.chain.tip().height,
                view: self.replica.view(),
            });
        }
        if self.status_dirty {
            self.status_dirty = false;
            self.update_status();
        }
        self.flush_gossip();
        self.relay_tick()?;
        self.pump()?;
        if self.last_pending_check.elapsed() >= Duration::from_millis(50) {
            self.last_pending_check = Instant::now();
            self.signal_pending()?;
        }
        // Gatherings past their deadline.
        self.finish_gatherings()?;
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        Ok(())
    }

    /// The relay's periodic work: proposals that gossip filled go to consensus,
    /// those of replaced primaries are forgotten, and due wants go out.
    fn relay_tick(&mut self) -> Result<(), NodeError> {
        if std::mem::take(&mut self.refill_due) && self.relay.waiting() > 0 {
            let whole = {
                let shared = lock(&self.shared);
                let mempool = &shared.mempool;
                self.relay.refill(Instant::now(), |id| mempool.verified(id))
            };
            for (from, assembly) in whole {
                if let Some(peer) = self.info.validator_peers.get(from.0 as usize).copied() {
                    self.on_assembled(peer, from, assembly)?;
                }
            }
        }
        self.relay.forget_views_before(self.replica.view());
        for (to, want) in self.relay.due(Instant::now()) {
            self.send_want(to, &want);
        }
        Ok(())
    }

    /// Asks validator `to`, the primary of a waiting proposal, for its transfers.
    fn send_want(&self, to: ReplicaId, want: &proposal::Want) {
        if let Ok(bytes) = proposal::want_frame(want) {
            self.links.send(to.0 as usize, Arc::new(bytes));
        }
    }

    /// Tells consensus whether transactions are waiting (arms the view-change timer
    /// while the primary does not propose them). A proposal of the current view
    /// waiting for transfers counts: a primary that never supplies them is
    /// replaced.
    fn signal_pending(&mut self) -> Result<(), NodeError> {
        let pending = {
            let mut shared = lock(&self.shared);
            self.metrics
                .mempool_transactions
                .set(shared.mempool.len() as i64);
            self.metrics
                .block_transactions_unchecked
                .inc_by(shared.mempool.take_unchecked_in_blocks());
            let ledger = &shared.ledger;
            shared.mempool.has_ready(|k| ledger.account(k).nonce)
                || self.relay.waiting_in(self.replica.view())
        };
        if self.pending_sent != Some(pending) {
            self.pending_sent = Some(pending);
            self.drive(Input::Pending(pending))?;
        }
        Ok(())
    }

    fn on_slow_tick(&mut self) -> Result<(), NodeError> {
        self.redial();
        let stale = {
            let mut shared = lock(&self.shared);
            let Shared {
                mempool, ledger, ..
            } = &mut *shared;
            mempool.stale(REGOSSIP_AGE_ROUNDS, REGOSSIP_TXS_MAX, ledger)
        };
        if !stale.is_empty() {
            self.metrics
                .transactions_regossiped
                .inc_by(stale.len() as u64);
            let room = GOSSIP_QUEUE_MAX.saturating_sub(self.gossip_out.len());
            self.gossip_out.extend(stale.into_iter().take(room));
        }
        self.compact_index();
        for peer in self.peers.second_passed(Instant::now()) {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            tracing::info!(%peer, "ban ended");
        }
        self.metrics
            .peers_banned
            .set(self.peers.banned_count() as i64);
        // Ask connected validators how far they are; no progress since the last
        // round while someone is ahead means we fell behind: catch up.
        let tip = self.chain.tip().height;
        let peers: Vec<PeerId> = self
            .info
            .validator_peers
            .iter()
            .filter(|p| self.connected.contains_key(*p))
            .copied()
            .collect();
        for peer in peers {
            self.send_sync(peer, &SyncRequest::Status, Purpose::Status);
        }
        if self.network_height() > tip && self.sync.tip_at_last_round == tip {
            self.request_blocks();
        }
        self.sync.tip_at_last_round = tip;
        let dropped = self.links.dropped();
        if dropped > self.links_dropped_seen {
            self.metrics
                .consensus_dropped
                .inc_by(dropped - self.links_dropped_seen);
            self.links_dropped_seen = dropped;
        }
        self.update_status();
        let (mempool, backlog) = {
            let shared = lock(&self.shared);
            (shared.mempool.len(), shared.backlog.queued())
        };
        self.overview.second(
            unix_ms(),
            tip,
            mempool,
            backlog,
            self.metrics.api_unavailable.get(),
        );
        Ok(())
    }

    /// What this validator says of itself in its status answers.
    fn own_report(&self) -> PeerReport {
        let scrub = &self.metrics.scrub;
        let (unrepaired, unrepaired_more) = scrub.unrepaired.ranges(REPORT_RANGES_MAX);
        PeerReport {
            view: self.replica.view().0,
            primary: self.replica.primary().0,
            view_changing: self.replica.status() != mosaic_consensus::Status::Normal,
            peers: u32::try_from(self.connected.len()).unwrap_or(u32::MAX),
            syncing: self.sync.started.is_some(),
            commit_age_ms: self.overview.commit_age_ms(Instant::now()),
            scrub_position: u64::try_from(scrub.position.get()).unwrap_or(0),
            scrub_passes: scrub.passes.get(),
            unrepaired,
            unrepaired_more,
        }
    }

    fn update_status(&mut self) {
        let mut status = match self.status.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        status.view = self.replica.view().0;
        status.primary = self.replica.primary().0;
        status.view_changing = self.replica.status() != mosaic_consensus::Status::Normal;
        status.peers = self.connected.keys().map(|p| p.to_string()).collect();
        status.network_height = self.network_height();
        status.network_known = self.sync.network_known();
        status.syncing = self.sync.started.is_some();
    }
}

/// Now in Unix milliseconds (0 if the clock is before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
