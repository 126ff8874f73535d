//! What a client's proofs cost (issue 31): their encoded size, and the time to check
//! one with the genesis file alone ([`Checker`]) or for a node to make one.
//!
//! - **Account.** A ledger of `MOSAIC_BENCH_ACCOUNTS` accounts (default 1,000,000),
//!   built once outside the timings; proofs of present and of absent accounts under a
//!   header certified by 2f+1 of n = 4 (and of n = 100) genesis validators.
//! - **Transfer.** A block of 4,000 transfers, its outcomes under the next header,
//!   both headers certified.
//!
//! Sizes are printed before the timings (average, 99th percentile and largest over
//! 10,000 keys or 50 positions of the block). Keys come from fixed seeds, so every
//! run proves the same accounts and prints the same sizes.
//!
//! Names follow `module::operation/parameter=value`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark without its fixture cannot run

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use mosaic_consensus::messages::{Commit, Signed};
use mosaic_consensus::{CommitCertificate, Digest, ReplicaId, SeqNum, View};
use mosaic_crypto::{ChainId, Domain, Hash, Keypair, MerkleTree, PublicKey, codec};
use mosaic_ledger::block::{AfterParent, Block, BlockHeader, Position, outcome_root, outcome_tree};
use mosaic_ledger::genesis::{Genesis, GenesisValidator};
use mosaic_ledger::ledger::{Account, Ledger, SignedTransfer, Transfer, TxOutcome, verify_batch};
use mosaic_ledger::proof::{
    AccountProof, CertifiedHeader, Checker, PROOF_BYTES_MAX, TxProof, encode,
};

/// Accounts in the ledger when `MOSAIC_BENCH_ACCOUNTS` is unset.
const ACCOUNTS_DEFAULT: usize = 1_000_000;
/// The same when criterion does not measure: in its test mode (`cargo test
/// --benches`, `cargo bench -- --test`), which runs each benchmark once to see that
/// it works, or when it lists them. Building a million keys takes 15-20 s on
/// 2 cores, for nothing measured there.
const ACCOUNTS_TEST_MODE: usize = 10_000;
/// Keys sampled for the size figures (the largest proofs are rare: deep paths).
const SIZED_KEYS: u64 = 10_000;
/// The first of those keys, checked once and then cycled through by the timings.
const TIMED_KEYS: usize = 200;
/// Transfers in the block of the transfer proofs.
const BLOCK_TRANSFERS: usize = 4_000;
/// Positions of that block sampled for the size figures (besides the first and last).
const SAMPLED_POSITIONS: u64 = 48;
/// Validator counts: the default testnet's, and a large set (a certificate carries
/// 2f+1 signatures, so its size grows with n).
const VALIDATORS: [u64; 2] = [4, 100];

// Seed ranges that never overlap: validators take seeds 0..n.
const ACCOUNT_SEED: u64 = 1 << 32;
const ABSENT_SEED: u64 = 2 << 32;
const SENDER_SEED: u64 = 3 << 32;

/// Whether criterion will measure, decided as criterion decides it: `cargo bench`
/// passes `--bench`, `cargo test --benches` does not, and `--test` or `--list` after
/// `--` win over it. (`cfg!(test)` cannot tell: a `harness = false` target is
/// built without `--test` either way.)
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// The ledger size: `MOSAIC_BENCH_ACCOUNTS` if set (in either mode), else the
/// default of the mode.
fn accounts() -> usize {
    match std::env::var("MOSAIC_BENCH_ACCOUNTS") {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|e| panic!("MOSAIC_BENCH_ACCOUNTS={value}: {e}")),
        Err(_) if measuring() => ACCOUNTS_DEFAULT,
        Err(_) => ACCOUNTS_TEST_MODE,
    }
}

fn key(seed: u64) -> Keypair {
    Keypair::from_seed_for_tests(seed)
}

