//! A crash-and-restart soak of what a 202 promises. Senders of every kind run
//! while validators are killed (SIGKILL), paused (SIGSTOP) and one validator's disk
//! fills up and empties again:
//! - payers send in a row, signing the nonce past their pending transfers (the
//!   highest `pending_nonce` any node reports, never below their own last one + 1);
//! - reusers start unfunded (their first transfer is refused or fails), are funded,
//!   and send with the same nonce again;
//! - an expirer sends transfers behind a nonce gap that never closes, with a short
//!   `valid_until`;
//! - a gap filler sends a run of nonces out of order, the missing one last.
//!
//! The oracle: every transfer answered 202 ends committed, failed or expired, as
//! its status said (payers', reusers' funded and the gap filler's all commit, the
//! expirer's expire); no status, once final, changes.
//!
//! `MOSAIC_SOAK_SECS` sets how long the faults run (default 20). Needs root (the
//! disk is a tmpfs the test mounts); skipped with the reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mosaic_crypto::{ChainId, Keypair, PublicKey, keyfile};
use mosaic_node::ledger::{SignedTransfer, Transfer};
use serde_json::Value;

const N: usize = 4;
/// A paused validator answers nothing: requests give up after this.
const TIMEOUT: Duration = Duration::from_millis(800);

/// What a sender expects of its transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Commit,
    Expire,
}

#[derive(Debug, Clone)]
struct Accepted {
    hash: String,
    valid_until: u64,
    expect: Expect,
    who: &'static str,
    /// The validator that answered 202.
    via: usize,
}

/// Everything answered 202, shared by the senders.
type Book = Arc<Mutex<Vec<Accepted>>>;

struct Env {
    api_port: u16,
    chain: ChainId,
    stop: Arc<AtomicBool>,
    book: Book,
}

impl Env {
    fn get(&self, node: usize, path: &str) -> Option<Value> {
        match request(self.api_port + node as u16, "GET", path, b"", TIMEOUT) {
            Some((200, value)) => Some(value),
            _ => None,
        }
    }

