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
            eprintln!("account: {}", text(&out));
            return false;
        }
        proven = serde_json::from_slice(&out.stdout).unwrap();
        proven["balance"].as_u64() == Some(before + 7)
    });
    assert_eq!(proven["verified"]["signers"], 3, "{proven}");
    assert_eq!(proven["verified"]["validators"], 4, "{proven}");
    let shown = text(&net.mosaic(&["account", &payee, "--genesis", genesis, "--node", &nodes]));
    assert!(
        shown.contains("verified against genesis")
            && shown.contains("certificate of 3 of 4 validators"),
        "{shown}"
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
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("answered a balance its certificate does not prove"),
        "{}",
        text(&out)
    );
}

/// Starts an n-validator testnet with validator `liar` serving forged answers
/// (`--maverick forge-answers`: honest consensus, lying API).
fn with_liar(n: usize, liar: usize) -> Testnet {
    let net = Testnet::init(n);
    net.start_with_maverick(n, (liar, "forge-answers"));
    net
}

/// The node named in the first refusal of a verified answer.
fn first_refused(value: &Value) -> (String, String) {
    let r = &value["refused"][0];
    (
        r["node"].as_str().unwrap_or_default().to_string(),
        r["reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// A validator that forges every balance, status and proof it gives clients (four
/// kinds of account forgery in turn, flipped and invented outcomes): the CLI,
/// asking it first, never prints its value, names it, and prints what an honest
/// node proves; `tx transfer --wait` through it still ends verified.
#[test]
fn a_lying_validator_is_named_and_never_believed() {
    let (n, liar) = (4, 3);
    let net = with_liar(n, liar);
    let genesis = net.data().join("genesis.json");
    let genesis = genesis.to_str().unwrap();
    let liar_name = format!("validator-{liar}");
    // The liar first, then the honest validators.
    let nodes = std::iter::once(liar)
        .chain((0..n).filter(|i| *i != liar))
        .map(|i| net.url(i))
        .collect::<Vec<_>>()
        .join(",");
    let payee = net.address(1);
    let before = net.balance(0, &payee).unwrap();
    let sent = net.transfer(0, &payee, 7, 0);
    let hash = sent["hash"].as_str().unwrap().to_string();
    // The honest validators prove the payment first, so that each question below
    // asks the liar once and meets the forgery of its turn.
    let honest = (0..n)
        .filter(|i| *i != liar)
        .map(|i| net.url(i))
        .collect::<Vec<_>>()
        .join(",");
    wait_until("a verified balance with the payment", || {
        let out = net.mosaic(&[
            "account",
            &payee,
            "--genesis",
            genesis,
            "--node",
            &honest,
            "--json",
        ]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).unwrap()["balance"].as_u64()
                == Some(before + 7)
    });
    let account = |expect: &str| {
        let out = net.mosaic(&[
            "account",
            &payee,
            "--genesis",
            genesis,
            "--node",
            &nodes,
            "--json",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let value: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(value["balance"].as_u64(), Some(before + 7), "{value}");
        let (node, reason) = first_refused(&value);
        assert_eq!(node, liar_name, "{value}");
        assert!(reason.contains(expect), "expected {expect:?}: {value}");
        assert_ne!(value["verified"]["node"], liar_name.as_str(), "{value}");
    };
    // Turn 0: a raised balance field (the liar keeps the state it proves now).
    account("balance its own proof contradicts");
    // The chain moves on by more than the freshness bound.
    let first_height = net.height(0).unwrap();
    let recipient = net.address(5);
    while net.height(0).unwrap() <= first_height + 20 {
        net.transfer(2, &recipient, 1, 0);
    }
    // Turns 1-3: a raised balance inside the proof, a true proof of another
    // account, a true proof of the old state.
    account("answered a balance its certificate does not prove");
    account("answered a balance its certificate does not prove");
    account("below the nodes' height");

    // A committed payment shown as failed, with its proof's outcome flipped.
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
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "committed", "{status}");
    assert!(status["verified"].is_object(), "{status}");
    let (node, reason) = first_refused(&status);
    assert_eq!(node, liar_name, "{status}");
    assert!(reason.contains("certificate does not prove"), "{status}");

    // A transfer nobody has: the liar says committed, with another transfer's proof.
    let unknown = "ab".repeat(32);
    let out = net.mosaic(&[
        "tx",
        "status",
        &unknown,
        "--genesis",
        genesis,
        "--node",
        &nodes,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(status["status"], "committed", "{status}");
    assert_eq!(status["final"], false, "{status}");
    assert_eq!(first_refused(&status).0, liar_name, "{status}");

    // --wait through the liar: its early "committed" is refused, the same signed
    // transfer goes to the next node, and the end printed is proven.
    let payer_before = net.balance(0, &net.address(4)).unwrap();
    let out = net.mosaic(&[
        "tx",
        "transfer",
        "--key",
        &net.client_key(4),
        "--to",
        &payee,
        "--amount",
        "3",
        "--wait",
        "--timeout",
        "60",
        "--genesis",
        genesis,
        "--node",
        &nodes,
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains(&format!("refused: {liar_name}")), "{shown}");
    assert!(shown.contains("committed at height"), "{shown}");
    assert!(shown.contains("verified against genesis"), "{shown}");
    wait_until("the payer's balance down by 3 at an honest node", || {
        net.balance(0, &net.address(4)) == Some(payer_before - 3)
    });
}
