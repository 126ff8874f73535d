//! Microbenchmarks of the primitives that bound Mosaic's throughput.
//! Names follow `module::operation/parameter=value`.
#![allow(clippy::panic)] // a benchmark without its fixture cannot run

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mosaic_crypto::{
    ChainId, Domain, Hash, Keypair, MerkleTree, MerkleTrie, PublicKey, Signature, SignedItem,
    TrieValue, merkle, verify_batch,
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

/// A balance-sized value for the state-root benchmarks.
#[derive(Clone, Copy)]
struct Balance(u64);

impl TrieValue<[u8; 32]> for Balance {
    fn leaf_hash(&self, key: &[u8; 32]) -> Hash {
        merkle::leaf_hash_parts(&[key, &self.0.to_le_bytes()])
    }
}

/// A block's state root: 2,000 accounts changed among `accounts`, then the root. The
/// trie rehashes the changed paths; the tree over all leaves (the state root before
/// the trie) rehashes everything.
fn state_root(c: &mut Criterion) {
    const CHANGED: usize = 2_000;
    let mut group = c.benchmark_group("state_root");
    group.sample_size(10);
    for accounts in [10_000usize, 1_000_000] {
        let keys: Vec<[u8; 32]> = (0..accounts as u64)
            .map(|i| *Hash::of(&i.to_le_bytes()).as_bytes())
            .collect();
        let mut trie = MerkleTrie::new();
        for key in &keys {
            trie.insert(*key, Balance(1));
        }
        trie.root();
        let mut round = 0u64;
        group.bench_with_input(
            BenchmarkId::new("trie/changed=2000", accounts),
            &accounts,
            |b, _| {
                b.iter(|| {
                    round += 1;
                    for i in 0..CHANGED {
                        let key = keys[(i * 7919 + round as usize * 13) % keys.len()];
                        trie.insert(key, Balance(round));
                    }
                    trie.root()
                })
            },
        );
        let leaves: Vec<Hash> = keys.iter().map(|k| Balance(1).leaf_hash(k)).collect();
        group.bench_with_input(
            BenchmarkId::new("tree_over_all_leaves", accounts),
            &accounts,
            |b, _| {
                b.iter(|| MerkleTree::from_leaf_hashes(black_box(leaves.clone())).map(|t| t.root()))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, signatures, hashing, state_root);
criterion_main!(benches);