    fn tip(&self) -> u64 {
        (0..N)
            .filter_map(|i| self.get(i, "/v1/status")?["height"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// The nonce to sign next: the highest any node reports as past the pending
    /// ones, and at least `own`.
    fn next_nonce(&self, sender: &PublicKey, own: u64) -> u64 {
        (0..N)
            .filter_map(|i| {
                let v = self.get(i, &format!("/v1/accounts/{sender}"))?;
                v["pending_nonce"].as_u64()
            })
            .max()
            .unwrap_or(0)
            .max(own)
    }

    /// Sends the same bytes to the nodes in turn from `first` until one answers
    /// 202 (`Some(node)`), one refuses it for good (400/409: `None`), or 20 s pass.
    fn submit(&self, tx: &SignedTransfer, first: usize) -> Result<usize, (u16, Value)> {
        let body = serde_json::to_vec(tx).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut node = first;
        loop {
            match request(
                self.api_port + node as u16,
                "POST",
                "/v1/transactions",
                &body,
                TIMEOUT,
            ) {
                Some((202, _)) => return Ok(node),
                Some((code, answer)) if code != 503 => return Err((code, answer)),
                _ => {}
            }
            if Instant::now() > deadline || self.stop.load(Ordering::Relaxed) {
                return Err((0, Value::Null));
            }
            node = (node + 1) % N;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn record(&self, tx: &SignedTransfer, via: usize, expect: Expect, who: &'static str) {
        self.book.lock().unwrap().push(Accepted {
            hash: tx.hash().to_string(),
            valid_until: tx.transfer.valid_until,
            expect,
            who,
            via,
        });
    }

    fn sign(
        &self,
        key: &Keypair,
        to: PublicKey,
        amount: u64,
        nonce: u64,
        valid_until: u64,
    ) -> SignedTransfer {
        Transfer {
            chain: self.chain.clone(),
            from: key.public(),
            to,
            amount,
            nonce,
            valid_until,
        }
        .sign(key)
    }
}

/// A tmpfs mounted over one validator's data folder, so its disk can fill up;
/// unmounted (lazily, whatever still holds it) when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> Option<SmallDisk> {
        let aside = dir.with_extension("before-tmpfs");
        std::fs::rename(dir, &aside).ok()?;
        std::fs::create_dir(dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let _ = std::fs::remove_dir(dir);
            let _ = std::fs::rename(&aside, dir);
            return None;
        }
        let disk = SmallDisk(dir.to_path_buf());
        let copied = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", aside.display()))
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(copied, "copying {} onto the tmpfs", aside.display());
        Some(disk)
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M"])
            .arg(format!("of={}/fill", self.0.display()))
            .output();
    }

    fn empty(&self) {
        let _ = std::fs::remove_file(self.0.join("fill"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

/// Resumes every validator it paused when dropped (also when the test fails).
#[derive(Default)]
struct Pauses(Mutex<Vec<u32>>);

impl Drop for Pauses {
    fn drop(&mut self) {
        for pid in self.0.lock().unwrap().drain(..) {
            signal(pid, "CONT");
        }
    }
}

fn payer(
    env: Arc<Env>,
    key: Keypair,
    to: PublicKey,
    who: &'static str,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut own = 0;
        let mut via = 0;
        while !env.stop.load(Ordering::Relaxed) {
            let nonce = env.next_nonce(&key.public(), own);
            let tx = env.sign(&key, to, 1, nonce, env.tip() + 400);
            via = (via + 1) % N;
            match env.submit(&tx, via) {
                Ok(node) => {
                    env.record(&tx, node, Expect::Commit, who);
                    own = nonce + 1;
                }
                Err((0, _)) => {}
                Err((code, answer)) => panic!("{who} nonce {nonce}: {code} {answer}"),
            }
            std::thread::sleep(Duration::from_millis(60));
        }
    })
}

/// Unfunded keys: the first transfer is refused (or fails in a block), the key is
/// funded by `funder`, and sends with the same nonce again.
fn reuser(env: Arc<Env>, funder: Keypair, to: PublicKey) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut funder_nonce = 0;
        let mut round = 0u64;
        while !env.stop.load(Ordering::Relaxed) {
            round += 1;
            let key = Keypair::from_seed_for_tests(
                10_000 + round + u64::from(std::process::id()) * 1_000,
            );
            let first = env.sign(&key, to, 5, 0, env.tip() + 400);
            match env.submit(&first, round as usize % N) {
                // Accepted unfunded (a node that checks no balance): it must fail,
                // never commit; the oracle only asks that it ends final.
                Ok(node) => env.record(&first, node, Expect::Commit, "reuser-first"),
                Err((0, _)) => continue,
                Err((400, _)) => {}
                Err((code, answer)) => panic!("unfunded first transfer: {code} {answer}"),
            }
            funder_nonce = env.next_nonce(&funder.public(), funder_nonce);
            let funding = env.sign(&funder, key.public(), 50, funder_nonce, env.tip() + 400);
            match env.submit(&funding, round as usize % N) {
                Ok(node) => {
                    env.record(&funding, node, Expect::Commit, "funding");
                    funder_nonce += 1;
                }
                Err(_) => continue,
            }
            // Once funded, the same nonce again (other valid_until: a new transfer).
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && !env.stop.load(Ordering::Relaxed) {
                let funded = (0..N).any(|i| {
                    env.get(i, &format!("/v1/accounts/{}", key.public()))
                        .is_some_and(|v| v["balance"].as_u64() >= Some(50))
                });
                if funded {
                    let again = env.sign(&key, to, 5, 0, env.tip() + 401);
                    if let Ok(node) = env.submit(&again, (round as usize + 1) % N) {
                        env.record(&again, node, Expect::Commit, "reuser-again");
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// Transfers behind a gap that never closes, valid for a few heights.
fn expirer(env: Arc<Env>, key: Keypair, to: PublicKey) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut ahead = 5;
        while !env.stop.load(Ordering::Relaxed) {
            ahead += 1;
            let tx = env.sign(&key, to, 1, ahead, env.tip() + 15);
            if let Ok(node) = env.submit(&tx, ahead as usize % N) {
                env.record(&tx, node, Expect::Expire, "expirer");
            }
            std::thread::sleep(Duration::from_millis(700));
        }
    })
}

/// Runs of five nonces sent out of order, the missing first one last.
fn gap_filler(env: Arc<Env>, key: Keypair, to: PublicKey) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut own = 0;
        while !env.stop.load(Ordering::Relaxed) {
            let next = env.next_nonce(&key.public(), own);
            let valid_until = env.tip() + 400;
            let mut order: Vec<u64> = (1..5).collect();
            order.push(0);
            for k in order {
                let tx = env.sign(&key, to, 1, next + k, valid_until);
                // Refused for good (e.g. the gapped share): not a 202.
                if let Ok(node) = env.submit(&tx, k as usize % N) {
                    env.record(&tx, node, Expect::Commit, "gap-filler");
                }
            }
            own = next + 5;
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

/// A transfer's status everywhere: the block's verdict if any node has one; once
/// the tip passed its `valid_until` without one, what the validator that answered
/// 202 says (`expired`, if it kept its promise); else `None` (not yet final).
fn verdict(env: &Env, accepted: &Accepted, tip: u64) -> Option<(String, u64)> {
    let (hash, valid_until) = (&accepted.hash, accepted.valid_until);
    for node in 0..N {
        let Some(v) = env.get(node, &format!("/v1/transactions/{hash}")) else {
            continue;
        };
        match v["status"].as_str() {
            Some(s @ ("committed" | "failed")) => {
                return Some((s.to_string(), v["height"].as_u64().unwrap_or(0)));
            }
            Some("pending") => return None,
            _ => {}
        }
    }
    if tip <= valid_until + 1 {
        return None;
    }
    let said = env.get(accepted.via, &format!("/v1/transactions/{hash}"))?;
    let status = said["status"].as_str().unwrap_or("no status").to_string();
    if status == "expired" {
        assert_eq!(said["final"], true, "{said}");
    }
    Some((status, 0))
}

#[test]
fn every_202_ends_committed_failed_or_expired_through_kills_pauses_and_a_full_disk() {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|out| String::from_utf8_lossy(&out.stdout).trim() != "0") {
        eprintln!("skipped: mounting a small disk for one validator needs root");
        return;
    }
    let secs: u64 = std::env::var("MOSAIC_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::process::id() as u64 ^ 0x2545_f491_4f6c_dd1d;
    eprintln!("fault schedule seed {seed}");
    let net = Testnet::init(N);
    let disk = SmallDisk::mount(&net.data().join("node3"));
    if disk.is_none() {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    net.start();
    let status: Value =
        serde_json::from_str(&http_get(&format!("{}/v1/status", net.url(0))).unwrap()).unwrap();
    let env = Arc::new(Env {
        api_port: net.api_port,
        chain: ChainId::new(status["chain_id"].as_str().unwrap()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        book: Arc::default(),
    });
    let key = |j: usize| keyfile::read_key_file(net.client_key(j).as_ref()).unwrap();
    let to: PublicKey = net.address(7).parse().unwrap();
    let senders = vec![
        payer(env.clone(), key(0), to, "payer-0"),
        payer(env.clone(), key(1), to, "payer-1"),
        reuser(env.clone(), key(2), to),
        expirer(env.clone(), key(3), to),
        gap_filler(env.clone(), key(4), to),
    ];

    // One validator faulty at a time: killed and started again, paused and
    // resumed, or validator 3's disk full for a while.
    let pauses = Pauses::default();
    let mut rng = seed;
    let mut below = |n: u64| {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % n
    };
    let end = Instant::now() + Duration::from_secs(secs);
    let mut round = 0;
    while Instant::now() < end {
        round += 1;
        std::thread::sleep(Duration::from_millis(300 + below(700)));
        let victim = below(N as u64) as usize;
        match (round % 5, below(2)) {
            (0, _) => {
                eprintln!("round {round}: validator 3's disk fills up");
                if let Some(disk) = &disk {
                    disk.fill();
                    std::thread::sleep(Duration::from_millis(1_500 + below(1_500)));
                    disk.empty();
                }
                eprintln!("round {round}: validator 3's disk has room again");
            }
            (_, 0) => {
                eprintln!("round {round}: kill validator {victim}");
                net.json(&["testnet", "kill", "--node", &victim.to_string()]);
                std::thread::sleep(Duration::from_millis(100 + below(500)));
            }
            _ => {
                if let Some(pid) = net.pid(victim) {
                    eprintln!("round {round}: pause validator {victim}");
                    pauses.0.lock().unwrap().push(pid);
                    signal(pid, "STOP");
                    std::thread::sleep(Duration::from_millis(300 + below(1_500)));
                    signal(pid, "CONT");
                    pauses.0.lock().unwrap().retain(|p| *p != pid);
                }
            }
        }
        // Whatever stopped (killed, or stopped itself on a full disk) starts again.
        for i in 0..N {
            if net.pid(i).is_none() {
                net.json(&["testnet", "start", "--node", &i.to_string()]);
            }
        }
        for i in 0..N {
            wait_until("every validator answers", || {
                http_get(&format!("{}/v1/status", net.url(i))).is_some()
            });
        }
    }
    env.stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let book = env.book.lock().unwrap().clone();
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for accepted in &book {
        *classes.entry(accepted.who).or_default() += 1;
    }
    eprintln!("{} transfers answered 202: {classes:?}", book.len());
    assert!(book.len() >= 50, "the senders ran");

    // Blocks keep coming (and so expiry) while the verdicts are gathered: a filler
    // sends one transfer at a time.
    let filling = Arc::new(AtomicBool::new(false));
    let filler = {
        let env = env.clone();
        let filling = filling.clone();
        let key = key(5);
        std::thread::spawn(move || {
            let mut nonce = 0;
            while !filling.load(Ordering::Relaxed) {
                let tx = env.sign(&key, to, 1, nonce, env.tip() + 1_000);
                if env.submit(&tx, nonce as usize % N).is_ok() {
                    nonce += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut finals: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let tip = env.tip();
        for accepted in &book {
            let Some(now) = verdict(&env, accepted, tip) else {
                continue;
            };
            if let Some(before) = finals.get(&accepted.hash) {
                assert_eq!(
                    before, &now,
                    "{} {}: a final status changed",
                    accepted.who, accepted.hash
                );
            } else {
                finals.insert(accepted.hash.clone(), now);
            }
        }
        if finals.len() == book.len() || Instant::now() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    filling.store(true, Ordering::Relaxed);
    filler.join().unwrap();
    let open: Vec<&Accepted> = book
        .iter()
        .filter(|a| !finals.contains_key(&a.hash))
        .collect();
    assert!(
        open.is_empty(),
        "{} transfers answered 202 never ended, e.g. {:?}",
        open.len(),
        open.first()
    );
    let mut wrong = Vec::new();
    for accepted in &book {
        let (status, _) = &finals[&accepted.hash];
        let fine = match (accepted.expect, accepted.who, status.as_str()) {
            // An unfunded first transfer that was accepted must fail.
            (_, "reuser-first", s) => s == "failed",
            (Expect::Commit, _, s) => s == "committed",
            (Expect::Expire, _, s) => s == "expired",
        };
        if !fine {
            wrong.push(format!("{} {}: {status}", accepted.who, accepted.hash));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} ended otherwise than promised: {wrong:?}",
        wrong.len()
    );
    drop(pauses);
    drop(net);
    drop(disk);
}
