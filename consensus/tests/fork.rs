//! Regression test from review: a Byzantine primary, a crash and restart, and the
//! "delivered parent" shortcut must not let honest replicas deliver a block whose
//! parent is not the block they delivered before it.
//!
//! n = 4, replica 0 (D) is a Byzantine primary of view 0; A = 1, B = 2, C = 3 honest.
//! 1. D sends p at s1 to A and B only; they prepare and commit; A delivers p.
//! 2. B crashes before delivering and restarts from its persisted record.
//! 3. D equivocates: X at s1 and Y (parent X) at s2, to B and C.
//! 4. B and C deliver p at s1 from the certificate (A, B before the crash, D).
//! 5. Prepares for Y arrive: nobody may become prepared on Y (its parent is X, not p),
//!    and nobody delivers Y.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

/// Payloads start with their parent's 32 digest bytes.
#[test]
fn restart_and_equivocation_cannot_break_the_chain() {
    let chain = ChainId::new("t").unwrap();
    let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
    let vs = ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
    let g = Digest(Hash::ZERO);
    let make = |i: u32, restored: Option<Restored>| {
        let mut r = Replica::new(
            Config::new(ReplicaId(i), vs.clone(), g),
            Keypair::from_seed_for_tests(i as u64),
            Box::new(ParentFirst),
            restored,
        );
        let _ = r.start();
        r
    };
    let (mut a, mut b, mut c) = (make(1, None), make(2, None), make(3, None));
    let (mut la, mut lb, mut lc) = (vec![], vec![], vec![]);
    let d = &keys[0];
    let v = View(0);
    let (pp_p, p) = block(g, b"p");
    let (pp_x, x) = block(g, b"x");
    let (pp_y, y) = block(x, b"y");
    let pre = |seq, digest, parent, payload: &Vec<u8>| Message::PrePrepare {
        pre_prepare: sign(
            d,
            0,
            &chain,
            PrePrepare {
                view: v,
                seq: SeqNum(seq),
                digest,
                parent,
            },
        ),
        payload: payload.clone(),
    };
    let commit = |k: &Keypair, id, seq, digest| {
        Message::Commit(sign(
            k,
            id,
            &chain,
            Commit {
                view: v,
                seq: SeqNum(seq),
                digest,
            },
        ))
    };

    // 1.
    let oa = feed_logged(&mut a, 0, &[pre(1, p, g, &pp_p)], &mut la);
    let ob = feed_logged(&mut b, 0, &[pre(1, p, g, &pp_p)], &mut lb);
    feed_logged(&mut a, 2, &messages_of(&ob), &mut la);
    feed_logged(&mut b, 1, &messages_of(&oa), &mut lb);
    let b_commit = messages_of(&lb)
        .into_iter()
        .find(|m| matches!(m, Message::Commit(_)))
        .unwrap();
    let a_commit = messages_of(&la)
        .into_iter()
        .find(|m| matches!(m, Message::Commit(_)))
        .unwrap();
    let b_record = lb
        .iter()
        .rev()
        .find_map(|o| {
            if let Output::Persist(r) = o {
                Some(r.clone())
            } else {
                None
            }
        })
        .unwrap();
    feed_logged(&mut a, 2, std::slice::from_ref(&b_commit), &mut la);
    feed_logged(&mut a, 0, &[commit(d, 0, 1, p)], &mut la);
    assert_eq!(a.last_delivered(), SeqNum(1));

    // 2.
    let restored = Restored {
        record: b_record,
        last_delivered: (SeqNum(0), g),
        stable: CheckpointProof::genesis(g),
        payloads: vec![(SeqNum(1), p, pp_p.clone())],
        delivered: vec![],
    };
    let mut b2 = make(2, Some(restored));
    let mut lb2 = vec![];

    // 3. B refuses X (it voted p at (v0, s1)) and so cannot build Y on it.
    let ob3 = feed_logged(
        &mut b2,
        0,
        &[pre(1, x, g, &pp_x), pre(2, y, x, &pp_y)],
        &mut lb2,
    );
    let oc = feed_logged(
        &mut c,
        0,
        &[pre(1, x, g, &pp_x), pre(2, y, x, &pp_y)],
        &mut lc,
    );
    let prepares_for_y = |out: &[Output]| -> Vec<Message> {
        messages_of(out)
            .into_iter()
            .filter(|m| matches!(m, Message::Prepare(pp) if pp.body.seq == SeqNum(2)))
            .collect()
    };
    assert!(
        prepares_for_y(&ob3).is_empty(),
        "restarted B must not vote for a child of the block it refused"
    );
    let c_prep_y = prepares_for_y(&oc);

    // 4.
    for (r, l) in [(&mut b2, &mut lb2), (&mut c, &mut lc)] {
        feed_logged(r, 1, std::slice::from_ref(&a_commit), l);
        feed_logged(r, 0, &[b_commit.clone(), commit(d, 0, 1, p)], l);
    }
    feed_logged(
        &mut c,
        1,
        &[Message::Payload {
            seq: SeqNum(1),
            payload: pp_p.clone(),
        }],
        &mut lc,
    );
    assert_eq!(b2.last_delivered(), SeqNum(1));
    assert_eq!(c.last_delivered(), SeqNum(1));

    // 5. Late prepares and D's commit for Y: no one becomes prepared, no one delivers Y.
    let ob4 = feed_logged(&mut b2, 3, &c_prep_y, &mut lb2);
    let extra = feed_logged(&mut b2, 0, &[pre(2, y, x, &pp_y)], &mut lb2);
    assert!(
        messages_of(&ob4)
            .iter()
            .chain(messages_of(&extra).iter())
            .all(|m| !matches!(m, Message::Commit(_)))
    );
    feed_logged(&mut b2, 0, &[commit(d, 0, 2, y)], &mut lb2);
    feed_logged(&mut c, 0, &[commit(d, 0, 2, y)], &mut lc);
    for (name, log) in [("A", &la), ("B", &lb2), ("C", &lc)] {
        assert_eq!(
            delivered(log),
            vec![(1, p)],
            "{name} must deliver p and nothing built on X"
        );
    }
    assert!(c.rejections().contains_key("wrong-parent") || !c_prep_y.is_empty());
}

