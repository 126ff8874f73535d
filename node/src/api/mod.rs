//! The HTTP API (JSON; submissions also take the canonical binary encoding). Every
//! error is a 4xx/5xx with `{"error": "..."}` saying what is wrong and what to do. A
//! submission refused for load (503: mempool full, signature checks busy, more work
//! queued than `mempool.backlog_ms_max`) carries `Retry-After`; a batch carries it
//! when any of its transfers was refused so. Reads of bodies, fragments and
//! headers are heavy reads ([`crate::read_budget`]): at most a few run at once
//! (past that, 503 with `Retry-After`), and each stops within a byte and a time
//! budget, saying where (`to`) when it covers many heights.
//!
//! | Method | Path | What |
//! |---|---|---|
//! | GET | `/v1/status` | chain id, height, view, primary, validators, peers |
//! | GET | `/v1/genesis` | the genesis file |
//! | POST | `/v1/transactions` | submit one signed transfer (JSON, or its canonical encoding as `application/octet-stream`) |
//! | POST | `/v1/transactions/batch` | submit up to 10,000 (a JSON list, or the canonical encoding of the list as `application/octet-stream`) |
//! | GET | `/v1/transactions/{hash}` | pending / committed / failed / unknown (checked against the block, rebuilt from fragments when pruned: 503 if too few validators are up) |
//! | GET | `/v1/accounts/{address}` | balance and next nonce |
//! | GET | `/v1/blocks/{height}` | header, certificate, transactions (rebuilt from fragments when pruned); `?view=hashes`: transaction ids only |
//! | GET | `/v1/blocks/{height}/fragments/{index}` | a fragment with its proof |
//! | GET | `/v1/headers?from=H&count=N` | certified headers (for audits; at most 256, about 2 MiB and 2 s: fewer when a budget ends, ask again from the next height) |
//! | GET | `/v1/own-fragments?from=H&count=N[&view=ranges]` | this validator's own fragments of heights H.. with their proofs, read and checked now (at most 1,024 heights, about 4 MiB and 2 s; `to` says where it stopped), and the ranges of heights it holds good ones for and lacks; `view=ranges`: the ranges only, from the index without reading a fragment (up to 16,384 heights; the scrub checks the bytes) |
//! | GET | `/metrics` | Prometheus |
//! | GET | `/v1/overview` | the validator set as this validator sees it and each peer reports, the last 5 minutes of commits, view changes, fragment availability ([`crate::overview`]) |
//! | GET | `/` | the operator's page ([`crate::api_page`]); `/assets/page.js`, `/assets/page.css`; `/lookup?kind=block\|tx\|account&q=...` redirects to the endpoint that answers it |

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use mosaic_crypto::{Hash, PublicKey, codec};
use mosaic_storage::{coding, placement};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::block::{BODY_BYTES_MAX, BlockHeader};
use crate::chain::{Shared, lock};
use crate::control::{Command, NodeInfo, StatusInfo};
use crate::ledger::{SignedTransfer, TxOutcome};
use crate::mempool::{Dropped, MempoolError};
use crate::mempool_log::MempoolLog;
use crate::metrics::Metrics;
use crate::read_budget::{Busy, HeavyRead, HeavyReads};
use crate::schema::NodeStore;
use crate::sigbatch::SigBatcher;

mod reads;
mod writes;
pub(crate) use reads::{account, block, block_body, fragment, headers, own_fragments, transaction};
pub(crate) use writes::{submit, submit_batch};

