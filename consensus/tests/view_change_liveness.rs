//! View changes that finish without waiting for a timer to move everyone on,
//! each driven by hand: a new primary whose stable checkpoint moved after it sent
//! its VIEW-CHANGE, and a re-issued payload whose fetch answer was lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

struct Net {
    chain: ChainId,
    keys: Vec<Keypair>,
    vs: ValidatorSet,
    blocks: Vec<(Vec<u8>, Digest)>,
}

impl Net {
    fn new() -> Self {
        let chain = ChainId::new("t").unwrap();
        let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
        let vs =
            ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
        let mut parent = Digest(Hash::ZERO);
        let mut blocks = Vec::new();
        for s in 1..=4u64 {
            let (p, d) = block(parent, format!("b{s}").as_bytes());
            blocks.push((p, d));
            parent = d;
        }
        Net {
            chain,
            keys,
            vs,
            blocks,
        }
    }

    fn digest(&self, seq: u64) -> Digest {
        if seq == 0 {
            Digest(Hash::ZERO)
        } else {
            self.blocks[seq as usize - 1].1
        }
    }

    /// Replica `id` with a window of 8 and checkpoints every 2.
    fn replica(&self, id: u32) -> Replica {
        let mut config = Config::new(ReplicaId(id), self.vs.clone(), Digest(Hash::ZERO));
        config.window = 8;
        config.checkpoint_interval = 2;
        let mut r = Replica::new(
            config,
            Keypair::from_seed_for_tests(id as u64),
            Box::new(ParentFirst),
            None,
        );
        let _ = r.start();
        r
    }

    fn commit_certificate(&self, seq: u64) -> CommitCertificate {
        let digest = self.digest(seq);
        let body = Commit {
            view: View(0),
            seq: SeqNum(seq),
            digest,
        };
        CommitCertificate {
            view: View(0),
            seq: SeqNum(seq),
            digest,
            signatures: [0u32, 1, 2]
                .iter()
                .map(|&i| {
                    (
                        ReplicaId(i),
                        sign(&self.keys[i as usize], i, &self.chain, body).signature,
                    )
                })
                .collect(),
        }
    }

    /// The certificate that `seq` prepared in view 0 (primary 0, backups 1 and 2).
    fn prepared(&self, seq: u64) -> PreparedCertificate {
        let pp = PrePrepare {
            view: View(0),
            seq: SeqNum(seq),
            digest: self.digest(seq),
            parent: self.digest(seq - 1),
        };
        PreparedCertificate {
            pre_prepare: sign(&self.keys[0], 0, &self.chain, pp),
            prepares: [1u32, 2]
                .iter()
                .map(|&i| {
                    sign(
                        &self.keys[i as usize],
                        i,
                        &self.chain,
                        Prepare {
                            view: pp.view,
                            seq: pp.seq,
                            digest: pp.digest,
                            parent: pp.parent,
                        },
                    )
                })
                .collect(),
        }
    }

    fn checkpoint(&self, from: u32, seq: u64) -> Message {
        Message::Checkpoint(sign(
            &self.keys[from as usize],
            from,
            &self.chain,
            Checkpoint {
                seq: SeqNum(seq),
                digest: self.digest(seq),
            },
        ))
    }

    /// Replica `from`'s VIEW-CHANGE for view 1 at the genesis checkpoint, with the
    /// certificates of heights `prepared`.
    fn view_change(&self, from: u32, prepared: &[u64], last_delivered: u64) -> Message {
        Message::ViewChange(sign(
            &self.keys[from as usize],
            from,
            &self.chain,
            ViewChange {
                new_view: View(1),
                stable: CheckpointProof::genesis(Digest(Hash::ZERO)),
                prepared: prepared.iter().map(|s| self.prepared(*s)).collect(),
                last_delivered: SeqNum(last_delivered),
            },
        ))
    }

    /// Delivers heights 1..=`to` to `r` through their commit certificates.
    fn deliver(&self, r: &mut Replica, to: u64) {
        for s in 1..=to {
            let out = feed(
                r,
                0,
                &[Message::Certified {
                    payload: self.blocks[s as usize - 1].0.clone(),
                    certificate: self.commit_certificate(s),
                }],
            );
            assert_eq!(delivered(&out), vec![(s, self.digest(s))]);
        }
    }

    /// `r`'s progress timer in view 0 fires: it asks for view 1.
    fn time_out(r: &mut Replica) -> Vec<Output> {
        let mut out = r.handle(Input::Pending(true));
        out.extend(r.handle(Input::Timeout(Timer::Progress { view: View(0) })));
        assert_eq!(r.status(), Status::ViewChanging(View(1)));
        out
    }
}

fn new_view_of(out: &[Output]) -> Option<Message> {
    out.iter().find_map(|o| match o {
        Output::Broadcast(m @ Message::NewView { .. }) => Some(m.clone()),
        _ => None,
    })
}

