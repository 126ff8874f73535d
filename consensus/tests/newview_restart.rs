//! Regression test from the third review: a replica that crashed after persisting
//! "entered view t" but before its PREPAREs for the NEW-VIEW's re-issued pre-prepares
//! used to forget them; a Byzantine primary of t then re-proposed another payload at
//! a committed sequence number and f+1 such replicas committed it (a fork). Entering
//! a view now records the re-issued entries in the same persisted record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

#[test]
fn restart_inside_enter_view_still_binds_the_reissued_entries() {
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
    // r0 honest primary of view 0; r1 = P, Byzantine, primary of view 1; r2, r3 honest.
    let (mut r0, mut r2, mut r3) = (make(0, None), make(2, None), make(3, None));
    let p = &keys[1];

    // View 0: r0 proposes d at s1; everybody prepares; only r0 sees the commits.
    let (pay_d, d) = block(g, b"d");
    let o0 = r0.handle(Input::Propose {
        seq: SeqNum(1),
        parent: g,
        payload: pay_d.clone(),
    });
    let pp0 = kind(&messages_of(&o0), "pre-prepare");
    let o2 = feed(&mut r2, 0, &pp0);
    let o3 = feed(&mut r3, 0, &pp0);
    let (prep2, prep3) = (
        kind(&messages_of(&o2), "prepare"),
        kind(&messages_of(&o3), "prepare"),
    );
    let mut log0 = feed(&mut r0, 2, &prep2);
    log0.extend(feed(&mut r0, 3, &prep3));
    let a2 = feed(&mut r2, 3, &prep3);
    let a3 = feed(&mut r3, 2, &prep2);
    let c2 = kind(&messages_of(&a2), "commit");
    let c3 = kind(&messages_of(&a3), "commit");
    assert_eq!((c2.len(), c3.len()), (1, 1), "r2, r3 prepared d in view 0");
    let mut all_r2_out = o2.clone();
    all_r2_out.extend(a2.clone());
    let mut all_r3_out = o3.clone();
    all_r3_out.extend(a3.clone());
    log0.extend(feed(&mut r0, 2, &c2));
    log0.extend(feed(&mut r0, 3, &c3));
    assert_eq!(delivered(&log0), vec![(1, d)], "r0 delivered d at s1");
    // (commits to r2 and r3 are lost)

    // View change to 1: r2 and r3 time out; P collects VCs from r2, r3 and itself.
    let mut vcs = vec![];
    for (r, all) in [(&mut r2, &mut all_r2_out), (&mut r3, &mut all_r3_out)] {
        all.extend(r.handle(Input::Pending(true)));
        let o = r.handle(Input::Timeout(Timer::Progress { view: View(0) }));
        all.extend(o.clone());
        for m in kind(&messages_of(&o), "view-change") {
            if let Message::ViewChange(vc) = m {
                assert_eq!(
                    vc.body.prepared.len(),
                    1,
                    "carries its cert for (v0, s1, d)"
                );
                vcs.push(vc);
            }
        }
    }
    let own = sign(
        p,
        1,
        &chain,
        ViewChange {
            new_view: View(1),
            stable: CheckpointProof::genesis(g),
            prepared: vec![],
            last_delivered: SeqNum(0),
        },
    );
    vcs.sort_by_key(|v| v.signer);
    vcs.insert(0, own);
    // select() gives the chain [(s1, d, parent g)]: P re-issues it honestly.
    let nv_pp = sign(
        p,
        1,
        &chain,
        PrePrepare {
            view: View(1),
            seq: SeqNum(1),
            digest: d,
            parent: g,
        },
    );
    let new_view = Message::NewView {
        new_view: sign(p, 1, &chain, NewView::assemble(View(1), &vcs, vec![nv_pp])),
        payloads: vec![Some(pay_d.clone())],
    };

    // r2 and r3 enter view 1 and crash right after the Persist of "entered", before
    // the Persist of their PREPARE for the re-issued (v1, s1, d).
    let mut restored = vec![];
    for (id, r, all) in [(2u32, &mut r2, &all_r2_out), (3u32, &mut r3, &all_r3_out)] {
        let out = feed(r, 1, std::slice::from_ref(&new_view));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::EnteredView { view: View(1), .. })),
            "r{id} accepts the NEW-VIEW"
        );
        // Cut right after the Persist that records "entered view 1".
        let cut = 1 + out
            .iter()
            .position(|o| matches!(o, Output::Persist(r) if r.entered == View(1)))
            .expect("entering is persisted");
        let durable: Vec<&Output> = all.iter().chain(out[..cut].iter()).collect();
        let record = durable
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Persist(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(record.entered, View(1));
        restored.push((
            id,
            Restored {
                record,
                last_delivered: (SeqNum(0), g),
                stable: CheckpointProof::genesis(g),
                payloads: vec![(SeqNum(1), d, pay_d.clone())],
                delivered: vec![],
            },
        ));
    }
    let mut r2 = make(2, Some(restored[0].1.clone()));
    let mut r3 = make(3, Some(restored[1].1.clone()));
    assert_eq!(r2.view(), View(1));
    assert_eq!(r2.status(), Status::Normal);

    // P sends a fresh pre-prepare at s1 in view 1 with another payload.
    let (pay_e, e) = block(g, b"evil");
    let evil = Message::PrePrepare {
        pre_prepare: sign(
            p,
            1,
            &chain,
            PrePrepare {
                view: View(1),
                seq: SeqNum(1),
                digest: e,
                parent: g,
            },
        ),
        payload: pay_e,
    };
    let mut log2 = feed(&mut r2, 1, std::slice::from_ref(&evil));
    let mut log3 = feed(&mut r3, 1, std::slice::from_ref(&evil));
    let (pe2, pe3) = (
        kind(&messages_of(&log2), "prepare"),
        kind(&messages_of(&log3), "prepare"),
    );
    assert_eq!(
        (pe2.len(), pe3.len()),
        (0, 0),
        "the re-issued (v1, s1, d) was recorded with 'entered': no vote for e"
    );
    let p_commit = Message::Commit(sign(
        p,
        1,
        &chain,
        Commit {
            view: View(1),
            seq: SeqNum(1),
            digest: e,
        },
    ));
    log2.extend(feed(&mut r2, 1, std::slice::from_ref(&p_commit)));
    log3.extend(feed(&mut r3, 1, std::slice::from_ref(&p_commit)));
    assert!(delivered(&log2).is_empty() && delivered(&log3).is_empty());
    assert_ne!(d, e);
}
