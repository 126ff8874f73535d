//! Regression test from the fifth review (liveness): junk catch-up entries from a
//! Byzantine peer (real certificates, wrong payloads) must not shadow honest ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

#[test]
fn junk_catch_up_cannot_shadow_honest_catch_up() {
    let chain = ChainId::new("t").unwrap();
    let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
    let vs = ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
    let g = Digest(Hash::ZERO);
    let mut r3 = Replica::new(
        Config::new(ReplicaId(3), vs.clone(), g),
        Keypair::from_seed_for_tests(3),
        Box::new(ParentFirst),
        None,
    );
    let _ = r3.start();
    let cc = |seq: u64, d: Digest| CommitCertificate {
        view: View(0),
        seq: SeqNum(seq),
        digest: d,
        signatures: [0u32, 1, 2]
            .iter()
            .map(|&i| {
                (
                    ReplicaId(i),
                    sign(
                        &keys[i as usize],
                        i,
                        &chain,
                        Commit {
                            view: View(0),
                            seq: SeqNum(seq),
                            digest: d,
                        },
                    )
                    .signature,
                )
            })
            .collect(),
    };
    let mut parent = g;
    let mut blocks = vec![];
    for s in 1..=64u64 {
        let (p, d) = block(parent, format!("b{s}").as_bytes());
        blocks.push((s, p, d));
        parent = d;
    }
    // Byzantine r1 sends 63 valid certificates with 1 MiB junk payloads each.
    for (s, _, d) in &blocks[1..] {
        let _ = r3.handle(Input::Message {
            from: ReplicaId(1),
            message: Message::Certified {
                payload: vec![7u8; 1 << 20],
                certificate: cc(*s, *d),
            },
        });
    }
    // Honest r0 then sends the real ones (help_behind): all but s1 are dropped.
    let mut delivered = 0;
    for (s, p, d) in blocks[1..].iter().chain(blocks[..1].iter()) {
        let o = r3.handle(Input::Message {
            from: ReplicaId(0),
            message: Message::Certified {
                payload: p.clone(),
                certificate: cc(*s, *d),
            },
        });
        delivered += o
            .iter()
            .filter(|x| matches!(x, Output::Deliver { .. }))
            .count();
    }
    eprintln!(
        "delivered {delivered}, last {:?}, rejections {:?}",
        r3.last_delivered(),
        r3.rejections()
    );
    assert!(delivered >= 64, "honest catch-up was blocked by junk");
}