/// The new primary (replica 1) sends its VIEW-CHANGE at the genesis checkpoint,
/// then CHECKPOINTs of height 2 make height 2 stable and drop its payloads, then
/// the others' VIEW-CHANGEs (also at genesis, with certificates of heights 1 and
/// 2) complete the quorum. Built from its first VIEW-CHANGE, the NEW-VIEW would
/// re-issue heights below its low watermark, which it refuses to sign: no NEW-VIEW
/// until the view-change timer. It sends one at once, and a backup enters it.
#[test]
fn a_new_primary_whose_checkpoint_moved_still_sends_its_new_view() {
    let net = Net::new();
    let mut r1 = net.replica(1);
    net.deliver(&mut r1, 2);
    Net::time_out(&mut r1);
    for from in [0u32, 2] {
        feed(&mut r1, from, &[net.checkpoint(from, 2)]);
    }
    assert_eq!(r1.stable_checkpoint().seq, SeqNum(2), "height 2 is stable");
    let mut out = Vec::new();
    for from in [0u32, 2] {
        out.extend(feed(&mut r1, from, &[net.view_change(from, &[1, 2], 2)]));
    }
    // Payloads it asks for would come back from a holder; they do not help.
    for s in 1..=2u64 {
        out.extend(feed(
            &mut r1,
            0,
            &[Message::Payload {
                seq: SeqNum(s),
                payload: net.blocks[s as usize - 1].0.clone(),
            }],
        ));
    }
    let Some(new_view) = new_view_of(&out) else {
        panic!("the new primary sends no NEW-VIEW: {:?}", r1.rejections());
    };
    assert_eq!(r1.status(), Status::Normal);
    assert_eq!(r1.view(), View(1));
    let Message::NewView { new_view: nv, .. } = &new_view else {
        unreachable!()
    };
    assert!(
        nv.body
            .view_changes
            .iter()
            .any(|v| v.signer == ReplicaId(1) && v.body.stable.seq == SeqNum(2)),
        "its own VIEW-CHANGE in the NEW-VIEW is at its current checkpoint"
    );
    // A backup that asked for view 1 too enters it from this NEW-VIEW.
    let mut r3 = net.replica(3);
    net.deliver(&mut r3, 2);
    Net::time_out(&mut r3);
    feed(&mut r3, 1, &[new_view]);
    assert_eq!(
        (r3.status(), r3.view()),
        (Status::Normal, View(1)),
        "{:?}",
        r3.rejections()
    );
}

/// Replica 3 enters view 1 from a NEW-VIEW that re-issues height 1 without its
/// payload, which it lacks; the answers to its FETCH-PAYLOAD are lost. At the
/// next help period it asks again, one replica at a time and another each time,
/// and it votes once a payload comes back.
#[test]
fn a_lost_fetch_answer_is_asked_for_again() {
    let net = Net::new();
    let mut r3 = net.replica(3);
    Net::time_out(&mut r3);
    let view_changes: Vec<Signed<ViewChange>> = [0u32, 1, 2]
        .iter()
        .map(|&i| {
            let Message::ViewChange(vc) = net.view_change(i, &[1], 1) else {
                unreachable!()
            };
            vc
        })
        .collect();
    let reissued = sign(
        &net.keys[1],
        1,
        &net.chain,
        PrePrepare {
            view: View(1),
            seq: SeqNum(1),
            digest: net.digest(1),
            parent: net.digest(0),
        },
    );
    let new_view = sign(
        &net.keys[1],
        1,
        &net.chain,
        NewView::assemble(View(1), &view_changes, vec![reissued]),
    );
    let out = feed(
        &mut r3,
        1,
        &[Message::NewView {
            new_view,
            payloads: vec![None],
        }],
    );
    assert_eq!((r3.status(), r3.view()), (Status::Normal, View(1)));
    assert_eq!(
        kind(&messages_of(&out), "fetch-payload").len(),
        1,
        "{out:?}"
    );
    // Those answers are lost. Each help period asks one other replica again.
    let mut asked = Vec::new();
    for _ in 0..3 {
        let out = r3.handle(Input::Timeout(Timer::HelpPeriod));
        let to: Vec<ReplicaId> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    message: Message::FetchPayload { seq, digest },
                } if *seq == SeqNum(1) && *digest == net.digest(1) => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(to.len(), 1, "one replica is asked again: {out:?}");
        asked.push(to[0]);
    }
    asked.sort();
    assert_eq!(
        asked,
        vec![ReplicaId(0), ReplicaId(1), ReplicaId(2)],
        "another replica each time"
    );
    let out = feed(
        &mut r3,
        asked[0].0,
        &[Message::Payload {
            seq: SeqNum(1),
            payload: net.blocks[0].0.clone(),
        }],
    );
    assert!(
        kind(&messages_of(&out), "prepare")
            .iter()
            .any(|m| matches!(m, Message::Prepare(p) if p.body.view == View(1) && p.body.seq == SeqNum(1))),
        "it votes once the payload arrives: {out:?} {:?}",
        r3.rejections()
    );
    // Nothing is missing any more: nothing is asked again.
    let out = r3.handle(Input::Timeout(Timer::HelpPeriod));
    assert!(kind(&messages_of(&out), "fetch-payload").is_empty());
}
