//! Regression test from the fifth review (liveness): a new primary whose stable
//! checkpoint is above the view-change quorum's must still send its NEW-VIEW.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

#[test]
fn new_primary_above_the_quorum_checkpoint_still_sends_new_view() {
    let chain = ChainId::new("t").unwrap();
    let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
    let vs = ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
    let g = Digest(Hash::ZERO);
    let (p1, d1) = block(g, b"one");
    let (p2, d2) = block(d1, b"two");
    let (p3, d3) = block(d2, b"three");
    // prepared certs in view 0 (primary r0) for s1..s3
    let cert = |seq: u64, d: Digest, parent: Digest| {
        let pp = sign(
            &keys[0],
            0,
            &chain,
            PrePrepare {
                view: View(0),
                seq: SeqNum(seq),
                digest: d,
                parent,
            },
        );
        let prepares = [1u32, 2]
            .iter()
            .map(|&i| {
                sign(
                    &keys[i as usize],
                    i,
                    &chain,
                    Prepare {
                        view: View(0),
                        seq: SeqNum(seq),
                        digest: d,
                        parent,
                    },
                )
            })
            .collect();
        PreparedCertificate {
            pre_prepare: pp,
            prepares,
        }
    };
    let certs = vec![cert(1, d1, g), cert(2, d2, d1), cert(3, d3, d2)];
    let stable2 = CheckpointProof {
        seq: SeqNum(2),
        digest: d2,
        checkpoints: [0u32, 1, 2]
            .iter()
            .map(|&i| {
                sign(
                    &keys[i as usize],
                    i,
                    &chain,
                    Checkpoint {
                        seq: SeqNum(2),
                        digest: d2,
                    },
                )
            })
            .collect(),
    };
    let mut cfg = Config::new(ReplicaId(3), vs.clone(), g);
    cfg.checkpoint_interval = 2;
    cfg.window = 8;
    let record = SafetyRecord {
        view: View(3),
        low_watermark: SeqNum(2),
        ..Default::default()
    };
    let mut r3 = Replica::new(
        cfg,
        Keypair::from_seed_for_tests(3),
        Box::new(ParentFirst),
        Some(Restored {
            record,
            last_delivered: (SeqNum(2), d2),
            stable: stable2,
            payloads: vec![],
            delivered: vec![(SeqNum(1), d1)],
        }),
    );
    let o = r3.start();
    assert_eq!(r3.status(), Status::ViewChanging(View(3)));
    let _ = o;
    // r0, r1, r2 ask for view 3 with the genesis checkpoint (they missed checkpoint 2's messages).
    let mut all = vec![];
    for i in 0..3u32 {
        let vc = sign(
            &keys[i as usize],
            i,
            &chain,
            ViewChange {
                new_view: View(3),
                stable: CheckpointProof::genesis(g),
                prepared: certs.clone(),
                last_delivered: SeqNum(2),
            },
        );
        all.extend(r3.handle(Input::Message {
            from: ReplicaId(i),
            message: Message::ViewChange(vc),
        }));
    }
    // answer its fetches
    for (s, p) in [(1u64, p1.clone()), (2, p2.clone()), (3, p3.clone())] {
        all.extend(r3.handle(Input::Message {
            from: ReplicaId(0),
            message: Message::Payload {
                seq: SeqNum(s),
                payload: p,
            },
        }));
    }
    let sent_nv = all
        .iter()
        .any(|o| matches!(o, Output::Broadcast(Message::NewView { .. })));
    eprintln!("rejections: {:?}", r3.rejections());
    eprintln!("status: {:?}", r3.status());
    assert!(sent_nv, "primary never sends NEW-VIEW");
}
