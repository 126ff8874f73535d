//! NEW-VIEW validation, driven by hand against one replica: a valid NEW-VIEW is
//! entered, and each one wrong in a single way is refused under its reason. The
//! random simulator seldom builds these shapes; each case kills a mutant of
//! `Replica::on_new_view` that the seeds let live (docs/MUTANTS.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use mosaic_consensus::{
    CheckpointProof, Config, Digest, Input, Message, NewView, PayloadCheck, PrePrepare, Prepare,
    PreparedCertificate, Replica, ReplicaId, SeqNum, Signed, Status, ValidatorSet, View,
    ViewChange, ViewChangeSummary,
};
use mosaic_crypto::{ChainId, Hash, Keypair};

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

const N: u32 = 4;
const PAYLOAD_MAX: usize = 1024;
/// The view the NEW-VIEWs are for; its primary is replica 2.
const VIEW: u64 = 2;

fn keys() -> Vec<Keypair> {
    (0..N as u64).map(Keypair::from_seed_for_tests).collect()
}

fn validators() -> ValidatorSet {
    ValidatorSet::new(
        ChainId::new("new-view").unwrap(),
        keys().iter().map(|k| k.public()).collect(),
    )
    .unwrap()
}

fn genesis() -> Digest {
    Digest(Hash::ZERO)
}

