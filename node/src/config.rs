//! One validator's configuration file (TOML). Every field has a default except the
//! key file and the genesis file; unknown fields are refused so typos are caught.
//!
//! ```toml
//! key_file = "keys/validator.json"
//! genesis_file = "genesis.json"
//! data_dir = "data/v0"
//! listen = ["/ip4/127.0.0.1/tcp/7000"]
//! api_address = "127.0.0.1:8000"
//! bootstrap = ["/ip4/127.0.0.1/tcp/7001/p2p/12D3Koo..."]
//! mdns = false
//!
//! [batching]
//! txs_max = 4000
//! bytes_max = 2097152
//! delay_ms = 40           # how long a primary waits for more transfers before a block that is not full
//! idle_block_ms = 1000  # an empty block this often while only waiting transfers are pending
//!
//! [consensus]
//! checkpoint_interval = 16
//! window = 64
//! view_change_timeout_ms = 2000
//! view_change_timeout_max_ms = 60000
//!
//! [storage]
//! body_window_blocks = 1024
//! body_window_mib = 256
//! cache_mib = 64
//!
//! [mempool]
//! txs_max = 200000
//! bytes_max = 67108864
//! valid_for_max = 100000     # how far past the tip a transfer's valid_until may be
//! log_bytes_max = 268435456  # the mempool log's bound on disk (data_dir/mempool-log)
//! backlog_ms_max = 300       # submissions shed (503) past about this much queued work (0: never)
//! behind_heights_max = 8     # submissions refused (503) while this node is further behind the network
//!
//! [connections]
//! incoming_max = 256
//! pending_incoming_max = 64
//! per_peer_max = 4
//!
//! [api]
//! connections_max = 512
//! idle_timeout_secs = 60
//!
//! [gossip]
//! peer_waiting_bytes_max = 8388608
//! others_waiting_bytes_max = 16777216
//!
//! [sync_serving]
//! requests_per_second = 100
//! requests_burst = 200
//! queued_per_peer_max = 16
//! reads_running_max = 8
//!
//! [scrub]
//! enabled = true
//! bytes_per_second = 4194304
//! pass_pause_secs = 60
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The connection limits are the network's own (net.rs); the config composes them.
pub use crate::net::ConnectionLimits;

/// Largest config file read.
const CONFIG_BYTES_MAX: u64 = 1024 * 1024;

/// A validator's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The validator's key file (its consensus key and libp2p identity).
    pub key_file: PathBuf,
    /// The chain's genesis file.
    pub genesis_file: PathBuf,
    /// Where the store lives.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// libp2p listen multiaddresses.
    #[serde(default = "defaults::listen")]
    pub listen: Vec<String>,
    /// HTTP API address (loopback by default).
    #[serde(default = "defaults::api_address")]
    pub api_address: SocketAddr,
    /// Peers to dial at start (multiaddresses with /p2p/<peer id>).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network with mDNS.
    #[serde(default)]
    pub mdns: bool,
    /// How the primary builds blocks.
    #[serde(default)]
    pub batching: Batching,
    /// Consensus tunables.
    #[serde(default)]
    pub consensus: ConsensusTuning,
    /// Storage tunables.
    #[serde(default)]
    pub storage: StorageTuning,
    /// Mempool limits.
    #[serde(default)]
    pub mempool: MempoolLimits,
    /// libp2p connection limits.
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// HTTP API limits.
    #[serde(default)]
    pub api: ApiLimits,
    /// Gossip budgets.
    #[serde(default)]
    pub gossip: GossipBudgets,
    /// What other validators may make this node read for sync.
    #[serde(default)]
    pub sync_serving: SyncServing,
    /// The scrub of own fragments.
    #[serde(default)]
    pub scrub: ScrubTuning,
}

