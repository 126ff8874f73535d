//! What the CLI prints of an account or a transfer is checked against the genesis
//! file ([`mosaic_ledger::proof`]), not taken from the node that answered: a node
//! whose proof fails is named, the next `--node` is asked, and with no verified
//! answer the command fails.
//!
//! A proof can be true and old: an account proof must be of a height no more than
//! [`STALE_HEIGHTS_MAX`] below the height the asked nodes report (the (f+1)-th
//! highest when f+1 of them answer, so f liars cannot raise it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use mosaic_crypto::{Hash, PublicKey};
use mosaic_ledger::genesis::Genesis;
use mosaic_ledger::proof::Checker;
use serde_json::{Value, json};

use crate::client::{self, Client};
use crate::lifecycle::TESTNET_DIR;

/// How far below the nodes' height an account proof may be.
pub const STALE_HEIGHTS_MAX: u64 = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The genesis the CLI trusts: `--genesis`, else the local testnet's; `None`
/// when there is neither (answers are then printed unverified, and say so).
pub fn trusted_genesis(explicit: Option<&Path>) -> Result<Option<Genesis>> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let local = PathBuf::from(TESTNET_DIR).join("genesis.json");
            if !local.exists() {
                return Ok(None);
            }
            local
        }
    };
    Ok(Some(Genesis::read(&path)?))
}

/// A node's name: the validator of the local testnet at that address, else the
/// address.
fn name_of(url: &str, genesis: &Genesis) -> String {
    crate::testnet::read(Path::new(TESTNET_DIR))
        .ok()
        .and_then(|file| file.nodes.into_iter().find(|n| n.api == url))
        .and_then(|n| genesis.validators.get(n.index).map(|v| v.name.clone()))
        .unwrap_or_else(|| url.to_string())
}

/// The height the nodes report: the (f+1)-th highest when at least f+1 answer
/// (at least one honest node is that high), else the lowest answer.
fn network_height(urls: &[String], genesis: &Genesis) -> u64 {
    let f = genesis.validators.len().saturating_sub(1) / 3;
    let mut heights: Vec<u64> = urls
        .iter()
        .filter_map(|url| {
            Client::with_timeout(url, Duration::from_secs(3))
                .get_raw("/v1/status")
                .ok()
                .and_then(|(code, v)| (code == 200).then(|| v["height"].as_u64()).flatten())
        })
        .collect();
    heights.sort_unstable_by(|a, b| b.cmp(a));
    if heights.len() > f {
        heights[f]
    } else {
        heights.last().copied().unwrap_or(0)
    }
}

fn proof_bytes(value: &Value) -> Result<Vec<u8>, String> {
    let text = value["proof"]
        .as_str()
        .ok_or_else(|| "its answer carries no proof".to_string())?;
    hex::decode(text).map_err(|e| format!("its proof is not hex: {e}"))
}

/// `mosaic account` with verification: the first node whose proof holds.
pub fn account(address: &PublicKey, urls: &[String], genesis: &Genesis) -> Result<Value> {
    let checker = Checker::new(genesis)?;
    let floor = network_height(urls, genesis).saturating_sub(STALE_HEIGHTS_MAX);
    let mut refused = Vec::new();
    for url in urls {
        let name = name_of(url, genesis);
        let answer = Client::with_timeout(url, REQUEST_TIMEOUT)
            .get_raw(&format!("/v1/accounts/{address}/proof"));
        let value = match answer {
            Ok((200, value)) => value,
            Ok((code, value)) => {
                refused.push(json!({"node": name, "reason": client::error_text(code, &value)}));
                continue;
            }
            Err(e) => {
                refused.push(json!({"node": name, "reason": format!("{e:#}")}));
                continue;
            }
        };
        let verdict = proof_bytes(&value).and_then(|bytes| {
            checker.account(address, &bytes).map_err(|e| {
                format!("{name} answered a balance its certificate does not prove: {e}")
            })
        });
        let proven = match verdict {
            Ok(proven) => proven,
            Err(reason) => {
                refused.push(json!({"node": name, "reason": reason}));
                continue;
            }
        };
        if proven.height < floor {
            refused.push(json!({"node": name, "reason": format!(
                "{name} answered a proof of height {}, more than {STALE_HEIGHTS_MAX} below the nodes' height {}",
                proven.height, floor + STALE_HEIGHTS_MAX
            )}));
            continue;
        }
        if value["balance"].as_u64() != Some(proven.value.account.balance)
            || value["nonce"].as_u64() != Some(proven.value.account.nonce)
        {
            refused.push(json!({"node": name, "reason": format!(
                "{name} answered a balance its own proof contradicts"
            )}));
            continue;
        }
        return Ok(json!({
            "address": address.to_string(),
            "balance": proven.value.account.balance,
            "nonce": proven.value.account.nonce,
            "exists": proven.value.exists,
            "verified": {
                "genesis": proven.genesis.to_string(),
                "height": proven.height,
                "state_after_height": proven.height.saturating_sub(1),
                "signers": proven.signers,
                "validators": proven.validators,
                "node": name,
            },
            "refused": refused,
        }));
    }
    Err(no_verified_answer("account", &refused))
}

fn no_verified_answer(what: &str, refused: &[Value]) -> anyhow::Error {
    let reasons: Vec<String> = refused
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r["node"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("?")
            )
        })
        .collect();
    anyhow!(
        "no node gave a verified {what} answer:\n  {}",
        reasons.join("\n  ")
    )
}

