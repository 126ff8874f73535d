//! Reads: a transaction's status (pending, dropped with its reason, committed or
//! failed with its block), accounts, blocks and bodies, fragments, headers and the
//! ranges of own fragments, each within its read budget.

use super::*;

pub(super) fn parse_height(text: &str) -> Result<u64, ApiError> {
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
pub(super) fn dropped_answer(state: &ApiState, id: &Hash, tip: u64, dropped: &Dropped) -> Value {
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
pub(super) fn pending_answer(id: &Hash, tip: u64, pending: &crate::mempool::PendingState) -> Value {
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

pub(super) fn stored_header(state: &ApiState, height: u64) -> Result<BlockHeader, ApiError> {
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
pub(super) fn push_range(ranges: &mut Vec<[u64; 2]>, height: u64) {
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