/// Budgets for serving sync requests (status, certified blocks, fragments) to
/// other validators; see [`crate::serve`]. Keep them equal across the validators:
/// a node that asks faster than its peers serve is told "busy" and rests them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncServing {
    /// Tokens each peer's bucket gains per second: a status or fragment request
    /// costs 1, a batch of up to 32 blocks 4. Honest validators ask for a status
    /// once a second, for blocks one batch at a time while catching up, and for one
    /// fragment per block they rebuild.
    pub requests_per_second: u32,
    /// Tokens a bucket holds at most. Without tokens a request is answered "busy"
    /// for free until the peer is this many tokens in debt; from then on each
    /// request costs it a misbehaviour point.
    pub requests_burst: u32,
    /// Block and fragment reads waiting or running for one peer, at most (one runs
    /// at a time per peer); more are answered "busy".
    pub queued_per_peer_max: usize,
    /// Reads running at once for all peers (each on a blocking thread).
    pub reads_running_max: usize,
}

impl Default for SyncServing {
    fn default() -> Self {
        SyncServing {
            requests_per_second: 100,
            requests_burst: 200,
            queued_per_peer_max: 16,
            reads_running_max: 8,
        }
    }
}

/// How many bytes of gossiped transfers may wait for (or be in) a signature check.
/// A message is weighed against its sender's budget before it is decoded; one that
/// does not fit is dropped (counted as `gossip-dropped-peer-budget` in
/// `mosaic_messages_rejected`), so no peer can use up another's room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipBudgets {
    /// Per peer (at least one maximal message, 4 MiB; memory grows by up to a few
    /// times this per connected validator, as decoded transfers are larger).
    pub peer_waiting_bytes_max: usize,
    /// All peers outside the genesis validator set together (at least
    /// `peer_waiting_bytes_max`; validators never need room in it).
    pub others_waiting_bytes_max: usize,
}

impl Default for GossipBudgets {
    fn default() -> Self {
        GossipBudgets {
            peer_waiting_bytes_max: 8 * 1024 * 1024,
            others_waiting_bytes_max: 16 * 1024 * 1024,
        }
    }
}

/// HTTP API limits: clients that hold connections open without sending can fill
/// the API's slots, but not the process's file descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Open client connections at most; more wait in the kernel's backlog.
    pub connections_max: usize,
    /// A connection with no byte to or from its client for this long is closed
    /// (at least 30: a handler rebuilding a block waits up to 15 s).
    pub idle_timeout_secs: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            connections_max: 512,
            idle_timeout_secs: 60,
        }
    }
}

/// Block building: a block is proposed when it is full (count or bytes) or the delay
/// since the first waiting transaction has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Most transactions per block.
    pub txs_max: usize,
    /// Most body bytes per block.
    pub bytes_max: usize,
    /// Longest wait for more transactions, in milliseconds. Each block costs the
    /// validators a fixed amount of work (its consensus round, store commit and
    /// fragments), so fewer, larger blocks cost less CPU per transfer: at
    /// 10,000/s on 2 cores, 40 ms instead of 5 ms took ~15% off it for ~20 ms more
    /// latency (docs/PERFORMANCE.md).
    pub delay_ms: u64,
    /// While transactions are pending but none can go in a block (each waits for an
    /// earlier nonce of its sender), the primary proposes an empty block this often,
    /// in milliseconds, so heights move on and those transactions expire on time.
    pub idle_block_ms: u64,
}

/// Consensus tunables (see the consensus crate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusTuning {
    /// K: blocks between checkpoints.
    pub checkpoint_interval: u64,
    /// L: sequence numbers in flight above the stable checkpoint (>= 2K).
    pub window: u64,
    /// First view-change timeout.
    pub view_change_timeout_ms: u64,
    /// Cap of the doubling timeout.
    pub view_change_timeout_max_ms: u64,
}

/// The scrub of own fragments ([`crate::scrub`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubTuning {
    /// Whether the scrub runs (it should: it is what keeps every block rebuildable).
    pub enabled: bool,
    /// Fragment bytes read per second at most.
    pub bytes_per_second: u64,
    /// Seconds of rest between passes.
    pub pass_pause_secs: u64,
}