/// Largest request body.
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Transactions per batch at most.
pub const BATCH_TXS_MAX: usize = 10_000;
/// Headers per request at most.
pub const HEADERS_MAX: u64 = 256;
/// Heights per `/v1/own-fragments` answer with fragments, at most.
pub const OWN_FRAGMENTS_MAX: u64 = 1_024;
/// Heights per `/v1/own-fragments?view=ranges` answer, at most.
pub const OWN_RANGES_MAX: u64 = 16_384;
/// Fragment bytes per `/v1/own-fragments` answer, about (it always holds one).
pub const OWN_FRAGMENT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long a status reads the blocks that may hold a transfer (each may be
/// rebuilt from fragments, up to 15 s) before it answers 503.
pub const STATUS_READ_TIME_MAX: Duration = Duration::from_secs(20);
/// Bytes of headers with certificates per `/v1/headers` answer, about (JSON).
pub const HEADERS_BYTES_MAX: usize = 2 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Ledger, mempool, tip.
    pub shared: Arc<Mutex<Shared>>,
    /// The store.
    pub store: Arc<NodeStore>,
    /// Fixed facts.
    pub info: Arc<NodeInfo>,
    /// Live status from the event loop.
    pub status: Arc<RwLock<StatusInfo>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Requests to the event loop.
    pub commands: mpsc::Sender<Command>,
    /// Gossiped transactions waiting for signature checks (kept by the event loop).
    pub verify_backlog: Arc<AtomicUsize>,
    /// Where signature checks are queued (shared with gossip).
    pub signatures: SigBatcher,
    /// Where accepted transactions are made durable before the answer.
    pub log: MempoolLog,
    /// Permits of the heavy reads.
    pub reads: HeavyReads,
    /// Transfer-proof material of the latest blocks asked about.
    pub proofs: Arc<crate::proof_cache::ProofCache>,
    /// What the operator's page shows.
    pub overview: Arc<crate::overview::Overview>,
}

impl ApiState {
    /// A copy of the event loop's live status (a poisoned lock still holds it).
    pub(crate) fn live_status(&self) -> StatusInfo {
        match self.status.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for `Retry-After` (load refusals).
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    /// The same error, with `Retry-After: secs`.
    pub(crate) fn retry_after(self, secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs),
            ..self
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<Busy> for ApiError {
    fn from(busy: Busy) -> Self {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECS),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, busy.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, json_body(&json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

fn json_body(value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\":\"cannot encode response: {e}\"}}"),
        )
            .into_response(),
    }
}

pub(crate) fn ok(value: Value) -> Response {
    json_body(&value)
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Serves `app` (the [`crate::api_routes::router`]) until `shutdown` turns true.
pub async fn serve(
    listener: crate::api_listener::LimitedListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP API stopped");
    }
}

pub(crate) async fn status(State(state): State<ApiState>) -> ApiResult {
    let (tip, mempool) = {
        let shared = lock(&state.shared);
        (shared.tip, shared.mempool.len())
    };
    let live = state.live_status();
    let validators: Vec<Value> = state
        .info
        .genesis
        .validators
        .iter()
        .zip(&state.info.validator_peers)
        .enumerate()
        .map(|(i, (v, peer))| {
            json!({
                "index": i,
                "name": v.name,
                "public_key": v.public_key.to_string(),
                "peer_id": peer.to_string(),
            })
        })
        .collect();
    Ok(ok(json!({
        "chain_id": state.info.chain.to_string(),
        "validator": state.info.index,
        "peer_id": state.info.peer_id.to_string(),
        "height": tip.height,
        "tip_hash": tip.hash.to_string(),
        "state_root": tip.state_root.to_string(),
        "view": live.view,
        "primary": live.primary,
        "view_changing": live.view_changing,
        "validators": validators,
        "data_shards": state.info.data_shards,
        "peers": live.peers,
        "connected_peers": live.peers.len(),
        "network_height": live.network_height.max(tip.height),
        "syncing": live.syncing,
        "mempool_transactions": mempool,
    })))
}

pub(crate) async fn genesis(State(state): State<ApiState>) -> ApiResult {
    Ok(json_body(&state.info.genesis))
}

/// Seconds a client refused for overload (503) is told to wait before it retries.
pub const RETRY_AFTER_SECS: u64 = crate::read_budget::RETRY_AFTER_SECS;

/// The media type of the binary submission path: the canonical encoding of one
/// signed transfer (`/v1/transactions`) or of a list of them, a u64 count and then
/// each transfer (`/v1/transactions/batch`).
pub const BINARY: &str = "application/octet-stream";

/// A path parameter, or a JSON 400 saying why it could not be read.
pub(crate) fn path_arg<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

/// An account address from a path: a public key in 64 hex characters.
pub(crate) fn parse_address(address: String) -> Result<PublicKey, ApiError> {
    address.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "address {address:?} is not a public key (64 hex characters): {e}"
        ))
    })
}

pub(crate) fn parse_hash(text: &str, what: &str) -> Result<Hash, ApiError> {
    text.parse::<Hash>().map_err(|e| {
        ApiError::bad_request(format!("{what} {text:?} is not 64 hex characters: {e}"))
    })
}

pub(crate) async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
