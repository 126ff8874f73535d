//! Prometheus metrics (served at `/metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set with one `reason` or `kind` label.
pub type Labels = Vec<(&'static str, String)>;

/// The node's metrics. Cheap to clone (each metric is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    /// Executed height.
    pub height: Gauge,
    /// Current view.
    pub view: Gauge,
    /// Views entered after the first.
    pub view_changes: Counter,
    /// Connections closed because their peer stopped answering pings.
    pub connections_dead: Counter,
    /// Pending transactions.
    pub mempool_transactions: Gauge,
    /// Committed blocks.
    pub blocks_committed: Counter,
    /// Committed transactions (applied or failed).
    pub transactions_committed: Counter,
    /// Inbound messages by kind.
    pub messages_in: Family<Labels, Counter>,
    /// Refused inbound data by reason.
    pub messages_rejected: Family<Labels, Counter>,
    /// Seconds from a block's proposal reaching this node to its commit here.
    pub commit_latency: Histogram,
    /// Fragments served to peers and clients.
    pub fragments_served: Counter,
    /// Connected peers.
    pub peers_connected: Gauge,
    /// Peers banned for misbehaviour (their connections refused) now.
    pub peers_banned: Gauge,
    /// Connections refused, by reason (`banned`, `limit`).
    pub connections_denied: Family<Labels, Counter>,
    /// Run files of the transaction index (a lookup reads one block of each).
    pub tx_index_runs: Gauge,
    /// Transactions submitted through this node's API.
    pub transactions_submitted: Counter,
    /// Pending transactions gossiped again because no block took them for a while.
    pub transactions_regossiped: Counter,
    /// Transactions refused because the mempool log could not keep them.
    pub mempool_log_refused: Counter,
    /// Submitted transactions shed (503) because more work was queued than
    /// `mempool.backlog_ms_max` allows.
    pub submissions_shed: Counter,
    /// Logged transactions expired or superseded before a block included them.
    pub transactions_dropped: Counter,
    /// API answers of 503 (busy, overloaded, too few validators up for a read).
    pub api_unavailable: Counter,
    /// Consensus messages not sent: the validator was unreachable or its queue full.
    pub consensus_dropped: Counter,
    /// Transactions of blocks whose signatures this node checked only then.
    pub block_transactions_unchecked: Counter,
    /// Transfers of compact proposals this node lacked and fetched from the primary.
    pub proposal_transfers_fetched: Counter,
    /// Payload bytes of PRE-PREPAREs held until their parent is executed.
    pub held_bytes: Gauge,
    /// Misbehaviour points charged to peers, by reason.
    pub misbehaviour_points: Family<Labels, Counter>,
    /// Sync reads (blocks, fragments) for peers running or waiting.
    pub sync_reads_queued: Gauge,
    /// The scrub of own fragments ([`crate::scrub`]).
    pub scrub: crate::scrub::ScrubMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mosaic");
        let height = Gauge::default();
        let view = Gauge::default();
        let view_changes = Counter::default();
        let connections_dead = Counter::default();
        let mempool_transactions = Gauge::default();
        let blocks_committed = Counter::default();
        let transactions_committed = Counter::default();
        let messages_in = Family::<Labels, Counter>::default();
        let messages_rejected = Family::<Labels, Counter>::default();
        let commit_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let fragments_served = Counter::default();
        let peers_connected = Gauge::default();
        let peers_banned = Gauge::default();
        let connections_denied = Family::<Labels, Counter>::default();
        let tx_index_runs = Gauge::default();
        let transactions_submitted = Counter::default();
        let mempool_log_refused = Counter::default();
        let submissions_shed = Counter::default();
        let transactions_regossiped = Counter::default();
        let transactions_dropped = Counter::default();
        let consensus_dropped = Counter::default();
        let block_transactions_unchecked = Counter::default();
        let proposal_transfers_fetched = Counter::default();
        let held_bytes = Gauge::default();
        let misbehaviour_points = Family::<Labels, Counter>::default();
        let sync_reads_queued = Gauge::default();
        let scrub = crate::scrub::ScrubMetrics::default();
        registry.register(
            "scrub_fragments_checked",
            "Own fragments the scrub read and checked against their block's commitment",
            scrub.checked.clone(),
        );
        registry.register(
            "scrub_fragments_missing",
            "Own fragments the scrub found missing or corrupt",
            scrub.missing.clone(),
        );
        registry.register(
            "scrub_fragments_repaired",
            "Own fragments re-derived (from the body or peers' fragments) and stored",
            scrub.repaired.clone(),
        );
        registry.register(
            "scrub_repairs_failed",
            "Repairs that failed (too few good fragments from peers); the next pass retries",
            scrub.failed.clone(),
        );
        registry.register(
            "scrub_position",
            "The height the scrub is checking (0 between passes)",
            scrub.position.clone(),
        );
        registry.register(
            "scrub_passes",
            "Full scrub passes over every committed height",
            scrub.passes.clone(),
        );
        registry.register(
            "sync_reads_queued",
            "Sync reads (blocks, fragments) for peers running or waiting, off the event loop",
            sync_reads_queued.clone(),
        );
        registry.register(
            "held_bytes",
            "Payload bytes of PRE-PREPAREs held until their parent is executed",
            held_bytes.clone(),
        );
        registry.register(
            "misbehaviour_points",
            "Misbehaviour points charged to peers, by reason (a peer is banned at 20)",
            misbehaviour_points.clone(),
        );
        registry.register("height", "Executed block height", height.clone());
        registry.register("view", "Current consensus view", view.clone());
        registry.register(
            "view_changes",
            "Views entered after the first",
            view_changes.clone(),
        );
        registry.register(
            "connections_dead",
            "Connections closed because the peer stopped answering pings (a partition or a dead link); the peer is dialled again",
            connections_dead.clone(),
        );
        registry.register(
            "mempool_transactions",
            "Pending transactions in the mempool",
            mempool_transactions.clone(),
        );
        let api_unavailable = Counter::default();
        registry.register(
            "api_unavailable_responses",
            "HTTP API answers of 503 (refused for load, or too few validators up for a read)",
            api_unavailable.clone(),
        );
        registry.register(
            "blocks_committed",
            "Blocks committed and executed",
            blocks_committed.clone(),
        );
        registry.register(
            "transactions_committed",
            "Transactions in committed blocks (applied or failed)",
            transactions_committed.clone(),
        );
        registry.register(
            "messages_in",
            "Inbound messages by kind",
            messages_in.clone(),
        );
        registry.register(
            "messages_rejected",
            "Refused inbound data by reason",
            messages_rejected.clone(),
        );
        registry.register(
            "commit_latency_seconds",
            "Seconds from a block's proposal reaching this node to its commit here",
            commit_latency.clone(),
        );
        registry.register(
            "fragments_served",
            "Fragments served to peers and clients",
            fragments_served.clone(),
        );
        registry.register(
            "peers_connected",
            "Connected libp2p peers",
            peers_connected.clone(),
        );
        registry.register(
            "peers_banned",
            "Peers banned for misbehaviour: their connections are refused both ways",
            peers_banned.clone(),
        );
        registry.register(
            "connections_denied",
            "libp2p connections refused, both ways: to or from a banned peer, or over a connection limit",
            connections_denied.clone(),
        );
        registry.register(
            "tx_index_runs",
            "Run files of the transaction index: a lookup reads one block of each (merged 8 at a time)",
            tx_index_runs.clone(),
        );
        registry.register(
            "transactions_submitted",
            "Transactions accepted through this node's HTTP API",
            transactions_submitted.clone(),
        );
        registry.register(
            "transactions_regossiped",
            "Pending transactions gossiped again because no block included them within a few seconds",
            transactions_regossiped.clone(),
        );
        registry.register(
            "mempool_log_refused",
            "Submitted transactions refused (503) because the mempool log could not write them (log full, disk error)",
            mempool_log_refused.clone(),
        );
        registry.register(
            "submissions_shed",
            "Submitted transactions refused (503, Retry-After) because more work was queued than mempool.backlog_ms_max of commits",
            submissions_shed.clone(),
        );
        registry.register(
            "transactions_dropped",
            "Pending transactions dropped without being committed: expired, their nonce used by another, or behind a nonce gap past the gapped share",
            transactions_dropped.clone(),
        );
        registry.register(
            "consensus_messages_dropped",
            "Consensus messages not sent: the validator was unreachable or its link's queue full",
            consensus_dropped.clone(),
        );
        registry.register(
            "block_transactions_unchecked",
            "Transactions a block carried before this node had checked their signatures (checked then, on the critical path)",
            block_transactions_unchecked.clone(),
        );
        registry.register(
            "proposal_transfers_fetched",
            "Transfers of compact proposals this node lacked and fetched from the primary",
            proposal_transfers_fetched.clone(),
        );
        Metrics {
            registry: std::sync::Arc::new(registry),
            height,
            view,
            view_changes,
            connections_dead,
            mempool_transactions,
            blocks_committed,
            transactions_committed,
            messages_in,
            messages_rejected,
            commit_latency,
            fragments_served,
            peers_connected,
            peers_banned,
            connections_denied,
            tx_index_runs,
            transactions_submitted,
            mempool_log_refused,
            submissions_shed,
            transactions_regossiped,
            transactions_dropped,
            api_unavailable,
            consensus_dropped,
            block_transactions_unchecked,
            proposal_transfers_fetched,
            held_bytes,
            misbehaviour_points,
            sync_reads_queued,
            scrub,
        }
    }

    /// Counts one inbound message of `kind`.
    pub fn message_in(&self, kind: &'static str) {
        self.messages_in
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// Counts one connection refused for `reason`.
    pub fn connection_denied(&self, reason: &'static str) {
        self.connections_denied
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// Counts `count` refusals for `reason`.
    pub fn rejected(&self, reason: &str, count: u64) {
        self.messages_rejected
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(count);
    }

    /// Counts `points` charged for `reason`.
    pub fn misbehaved(&self, reason: &str, points: u32) {
        self.misbehaviour_points
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(u64::from(points));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
