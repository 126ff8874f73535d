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

/// Serves `app` (the [`router`]) until `shutdown` turns true.
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

/// After a body runs over [`REQUEST_BYTES_MAX`], the rest of it is read and dropped,
/// up to this many bytes in all, so that a client still sending gets the 413 rather
/// than a broken pipe (the connection is closed after the answer either way).
const DRAIN_BYTES_MAX: usize = 4 * REQUEST_BYTES_MAX;
/// ...and for at most this long: a slow sender does not hold a connection open.
const DRAIN_TIME: Duration = Duration::from_secs(2);

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body exceeds {REQUEST_BYTES_MAX} bytes: split the batch into smaller ones"
        ),
    )
}

/// Reads a request body of at most [`REQUEST_BYTES_MAX`] bytes. A larger one is
/// refused with 413 without being kept in memory; its rest is drained within
/// [`DRAIN_BYTES_MAX`] and [`DRAIN_TIME`] so that the client sees the answer.
async fn read_body(mut body: Body) -> Result<Vec<u8>, ApiError> {
    let declared = body.size_hint().lower();
    if declared > DRAIN_BYTES_MAX as u64 {
        // Far too large to be worth draining: answer at once.
        return Err(body_too_large());
    }
    if declared > REQUEST_BYTES_MAX as u64 {
        // Declared too large: nothing of it is kept.
        drain(body, 0).await;
        return Err(body_too_large());
    }
    // The declared length is the client's word: reserve a little, grow as bytes
    // arrive (else each of the API's connections could pin 4 MiB by declaring it
    // and sending nothing).
    let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(64 * 1024));
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if bytes.len() + data.len() > REQUEST_BYTES_MAX {
            let seen = bytes.len() + data.len();
            drop(bytes);
            drain(body, seen).await;
            return Err(body_too_large());
        }
        bytes.extend_from_slice(&data);
    }
    Ok(bytes)
}

/// Reads and drops the rest of `body` until it ends, [`DRAIN_BYTES_MAX`] bytes have
/// been seen in all, or [`DRAIN_TIME`] passes. Returns the bytes seen.
async fn drain(mut body: Body, mut seen: usize) -> usize {
    let reading = async {
        while seen <= DRAIN_BYTES_MAX {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                Some(Err(_)) | None => break,
            }
        }
    };
    // Running out of time is the expected end for a slow sender, not an error.
    let _ = tokio::time::timeout(DRAIN_TIME, reading).await;
    seen
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not a valid {what}: {e}")))
}

