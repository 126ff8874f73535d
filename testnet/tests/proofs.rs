//! Answers a client checks against the genesis file, in real processes: after a
//! payment commits, `mosaic account` and `mosaic tx status` print balances and
//! outcomes proven by a commit certificate of the genesis validators, a proof
//! checked against another genesis is refused with the node named, and every
//! block with transfers is followed by one that certifies their outcomes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use serde_json::Value;

#[test]
fn balances_and_outcomes_are_verified_against_the_genesis_file() {
    let net = Testnet::up(4);
    let genesis = net.data().join("genesis.json");
    let genesis = genesis.to_str().unwrap();
    let payee = net.address(1);
    let before = net.balance(0, &payee).unwrap();
    let sent = net.transfer(0, &payee, 7, 0);
    let hash = sent["hash"].as_str().unwrap().to_string();
    let nodes = (0..4).map(|i| net.url(i)).collect::<Vec<_>>().join(",");

    // The chain goes quiet after the payment, and still its outcome and the state
    // after it become provable: an empty block follows it.
    let mut proven: Value = Value::Null;
    wait_until("a verified balance that includes the payment", || {
        let out = net.mosaic(&[
            "account",
            &payee,
            "--genesis",
            genesis,
            "--node",
            &nodes,
            "--json",
        ]);
        if !out.status.success() {
            eprintln!("account: {}", text_of(&out));
            return false;
        }
        proven = serde_json::from_slice(&out.stdout).unwrap();
        proven["balance"].as_u64() == Some(before + 7)
    });
    assert_eq!(proven["verified"]["signers"], 3, "{proven}");
    assert_eq!(proven["verified"]["validators"], 4, "{proven}");
    let text = text(&net.mosaic(&["account", &payee, "--genesis", genesis, "--node", &nodes]));
    assert!(
        text.contains("verified against genesis")
            && text.contains("certificate of 3 of 4 validators"),
        "{text}"
    );

    let mut status: Value = Value::Null;
    wait_until("a verified committed status", || {
        let out = net.mosaic(&[
            "tx",
            "status",
            &hash,
            "--genesis",
            genesis,
            "--node",
            &nodes,
            "--json",
        ]);
        status = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        out.status.success() && status["verified"].is_object()
    });
    assert_eq!(status["status"], "committed", "{status}");
    assert_eq!(status["height"], sent["height"], "{status} {sent}");

    // Another genesis (other validators) proves nothing of this chain: every node
    // is named, and the command fails.
    let mut other: Value =
        serde_json::from_str(&std::fs::read_to_string(net.data().join("genesis.json")).unwrap())
            .unwrap();
    other["validators"][0]["public_key"] = other["validators"][1]["public_key"].clone();
    other["validators"][1]["public_key"] = Value::String(net.address(3));
    let forged = net.data().join("other-genesis.json");
    std::fs::write(&forged, other.to_string()).unwrap();
    let out = net.mosaic(&[
        "account",
        &payee,
        "--genesis",
        forged.to_str().unwrap(),
        "--node",
        &net.url(2),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text_of(&out));
    assert!(
        text_of(&out).contains("answered a balance its certificate does not prove"),
        "{}",
        text_of(&out)
    );
}

fn text_of(out: &std::process::Output) -> String {
    text(out)
}
