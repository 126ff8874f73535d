//! What a 202 promises, in real processes: a transfer answered 202 by a validator
//! that restarts before the transfer spread still commits, and one that failed
//! never commits later; transfers sent in a row without `--nonce` all commit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Validators paused with SIGSTOP; resumed (SIGCONT) when dropped, also when the
/// test fails, so the testnet's own clean-up can stop them.
struct Paused(Vec<u32>);

impl Paused {
    fn pause(pids: Vec<u32>) -> Paused {
        for pid in &pids {
            signal(*pid, "STOP");
        }
        Paused(pids)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for pid in &self.0 {
            signal(*pid, "CONT");
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

fn status_of(net: &Testnet, node: usize, hash: &str) -> Value {
    net.get(node, &format!("/v1/transactions/{hash}"))
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

/// `mosaic tx transfer` without --wait: (exit ok, its --json answer or the error).
fn send(
    net: &Testnet,
    key: &str,
    to: &str,
    amount: u64,
    nonce: Option<u64>,
    nodes: &str,
) -> (bool, Value, String) {
    let amount = amount.to_string();
    let nonce = nonce.map(|n| n.to_string());
    let mut args = vec![
        "tx", "transfer", "--key", key, "--to", to, "--amount", &amount, "--node", nodes, "--json",
    ];
    if let Some(n) = &nonce {
        args.extend(["--nonce", n]);
    }
    let out = net.mosaic(&args);
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), value, text(&out))
}

/// The sequence a new user hit: the sender's first transfer fails for lack of funds
/// (or, since admission checks balances, is refused), the sender is funded and
/// signs its next transfer with the same nonce, a validator answers it 202 and
/// restarts before it spread (the others are paused). After the restart the
/// transfer answered 202 commits, and the first one never does.
#[test]
fn a_transfer_answered_202_commits_after_its_validator_restarts_and_a_failed_one_never_does() {
    let net = Testnet::up(4);
    let dir = tempfile::tempdir().unwrap();
    let sender_key = dir.path().join("sender.key").display().to_string();
    let receiver_key = dir.path().join("receiver.key").display().to_string();
    for key in [&sender_key, &receiver_key] {
        let out = net.mosaic(&["keys", "new", "--out", key]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let show = |key: &str| {
        net.json(&["keys", "show", key])["address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (sender, receiver) = (show(&sender_key), show(&receiver_key));

    // The first transfer, from an account with nothing.
    let (accepted, first, out) = send(&net, &sender_key, &receiver, 7, Some(0), &net.url(0));
    let first_hash = if accepted {
        let hash = first["hash"].as_str().unwrap().to_string();
        wait_until("the unfunded transfer fails in a block", || {
            status_of(&net, 0, &hash)["status"] == "failed"
        });
        Some(hash)
    } else {
        assert!(out.contains("balance"), "refused for its balance: {out}");
        None
    };

    // Funded, then the next transfer with the same nonce, to validator 0 alone.
    net.transfer(0, &sender, 100, 1);
    wait_until("validator 0 has the funding", || {
        net.balance(0, &sender) == Some(100)
    });
    let paused = Paused::pause((1..4).map(|i| net.pid(i).unwrap()).collect());
    let (accepted, second, out) = send(&net, &sender_key, &receiver, 11, Some(0), &net.url(0));
    assert!(accepted, "validator 0 answers 202: {out}");
    let second_hash = second["hash"].as_str().unwrap().to_string();

    // Validator 0 restarts before anyone else heard of it.
    net.json(&["testnet", "kill", "--node", "0"]);
    net.json(&["testnet", "start", "--node", "0"]);
    wait_until("validator 0 answers again", || {
        http_get(&format!("{}/v1/status", net.url(0))).is_some()
    });
    let back = status_of(&net, 0, &second_hash);
    assert_eq!(
        back["status"], "pending",
        "the 202 is back after the restart: {back}"
    );
    drop(paused);

    wait_until("the transfer answered 202 commits", || {
        status_of(&net, 1, &second_hash)["status"] == "committed"
    });
    // Give the first one a chance to come back: another block after the second.
    net.transfer(0, &receiver, 1, 2);
    if let Some(hash) = &first_hash {
        for node in 0..4 {
            let status = status_of(&net, node, hash);
            assert_eq!(status["status"], "failed", "validator {node}: {status}");
            assert_eq!(status["final"], true, "{status}");
        }
    }
    assert_eq!(
        net.balance(1, &receiver),
        Some(11 + 1),
        "the receiver got the second transfer's amount (and the 1 sent after), never the first's"
    );
    assert_eq!(net.balance(1, &sender), Some(100 - 11));
}

/// Ten transfers in a row from one key, no --nonce and no --wait, each to the next
/// validator: each signs the nonce past the ones still pending, so all commit.
#[test]
fn ten_transfers_in_a_row_without_waiting_all_commit() {
    let net = Testnet::up(4);
    let receiver = net.address(6);
    let mut hashes = Vec::new();
    for k in 0..10 {
        // The validator this one goes to first, then the others (asked for the
        // nonce too, as the default list is).
        let nodes: Vec<String> = (0..4).map(|i| net.url((k + i) % 4)).collect();
        let (ok, answer, out) = send(
            &net,
            &net.client_key(1),
            &receiver,
            1,
            None,
            &nodes.join(","),
        );
        assert!(ok, "transfer {k}: {out}");
        assert_eq!(
            answer["nonce"], k as u64,
            "transfer {k} signs the next nonce: {out}"
        );
        hashes.push(answer["hash"].as_str().unwrap().to_string());
    }
    let limit = Instant::now() + Duration::from_secs(60);
    let mut missing = hashes.clone();
    while !missing.is_empty() && Instant::now() < limit {
        missing.retain(|hash| status_of(&net, 0, hash)["status"] != "committed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        missing.is_empty(),
        "{} of 10 never committed: {:?}",
        missing.len(),
        missing.first().map(|h| status_of(&net, 0, h))
    );
    let account: Value = serde_json::from_str(
        &http_get(&format!("{}/v1/accounts/{}", net.url(2), net.address(1))).unwrap(),
    )
    .unwrap();
    assert_eq!(account["nonce"], 10, "{account}");
}
