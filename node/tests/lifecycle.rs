//! A transfer's life at the API: what 202 promises (it is on the node's disk and
//! survives a restart), expiry (refused, never included late, dropped with a
//! reason), a status that explains, and a log that refuses what it cannot keep.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use mosaic_crypto::ChainId;
use mosaic_node::ledger::{SignedTransfer, Transfer};

fn transfer_until(from: usize, nonce: u64, valid_until: u64) -> SignedTransfer {
    Transfer {
        chain: ChainId::new(CHAIN).unwrap(),
        from: client_key(from).public(),
        to: client_key(9).public(),
        amount: 1,
        nonce,
        valid_until,
    }
    .sign(&client_key(from))
}

/// Waits up to 30 s until node `url` reports transaction `hash` with `status`.
async fn wait_for_status(url: &str, hash: &str, status: &str, what: &str) {
    wait_until(what, Duration::from_secs(30), || async move {
        tx_status(url, hash).await["status"] == status
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_transfer_survives_its_node_restarting_and_expiry_is_enforced_and_explained() {
    let mut cluster = Cluster::start(4, 3, 64).await;
    let tip = height(&cluster.url(0)).await;

    // Refused at the door: expired, or valid for longer than a node keeps anything.
    let (code, answer) = submit(&cluster.url(1), &transfer_until(0, 0, tip)).await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("expired"),
        "{answer}"
    );
    let (code, answer) = submit(&cluster.url(1), &transfer_until(0, 0, tip + 1_000_000)).await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("heights past the tip"),
        "{answer}"
    );

    // Nonce 1 of client 0 waits for nonce 0, which nobody has yet.
    let waiting = transfer_until(0, 1, tip + 10_000);
    let hash = waiting.hash().to_string();
    let (code, answer) = submit(&cluster.url(1), &waiting).await;
    assert_eq!(code, 202, "{answer}");
    let status = tx_status(&cluster.url(1), &hash).await;
    assert_eq!(status["status"], "pending", "{status}");
    assert_eq!(status["waiting_for_nonce"], 0, "{status}");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("waiting for nonce 0"),
        "{status}"
    );

    // The node that answered 202 stops and starts again: it still has the transfer
    // (from its mempool log, nobody sends it again).
    cluster.stop(1).await;
    cluster.restart(1).await;
    let status = tx_status(&cluster.url(1), &hash).await;
    assert_eq!(
        status["status"], "pending",
        "the accepted transfer is back after the restart: {status}"
    );

    // Nonce 0 arrives elsewhere: both commit, everywhere.
    let (code, _) = submit(&cluster.url(2), &transfer_until(0, 0, tip + 10_000)).await;
    assert_eq!(code, 202);
    wait_for_status(
        &cluster.url(0),
        &hash,
        "committed",
        "the waiting transfer commits",
    )
    .await;

    // A transfer whose gap never closes is dropped at its expiry (empty blocks move
    // the height on meanwhile), and every node that had it says why.
    let tip = height(&cluster.url(0)).await;
    let doomed = transfer_until(1, 5, tip + 3);
    let doomed_hash = doomed.hash().to_string();
    let (code, answer) = submit(&cluster.url(3), &doomed).await;
    assert_eq!(code, 202, "{answer}");
    wait_for_status(
        &cluster.url(3),
        &doomed_hash,
        "expired",
        "the gapped transfer expires",
    )
    .await;
    let status = tx_status(&cluster.url(3), &doomed_hash).await;
    assert_eq!(status["final"], true, "{status}");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("expired at height {}", tip + 3)),
        "{status}"
    );
    assert!(reason.contains("next nonce was 0"), "{status}");
    // Once past its height it can never be accepted again either.
    let (code, _) = submit(&cluster.url(0), &doomed).await;
    assert_eq!(code, 400);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mempool_log_answers_503_and_accepts_again_once_transfers_commit() {
    let cluster = Cluster::start_tuned(4, 2, 64, vec![Default::default(); 4], |config| {
        config.mempool.log_bytes_max = 8 * 1024;
    })
    .await;
    let tip = height(&cluster.url(0)).await;
    // Nonces from 1 on wait for nonce 0, so nothing leaves node 2's log: it fills
    // up (about 200 bytes a transfer) and then refuses, saying why.
    let mut accepted = Vec::new();
    let mut refusal = None;
    for nonce in 1..200 {
        let tx = transfer_until(0, nonce, tip + 10_000);
        let (code, answer) = submit(&cluster.url(2), &tx).await;
        match code {
            202 => accepted.push(tx.hash().to_string()),
            _ => {
                refusal = Some((code, answer, tx));
                break;
            }
        }
    }
    let (code, answer, refused) = refusal.expect("the log bound refuses at last");
    assert_eq!(code, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("cannot keep the transfer on disk"),
        "{answer}"
    );
    assert!(accepted.len() >= 10, "{} accepted first", accepted.len());
    // Nonce 0 through another node: everything accepted commits, the log makes room,
    // and the refused transfer is accepted when sent again.
    let (code, _) = submit(&cluster.url(3), &transfer_until(0, 0, tip + 10_000)).await;
    assert_eq!(code, 202);
    let last = accepted.last().unwrap().clone();
    wait_for_status(
        &cluster.url(2),
        &last,
        "committed",
        "the accepted ones commit",
    )
    .await;
    let mut code = 0;
    for _ in 0..50 {
        (code, _) = submit(&cluster.url(2), &refused).await;
        if code == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        code, 202,
        "the log accepts again once its transfers committed"
    );
    cluster.shutdown().await;
}
