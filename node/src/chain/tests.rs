use super::*;
use crate::ledger::{SignedTransfer, Transfer};
use crate::mempool::MempoolConfig;
use mosaic_consensus::View;
use mosaic_crypto::Keypair;
use mosaic_storage::StoreConfig;

/// The last valid height of the test transfers.
const VALID_UNTIL: u64 = 1_000;

const K: usize = 2;
const N: usize = 4;

fn chain_id() -> ChainId {
    ChainId::new("chain-test").unwrap()
}

fn layout() -> Layout {
    Layout {
        chain: chain_id(),
        data_shards: K,
        total_shards: N,
    }
}

fn key(i: u64) -> Keypair {
    Keypair::from_seed_for_tests(i)
}

/// A node's execution side over a fresh store with accounts 1..=3 funded.
fn node(dir: &std::path::Path) -> (BlockCheck, Chain, Arc<NodeStore>) {
    let store = Arc::new(NodeStore::open(&dir.join("store.redb"), StoreConfig::default()).unwrap());
    let mut ledger = Ledger::from_balances(&[
        (key(1).public(), 1_000),
        (key(2).public(), 1_000),
        (key(3).public(), 1_000),
    ])
    .unwrap();
    let accounts: Vec<_> = ledger.accounts().map(|(k, a)| (*k, *a)).collect();
    store.initialize([7u8; 32], &accounts).unwrap();
    let tip = Tip {
        height: 0,
        hash: Hash::from_bytes([7u8; 32]),
        state_root: ledger.state_root(),
        outcome_root: Hash::ZERO,
    };
    let shared = Arc::new(Mutex::new(Shared {
        ledger,
        mempool: Mempool::new(chain_id(), MempoolConfig::default(), 0),
        tip,
        backlog: Default::default(),
        proven: None,
    }));
    let checked = CheckedBlocks::default();
    let check = BlockCheck::new(shared.clone(), layout(), checked.clone());
    let chain = Chain::new(
        shared,
        store.clone(),
        layout(),
        0,
        checked,
        Arc::new(ProofCache::default()),
    );
    (check, chain, store)
}

fn transfers(nonce: u64) -> Vec<SignedTransfer> {
    (1..=3)
        .map(|from| {
            Transfer {
                chain: chain_id(),
                from: key(from).public(),
                to: key(from % 3 + 1).public(),
                amount: 10 + from,
                nonce,
                valid_until: VALID_UNTIL,
            }
            .sign(&key(from))
        })
        .collect()
}

fn block_after(tip: Tip, txs: Vec<SignedTransfer>) -> Block {
    let position = Position {
        chain: chain_id(),
        height: tip.height + 1,
        parent: tip.hash,
    };
    Block::build(&position, 0, 0, tip.after(), txs, K, N)
        .unwrap()
        .0
}

fn certificate(height: u64, digest: Digest) -> CommitCertificate {
    CommitCertificate {
        view: View(0),
        seq: SeqNum(height),
        digest,
        signatures: Vec::new(),
    }
}

/// Executing a block checked as a proposal (from the hand-over) and one that was
/// not (decoded and verified again) gives the same state and stored block.
#[test]
fn checked_and_unchecked_blocks_execute_the_same() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (check_a, chain_a, store_a) = node(dir_a.path());
    let (_, chain_b, store_b) = node(dir_b.path());
    for round in 0..3 {
        let block = block_after(chain_a.tip(), transfers(round));
        let payload = block.to_bytes();
        let height = SeqNum(round + 1);
        let digest = check_a
            .check(height, Digest(chain_a.tip().hash), &payload)
            .unwrap();
        assert_eq!(digest, Digest(block.header.hash()));
        assert!(check_a.checked.guard().iter().any(|(d, _)| *d == digest));
        chain_a
            .execute(height, digest, &payload, certificate(height.0, digest))
            .unwrap();
        // Handed over and gone.
        assert!(check_a.checked.guard().is_empty());
        chain_b
            .execute(height, digest, &payload, certificate(height.0, digest))
            .unwrap();
        assert_eq!(chain_a.tip(), chain_b.tip());
        assert_eq!(store_a.accounts().unwrap(), store_b.accounts().unwrap());
        assert_eq!(
            store_a.header(height.0).unwrap(),
            store_b.header(height.0).unwrap()
        );
    }
}

