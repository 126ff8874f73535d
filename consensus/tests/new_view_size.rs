//! The largest NEW-VIEW an honest primary can build fits the links' message
//! limit for every validator set the chain allows (n up to 256): 2f+1
//! VIEW-CHANGE summaries, each with a checkpoint proof and a window of claims,
//! and one prepared certificate per re-issued height. Its size does not depend
//! on signatures being valid, so this builds the worst shape with placeholder
//! signatures and measures its encoding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use mosaic_consensus::*;
use mosaic_crypto::{Hash, Signature};

/// `Config::new`'s `message_bytes_max`, which the NEW-VIEW must fit.
const MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// `Config::new`'s window.
const WINDOW: u64 = 64;

fn signed<T>(body: T, signer: u32) -> Signed<T> {
    Signed {
        body,
        signer: ReplicaId(signer),
        signature: Signature::from_bytes([7; 64]),
    }
}

/// The encoded size of the largest NEW-VIEW for `n` validators: every summary
/// at the highest checkpoint with a full window of claims, every height of the
/// window re-issued, no payload carried.
fn largest_new_view_bytes(n: usize) -> usize {
    let f = (n - 1) / 3;
    let quorum = 2 * f + 1;
    let digest = |seq: u64| Digest(Hash::of(&seq.to_le_bytes()));
    let stable = CheckpointProof {
        seq: SeqNum(u64::MAX / 2),
        digest: digest(0),
        checkpoints: (0..quorum as u32)
            .map(|i| {
                signed(
                    Checkpoint {
                        seq: SeqNum(u64::MAX / 2),
                        digest: digest(0),
                    },
                    i,
                )
            })
            .collect(),
    };
    let claim = |seq: u64| PrePrepare {
        view: View(u64::MAX - 1),
        seq: SeqNum(u64::MAX / 2 + seq),
        digest: digest(seq),
        parent: digest(seq - 1),
    };
    let view_changes = (0..quorum as u32)
        .map(|i| {
            signed(
                ViewChangeSummary {
                    new_view: View(u64::MAX),
                    stable: stable.clone(),
                    prepared: (1..=WINDOW).map(claim).collect(),
                    last_delivered: SeqNum(u64::MAX),
                },
                i,
            )
        })
        .collect();
    let certificates = (1..=WINDOW)
        .map(|seq| {
            let pp = claim(seq);
            PreparedCertificate {
                pre_prepare: signed(pp, 0),
                prepares: (1..quorum as u32)
                    .map(|i| {
                        signed(
                            Prepare {
                                view: pp.view,
                                seq: pp.seq,
                                digest: pp.digest,
                                parent: pp.parent,
                            },
                            i,
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    let pre_prepares = (1..=WINDOW)
        .map(|seq| {
            signed(
                PrePrepare {
                    view: View(u64::MAX),
                    ..claim(seq)
                },
                0,
            )
        })
        .collect();
    let message = Message::NewView {
        new_view: signed(
            NewView {
                view: View(u64::MAX),
                view_changes,
                certificates,
                pre_prepares,
            },
            0,
        ),
        payloads: vec![None; WINDOW as usize],
    };
    message.encode().unwrap().len()
}

#[test]
fn the_largest_new_view_fits_the_message_limit_for_every_set_size() {
    let mut sizes = Vec::new();
    for n in [4, 31, 64, 100, 127, 256] {
        let bytes = largest_new_view_bytes(n);
        sizes.push((n, bytes));
        assert!(
            bytes <= MESSAGE_BYTES_MAX,
            "n={n}: the largest NEW-VIEW is {bytes} bytes, over {MESSAGE_BYTES_MAX}"
        );
    }
    // The size only grows with n: the largest set bounds them all.
    assert!(sizes.windows(2).all(|w| w[0].1 < w[1].1), "{sizes:?}");
    eprintln!("largest NEW-VIEW (n, bytes): {sizes:?}");
}
