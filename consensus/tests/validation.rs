//! Table-driven checks of message validation: each bad input is dropped, counted
//! under its reason, and produces no vote.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use mosaic_consensus::{
    Checkpoint, Config, Digest, Input, Message, Output, PayloadCheck, PrePrepare, Prepare, Replica,
    ReplicaId, SeqNum, Signed, ValidatorSet, View,
};
use mosaic_crypto::{ChainId, Hash, Keypair, Signature};

/// Payloads are "seq:parent-hex:anything"; the digest is their hash.
struct TestCheck;

impl PayloadCheck for TestCheck {
    fn check(&self, seq: SeqNum, parent: Digest, payload: &[u8]) -> Result<Digest, String> {
        let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        let mut parts = text.splitn(3, ':');
        let ok =
            parts.next() == Some(&seq.0.to_string()) && parts.next() == Some(&parent.0.to_string());
        if ok {
            Ok(Digest(Hash::of(payload)))
        } else {
            Err("wrong position".into())
        }
    }
}

const N: usize = 4;

fn keys() -> Vec<Keypair> {
    (0..N as u64).map(Keypair::from_seed_for_tests).collect()
}

fn validators() -> ValidatorSet {
    ValidatorSet::new(
        ChainId::new("table").unwrap(),
        keys().iter().map(|k| k.public()).collect(),
    )
    .unwrap()
}

fn genesis() -> Digest {
    Digest(Hash::ZERO)
}

fn backup() -> Replica {
    let mut config = Config::new(ReplicaId(1), validators(), genesis());
    config.payload_bytes_max = 1024;
    config.window = 8;
    config.checkpoint_interval = 4;
    let mut r = Replica::new(
        config,
        Keypair::from_seed_for_tests(1),
        Box::new(TestCheck),
        None,
    );
    let _ = r.start();
    r
}

fn sign<T: mosaic_consensus::messages::Body>(signer: u32, body: T) -> Signed<T> {
    let bytes = Signed::signing_bytes(&body).unwrap();
    let signature = keys()[signer as usize].sign(T::DOMAIN, validators().chain(), &bytes);
    Signed {
        body,
        signer: ReplicaId(signer),
        signature,
    }
}

fn payload(seq: u64, parent: Digest, extra: &str) -> Vec<u8> {
    format!("{seq}:{}:{extra}", parent.0).into_bytes()
}

fn pre_prepare(signer: u32, view: u64, seq: u64, parent: Digest, extra: &str) -> Message {
    let payload = payload(seq, parent, extra);
    let body = PrePrepare {
        view: View(view),
        seq: SeqNum(seq),
        digest: Digest(Hash::of(&payload)),
        parent,
    };
    Message::PrePrepare {
        pre_prepare: sign(signer, body),
        payload,
    }
}

fn votes(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Broadcast(_) | Output::Send { .. }))
        .count()
}

#[test]
fn a_valid_pre_prepare_is_persisted_then_voted_for() {
    let mut r = backup();
    let out = r.handle(Input::Message {
        from: ReplicaId(0),
        message: pre_prepare(0, 0, 1, genesis(), "a"),
    });
    assert!(
        matches!(out[0], Output::PersistPayload { .. }),
        "the payload is durable first: {out:?}"
    );
    assert!(
        matches!(out[1], Output::Persist(_)),
        "then the vote record: {out:?}"
    );
    assert!(matches!(&out[2], Output::Broadcast(Message::Prepare(p)) if p.body.seq == SeqNum(1)));
    assert!(r.rejections().is_empty());
}

