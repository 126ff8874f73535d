//! One or two Byzantine validators (`mosaic node run --maverick MODE`, a test build
//! only) in a real testnet: the honest validators stay safe, keep committing, let a
//! validator that was away longer than the sync window catch up, keep their memory
//! bounded, and charge the maverick for what it sends.
//!
//! Each run commits a fixed number of transfers one by one through honest nodes,
//! first with every validator honest and then with the mavericks running, and
//! prints both rates. The rate under attack must be at least 1/[`RATE_FACTOR`] of the
//! honest one (a view change to replace a Byzantine primary costs about one view
//! timeout, which is shortened here to 1 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Instant;

use common::{Testnet, text, wait_until};
use serde_json::Value;

/// The slowest commit rate under attack, as a fraction of the honest one.
const RATE_FACTOR: f64 = 10.0;
/// Transfers each phase commits (one per block).
const TRANSFERS: usize = 8;
/// The sync window (consensus.window) of these testnets, in blocks.
const WINDOW: u64 = 6;
/// Peak resident memory any honest node may reach.
const MEMORY_MAX_BYTES: u64 = 512 << 20;

struct Run {
    net: Testnet,
    mavericks: Vec<usize>,
    honest: Vec<usize>,
    /// Honest nodes that take transfers (the rest of the honest ones but the victim).
    via: Vec<usize>,
    victim: usize,
    recipient: String,
    sent: usize,
}

impl Run {
    /// An n-validator testnet with a short window, view timeout and body window
    /// (so catching up after an absence needs state transfer and fragments).
    fn new(n: usize, mavericks: &[usize]) -> Run {
        let net = Self::configured(n);
        net.start();
        Self::around(net, n, mavericks)
    }

    /// As [`Run::new`], with validator `maverick` running `mode` from the start
    /// (so it is the first view's primary when it is validator 0).
    fn starting_with(n: usize, maverick: usize, mode: &str) -> Run {
        let net = Self::configured(n);
        net.start_with_maverick(n, (maverick, mode));
        Self::around(net, n, &[maverick])
    }

    fn configured(n: usize) -> Testnet {
        let net = Testnet::init(n);
        for i in 0..n {
            net.edit_config(i, |toml| {
                toml.replace("checkpoint_interval = 16", "checkpoint_interval = 2")
                    .replace("window = 64", &format!("window = {WINDOW}"))
                    .replace(
                        "view_change_timeout_ms = 2000",
                        "view_change_timeout_ms = 1000",
                    )
                    .replace("body_window_blocks = 1024", "body_window_blocks = 4")
            });
        }
        net
    }

    fn around(net: Testnet, n: usize, mavericks: &[usize]) -> Run {
        let honest: Vec<usize> = (0..n).filter(|i| !mavericks.contains(i)).collect();
        let victim = *honest.last().unwrap();
        let via = honest.iter().copied().filter(|i| *i != victim).collect();
        let recipient = net.address(7);
        Run {
            net,
            mavericks: mavericks.to_vec(),
            honest,
            via,
            victim,
            recipient,
            sent: 0,
        }
    }

    /// Commits `count` transfers one by one through the `via` nodes; returns the rate.
    fn commit(&mut self, count: usize) -> f64 {
        let start = Instant::now();
        let mut each = Vec::with_capacity(count);
        for _ in 0..count {
            let via = self.via[self.sent % self.via.len()];
            let one = Instant::now();
            let answer = self.net.transfer(self.sent % 4, &self.recipient, 1, via);
            assert_eq!(answer["status"], "committed", "{answer}");
            each.push(format!(
                "{}@{via}:{:.2}s",
                self.sent,
                one.elapsed().as_secs_f64()
            ));
            self.sent += 1;
        }
        // Per-transfer times show a stall (one long wait) apart from a slow load.
        println!("transfer times: {}", each.join(" "));
        count as f64 / start.elapsed().as_secs_f64()
    }

