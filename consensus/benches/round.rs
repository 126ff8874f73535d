//! The cost of one full normal-case PBFT round in-process (pre-prepare, prepares,
//! commits, delivery at every replica), signing and verification included.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark without its fixture cannot run

use std::collections::VecDeque;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use mosaic_consensus::{
    Config, Digest, Input, Output, PayloadCheck, Replica, ReplicaId, SeqNum, ValidatorSet,
};
use mosaic_crypto::{ChainId, Hash, Keypair};

struct HashCheck;

impl PayloadCheck for HashCheck {
    fn check(&self, _seq: SeqNum, _parent: Digest, payload: &[u8]) -> Result<Digest, String> {
        Ok(Digest(Hash::of(payload)))
    }
}

fn replicas(n: usize) -> Vec<Replica> {
    let keys: Vec<Keypair> = (0..n as u64).map(Keypair::from_seed_for_tests).collect();
    let validators = ValidatorSet::new(
        ChainId::new("bench").unwrap(),
        keys.iter().map(|k| k.public()).collect(),
    )
    .unwrap();
    keys.into_iter()
        .enumerate()
        .map(|(i, key)| {
            let config = Config::new(ReplicaId(i as u32), validators.clone(), Digest(Hash::ZERO));
            let mut r = Replica::new(config, key, Box::new(HashCheck), None);
            let _ = r.start();
            r
        })
        .collect()
}

/// Runs one round to delivery at every replica; returns messages exchanged.
fn round(mut replicas: Vec<Replica>, payload: &[u8]) -> usize {
    let n = replicas.len();
    let mut queue: VecDeque<(ReplicaId, ReplicaId, mosaic_consensus::Message)> = VecDeque::new();
    let mut delivered = 0;
    let mut messages = 0;
    let first = replicas[0].handle(Input::Propose {
        seq: SeqNum(1),
        parent: Digest(Hash::ZERO),
        payload: payload.to_vec(),
    });
    let mut pending = vec![(ReplicaId(0), first)];
    loop {
        for (from, outputs) in pending.drain(..) {
            for output in outputs {
                match output {
                    Output::Broadcast(m) => {
                        for to in 0..n as u32 {
                            if to != from.0 {
                                queue.push_back((from, ReplicaId(to), m.clone()));
                            }
                        }
                    }
                    Output::Send { to, message } => queue.push_back((from, to, message)),
                    Output::Deliver { .. } => delivered += 1,
                    _ => {}
                }
            }
        }
        let Some((from, to, message)) = queue.pop_front() else {
            break;
        };
        messages += 1;
        let out = replicas[to.0 as usize].handle(Input::Message { from, message });
        pending.push((to, out));
    }
    assert_eq!(delivered, n, "every replica delivers");
    messages
}

fn normal_round(c: &mut Criterion) {
    let payload = vec![7u8; 64 * 1024];
    let mut group = c.benchmark_group("pbft::round");
    group.sample_size(20);
    for n in [4usize, 31] {
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("n={n}")),
            &n,
            |b, &n| {
                b.iter_batched(
                    || replicas(n),
                    |r| round(r, &payload),
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, normal_round);
criterion_main!(benches);
