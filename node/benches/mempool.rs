//! Admission of already-verified transfers into an empty pool: one batch of 10,000
//! from 10 senders with 1,000 nonces each, beside 10,000 senders with one nonce
//! each. Per-sender nonce bookkeeping should cost the same per transfer either way
//! (a ratio near 1); a walk over every earlier nonce makes the first shape
//! quadratic in the run length. Also the same batch arriving in reverse nonce
//! order (each behind a gap until the last one fills it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark without its fixture cannot run

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mosaic_crypto::{ChainId, Keypair};
use mosaic_node::ledger::{Ledger, Transfer, VerifiedTransfer};
use mosaic_node::mempool::{Mempool, MempoolConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TRANSFERS: u64 = 10_000;

fn chain() -> ChainId {
    ChainId::new("bench").unwrap()
}

/// `senders` keys, each funded, and `TRANSFERS / senders` verified transfers of
/// each in nonce order, senders interleaved as a batch from many clients would be.
fn fixture(senders: u64) -> (Ledger, Vec<VerifiedTransfer>) {
    let keys: Vec<Keypair> = (0..senders).map(Keypair::from_seed_for_tests).collect();
    let ledger = Ledger::from_balances(
        &keys
            .iter()
            .map(|k| (k.public(), 1_000_000_000))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let to = Keypair::from_seed_for_tests(u64::MAX).public();
    let per_sender = TRANSFERS / senders;
    let mut txs = Vec::new();
    for nonce in 0..per_sender {
        for key in &keys {
            let signed = Transfer {
                chain: chain(),
                from: key.public(),
                to,
                amount: 1,
                nonce,
                valid_until: 1_000,
            }
            .sign(key);
            txs.push(signed.verify(&chain()).unwrap());
        }
    }
    (ledger, txs)
}

fn admit(ledger: &Ledger, txs: Vec<VerifiedTransfer>) -> Mempool {
    let mut pool = Mempool::new(chain(), MempoolConfig::default(), 0);
    let results = pool.add_verified(txs.into_iter().map(Ok).collect(), ledger);
    assert!(results.iter().all(Result::is_ok));
    pool
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("mempool_admit");
    group.throughput(Throughput::Elements(TRANSFERS));
    group.sample_size(20);
    for (name, senders) in [
        ("10_senders_x_1000_nonces", 10),
        ("10000_senders_x_1_nonce", 10_000),
    ] {
        let (ledger, txs) = fixture(senders);
        group.bench_function(name, |b| {
            b.iter_batched(
                || txs.clone(),
                |txs| black_box(admit(&ledger, txs)),
                BatchSize::LargeInput,
            );
        });
    }
    let (ledger, mut txs) = fixture(10);
    txs.reverse();
    group.bench_function("10_senders_x_1000_nonces_reversed", |b| {
        b.iter_batched(
            || txs.clone(),
            |txs| black_box(admit(&ledger, txs)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