impl Default for ScrubTuning {
    fn default() -> Self {
        ScrubTuning {
            enabled: true,
            bytes_per_second: 4 << 20,
            pass_pause_secs: 60,
        }
    }
}

/// Storage tunables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageTuning {
    /// Recent blocks whose full bodies are kept (older ones: own fragment only).
    pub body_window_blocks: u64,
    /// At most this many MiB of those bodies are kept (0: no bound in bytes); the
    /// newest is always kept.
    pub body_window_mib: u64,
    /// The store's page cache in MiB (memory grows to about this plus the node's
    /// state).
    pub cache_mib: u64,
}

/// Mempool limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolLimits {
    /// Most pending transactions.
    pub txs_max: usize,
    /// Most pending bytes.
    pub bytes_max: usize,
    /// How far past the tip a transfer's `valid_until` may lie, in heights.
    pub valid_for_max: u64,
    /// Most bytes of the mempool log (`data_dir/mempool-log`): accepted transfers
    /// not yet committed or dropped. Past it submissions are answered 503.
    pub log_bytes_max: u64,
    /// Queued work admission takes, in milliseconds of commits: past it the API
    /// answers 503 with `Retry-After` ([`crate::backlog`]). 0 never sheds.
    pub backlog_ms_max: u64,
    /// Heights this node may be behind the network (the (f+1)-th highest height its
    /// peers report) and still admit submissions: further behind, it answers 503,
    /// since its checks (nonce, expiry, balance) would run against an old state.
    pub behind_heights_max: u64,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            txs_max: 4_000,
            bytes_max: 2 * 1024 * 1024,
            delay_ms: 40,
            idle_block_ms: 1_000,
        }
    }
}

impl Default for ConsensusTuning {
    fn default() -> Self {
        ConsensusTuning {
            checkpoint_interval: 16,
            window: 64,
            view_change_timeout_ms: 2_000,
            view_change_timeout_max_ms: 60_000,
        }
    }
}

impl Default for StorageTuning {
    fn default() -> Self {
        StorageTuning {
            body_window_blocks: 1_024,
            body_window_mib: 256,
            cache_mib: 64,
        }
    }
}

impl Default for MempoolLimits {
    fn default() -> Self {
        MempoolLimits {
            txs_max: 50_000,
            bytes_max: 64 * 1024 * 1024,
            valid_for_max: crate::mempool::VALID_FOR_MAX,
            log_bytes_max: 256 * 1024 * 1024,
            backlog_ms_max: 300,
            behind_heights_max: 8,
        }
    }
}

mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    pub fn data_dir() -> PathBuf {
        PathBuf::from("data")
    }
    pub fn listen() -> Vec<String> {
        vec!["/ip4/127.0.0.1/tcp/0".to_string()]
    }
    pub fn api_address() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8000))
    }
}

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Cannot read it.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for a config.
    #[error("config file {path} is malformed: {reason}")]
    Malformed {
        /// Path.
        path: String,
        /// Parser message (with line and column).
        reason: String,
    },
    /// Valid TOML, unusable values.
    #[error("config file {path}: {reason}")]
    Invalid {
        /// Path.
        path: String,
        /// What to fix.
        reason: String,
    },
}

