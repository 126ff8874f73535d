//! The proof endpoints: what lets a client check an answer against the genesis
//! validators instead of trusting this node ([`mosaic_ledger::proof`]).
//!
//! - `GET /v1/accounts/{addr}/proof`: the account after block h - 1 (or its
//!   absence) with its trie path under header h's state root, and header h with
//!   its certificate, where h is the last block executed here (the state after h
//!   is proven by header h + 1, once it commits; an empty block follows every
//!   block with transfers, so that comes soon). In memory, O(trie depth).
//! - `GET /v1/transactions/{hash}/proof`: the transfer's inclusion in the block
//!   that decided it and its outcome under the next header. A heavy read (bodies,
//!   rebuilt from fragments when pruned), bounded like a status; a block's
//!   transfers and trees are made once and kept for the next requests
//!   ([`crate::proof_cache`]).
//!
//! Each answer carries the proof as hex of its canonical bytes (`proof`), and the
//! same facts as JSON for people; a client prints only what the bytes prove.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mosaic_crypto::{Hash, codec};
use mosaic_ledger::proof::{CertifiedHeader, TxProof, encode};
use serde_json::json;

use crate::api::{
    ApiError, ApiResult, ApiState, RETRY_AFTER_SECS, STATUS_READ_TIME_MAX, block_body, ok,
    parse_address, parse_hash, path_arg,
};
use crate::block::BODY_BYTES_MAX;
use crate::chain::lock;
use crate::ledger::{SignedTransfer, TxOutcome};
use crate::proof_cache::BlockProofs;

/// Heights a transfer proof looks into for the transfer, at most (the index's
/// candidates are few; a false positive costs one body read).
const CANDIDATES_MAX: usize = 64;

fn unavailable(message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(RETRY_AFTER_SECS)
}

/// `GET /v1/accounts/{addr}/proof`.
pub async fn account_proof(
    State(state): State<ApiState>,
    address: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let key = parse_address(path_arg(address)?)?;
    // The snapshot shares its nodes with the ledger: cloning it under the lock is
    // O(1), and the proof is made outside it.
    let proven = lock(&state.shared).proven.clone();
    let Some(proven) = proven else {
        return Err(unavailable(
            "no state is provable here yet: the next block this node executes makes one; retry"
                .into(),
        ));
    };
    let proof = proven.prove(&key);
    let account = proof.account;
    let height = proof.at.header.height;
    let shown = account.unwrap_or_default();
    Ok(ok(json!({
        "address": key.to_string(),
        "exists": account.is_some(),
        "balance": shown.balance,
        "nonce": shown.nonce,
        "height": height,
        "state_after_height": height.saturating_sub(1),
        "proof": hex::encode(encode(&proof).map_err(cannot_encode)?),
    })))
}

fn cannot_encode(e: mosaic_crypto::codec::CodecError) -> ApiError {
    ApiError::internal(format!("cannot encode the proof: {e}"))
}