    fn height(&self, i: usize) -> u64 {
        self.net
            .get(i, "/v1/status")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|status| status["height"].as_u64())
            .unwrap_or(0)
    }

    fn block_hash(&self, i: usize, height: u64) -> String {
        let (status, body) = self
            .net
            .get(i, &format!("/v1/blocks/{height}?view=hashes"))
            .unwrap_or_else(|| panic!("node {i} does not answer for block {height}"));
        assert_eq!(status, 200, "node {i} block {height}: {body}");
        let block: Value = serde_json::from_str(&body).unwrap();
        block["hash"].as_str().unwrap().to_string()
    }

    fn metrics(&self, i: usize) -> String {
        self.net
            .get(i, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    fn peak_memory(&self, i: usize) -> u64 {
        let pid = self
            .net
            .pid(i)
            .unwrap_or_else(|| panic!("node {i} is not running"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib * 1024
    }
}

/// The value of the metric series `series` (name and labels) in `text`, 0 if absent.
fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A misbehaviour reason as its metric series.
fn points(reason: &str) -> String {
    format!("mosaic_misbehaviour_points_total{{reason=\"{reason}\"}}")
}

/// The whole story for `mavericks` (validator index, mode) in an n-validator
/// testnet. `evidence` names what shows each mode acted: metric series (or
/// alternatives split by `|`), each of which must be above 0 on some honest node.
fn attack(n: usize, mavericks: &[(usize, &str)], evidence: &[&str]) {
    let indices: Vec<usize> = mavericks.iter().map(|(i, _)| *i).collect();
    let mut run = Run::new(n, &indices);
    let honest_rate = run.commit(TRANSFERS);

    // The victim goes away for more than the sync window, then the mavericks turn.
    run.net
        .json(&["testnet", "stop", "--node", &run.victim.to_string()]);
    run.commit(WINDOW as usize + 4);
    for (i, mode) in mavericks {
        run.net.json(&["testnet", "stop", "--node", &i.to_string()]);
        run.net.json(&[
            "testnet",
            "start",
            "--node",
            &i.to_string(),
            "--maverick",
            mode,
        ]);
    }
    run.net
        .json(&["testnet", "start", "--node", &run.victim.to_string()]);

    // Catch-up under attack: the victim reaches what the others committed while
    // it was away. Until it does, a set whose mavericks are banned has one honest
    // voter short of a quorum, so the rate below is measured after it.
    let away = run.height(run.via[0]);
    wait_until("the returning validator catches up", || {
        run.height(run.victim) >= away
    });

    // Liveness under attack, through the honest nodes.
    let attacked_rate = run.commit(TRANSFERS);
    let modes: Vec<String> = mavericks.iter().map(|(i, m)| format!("{m}@{i}")).collect();
    println!(
        "n={n} mavericks {modes:?}: {honest_rate:.1} transfers/s honest, {attacked_rate:.1}/s under attack"
    );
    assert!(
        attacked_rate * RATE_FACTOR >= honest_rate,
        "{modes:?}: {attacked_rate:.2}/s under attack against {honest_rate:.2}/s honest"
    );

    // The victim keeps up with what was committed under attack.
    let target = run.height(run.via[0]);
    wait_until("the returning validator keeps up", || {
        run.height(run.victim) >= target
    });

    // Safety: one hash per height on every honest node, and each chain verifies.
    // Every honest node gets to the target (one may be a block behind the node
    // the target was read from when the victim reaches it).
    wait_until("every honest node reaches the target", || {
        run.honest.iter().all(|i| run.height(*i) >= target)
    });
    let top = run.honest.iter().map(|i| run.height(*i)).min().unwrap_or(0);
    assert!(top >= target, "honest heights below {target}");
    for height in 1..=top {
        let first = run.block_hash(run.honest[0], height);
        for i in &run.honest[1..] {
            assert_eq!(
                run.block_hash(*i, height),
                first,
                "{modes:?}: nodes {} and {i} differ at height {height}",
                run.honest[0]
            );
        }
    }
    for i in &run.honest {
        let verified = run
            .net
            .json(&["audit", "verify", "--node", &run.net.url(*i)]);
        assert_eq!(verified["verified"], true, "node {i}: {verified}");
    }

    // Resources, and the price the mavericks pay.
    for i in &run.honest {
        let peak = run.peak_memory(*i);
        println!("node {i}: peak memory {} MiB", peak >> 20);
        assert!(
            peak <= MEMORY_MAX_BYTES,
            "{modes:?}: node {i} reached {} MiB",
            peak >> 20
        );
    }
    for i in &run.honest {
        let metrics = run.metrics(*i);
        let notable: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.starts_with("mosaic_misbehaviour_points_total")
                        || l.starts_with("mosaic_view ")
                        || l.starts_with("mosaic_view_changes_total")
                        || l.starts_with("mosaic_peers_banned")
                        || l.starts_with("mosaic_messages_rejected_total")
                        || l.starts_with("mosaic_held_bytes"))
            })
            .collect();
        println!("node {i}: {notable:?}");
    }
    for wanted in evidence {
        wait_until(&format!("an honest node records {wanted}"), || {
            run.honest.iter().any(|i| {
                let metrics = run.metrics(*i);
                wanted
                    .split('|')
                    .map(|s| {
                        if s.starts_with("mosaic_") {
                            s.to_string()
                        } else {
                            points(s)
                        }
                    })
                    .any(|series| metric_value(&metrics, &series) > 0.0)
            })
        });
    }
    // The mavericks are still running: their modes were accepted, not refused.
    for i in &run.mavericks {
        assert!(
            run.net.pid(*i).is_some(),
            "maverick {i} exited: {}",
            std::fs::read_to_string(run.net.data().join(format!("node{i}/node.log")))
                .unwrap_or_default()
        );
    }
}