/// The JSON answer for one admission result.
fn admission(hash: Hash, result: Result<Hash, MempoolError>) -> (StatusCode, Value) {
    match result {
        Ok(_) | Err(MempoolError::AlreadyPending(_)) => (
            StatusCode::ACCEPTED,
            json!({ "hash": hash.to_string(), "status": "pending" }),
        ),
        Err(e) => {
            let status = match e {
                MempoolError::Invalid(_)
                | MempoolError::Unfunded { .. }
                | MempoolError::Expired { .. }
                | MempoolError::ValidTooLong { .. } => StatusCode::BAD_REQUEST,
                MempoolError::Full { .. }
                | MempoolError::Gapped { .. }
                | MempoolError::Busy { .. }
                | MempoolError::Overloaded { .. }
                | MempoolError::Behind { .. }
                | MempoolError::Log(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            };
            (
                status,
                json!({ "hash": hash.to_string(), "error": e.to_string() }),
            )
        }
    }
}

/// Why a node at `tip` refuses submissions for being behind the network
/// (`network`: its height, when f+1 peers reported one), if it does.
fn behind(network: Option<u64>, tip: u64, behind_max: u64) -> Option<MempoolError> {
    let network = network?;
    (network.saturating_sub(tip) > behind_max).then(|| MempoolError::Behind {
        behind: network - tip,
        tip,
        network,
    })
}

async fn admit(state: &ApiState, txs: Vec<SignedTransfer>) -> Vec<(StatusCode, Value)> {
    let hashes: Vec<Hash> = txs.iter().map(SignedTransfer::hash).collect();
    let network = match state.status.read() {
        Ok(s) => s.network_known.then_some(s.network_height),
        Err(poisoned) => {
            let s = poisoned.into_inner();
            s.network_known.then_some(s.network_height)
        }
    };
    let refused = {
        let verifying = state.verify_backlog.load(Ordering::Relaxed) + state.signatures.waiting();
        let mut shared = lock(&state.shared);
        behind(network, shared.tip.height, state.info.behind_heights_max)
            .or_else(|| shared.mempool.refusal(verifying))
            .or_else(|| {
                shared
                    .backlog
                    .refusal(std::time::Instant::now(), verifying)
                    .map(|o| MempoolError::Overloaded {
                        queued: o.queued,
                        limit: o.limit,
                        rate: o.rate as u64,
                    })
            })
    };
    if let Some(MempoolError::Overloaded { .. }) = &refused {
        state.metrics.submissions_shed.inc_by(txs.len() as u64);
    }
    let results = match refused {
        // A full pool or a busy node answers at once, without spending signature
        // checks: under overload the node keeps its CPU for the transactions it has.
        Some(refused) => vec![Err(refused); txs.len()],
        None => {
            // Signatures are checked on a checking thread, outside the shared lock,
            // in one batch with whatever else waits; transactions this node already
            // verified are not checked again.
            let checked = state.signatures.check(txs.clone()).await;
            let Some(verified) = checked else {
                // The checking queue is full.
                let waiting = state.signatures.waiting();
                return hashes
                    .into_iter()
                    .map(|hash| admission(hash, Err(MempoolError::Busy { waiting })))
                    .collect();
            };
            logged_admission(state, verified).await
        }
    };
    let admitted: Vec<SignedTransfer> = txs
        .into_iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(tx, _)| tx)
        .collect();
    state
        .metrics
        .transactions_submitted
        .inc_by(admitted.len() as u64);
    if !admitted.is_empty() && state.commands.try_send(Command::Gossip(admitted)).is_err() {
        tracing::warn!("gossip queue busy: admitted transactions stay in this node's mempool");
    }
    hashes
        .into_iter()
        .zip(results)
        .map(|(hash, result)| admission(hash, result))
        .collect()
}

/// Admits verified transactions durably: those the pool would take are written to
/// the mempool log (one group commit with whatever else arrives meanwhile) and only
/// then put in the pool, so whatever is answered 202 survives a crash of this node.
/// The log refusing them (full, disk error) refuses them here too.
async fn logged_admission(
    state: &ApiState,
    verified: Vec<Result<crate::ledger::VerifiedTransfer, crate::ledger::TxError>>,
) -> Vec<Result<Hash, MempoolError>> {
    // On its own task: a client that goes away mid-request drops the handler, and a
    // logged transfer must still reach the pool (or be forgotten), never stay
    // pinned in the log.
    let task_state = state.clone();
    let count = verified.len();
    tokio::spawn(async move { admit_logged(&task_state, verified).await })
        .await
        .unwrap_or_else(|_| vec![Err(MempoolError::Log("the admission task failed".into())); count])
}