/// `GET /v1/transactions/{hash}/proof`.
pub async fn transaction_proof(
    State(state): State<ApiState>,
    hash: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let hash = path_arg(hash)?;
    let id = parse_hash(&hash, "transaction hash")?;
    let tip = lock(&state.shared).tip.height;
    let store_error = |e: mosaic_storage::StoreError| ApiError::internal(e.to_string());
    // The first block that carried it decides (as for its status): every height
    // the index or a failure record names, lowest first.
    let mut heights: Vec<u64> = state.store.tx_heights(id.as_bytes()).map_err(store_error)?;
    heights.extend(
        state
            .store
            .tx_records(id.as_bytes())
            .map_err(store_error)?
            .iter()
            .map(|(h, _)| *h),
    );
    heights.sort_unstable();
    heights.dedup();
    heights.retain(|h| *h <= tip);
    heights.truncate(CANDIDATES_MAX);
    if heights.is_empty() {
        return Err(ApiError::not_found(format!(
            "transfer {id} is in no block this node executed (its height is {tip}); ask its status"
        )));
    }
    let read = state.reads.start_for(STATUS_READ_TIME_MAX)?;
    let mut found = None;
    for height in heights {
        if read.out_of_time() {
            return Err(unavailable(format!(
                "the blocks that may hold it took longer than {} s to read; retry",
                STATUS_READ_TIME_MAX.as_secs()
            )));
        }
        let material = match state.proofs.get(height) {
            Some(material) => material,
            None => {
                let material = Arc::new(block_proofs(&state, height).await?);
                state.proofs.insert(height, material.clone());
                material
            }
        };
        if let Some(index) = material.position(&id) {
            found = Some((height, index, material));
            break;
        }
    }
    let Some((height, index, material)) = found else {
        return Err(ApiError::not_found(format!(
            "transfer {id} is in no block this node executed (its height is {tip})"
        )));
    };
    if height >= tip {
        return Err(unavailable(format!(
            "transfer {id} is in block {height}; its outcome is proven by the header of block {}, which has not committed here yet; retry",
            height + 1
        )));
    }
    let certified = |h: u64| -> Result<CertifiedHeader, ApiError> {
        let header = state.store.header(h).map_err(store_error)?;
        let certificate = state.store.certificate(h).map_err(store_error)?;
        match (header, certificate) {
            (Some(header), Some(certificate)) => Ok(CertifiedHeader {
                header,
                certificate,
            }),
            _ => Err(ApiError::internal(format!(
                "header or certificate of block {h} missing"
            ))),
        }
    };
    let block = certified(height)?;
    let next = certified(height + 1)?;
    let path_error = |e: mosaic_crypto::MerkleError| ApiError::internal(e.to_string());
    let tx_path = material.tx_tree.proof(index).map_err(path_error)?;
    if material.tx_tree.root() != block.header.tx_root
        || material.outcome_tree.root() != next.header.outcome_root
    {
        // Made from a damaged body or record: not kept to answer again.
        state.proofs.remove(height);
        return Err(ApiError::internal(format!(
            "the transfers or outcomes stored for block {height} do not match the roots of blocks {height} and {}: the store is damaged",
            height + 1
        )));
    }
    let outcome = material.outcomes[index];
    let proof = TxProof {
        transfer: material.txs[index].clone(),
        index: index as u32,
        tx_path,
        block,
        outcome,
        outcome_path: material.outcome_tree.proof(index).map_err(path_error)?,
        next,
    };
    let mut answer = json!({
        "hash": id.to_string(),
        "status": if outcome == TxOutcome::Applied { "committed" } else { "failed" },
        "height": height,
        "index": index,
        "proven_by_height": height + 1,
        "proof": hex::encode(encode(&proof).map_err(cannot_encode)?),
    });
    if let (TxOutcome::Failed(reason), Some(map)) = (outcome, answer.as_object_mut()) {
        map.insert("reason".into(), json!(reason.to_string()));
    }
    Ok(ok(answer))
}

/// Block `height`'s proof material: its body (rebuilt from fragments when
/// pruned) decoded, and its outcomes as this node recorded them.
async fn block_proofs(state: &ApiState, height: u64) -> Result<BlockProofs, ApiError> {
    let (body, _, _) = block_body(state, height).await?;
    let txs: Vec<SignedTransfer> = codec::decode(&body, BODY_BYTES_MAX)
        .map_err(|e| ApiError::internal(format!("stored body does not decode: {e}")))?;
    let records = state
        .store
        .block_outcomes(height)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::internal(format!("no outcomes stored for block {height}")))?
        .records;
    // A failure record names the transfer and its position; every other
    // transfer applied.
    let failed: HashMap<usize, (Hash, TxOutcome)> = records
        .iter()
        .map(|(rid, record)| {
            (
                record.index as usize,
                (Hash::from_bytes(*rid), record.outcome),
            )
        })
        .collect();
    BlockProofs::new(txs, body.len(), |i, id| match failed.get(&i) {
        Some((rid, outcome)) if rid == id => *outcome,
        _ => TxOutcome::Applied,
    })
    .map_err(|e| ApiError::internal(format!("block {height}: {e}")))
}
