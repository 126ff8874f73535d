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
