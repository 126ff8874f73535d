//! Regression test from the fourth review: a replica that caught up (delivered d at
//! s1 from a later view's certificate) while still changing to an old view must
//! refuse that old view's NEW-VIEW, which re-issues another digest at s1, instead of
//! crashing on an assertion (and again after every restart).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

#[test]
fn a_stale_new_view_after_catch_up_is_refused_not_a_crash() {
    let chain = ChainId::new("t").unwrap();
    let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
    let vs = ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
    let g = Digest(Hash::ZERO);
    let make = |restored: Option<Restored>| {
        let mut r = Replica::new(
            Config::new(ReplicaId(3), vs.clone(), g),
            Keypair::from_seed_for_tests(3),
            Box::new(ParentFirst),
            restored,
        );
        let _ = r.start();
        r
    };
    // r3 = R (honest victim). r1 = X (Byzantine, primary of view 1). r0, r2 honest.
    let mut r3 = make(None);
    let mut durable = vec![];
    // View 0: r0 proposes d' at s1; r2, r3 PREPARE; only X collects the certificate.
    let (pay_dp, dp) = block(g, b"d-prime");
    let pp0 = sign(
        &keys[0],
        0,
        &chain,
        PrePrepare {
            view: View(0),
            seq: SeqNum(1),
            digest: dp,
            parent: g,
        },
    );
    let o = r3.handle(Input::Message {
        from: ReplicaId(0),
        message: Message::PrePrepare {
            pre_prepare: pp0.clone(),
            payload: pay_dp.clone(),
        },
    });
    durable.extend(o.clone());
    let prep3 = messages_of(&o)
        .into_iter()
        .find_map(|m| match m {
            Message::Prepare(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let prep2 = sign(
        &keys[2],
        2,
        &chain,
        Prepare {
            view: View(0),
            seq: SeqNum(1),
            digest: dp,
            parent: g,
        },
    );
    let cert = PreparedCertificate {
        pre_prepare: pp0,
        prepares: vec![prep2, prep3],
    };
    // R times out and asks for view 1 (it never gets the other VIEW-CHANGEs: no timer).
    durable.extend(r3.handle(Input::Pending(true)));
    durable.extend(r3.handle(Input::Timeout(Timer::Progress { view: View(0) })));
    assert_eq!(r3.status(), Status::ViewChanging(View(1)));
    // X builds a valid NEW-VIEW(1) from VCs of X (with the cert), r0, r2; holds it back.
    let vc = |i: u32, prepared: Vec<PreparedCertificate>| {
        sign(
            &keys[i as usize],
            i,
            &chain,
            ViewChange {
                new_view: View(1),
                stable: CheckpointProof::genesis(g),
                prepared,
                last_delivered: SeqNum(0),
            },
        )
    };
    let nv_pp = sign(
        &keys[1],
        1,
        &chain,
        PrePrepare {
            view: View(1),
            seq: SeqNum(1),
            digest: dp,
            parent: g,
        },
    );
    let nv1 = Message::NewView {
        new_view: sign(
            &keys[1],
            1,
            &chain,
            NewView::assemble(
                View(1),
                &[vc(0, vec![]), vc(1, vec![cert]), vc(2, vec![])],
                vec![nv_pp],
            ),
        ),
        payloads: vec![Some(pay_dp.clone())],
    };
    // r0, r2 time out of view 1 (no NEW-VIEW reached them); view 2 from r0, r2, X (X
    // omits its cert); primary r2 proposes d at s1; r0, r2, X commit it in view 2.
    let (pay_d, d) = block(g, b"d");
    let cc = CommitCertificate {
        view: View(2),
        seq: SeqNum(1),
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
                            view: View(2),
                            seq: SeqNum(1),
                            digest: d,
                        },
                    )
                    .signature,
                )
            })
            .collect(),
    };
    // R's retransmitted VIEW-CHANGE(1) reaches r0, which answers with help_behind.
    let o = r3.handle(Input::Message {
        from: ReplicaId(0),
        message: Message::Certified {
            payload: pay_d.clone(),
            certificate: cc,
        },
    });
    durable.extend(o.clone());
    assert!(
        o.iter()
            .any(|x| matches!(x, Output::Deliver { seq: SeqNum(1), .. })),
        "R delivered d at s1"
    );
    assert_eq!(r3.status(), Status::ViewChanging(View(1)));
    // Now the delayed NEW-VIEW(1) arrives.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r3.handle(Input::Message {
            from: ReplicaId(1),
            message: nv1.clone(),
        })
    }));
    assert!(res.is_ok(), "no panic");
    assert_eq!(r3.status(), Status::ViewChanging(View(1)));
    assert_eq!(
        r3.rejections().get("new-view-contradicts-delivered"),
        Some(&1)
    );
    // Restart from what was persisted: X replays the NEW-VIEW; still refused.
    let record = durable
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Persist(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    let mut r3 = make(Some(Restored {
        record,
        last_delivered: (SeqNum(1), d),
        stable: CheckpointProof::genesis(g),
        payloads: vec![(SeqNum(1), dp, pay_dp.clone())],
        delivered: vec![],
    }));
    assert_eq!(r3.status(), Status::ViewChanging(View(1)));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r3.handle(Input::Message {
            from: ReplicaId(1),
            message: nv1.clone(),
        })
    }));
    assert!(res.is_ok());
}