#[test]
fn invalid_messages_are_dropped_with_a_reason() {
    let mut bad_signature = pre_prepare(0, 0, 1, genesis(), "a");
    if let Message::PrePrepare { pre_prepare, .. } = &mut bad_signature {
        pre_prepare.signature = Signature::from_bytes([1; 64]);
    }
    let mut wrong_digest = pre_prepare(0, 0, 1, genesis(), "a");
    if let Message::PrePrepare { payload: bytes, .. } = &mut wrong_digest {
        *bytes = payload(1, genesis(), "b");
    }
    let too_big = {
        let payload = payload(1, genesis(), &"x".repeat(2000));
        let body = PrePrepare {
            view: View(0),
            seq: SeqNum(1),
            digest: Digest(Hash::of(&payload)),
            parent: genesis(),
        };
        Message::PrePrepare {
            pre_prepare: sign(0, body),
            payload,
        }
    };
    let prepare_from_primary = Message::Prepare(sign(
        0,
        Prepare {
            view: View(0),
            seq: SeqNum(1),
            digest: genesis(),
            parent: genesis(),
        },
    ));
    let cross_domain = {
        // A PREPARE signature presented as a COMMIT must not verify.
        let p = sign(
            2,
            Prepare {
                view: View(0),
                seq: SeqNum(1),
                digest: genesis(),
                parent: genesis(),
            },
        );
        let c = mosaic_consensus::Commit {
            view: View(0),
            seq: SeqNum(1),
            digest: genesis(),
        };
        Message::Commit(Signed {
            body: c,
            signer: ReplicaId(2),
            signature: p.signature,
        })
    };
    let stale_checkpoint = Message::Checkpoint(sign(
        2,
        Checkpoint {
            seq: SeqNum(3),
            digest: genesis(),
        },
    ));

    let table: Vec<(&str, ReplicaId, Message, &str)> = vec![
        (
            "sender outside the set",
            ReplicaId(9),
            pre_prepare(0, 0, 1, genesis(), "a"),
            "unknown-sender",
        ),
        (
            "pre-prepare from a backup",
            ReplicaId(2),
            pre_prepare(2, 0, 1, genesis(), "a"),
            "pre-prepare-not-from-primary",
        ),
        (
            "bad signature",
            ReplicaId(0),
            bad_signature,
            "bad-signature",
        ),
        (
            "more than a window beyond the window",
            ReplicaId(0),
            pre_prepare(0, 0, 17, genesis(), "a"),
            "out-of-window",
        ),
        (
            "sequence zero",
            ReplicaId(0),
            pre_prepare(0, 0, 0, genesis(), "a"),
            "out-of-window",
        ),
        (
            "oversized payload",
            ReplicaId(0),
            too_big,
            "oversized-payload",
        ),
        (
            "payload does not match digest",
            ReplicaId(0),
            wrong_digest,
            "invalid-payload",
        ),
        (
            "wrong parent",
            ReplicaId(0),
            pre_prepare(0, 0, 1, Digest(Hash::of(b"x")), "a"),
            "wrong-parent",
        ),
        (
            "prepare from the primary",
            ReplicaId(0),
            prepare_from_primary,
            "prepare-from-primary",
        ),
        (
            "signature of another kind",
            ReplicaId(2),
            cross_domain,
            "bad-signature",
        ),
        (
            "checkpoint off the interval",
            ReplicaId(2),
            stale_checkpoint,
            "stale-checkpoint",
        ),
        (
            "unrequested payload",
            ReplicaId(2),
            Message::Payload {
                seq: SeqNum(1),
                payload: vec![1],
            },
            "unrequested-payload",
        ),
    ];
    for (story, from, message, reason) in table {
        let mut r = backup();
        let out = r.handle(Input::Message { from, message });
        assert_eq!(votes(&out), 0, "{story}: no vote may follow, got {out:?}");
        assert_eq!(
            r.rejections().get(reason),
            Some(&1),
            "{story}: expected reason {reason}, got {:?}",
            r.rejections()
        );
    }
}