async fn admit_logged(
    state: &ApiState,
    verified: Vec<Result<crate::ledger::VerifiedTransfer, crate::ledger::TxError>>,
) -> Vec<Result<Hash, MempoolError>> {
    let mut results: Vec<Option<Result<Hash, MempoolError>>> = Vec::with_capacity(verified.len());
    let mut candidates = Vec::new();
    let mut slots = Vec::new();
    {
        let mut shared = lock(&state.shared);
        let Shared {
            mempool, ledger, ..
        } = &mut *shared;
        for result in verified {
            match result {
                Ok(tx) => match mempool.reserve(&tx, ledger) {
                    Ok(()) => {
                        slots.push(results.len());
                        results.push(None);
                        candidates.push(tx);
                    }
                    Err(e) => results.push(Some(Err(e))),
                },
                Err(e) => results.push(Some(Err(MempoolError::Invalid(e)))),
            }
        }
    }
    if !candidates.is_empty() {
        let signed: Vec<SignedTransfer> = candidates.iter().map(|t| t.signed().clone()).collect();
        match state.log.append(&signed).await {
            Ok(()) => {
                let admitted = {
                    let mut shared = lock(&state.shared);
                    let Shared {
                        mempool,
                        ledger,
                        backlog,
                        ..
                    } = &mut *shared;
                    let admitted =
                        mempool.add_written(candidates.into_iter().map(Ok).collect(), ledger);
                    // Only what a block could take now counts toward the backlog.
                    let ready = signed
                        .iter()
                        .zip(&admitted)
                        .filter(|(tx, r)| {
                            let t = &tx.transfer;
                            r.is_ok()
                                && mempool.is_ready(&t.from, t.nonce, ledger.account(&t.from).nonce)
                        })
                        .count();
                    backlog.admitted(ready);
                    admitted
                };
                // Logged but refused after all (the chain moved on meanwhile: it
                // committed, its nonce was used, it expired): the log forgets them,
                // and a restart refuses them for the same reason.
                let refused: Vec<(Hash, Option<Dropped>)> = signed
                    .iter()
                    .zip(&admitted)
                    .filter(|(_, r)| matches!(r, Err(e) if !matches!(e, MempoolError::AlreadyPending(_))))
                    .map(|(tx, _)| (tx.hash(), None))
                    .collect();
                state.log.tombstone(refused);
                for (slot, result) in slots.into_iter().zip(admitted) {
                    results[slot] = Some(result);
                }
            }
            Err(e) => {
                let hashes: Vec<Hash> = signed.iter().map(SignedTransfer::hash).collect();
                lock(&state.shared).mempool.release(&hashes);
                state.metrics.mempool_log_refused.inc_by(slots.len() as u64);
                tracing::warn!(error = %e, "mempool log refused transfers: answering 503");
                for slot in slots {
                    results[slot] = Some(Err(MempoolError::Log(e.to_string())));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(MempoolError::Full { count: 0, bytes: 0 })))
        .collect()
}

/// Seconds a client refused for overload (503) is told to wait before it retries.
pub const RETRY_AFTER_SECS: u64 = crate::read_budget::RETRY_AFTER_SECS;

/// The media type of the binary submission path: the canonical encoding of one
/// signed transfer (`/v1/transactions`) or of a list of them, a u64 count and then
/// each transfer (`/v1/transactions/batch`).
pub const BINARY: &str = "application/octet-stream";

/// Whether a submission's body is the canonical binary encoding (`Content-Type:
/// application/octet-stream`); anything else is read as JSON, as before there was
/// a binary path.
fn is_binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(BINARY))
}

fn parse_binary<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    codec::decode(bytes, REQUEST_BYTES_MAX).map_err(|e| {
        ApiError::bad_request(format!(
            "request body is not the canonical encoding of {what}: {e}"
        ))
    })
}

/// Adds `Retry-After` to an answer that refuses for overload, so that clients back
/// off instead of retrying at once.
fn with_retry_after(mut response: Response, overloaded: bool) -> Response {
    if overloaded {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(RETRY_AFTER_SECS),
        );
    }
    response
}

pub(crate) async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let bytes = read_body(body).await?;
    let tx: SignedTransfer = if is_binary(&headers) {
        parse_binary(&bytes, "a signed transfer")?
    } else {
        parse_json(&bytes, "signed transfer")?
    };
    let mut answers = admit(&state, vec![tx]).await;
    let (status, value) = answers
        .pop()
        .ok_or_else(|| ApiError::internal("no admission result"))?;
    let overloaded = status == StatusCode::SERVICE_UNAVAILABLE;
    Ok(with_retry_after(
        (status, json_body(&value)).into_response(),
        overloaded,
    ))
}

pub(crate) async fn submit_batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let bytes = read_body(body).await?;
    let txs: Vec<SignedTransfer> = if is_binary(&headers) {
        // The count comes first: a batch over the limit is refused before any of
        // it is decoded.
        let count = bytes
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "request body is not the canonical encoding of a list of signed transfers: it ends before its u64 count",
                )
            })?;
        if count > BATCH_TXS_MAX as u64 {
            return Err(too_many(count));
        }
        parse_binary(&bytes, "a list of signed transfers")?
    } else {
        parse_json(&bytes, "list of signed transfers")?
    };
    if txs.len() > BATCH_TXS_MAX {
        return Err(too_many(txs.len() as u64));
    }
    let answers = admit(&state, txs).await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let overloaded = answers
        .iter()
        .any(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE);
    let results: Vec<Value> = answers.into_iter().map(|(_, v)| v).collect();
    Ok(with_retry_after(
        ok(json!({ "accepted": accepted, "results": results })),
        overloaded,
    ))
}

