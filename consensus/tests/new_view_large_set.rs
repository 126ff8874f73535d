//! A new primary of a 100-validator set with the node's window and limits
//! builds its NEW-VIEW from 2f+1 VIEW-CHANGEs that each carry a full window of
//! prepared certificates: the NEW-VIEW must fit the message limit, or the links
//! drop it, charge the honest primary, and every later primary builds one as
//! large.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
mod common;

use common::*;
use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

const N: usize = 100;

#[test]
fn a_new_view_of_a_large_set_with_full_windows_fits_the_message_limit() {
    let chain = ChainId::new("large").unwrap();
    let keys: Vec<Keypair> = (0..N as u64).map(Keypair::from_seed_for_tests).collect();
    let vs = ValidatorSet::new(chain.clone(), keys.iter().map(|k| k.public()).collect()).unwrap();
    let quorum = vs.quorum();
    let genesis = Digest(Hash::ZERO);
    let config = Config::new(ReplicaId(1), vs.clone(), genesis);
    let window = config.window;
    let limit = config.message_bytes_max;
    // Heights 1..=window prepared in view 0 (primary 0, backups 1..2f).
    let mut blocks = Vec::new();
    let mut parent = genesis;
    for s in 1..=window {
        let (payload, digest) = block(parent, format!("b{s}").as_bytes());
        blocks.push((payload, digest, parent));
        parent = digest;
    }
    let certificates: Vec<PreparedCertificate> = blocks
        .iter()
        .enumerate()
        .map(|(i, (_, digest, parent))| {
            let seq = SeqNum(i as u64 + 1);
            PreparedCertificate {
                pre_prepare: sign(
                    &keys[0],
                    0,
                    &chain,
                    PrePrepare {
                        view: View(0),
                        seq,
                        digest: *digest,
                        parent: *parent,
                    },
                ),
                prepares: (1..quorum as u32)
                    .map(|r| {
                        sign(
                            &keys[r as usize],
                            r,
                            &chain,
                            Prepare {
                                view: View(0),
                                seq,
                                digest: *digest,
                                parent: *parent,
                            },
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    let mut r1 = Replica::new(
        config,
        Keypair::from_seed_for_tests(1),
        Box::new(ParentFirst),
        None,
    );
    let _ = r1.start();
    let _ = r1.handle(Input::Pending(true));
    let _ = r1.handle(Input::Timeout(Timer::Progress { view: View(0) }));
    assert_eq!(r1.status(), Status::ViewChanging(View(1)));
    let mut out = Vec::new();
    for from in (0..N as u32).filter(|r| *r != 1).take(quorum - 1) {
        let vc = sign(
            &keys[from as usize],
            from,
            &chain,
            ViewChange {
                new_view: View(1),
                stable: CheckpointProof::genesis(genesis),
                prepared: certificates.clone(),
                last_delivered: SeqNum(0),
            },
        );
        out.extend(feed(&mut r1, from, &[Message::ViewChange(vc)]));
    }
    for (i, (payload, _, _)) in blocks.iter().enumerate() {
        out.extend(feed(
            &mut r1,
            0,
            &[Message::Payload {
                seq: SeqNum(i as u64 + 1),
                payload: payload.clone(),
            }],
        ));
    }
    let new_view = out
        .iter()
        .find_map(|o| match o {
            Output::Broadcast(m @ Message::NewView { .. }) => Some(m),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no NEW-VIEW: {:?}", r1.rejections()));
    let bytes = new_view.encode().unwrap().len();
    eprintln!("the NEW-VIEW of n={N}: {bytes} bytes");
    assert!(
        bytes <= limit,
        "the NEW-VIEW of n={N} is {bytes} bytes, over the message limit {limit}"
    );
    let Message::NewView { payloads, .. } = new_view else {
        unreachable!()
    };
    assert!(
        payloads.iter().all(Option::is_some),
        "small payloads all ride along"
    );
    assert_eq!(r1.view(), View(1));
}
