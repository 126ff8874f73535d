//! Liveness and robustness holes, each driven by hand against one replica: parked
//! pre-prepares and chain-blocked slots are re-examined when their parent is
//! delivered, one sender cannot fill the catch-up budget for everyone, and repeated
//! requests do not multiply the help a replica sends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

struct Net {
    chain: ChainId,
    keys: Vec<Keypair>,
    vs: ValidatorSet,
}

impl Net {
    fn new() -> Self {
        let chain = ChainId::new("t").unwrap();
        let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
        let vs =
            ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
        Net { chain, keys, vs }
    }

    fn replica(&self, id: u32) -> Replica {
        let mut r = Replica::new(
            Config::new(ReplicaId(id), self.vs.clone(), Digest(Hash::ZERO)),
            Keypair::from_seed_for_tests(id as u64),
            Box::new(ParentFirst),
            None,
        );
        let _ = r.start();
        r
    }

    /// Replica `id` with a window of 8 and checkpoints every 4.
    fn small_window_replica(&self, id: u32) -> Replica {
        let mut config = Config::new(ReplicaId(id), self.vs.clone(), Digest(Hash::ZERO));
        config.window = 8;
        config.checkpoint_interval = 4;
        let mut r = Replica::new(
            config,
            Keypair::from_seed_for_tests(id as u64),
            Box::new(ParentFirst),
            None,
        );
        let _ = r.start();
        r
    }

    /// Like [`Self::small_window_replica`], with payloads of at most 1 MiB and 2 MiB
    /// of buffered payload bytes: a sender's even share (512 KiB) holds no maximal
    /// PRE-PREPARE.
    fn tight_replica(&self, id: u32) -> Replica {
        let mut config = Config::new(ReplicaId(id), self.vs.clone(), Digest(Hash::ZERO));
        config.window = 8;
        config.checkpoint_interval = 4;
        config.payload_bytes_max = 1 << 20;
        config.future_bytes_max = 2 << 20;
        let mut r = Replica::new(
            config,
            Keypair::from_seed_for_tests(id as u64),
            Box::new(ParentFirst),
            None,
        );
        let _ = r.start();
        r
    }

    fn pre_prepare(&self, seq: u64, parent: Digest, payload: &[u8], digest: Digest) -> Message {
        Message::PrePrepare {
            pre_prepare: sign(
                &self.keys[0],
                0,
                &self.chain,
                PrePrepare {
                    view: View(0),
                    seq: SeqNum(seq),
                    digest,
                    parent,
                },
            ),
            payload: payload.to_vec(),
        }
    }

    fn prepare(&self, from: u32, seq: u64, digest: Digest, parent: Digest) -> Message {
        Message::Prepare(sign(
            &self.keys[from as usize],
            from,
            &self.chain,
            Prepare {
                view: View(0),
                seq: SeqNum(seq),
                digest,
                parent,
            },
        ))
    }

    fn commit(&self, from: u32, seq: u64, digest: Digest) -> Message {
        Message::Commit(sign(
            &self.keys[from as usize],
            from,
            &self.chain,
            Commit {
                view: View(0),
                seq: SeqNum(seq),
                digest,
            },
        ))
    }

    fn certificate(&self, seq: u64, digest: Digest) -> CommitCertificate {
        CommitCertificate {
            view: View(0),
            seq: SeqNum(seq),
            digest,
            signatures: [0u32, 1, 2]
                .iter()
                .map(|&i| {
                    let body = Commit {
                        view: View(0),
                        seq: SeqNum(seq),
                        digest,
                    };
                    (
                        ReplicaId(i),
                        sign(&self.keys[i as usize], i, &self.chain, body).signature,
                    )
                })
                .collect(),
        }
    }

    /// A chain of `len` payloads from genesis: (payload, digest) at index seq - 1.
    fn blocks(len: u64) -> Vec<(Vec<u8>, Digest)> {
        let mut parent = Digest(Hash::ZERO);
        let mut out = Vec::new();
        for s in 1..=len {
            let (p, d) = block(parent, format!("b{s}").as_bytes());
            out.push((p, d));
            parent = d;
        }
        out
    }
}

