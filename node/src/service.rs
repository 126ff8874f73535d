//! Starting a validator: [`start`] opens the store, recovers the mempool log,
//! restores consensus, builds libp2p, the HTTP API and the scrub, and hands the
//! parts to the event loop (`crate::driver`, one tokio task that owns the replica
//! and the swarm). The API and the scrub talk to the loop through
//! [`crate::control`]'s [`Command`]s and the shared state; [`NodeHandle`] stops it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use mosaic_consensus::{
    CheckpointProof, Config as ConsensusConfig, Digest, Replica, ReplicaId, Restored, SeqNum,
};
use mosaic_crypto::{Hash, Keypair};
use mosaic_storage::StoreConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api;
use crate::block::BODY_BYTES_MAX;
use crate::chain::{BlockCheck, Chain, CheckedBlocks, Layout, Shared, Tip};
use crate::config::NodeConfig;
pub use crate::control::{Command, NodeInfo, StatusInfo};
use crate::driver;
pub use crate::error::NodeError;
use crate::genesis::Genesis;
use crate::ledger::Ledger;
use crate::links::{self, Links};
use crate::maverick;
use crate::mempool::{Mempool, MempoolConfig};
use crate::mempool_log::{self, LogConfig};
use crate::metrics::Metrics;
use crate::net::{self, Behaviour, NetError};
use crate::overview::Overview;
use crate::schema::{NodeStore, PersistedConsensus};
use crate::scrub::{GatheredByNode, Scrub, ScrubConfig};
use crate::sigbatch::SigBatcher;
use crate::verify_pool::VerifyPool;

/// Consensus messages read from the links and waiting for the event loop, at most
/// (the links also cap their bytes per validator).
const CONSENSUS_INBOUND_QUEUE: usize = 1_024;

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
    let edge = maverick::edge(
        options.maverick,
        crate::edge::EdgeSetup {
            key: &key,
            validators: validators.clone(),
            index,
            window: config.consensus.window,
            payload_bytes_max,
        },
    )
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

    let chain_exec = Chain::new(
        shared.clone(),
        store.clone(),
        layout.clone(),
        index,
        checked.clone(),
        proofs,
    );
    let parts = driver::Parts {
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
        edge,
        signatures,
        links,
        mempool_log,
        verify_backlog,
        payload_bytes_max,
    };
    let task = driver::launch(parts, reloaded, shutdown_rx, consensus_in)?;
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
