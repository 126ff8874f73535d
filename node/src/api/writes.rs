//! Submissions: bodies read within their bound, JSON or binary decoded,
//! admission (shed past the backlog bound, refused while behind the network,
//! signatures checked in batches), written to the mempool log before the 202, and
//! gossiped.

use super::*;

/// After a body runs over [`REQUEST_BYTES_MAX`], the rest of it is read and dropped,
/// up to this many bytes in all, so that a client still sending gets the 413 rather
/// than a broken pipe (the connection is closed after the answer either way).
pub(super) const DRAIN_BYTES_MAX: usize = 4 * REQUEST_BYTES_MAX;

/// ...and for at most this long: a slow sender does not hold a connection open.
pub(super) const DRAIN_TIME: Duration = Duration::from_secs(2);

pub(super) fn body_too_large() -> ApiError {
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
pub(super) async fn read_body(mut body: Body) -> Result<Vec<u8>, ApiError> {
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
pub(super) async fn drain(mut body: Body, mut seen: usize) -> usize {
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

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not a valid {what}: {e}")))
}

/// The JSON answer for one admission result.
pub(super) fn admission(hash: Hash, result: Result<Hash, MempoolError>) -> (StatusCode, Value) {
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
pub(super) fn behind(network: Option<u64>, tip: u64, behind_max: u64) -> Option<MempoolError> {
    let network = network?;
    (network.saturating_sub(tip) > behind_max).then(|| MempoolError::Behind {
        behind: network - tip,
        tip,
        network,
    })
}

pub(super) async fn admit(state: &ApiState, txs: Vec<SignedTransfer>) -> Vec<(StatusCode, Value)> {
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
pub(super) async fn logged_admission(
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

pub(super) async fn admit_logged(
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

/// Whether a submission's body is the canonical binary encoding (`Content-Type:
/// application/octet-stream`); anything else is read as JSON, as before there was
/// a binary path.
pub(super) fn is_binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(BINARY))
}

pub(super) fn parse_binary<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    codec::decode(bytes, REQUEST_BYTES_MAX).map_err(|e| {
        ApiError::bad_request(format!(
            "request body is not the canonical encoding of {what}: {e}"
        ))
    })
}

/// Adds `Retry-After` to an answer that refuses for overload, so that clients back
/// off instead of retrying at once.
pub(super) fn with_retry_after(mut response: Response, overloaded: bool) -> Response {
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

pub(super) fn too_many(count: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{count} transactions in one batch; at most {BATCH_TXS_MAX}: split it"),
    )
}