fn too_many(count: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{count} transactions in one batch; at most {BATCH_TXS_MAX}: split it"),
    )
}

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

fn parse_height(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!("height {text:?} is not a non-negative integer"))
    })
}

pub(crate) async fn transaction(
    State(state): State<ApiState>,
    hash: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let hash = path_arg(hash)?;
    let id = parse_hash(&hash, "transaction hash")?;
    let (tip, dropped) = {
        let shared = lock(&state.shared);
        if let Some(pending) = shared.mempool.pending_state(&id, &shared.ledger) {
            return Ok(ok(pending_answer(&id, shared.tip.height, &pending)));
        }
        (shared.tip.height, shared.mempool.dropped(&id))
    };
    let pending = json!({
        "hash": id.to_string(), "status": "pending", "final": false,
        "reason": "in a block that is being executed", "tip": tip,
    });
    // Failed transfers have a full record per block that carried them; everything
    // committed is in the compact index, whose candidate heights are checked
    // against the blocks themselves (stored bodies first: they cost no network).
    // The first block that carried it decides, for good: a transfer that failed
    // fails again if included later (`AlreadyFailed`), and one that applied fails
    // with a used nonce.
    let failures = state
        .store
        .tx_records(id.as_bytes())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let candidates = state
        .store
        .tx_heights(id.as_bytes())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let first_failure = failures.first().map(|(h, _)| *h);
    // Only heights below the first failure can hold an earlier inclusion.
    let below: Vec<u64> = candidates
        .iter()
        .copied()
        .filter(|h| first_failure.is_none_or(|f| *h < f))
        .collect();
    // Looking into bodies is a heavy read; the answers above were not.
    let read = if below.is_empty() {
        None
    } else {
        Some(state.reads.start_for(STATUS_READ_TIME_MAX)?)
    };
    let mut applied = None;
    let mut unchecked = None;
    for &height in &below {
        if read.as_ref().is_some_and(HeavyRead::out_of_time) {
            unchecked = Some(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the blocks that may hold it took longer than {} s to read; retry",
                    STATUS_READ_TIME_MAX.as_secs()
                ),
            ));
            break;
        }
        let body = match state
            .store
            .body(height)
            .map_err(|e| ApiError::internal(e.to_string()))?
        {
            Some(body) => body,
            None => match block_body(&state, height).await {
                Ok((body, _, _)) => body,
                Err(e) => {
                    // A block that may hold it could not be read: do not guess.
                    unchecked = Some(e);
                    break;
                }
            },
        };
        if let Some(index) = position_of(&body, &id)? {
            applied = Some((height, index));
            break;
        }
    }
    let hash = id.to_string();
    Ok(ok(match (applied, unchecked, failures.first()) {
        // A block is written before the ledger moves to it: until then its
        // transactions read as pending, so status and account answers agree.
        (Some((height, _)), _, _) if height > tip => pending,
        (Some((height, index)), _, _) => json!({
            "hash": hash, "status": "committed", "final": true, "height": height, "index": index,
        }),
        // A block that may hold it could not be read: do not guess.
        (None, Some(e), _) => return Err(e),
        (None, None, Some((height, _))) if *height > tip => pending,
        (None, None, Some((height, record))) => match record.outcome {
            TxOutcome::Failed(reason) => json!({
                "hash": hash, "status": "failed", "final": true, "height": height,
                "index": record.index, "reason": reason.to_string(),
            }),
            TxOutcome::Applied => json!({
                "hash": hash, "status": "committed", "final": true, "height": height,
                "index": record.index,
            }),
        },
        (None, None, None) => match dropped {
            Some(dropped) => dropped_answer(&state, &id, tip, &dropped),
            None => json!({
                "hash": hash, "status": "unknown", "final": false, "tip": tip,
                "reason": "this node has not got it: not pending here, not committed, not dropped recently; if the tip is past its valid_until it can never commit",
            }),
        },
    }))
}