fn signed(from: u64, to: u64, amount: u64, nonce: u64) -> SignedTransfer {
    Transfer {
        chain: chain_id(),
        from: key(from).public(),
        to: key(to).public(),
        amount,
        nonce,
        valid_until: VALID_UNTIL,
    }
    .sign(&key(from))
}

/// Checks and executes `txs` as the next block; returns the check's verdict
/// (a refused block is executed anyway, as a certified block that this node
/// did not check would be).
fn next_block(check: &BlockCheck, chain: &Chain, txs: Vec<SignedTransfer>) -> Result<(), String> {
    let tip = chain.tip();
    let block = block_after(tip, txs);
    let payload = block.to_bytes();
    let seq = SeqNum(tip.height + 1);
    let verdict = check.check(seq, Digest(tip.hash), &payload).map(|_| ());
    let digest = Digest(block.header.hash());
    chain
        .execute(seq, digest, &payload, certificate(seq.0, digest))
        .unwrap();
    verdict
}

/// A transfer that failed (no funds) stays failed: once its sender has funds,
/// the same signed bytes (which still carry the unused nonce) are refused by
/// the block check and, in a block this node did not check, fail again with
/// `AlreadyFailed` instead of moving the money; the store keeps what a restart
/// needs to know it.
#[test]
fn a_failed_transfer_never_applies_later() {
    let dir = tempfile::tempdir().unwrap();
    let (check, chain, store) = node(dir.path());
    let unfunded = 9;
    let first = signed(unfunded, 1, 5, 0);
    next_block(&check, &chain, vec![first.clone()]).unwrap();
    assert_eq!(
        store.tx_records(first.hash().as_bytes()).unwrap()[0]
            .1
            .outcome,
        TxOutcome::Failed(crate::ledger::FailReason::InsufficientBalance {
            balance: 0,
            amount: 5
        })
    );
    next_block(&check, &chain, vec![signed(1, unfunded, 100, 0)]).unwrap();
    let refused = next_block(&check, &chain, vec![first.clone()]).unwrap_err();
    assert!(refused.contains("already failed in block 1"), "{refused}");
    let records = store.tx_records(first.hash().as_bytes()).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[1].1.outcome,
        TxOutcome::Failed(crate::ledger::FailReason::AlreadyFailed { height: 1 })
    );
    let shared = lock(&chain.shared);
    assert_eq!(shared.ledger.account(&key(unfunded).public()).balance, 100);
    assert_eq!(shared.ledger.account(&key(1).public()).balance, 900);
    assert_eq!(shared.ledger.failed_at(&first.hash()), Some(1));
    drop(shared);
    assert_eq!(
        store.live_ids().unwrap(),
        vec![(*first.hash().as_bytes(), 1, VALID_UNTIL)],
        "a restart rebuilds the failed transfers from the store"
    );
}

/// A transfer that applied cannot be carried again: its nonce is used, so a
/// proposal holding it (a faulty primary replaying it before it expires) is
/// refused, and no certified block can show the payment as failed afterwards.
#[test]
fn an_applied_transfer_is_refused_in_a_later_proposal() {
    let dir = tempfile::tempdir().unwrap();
    let (check, chain, _) = node(dir.path());
    let paid = signed(1, 2, 5, 0);
    next_block(&check, &chain, vec![paid.clone()]).unwrap();
    let refused = next_block(&check, &chain, vec![paid.clone()]).unwrap_err();
    assert!(refused.contains("nonce 0 is used"), "{refused}");
    let other = signed(1, 3, 7, 0);
    let refused = next_block(&check, &chain, vec![other]).unwrap_err();
    assert!(refused.contains("nonce 0 is used"), "{refused}");
    next_block(&check, &chain, vec![signed(1, 2, 5, 1)]).unwrap();
    let shared = lock(&chain.shared);
    assert_eq!(shared.ledger.account(&key(2).public()).balance, 1_010);
    assert_eq!(shared.ledger.account(&key(1).public()).nonce, 2);
}