fn sent(out: &[Output], kind_name: &str) -> Vec<Message> {
    kind(&messages_of(out), kind_name)
}

fn seqs_of_votes(ms: &[Message]) -> Vec<u64> {
    ms.iter()
        .filter_map(|m| match m {
            Message::Prepare(p) => Some(p.body.seq.0),
            Message::Commit(c) => Some(c.body.seq.0),
            _ => None,
        })
        .collect()
}

/// A pre-prepare parked because its parent's pre-prepare never arrived is taken up
/// as soon as the parent is delivered by catch-up: the replica votes for it instead
/// of waiting for the view to time out.
#[test]
fn a_parked_pre_prepare_is_examined_once_its_parent_is_delivered() {
    let net = Net::new();
    let blocks = Net::blocks(2);
    let mut r3 = net.replica(3);
    let out = feed(
        &mut r3,
        0,
        &[net.pre_prepare(2, blocks[0].1, &blocks[1].0, blocks[1].1)],
    );
    assert!(
        sent(&out, "prepare").is_empty(),
        "parked: its parent is unknown"
    );
    let out = feed(
        &mut r3,
        0,
        &[Message::Certified {
            payload: blocks[0].0.clone(),
            certificate: net.certificate(1, blocks[0].1),
        }],
    );
    assert_eq!(delivered(&out), vec![(1, blocks[0].1)]);
    assert_eq!(
        seqs_of_votes(&sent(&out, "prepare")),
        vec![2],
        "the parked pre-prepare for s2 is voted for once s1 is delivered"
    );
}

/// A slot whose prepares are complete but whose parent was never prepared here
/// (the chaining rule blocks it) becomes prepared when the parent is delivered
/// through its commit certificate.
#[test]
fn a_slot_blocked_on_its_parent_is_prepared_once_the_parent_commits() {
    let net = Net::new();
    let blocks = Net::blocks(2);
    let g = Digest(Hash::ZERO);
    let mut r3 = net.replica(3);
    let out = feed(
        &mut r3,
        0,
        &[
            net.pre_prepare(1, g, &blocks[0].0, blocks[0].1),
            net.pre_prepare(2, blocks[0].1, &blocks[1].0, blocks[1].1),
        ],
    );
    assert_eq!(seqs_of_votes(&sent(&out, "prepare")), vec![1, 2]);
    // s2 has its 2f prepares; s1 has none (they were lost).
    let mut out = feed(&mut r3, 1, &[net.prepare(1, 2, blocks[1].1, blocks[0].1)]);
    out.extend(feed(
        &mut r3,
        2,
        &[net.prepare(2, 2, blocks[1].1, blocks[0].1)],
    ));
    assert!(sent(&out, "commit").is_empty(), "s1 is not prepared yet");
    // s1 commits through the others' COMMITs.
    let mut out = Vec::new();
    for from in [0u32, 1, 2] {
        out.extend(feed(&mut r3, from, &[net.commit(from, 1, blocks[0].1)]));
    }
    assert_eq!(delivered(&out), vec![(1, blocks[0].1)]);
    assert_eq!(
        seqs_of_votes(&sent(&out, "commit")),
        vec![2],
        "s2 is prepared once its parent is delivered"
    );
}

/// One validator with real certificates and oversized junk payloads for the next
/// heights must not use up the catch-up budget that honest senders need.
#[test]
fn one_sender_cannot_fill_the_catch_up_budget_for_everyone() {
    let net = Net::new();
    let blocks = Net::blocks(64);
    let mut r3 = net.replica(3);
    // 62 junk payloads of 1 MiB and one of 2 MiB: exactly the 64 MiB budget.
    for (i, (_, d)) in blocks.iter().enumerate().skip(1) {
        let size = if i == 63 { 2 << 20 } else { 1 << 20 };
        let _ = feed(
            &mut r3,
            1,
            &[Message::Certified {
                payload: vec![7u8; size],
                certificate: net.certificate(i as u64 + 1, *d),
            }],
        );
    }
    let out = feed(
        &mut r3,
        0,
        &[Message::Certified {
            payload: blocks[0].0.clone(),
            certificate: net.certificate(1, blocks[0].1),
        }],
    );
    assert_eq!(
        delivered(&out),
        vec![(1, blocks[0].1)],
        "the honest answer for the very next height is taken: {:?}",
        r3.rejections()
    );
}

