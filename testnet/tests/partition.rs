//! Partitions of real validator processes, each in its own network namespace
//! (`mosaic testnet init --netns`), with load running: the primary cut off, a 2/2
//! split, a backup cut off, a flapping link, n = 7 split 3/4 and 2/5, and a 2/2
//! split held long. After each: one chain (the same header at every height on every
//! validator), `mosaic audit verify` passes on each, and every transfer a validator
//! acknowledged (202) commits exactly once (or is reported dropped). Each prints the
//! time from heal to the first new commit (`heal-to-commit <case>: 1.23 s`).
//!
//! They need root and `ip netns`; elsewhere each test prints why it is skipped.
//! `MOSAIC_FLAP_SECS` (default 20) sets how long the link flaps;
//! `MOSAIC_PARTITION_HOLD_SECS` (default 20: two view-change timeout doublings from
//! the 2 s base) how long the long split is held (the issue's long run: 180, with
//! `cargo test` rather than nextest, whose limit is 4 minutes per test).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, text};
use mosaic_crypto::{ChainId, Keypair, PublicKey, keyfile};
use mosaic_node::ledger::Transfer;
use serde_json::Value;

/// Heal to first new commit must stay under this (the target is 5 s; CI machines
/// are slow and shared).
const HEAL_TO_COMMIT_MAX: Duration = Duration::from_secs(10);

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Why namespaces cannot be used here, if they cannot.
fn unsupported() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!("not root (uid {uid})"));
    }
    let probe = format!("mzprobe{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .stderr(Stdio::null())
        .status();
    match made {
        Ok(s) if s.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(_) => Some("`ip netns add` fails here".into()),
        Err(e) => Some(format!("no `ip` command: {e}")),
    }
}

macro_rules! skip_unless_namespaces {
    () => {
        if let Some(reason) = unsupported() {
            println!(
                "skipped: validators in network namespaces need root and `ip netns`: {reason}"
            );
            return;
        }
    };
}