#[test]
fn an_equivocating_primary_is_replaced_or_outvoted() {
    attack(4, &[(0, "equivocate")], &["mosaic_view_changes_total"]);
}

// A claim of height u64::MAX is not one of the f+1 highest reports that catch-up
// believes, so the liar is seldom asked at all (and charged when it is: see the
// node's cluster tests, which make it the only peer ahead).
#[test]
fn a_height_liar_answering_errors_does_not_stop_catch_up() {
    attack(4, &[(3, "lie-height")], &[]);
}

#[test]
fn a_height_liar_sending_bad_bodies_does_not_stop_catch_up() {
    attack(4, &[(3, "lie-height-bodies")], &[]);
}

#[test]
fn a_flood_of_held_pre_prepares_stays_in_its_budget() {
    attack(4, &[(3, "flood-held")], &["pre-prepare-equivocation"]);
}

#[test]
fn replayed_consensus_messages_change_nothing() {
    attack(
        4,
        &[(3, "replay")],
        &["pre-prepare-not-from-primary|pre-prepare-forged"],
    );
}

#[test]
fn bad_fragments_are_refused_and_others_asked() {
    attack(4, &[(3, "bad-fragments")], &["bad-fragment"]);
}

/// Commits `count` transfers through the first view's primary, validator 0, which
/// runs `mode` and gossips none of them while it is the primary: the backups have
/// them only from its compact proposals. Then the honest chains agree and verify.
/// Returns the honest nodes' metrics.
fn through_a_hoarding_primary(mode: &str, count: usize) -> Vec<String> {
    let mut run = Run::starting_with(4, 0, mode);
    run.via = vec![0];
    let rate = run.commit(count);
    println!("{mode}@0: {rate:.1} transfers/s through it");
    let top = run.honest.iter().map(|i| run.height(*i)).min().unwrap_or(0);
    for height in 1..=top {
        let first = run.block_hash(run.honest[0], height);
        for i in &run.honest[1..] {
            assert_eq!(run.block_hash(*i, height), first, "height {height}");
        }
    }
    for i in &run.honest {
        let verified = run
            .net
            .json(&["audit", "verify", "--node", &run.net.url(*i)]);
        assert_eq!(verified["verified"], true, "node {i}: {verified}");
    }
    assert!(run.net.pid(0).is_some(), "the maverick exited");
    run.honest.iter().map(|i| run.metrics(*i)).collect()
}

/// The metric series in `metrics` summed over the nodes.
fn total(metrics: &[String], series: &str) -> f64 {
    metrics.iter().map(|m| metric_value(m, series)).sum()
}

#[test]
fn backups_fetch_what_gossip_did_not_bring_from_the_primary() {
    let metrics = through_a_hoarding_primary("hoard", TRANSFERS);
    let fetched = total(&metrics, "mosaic_proposal_transfers_fetched_total");
    println!("transfers fetched by the backups: {fetched}");
    // Every block holds a transfer only the primary had, unless a view change made
    // another validator primary (then the hoarder gossips): at least one fetch.
    assert!(
        fetched > 0.0,
        "the backups fetched nothing of {TRANSFERS} transfers only the primary had"
    );
    // An honest answer costs its sender nothing.
    for reason in [
        "supply-invalid",
        "supply-invalid-transfer",
        "want-invalid",
        "compact-proposal-invalid-block",
        "compact-proposal-ids-mismatch",
        "compact-proposal-header-mismatch",
        "compact-proposal-equivocation",
        "bad-signature",
        "pre-prepare-not-from-primary",
    ] {
        assert_eq!(total(&metrics, &points(reason)), 0.0, "charged {reason}");
    }
}

