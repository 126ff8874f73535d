//! Real `mosaic` processes on 127.0.0.1, driven through the CLI.
//!
//! The binary is the one `cargo nextest run --workspace` builds beside this test
//! (target/<profile>/mosaic), or `MOSAIC_BIN`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::{Testnet, binary, free_ports, text, wait_until};
use serde_json::Value;
fn tamper_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_string(&value).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn four_validators_commit_everywhere_audits_pass_and_tampering_is_named() {
    let net = Testnet::up(4);
    let recipient = net.address(7);
    for (i, amount) in [11u64, 22, 33, 44].into_iter().enumerate() {
        let answer = net.transfer(i, &recipient, amount, i);
        assert_eq!(answer["status"], "committed", "{answer}");
    }
    wait_until("balances agree on every node", || {
        (0..4).all(|i| net.balance(i, &recipient) == Some(1_000_000_000 + 110))
    });

    // Auditors: online verify, export, offline verify.
    let verified = net.json(&["audit", "verify", "--node", &net.url(2)]);
    assert_eq!(verified["verified"], true);
    assert!(verified["height"].as_u64().unwrap() >= 1);
    let export = net.dir.path().join("export");
    let nodes = (0..4).map(|i| net.url(i)).collect::<Vec<_>>().join(",");
    net.json(&[
        "audit",
        "export",
        "--out",
        export.to_str().unwrap(),
        "--node",
        &nodes,
    ]);
    let offline = net.json(&["audit", "verify", "--from-dir", export.to_str().unwrap()]);
    assert_eq!(offline["height"], verified["height"]);

    // A tampered header, certificate or fragment is named.
    type Tamper = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "header",
            Box::new(|dir: &Path| {
                tamper_json(&dir.join("blocks/1.json"), |v| {
                    v["header"]["tx_count"] = 9.into()
                })
            }),
            "height 1",
        ),
        (
            "certificate",
            Box::new(|dir: &Path| {
                tamper_json(&dir.join("blocks/1.json"), |v| {
                    v["certificate"]["signatures"] = Value::Array(Vec::new())
                })
            }),
            "certificate",
        ),
    ];
    for (name, tamper, needle) in cases {
        let copy = net.dir.path().join(format!("tampered-{name}"));
        copy_dir(&export, &copy);
        tamper(&copy);
        let out = net.mosaic(&["audit", "verify", "--from-dir", copy.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        assert!(text(&out).contains(needle), "{name}: {}", text(&out));
    }
    let copy = net.dir.path().join("tampered-fragment");
    copy_dir(&export, &copy);
    let fragment = copy.join("fragments/1/0.frag");
    let mut bytes = std::fs::read(&fragment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&fragment, bytes).unwrap();
    let rebuilt = net.json(&[
        "audit",
        "reconstruct",
        "--height",
        "1",
        "--from-dir",
        copy.to_str().unwrap(),
        "--out",
        net.dir.path().join("b1.json").to_str().unwrap(),
    ]);
    let bad = rebuilt["fragments"]["bad"].to_string();
    assert!(bad.contains("fragment 0"), "{rebuilt}");

    // 2f validators down (k = f+1 = 2): every block still rebuilds from the others.
    net.json(&["testnet", "stop", "--node", "0"]);
    net.json(&["testnet", "stop", "--node", "1"]);
    let survivors = format!("{},{}", net.url(2), net.url(3));
    let height = verified["height"].as_u64().unwrap();
    for h in 1..=height {
        let out_file = net.dir.path().join(format!("block{h}.json"));
        let rebuilt = net.json(&[
            "audit",
            "reconstruct",
            "--height",
            &h.to_string(),
            "--node",
            &survivors,
            "--out",
            out_file.to_str().unwrap(),
        ]);
        assert!(out_file.exists(), "{rebuilt}");
    }

    // Bad client input: clear error, non-zero exit.
    let missing_key = net.mosaic(&[
        "tx",
        "transfer",
        "--key",
        "/nonexistent.key",
        "--to",
        &recipient,
        "--amount",
        "1",
        "--node",
        &net.url(2),
    ]);
    assert_eq!(missing_key.status.code(), Some(1), "{}", text(&missing_key));
    assert!(text(&missing_key).contains("nonexistent.key"));
    let zero = net.mosaic(&[
        "tx",
        "transfer",
        "--key",
        &net.client_key(0),
        "--to",
        &recipient,
        "--amount",
        "0",
    ]);
    assert_eq!(zero.status.code(), Some(2), "{}", text(&zero));
    let bad_address = net.mosaic(&[
        "tx",
        "transfer",
        "--key",
        &net.client_key(0),
        "--to",
        "xyz",
        "--amount",
        "1",
    ]);
    assert_eq!(bad_address.status.code(), Some(2), "{}", text(&bad_address));
    let down = net.mosaic(&["account", &recipient, "--node", &net.url(0)]);
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    assert!(
        text(&down).contains("cannot reach the node"),
        "{}",
        text(&down)
    );
}

#[test]
fn killed_validators_restart_and_catch_up_and_a_dead_primary_is_replaced() {
    let net = Testnet::up(4);
    let recipient = net.address(6);
    net.transfer(0, &recipient, 1, 1);

    // f = 1 validator killed: the rest keep committing.
    net.json(&["testnet", "kill", "--node", "3"]);
    for _ in 0..3 {
        net.transfer(0, &recipient, 1, 1);
    }
    let height = net.height(1).unwrap();
    net.json(&["testnet", "start", "--node", "3"]);
    wait_until("node 3 catches up", || net.height(3).unwrap_or(0) >= height);
    assert_eq!(net.balance(3, &recipient), net.balance(1, &recipient));

    // The primary (validator 0 in view 0) killed: a view change, then commits.
    net.json(&["testnet", "kill", "--node", "0"]);
    let answer = net.transfer(1, &recipient, 5, 2);
    assert_eq!(answer["status"], "committed", "{answer}");
    net.json(&["testnet", "start", "--node", "0"]);
    let height = net.height(2).unwrap();
    wait_until("node 0 catches up", || net.height(0).unwrap_or(0) >= height);
    let verified = net.json(&["audit", "verify", "--node", &net.url(0)]);
    assert_eq!(verified["verified"], true);
}

#[test]
fn a_garbage_sending_validator_leaves_the_honest_ones_safe_and_live() {
    let net = Testnet::up(4);
    net.json(&["testnet", "stop", "--node", "3"]);
    net.json(&["testnet", "start", "--node", "3", "--maverick", "garbage"]);
    let recipient = net.address(5);
    for i in 0..3 {
        let answer = net.transfer(i, &recipient, 3, i);
        assert_eq!(answer["status"], "committed", "{answer}");
    }
    wait_until("honest balances agree", || {
        (0..3).all(|i| net.balance(i, &recipient) == Some(1_000_000_000 + 9))
    });
    let verified = net.json(&["audit", "verify", "--node", &net.url(1)]);
    assert_eq!(verified["verified"], true);
}

/// `mosaic bench` runs a short load on a fresh 4-validator testnet of its own and
/// reports what the issue asks for, with figures consistent with each other.
#[test]
fn the_load_benchmark_reports_throughput_latency_cpu_memory_and_storage() {
    let base = free_ports(8);
    let dir = tempfile::tempdir().unwrap();
    let bench_dir = dir.path().join("bench");
    let out = Command::new(binary())
        .args([
            "bench",
            "--rate",
            "400",
            "--duration",
            "4",
            "--warmup",
            "1",
            "--accounts",
            "40",
            "--port",
            &base.to_string(),
            "--dir",
        ])
        .arg(&bench_dir)
        .arg("--json")
        .env_remove("MOSAIC_NODE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let r: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(r["validators"], 4, "{r}");
    assert_eq!(r["connections_per_node"], 2, "{r}");
    let submitted = r["submitted"].as_u64().unwrap();
    let committed = r["committed_total"].as_u64().unwrap();
    assert!(submitted >= 1_000, "{r}");
    assert!(committed > 0 && committed <= submitted, "{r}");
    let tps = r["committed_per_second"].as_f64().unwrap();
    assert!(tps > 100.0 && tps < 800.0, "offered 400/s: {r}");
    let latency = |p: &str| r["latency_ms"][p].as_f64().unwrap();
    assert!(latency("p50") > 0.0, "{r}");
    assert!(
        latency("p50") <= latency("p90") && latency("p90") <= latency("p99"),
        "{r}"
    );
    assert!(r["blocks_per_second"].as_f64().unwrap() > 0.0, "{r}");
    assert!(
        r["cpu_seconds_per_transaction"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    let per_node = |key: &str| r[key].as_array().map_or(0, Vec::len);
    assert_eq!(per_node("peak_memory_bytes_per_node"), 4, "{r}");
    assert_eq!(per_node("stored_bytes_per_node"), 4, "{r}");
    assert_eq!(r["body_window"]["mib"].as_u64(), Some(2), "{r}");
    // Each node keeps one of k = 2 fragments plus recent bodies and indexes: more than
    // a tenth of the committed bytes, and (on this small run) not wildly more.
    for ratio in r["stored_per_committed_byte_after_stop"]
        .as_array()
        .unwrap()
    {
        let ratio = ratio.as_f64().unwrap();
        assert!(ratio > 0.1 && ratio < 10.0, "{r}");
    }
    // The benchmark stopped its validators: their API ports are free again.
    for i in 0..4u16 {
        assert!(
            TcpListener::bind(("127.0.0.1", base + i)).is_ok(),
            "port {} still taken",
            base + i
        );
    }
}