/// The answer for a transfer this node let go of without a block deciding it:
/// `expired` and a used nonce are final (no block can include it any more); a
/// drop from this validator's pool is not (another validator may still include
/// it), and says which validator let it go.
fn dropped_answer(state: &ApiState, id: &Hash, tip: u64, dropped: &Dropped) -> Value {
    let name = state
        .info
        .genesis
        .validators
        .get(state.info.index as usize)
        .map_or_else(
            || format!("validator {}", state.info.index),
            |v| v.name.clone(),
        );
    let (status, is_final) = match dropped {
        Dropped::Expired { .. } => ("expired", true),
        Dropped::NonceUsed { .. } => ("dropped", true),
        Dropped::BehindGap { .. } => ("dropped", false),
    };
    let reason = if is_final {
        dropped.to_string()
    } else {
        format!("dropped by {name}: {dropped}")
    };
    let mut answer = json!({
        "hash": id.to_string(), "status": status, "final": is_final, "reason": reason,
        "tip": tip, "dropped_by": name,
    });
    if let (Dropped::Expired { valid_until, .. }, Some(map)) = (dropped, answer.as_object_mut()) {
        map.insert("valid_until".into(), json!(valid_until));
    }
    answer
}

/// The answer for a transaction pending in this node's pool: why it waits.
fn pending_answer(id: &Hash, tip: u64, pending: &crate::mempool::PendingState) -> Value {
    let reason = match pending.waiting_for {
        None => format!(
            "in the mempool, next in line for its sender (nonce {}); a block may include it up to height {}",
            pending.nonce, pending.valid_until
        ),
        Some(missing) => format!(
            "waiting for nonce {missing} of its sender, which this node has not got (this is nonce {}); dropped unless included by height {}",
            pending.nonce, pending.valid_until
        ),
    };
    let mut answer = json!({
        "hash": id.to_string(), "status": "pending", "final": false, "reason": reason,
        "nonce": pending.nonce, "valid_until": pending.valid_until, "tip": tip,
    });
    if let (Some(missing), Some(map)) = (pending.waiting_for, answer.as_object_mut()) {
        map.insert("waiting_for_nonce".into(), json!(missing));
    }
    answer
}

/// Where in a block body transaction `id` is, if it is there.
pub(crate) fn position_of(body: &[u8], id: &Hash) -> Result<Option<u32>, ApiError> {
    let txs: Vec<SignedTransfer> = codec::decode(body, BODY_BYTES_MAX)
        .map_err(|e| ApiError::internal(format!("stored body does not decode: {e}")))?;
    Ok(txs.iter().position(|t| t.hash() == *id).map(|i| i as u32))
}

/// The body of the block at `height`: stored, or rebuilt from fragments that the
/// node asks its peers for. Also says whether it was rebuilt and which fragments
/// were refused.
pub(crate) async fn block_body(
    state: &ApiState,
    height: u64,
) -> Result<(Vec<u8>, bool, Vec<String>), ApiError> {
    let stored = state
        .store
        .body(height)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(body) = stored {
        return Ok((body, false, Vec::new()));
    }
    let (reply, answer) = oneshot::channel();
    match tokio::time::timeout(
        Duration::from_secs(2),
        state.commands.send(Command::Fragments { height, reply }),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(ApiError::internal("node is stopping")),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "body of block {height} is pruned here and the node is too busy to gather its fragments now; retry"
                ),
            ));
        }
    }
    let fragments = tokio::time::timeout(Duration::from_secs(15), answer)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let rebuilt = state
        .store
        .body_or_rebuild(height, |i| fragments.iter().find(|f| f.index == i).cloned())
        .map_err(|e| match e {
            mosaic_storage::StoreError::Rebuild { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "body of block {height} is pruned here and {e}; retry when more validators are up"
                ),
            ),
            other => ApiError::internal(other.to_string()),
        })?;
    let rejected: Vec<String> = rebuilt.rejected.iter().map(ToString::to_string).collect();
    Ok((rebuilt.body, !rebuilt.from_store, rejected))
}

pub(crate) async fn account(
    State(state): State<ApiState>,
    address: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let key = parse_address(path_arg(address)?)?;
    let (account, height, pending_nonce) = {
        let shared = lock(&state.shared);
        let account = shared.ledger.account(&key);
        let pending_nonce = shared.mempool.pending_nonce(&key, account.nonce);
        (account, shared.tip.height, pending_nonce)
    };
    Ok(ok(json!({
        "address": key.to_string(),
        "balance": account.balance,
        "nonce": account.nonce,
        // The nonce past the sender's run of transfers pending here in turn from
        // `nonce` (Ethereum's "pending" count): what a client signs next so that
        // two transfers sent in a row both commit.
        "pending_nonce": pending_nonce,
        "height": height,
    })))
}