impl NodeConfig {
    /// Reads, checks, and resolves relative paths against the file's folder.
    pub fn read(path: &Path) -> Result<NodeConfig, ConfigError> {
        let shown = path.display().to_string();
        let io = |source| ConfigError::Io {
            path: shown.clone(),
            source,
        };
        if std::fs::metadata(path).map_err(io)?.len() > CONFIG_BYTES_MAX {
            return Err(ConfigError::Invalid {
                path: shown,
                reason: "larger than 1 MiB; this is not a config file".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Malformed {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        config.check().map_err(|reason| ConfigError::Invalid {
            path: shown,
            reason,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.key_file,
            &mut config.genesis_file,
            &mut config.data_dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Checks values that TOML types cannot express.
    pub fn check(&self) -> Result<(), String> {
        let c = &self.consensus;
        if c.checkpoint_interval == 0 || c.window < 2 * c.checkpoint_interval {
            return Err(format!(
                "consensus.window ({}) must be at least twice consensus.checkpoint_interval ({}), which must be at least 1",
                c.window, c.checkpoint_interval
            ));
        }
        if c.view_change_timeout_ms == 0 || c.view_change_timeout_max_ms < c.view_change_timeout_ms
        {
            return Err(
                "consensus.view_change_timeout_ms must be > 0 and <= view_change_timeout_max_ms"
                    .into(),
            );
        }
        if c.view_change_timeout_max_ms > 3_600_000 {
            return Err(
                "consensus.view_change_timeout_max_ms must be at most 3600000 (1 hour)".into(),
            );
        }
        if c.window > 4_096 {
            return Err("consensus.window must be at most 4096".into());
        }
        if self.batching.txs_max == 0 || self.batching.bytes_max == 0 {
            return Err("batching.txs_max and batching.bytes_max must be at least 1".into());
        }
        if self.batching.bytes_max > crate::block::BODY_BYTES_MAX {
            return Err(format!(
                "batching.bytes_max must be at most {}",
                crate::block::BODY_BYTES_MAX
            ));
        }
        if self.mempool.backlog_ms_max > 600_000 {
            return Err(
                "mempool.backlog_ms_max must be at most 600000 (10 minutes of queued work); 0 never sheds"
                    .into(),
            );
        }
        if !(1..=65_536).contains(&self.storage.cache_mib) {
            return Err("storage.cache_mib must be between 1 and 65536".into());
        }
        if self.storage.body_window_mib > 1 << 20 {
            return Err(
                "storage.body_window_mib must be at most 1048576 (1 TiB; 0 for no bound)".into(),
            );
        }
        if self.scrub.bytes_per_second < 4096 || self.scrub.bytes_per_second > 1 << 40 {
            return Err("scrub.bytes_per_second must be between 4096 and 1099511627776".into());
        }
        if self.scrub.pass_pause_secs > 7 * 86_400 {
            return Err("scrub.pass_pause_secs must be at most 604800 (a week)".into());
        }
        let n = &self.connections;
        if n.incoming_max == 0 {
            return Err("connections.incoming_max must be at least 1".into());
        }
        if n.pending_incoming_max == 0 {
            return Err("connections.pending_incoming_max must be at least 1".into());
        }
        if n.per_peer_max < 2 {
            return Err(
                "connections.per_peer_max must be at least 2 (two peers may dial each other at once)"
                    .into(),
            );
        }
        if !(1..=65_536).contains(&self.api.connections_max) {
            return Err("api.connections_max must be between 1 and 65536".into());
        }
        if !(30..=86_400).contains(&self.api.idle_timeout_secs) {
            return Err("api.idle_timeout_secs must be between 30 and 86400 (a handler rebuilding a block from fragments may take 15 s)".into());
        }
        let g = &self.gossip;
        if g.peer_waiting_bytes_max < crate::net::GOSSIP_BYTES_MAX
            || g.peer_waiting_bytes_max > 1 << 30
        {
            return Err(format!(
                "gossip.peer_waiting_bytes_max must be between {} (one maximal message) and 1073741824",
                crate::net::GOSSIP_BYTES_MAX
            ));
        }
        if g.others_waiting_bytes_max < g.peer_waiting_bytes_max
            || g.others_waiting_bytes_max > 1 << 30
        {
            return Err(
                "gossip.others_waiting_bytes_max must be between gossip.peer_waiting_bytes_max and 1073741824"
                    .into(),
            );
        }
        let v = &self.sync_serving;
        if !(1..=1_000_000).contains(&v.requests_per_second) {
            return Err("sync_serving.requests_per_second must be between 1 and 1000000".into());
        }
        if v.requests_burst < crate::serve::BLOCKS_COST || v.requests_burst > 1_000_000 {
            return Err(format!(
                "sync_serving.requests_burst must be between {} (one block request) and 1000000",
                crate::serve::BLOCKS_COST
            ));
        }
        if !(1..=4_096).contains(&v.queued_per_peer_max) {
            return Err("sync_serving.queued_per_peer_max must be between 1 and 4096".into());
        }
        if !(1..=256).contains(&v.reads_running_max) {
            return Err(
                "sync_serving.reads_running_max must be between 1 and 256 (blocking threads)"
                    .into(),
            );
        }
        if self.listen.is_empty() {
            return Err("listen needs at least one address".into());
        }
        Ok(())
    }

    /// The config as TOML (for `init` commands).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults_and_resolved_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "key_file = \"k.json\"\ngenesis_file = \"/abs/genesis.json\"\n",
        )
        .unwrap();
        let c = NodeConfig::read(&path).unwrap();
        assert_eq!(c.key_file, dir.path().join("k.json"));
        assert_eq!(c.genesis_file, PathBuf::from("/abs/genesis.json"));
        assert_eq!(c.api_address.ip().to_string(), "127.0.0.1");
        assert_eq!(c.consensus, ConsensusTuning::default());
        assert_eq!(c.connections, ConnectionLimits::default());
        assert_eq!(c.api, ApiLimits::default());
    }

    #[test]
    fn connection_limits_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "key_file = \"k\"\ngenesis_file = \"g\"\n[connections]\nincoming_max = 9\nper_peer_max = 3\n",
        )
        .unwrap();
        let c = NodeConfig::read(&path).unwrap().connections;
        assert_eq!(
            (c.incoming_max, c.pending_incoming_max, c.per_peer_max),
            (9, 64, 3)
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "key_file = \"/k.json\"\ngenesis_file = \"/g.json\"\ndata_dir = \"/d\"\n",
        )
        .unwrap();
        let c = NodeConfig::read(&path).unwrap();
        std::fs::write(&path, c.to_toml().unwrap()).unwrap();
        assert_eq!(NodeConfig::read(&path).unwrap(), c);
    }

    #[test]
    fn mistakes_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let cases = [
            ("key_file = \"k\"\n", "malformed"),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\ntypo = 1\n",
                "unknown field",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[consensus]\nwindow = 4\n",
                "at least twice",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[storage]\ncache_mib = 0\n",
                "cache_mib",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[storage]\nbody_window_mib = 2000000\n",
                "body_window_mib",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\napi_address = \"nonsense\"\n",
                "malformed",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[connections]\nincoming_max = 0\n",
                "connections.incoming_max",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[connections]\npending_incoming_max = 0\n",
                "connections.pending_incoming_max",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[connections]\nper_peer_max = 1\n",
                "connections.per_peer_max",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[connections]\nincoming = 5\n",
                "unknown field",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[api]\nconnections_max = 0\n",
                "api.connections_max",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[api]\nidle_timeout_secs = 29\n",
                "api.idle_timeout_secs",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[gossip]\npeer_waiting_bytes_max = 1000\n",
                "gossip.peer_waiting_bytes_max",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[gossip]\nothers_waiting_bytes_max = 4194304\n",
                "gossip.others_waiting_bytes_max",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[sync_serving]\nrequests_per_second = 0\n",
                "sync_serving.requests_per_second",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[sync_serving]\nrequests_burst = 3\n",
                "sync_serving.requests_burst",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[sync_serving]\nqueued_per_peer_max = 0\n",
                "sync_serving.queued_per_peer_max",
            ),
            (
                "key_file = \"k\"\ngenesis_file = \"g\"\n[sync_serving]\nreads_running_max = 0\n",
                "sync_serving.reads_running_max",
            ),
        ];
        for (text, expect) in cases {
            std::fs::write(&path, text).unwrap();
            let err = NodeConfig::read(&path).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
        assert!(matches!(
            NodeConfig::read(&dir.path().join("none.toml")),
            Err(ConfigError::Io { .. })
        ));
    }
}
