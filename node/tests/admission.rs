//! Admission at the API: the binary submission path (the canonical encoding, single
//! and batch) beside JSON, and shedding: past the backlog bound a submission is
//! refused at once with 503 and `Retry-After`, while transfers no block can take yet
//! (nonce gaps) do not count against that bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use mosaic_crypto::codec;
use mosaic_node::ledger::SignedTransfer;
use serde_json::Value;

/// POST `body` with `content_type`: (status, Retry-After, JSON answer).
async fn post_as(url: String, content_type: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
    let content_type = content_type.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut response = agent
            .post(&url)
            .header("content-type", &content_type)
            .send(&body[..])
            .unwrap();
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            retry,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .unwrap()
}

const BINARY: &str = "application/octet-stream";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_submissions_commit_like_json_and_bad_bytes_are_refused_with_a_reason() {
    let cluster = Cluster::start(4, 2, 64).await;
    let url = cluster.url(0);
    let to = client_key(1).public();

    // One transfer as its canonical bytes.
    let first = transfer(0, &to, 5, 0);
    let (code, _, answer) = post_as(
        format!("{url}/v1/transactions"),
        BINARY,
        codec::encode(&first).unwrap(),
    )
    .await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["hash"], first.hash().to_string());

    // A batch as the canonical encoding of the list; one of them already pending.
    let batch: Vec<SignedTransfer> = (1..4).map(|n| transfer(0, &to, 5, n)).collect();
    let mut with_repeat = batch.clone();
    with_repeat.push(first.clone());
    let (code, _, answer) = post_as(
        format!("{url}/v1/transactions/batch"),
        BINARY,
        codec::encode(&with_repeat).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["accepted"], 4, "{answer}");

    // JSON still works beside it.
    let json_tx = transfer(0, &to, 5, 4);
    let (code, _) = submit(&url, &json_tx).await;
    assert_eq!(code, 202);

    wait_until(
        "the binary submissions commit",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            let last = json_tx.hash().to_string();
            async move { tx_status(&url, &last).await["status"] == "committed" }
        },
    )
    .await;
    for tx in batch.iter().chain([&first]) {
        let status = tx_status(&url, &tx.hash().to_string()).await;
        assert_eq!(status["status"], "committed", "{status}");
    }

    // Bytes that are not a transfer: 400, saying what was expected.
    let mut cut = codec::encode(&transfer(0, &to, 5, 5)).unwrap();
    cut.truncate(cut.len() - 1);
    let (code, _, answer) = post_as(format!("{url}/v1/transactions"), BINARY, cut).await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not the canonical encoding of a signed transfer"),
        "{answer}"
    );
    let mut trailing = codec::encode(&transfer(0, &to, 5, 5)).unwrap();
    trailing.push(0);
    let (code, _, _) = post_as(format!("{url}/v1/transactions"), BINARY, trailing).await;
    assert_eq!(code, 400);
    // A batch whose count claims more than the limit is refused before decoding.
    let mut huge = (1_000_000u64).to_le_bytes().to_vec();
    huge.extend_from_slice(&codec::encode(&first).unwrap());
    let (code, _, answer) = post_as(format!("{url}/v1/transactions/batch"), BINARY, huge).await;
    assert_eq!(code, 413, "{answer}");
    // A batch whose count claims more transfers than its bytes hold.
    let mut short = 5u64.to_le_bytes().to_vec();
    short.extend_from_slice(&codec::encode(&first).unwrap());
    let (code, _, _) = post_as(format!("{url}/v1/transactions/batch"), BINARY, short).await;
    assert_eq!(code, 400);
    let (code, _, _) = post_as(format!("{url}/v1/transactions/batch"), BINARY, vec![1, 2]).await;
    assert_eq!(code, 400);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_chain_sheds_ready_submissions_past_the_bound_with_retry_after() {
    // A block holds at most 20 transfers, so the bound of a chain that commits
    // nothing is 20 ready transfers.
    let mut cluster = Cluster::start_tuned(4, 3, 64, vec![Default::default(); 4], |config| {
        config.batching.txs_max = 20;
    })
    .await;
    let url = cluster.url(0);
    let to = client_key(2).public();
    // Two of four down: no quorum, nothing commits.
    cluster.stop(3).await;
    cluster.stop(2).await;
    let tip = height(&url).await;

    // Client 1 sends nonces 1.. (nonce 0 never comes): none is ready, none counts.
    let gapped: Vec<SignedTransfer> = (1..=60).map(|n| transfer(1, &to, 1, n)).collect();
    let (code, _, answer) = post_as(
        format!("{url}/v1/transactions/batch"),
        BINARY,
        codec::encode(&gapped).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["accepted"], 60,
        "gapped transfers are not shed: {answer}"
    );

    // Client 0's ready transfers, one at a time: the first 20 are taken, then each
    // is refused at once with 503 and Retry-After.
    let mut accepted = 0;
    let mut refusal = None;
    for nonce in 0..40 {
        let tx = transfer(0, &to, 1, nonce);
        let (code, retry, answer) = post_as(
            format!("{url}/v1/transactions"),
            BINARY,
            codec::encode(&tx).unwrap(),
        )
        .await;
        if code == 202 {
            accepted += 1;
        } else {
            refusal = Some((code, retry, answer));
            break;
        }
    }
    assert_eq!(
        accepted, 20,
        "the bound of a stalled chain is one full block"
    );
    let (code, retry, answer) = refusal.expect("shed past the bound");
    assert_eq!(code, 503, "{answer}");
    assert_eq!(
        retry.as_deref(),
        Some("1"),
        "a shed answer says when to retry"
    );
    assert!(
        answer["error"].as_str().unwrap().contains("overloaded"),
        "{answer}"
    );
    // A batch carries Retry-After when any of it is shed.
    let more: Vec<SignedTransfer> = (20..25).map(|n| transfer(0, &to, 1, n)).collect();
    let (code, retry, answer) = post_as(
        format!("{url}/v1/transactions/batch"),
        BINARY,
        codec::encode(&more).unwrap(),
    )
    .await;
    assert_eq!((code, retry.as_deref()), (200, Some("1")), "{answer}");
    assert_eq!(answer["accepted"], 0, "{answer}");
    let metrics = get_text(format!("{url}/metrics")).await;
    let shed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("mosaic_submissions_shed_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(shed, 6.0, "one single and five of a batch shed");
    assert_eq!(height(&url).await, tip, "nothing committed meanwhile");

    // The quorum back: the 20 commit, and the node takes submissions again.
    cluster.restart(2).await;
    cluster.restart(3).await;
    let twentieth = transfer(0, &to, 1, 19).hash().to_string();
    wait_until(
        "the admitted transfers commit",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            let id = twentieth.clone();
            async move { tx_status(&url, &id).await["status"] == "committed" }
        },
    )
    .await;
    let (code, _, answer) = post_as(
        format!("{url}/v1/transactions"),
        BINARY,
        codec::encode(&transfer(0, &to, 1, 20)).unwrap(),
    )
    .await;
    assert_eq!(code, 202, "admitted again once the queue drained: {answer}");
    cluster.shutdown().await;
}
