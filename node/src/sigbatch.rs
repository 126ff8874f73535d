//! Signature checks of API submissions and gossip, coalesced into large batches.
//!
//! A batch check costs ~20 µs per signature at 60 signatures and ~15 µs at 1,000
//! (docs/BENCHMARKS.md). Each HTTP request and each gossip job used to be checked as
//! its own batch; at 5,000 transfers/s half of all signatures were checked in
//! batches of 16-63 (a client's request). Requests now wait in one queue, and a
//! checking thread takes every request waiting (up to [`BATCH_TXS_MAX`] transfers)
//! into one batch: the busier the node, the larger the batches.
//!
//! Each request is one or more groups (an HTTP request, a gossip message). When the
//! combined batch fails, each group is checked on its own
//! ([`crate::ledger::verify_groups`]), so one sender's bad signature costs the others
//! one extra batch check, not a check per signature.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use mosaic_crypto::ChainId;

use crate::chain::{Shared, lock};
use crate::ledger::{SignedTransfer, TxError, VerifiedTransfer};
use crate::mempool::{prepare, verify_unknown_groups};
use crate::verify_pool::VerifyPool;

/// Transfers taken into one batch at most (a single larger request is taken whole).
pub const BATCH_TXS_MAX: usize = 1_024;
/// Checking threads draining the queue at once, at least (the pool's thread count
/// when larger).
pub const DRAINERS_MIN: usize = 2;
/// Transfers waiting at most before a bounded request ([`SigBatcher::check`], the
/// API's) is refused; gossip is bounded by the event loop's jobs in flight instead,
/// so API load cannot crowd it out.
pub const WAITING_TXS_MAX: usize = 20_000;

/// Results per group, in input order; `None` if the check failed unexpectedly.
pub type Checked = Option<Vec<Vec<Result<VerifiedTransfer, TxError>>>>;
type Reply = Box<dyn FnOnce(Checked) + Send>;

struct Request {
    groups: Vec<Vec<SignedTransfer>>,
    txs: usize,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Request>,
    txs: usize,
    drainers: usize,
}

/// The shared queue of signature checks (cheap to clone).
#[derive(Clone)]
pub struct SigBatcher {
    drainers_max: usize,
    chain: ChainId,
    shared: Arc<Mutex<Shared>>,
    pool: VerifyPool,
    queue: Arc<Mutex<Queue>>,
}

impl std::fmt::Debug for SigBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigBatcher").finish_non_exhaustive()
    }
}

impl SigBatcher {
    /// A queue whose checks run on `pool`; transfers this node already verified
    /// (the mempool's memory, looked up in `shared` when a batch starts) are not
    /// checked again.
    pub fn new(chain: ChainId, shared: Arc<Mutex<Shared>>, pool: VerifyPool) -> Self {
        SigBatcher {
            drainers_max: pool.threads().max(DRAINERS_MIN),
            chain,
            shared,
            pool,
            queue: Arc::new(Mutex::new(Queue::default())),
        }
    }

    /// Transfers waiting for a check.
    pub fn waiting(&self) -> usize {
        self.lock().txs
    }

    /// Queues `groups` for checking; `reply` gets the results (per group, in input
    /// order) on a checking thread, or `None` if no checking thread could be started
    /// or the check panicked. The caller bounds what it queues (gossip: the event
    /// loop's jobs in flight); [`Self::check`] is the bounded form.
    pub fn submit(
        &self,
        groups: Vec<Vec<SignedTransfer>>,
        reply: impl FnOnce(Checked) + Send + 'static,
    ) {
        self.enqueue(groups, None, Box::new(reply));
    }