/// POST over HTTP/1.0 with short timeouts: (status, body), `None` if no answer.
fn post(url: &str, path: &str, body: &[u8]) -> Option<(u16, Value)> {
    let host = url.strip_prefix("http://")?;
    let address: SocketAddr = host.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    stream.write_all(body).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// GET JSON over HTTP/1.0 with short timeouts; `None` unless a 200.
fn get(url: &str, path: &str) -> Option<Value> {
    let host = url.strip_prefix("http://")?;
    let address: SocketAddr = host.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200")
        .then(|| serde_json::from_str(body).ok())
        .flatten()
}

/// A --netns testnet; dropping it stops the nodes and removes the namespaces,
/// links and bridge, also when the test fails.
struct Net {
    dir: tempfile::TempDir,
    urls: Vec<String>,
    plan: Value,
}

impl Net {
    fn up(n: usize) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = Command::new(binary())
            .args(["testnet", "init", "--netns", "-n", &n.to_string(), "--dir"])
            .arg(&data)
            .env_remove("MOSAIC_NODE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let file: Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("testnet.json")).unwrap())
                .unwrap();
        let net = Net {
            urls: file["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["api"].as_str().unwrap().to_string())
                .collect(),
            plan: file["netns"].clone(),
            dir,
        };
        let out = net.mosaic(&["testnet", "up", "--detach"]);
        assert!(out.status.success(), "{}", text(&out));
        net
    }

    fn mosaic(&self, args: &[&str]) -> Output {
        let mut command = Command::new(binary());
        command.args(args);
        if args.first() == Some(&"testnet") {
            command.arg("--dir").arg(self.dir.path().join("data"));
        }
        command.env_remove("MOSAIC_NODE").output().unwrap()
    }

    fn ok(&self, args: &[&str]) {
        let out = self.mosaic(args);
        assert!(out.status.success(), "mosaic {args:?}: {}", text(&out));
    }

    fn n(&self) -> usize {
        self.urls.len()
    }

    fn status(&self, i: usize) -> Option<Value> {
        get(&self.urls[i], "/v1/status")
    }

    fn height(&self, i: usize) -> Option<u64> {
        self.status(i).and_then(|s| s["height"].as_u64())
    }

    fn heights(&self) -> Vec<u64> {
        (0..self.n()).map(|i| self.height(i).unwrap_or(0)).collect()
    }

    /// No height above the highest of `frozen` was committed anywhere. A
    /// validator that lagged at the split may still fetch a block committed before
    /// it from its side, so heights below that one may move.
    fn assert_no_new_height(&self, frozen: &[u64], what: &str) {
        let top = frozen.iter().copied().max().unwrap_or(0);
        let now = self.heights();
        assert!(
            now.iter().all(|h| *h <= top),
            "{what}, yet heights went from {frozen:?} to {now:?}"
        );
    }

    fn max_height(&self, nodes: &[usize]) -> u64 {
        nodes
            .iter()
            .map(|i| self.height(*i).unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    fn key(&self, j: usize) -> Keypair {
        keyfile::read_key_file(&self.dir.path().join(format!("data/clients/client{j}.key")))
            .unwrap()
    }

    fn partition(&self, groups: &str) {
        self.ok(&["testnet", "partition", "--groups", groups]);
    }

    /// Heals, then measures the time to the first commit above every height seen
    /// at the heal, and prints it.
    fn heal_and_time(&self, case: &str) -> Duration {
        let all: Vec<usize> = (0..self.n()).collect();
        let before = self.max_height(&all);
        self.ok(&["testnet", "heal"]);
        let healed = Instant::now();
        let limit = Duration::from_secs(60);
        while healed.elapsed() < limit {
            if self.max_height(&all) > before {
                let took = healed.elapsed();
                println!("heal-to-commit {case}: {:.2} s", took.as_secs_f64());
                return took;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{case}: no commit within {limit:?} of the heal (heights {:?})",
            self.heights()
        );
    }

    /// Waits (bounded) until validator `i` reaches `height`; returns how long it took.
    fn wait_height(&self, i: usize, height: u64, limit: Duration, what: &str) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.height(i).unwrap_or(0) >= height {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what}: validator {i} did not reach height {height} within {limit:?} (heights {:?})",
            self.heights()
        );
    }

    /// Waits until the validators in `nodes` commit `blocks` more blocks.
    fn wait_commits(&self, nodes: &[usize], blocks: u64, limit: Duration, what: &str) {
        let target = self.max_height(nodes) + blocks;
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.max_height(nodes) >= target {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what}: validators {nodes:?} did not commit {blocks} blocks within {limit:?} (heights {:?})",
            self.heights()
        );
    }

    /// One chain, audits pass, every acknowledged transfer committed once.
    fn check_after(&self, case: &str, acknowledged: &[String]) {
        let all: Vec<usize> = (0..self.n()).collect();
        let top = self.max_height(&all);
        for i in 0..self.n() {
            self.wait_height(i, top, Duration::from_secs(60), case);
        }
        // Every acknowledged transfer ends committed (or reported dropped).
        let start = Instant::now();
        let mut waiting: Vec<&String> = acknowledged.iter().collect();
        while !waiting.is_empty() && start.elapsed() < Duration::from_secs(60) {
            waiting.retain(|hash| {
                let status = get(&self.urls[0], &format!("/v1/transactions/{hash}"));
                !status.is_some_and(|s| s["status"] == "committed" || s["status"] == "dropped")
            });
            if !waiting.is_empty() {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        assert!(
            waiting.is_empty(),
            "{case}: {} acknowledged transfers neither committed nor dropped, e.g. {:?}: {:?}",
            waiting.len(),
            waiting[0],
            get(&self.urls[0], &format!("/v1/transactions/{}", waiting[0]))
        );
        let top = self.max_height(&all);
        for i in 0..self.n() {
            self.wait_height(i, top, Duration::from_secs(60), case);
        }
        // The same header at every height on every validator.
        let headers = |i: usize| -> Vec<Value> {
            let mut out = Vec::new();
            let mut from = 1;
            for _ in 0..10_000 {
                let page = get(&self.urls[i], &format!("/v1/headers?from={from}&count=100"))
                    .unwrap_or_else(|| panic!("{case}: validator {i} gave no headers"));
                let page = page["headers"].as_array().unwrap().clone();
                if page.is_empty() || from > top {
                    break;
                }
                from += page.len() as u64;
                out.extend(page.into_iter().map(|h| h["header"].clone()));
            }
            out.truncate(top as usize);
            out
        };
        let reference = headers(0);
        assert_eq!(reference.len() as u64, top, "{case}: validator 0's headers");
        for i in 1..self.n() {
            let other = headers(i);
            for (h, (a, b)) in reference.iter().zip(&other).enumerate() {
                assert_eq!(
                    a,
                    b,
                    "{case}: validators 0 and {i} differ at height {}",
                    h + 1
                );
            }
        }
        // Each acknowledged transfer is in at most one block (exactly one unless dropped).
        let mut seen: HashMap<String, u32> = HashMap::new();
        for h in 1..=top {
            let block = get(&self.urls[0], &format!("/v1/blocks/{h}?view=hashes"))
                .unwrap_or_else(|| panic!("{case}: no block {h}"));
            for id in block["transaction_hashes"].as_array().unwrap() {
                *seen.entry(id.as_str().unwrap().to_string()).or_default() += 1;
            }
        }
        for (id, count) in &seen {
            assert_eq!(*count, 1, "{case}: transfer {id} is in {count} blocks");
        }
        let committed = acknowledged
            .iter()
            .filter(|h| seen.contains_key(*h))
            .count();
        println!(
            "{case}: {} acknowledged, {committed} committed, height {top}",
            acknowledged.len()
        );
        for (i, url) in self.urls.iter().enumerate() {
            let out = self.mosaic(&["audit", "verify", "--node", url, "--json"]);
            assert!(
                out.status.success(),
                "{case}: audit of validator {i}: {}",
                text(&out)
            );
            let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                verified["verified"], true,
                "{case}: validator {i}: {verified}"
            );
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let out = self.mosaic(&["testnet", "stop"]);
        // A failed test (or MOSAIC_KEEP_LOGS) keeps the validators' logs to read.
        if std::thread::panicking() || std::env::var_os("MOSAIC_KEEP_LOGS").is_some() {
            let keep = std::env::temp_dir().join(format!(
                "mosaic-partition-logs-{}-{}",
                std::process::id(),
                self.plan["tag"].as_str().unwrap_or("none")
            ));
            if std::fs::create_dir_all(&keep).is_ok() {
                for i in 0..self.n() {
                    let log = self.dir.path().join(format!("data/node{i}/node.log"));
                    let _ = std::fs::copy(&log, keep.join(format!("node{i}.log")));
                }
                eprintln!("validator logs kept in {}", keep.display());
            }
        }
        if out.status.success() {
            return;
        }
        eprintln!(
            "testnet stop failed, removing the namespaces directly: {}",
            text(&out)
        );
        let tag = self.plan["tag"].as_str().unwrap_or("none");
        for i in 0..self.n() {
            let ns = format!("mz{tag}-n{i}");
            let pids = Command::new("ip").args(["netns", "pids", &ns]).output();
            if let Ok(pids) = pids {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip")
                .args(["link", "del", &format!("mz{tag}-h{i}")])
                .status();
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("mz{tag}-br")])
            .status();
    }
}

/// Transfers from several senders, each sent to every validator (so a cut-off
/// entry node never holds one alone), the same signed bytes until one acknowledges.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(net: &Net, senders: usize) -> Load {
        let status = net.status(0).unwrap();
        let chain = ChainId::new(status["chain_id"].as_str().unwrap()).unwrap();
        let recipient: PublicKey = net.key(senders).public();
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..senders)
            .map(|j| {
                let key = net.key(j);
                let urls = net.urls.clone();
                let (stop, acknowledged, chain) =
                    (stop.clone(), acknowledged.clone(), chain.clone());
                std::thread::spawn(move || {
                    let mut nonce = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let tx = Transfer {
                            chain: chain.clone(),
                            from: key.public(),
                            to: recipient,
                            amount: 1,
                            nonce,
                            valid_until: mosaic_node::mempool::VALID_FOR_MAX,
                        }
                        .sign(&key);
                        let body = serde_json::to_vec(&tx).unwrap();
                        let mut acked = false;
                        while !acked && !stop.load(Ordering::Relaxed) {
                            for url in &urls {
                                if let Some((202, _)) = post(url, "/v1/transactions", &body) {
                                    acked = true;
                                }
                            }
                            if !acked {
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        }
                        if acked {
                            acknowledged.lock().unwrap().push(tx.hash().to_string());
                            nonce += 1;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            threads,
        }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.acknowledged.lock().unwrap())
    }
}

fn primary(net: &Net, among: &[usize]) -> usize {
    among
        .iter()
        .filter_map(|i| net.status(*i)?["primary"].as_u64())
        .next()
        .unwrap() as usize
}

fn assert_quick(case: &str, took: Duration) {
    assert!(
        took <= HEAL_TO_COMMIT_MAX,
        "{case}: {took:?} from heal to the first commit (bound {HEAL_TO_COMMIT_MAX:?})"
    );
}

#[test]
fn an_isolated_primary_is_replaced_and_catches_up_after_heal() {
    skip_unless_namespaces!();
    let net = Net::up(4);
    let load = Load::start(&net, 3);
    net.wait_commits(&[0, 1, 2, 3], 2, Duration::from_secs(30), "warm-up");
    let p = primary(&net, &[0, 1, 2, 3]);
    let others: Vec<usize> = (0..4).filter(|i| *i != p).collect();
    net.ok(&["testnet", "partition", "--isolate", &p.to_string()]);
    net.wait_commits(
        &others,
        3,
        Duration::from_secs(45),
        "the others after a view change",
    );
    let view = net.status(others[0]).unwrap()["view"].as_u64().unwrap();
    assert!(view > 0, "the others changed view");
    let majority = net.max_height(&others);
    let took = net.heal_and_time("primary-isolated");
    assert_quick("primary-isolated", took);
    let caught = net.wait_height(p, majority, Duration::from_secs(60), "the old primary");
    println!(
        "heal-to-catch-up primary-isolated: {:.2} s",
        caught.as_secs_f64()
    );
    let acknowledged = load.finish();
    net.check_after("primary-isolated", &acknowledged);
}

#[test]
fn a_two_two_split_commits_nothing_and_resumes_after_heal() {
    skip_unless_namespaces!();
    split_held(Duration::from_secs(8), "split-2/2");
}

#[test]
fn a_two_two_split_held_long_resumes_quickly_after_heal() {
    skip_unless_namespaces!();
    let hold = env_secs("MOSAIC_PARTITION_HOLD_SECS", 20);
    split_held(
        Duration::from_secs(hold),
        &format!("split-2/2-held-{hold}s"),
    );
}

fn split_held(hold: Duration, case: &str) {
    let net = Net::up(4);
    let load = Load::start(&net, 3);
    net.wait_commits(&[0, 1, 2, 3], 2, Duration::from_secs(30), "warm-up");
    net.partition("0,1/2,3");
    // A block whose commits were already on their way may still land.
    std::thread::sleep(Duration::from_secs(1));
    let frozen = net.heights();
    std::thread::sleep(hold.saturating_sub(Duration::from_secs(1)));
    net.assert_no_new_height(
        &frozen,
        &format!("{case}: neither side of a 2/2 split has a quorum"),
    );
    let took = net.heal_and_time(case);
    net.wait_commits(&[0, 1, 2, 3], 2, Duration::from_secs(30), "after heal");
    let acknowledged = load.finish();
    net.check_after(case, &acknowledged);
    assert_quick(case, took);
}

#[test]
fn an_isolated_backup_catches_up_after_heal() {
    skip_unless_namespaces!();
    let net = Net::up(4);
    let load = Load::start(&net, 3);
    net.wait_commits(&[0, 1, 2, 3], 2, Duration::from_secs(30), "warm-up");
    let backup = (primary(&net, &[0, 1, 2, 3]) + 1) % 4;
    let others: Vec<usize> = (0..4).filter(|i| *i != backup).collect();
    net.ok(&["testnet", "partition", "--isolate", &backup.to_string()]);
    net.wait_commits(&others, 5, Duration::from_secs(30), "the majority");
    let majority = net.max_height(&others);
    let took = net.heal_and_time("backup-isolated");
    let caught = net.wait_height(backup, majority, Duration::from_secs(60), "the backup");
    println!(
        "heal-to-catch-up backup-isolated: {:.2} s",
        caught.as_secs_f64()
    );
    let acknowledged = load.finish();
    net.check_after("backup-isolated", &acknowledged);
    assert_quick("backup-isolated", took);
}

#[test]
fn a_flapping_link_to_one_validator_does_not_stop_commits() {
    skip_unless_namespaces!();
    let seconds = env_secs("MOSAIC_FLAP_SECS", 20);
    let net = Net::up(4);
    let load = Load::start(&net, 3);
    net.wait_commits(&[0, 1, 2, 3], 2, Duration::from_secs(30), "warm-up");
    let before = net.max_height(&[0, 1, 3]);
    let flap = net.mosaic(&[
        "testnet",
        "flap",
        "--node",
        "2",
        "--period",
        "1s",
        "--duration",
        &format!("{seconds}s"),
    ]);
    assert!(flap.status.success(), "{}", text(&flap));
    let during = net.max_height(&[0, 1, 3]) - before;
    println!("flap {seconds} s: {during} blocks committed while validator 2's link flapped");
    assert!(during >= 3, "commits continued while the link flapped");
    let took = net.heal_and_time("flap");
    let acknowledged = load.finish();
    net.check_after("flap", &acknowledged);
    assert_quick("flap", took);
}

#[test]
fn seven_validators_split_three_four_then_two_five() {
    skip_unless_namespaces!();
    let net = Net::up(7);
    let load = Load::start(&net, 3);
    let all: Vec<usize> = (0..7).collect();
    net.wait_commits(&all, 2, Duration::from_secs(30), "warm-up");

    // 3/4: a quorum is 5 of 7, so neither side commits.
    net.partition("0,1,2/3,4,5,6");
    std::thread::sleep(Duration::from_secs(1));
    let frozen = net.heights();
    std::thread::sleep(Duration::from_secs(7));
    net.assert_no_new_height(&frozen, "3/4: no side has 5 of 7");
    let took_3_4 = net.heal_and_time("n7-split-3/4");
    net.wait_commits(&all, 2, Duration::from_secs(30), "after the 3/4 heal");

    // 2/5: the five commit; the two catch up after heal.
    net.partition("0,1/2,3,4,5,6");
    let five = [2, 3, 4, 5, 6];
    net.wait_commits(&five, 3, Duration::from_secs(45), "the five");
    let majority = net.max_height(&five);
    let took_2_5 = net.heal_and_time("n7-split-2/5");
    for i in [0, 1] {
        let caught = net.wait_height(i, majority, Duration::from_secs(60), "the two");
        println!(
            "heal-to-catch-up n7-split-2/5 validator {i}: {:.2} s",
            caught.as_secs_f64()
        );
    }
    let acknowledged = load.finish();
    net.check_after("n7", &acknowledged);
    assert_quick("n7-split-3/4", took_3_4);
    assert_quick("n7-split-2/5", took_2_5);
}
