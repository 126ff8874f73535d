//! Certificates are canonical: exactly the quorum of signatures, signers ascending,
//! so one set of votes has one encoding (and one hash wherever it is stored).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

fn setup() -> (ChainId, Vec<Keypair>, ValidatorSet) {
    let chain = ChainId::new("t").unwrap();
    let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
    let vs = ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
    (chain, keys, vs)
}

#[test]
fn a_commit_certificate_has_exactly_the_quorum_in_ascending_order() {
    let (chain, keys, vs) = setup();
    let digest = Digest(Hash::of(b"block"));
    let body = Commit {
        view: View(0),
        seq: SeqNum(1),
        digest,
    };
    let certificate = |signers: &[u32]| CommitCertificate {
        view: View(0),
        seq: SeqNum(1),
        digest,
        signatures: signers
            .iter()
            .map(|&i| {
                (
                    ReplicaId(i),
                    sign(&keys[i as usize], i, &chain, body).signature,
                )
            })
            .collect(),
    };
    assert!(certificate(&[0, 1, 2]).verify(&vs).is_ok());
    assert!(certificate(&[1, 2, 3]).verify(&vs).is_ok());
    for bad in [
        &[2u32, 1, 0][..],
        &[0, 2, 1],
        &[0, 1, 2, 3],
        &[0, 1],
        &[0, 0, 1],
    ] {
        assert!(
            certificate(bad).verify(&vs).is_err(),
            "signers {bad:?} must be refused"
        );
    }
}

#[test]
fn prepared_certificates_and_checkpoint_proofs_are_canonical_too() {
    let (chain, keys, vs) = setup();
    let digest = Digest(Hash::of(b"block"));
    let parent = Digest(Hash::ZERO);
    let pre_prepare = sign(
        &keys[0],
        0,
        &chain,
        PrePrepare {
            view: View(0),
            seq: SeqNum(1),
            digest,
            parent,
        },
    );
    let prepare = |i: u32| {
        sign(
            &keys[i as usize],
            i,
            &chain,
            Prepare {
                view: View(0),
                seq: SeqNum(1),
                digest,
                parent,
            },
        )
    };
    let prepared = |signers: &[u32]| PreparedCertificate {
        pre_prepare: pre_prepare.clone(),
        prepares: signers.iter().map(|&i| prepare(i)).collect(),
    };
    assert!(prepared(&[1, 2]).verify(&vs).is_ok());
    assert!(prepared(&[2, 1]).verify(&vs).is_err());
    assert!(prepared(&[1, 2, 3]).verify(&vs).is_err());

    let checkpoint = |i: u32| {
        sign(
            &keys[i as usize],
            i,
            &chain,
            Checkpoint {
                seq: SeqNum(4),
                digest,
            },
        )
    };
    let proof = |signers: &[u32]| CheckpointProof {
        seq: SeqNum(4),
        digest,
        checkpoints: signers.iter().map(|&i| checkpoint(i)).collect(),
    };
    assert!(proof(&[0, 1, 3]).verify(&vs, parent).is_ok());
    assert!(proof(&[3, 1, 0]).verify(&vs, parent).is_err());
    assert!(proof(&[0, 1, 2, 3]).verify(&vs, parent).is_err());
}

/// Each field of a PREPARE must match its PRE-PREPARE: a validly signed PREPARE
/// for another view, height, digest or parent never completes a certificate.
#[test]
fn a_prepared_certificate_refuses_a_prepare_that_differs_in_any_one_field() {
    let (chain, keys, vs) = setup();
    let digest = Digest(Hash::of(b"block"));
    let parent = Digest(Hash::ZERO);
    let body = Prepare {
        view: View(0),
        seq: SeqNum(1),
        digest,
        parent,
    };
    let pre_prepare = sign(
        &keys[0],
        0,
        &chain,
        PrePrepare {
            view: View(0),
            seq: SeqNum(1),
            digest,
            parent,
        },
    );
    let other = Digest(Hash::of(b"other"));
    let variants = [
        (
            "view",
            Prepare {
                view: View(4),
                ..body
            },
        ),
        (
            "seq",
            Prepare {
                seq: SeqNum(2),
                ..body
            },
        ),
        (
            "digest",
            Prepare {
                digest: other,
                ..body
            },
        ),
        (
            "parent",
            Prepare {
                parent: other,
                ..body
            },
        ),
    ];
    let good = PreparedCertificate {
        pre_prepare: pre_prepare.clone(),
        prepares: vec![
            sign(&keys[1], 1, &chain, body),
            sign(&keys[2], 2, &chain, body),
        ],
    };
    assert!(good.verify(&vs).is_ok());
    let from_primary = PreparedCertificate {
        pre_prepare: pre_prepare.clone(),
        prepares: vec![
            sign(&keys[0], 0, &chain, body),
            sign(&keys[1], 1, &chain, body),
        ],
    };
    assert!(
        from_primary.verify(&vs).is_err(),
        "the primary's PRE-PREPARE is its prepare: a PREPARE of its own does not count"
    );
    for (field, variant) in variants {
        let certificate = PreparedCertificate {
            pre_prepare: pre_prepare.clone(),
            prepares: vec![
                sign(&keys[1], 1, &chain, body),
                sign(&keys[2], 2, &chain, variant),
            ],
        };
        assert!(
            certificate.verify(&vs).is_err(),
            "a PREPARE with another {field} must be refused"
        );
    }
}

/// The genesis proof carries the genesis digest and no signatures; every other
/// proof's checkpoints match its height and digest.
#[test]
fn a_checkpoint_proof_refuses_a_wrong_genesis_or_a_mismatched_checkpoint() {
    let (chain, keys, vs) = setup();
    let genesis = Digest(Hash::ZERO);
    let digest = Digest(Hash::of(b"block"));
    assert!(
        CheckpointProof::genesis(genesis)
            .verify(&vs, genesis)
            .is_ok()
    );
    assert!(
        CheckpointProof::genesis(digest)
            .verify(&vs, genesis)
            .is_err(),
        "a genesis proof with another digest"
    );
    let checkpoint = |i: u32, seq: u64, digest: Digest| {
        sign(
            &keys[i as usize],
            i,
            &chain,
            Checkpoint {
                seq: SeqNum(seq),
                digest,
            },
        )
    };
    let padded = CheckpointProof {
        checkpoints: vec![checkpoint(0, 0, genesis)],
        ..CheckpointProof::genesis(genesis)
    };
    assert!(
        padded.verify(&vs, genesis).is_err(),
        "a genesis proof with signatures"
    );
    let good = CheckpointProof {
        seq: SeqNum(4),
        digest,
        checkpoints: vec![
            checkpoint(0, 4, digest),
            checkpoint(1, 4, digest),
            checkpoint(3, 4, digest),
        ],
    };
    assert!(good.verify(&vs, genesis).is_ok());
    for (what, odd) in [
        ("height", checkpoint(3, 8, digest)),
        ("digest", checkpoint(3, 4, genesis)),
    ] {
        let mut proof = good.clone();
        proof.checkpoints[2] = odd;
        assert!(
            proof.verify(&vs, genesis).is_err(),
            "a checkpoint of another {what} must be refused"
        );
    }
}