    /// Queues unless `limit` transfers (when given) already wait; `false` (and
    /// `reply` dropped uncalled) when refused.
    fn enqueue(
        &self,
        groups: Vec<Vec<SignedTransfer>>,
        limit: Option<usize>,
        reply: Reply,
    ) -> bool {
        let txs: usize = groups.iter().map(Vec::len).sum();
        let start_drainer = {
            let mut q = self.lock();
            if limit.is_some_and(|limit| q.txs > 0 && q.txs + txs > limit) {
                return false;
            }
            q.txs += txs;
            q.requests.push_back(Request { groups, txs, reply });
            let start = q.drainers < self.drainers_max;
            if start {
                q.drainers += 1;
            }
            start
        };
        if start_drainer {
            let this = self.clone();
            if !self.pool.spawn(move || this.drain()) {
                let orphans: Vec<Request> = {
                    let mut q = self.lock();
                    q.drainers -= 1;
                    if q.drainers == 0 {
                        q.txs = 0;
                        q.requests.drain(..).collect()
                    } else {
                        Vec::new()
                    }
                };
                // No thread will take them: answer "not checked" rather than never.
                for request in orphans {
                    (request.reply)(None);
                }
            }
        }
        true
    }

    /// Queues `txs` and waits for their results (input order); `None` if
    /// [`WAITING_TXS_MAX`] transfers already wait, no checking thread could be
    /// started or the check failed unexpectedly.
    pub async fn check(
        &self,
        txs: Vec<SignedTransfer>,
    ) -> Option<Vec<Result<VerifiedTransfer, TxError>>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: Reply = Box::new(move |checked: Checked| {
            let _ = tx.send(checked.and_then(|mut groups| groups.pop()));
        });
        let queued = self.enqueue(vec![txs], Some(WAITING_TXS_MAX), reply);
        if !queued {
            return None;
        }
        rx.await.ok().flatten()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue is consistent between statements; a panicking reply cannot
        // leave it half changed.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes batches off the queue until it is empty (runs on a checking thread).
    fn drain(&self) {
        loop {
            let batch: Vec<Request> = {
                let mut q = self.lock();
                let mut batch = Vec::new();
                let mut txs = 0;
                while let Some(next) = q.requests.front() {
                    if !batch.is_empty() && txs + next.txs > BATCH_TXS_MAX {
                        break;
                    }
                    txs += next.txs;
                    if let Some(request) = q.requests.pop_front() {
                        batch.push(request);
                    }
                }
                q.txs -= txs;
                if batch.is_empty() {
                    q.drainers -= 1;
                    return;
                }
                batch
            };
            self.check_batch(batch);
        }
    }

