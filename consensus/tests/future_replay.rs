//! Messages of a view not entered yet: a replay of one kept from the same sender, or
//! one over the sender's share, is refused before its signature is checked, so a
//! peer repeating a validly signed future message costs neither memory nor checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

fn prepare(keys: &[Keypair], chain: &ChainId, signer: u32, key: usize, seq: u64) -> Message {
    Message::Prepare(sign(
        &keys[key],
        signer,
        chain,
        Prepare {
            view: View(1),
            seq: SeqNum(seq),
            digest: Digest(Hash::of(&seq.to_le_bytes())),
            parent: Digest(Hash::ZERO),
        },
    ))
}

fn count(r: &Replica, reason: &str) -> u64 {
    r.rejections().get(reason).copied().unwrap_or(0)
}

#[test]
fn future_replays_and_surplus_are_refused_before_the_signature_check() {
    let chain = ChainId::new("t").unwrap();
    let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
    let vs = ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
    let mut config = Config::new(ReplicaId(3), vs, Digest(Hash::ZERO));
    config.future_messages_max = 8; // 2 per sender
    let mut r3 = Replica::new(
        config,
        Keypair::from_seed_for_tests(3),
        Box::new(ParentFirst),
        None,
    );
    let _ = r3.start();

    let first = prepare(&keys, &chain, 2, 2, 1);
    feed(&mut r3, 2, std::slice::from_ref(&first));
    assert_eq!(count(&r3, "future-duplicate"), 0);
    for _ in 0..5 {
        feed(&mut r3, 2, std::slice::from_ref(&first));
    }
    assert_eq!(count(&r3, "future-duplicate"), 5, "{:?}", r3.rejections());

    // The second distinct message fills replica 2's share; a third is refused
    // for the share although its signature is bad: it was never checked.
    feed(&mut r3, 2, &[prepare(&keys, &chain, 2, 2, 2)]);
    assert_eq!(count(&r3, "future-buffer-full"), 0);
    let forged = prepare(&keys, &chain, 2, 0, 3);
    feed(&mut r3, 2, &[forged]);
    assert_eq!(count(&r3, "future-buffer-full"), 1, "{:?}", r3.rejections());
    assert_eq!(count(&r3, "bad-signature"), 0, "{:?}", r3.rejections());

    // Another sender keeps its own room, and a forgery with room is still refused
    // for its signature.
    feed(&mut r3, 1, &[prepare(&keys, &chain, 1, 0, 1)]);
    assert_eq!(count(&r3, "bad-signature"), 1, "{:?}", r3.rejections());
    feed(&mut r3, 1, &[prepare(&keys, &chain, 1, 1, 1)]);
    assert_eq!(count(&r3, "future-buffer-full"), 1, "{:?}", r3.rejections());
    assert_eq!(count(&r3, "future-duplicate"), 5);
}