/// The primary's own block passes its check without decoding: same digest as a
/// full check of the same payload, and it executes like any checked block. Any
/// other payload, position or stale tip takes the full path.
#[test]
fn own_blocks_pass_by_their_payload_and_nothing_else_does() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (check, chain, store) = node(dir_a.path());
    let (check_b, chain_b, store_b) = node(dir_b.path());
    let tip = chain.tip();
    let parent = Digest(tip.hash);
    let verified: Vec<VerifiedTransfer> = crate::ledger::verify_batch(transfers(0), &chain_id())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let build = |txs: Vec<VerifiedTransfer>, root: Hash| {
        check
            .checked
            .build_own(
                &layout(),
                (SeqNum(1), parent),
                0,
                0,
                AfterParent {
                    state_root: root,
                    outcome_root: tip.outcome_root,
                },
                txs,
            )
            .unwrap()
            .0
    };
    // Another payload than the one built: checked in full (here: refused).
    build(verified.clone(), tip.state_root);
    let mut tampered = block_after(tip, transfers(0));
    tampered.header.tx_count += 1;
    assert!(
        check
            .check(SeqNum(1), parent, &tampered.to_bytes())
            .is_err()
    );
    // Taken by that check: the built payload itself now takes the full path too.
    assert!(lock_cache(&check.checked.own).is_none());
    // Built with a stale state root: refused like any proposal.
    let stale = build(verified.clone(), Hash::of(b"old state"));
    let refused = check.check(SeqNum(1), parent, &stale).unwrap_err();
    assert!(refused.contains("state root"), "{refused}");
    // At another height: not matched.
    let payload = build(verified.clone(), tip.state_root);
    assert!(check.check(SeqNum(2), parent, &payload).is_err());
    // The real thing.
    let payload = build(verified, tip.state_root);
    let digest = check.check(SeqNum(1), parent, &payload).unwrap();
    assert!(lock_cache(&check.checked.own).is_none());
    same_as_a_full_check(
        (&chain, &store),
        (&check_b, &chain_b, &store_b),
        &payload,
        digest,
    );
}

/// Node b checks `payload` in full and gets `digest`, the digest node a's
/// shortcut gave; both execute it and end with the same chain and state.
fn same_as_a_full_check(
    (chain, store): (&Chain, &NodeStore),
    (check_b, chain_b, store_b): (&BlockCheck, &Chain, &NodeStore),
    payload: &[u8],
    digest: Digest,
) {
    let parent = Digest(chain.tip().hash);
    assert_eq!(
        digest,
        check_b.check(SeqNum(1), parent, payload).unwrap(),
        "a full check gives the same digest"
    );
    chain
        .execute(SeqNum(1), digest, payload, certificate(1, digest))
        .unwrap();
    chain_b
        .execute(SeqNum(1), digest, payload, certificate(1, digest))
        .unwrap();
    assert_eq!(chain.tip(), chain_b.tip());
    assert_eq!(store.header(1).unwrap(), store_b.header(1).unwrap());
    assert_eq!(store.body(1).unwrap(), store_b.body(1).unwrap());
    assert_eq!(store.accounts().unwrap(), store_b.accounts().unwrap());
}