/// A lagging replica's VIEW-CHANGE, repeated (a retransmission or a replay), makes a
/// replica ahead of it send what it delivered once, not once per copy; and repeated
/// FETCH-PAYLOADs are not answered with a payload each.
#[test]
fn repeated_requests_do_not_multiply_help() {
    let net = Net::new();
    let blocks = Net::blocks(10);
    let mut r2 = net.replica(2);
    for (i, (p, d)) in blocks.iter().enumerate() {
        let out = feed(
            &mut r2,
            0,
            &[Message::Certified {
                payload: p.clone(),
                certificate: net.certificate(i as u64 + 1, *d),
            }],
        );
        assert_eq!(delivered(&out).len(), 1);
    }
    let vc = Message::ViewChange(sign(
        &net.keys[3],
        3,
        &net.chain,
        ViewChange {
            new_view: View(1),
            stable: CheckpointProof::genesis(Digest(Hash::ZERO)),
            prepared: Vec::new(),
            last_delivered: SeqNum(0),
        },
    ));
    let mut certified = 0;
    for _ in 0..20 {
        certified += sent(&feed(&mut r2, 3, std::slice::from_ref(&vc)), "certified").len();
    }
    assert!(
        certified <= blocks.len(),
        "20 copies of one view change made {certified} certified sends for {} blocks",
        blocks.len()
    );
    let fetch = Message::FetchPayload {
        seq: SeqNum(10),
        digest: blocks[9].1,
    };
    let mut answers = 0;
    for _ in 0..50 {
        answers += sent(&feed(&mut r2, 3, std::slice::from_ref(&fetch)), "payload").len();
    }
    assert!(
        answers <= 1,
        "50 copies of one fetch were answered {answers} times"
    );
}

/// The primary proposes the first height above a backup's window when its own
/// window has moved but the backup has not seen 2f+1 CHECKPOINTs yet (commits
/// outran them). The backup keeps the PRE-PREPARE and votes for it as soon as the
/// checkpoint is stable, instead of dropping it and leaving the height one vote
/// short until the view times out.
#[test]
fn a_pre_prepare_just_above_the_window_is_voted_for_once_the_window_moves() {
    let net = Net::new();
    let blocks = Net::blocks(9);
    let mut r3 = net.small_window_replica(3);
    for s in 1..=8u64 {
        let (payload, digest) = &blocks[s as usize - 1];
        let out = feed(
            &mut r3,
            0,
            &[Message::Certified {
                payload: payload.clone(),
                certificate: net.certificate(s, *digest),
            }],
        );
        assert_eq!(delivered(&out), vec![(s, *digest)]);
    }
    let out = feed(
        &mut r3,
        0,
        &[net.pre_prepare(9, blocks[7].1, &blocks[8].0, blocks[8].1)],
    );
    assert!(
        sent(&out, "prepare").is_empty(),
        "s9 is above the window until s8 is a stable checkpoint"
    );
    // The others' votes for s9 arrive before the checkpoint too.
    let (d9, p8) = (blocks[8].1, blocks[7].1);
    for from in [1u32, 2] {
        assert!(feed(&mut r3, from, &[net.prepare(from, 9, d9, p8)]).is_empty());
    }
    for from in [0u32, 1] {
        assert!(feed(&mut r3, from, &[net.commit(from, 9, d9)]).is_empty());
    }
    // Up to a full window above the window is kept; beyond it, refused.
    feed(&mut r3, 2, &[net.prepare(2, 16, d9, p8)]);
    assert_eq!(r3.rejections().get("out-of-window"), None);
    let refused = feed(&mut r3, 2, &[net.prepare(2, 17, d9, p8)]);
    assert_eq!(r3.rejections().get("out-of-window"), Some(&1));
    assert!(
        matches!(
            &refused[..],
            [Output::Refused {
                from: Some(ReplicaId(2)),
                reason: "out-of-window"
            }]
        ),
        "the refusal comes back as data naming its sender: {refused:?}"
    );
    let mut out = Vec::new();
    for from in [0u32, 1] {
        let checkpoint = Message::Checkpoint(sign(
            &net.keys[from as usize],
            from,
            &net.chain,
            Checkpoint {
                seq: SeqNum(8),
                digest: blocks[7].1,
            },
        ));
        out.extend(feed(&mut r3, from, &[checkpoint]));
    }
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::CheckpointStable(p) if p.seq == SeqNum(8))),
        "s8 is stable"
    );
    assert_eq!(
        seqs_of_votes(&sent(&out, "prepare")),
        vec![9],
        "the kept PRE-PREPARE for s9 is voted for once the window moves"
    );
    assert_eq!(
        delivered(&out),
        vec![(9, d9)],
        "the kept PREPAREs and COMMITs complete s9"
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Refused { .. })),
        "nothing kept above the window is refused when it is fed again"
    );
}

