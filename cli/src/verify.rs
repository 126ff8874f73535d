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
use mosaic_ledger::ledger::Transfer;
use mosaic_ledger::proof::Checker;
use serde_json::{Value, json};

use crate::client::{self, Client, Patience};
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
    let genesis = Genesis::read(&path)?;
    if let Some(dir) = path.parent() {
        let _ = NAMES_DIR.set(dir.to_path_buf());
    }
    Ok(Some(genesis))
}

/// The testnet folder whose file names the nodes: the one holding the trusted
/// genesis file (set once, by [`trusted_genesis`]), else [`TESTNET_DIR`].
static NAMES_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A node's name: the validator of the local testnet at that address, else the
/// address.
fn name_of(url: &str, genesis: &Genesis) -> String {
    let dir = NAMES_DIR
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(TESTNET_DIR));
    crate::testnet::read(&dir)
        .ok()
        .and_then(|file| file.nodes.into_iter().find(|n| n.api == url))
        .and_then(|n| genesis.validators.get(n.index).map(|v| v.name.clone()))
        .unwrap_or_else(|| url.to_string())
}

/// The most replicas that may be faulty in `genesis`'s set.
fn faulty_max(genesis: &Genesis) -> usize {
    genesis.validators.len().saturating_sub(1) / 3
}

/// How old a proof may be, from the heights the nodes report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// At least 2f+1 nodes answered: the (f+1)-th highest of their heights is at
    /// most an honest node's height (f liars cannot raise it), and at least f+1
    /// of those at or above it are honest (f liars cannot lower it below every
    /// honest answer). A proof more than [`STALE_HEIGHTS_MAX`] below it is refused.
    Floor { height: u64, answered: usize },
    /// Fewer answered: the nodes asked could lower any floor, so none is applied
    /// and the output says so.
    Unchecked { answered: usize },
}

impl Freshness {
    fn of(urls: &[String], genesis: &Genesis) -> Freshness {
        let f = faulty_max(genesis);
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
        let answered = heights.len();
        if answered > 2 * f {
            Freshness::Floor {
                height: heights[f],
                answered,
            }
        } else {
            Freshness::Unchecked { answered }
        }
    }

    /// Why a proof of `height` from `name` is too old, if it is.
    fn refuse(&self, name: &str, height: u64) -> Option<String> {
        match *self {
            Freshness::Floor { height: nodes, .. }
                if height.saturating_add(STALE_HEIGHTS_MAX) < nodes =>
            {
                Some(format!(
                    "{name} answered a proof of height {height}, more than {STALE_HEIGHTS_MAX} below the nodes' height {nodes}"
                ))
            }
            _ => None,
        }
    }

    fn describe(&self, genesis: &Genesis) -> String {
        let needed = 2 * faulty_max(genesis) + 1;
        match *self {
            Freshness::Floor { height, answered } => format!(
                "at most {STALE_HEIGHTS_MAX} below height {height}, which {answered} nodes report"
            ),
            Freshness::Unchecked { answered } => format!(
                "unchecked: {answered} node(s) reported a height, {needed} are needed to bound how old a proof may be"
            ),
        }
    }
}

fn proof_bytes(value: &Value) -> Result<Vec<u8>, String> {
    let text = value["proof"]
        .as_str()
        .ok_or_else(|| "its answer carries no proof".to_string())?;
    hex::decode(text).map_err(|e| format!("its proof is not hex: {e}"))
}