/// A number in `0..below` picked by hashing `j`.
fn pick(j: u64, below: u64) -> u64 {
    let hash = Hash::of(&j.to_le_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(bytes) % below
}

fn genesis(validators: u64) -> Genesis {
    Genesis {
        chain_id: ChainId::new("mosaic-bench").unwrap(),
        // k = f + 1, as a testnet's genesis has it.
        data_shards: ((validators - 1) / 3 + 1) as u16,
        validators: (0..validators)
            .map(|i| GenesisValidator {
                name: format!("v{i}"),
                public_key: key(i).public(),
            })
            .collect(),
        balances: Vec::new(),
    }
}

/// `header` with a commit certificate of the first 2f+1 validators of `genesis`.
fn certify(genesis: &Genesis, header: &BlockHeader) -> CertifiedHeader {
    let validators = genesis.validator_set().unwrap();
    let body = Commit {
        view: View(0),
        seq: SeqNum(header.height),
        digest: Digest(header.hash()),
    };
    let bytes = Signed::signing_bytes(&body).unwrap();
    let signatures = (0..validators.quorum() as u64)
        .map(|i| {
            let signature = key(i).sign(Domain::Commit, validators.chain(), &bytes);
            (ReplicaId(i as u32), signature)
        })
        .collect();
    CertifiedHeader {
        header: header.clone(),
        certificate: CommitCertificate {
            view: body.view,
            seq: body.seq,
            digest: body.digest,
            signatures,
        },
    }
}

/// The block at `height` of `genesis`'s chain on `parent` holding `txs`, coded k
/// of n as the genesis says.
fn block(
    genesis: &Genesis,
    height: u64,
    parent: Hash,
    after: AfterParent,
    txs: Vec<SignedTransfer>,
) -> Block {
    let position = Position {
        chain: genesis.chain_id.clone(),
        height,
        parent,
    };
    let (k, n) = (genesis.data_shards as usize, genesis.validators.len());
    Block::build(&position, 0, 0, after, txs, k, n).unwrap().0
}

/// `accounts` accounts from fixed seeds, and their state root (computed, as a node's
/// proven snapshot has it). Keys are made on every core.
fn ledger(accounts: usize) -> (Ledger, Hash) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = accounts.div_ceil(threads);
    let parts: Vec<Vec<(PublicKey, Account)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(accounts))
                        .map(|i| {
                            let i = i as u64;
                            let account = Account {
                                balance: 1_000 + i,
                                nonce: i % 7,
                            };
                            (key(ACCOUNT_SEED + i).public(), account)
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut ledger = Ledger::from_accounts(parts.into_iter().flatten());
    assert_eq!(ledger.len(), accounts);
    let root = ledger.state_root();
    (ledger, root)
}

/// What a node does to answer `GET /v1/accounts/{addr}/proof` from its proven
/// snapshot: look the account up, prove it, encode.
fn make_account_proof(ledger: &Ledger, at: &CertifiedHeader, address: &PublicKey) -> Vec<u8> {
    let trie = ledger.snapshot();
    encode(&AccountProof {
        address: *address,
        account: trie.get(address).copied(),
        trie: trie.prove(address),
        at: at.clone(),
    })
    .unwrap()
}

/// Prints the average, 99th percentile and largest of `sizes`.
fn print_sizes(what: &str, sizes: &[usize]) {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let total: usize = sorted.iter().sum();
    let avg = total as f64 / sorted.len().max(1) as f64;
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    let max = sorted[sorted.len() - 1];
    println!(
        "{what}: avg {avg:.1} bytes, p99 {p99}, max {max} over {}",
        sorted.len()
    );
}

fn account_proofs(c: &mut Criterion) {
    let accounts = accounts();
    let started = Instant::now();
    let (ledger, state_root) = ledger(accounts);
    println!(
        "proof: ledger of {accounts} accounts built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let after = AfterParent {
        state_root,
        outcome_root: Hash::of(b"outcomes of block 9"),
    };
    let present: Vec<PublicKey> = (0..SIZED_KEYS)
        .map(|j| key(ACCOUNT_SEED + pick(j, accounts as u64)).public())
        .collect();
    let absent: Vec<PublicKey> = (0..SIZED_KEYS)
        .map(|j| key(ABSENT_SEED + j).public())
        .collect();

    for validators in VALIDATORS {
        let genesis = genesis(validators);
        let checker = Checker::new(&genesis).unwrap();
        let at = certify(
            &genesis,
            &block(&genesis, 10, Hash::of(b"block 9"), after, Vec::new()).header,
        );
        let label = format!("accounts={accounts},validators={validators}");
        println!(
            "proof::account_bytes/{label}: certified header {} bytes ({} signatures)",
            encode(&at).unwrap().len(),
            at.certificate.signatures.len()
        );
        let mut timed = Vec::new();
        for (kind, keys, exists) in [("present", &present, true), ("absent", &absent, false)] {
            let proofs: Vec<(PublicKey, Vec<u8>)> = keys
                .iter()
                .map(|address| (*address, make_account_proof(&ledger, &at, address)))
                .collect();
            let sizes: Vec<usize> = proofs.iter().map(|(_, bytes)| bytes.len()).collect();
            print_sizes(&format!("proof::account_bytes/{label},{kind}"), &sizes);
            let proofs: Vec<_> = proofs.into_iter().take(TIMED_KEYS).collect();
            for (address, bytes) in &proofs {
                assert_eq!(
                    checker.account(address, bytes).unwrap().value.exists,
                    exists
                );
            }
            timed.push((kind, proofs));
        }

        // Decode, certificate, trie path: all that `Checker::account` does, cycling
        // through the timed keys. Decoding a key reads the process-wide cache of
        // parsed keys, warm after the first round here.
        let mut group = c.benchmark_group("proof::account_verify");
        for (kind, proofs) in &timed {
            let mut next = 0;
            group.bench_function(format!("{label},{kind}"), |b| {
                b.iter(|| {
                    let (address, bytes) = &proofs[next % proofs.len()];
                    next += 1;
                    checker.account(address, black_box(bytes))
                })
            });
        }
        group.finish();
        c.bench_function(
            &format!("proof::certificate_verify/validators={validators}"),
            |b| b.iter(|| checker.check_certified(black_box(&at))),
        );
        if validators != VALIDATORS[0] {
            continue;
        }
        // The parts of `Checker::account` that do not depend on n.
        let (_, present_proofs) = &timed[0];
        let decoded: Vec<(PublicKey, AccountProof)> = present_proofs
            .iter()
            .map(|(address, bytes)| {
                let proof = codec::decode(bytes, PROOF_BYTES_MAX).unwrap();
                (*address, proof)
            })
            .collect();
        let mut next = 0;
        c.bench_function(&format!("proof::account_decode/{label},present"), |b| {
            b.iter(|| {
                let (_, bytes) = &present_proofs[next % present_proofs.len()];
                next += 1;
                codec::decode::<AccountProof>(black_box(bytes), PROOF_BYTES_MAX)
            })
        });
        let mut next = 0;
        c.bench_function(
            &format!("proof::account_trie_verify/{label},present"),
            |b| {
                b.iter(|| {
                    let (address, proof) = &decoded[next % decoded.len()];
                    next += 1;
                    let root = &proof.at.header.state_root;
                    proof.trie.verify(root, address, proof.account.as_ref())
                })
            },
        );
        let mut next = 0;
        c.bench_function(&format!("proof::account_make/{label},present"), |b| {
            b.iter(|| {
                let address = &present[next % TIMED_KEYS];
                next += 1;
                make_account_proof(&ledger, &at, black_box(address))
            })
        });
    }
}

/// Proofs (transfer id, canonical bytes) of transfers at the first, last and sampled
/// positions of a block of [`BLOCK_TRANSFERS`] transfers, all applied, with both
/// headers certified by `genesis`'s validators.
fn transfer_proofs_of(genesis: &Genesis) -> Vec<(Hash, Vec<u8>)> {
    let chain = &genesis.chain_id;
    let to = key(SENDER_SEED - 1).public();
    let senders: Vec<Keypair> = (0..BLOCK_TRANSFERS as u64)
        .map(|j| key(SENDER_SEED + j))
        .collect();
    let txs: Vec<SignedTransfer> = senders
        .iter()
        .enumerate()
        .map(|(j, sender)| {
            Transfer {
                chain: chain.clone(),
                from: sender.public(),
                to,
                amount: 1 + j as u64 % 1_000,
                nonce: 0,
                valid_until: 1_000,
            }
            .sign(sender)
        })
        .collect();
    let funded: Vec<(PublicKey, u64)> = senders.iter().map(|k| (k.public(), 1_000_000)).collect();
    let mut ledger = Ledger::from_balances(&funded).unwrap();
    let before = AfterParent {
        state_root: ledger.state_root(),
        outcome_root: Hash::ZERO,
    };
    let one = block(genesis, 1, genesis.hash(), before, txs.clone());
    let verified: Vec<_> = verify_batch(txs, chain)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let execution = ledger.apply(1, &verified);
    assert!(
        execution
            .outcomes
            .iter()
            .all(|(_, o)| *o == TxOutcome::Applied)
    );
    let after = AfterParent {
        state_root: ledger.state_root(),
        outcome_root: outcome_root(&execution.outcomes),
    };
    let two = block(genesis, 2, one.header.hash(), after, Vec::new());
    let ids: Vec<Hash> = one.txs.iter().map(SignedTransfer::hash).collect();
    let tx_tree = MerkleTree::from_leaves(&ids).unwrap();
    let outcomes = outcome_tree(&execution.outcomes).unwrap();
    let (block, next) = (certify(genesis, &one.header), certify(genesis, &two.header));
    let last = BLOCK_TRANSFERS as u64 - 1;
    let positions = [0, last]
        .into_iter()
        .chain((0..SAMPLED_POSITIONS).map(|j| pick(j, BLOCK_TRANSFERS as u64)));
    positions
        .map(|index| {
            let index = index as usize;
            let proof = TxProof {
                transfer: one.txs[index].clone(),
                index: index as u32,
                tx_path: tx_tree.proof(index).unwrap(),
                block: block.clone(),
                outcome: execution.outcomes[index].1,
                outcome_path: outcomes.proof(index).unwrap(),
                next: next.clone(),
            };
            (ids[index], encode(&proof).unwrap())
        })
        .collect()
}

fn transfer_proofs(c: &mut Criterion) {
    let mut group = c.benchmark_group("proof::transfer_verify");
    for validators in VALIDATORS {
        let genesis = genesis(validators);
        let checker = Checker::new(&genesis).unwrap();
        let proofs = transfer_proofs_of(&genesis);
        for (id, bytes) in &proofs {
            let proven = checker.transfer(id, bytes).unwrap();
            assert_eq!(proven.value.outcome, TxOutcome::Applied);
        }
        let label = format!("block_transfers={BLOCK_TRANSFERS},validators={validators}");
        let sizes: Vec<usize> = proofs.iter().map(|(_, bytes)| bytes.len()).collect();
        print_sizes(&format!("proof::transfer_bytes/{label}"), &sizes);
        let mut next = 0;
        group.bench_function(label, |b| {
            b.iter(|| {
                let (id, bytes) = &proofs[next % proofs.len()];
                next += 1;
                checker.transfer(id, black_box(bytes))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, account_proofs, transfer_proofs);
criterion_main!(benches);
