//! Microbenchmarks of the primitives that bound Mosaic's throughput.
//! Names follow `module::operation/parameter=value`.
#![allow(clippy::panic)] // a benchmark without its fixture cannot run

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mosaic_crypto::{
    ChainId, Domain, Hash, Keypair, MerkleTree, PublicKey, Signature, SignedItem, verify_batch,
};

fn chain() -> ChainId {
    ChainId::new("bench").unwrap_or_else(|e| panic!("bench chain id: {e}"))
}

fn signatures(c: &mut Criterion) {
    let chain = chain();
    let key = Keypair::from_seed_for_tests(1);
    let message = [7u8; 128];
    let signature = key.sign(Domain::Transaction, &chain, &message);

    c.bench_function("sign::sign/message_bytes=128", |b| {
        b.iter(|| key.sign(Domain::Transaction, &chain, black_box(&message)))
    });
    c.bench_function("sign::verify/message_bytes=128", |b| {
        b.iter(|| {
            key.public()
                .verify(Domain::Transaction, &chain, black_box(&message), &signature)
        })
    });

    let mut group = c.benchmark_group("sign::verify_batch");
    for size in [4usize, 16, 64, 1024] {
        let keys: Vec<Keypair> = (0..size as u64).map(Keypair::from_seed_for_tests).collect();
        let publics: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let messages: Vec<[u8; 128]> = (0..size).map(|i| [i as u8; 128]).collect();
        let sigs: Vec<Signature> = keys
            .iter()
            .zip(&messages)
            .map(|(k, m)| k.sign(Domain::Transaction, &chain, m))
            .collect();
        let items: Vec<SignedItem<'_>> = (0..size)
            .map(|i| SignedItem {
                key: &publics[i],
                domain: Domain::Transaction,
                chain: &chain,
                message: &messages[i],
                signature: &sigs[i],
            })
            .collect();
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("size={size}")),
            &items,
            |b, items| b.iter(|| verify_batch(black_box(items))),
        );
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash::blake3");
    for (label, size) in [("1KiB", 1024usize), ("1MiB", 1024 * 1024)] {
        let data = vec![0xabu8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("size={label}")),
            &data,
            |b, data| b.iter(|| Hash::of(black_box(data))),
        );
    }
    group.finish();

    let leaves: Vec<[u8; 64]> = (0..256).map(|i| [i as u8; 64]).collect();
    c.bench_function("merkle::root/leaves=256", |b| {
        b.iter(|| MerkleTree::from_leaves(black_box(&leaves)).map(|t| t.root()))
    });
}

criterion_group!(benches, signatures, hashing);
criterion_main!(benches);
