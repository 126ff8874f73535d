//! The `forge-answers` maverick: a validator whose consensus is honest and whose
//! API lies to clients, so real-process tests can show that what the CLI prints as
//! verified never comes from it. It wraps the honest routes and rewrites their
//! answers, rotating through the forgeries a lying node can make:
//!
//! | answer | forgeries, in turn |
//! |--------|--------------------|
//! | `/v1/accounts/{a}` | the balance plus 1,000,000 |
//! | `/v1/accounts/{a}/proof` | 0: honest proof, balance field raised; 1: the proven account's balance raised in the proof; 2: a true proof of another account; 3: a true proof of the oldest state it kept (a stale height) |
//! | `/v1/transactions/{h}` | committed becomes failed (insufficient balance); anything else becomes committed at the height below the tip |
//! | `/v1/transactions/{h}/proof` | for a flipped status, the honest proof with its outcome flipped; for an invented commit, a true proof of another transfer (or garbage before it saw one) |
//!
//! Compiled only with the `byzantine` feature, like the rest of [`crate::maverick`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mosaic_crypto::codec;
use mosaic_ledger::ledger::{Account, FailReason, TxOutcome};
use mosaic_ledger::proof::{AccountProof, PROOF_BYTES_MAX, TxProof, encode};
use serde_json::{Value, json};

use crate::chain::{Proven, Shared, lock};

/// Largest honest answer the forger rewrites (a proof answer is far smaller).
const ANSWER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Hashes whose forged status it remembers, for the proof asked next.
const CLAIMS_MAX: usize = 4_096;
const RAISE: u64 = 1_000_000;

/// What it told a client about a transfer, so the proof matches the lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Said failed where it committed.
    Flipped,
    /// Said committed where it did not.
    Invented,
}

#[derive(Default)]
struct Lies {
    account_proofs: u64,
    /// The first provable state it saw: served later as a stale proof.
    oldest: Option<Proven>,
    claims: HashMap<String, Claim>,
    /// The last honest transfer proof that passed through (hex).
    other_transfer: Option<String>,
}

#[derive(Clone)]
struct Forger {
    shared: Arc<Mutex<Shared>>,
    lies: Arc<Mutex<Lies>>,
}

/// `router` with every client answer forged.
pub fn wrap(router: Router, shared: Arc<Mutex<Shared>>) -> Router {
    let forger = Forger {
        shared,
        lies: Arc::new(Mutex::new(Lies::default())),
    };
    router.layer(axum::middleware::from_fn_with_state(forger, forge))
}

enum Route {
    Account,
    AccountProof(String),
    Status(String),
    StatusProof(String),
}

fn route_of(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "accounts", _] => Some(Route::Account),
        ["v1", "accounts", a, "proof"] => Some(Route::AccountProof(a.to_string())),
        ["v1", "transactions", h] if *h != "batch" => Some(Route::Status(h.to_string())),
        ["v1", "transactions", h, "proof"] => Some(Route::StatusProof(h.to_string())),
        _ => None,
    }
}

async fn forge(State(forger): State<Forger>, request: Request, next: Next) -> Response {
    let Some(route) = route_of(request.uri().path()) else {
        return next.run(request).await;
    };
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let Ok(bytes) = axum::body::to_bytes(response.into_body(), ANSWER_BYTES_MAX).await else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let honest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (code, value) = forger.lie(route, status, honest);
    let code = axum::http::StatusCode::from_u16(code)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from(value.to_string()),
    )
        .into_response()
}