fn stored_header(state: &ApiState, height: u64) -> Result<BlockHeader, ApiError> {
    state
        .store
        .header(height)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            let tip = lock(&state.shared).tip.height;
            ApiError::not_found(format!(
                "no block at height {height}: this node's height is {tip}"
            ))
        })
}

/// `GET /v1/blocks/{h}[?view=hashes]`: the block with its transactions, or with only
/// their ids (`view=hashes`: much smaller, for followers that match ids).
pub(crate) async fn block(
    State(state): State<ApiState>,
    height: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let height = path_arg(height)?;
    let height = parse_height(&height)?;
    let hashes_only = match query.as_deref().unwrap_or_default() {
        "" | "view=full" => false,
        "view=hashes" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown query {other:?}: use view=full or view=hashes"
            )));
        }
    };
    let _read = state.reads.start()?;
    let header = stored_header(&state, height)?;
    let certificate = state
        .store
        .certificate(height)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (body, rebuilt, rejected) = block_body(&state, height).await?;
    let txs: Vec<SignedTransfer> = codec::decode(&body, BODY_BYTES_MAX)
        .map_err(|e| ApiError::internal(format!("stored body does not decode: {e}")))?;
    let mut answer = json!({
        "height": height,
        "hash": header.hash().to_string(),
        "header": header,
        "certificate": certificate,
        "body_rebuilt_from_fragments": rebuilt,
        "rejected_fragments": rejected,
    });
    if hashes_only {
        let ids: Vec<String> = txs.iter().map(|t| t.hash().to_string()).collect();
        answer["transaction_hashes"] = json!(ids);
    } else {
        answer["transactions"] = json!(txs);
    }
    Ok(ok(answer))
}

pub(crate) async fn fragment(
    State(state): State<ApiState>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (height, index) = path_arg(params)?;
    let height = parse_height(&height)?;
    let index: u32 = index.parse().map_err(|_| {
        ApiError::bad_request(format!("fragment index {index:?} is not an integer"))
    })?;
    let _read = state.reads.start()?;
    let header = stored_header(&state, height)?;
    let n = header.fragments.params.n();
    if index as usize >= n {
        return Err(ApiError::bad_request(format!(
            "block {height} has fragments 0..{n}; {index} is out of range"
        )));
    }
    let own = placement::fragment_of(state.info.index, height, n as u16);
    let fragment = if index == own {
        // A corrupt own fragment is not served: the body (if kept) still is.
        match state.store.own_fragment(height) {
            Ok(f) => f,
            Err(mosaic_storage::StoreError::Corrupt { .. }) => None,
            Err(e) => return Err(ApiError::internal(e.to_string())),
        }
    } else {
        None
    };
    let fragment = match fragment {
        Some(f) => Some(f),
        None => match state
            .store
            .body(height)
            .map_err(|e| ApiError::internal(e.to_string()))?
        {
            Some(body) => coding::check_encoding(&body, &header.fragments)
                .ok()
                .and_then(|encoded| encoded.fragment(index as usize)),
            None => None,
        },
    };
    let Some(fragment) = fragment else {
        return Err(ApiError::not_found(format!(
            "this node keeps fragment {own} of block {height} and no longer has the body; ask the validator that keeps fragment {index}"
        )));
    };
    state.metrics.fragments_served.inc();
    let encoded = codec::encode(&fragment).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(ok(json!({
        "height": height,
        "index": index,
        "commitment": header.fragments,
        "fragment": hex::encode(encoded),
    })))
}