/// Each sender's share of the messages kept above the window is bounded.
#[test]
fn one_sender_cannot_keep_more_than_its_share_above_the_window() {
    let net = Net::new();
    let mut r3 = net.small_window_replica(3);
    let g = Digest(Hash::ZERO);
    // Three kinds of vote per height, for the 8 heights above the window: 24.
    let mut kept = 0;
    for seq in 9..=16u64 {
        for tag in 0..4u8 {
            let digest = Digest(Hash::of(&[seq as u8, tag]));
            feed(&mut r3, 1, &[net.prepare(1, seq, digest, g)]);
            kept += 1;
        }
    }
    assert_eq!(kept, 32);
    assert_eq!(r3.rejections().get("ahead-buffer-full"), Some(&8));
    feed(&mut r3, 2, &[net.prepare(2, 9, g, g)]);
    assert_eq!(
        r3.rejections().get("ahead-buffer-full"),
        Some(&8),
        "another sender still has room"
    );
    feed(&mut r3, 2, &[net.prepare(2, 9, g, g)]);
    assert_eq!(r3.rejections().get("ahead-duplicate"), Some(&1));
}

/// A reconnection tells only a replica changing view to send its VIEW-CHANGE, and
/// only to another validator.
#[test]
fn a_reconnection_resends_the_view_change_to_that_peer_only() {
    let net = Net::new();
    let mut r3 = net.replica(3);
    assert!(
        r3.handle(Input::Reconnected { peer: ReplicaId(1) })
            .is_empty(),
        "normal: nothing to say"
    );
    let _ = r3.handle(Input::Pending(true));
    let mut out = Vec::new();
    for _ in 0..3 {
        out = r3.handle(Input::Timeout(Timer::Progress { view: View(0) }));
        if r3.status() != Status::Normal {
            break;
        }
    }
    assert_eq!(r3.status(), Status::ViewChanging(View(1)), "{out:?}");
    for peer in [3u32, 9] {
        assert!(
            r3.handle(Input::Reconnected {
                peer: ReplicaId(peer)
            })
            .is_empty(),
            "never to itself or a stranger ({peer})"
        );
    }
    let out = r3.handle(Input::Reconnected { peer: ReplicaId(1) });
    assert!(
        matches!(&out[..], [Output::Send { to: ReplicaId(1), message: Message::ViewChange(vc) }] if vc.body.new_view == View(1)),
        "{out:?}"
    );
}

/// A payload of `len` bytes extending `parent`, and its digest.
fn large_block(parent: Digest, len: usize) -> (Vec<u8>, Digest) {
    let (mut payload, _) = block(parent, b"large");
    payload.resize(len, 0x5a);
    let digest = Digest(Hash::of(&payload));
    (payload, digest)
}