fn lock_lies(lies: &Mutex<Lies>) -> std::sync::MutexGuard<'_, Lies> {
    lies.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Forger {
    fn lie(&self, route: Route, status: u16, mut value: Value) -> (u16, Value) {
        match route {
            Route::Account => {
                if let Some(balance) = value["balance"].as_u64() {
                    value["balance"] = json!(balance.saturating_add(RAISE));
                }
                (status, value)
            }
            Route::AccountProof(address) if status == 200 => {
                (200, self.account_proof(&address, value))
            }
            Route::Status(hash) if status == 200 => (200, self.status(hash, value)),
            Route::StatusProof(hash) => self.status_proof(&hash, status, value),
            _ => (status, value),
        }
    }

    fn account_proof(&self, address: &str, mut value: Value) -> Value {
        let proven = lock(&self.shared).proven.clone();
        let mut lies = lock_lies(&self.lies);
        if lies.oldest.is_none() {
            lies.oldest = proven.clone();
        }
        let round = lies.account_proofs % 4;
        lies.account_proofs += 1;
        let oldest = lies.oldest.clone();
        drop(lies);
        let Ok(key) = address.parse::<mosaic_crypto::PublicKey>() else {
            return value;
        };
        let decoded = value["proof"]
            .as_str()
            .and_then(|text| hex::decode(text).ok())
            .and_then(|bytes| codec::decode::<AccountProof>(&bytes, PROOF_BYTES_MAX).ok());
        let raised = value["balance"].as_u64().unwrap_or(0).saturating_add(RAISE);
        match (round, decoded, proven) {
            (0, _, _) => value["balance"] = json!(raised),
            (1, Some(mut proof), _) => {
                let account = proof.account.unwrap_or_default();
                proof.account = Some(Account {
                    balance: account.balance.saturating_add(RAISE),
                    ..account
                });
                value["balance"] = json!(raised);
                value["proof"] = json!(hex::encode(encode(&proof).unwrap_or_default()));
            }
            (2, _, Some(proven)) => {
                if let Some((other, account)) = proven.accounts.iter().find(|(k, _)| **k != key) {
                    let proof = proven.prove(other);
                    value["balance"] = json!(account.balance);
                    value["nonce"] = json!(account.nonce);
                    value["proof"] = json!(hex::encode(encode(&proof).unwrap_or_default()));
                }
            }
            (3, _, _) => {
                if let Some(old) = oldest {
                    let proof = old.prove(&key);
                    let shown = proof.account.unwrap_or_default();
                    value["balance"] = json!(shown.balance);
                    value["nonce"] = json!(shown.nonce);
                    value["height"] = json!(old.header.height);
                    value["proof"] = json!(hex::encode(encode(&proof).unwrap_or_default()));
                }
            }
            _ => value["balance"] = json!(raised),
        }
        value
    }

    fn remember(&self, hash: String, claim: Claim) {
        let mut lies = lock_lies(&self.lies);
        if lies.claims.len() >= CLAIMS_MAX {
            lies.claims.clear();
        }
        lies.claims.insert(hash, claim);
    }

    fn status(&self, hash: String, mut value: Value) -> Value {
        if value["status"] == "committed" {
            self.remember(hash, Claim::Flipped);
            value["status"] = json!("failed");
            value["reason"] = json!(
                FailReason::InsufficientBalance {
                    balance: 0,
                    amount: 1
                }
                .to_string()
            );
            return value;
        }
        let tip = lock(&self.shared).tip.height;
        self.remember(hash, Claim::Invented);
        value["status"] = json!("committed");
        value["final"] = json!(true);
        value["height"] = json!(tip.saturating_sub(1).max(1));
        value["index"] = json!(0);
        value
    }

    fn status_proof(&self, hash: &str, status: u16, mut value: Value) -> (u16, Value) {
        let claim = lock_lies(&self.lies).claims.get(hash).copied();
        if status == 200
            && let Some(text) = value["proof"].as_str()
        {
            lock_lies(&self.lies).other_transfer = Some(text.to_string());
        }
        match claim {
            Some(Claim::Flipped) if status == 200 => {
                let decoded = value["proof"]
                    .as_str()
                    .and_then(|text| hex::decode(text).ok())
                    .and_then(|bytes| codec::decode::<TxProof>(&bytes, PROOF_BYTES_MAX).ok());
                if let Some(mut proof) = decoded {
                    proof.outcome = TxOutcome::Failed(FailReason::InsufficientBalance {
                        balance: 0,
                        amount: 1,
                    });
                    value["proof"] = json!(hex::encode(encode(&proof).unwrap_or_default()));
                }
                (200, value)
            }
            Some(Claim::Invented) => {
                let other = lock_lies(&self.lies).other_transfer.clone();
                (
                    200,
                    json!({"hash": hash, "proof": other.unwrap_or_else(|| "00".into())}),
                )
            }
            _ => (status, value),
        }
    }
}