pub(crate) async fn headers(State(state): State<ApiState>, RawQuery(query): RawQuery) -> ApiResult {
    let mut from = 1u64;
    let mut count = 100u64;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = value.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("query parameter {key}={value:?} is not an integer"))
        });
        match key {
            "from" => from = number?,
            "count" => count = number?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use from and count"
                )));
            }
        }
    }
    let count = count.min(HEADERS_MAX);
    let read = state.reads.start()?;
    let store = state.store.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for height in from.max(1)..from.max(1).saturating_add(count) {
            let (Some(header), Some(certificate)) = (
                store
                    .header(height)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
                store
                    .certificate(height)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            ) else {
                break;
            };
            let entry = json!({ "height": height, "header": header, "certificate": certificate });
            bytes += entry.to_string().len();
            out.push(entry);
            // The first header is always answered, so a client always gets on.
            if bytes >= HEADERS_BYTES_MAX || read.out_of_time() {
                break;
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(format!("header read stopped: {e}")))??;
    Ok(ok(json!({ "headers": out })))
}

/// Adds `height` to ranges of consecutive heights.
fn push_range(ranges: &mut Vec<[u64; 2]>, height: u64) {
    match ranges.last_mut() {
        Some(last) if last[1] + 1 == height => last[1] = height,
        _ => ranges.push([height, height]),
    }
}

