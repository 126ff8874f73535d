//! Nothing acknowledged is lost: steady load from several senders while validators
//! (the primary among them) are killed with SIGKILL at random moments, right after
//! answering 202. Every acknowledged transfer commits exactly once once all are
//! back, and the CLI moves on to another node when its node is down.
//!
//! `MOSAIC_KILLS` sets the number of kills (default 20).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mosaic_crypto::{ChainId, Keypair, PublicKey, keyfile};
use mosaic_node::ledger::{SignedTransfer, Transfer};
use serde_json::Value;

/// POST a JSON body to node `port`: (status, body); `None` when the node did not
/// answer (down, or killed mid-request).
fn post(port: u16, path: &str, body: &[u8]) -> Option<(u16, Value)> {
    request(port, "POST", path, body, Duration::from_secs(5))
}

/// A small deterministic generator (the seed is printed, so a run can be replayed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// What the senders saw.
#[derive(Default)]
struct Ledger {
    /// Every transfer answered 202 by some validator, with the validator.
    acknowledged: Vec<(String, usize)>,
    /// Submissions the node did not answer (it was down or died mid-request): the
    /// sender was told nothing and sent the same signed bytes elsewhere.
    unanswered: usize,
    /// Submissions refused with 503 (busy or its log could not keep it).
    refused: usize,
}

#[test]
fn acknowledged_transfers_all_commit_once_while_validators_are_killed_at_random() {
    let kills: usize = std::env::var("MOSAIC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    eprintln!("kill schedule seed {seed}");
    let net = Testnet::up(4);
    let status: Value =
        serde_json::from_str(&http_get(&format!("{}/v1/status", net.url(0))).unwrap()).unwrap();
    let chain = ChainId::new(status["chain_id"].as_str().unwrap()).unwrap();
    let tip = status["height"].as_u64().unwrap();
    let senders: Vec<Keypair> = (0..4)
        .map(|j| keyfile::read_key_file(net.client_key(j).as_ref()).unwrap())
        .collect();
    let recipient: PublicKey = net.address(7).parse().unwrap();

    // The CLI with a dead node first: it says so and uses the next one.
    net.json(&["testnet", "kill", "--node", "1"]);
    let nodes = format!("{},{}", net.url(1), net.url(2));
    let out = net.mosaic(&[
        "tx",
        "transfer",
        "--key",
        &net.client_key(5),
        "--to",
        &recipient.to_string(),
        "--amount",
        "3",
        "--wait",
        "--node",
        &nodes,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} did not answer; trying {}",
            net.url(1),
            net.url(2)
        )),
        "{}",
        text(&out)
    );
    net.json(&["testnet", "start", "--node", "1"]);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Ledger::default()));
    let api_port = net.api_port;
    let threads: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(j, key)| {
            let stop = stop.clone();
            let seen = seen.clone();
            let chain = chain.clone();
            std::thread::spawn(move || {
                let mut nonce = 0;
                let mut via = j;
                while !stop.load(Ordering::Relaxed) {
                    let tx: SignedTransfer = Transfer {
                        chain: chain.clone(),
                        from: key.public(),
                        to: recipient,
                        amount: 1,
                        nonce,
                        valid_until: tip + 50_000,
                    }
                    .sign(&key);
                    let body = serde_json::to_vec(&tx).unwrap();
                    // The same signed bytes until some validator acknowledges them.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        via = (via + 1) % 4;
                        let answer = post(api_port + via as u16, "/v1/transactions", &body);
                        let mut seen = seen.lock().unwrap();
                        match answer {
                            Some((202, _)) => {
                                seen.acknowledged.push((tx.hash().to_string(), via));
                                break;
                            }
                            Some((503, _)) => seen.refused += 1,
                            Some((code, answer)) => {
                                panic!("sender {j} nonce {nonce}: {code} {answer}")
                            }
                            None => seen.unanswered += 1,
                        }
                        drop(seen);
                        assert!(
                            Instant::now() < deadline,
                            "sender {j}: no validator acknowledged nonce {nonce} within 60 s"
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    nonce += 1;
                    std::thread::sleep(Duration::from_millis(15));
                }
                nonce
            })
        })
        .collect();

    // Kill one validator at a time at a random moment, restart it, wait for its API.
    let mut rng = Lcg(seed);
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(200 + rng.below(600)));
        let victim = rng.below(4) as usize;
        let before = seen.lock().unwrap().acknowledged.len();
        net.json(&["testnet", "kill", "--node", &victim.to_string()]);
        eprintln!("kill {k}: validator {victim} after {before} acknowledged");
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        net.json(&["testnet", "start", "--node", &victim.to_string()]);
        wait_until("the restarted validator answers", || {
            http_get(&format!("{}/v1/status", net.url(victim))).is_some()
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "{} acknowledged, {} unanswered submissions (sent again elsewhere), {} refused with 503; per sender {sent:?}",
        seen.acknowledged.len(),
        seen.unanswered,
        seen.refused
    );
    assert!(seen.acknowledged.len() >= 100, "load ran");

    // Every acknowledged transfer commits, and each exactly once: each sender's
    // nonce ends at the count it had acknowledged (one commit per nonce), and the
    // recipient got exactly one unit per acknowledged transfer.
    let limit = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<&(String, usize)> = seen.acknowledged.iter().collect();
    while !missing.is_empty() && Instant::now() < limit {
        missing.retain(|(hash, _)| {
            net.get(0, &format!("/v1/transactions/{hash}"))
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .is_none_or(|v| v["status"] != "committed")
        });
        if !missing.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged transfers never committed, e.g. {:?} (status {:?})",
        missing.len(),
        missing.first(),
        missing
            .first()
            .and_then(|(h, v)| net.get(*v, &format!("/v1/transactions/{h}")))
    );
    for (j, count) in sent.iter().enumerate() {
        let address = net.address(j);
        let account: Value = serde_json::from_str(
            &http_get(&format!("{}/v1/accounts/{address}", net.url(0))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            account["nonce"].as_u64(),
            Some(*count),
            "sender {j}: {account}"
        );
    }
    let total: u64 = sent.iter().sum();
    assert_eq!(
        net.balance(0, &recipient.to_string()),
        Some(CLIENT_FUNDS + total + 3),
        "the recipient got one unit per acknowledged transfer (and the CLI's 3)"
    );
    let height = net.height(0).unwrap();
    for i in 1..4 {
        wait_until("every validator reaches the same height", || {
            net.height(i).unwrap_or(0) >= height
        });
    }
    for i in [0, 3] {
        let verified = net.json(&["audit", "verify", "--node", &net.url(i)]);
        assert_eq!(verified["verified"], true, "{verified}");
    }
}

/// Funds of each generated client account (`mosaic testnet init`).
const CLIENT_FUNDS: u64 = 1_000_000_000;