#[test]
fn a_second_digest_at_the_same_view_and_seq_is_refused() {
    let mut r = backup();
    let first = r.handle(Input::Message {
        from: ReplicaId(0),
        message: pre_prepare(0, 0, 1, genesis(), "a"),
    });
    assert_eq!(votes(&first), 1);
    let second = r.handle(Input::Message {
        from: ReplicaId(0),
        message: pre_prepare(0, 0, 1, genesis(), "b"),
    });
    assert_eq!(votes(&second), 0);
    assert_eq!(r.rejections().get("conflicting-pre-prepare"), Some(&1));
}

#[test]
fn future_view_messages_are_buffered_not_rejected() {
    let mut r = backup();
    let out = r.handle(Input::Message {
        from: ReplicaId(1),
        message: pre_prepare(1, 1, 1, genesis(), "a"),
    });
    assert_eq!(votes(&out), 0, "view 1 is not entered yet");
    assert!(r.rejections().is_empty(), "buffered, not rejected");
}

#[test]
fn an_out_of_order_pre_prepare_waits_for_its_parent() {
    let mut r = backup();
    let p1 = payload(1, genesis(), "a");
    let d1 = Digest(Hash::of(&p1));
    let out = r.handle(Input::Message {
        from: ReplicaId(0),
        message: pre_prepare(0, 0, 2, d1, "b"),
    });
    assert_eq!(votes(&out), 0, "parent unknown: parked");
    let out = r.handle(Input::Message {
        from: ReplicaId(0),
        message: pre_prepare(0, 0, 1, genesis(), "a"),
    });
    assert_eq!(
        votes(&out),
        2,
        "both prepared-for once the parent arrives: {out:?}"
    );
}

/// A VIEW-CHANGE is refused if any certificate it carries is of the view being
/// moved to (or later), at or below its stable checkpoint, past the window above
/// it, or a second one for a height: each alone, with every signature valid.
#[test]
fn a_view_change_with_a_misplaced_certificate_is_refused() {
    use mosaic_consensus::{CheckpointProof, PreparedCertificate, ViewChange};
    let cert = |view: u64, seq: u64| {
        let parent = genesis();
        let digest = Digest(Hash::of(format!("{view}/{seq}").as_bytes()));
        let primary = view as u32 % N as u32;
        let body = Prepare {
            view: View(view),
            seq: SeqNum(seq),
            digest,
            parent,
        };
        PreparedCertificate {
            pre_prepare: sign(
                primary,
                PrePrepare {
                    view: View(view),
                    seq: SeqNum(seq),
                    digest,
                    parent,
                },
            ),
            prepares: (0..N as u32)
                .filter(|i| *i != primary)
                .take(2)
                .map(|i| sign(i, body))
                .collect(),
        }
    };
    let view_change = |prepared: Vec<PreparedCertificate>| {
        Message::ViewChange(sign(
            2,
            ViewChange {
                new_view: View(1),
                stable: CheckpointProof::genesis(genesis()),
                prepared,
                last_delivered: SeqNum(0),
            },
        ))
    };
    let mut r = backup();
    r.handle(Input::Message {
        from: ReplicaId(2),
        message: view_change(vec![cert(0, 1), cert(0, 8)]),
    });
    assert!(r.rejections().is_empty(), "{:?}", r.rejections());
    for (story, prepared) in [
        ("a certificate of the new view", vec![cert(1, 1)]),
        ("a certificate at the stable checkpoint", vec![cert(0, 0)]),
        ("a certificate past the window", vec![cert(0, 9)]),
        (
            "two certificates for one height",
            vec![cert(0, 1), cert(0, 1)],
        ),
    ] {
        let mut r = backup();
        let out = r.handle(Input::Message {
            from: ReplicaId(2),
            message: view_change(prepared),
        });
        assert_eq!(votes(&out), 0, "{story}: no vote may follow, got {out:?}");
        assert_eq!(
            r.rejections().get("bad-prepared-certificate"),
            Some(&1),
            "{story}: got {:?}",
            r.rejections()
        );
    }
}