/// A block assembled from a compact proposal is checked for what depends on the
/// state, gives the digest a full check gives, and executes alike.
#[test]
fn assembled_blocks_skip_decoding_not_the_state_checks() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (check, chain, store) = node(dir_a.path());
    let (check_b, chain_b, store_b) = node(dir_b.path());
    let tip = chain.tip();
    let parent = Digest(tip.hash);
    let verify = |txs: Vec<SignedTransfer>| -> Vec<VerifiedTransfer> {
        crate::ledger::verify_batch(txs, &chain_id())
            .into_iter()
            .map(Result::unwrap)
            .collect()
    };
    let assemble = |block: &Block| {
        check.checked.assemble(
            &layout(),
            (SeqNum(block.header.height), Digest(block.header.parent)),
            block.header.clone(),
            verify(block.txs.clone()),
        )
    };
    // A header whose fragment root is not its body's is refused at assembly.
    let mut bad_root = block_after(tip, transfers(0));
    bad_root.header.fragments.root = Hash::ZERO;
    assert!(assemble(&bad_root).is_err());
    // A stale state root passes assembly (it needs the state) and fails the check.
    let mut stale = block_after(tip, transfers(0));
    stale.header.state_root = Hash::of(b"old state");
    let payload = assemble(&stale).unwrap();
    assert_eq!(payload, stale.to_bytes());
    let refused = check.check(SeqNum(1), parent, &payload).unwrap_err();
    assert!(refused.contains("state root"), "{refused}");
    // One transfer twice: refused like any proposal.
    let mut txs = transfers(0);
    txs.push(txs[0].clone());
    let twice = block_after(tip, txs);
    let refused = check
        .check(SeqNum(1), parent, &assemble(&twice).unwrap())
        .unwrap_err();
    assert!(refused.contains("twice"), "{refused}");
    // The real thing.
    let block = block_after(tip, transfers(0));
    let payload = assemble(&block).unwrap();
    let digest = check.check(SeqNum(1), parent, &payload).unwrap();
    assert!(
        lock_cache(&check.checked.assembled).is_empty(),
        "taken once"
    );
    same_as_a_full_check(
        (&chain, &store),
        (&check_b, &chain_b, &store_b),
        &payload,
        digest,
    );
}

/// A proposal holding one transfer twice is refused, and nothing is handed over.
#[test]
fn a_transfer_twice_in_a_proposal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (check, chain, _) = node(dir.path());
    let tip = chain.tip();
    let mut txs = transfers(0);
    txs.push(txs[1].clone());
    let payload = block_after(tip, txs).to_bytes();
    let refused = check
        .check(SeqNum(1), Digest(tip.hash), &payload)
        .unwrap_err();
    assert!(refused.contains("appears twice"), "{refused}");
    assert!(check.checked.guard().is_empty());
}

/// A checked block whose digest is not the one delivered is not used, and the
/// checked blocks kept stay bounded.
#[test]
fn checked_blocks_are_matched_by_digest_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (check, chain, _) = node(dir.path());
    let tip = chain.tip();
    let mut digests = Vec::new();
    for amount in 0..(CHECKED_KEPT_MAX as u64 + 3) {
        let tx = Transfer {
            chain: chain_id(),
            from: key(1).public(),
            to: key(2).public(),
            amount: amount + 1,
            nonce: 0,
            valid_until: VALID_UNTIL,
        }
        .sign(&key(1));
        let payload = block_after(tip, vec![tx]).to_bytes();
        digests.push(check.check(SeqNum(1), Digest(tip.hash), &payload).unwrap());
    }
    assert_eq!(check.checked.guard().len(), CHECKED_KEPT_MAX);
    // The delivered block was evicted: execution decodes the payload itself.
    let evicted = block_after(
        tip,
        vec![
            Transfer {
                chain: chain_id(),
                from: key(1).public(),
                to: key(2).public(),
                amount: 1,
                nonce: 0,
                valid_until: VALID_UNTIL,
            }
            .sign(&key(1)),
        ],
    );
    assert_eq!(Digest(evicted.header.hash()), digests[0]);
    chain
        .execute(
            SeqNum(1),
            digests[0],
            &evicted.to_bytes(),
            certificate(1, digests[0]),
        )
        .unwrap();
    assert_eq!(chain.tip().hash, evicted.header.hash());
    // Everything kept for height 1 is forgotten once it is executed.
    assert!(check.checked.guard().is_empty());
}