/// Regression test from the second review: a Byzantine primary re-signs its
/// pre-prepare with a forged parent and pairs it with honest PREPAREs. If PREPAREs did
/// not sign the parent, that certificate would verify, and as the highest-view one in
/// a VIEW-CHANGE it would make NEW-VIEW cut the chain below a committed payload
/// (honest replicas then delivered different payloads at s1). PREPAREs now sign the
/// parent: the forged certificate fails, and a VIEW-CHANGE carrying it is refused.
#[test]
fn a_prepared_certificate_with_a_forged_parent_is_refused() {
    let chain = ChainId::new("t").unwrap();
    let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
    let vs = ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
    let g = Digest(Hash::ZERO);
    let make = |i: u32| {
        let mut r = Replica::new(
            Config::new(ReplicaId(i), vs.clone(), g),
            Keypair::from_seed_for_tests(i as u64),
            Box::new(ParentFirst),
            None,
        );
        let _ = r.start();
        r
    };
    let (mut b, mut c, mut d) = (make(1), make(2), make(3));
    let primary = &keys[0]; // Byzantine primary of view 0
    let (payload, p) = block(g, b"p");
    let honest = Message::PrePrepare {
        pre_prepare: sign(
            primary,
            0,
            &chain,
            PrePrepare {
                view: View(0),
                seq: SeqNum(1),
                digest: p,
                parent: g,
            },
        ),
        payload,
    };
    let mut prepares = Vec::new();
    for r in [&mut b, &mut c] {
        let out = r.handle(Input::Message {
            from: ReplicaId(0),
            message: honest.clone(),
        });
        for m in messages_of(&out) {
            if let Message::Prepare(prepare) = m {
                assert_eq!(prepare.body.parent, g, "the prepare vouches for the parent");
                prepares.push(prepare);
            }
        }
    }
    assert_eq!(prepares.len(), 2);
    let junk = Digest(Hash::of(b"junk"));
    let forged = PreparedCertificate {
        pre_prepare: sign(
            primary,
            0,
            &chain,
            PrePrepare {
                view: View(0),
                seq: SeqNum(1),
                digest: p,
                parent: junk,
            },
        ),
        prepares: prepares.clone(),
    };
    assert!(
        forged.verify(&vs).is_err(),
        "honest prepares must not vouch for another parent"
    );
    let genuine = PreparedCertificate {
        pre_prepare: sign(
            primary,
            0,
            &chain,
            PrePrepare {
                view: View(0),
                seq: SeqNum(1),
                digest: p,
                parent: g,
            },
        ),
        prepares,
    };
    assert!(genuine.verify(&vs).is_ok());

    let view_change = Message::ViewChange(sign(
        primary,
        0,
        &chain,
        ViewChange {
            new_view: View(1),
            stable: CheckpointProof::genesis(g),
            prepared: vec![forged],
            last_delivered: SeqNum(0),
        },
    ));
    let _ = d.handle(Input::Message {
        from: ReplicaId(0),
        message: view_change,
    });
    assert_eq!(d.rejections().get("bad-prepared-certificate"), Some(&1));
}