/// Validator 0, the first view's primary, keeps the transfers its clients send it
/// from gossip and answers the backups' wants for them with the wrong transfers:
/// it is charged, replaced by a view change, and transfers sent through the honest
/// nodes keep committing. (Its own clients' transfers are at its mercy: the honest
/// validators ban it, and so never see them.)
#[test]
fn a_primary_supplying_the_wrong_transfers_is_charged_and_replaced() {
    let mut run = Run::starting_with(4, 0, "bad-supply");
    for account in [4, 5] {
        let key = run.net.client_key(account);
        let answer = run.net.json(&[
            "tx",
            "transfer",
            "--key",
            &key,
            "--to",
            &run.recipient,
            "--amount",
            "1",
            "--node",
            &run.net.url(0),
        ]);
        assert!(answer["hash"].is_string(), "{answer}");
    }
    let rate = run.commit(TRANSFERS);
    println!("bad-supply@0: {rate:.1} transfers/s through the honest nodes");
    wait_until("an honest node charges the bad supply", || {
        run.honest
            .iter()
            .any(|i| metric_value(&run.metrics(*i), &points("supply-invalid")) > 0.0)
    });
    let metrics: Vec<String> = run.honest.iter().map(|i| run.metrics(*i)).collect();
    assert!(
        total(&metrics, "mosaic_view_changes_total") > 0.0,
        "the primary was not replaced"
    );
    let top = run.honest.iter().map(|i| run.height(*i)).min().unwrap_or(0);
    for height in 1..=top {
        let first = run.block_hash(run.honest[0], height);
        for i in &run.honest[1..] {
            assert_eq!(run.block_hash(*i, height), first, "height {height}");
        }
    }
}

#[test]
fn a_silent_validator_is_tolerated() {
    attack(4, &[(3, "silent")], &[]);
}

#[test]
fn a_garbage_sender_is_banned() {
    attack(
        4,
        &[(3, "garbage")],
        &["consensus-undecodable", "mosaic_peers_banned"],
    );
}

#[test]
fn seven_validators_survive_an_equivocating_primary_and_a_silent_one() {
    attack(
        7,
        &[(0, "equivocate"), (6, "silent")],
        &["mosaic_view_changes_total"],
    );
}

#[test]
fn seven_validators_survive_a_flood_and_a_replayer() {
    attack(
        7,
        &[(5, "flood-held"), (6, "replay")],
        &[
            "pre-prepare-equivocation",
            "pre-prepare-not-from-primary|pre-prepare-forged",
        ],
    );
}

#[test]
fn seven_validators_survive_a_height_liar_and_bad_fragments() {
    attack(
        7,
        &[(5, "lie-height"), (6, "bad-fragments")],
        &["bad-fragment"],
    );
}

#[test]
fn seven_validators_survive_a_garbage_sender_and_a_bad_body_liar() {
    attack(
        7,
        &[(5, "garbage"), (6, "lie-height-bodies")],
        &["consensus-undecodable", "mosaic_peers_banned"],
    );
}

#[test]
fn an_unknown_maverick_mode_is_refused_with_the_list() {
    // This build has the modes; an unknown one is refused with the list.
    let net = Testnet::init(4);
    let out = net.mosaic(&["testnet", "start", "--node", "0", "--maverick", "nonsense"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("equivocate"), "{}", text(&out));
}

/// A peer outside the validator set floods gossip of badly signed transfers and
/// fragment and block requests: the validators keep committing, stay within their
/// memory, and charge and ban it.
#[test]
fn a_non_validator_flooder_is_charged_and_banned() {
    let run = Run::new(4, &[]);
    let dir = run.net.data();
    let flooder = std::thread::spawn(move || {
        let out = std::process::Command::new(common::binary())
            .args(["flood", "--seconds", "8", "--json", "--dir"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    });
    let mut run = run;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let rate = run.commit(TRANSFERS);
    let report = flooder.join().unwrap();
    println!("flooder: {report}; {rate:.1} transfers/s committed meanwhile");
    assert!(report["gossip_published"].as_u64().unwrap() > 0, "{report}");
    assert!(report["requests_sent"].as_u64().unwrap() > 0, "{report}");
    // Only the flooder misbehaves here: every ban and refused connection is its.
    wait_until("a validator bans the flooder and refuses it", || {
        (0..4).any(|i| {
            let metrics = run.metrics(i);
            metric_value(&metrics, &points("gossip-invalid-transaction")) > 0.0
                && metric_value(&metrics, "mosaic_peers_banned") > 0.0
                && metric_value(
                    &metrics,
                    "mosaic_connections_denied_total{reason=\"banned\"}",
                ) > 0.0
        })
    });
    for i in 0..4 {
        let peak = run.peak_memory(i);
        assert!(
            peak <= MEMORY_MAX_BYTES,
            "node {i} reached {} MiB",
            peak >> 20
        );
    }
}