/// The text of a verified account answer.
pub fn describe_account(value: &Value) -> String {
    let v = &value["verified"];
    let mut text = format!(
        "address {}\nbalance {}\nnonce {}\nverified against genesis {}: height {}, certificate of {} of {} validators (state after block {}, from {})",
        value["address"].as_str().unwrap_or_default(),
        value["balance"],
        value["nonce"],
        v["genesis"].as_str().unwrap_or_default(),
        v["height"],
        v["signers"],
        v["validators"],
        v["state_after_height"],
        v["node"].as_str().unwrap_or_default(),
    );
    text.push_str(&refused_lines(value));
    text
}

fn refused_lines(value: &Value) -> String {
    value["refused"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("\nrefused: {}", r["reason"].as_str().unwrap_or_default()))
        .collect()
}

/// Checks a final status answer (committed or failed) from `url` with the node's
/// transfer proof; returns the status with what was verified, or why it fails.
pub fn check_status(
    hash: &str,
    url: &str,
    status: &Value,
    genesis: &Genesis,
) -> Result<Value, String> {
    let name = name_of(url, genesis);
    let checker = Checker::new(genesis).map_err(|e| e.to_string())?;
    let id: Hash = hash
        .parse()
        .map_err(|e| format!("{hash:?} is not a transfer hash: {e}"))?;
    let answer = Client::with_timeout(url, REQUEST_TIMEOUT)
        .get_raw(&format!("/v1/transactions/{hash}/proof"))
        .map_err(|e| format!("{name}: {e:#}"))?;
    let value = match answer {
        (200, value) => value,
        (code, value) => {
            return Err(format!(
                "{name} answered {} but gives no proof of it: {}",
                status["status"].as_str().unwrap_or_default(),
                client::error_text(code, &value)
            ));
        }
    };
    let proven = proof_bytes(&value)
        .and_then(|bytes| checker.transfer(&id, &bytes).map_err(|e| e.to_string()))
        .map_err(|e| format!("{name} answered a status its certificate does not prove: {e}"))?;
    let outcome = match proven.value.outcome {
        mosaic_ledger::ledger::TxOutcome::Applied => ("committed", None),
        mosaic_ledger::ledger::TxOutcome::Failed(reason) => ("failed", Some(reason.to_string())),
    };
    let claimed = status["status"].as_str().unwrap_or_default();
    if claimed != outcome.0 || status["height"].as_u64() != Some(proven.value.block) {
        return Err(format!(
            "{name} answered {claimed} at height {}, but its proof says {} at height {}",
            status["height"], outcome.0, proven.value.block
        ));
    }
    let mut out = json!({
        "hash": hash,
        "status": outcome.0,
        "final": true,
        "height": proven.value.block,
        "index": proven.value.index,
        "node": url,
        "verified": {
            "genesis": proven.genesis.to_string(),
            "height": proven.height,
            "proven_by_height": proven.height + 1,
            "signers": proven.signers,
            "validators": proven.validators,
            "node": name,
        },
    });
    if let (Some(reason), Some(map)) = (outcome.1, out.as_object_mut()) {
        map.insert("reason".into(), json!(reason));
    }
    Ok(out)
}

/// `mosaic tx status` with verification: a final status counts only with a proof
/// that holds; one that fails names its node and is set aside.
pub fn status(hash: &str, urls: &[String], genesis: &Genesis) -> Result<Value> {
    let mut refused = Vec::new();
    let mut unproven: Option<Value> = None;
    let mut errors = Vec::new();
    for url in urls {
        let value = match Client::with_timeout(url, REQUEST_TIMEOUT)
            .get_raw(&format!("/v1/transactions/{hash}"))
        {
            Ok((200, value)) => value,
            Ok((code, value)) => {
                errors.push(format!("{url}: {}", client::error_text(code, &value)));
                continue;
            }
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        match value["status"].as_str().unwrap_or_default() {
            "committed" | "failed" => match check_status(hash, url, &value, genesis) {
                Ok(mut verified) => {
                    if let Some(map) = verified.as_object_mut() {
                        map.insert("refused".into(), json!(refused));
                    }
                    return Ok(verified);
                }
                Err(reason) => {
                    refused.push(json!({"node": name_of(url, genesis), "reason": reason}))
                }
            },
            _ => {
                let mut value = value;
                if let Some(map) = value.as_object_mut() {
                    map.insert("node".into(), json!(url));
                    map.insert("verified".into(), json!(false));
                }
                if unproven
                    .as_ref()
                    .is_none_or(|u| u["final"] != true && value["final"] == true)
                {
                    unproven = Some(value);
                }
            }
        }
    }
    match unproven {
        Some(mut value) => {
            if let Some(map) = value.as_object_mut() {
                map.insert("refused".into(), json!(refused));
            }
            Ok(value)
        }
        None if !refused.is_empty() => Err(no_verified_answer("status", &refused)),
        None => bail!("no node answered: {}", errors.join("; ")),
    }
}

/// The text of a status answer, saying what was verified.
pub fn describe_status(value: &Value) -> String {
    let mut text = crate::lifecycle::describe_status(value);
    let v = &value["verified"];
    if v.is_object() {
        text.push_str(&format!(
            "\nverified against genesis {}: height {}, certificate of {} of {} validators (outcome proven by block {}, from {})",
            v["genesis"].as_str().unwrap_or_default(),
            v["height"],
            v["signers"],
            v["validators"],
            v["proven_by_height"],
            v["node"].as_str().unwrap_or_default(),
        ));
    } else {
        text.push_str("\n(not verified: only committed and failed statuses have proofs)");
    }
    text.push_str(&refused_lines(value));
    text
}