/// The primary's PRE-PREPARE of a maximal payload just above a backup's window is
/// kept (its share of the buffer's bytes is all of them: only it sends
/// PRE-PREPAREs) and voted for once the window moves.
#[test]
fn a_maximal_pre_prepare_just_above_the_window_is_kept() {
    let net = Net::new();
    let blocks = Net::blocks(8);
    let mut r3 = net.tight_replica(3);
    for s in 1..=8u64 {
        let (payload, digest) = &blocks[s as usize - 1];
        let out = feed(
            &mut r3,
            0,
            &[Message::Certified {
                payload: payload.clone(),
                certificate: net.certificate(s, *digest),
            }],
        );
        assert_eq!(delivered(&out), vec![(s, *digest)]);
    }
    // Two maximal PRE-PREPAREs fill the 2 MiB exactly and are kept; a third is
    // past the primary's share.
    let (payload, d9) = large_block(blocks[7].1, 1 << 20);
    let (payload10, d10) = large_block(d9, 1 << 20);
    let (payload11, d11) = large_block(d10, 1 << 20);
    let out = feed(
        &mut r3,
        0,
        &[
            net.pre_prepare(9, blocks[7].1, &payload, d9),
            net.pre_prepare(10, d9, &payload10, d10),
        ],
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Refused { .. })),
        "maximal PRE-PREPAREs of the primary are kept above the window: {:?}",
        r3.rejections()
    );
    let out = feed(&mut r3, 0, &[net.pre_prepare(11, d10, &payload11, d11)]);
    assert!(
        matches!(
            &out[..],
            [Output::Refused {
                reason: "ahead-buffer-full",
                ..
            }]
        ),
        "{out:?}"
    );
    let mut out = Vec::new();
    for from in [0u32, 1] {
        let checkpoint = Message::Checkpoint(sign(
            &net.keys[from as usize],
            from,
            &net.chain,
            Checkpoint {
                seq: SeqNum(8),
                digest: blocks[7].1,
            },
        ));
        out.extend(feed(&mut r3, from, &[checkpoint]));
    }
    assert_eq!(
        seqs_of_votes(&sent(&out, "prepare")),
        vec![9, 10],
        "the kept PRE-PREPAREs are voted for once the window moves"
    );
}

/// Above the window, a message past its sender's share is refused before its
/// signature is checked (a flood of them costs no verification), and a
/// PRE-PREPARE relayed by another replica than its signer is not kept.
#[test]
fn above_the_window_the_cheap_checks_come_before_the_signature() {
    let net = Net::new();
    let mut r3 = net.small_window_replica(3);
    let g = Digest(Hash::ZERO);
    for seq in 9..=16u64 {
        for tag in 0..3u8 {
            let digest = Digest(Hash::of(&[seq as u8, tag]));
            feed(&mut r3, 1, &[net.prepare(1, seq, digest, g)]);
        }
    }
    assert_eq!(r3.rejections().get("ahead-buffer-full"), None, "24 fit");
    let Message::Prepare(mut forged) = net.prepare(1, 10, Digest(Hash::of(b"x")), g) else {
        unreachable!()
    };
    forged.signature = net.keys[2].sign(
        mosaic_crypto::Domain::Prepare,
        &net.chain,
        b"something else",
    );
    let out = feed(&mut r3, 1, &[Message::Prepare(forged)]);
    assert!(
        matches!(
            &out[..],
            [Output::Refused {
                from: Some(ReplicaId(1)),
                reason: "ahead-buffer-full"
            }]
        ),
        "refused for the share, without a signature check: {out:?}"
    );
    assert_eq!(r3.rejections().get("bad-signature"), None);
    let (payload, digest) = block(g, b"relayed");
    let out = feed(&mut r3, 2, &[net.pre_prepare(12, g, &payload, digest)]);
    assert!(
        matches!(
            &out[..],
            [Output::Refused {
                from: Some(ReplicaId(2)),
                reason: "ahead-relayed"
            }]
        ),
        "{out:?}"
    );
}

/// PRE-PREPAREs parked for a missing parent hold at most the buffered-bytes bound
/// of payload, not a window of maximal payloads.
#[test]
fn parked_pre_prepares_are_bounded_in_bytes() {
    let net = Net::new();
    let mut r3 = net.tight_replica(3);
    // Height 1 is missing: 2..=8 wait for their parent.
    let mut parent = Digest(Hash::of(b"unknown parent of 2"));
    for seq in 2..=8u64 {
        let (payload, digest) = large_block(parent, 900 * 1024);
        feed(
            &mut r3,
            0,
            &[net.pre_prepare(seq, parent, &payload, digest)],
        );
        parent = digest;
    }
    assert_eq!(
        r3.rejections().get("waiting-buffer-full"),
        Some(&5),
        "two payloads of 900 KiB fit 2 MiB, the other five do not"
    );
}
