//! Every block stays rebuildable: the scrub repairs damaged fragment files, a
//! validator that lost its folder ends with its own fragment of every height, the
//! availability audit counts good fragments and names lost heights, and the
//! auditor's own trust root refuses a node that certifies a history of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Testnet, text, wait_until};
use serde_json::Value;

/// Blocks committed before the faults (one per transfer).
const BLOCKS: usize = 5;

fn genesis(net: &Testnet) -> String {
    net.data().join("genesis.json").display().to_string()
}

fn all_nodes(net: &Testnet, n: usize) -> String {
    (0..n).map(|i| net.url(i)).collect::<Vec<_>>().join(",")
}

/// `audit availability --json`: exit code, the report, stdout and stderr (a
/// failure's reason is the JSON line after the report).
fn availability(net: &Testnet, nodes: &str, to: u64) -> (Option<i32>, Value, String) {
    let out = net.mosaic(&[
        "audit",
        "availability",
        "--genesis",
        &genesis(net),
        "--node",
        nodes,
        "--to",
        &to.to_string(),
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = stdout
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), report, all)
}

fn metric(net: &Testnet, i: usize, name: &str) -> Option<u64> {
    let (_, body) = net.get(i, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn fragment_segment(net: &Testnet, i: usize) -> PathBuf {
    let dir = net
        .data()
        .join(format!("node{i}/data/store.redb.segments/fragments"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.pop().unwrap()
}

/// A testnet whose scrub rests 1 s between passes and keeps 2 bodies, so that
/// repairs of older heights need peers' fragments.
fn testnet(n: usize) -> Testnet {
    let net = Testnet::init(n);
    for i in 0..n {
        net.edit_config(i, |toml| {
            toml.replace("pass_pause_secs = 60", "pass_pause_secs = 1")
                .replace("body_window_blocks = 1024", "body_window_blocks = 2")
        });
    }
    net.start();
    let recipient = net.address(5);
    for j in 0..BLOCKS {
        let answer = net.transfer(j % 4, &recipient, 1, j % n);
        assert_eq!(answer["status"], "committed", "{answer}");
    }
    net
}

fn every_height_has(report: &Value, good: u64) -> bool {
    report["min_good"].as_u64() == Some(good)
        && report["heights_by_good_fragments"]
            .as_array()
            .is_some_and(|rows| rows.len() == 1)
}

#[test]
fn the_scrub_repairs_corrupt_and_truncated_fragment_files_and_a_wiped_validator_ends_with_every_fragment()
 {
    let net = testnet(4);
    let nodes = all_nodes(&net, 4);
    let height = net.height(0).unwrap();
    let (code, report, stderr) = availability(&net, &nodes, height);
    assert_eq!(code, Some(0), "{report} {stderr}");
    assert!(every_height_has(&report, 4), "{report}");
    assert!(
        report["trusted_genesis"]["from"]
            .as_str()
            .unwrap()
            .contains("genesis.json"),
        "{report}"
    );

    // Node 1: bytes flipped inside its fragment file while it runs.
    let file = fragment_segment(&net, 1);
    let mut bytes = std::fs::read(&file).unwrap();
    for at in [bytes.len() / 4, bytes.len() / 2, 3 * bytes.len() / 4] {
        bytes[at] ^= 0xff;
    }
    std::fs::write(&file, &bytes).unwrap();
    // Node 2: its fragment file loses its second half; it restarts on it.
    net.json(&["testnet", "stop", "--node", "2"]);
    let file = fragment_segment(&net, 2);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    net.json(&["testnet", "start", "--node", "2"]);
    wait_until("node 2 starts on its truncated file and serves", || {
        net.get(2, "/v1/status").is_some_and(|(s, _)| s == 200)
    });
    wait_until("the scrub repairs nodes 1 and 2", || {
        [1, 2].into_iter().all(|i| {
            metric(&net, i, "mosaic_scrub_fragments_repaired_total").is_some_and(|r| r > 0)
        }) && every_height_has(&availability(&net, &nodes, height).1, 4)
    });
    // A repair tried before the restarted node reached its peers fails and is
    // retried by the next pass; the metrics say so.
    for i in [1, 2] {
        let missing = metric(&net, i, "mosaic_scrub_fragments_missing_total").unwrap();
        let repaired = metric(&net, i, "mosaic_scrub_fragments_repaired_total").unwrap();
        let failed = metric(&net, i, "mosaic_scrub_repairs_failed_total").unwrap();
        assert_eq!(missing, repaired + failed, "node {i}");
        assert!(metric(&net, i, "mosaic_scrub_fragments_checked_total").unwrap() >= height);
    }
    for i in [1, 2] {
        let log = std::fs::read_to_string(net.data().join(format!("node{i}/node.log"))).unwrap();
        assert!(
            log.contains("repaired own fragment"),
            "node {i}: one INFO line per repair"
        );
    }
    let log = std::fs::read_to_string(net.data().join("node2/node.log")).unwrap();
    assert!(
        log.contains("store opened degraded"),
        "node 2 says it opened degraded"
    );

    // Node 3 loses its whole data folder and rejoins with the same key.
    net.json(&["testnet", "stop", "--node", "3"]);
    std::fs::remove_dir_all(net.data().join("node3/data")).unwrap();
    net.json(&["testnet", "start", "--node", "3"]);
    let tip = net.height(0).unwrap();
    wait_until("node 3 catches up", || net.height(3).unwrap_or(0) >= tip);
    wait_until("node 3 holds its fragment of every height", || {
        every_height_has(&availability(&net, &nodes, tip).1, 4)
    });
}

/// Serves `answer(path)` over HTTP/1.0 on a free port until dropped.
struct Stub {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    fn start(answer: impl Fn(&str) -> (u16, String) + Send + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes, whatever the test does.
            while !stopping.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600)
            {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65_536 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = answer(&path);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Stub {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a node answers to each of `paths`.
fn record(net: &Testnet, i: usize, paths: &[String]) -> BTreeMap<String, (u16, String)> {
    paths
        .iter()
        .map(|p| (p.clone(), net.get(i, p).unwrap()))
        .collect()
}

#[test]
fn availability_counts_k_with_2f_down_names_lost_heights_and_a_forged_history_is_refused() {
    // A chain of the stub's own: its genesis, its keys, its certificates.
    let forged: BTreeMap<String, (u16, String)> = {
        let fake = Testnet::up(4);
        fake.transfer(0, &fake.address(5), 1, 0);
        let mut paths = vec![
            "/v1/genesis".to_string(),
            "/v1/status".to_string(),
            "/v1/headers?from=1&count=256".to_string(),
        ];
        let tip = fake.height(0).unwrap();
        for h in 1..=tip {
            paths.push(format!("/v1/headers?from={h}&count=1"));
            paths.push(format!("/v1/blocks/{h}"));
        }
        record(&fake, 0, &paths)
    };

    let net = testnet(4);
    let nodes = all_nodes(&net, 4);
    let height = net.height(0).unwrap();

    // The forger is refused against the real genesis, at its first height.
    let stub = Stub::start(move |path| {
        forged
            .get(path)
            .cloned()
            .unwrap_or((404, "{\"error\":\"no\"}".into()))
    });
    let out = net.mosaic(&[
        "audit",
        "verify",
        "--genesis",
        &genesis(&net),
        "--node",
        &stub.url,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("height 1: commit certificate does not verify"),
        "{}",
        text(&out)
    );
    // Without a trust root the auditor says whom it trusts.
    let out = net.mosaic(&["audit", "verify", "--node", &stub.url]);
    assert!(
        text(&out).contains("WARNING: no --genesis"),
        "{}",
        text(&out)
    );
    drop(stub);

    // A node serving decodable fragments of another height first does not stop
    // the rebuild from the honest nodes.
    let honest = net.url(0);
    let liar = Stub::start(move |path| {
        // /v1/blocks/H/fragments/I -> the honest node's fragment I of another height
        // whose body it still keeps (its tip, or the one before): it decodes, and
        // its proof is for another block.
        let parts: Vec<&str> = path.split('/').collect();
        if let [_, "v1", "blocks", h, "fragments", i] = parts.as_slice() {
            let h: u64 = h.parse().unwrap_or(0);
            let tip = common::http_get(&format!("{honest}/v1/status"))
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .and_then(|s| s["height"].as_u64())
                .unwrap_or(0);
            let other = if h == tip { tip - 1 } else { tip };
            let url = format!("{honest}/v1/blocks/{other}/fragments/{i}");
            return match common::http_get(&url) {
                Some(body) => (200, body),
                None => (404, "{}".into()),
            };
        }
        common::http_get(&format!("{honest}{path}")).map_or((404, "{}".into()), |b| (200, b))
    });
    let out_file = net.dir.path().join("b1.json");
    let rebuilt = net.json(&[
        "audit",
        "reconstruct",
        "--genesis",
        &genesis(&net),
        "--height",
        "1",
        "--node",
        &format!("{},{nodes}", liar.url),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out_file.exists(), "{rebuilt}");
    assert!(
        rebuilt["fragments"]["bad"].to_string().contains(&liar.url),
        "{rebuilt}"
    );
    drop(liar);

    // 2f = 2 validators down: k = 2 good fragments of every height, still
    // rebuildable (a warning, exit 0).
    net.json(&["testnet", "stop", "--node", "0"]);
    net.json(&["testnet", "stop", "--node", "1"]);
    let (code, report, stderr) = availability(&net, &nodes, height);
    assert_eq!(code, Some(0), "{report} {stderr}");
    assert!(every_height_has(&report, 2), "{report}");
    assert!(stderr.contains("fewer than n"), "{stderr}");
    let out_file = net.dir.path().join(format!("b{height}.json"));
    net.json(&[
        "audit",
        "reconstruct",
        "--genesis",
        &genesis(&net),
        "--height",
        &height.to_string(),
        "--node",
        &nodes,
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out_file.exists());

    // 2f+1 down: every height is named as lost, exit 1.
    net.json(&["testnet", "stop", "--node", "2"]);
    let (code, report, stderr) = availability(&net, &nodes, height);
    assert_eq!(code, Some(1), "{report} {stderr}");
    assert!(every_height_has(&report, 1), "{report}");
    assert!(
        stderr.contains(&format!("heights [1-{height}]")) && stderr.contains("cannot be rebuilt"),
        "{stderr}"
    );
}