/// `GET /v1/own-fragments?from=H&count=N[&view=ranges]`: which heights this
/// validator holds a good own fragment for (read and checked against the block's
/// commitment now) with the fragments themselves, so an auditor checks every proof
/// with one request per few MiB instead of per height; `view=ranges`: which
/// heights its index holds one for, without reading any (the scrub checks them at
/// its disk rate).
pub(crate) async fn own_fragments(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let mut from = 1u64;
    let mut count = OWN_FRAGMENTS_MAX;
    let mut ranges_only = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("query parameter {key}={value:?} is not an integer"))
            })
        };
        match (key, value) {
            ("from", _) => from = number()?.max(1),
            ("count", _) => count = number()?,
            ("view", "ranges") => ranges_only = true,
            ("view", "fragments") => ranges_only = false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {pair:?}: use from, count and view=ranges|fragments"
                )));
            }
        }
    }
    let count = count.clamp(
        1,
        if ranges_only {
            OWN_RANGES_MAX
        } else {
            OWN_FRAGMENTS_MAX
        },
    );
    let read = state.reads.start()?;
    let store = state.store.clone();
    let tip = lock(&state.shared).tip.height;
    let index = state.info.index;
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let mut held = Vec::new();
        let mut missing = Vec::new();
        let mut fragments = Vec::new();
        let mut bytes = 0usize;
        let mut to = from.saturating_sub(1);
        let last = from.saturating_add(count - 1).min(tip);
        if ranges_only {
            // From the index: one range scan, no fragment read.
            let indexed = store
                .indexed_own_fragments(from, last, OWN_RANGES_MAX as usize)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let mut indexed = indexed.into_iter().peekable();
            for height in from..=last {
                if indexed.next_if_eq(&height).is_some() {
                    push_range(&mut held, height);
                } else {
                    push_range(&mut missing, height);
                }
            }
            to = last.max(to);
        }
        // Read and checked now: the time budget stops it early, `to` says where.
        for height in (from..=last).filter(|_| !ranges_only) {
            let fragment = match store.own_fragment(height) {
                Ok(f) => f,
                Err(mosaic_storage::StoreError::Corrupt { .. }) => None,
                Err(e) => return Err(ApiError::internal(e.to_string())),
            };
            to = height;
            match fragment {
                Some(fragment) => {
                    push_range(&mut held, height);
                    let encoded =
                        codec::encode(&fragment).map_err(|e| ApiError::internal(e.to_string()))?;
                    bytes += encoded.len();
                    fragments.push(json!({
                        "height": height,
                        "index": fragment.index,
                        "fragment": hex::encode(encoded),
                    }));
                }
                None => push_range(&mut missing, height),
            }
            if bytes >= OWN_FRAGMENT_BYTES_MAX || read.out_of_time() {
                break;
            }
        }
        let mut answer = json!({
            "validator": index,
            "tip": tip,
            "from": from,
            "to": to,
            "held": held,
            "missing": missing,
        });
        if !ranges_only {
            answer["fragments"] = json!(fragments);
        }
        Ok(answer)
    })
    .await
    .map_err(|e| ApiError::internal(format!("fragment read stopped: {e}")))??;
    Ok(ok(answer))
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
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_node_behind_the_network_refuses_submissions_with_503() {
        // Unknown network height (fewer than f+1 reports): no refusal.
        assert!(behind(None, 3, 8).is_none());
        assert!(
            behind(Some(11), 3, 8).is_none(),
            "8 behind is still in step"
        );
        assert!(behind(Some(2), 3, 8).is_none(), "ahead of the reports");
        let refused = behind(Some(1_207), 3, 8).unwrap();
        assert!(
            refused
                .to_string()
                .contains("catching up: 1204 heights behind"),
            "{refused}"
        );
        let (status, _) = admission(Hash::ZERO, Err(refused));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_heavy_read_past_the_bound_is_a_503_with_retry_after() {
        let reads = HeavyReads::new(1);
        let _running = reads.start().unwrap();
        let refused = ApiError::from(reads.start().unwrap_err()).into_response();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            refused.headers().get(header::RETRY_AFTER).unwrap(),
            &RETRY_AFTER_SECS.to_string()
        );
    }

    #[test]
    fn heights_fold_into_ranges() {
        let mut ranges = Vec::new();
        for h in [1, 2, 3, 5, 7, 8] {
            push_range(&mut ranges, h);
        }
        assert_eq!(ranges, vec![[1, 3], [5, 5], [7, 8]]);
    }

    const CHUNK: usize = 64 * 1024;

    /// A body of unknown length that yields `chunks` chunks (or forever), counting
    /// the bytes taken from it; after the last chunk it ends, or hangs if `hang`.
    fn counted(chunks: Option<usize>, hang: bool, taken: Arc<AtomicUsize>) -> Body {
        let stream = futures::stream::unfold(0usize, move |i| {
            let taken = taken.clone();
            async move {
                if chunks.is_some_and(|n| i >= n) {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    return None;
                }
                taken.fetch_add(CHUNK, Ordering::Relaxed);
                Some((Ok::<_, std::io::Error>(vec![7u8; CHUNK]), i + 1))
            }
        });
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_whole() {
        let exact = vec![1u8; REQUEST_BYTES_MAX];
        let read = read_body(Body::from(exact.clone())).await;
        assert_eq!(read.ok(), Some(exact));
        let taken = Arc::new(AtomicUsize::new(0));
        let n = REQUEST_BYTES_MAX / CHUNK;
        let read = read_body(counted(Some(n), false, taken.clone())).await;
        assert_eq!(read.map(|b| b.len()).ok(), Some(n * CHUNK));
        assert!(read_body(Body::empty()).await.is_ok_and(|b| b.is_empty()));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_and_drained_to_its_end() {
        // One byte over, with a declared length.
        let over = read_body(Body::from(vec![1u8; REQUEST_BYTES_MAX + 1])).await;
        assert_eq!(
            over.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        // Of unknown length, a little over: all of it is read so the client can
        // finish sending and see the answer.
        let taken = Arc::new(AtomicUsize::new(0));
        let chunks = REQUEST_BYTES_MAX / CHUNK + 16;
        let over = read_body(counted(Some(chunks), false, taken.clone())).await;
        let error = over.err();
        assert_eq!(
            error.as_ref().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert!(error.is_some_and(|e| e.message.contains("split the batch")));
        assert_eq!(taken.load(Ordering::Relaxed), chunks * CHUNK);
    }

    #[tokio::test]
    async fn draining_stops_at_its_byte_bound() {
        let taken = Arc::new(AtomicUsize::new(0));
        let endless = read_body(counted(None, false, taken.clone())).await;
        assert_eq!(
            endless.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        let taken = taken.load(Ordering::Relaxed);
        assert!(
            taken > DRAIN_BYTES_MAX && taken <= DRAIN_BYTES_MAX + CHUNK,
            "{taken}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn draining_stops_at_its_time_bound() {
        let taken = Arc::new(AtomicUsize::new(0));
        let chunks = REQUEST_BYTES_MAX / CHUNK + 2;
        let start = tokio::time::Instant::now();
        let stalled = read_body(counted(Some(chunks), true, taken.clone())).await;
        assert_eq!(
            stalled.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(start.elapsed(), DRAIN_TIME);
        assert_eq!(taken.load(Ordering::Relaxed), chunks * CHUNK);
    }

    #[tokio::test]
    async fn a_declared_length_past_the_drain_bound_is_refused_unread() {
        let huge = Body::from(vec![0u8; DRAIN_BYTES_MAX + 1]);
        let refused = read_body(huge).await;
        assert_eq!(
            refused.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