/// `mosaic account` with verification: the first node whose proof holds.
pub fn account(
    address: &PublicKey,
    urls: &[String],
    genesis: &Genesis,
    patience: Patience,
) -> Result<Value> {
    let checker = Checker::new(genesis)?;
    let freshness = Freshness::of(urls, genesis);
    let mut refused = Vec::new();
    for url in urls {
        let name = name_of(url, genesis);
        let answer = Client::with_timeout(url, REQUEST_TIMEOUT)
            .with_patience(patience)
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
        if let Some(reason) = freshness.refuse(&name, proven.height) {
            refused.push(json!({"node": name, "reason": reason}));
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
                "freshness": freshness.describe(genesis),
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
        "address {}\nbalance {}\nnonce {}\nverified against genesis {}: height {}, certificate of {} of {} validators (state after block {}, from {}); freshness {}",
        value["address"].as_str().unwrap_or_default(),
        value["balance"],
        value["nonce"],
        v["genesis"].as_str().unwrap_or_default(),
        v["height"],
        v["signers"],
        v["validators"],
        v["state_after_height"],
        v["node"].as_str().unwrap_or_default(),
        v["freshness"].as_str().unwrap_or_default(),
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

/// Why a node's final status is not taken as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unproven {
    /// Its proof fails, or contradicts what it said: the node is named.
    Refused(String),
    /// It has no proof to give yet (the block that proves an outcome is the next
    /// one, so a status can be ahead of its proof for a moment) or could not be
    /// asked for it: nothing shows it lied, nothing shows it is right.
    NotYet(String),
}

/// Checks a final status answer (committed or failed) from `url` with the node's
/// transfer proof; returns the status with what was verified, or why not.
pub fn check_status(
    hash: &str,
    url: &str,
    status: &Value,
    genesis: &Genesis,
    patience: Patience,
) -> Result<Value, Unproven> {
    let name = name_of(url, genesis);
    let checker = Checker::new(genesis).map_err(|e| Unproven::Refused(e.to_string()))?;
    let id: Hash = hash
        .parse()
        .map_err(|e| Unproven::Refused(format!("{hash:?} is not a transfer hash: {e}")))?;
    let claimed = status["status"].as_str().unwrap_or_default();
    // With `WaitOutBusy` the client waits out a 503's Retry-After a few times
    // before this answer; with `Poll` the caller's own loop asks again.
    let answer = Client::with_timeout(url, REQUEST_TIMEOUT)
        .with_patience(patience)
        .get_raw(&format!("/v1/transactions/{hash}/proof"))
        .map_err(|e| Unproven::NotYet(format!("{name} could not be asked for its proof: {e:#}")))?;
    let value = match answer {
        (200, value) => value,
        (503, value) => {
            return Err(Unproven::NotYet(format!(
                "{name} answered {claimed} at height {} but has no proof of it yet: {}",
                status["height"],
                client::error_text(503, &value)
            )));
        }
        (code, value) => {
            return Err(Unproven::Refused(format!(
                "{name} answered {claimed} but gives no proof of it: {}",
                client::error_text(code, &value)
            )));
        }
    };
    let proven = proof_bytes(&value)
        .and_then(|bytes| checker.transfer(&id, &bytes).map_err(|e| e.to_string()))
        .map_err(|e| {
            Unproven::Refused(format!(
                "{name} answered a status its certificate does not prove: {e}"
            ))
        })?;
    let outcome = match proven.value.outcome {
        mosaic_ledger::ledger::TxOutcome::Applied => ("committed", None),
        mosaic_ledger::ledger::TxOutcome::Failed(reason) => ("failed", Some(reason.to_string())),
    };
    if claimed != outcome.0 || status["height"].as_u64() != Some(proven.value.block) {
        return Err(Unproven::Refused(format!(
            "{name} answered {claimed} at height {}, but its proof says {} at height {}",
            status["height"], outcome.0, proven.value.block
        )));
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

/// `mosaic tx status` with verification: a committed or failed status counts only
/// with a proof that holds (one that fails names its node and is set aside). What
/// has no proof (pending, dropped, expired, or an outcome not provable yet) is
/// final only when f+1 nodes say the same, so at least one honest node does;
/// otherwise the most final of the other answers is printed, marked not final.
pub fn status(hash: &str, urls: &[String], genesis: &Genesis, patience: Patience) -> Result<Value> {
    let mut refused = Vec::new();
    let mut unproven: Vec<Value> = Vec::new();
    let mut not_yet = Vec::new();
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
        let mut value = value;
        if let Some(map) = value.as_object_mut() {
            map.insert("node".into(), json!(url));
            map.insert("verified".into(), json!(false));
        }
        if matches!(value["status"].as_str(), Some("committed" | "failed")) {
            match check_status(hash, url, &value, genesis, patience) {
                Ok(mut verified) => {
                    if let Some(map) = verified.as_object_mut() {
                        map.insert("refused".into(), json!(refused));
                    }
                    return Ok(verified);
                }
                Err(Unproven::Refused(reason)) => {
                    refused.push(json!({"node": name_of(url, genesis), "reason": reason}));
                    continue;
                }
                Err(Unproven::NotYet(reason)) => not_yet.push(reason),
            }
        }
        unproven.push(value);
    }
    let Some(mut value) = most_final_unproven(unproven, faulty_max(genesis)) else {
        if !refused.is_empty() {
            return Err(no_verified_answer("status", &refused));
        }
        bail!("no node answered: {}", errors.join("; "));
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("refused".into(), json!(refused));
        map.insert("not_yet_proven".into(), json!(not_yet));
    }
    Ok(value)
}

/// The answer to print of those without a proof: a final status (by
/// [`crate::lifecycle::rank`]) that at least `f + 1` answers share, with the
/// number that agree; else the most final answer below final, or, when every
/// answer claims an end that too few share, the first of them, marked not final.
fn most_final_unproven(answers: Vec<Value>, f: usize) -> Option<Value> {
    use crate::lifecycle::{FINAL_RANK, rank};
    let agree = |status: &str| {
        answers
            .iter()
            .filter(|a| a["status"].as_str() == Some(status) && rank(a) >= FINAL_RANK)
            .count()
    };
    let agreed = answers
        .iter()
        .filter(|a| rank(a) >= FINAL_RANK)
        .map(|a| (agree(a["status"].as_str().unwrap_or_default()), a))
        .filter(|(count, _)| *count > f)
        .max_by_key(|(_, a)| rank(a))
        .map(|(count, a)| (count, a.clone()));
    if let Some((count, mut value)) = agreed {
        if let Some(map) = value.as_object_mut() {
            map.insert("final".into(), json!(true));
            map.insert("agreed_by".into(), json!(count));
        }
        return Some(value);
    }
    let mut below: Vec<&Value> = answers.iter().filter(|a| rank(a) < FINAL_RANK).collect();
    below.sort_by_key(|a| std::cmp::Reverse(rank(a)));
    let mut value = below.first().copied().or(answers.first())?.clone();
    let claims: Vec<String> = answers
        .iter()
        .filter(|a| rank(a) >= FINAL_RANK)
        .map(|a| {
            format!(
                "{} says {} (no proof, and fewer than {} nodes say so)",
                a["node"].as_str().unwrap_or_default(),
                a["status"].as_str().unwrap_or_default(),
                f + 1
            )
        })
        .collect();
    if let Some(map) = value.as_object_mut() {
        map.insert("final".into(), json!(false));
        map.insert("unconfirmed".into(), json!(claims));
    }
    Some(value)
}

/// The end of `tx`'s life as far as proofs show it, or `None` while they do not:
/// a committed or failed status proven by some node; else, from a verified proof
/// of the sender's account, either its nonce still unused at a height past
/// `valid_until` (expired: it never applied and never can), or its nonce used
/// while no node proves this transfer committed or failed (another transfer took
/// the nonce: this one can never apply).
pub fn settle(tx: &Transfer, urls: &[String], genesis: &Genesis) -> Option<Value> {
    let hash = tx.hash().to_string();
    let status = status(&hash, urls, genesis, Patience::Poll).ok()?;
    if status["verified"].is_object() {
        return Some(status);
    }
    let waiting = status["status"].as_str() == Some("committed")
        || status["not_yet_proven"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    if waiting {
        return None;
    }
    let account = account(&tx.from, urls, genesis, Patience::Poll).ok()?;
    let next = account["nonce"].as_u64()?;
    let height = account["verified"]["height"].as_u64()?;
    let (ended, reason) = if next > tx.nonce {
        (
            "dropped",
            format!(
                "the sender's nonce {} is used (its next nonce is {next} after block {}, verified), and no node proves this transfer committed or failed: another transfer took the nonce, so this one can never apply",
                tx.nonce,
                height.saturating_sub(1)
            ),
        )
    } else if height > tx.valid_until {
        (
            "expired",
            format!(
                "valid until height {}; after block {} the sender's next nonce is still {next} (verified), so it never applied and never can; the nonce {} may be sent again",
                tx.valid_until,
                height.saturating_sub(1),
                tx.nonce
            ),
        )
    } else {
        return None;
    };
    Some(json!({
        "hash": hash,
        "status": ended,
        "final": true,
        "reason": reason,
        "valid_until": tx.valid_until,
        "node": account["verified"]["node"],
        "verified": account["verified"],
    }))
}

/// The text of a status answer, saying what was verified.
pub fn describe_status(value: &Value) -> String {
    let mut text = crate::lifecycle::describe_status(value);
    let v = &value["verified"];
    if v.is_object() && v["proven_by_height"].is_null() {
        text.push_str(&format!(
            "\nverified against genesis {}: the sender's account at height {}, certificate of {} of {} validators (from {})",
            v["genesis"].as_str().unwrap_or_default(),
            v["height"],
            v["signers"],
            v["validators"],
            v["node"].as_str().unwrap_or_default(),
        ));
    } else if v.is_object() {
        text.push_str(&format!(
            "\nverified against genesis {}: height {}, certificate of {} of {} validators (outcome proven by block {}, from {})",
            v["genesis"].as_str().unwrap_or_default(),
            v["height"],
            v["signers"],
            v["validators"],
            v["proven_by_height"],
            v["node"].as_str().unwrap_or_default(),
        ));
    } else if let Some(count) = value["agreed_by"].as_u64() {
        text.push_str(&format!(
            "\n(not verified: no proof of this status exists; {count} nodes say so, so at least one honest node does)"
        ));
    } else {
        text.push_str(
            "\n(not verified and not final: only committed and failed statuses have proofs)",
        );
    }
    for line in value["not_yet_proven"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(value["unconfirmed"].as_array().into_iter().flatten())
    {
        text.push_str(&format!("\n{}", line.as_str().unwrap_or_default()));
    }
    text.push_str(&refused_lines(value));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(node: &str, status: &str) -> Value {
        json!({"node": node, "status": status, "final": status != "pending"})
    }

    /// One node's unproven "expired" does not outrank another's "pending": it is
    /// printed as not final, and the claim is listed.
    #[test]
    fn a_lone_unproven_end_is_not_final() {
        let answers = vec![answer("liar", "expired"), answer("honest", "pending")];
        let value = most_final_unproven(answers, 1).unwrap();
        assert_eq!(value["status"], "pending");
        assert_eq!(value["final"], false);
        assert!(
            value["unconfirmed"][0]
                .as_str()
                .unwrap()
                .contains("liar says expired")
        );
    }

    /// f+1 nodes saying the same end include an honest one: it is final.
    #[test]
    fn an_end_that_f_plus_one_share_is_final() {
        let answers = vec![
            answer("a", "pending"),
            answer("b", "expired"),
            answer("c", "expired"),
        ];
        let value = most_final_unproven(answers, 1).unwrap();
        assert_eq!(value["status"], "expired");
        assert_eq!(value["final"], true);
        assert_eq!(value["agreed_by"], 2);
        let only = most_final_unproven(vec![answer("a", "committed")], 1).unwrap();
        assert_eq!(only["final"], false, "one unproven committed is not final");
    }

    fn genesis(n: usize) -> Genesis {
        let validators = (0..n as u64)
            .map(|i| mosaic_ledger::genesis::GenesisValidator {
                name: format!("validator-{i}"),
                public_key: mosaic_crypto::Keypair::from_seed_for_tests(i).public(),
            })
            .collect();
        Genesis {
            chain_id: mosaic_crypto::ChainId::new("test").unwrap(),
            data_shards: 2,
            validators,
            balances: Vec::new(),
        }
    }

    /// A floor is applied only with 2f+1 heights, and then refuses a proof more
    /// than STALE_HEIGHTS_MAX below it.
    #[test]
    fn freshness_needs_a_quorum_of_heights() {
        let g = genesis(4);
        let floor = Freshness::Floor {
            height: 100,
            answered: 3,
        };
        assert!(floor.refuse("v", 100 - STALE_HEIGHTS_MAX).is_none());
        assert!(
            floor
                .refuse("v", 99 - STALE_HEIGHTS_MAX)
                .unwrap()
                .contains("below the nodes' height 100")
        );
        let unchecked = Freshness::Unchecked { answered: 2 };
        assert!(unchecked.refuse("v", 0).is_none());
        assert!(unchecked.describe(&g).contains("3 are needed"));
        // Nothing answers at these addresses: too few heights for a floor.
        let urls = vec!["http://127.0.0.1:1".to_string()];
        assert_eq!(
            Freshness::of(&urls, &g),
            Freshness::Unchecked { answered: 0 }
        );
    }
}