    fn check_batch(&self, batch: Vec<Request>) {
        let mut sizes = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut groups = Vec::new();
        for request in batch {
            sizes.push(request.groups.len());
            replies.push(request.reply);
            groups.extend(request.groups);
        }
        let chain = &self.chain;
        let shared = &self.shared;
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let prepared: Vec<_> = groups.into_iter().map(prepare).collect();
            let sorted: Vec<_> = {
                let shared = lock(shared);
                prepared
                    .into_iter()
                    .map(|group| shared.mempool.known(group))
                    .collect()
            };
            verify_unknown_groups(sorted, chain)
        }));
        let answers: Vec<Checked> = match checked {
            Ok(results) => {
                let mut results = results.into_iter();
                sizes
                    .into_iter()
                    .map(|size| Some(results.by_ref().take(size).collect()))
                    .collect()
            }
            Err(_) => {
                tracing::error!("a signature batch check panicked; its requests are refused");
                sizes.iter().map(|_| None).collect()
            }
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // Each reply on its own: one that panics must not drop the others.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reply(answer))).is_err() {
                tracing::error!("answering a signature check panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Tip;
    use crate::ledger::{Ledger, Transfer};
    use crate::mempool::{Mempool, MempoolConfig};
    use mosaic_crypto::{Hash, Keypair};

    /// The last valid height of the test transfers.
    const VALID_UNTIL: u64 = 1_000;

    fn chain() -> ChainId {
        ChainId::new("chain-test").unwrap()
    }

    fn tx(seed: u64, nonce: u64) -> SignedTransfer {
        let key = Keypair::from_seed_for_tests(seed);
        Transfer {
            chain: chain(),
            from: key.public(),
            to: Keypair::from_seed_for_tests(seed + 1_000).public(),
            amount: 1,
            nonce,
            valid_until: VALID_UNTIL,
        }
        .sign(&key)
    }

    fn batcher() -> SigBatcher {
        let mut ledger = Ledger::from_balances(&[]).unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            tip: Tip {
                height: 0,
                hash: Hash::from_bytes([0u8; 32]),
                state_root: ledger.state_root(),
                outcome_root: Hash::ZERO,
            },
            ledger,
            mempool: Mempool::new(chain(), MempoolConfig::default(), 0),
            backlog: Default::default(),
            proven: None,
        }));
        SigBatcher::new(chain(), shared, VerifyPool::start(2).unwrap())
    }

    #[tokio::test]
    async fn answers_each_request_with_its_own_results_in_order() {
        let b = batcher();
        let mut forged = tx(3, 0);
        forged.transfer.amount = 2;
        // Many requests at once, one with a forged signature: each gets exactly
        // its own results, in order, and only the forged entry fails.
        let requests: Vec<Vec<SignedTransfer>> = (0..40)
            .map(|r| {
                if r == 7 {
                    vec![tx(1, 0), forged.clone(), tx(2, 0)]
                } else {
                    (0..5).map(|i| tx(10 + r * 5 + i, i)).collect()
                }
            })
            .collect();
        let answers =
            futures::future::join_all(requests.iter().cloned().map(|txs| b.check(txs))).await;
        for (r, (request, answer)) in requests.iter().zip(answers).enumerate() {
            let answer = answer.unwrap_or_else(|| panic!("request {r} not answered"));
            assert_eq!(answer.len(), request.len());
            for (i, (sent, got)) in request.iter().zip(answer).enumerate() {
                if r == 7 && i == 1 {
                    assert!(matches!(got, Err(TxError::BadSignature { .. })), "{got:?}");
                } else {
                    assert_eq!(got.unwrap().hash(), sent.hash(), "request {r} entry {i}");
                }
            }
        }
        assert_eq!(b.waiting(), 0);
    }

    #[tokio::test]
    async fn groups_of_one_request_stay_apart() {
        let b = batcher();
        let (reply, answer) = tokio::sync::oneshot::channel();
        b.submit(
            vec![vec![tx(1, 0)], vec![], vec![tx(2, 0), tx(3, 0)]],
            move |c| {
                let _ = reply.send(c);
            },
        );
        let groups = answer.await.unwrap().unwrap();
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 0, 2]);
        assert!(groups.iter().flatten().all(Result::is_ok));
    }

    #[tokio::test]
    async fn a_panicking_reply_does_not_stop_the_checks() {
        let b = batcher();
        // More panics than drainers: a drainer lost to each would leave none.
        for round in 0..(DRAINERS_MIN as u64 + 2) {
            b.submit(vec![vec![tx(round + 1, 0)]], |_| {
                std::panic::panic_any("reply failed on purpose")
            });
            let answer = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                b.check(vec![tx(round + 50, 0)]),
            )
            .await
            .unwrap_or_else(|_| panic!("round {round}: no answer"));
            assert!(answer.is_some_and(|r| r.len() == 1 && r[0].is_ok()));
        }
    }

    #[test]
    fn refuses_beyond_the_waiting_limit() {
        let b = batcher();
        // As if WAITING_TXS_MAX transfers were waiting: the API's form is refused,
        // gossip's is not.
        b.lock().txs = WAITING_TXS_MAX;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(runtime.block_on(b.check(vec![tx(1, 0)])).is_none());
        let (reply, answer) = std::sync::mpsc::channel();
        b.submit(vec![vec![tx(2, 0)]], move |c| {
            let _ = reply.send(c.is_some());
        });
        assert_eq!(
            answer.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(true)
        );
    }
}
