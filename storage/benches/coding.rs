//! Encode and reconstruct of a 1 MiB body beside the raw reed-solomon-erasure calls
//! for the same sizes, so the cost of proofs, hashing and copies is visible.
//! Reconstruction is measured with worst-case erasures: every data shard lost where
//! n - k >= k, otherwise as many data shards as there are parity shards.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark without its fixture cannot run

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mosaic_storage::coding::{self, Fragment};
use reed_solomon_erasure::galois_8::ReedSolomon;

/// The node runs with mimalloc; with glibc's malloc every large buffer is a fresh
/// mmap whose page faults cost more than the erasure code itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY_BYTES: usize = 1024 * 1024;
const SHAPES: [(usize, usize); 4] = [(4, 2), (7, 3), (10, 4), (31, 11)];

fn body() -> Vec<u8> {
    (0..BODY_BYTES).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Indexes kept for the worst case: parity first, then the last data shards.
fn survivors(k: usize, n: usize) -> Vec<usize> {
    let mut keep: Vec<usize> = (k..n).collect();
    let mut data = (0..k).rev();
    while keep.len() < k {
        keep.push(data.next().unwrap());
    }
    keep.truncate(k);
    keep
}

fn raw_shards(body: &[u8], k: usize, n: usize) -> Vec<Vec<u8>> {
    let shard_len = body.len().div_ceil(k);
    let mut shards: Vec<Vec<u8>> = body.chunks(shard_len).map(|c| c.to_vec()).collect();
    shards.last_mut().unwrap().resize(shard_len, 0);
    shards.resize(n, vec![0; shard_len]);
    shards
}

fn encode(c: &mut Criterion) {
    let body = body();
    let mut group = c.benchmark_group("coding::encode");
    group.throughput(Throughput::Bytes(BODY_BYTES as u64));
    for (n, k) in SHAPES {
        let label = format!("n={n},k={k}");
        group.bench_with_input(BenchmarkId::new("mosaic", &label), &body, |b, body| {
            b.iter(|| coding::encode(black_box(body), k, n).unwrap())
        });
        let shards = raw_shards(&body, k, n);
        group.bench_with_input(BenchmarkId::new("raw", &label), &shards, |b, shards| {
            b.iter_batched_ref(
                || shards.clone(),
                |shards| {
                    let rs = ReedSolomon::new(k, n - k).unwrap();
                    rs.encode(black_box(shards)).unwrap()
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn reconstruct(c: &mut Criterion) {
    let body = body();
    let mut group = c.benchmark_group("coding::reconstruct");
    group.throughput(Throughput::Bytes(BODY_BYTES as u64));
    for (n, k) in SHAPES {
        let label = format!("n={n},k={k}");
        let keep = survivors(k, n);
        let encoded = coding::encode(&body, k, n).unwrap();
        let commitment = encoded.commitment();
        let fragments: Vec<Fragment> = keep.iter().map(|&i| encoded.fragment(i).unwrap()).collect();
        group.bench_with_input(
            BenchmarkId::new("mosaic", &label),
            &fragments,
            |b, fragments| {
                b.iter_batched(
                    || fragments.clone(),
                    |fragments| coding::reconstruct(&commitment, fragments).unwrap(),
                    criterion::BatchSize::LargeInput,
                )
            },
        );
        let mut full = raw_shards(&body, k, n);
        ReedSolomon::new(k, n - k)
            .unwrap()
            .encode(&mut full)
            .unwrap();
        let partial: Vec<Option<Vec<u8>>> = full
            .iter()
            .enumerate()
            .map(|(i, s)| keep.contains(&i).then(|| s.clone()))
            .collect();
        group.bench_with_input(BenchmarkId::new("raw", &label), &partial, |b, partial| {
            b.iter_batched(
                || partial.clone(),
                |mut shards| {
                    let rs = ReedSolomon::new(k, n - k).unwrap();
                    rs.reconstruct(black_box(&mut shards)).unwrap();
                    shards
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, encode, reconstruct);
criterion_main!(benches);