fn replica() -> Replica {
    let mut config = Config::new(ReplicaId(1), validators(), genesis());
    config.payload_bytes_max = PAYLOAD_MAX;
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

/// A payload for height 1 on genesis of exactly `len` bytes.
fn payload_of(len: usize) -> Vec<u8> {
    let prefix = format!("1:{}:", genesis().0);
    let mut bytes = prefix.into_bytes();
    bytes.resize(len, b'x');
    bytes
}

/// A certificate that height 1 was prepared in view 0 with `payload`.
fn prepared(payload: &[u8]) -> PreparedCertificate {
    let digest = Digest(Hash::of(payload));
    let body = Prepare {
        view: View(0),
        seq: SeqNum(1),
        digest,
        parent: genesis(),
    };
    PreparedCertificate {
        pre_prepare: sign(
            0,
            PrePrepare {
                view: View(0),
                seq: SeqNum(1),
                digest,
                parent: genesis(),
            },
        ),
        prepares: vec![sign(1, body), sign(2, body)],
    }
}

fn view_change(signer: u32, view: u64, certs: Vec<PreparedCertificate>) -> Signed<ViewChange> {
    sign(
        signer,
        ViewChange {
            new_view: View(view),
            stable: CheckpointProof::genesis(genesis()),
            prepared: certs,
            last_delivered: SeqNum(0),
        },
    )
}

/// The parts of a NEW-VIEW, to be spoilt one at a time.
#[derive(Clone)]
struct Parts {
    signer: u32,
    view_changes: Vec<Signed<ViewChange>>,
    pre_prepares: Vec<Signed<PrePrepare>>,
    payloads: Vec<Option<Vec<u8>>>,
    /// The certificates carried instead of those [`NewView::assemble`] picks.
    certificates: Option<Vec<PreparedCertificate>>,
}

/// A valid NEW-VIEW for `VIEW` re-issuing height 1 with a payload of `len` bytes.
fn valid(len: usize) -> Parts {
    let payload = payload_of(len);
    let cert = prepared(&payload);
    let pre_prepare = PrePrepare {
        view: View(VIEW),
        seq: SeqNum(1),
        digest: cert.pre_prepare.body.digest,
        parent: genesis(),
    };
    Parts {
        signer: 2,
        view_changes: vec![
            view_change(0, VIEW, vec![cert]),
            view_change(2, VIEW, vec![]),
            view_change(3, VIEW, vec![]),
        ],
        pre_prepares: vec![sign(2, pre_prepare)],
        payloads: vec![Some(payload)],
        certificates: None,
    }
}

fn message(p: &Parts) -> Message {
    Message::NewView {
        new_view: sign(p.signer, {
            let mut body = NewView::assemble(View(VIEW), &p.view_changes, p.pre_prepares.clone());
            if let Some(certificates) = &p.certificates {
                body.certificates = certificates.clone();
            }
            body
        }),
        payloads: p.payloads.clone(),
    }
}

fn entered(r: &Replica) -> bool {
    r.view() == View(VIEW) && r.status() == Status::Normal
}

#[test]
fn a_valid_new_view_is_entered_once_and_then_counts_as_old() {
    // A payload of exactly the limit is allowed.
    let parts = valid(PAYLOAD_MAX);
    let mut r = replica();
    r.handle(Input::Message {
        from: ReplicaId(2),
        message: message(&parts),
    });
    assert!(entered(&r), "entered: {:?} {:?}", r.view(), r.rejections());
    assert!(r.rejections().is_empty(), "{:?}", r.rejections());
    r.handle(Input::Message {
        from: ReplicaId(2),
        message: message(&parts),
    });
    assert_eq!(r.rejections().get("old-view"), Some(&1));
}

#[test]
fn a_new_view_wrong_in_one_way_is_refused() {
    let good = valid(100);
    let mut cases: Vec<(&str, Parts, &str)> = Vec::new();
    let mut p = good.clone();
    p.view_changes[1] = view_change(0, VIEW, vec![]);
    cases.push(("two view changes from one replica", p, "bad-new-view"));
    let mut p = good.clone();
    p.view_changes[2] = view_change(3, VIEW + 1, vec![]);
    cases.push(("a view change for another view", p, "bad-new-view"));
    let mut p = good.clone();
    p.view_changes.pop();
    cases.push(("2f view changes", p, "bad-new-view"));
    let mut p = good.clone();
    let extra = PrePrepare {
        seq: SeqNum(2),
        ..p.pre_prepares[0].body
    };
    p.pre_prepares.push(sign(2, extra));
    p.payloads.push(None);
    cases.push(("a re-issued height nobody prepared", p, "bad-new-view"));
    let mut p = good.clone();
    p.payloads.clear();
    cases.push(("payloads missing from the list", p, "bad-new-view"));
    let mut p = good.clone();
    p.pre_prepares[0] = sign(0, p.pre_prepares[0].body);
    cases.push((
        "a re-issued pre-prepare of another signer",
        p,
        "bad-new-view",
    ));
    let mut p = good.clone();
    p.pre_prepares[0] = sign(
        2,
        PrePrepare {
            digest: Digest(Hash::of(b"other")),
            ..p.pre_prepares[0].body
        },
    );
    cases.push((
        "a re-issued pre-prepare with another digest",
        p,
        "bad-new-view",
    ));
    let mut p = good.clone();
    p.payloads[0] = Some(payload_of(101));
    cases.push((
        "a payload that is not the prepared one",
        p,
        "invalid-payload",
    ));
    let mut p = valid(PAYLOAD_MAX + 1);
    p.payloads[0] = Some(payload_of(PAYLOAD_MAX + 1));
    cases.push(("a prepared payload over the limit", p, "invalid-payload"));
    let mut p = good.clone();
    p.certificates = Some(Vec::new());
    cases.push(("the chosen claim's certificate left out", p, "bad-new-view"));
    let mut p = good.clone();
    let cert = prepared(&payload_of(100));
    p.certificates = Some(vec![cert.clone(), cert]);
    cases.push(("a certificate more than the chain", p, "bad-new-view"));
    let mut p = good.clone();
    p.certificates = Some(vec![prepared(&payload_of(99))]);
    cases.push((
        "a valid certificate of another claim than the chosen one",
        p,
        "bad-new-view",
    ));
    let mut p = good.clone();
    let mut cert = prepared(&payload_of(100));
    cert.prepares[1].signature = cert.prepares[0].signature;
    p.certificates = Some(vec![cert]);
    cases.push((
        "the chosen claim's certificate with a forged PREPARE",
        p,
        "bad-prepared-certificate",
    ));
    let mut p = good.clone();
    p.view_changes[0].body.prepared[0].pre_prepare.body.view = View(1);
    p.certificates = Some(vec![prepared(&payload_of(100))]);
    cases.push((
        "a summary with another claim than its signature covers",
        p,
        "bad-signature",
    ));
    let mut p = good.clone();
    p.signer = 3;
    cases.push((
        "signed by a replica not the view's primary",
        p,
        "new-view-not-from-primary",
    ));

    for (story, parts, reason) in cases {
        let mut r = replica();
        r.handle(Input::Message {
            from: ReplicaId(2),
            message: message(&parts),
        });
        assert!(!entered(&r), "{story}: the NEW-VIEW was entered");
        assert_eq!(
            r.rejections().get(reason),
            Some(&1),
            "{story}: expected {reason}, got {:?}",
            r.rejections()
        );
    }
}

fn replica_with(id: u32, message_bytes_max: usize) -> Replica {
    let mut config = Config::new(ReplicaId(id), validators(), genesis());
    config.payload_bytes_max = PAYLOAD_MAX;
    config.window = 8;
    config.checkpoint_interval = 4;
    config.message_bytes_max = message_bytes_max;
    let mut r = Replica::new(
        config,
        Keypair::from_seed_for_tests(id as u64),
        Box::new(TestCheck),
        None,
    );
    let _ = r.start();
    r
}

fn broadcasts(out: &[mosaic_consensus::Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            mosaic_consensus::Output::Broadcast(m) => Some(m.clone()),
            mosaic_consensus::Output::Send { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// The new primary (replica 2) of `VIEW` gathers view changes, fetches the payload
/// it lacks, and returns the NEW-VIEW it broadcasts.
fn new_view_from_primary(message_bytes_max: usize, payload: &[u8]) -> Message {
    let mut r2 = replica_with(2, message_bytes_max);
    let mut out = Vec::new();
    for (from, certs) in [(0u32, vec![prepared(payload)]), (3, vec![])] {
        out.extend(r2.handle(Input::Message {
            from: ReplicaId(from),
            message: Message::ViewChange(view_change(from, VIEW, certs)),
        }));
    }
    assert!(
        broadcasts(&out)
            .iter()
            .any(|m| matches!(m, Message::FetchPayload { seq, .. } if *seq == SeqNum(1))),
        "the new primary asks for the payload it lacks: {out:?}"
    );
    let out = r2.handle(Input::Message {
        from: ReplicaId(0),
        message: Message::Payload {
            seq: SeqNum(1),
            payload: payload.to_vec(),
        },
    });
    broadcasts(&out)
        .into_iter()
        .find(|m| matches!(m, Message::NewView { .. }))
        .expect("a NEW-VIEW once the payload is in")
}

fn encoded_len(m: &Message) -> usize {
    mosaic_crypto::codec::encode(m).unwrap().len()
}

/// A NEW-VIEW never outgrows the frame: a re-issued payload that does not fit is
/// left out, and a replica that lacks it fetches it and checks it before it votes.
#[test]
fn a_new_view_leaves_out_a_payload_that_does_not_fit_and_replicas_fetch_it() {
    let payload = payload_of(PAYLOAD_MAX);
    let full = new_view_from_primary(usize::MAX / 2, &payload);
    let Message::NewView { payloads, .. } = &full else {
        unreachable!()
    };
    assert_eq!(
        payloads,
        &vec![Some(payload.clone())],
        "room for everything"
    );
    let limit = encoded_len(&full) - 1;
    let trimmed = new_view_from_primary(limit, &payload);
    let Message::NewView { payloads, .. } = &trimmed else {
        unreachable!()
    };
    assert_eq!(
        payloads,
        &vec![None],
        "the payload does not fit: it is left out"
    );
    assert!(
        encoded_len(&trimmed) <= limit,
        "the NEW-VIEW fits the frame"
    );

    let mut r1 = replica_with(1, limit);
    let out = r1.handle(Input::Message {
        from: ReplicaId(2),
        message: trimmed,
    });
    assert!(entered(&r1), "{:?}", r1.rejections());
    let sent = broadcasts(&out);
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::FetchPayload { seq, .. } if *seq == SeqNum(1))),
        "the replica asks for the payload left out: {sent:?}"
    );
    assert!(
        !sent.iter().any(|m| matches!(m, Message::Prepare(_))),
        "no vote before the payload is checked"
    );
    // A wrong payload is refused; the right one is voted for.
    let out = r1.handle(Input::Message {
        from: ReplicaId(0),
        message: Message::Payload {
            seq: SeqNum(1),
            payload: payload_of(PAYLOAD_MAX - 1),
        },
    });
    assert!(
        !broadcasts(&out)
            .iter()
            .any(|m| matches!(m, Message::Prepare(_)))
    );
    let out = r1.handle(Input::Message {
        from: ReplicaId(3),
        message: Message::Payload {
            seq: SeqNum(1),
            payload,
        },
    });
    assert!(
        broadcasts(&out).iter().any(
            |m| matches!(m, Message::Prepare(p) if p.body.seq == SeqNum(1) && p.body.view == View(VIEW))
        ),
        "the fetched payload is voted for: {out:?}"
    );
}

/// A Byzantine primary's own summary claims, at height 1, a PRE-PREPARE that
/// does not extend genesis, in a view as high as the proven claim there (a tie
/// it wins by coming last) or higher. The chain stops at that claim, before the
/// proven one: entered, the NEW-VIEW would let height 1 be decided anew although
/// it may have committed. Claims the chain stops at need a certificate too.
#[test]
fn a_new_view_cut_short_by_an_unproven_claim_is_refused() {
    let cert = prepared(&payload_of(100));
    let honest = [
        view_change(0, VIEW, vec![cert.clone()]),
        view_change(3, VIEW, vec![cert]),
    ];
    let lie = |view: u64| {
        sign(
            2,
            ViewChangeSummary {
                new_view: View(VIEW),
                stable: CheckpointProof::genesis(genesis()),
                prepared: vec![PrePrepare {
                    view: View(view),
                    seq: SeqNum(1),
                    digest: Digest(Hash::of(b"another")),
                    parent: Digest(Hash::of(b"not genesis")),
                }],
                last_delivered: SeqNum(0),
            },
        )
    };
    for (story, claim_view) in [("a tie with the proven claim", 0), ("a higher view", 1)] {
        let mut view_changes: Vec<Signed<ViewChangeSummary>> =
            honest.iter().map(Signed::summarized).collect();
        view_changes.push(lie(claim_view));
        let new_view = NewView {
            view: View(VIEW),
            view_changes,
            certificates: Vec::new(),
            pre_prepares: Vec::new(),
        };
        let mut r = replica();
        r.handle(Input::Message {
            from: ReplicaId(2),
            message: Message::NewView {
                new_view: sign(2, new_view),
                payloads: Vec::new(),
            },
        });
        assert!(!entered(&r), "{story}: entered");
        assert_eq!(
            r.rejections().get("bad-new-view"),
            Some(&1),
            "{story}: {:?}",
            r.rejections()
        );
    }
}

/// A VIEW-CHANGE's signature covers its claims, not the PREPAREs behind them: a
/// relayed copy with another valid set of PREPAREs is the same VIEW-CHANGE, and
/// its signer's own copy arriving later is no conflict to charge it for.
#[test]
fn a_view_change_with_other_prepares_behind_its_claims_is_no_conflict() {
    let cert = prepared(&payload_of(100));
    let original = view_change(0, VIEW, vec![cert.clone()]);
    let body = cert.prepares[0].body;
    let mut other = cert;
    other.prepares = vec![sign(1, body), sign(3, body)];
    let copy = view_change(0, VIEW, vec![other]);
    assert_eq!(copy.signature, original.signature, "one signature for both");
    let mut r = replica();
    let mut out = r.handle(Input::Message {
        from: ReplicaId(3),
        message: Message::ViewChange(copy),
    });
    out.extend(r.handle(Input::Message {
        from: ReplicaId(0),
        message: Message::ViewChange(original),
    }));
    assert!(
        !out.iter()
            .any(|o| matches!(o, mosaic_consensus::Output::Refused { .. })),
        "{out:?}"
    );
    assert_eq!(r.rejections().get("conflicting-view-change"), None);
}
