//! Admission: what may enter the pool (signature already checked, in line or
//! within the gapped share, payable, within expiry and the bounds), reservations
//! for the transfers being written to the mempool log, and the refusals the API
//! answers with.

use super::*;

impl Mempool {
    /// Admits one transaction (verifying its signature).
    pub fn add(&mut self, tx: SignedTransfer, ledger: &Ledger) -> Result<TxHash, MempoolError> {
        self.add_batch(vec![tx], ledger)
            .pop()
            .unwrap_or(Err(MempoolError::Full { count: 0, bytes: 0 }))
    }

    /// Admits many transactions, verifying the new ones in one signature batch.
    /// Results are in input order.
    pub fn add_batch(
        &mut self,
        txs: Vec<SignedTransfer>,
        ledger: &Ledger,
    ) -> Vec<Result<TxHash, MempoolError>> {
        let mut results: Vec<Option<Result<TxHash, MempoolError>>> = Vec::with_capacity(txs.len());
        let mut to_verify = Vec::new();
        let mut slots = Vec::new();
        // Room left decides how many new ones are worth verifying: signature checks
        // are the expensive part, and a full pool must answer "full" cheaply.
        let mut room = self.config.count_max.saturating_sub(self.entries.len());
        for tx in txs {
            let hash = tx.hash();
            if self.committed.contains(&hash) {
                results.push(Some(Err(MempoolError::AlreadyCommitted(hash))));
            } else if self.entries.contains_key(&hash) {
                results.push(Some(Err(MempoolError::AlreadyPending(hash))));
            } else if room == 0 {
                results.push(Some(Err(MempoolError::Full {
                    count: self.entries.len(),
                    bytes: self.bytes,
                })));
            } else {
                room -= 1;
                slots.push(results.len());
                results.push(None);
                to_verify.push(tx);
            }
        }
        let verified = ledger::verify_batch(to_verify, &self.chain);
        for (slot, outcome) in slots.into_iter().zip(verified) {
            results[slot] = Some(match outcome {
                Ok(tx) => {
                    self.verified
                        .insert(verified_key(&tx.hash(), &tx.signed().signature));
                    self.admit(tx, ledger, false, true)
                }
                Err(e) => Err(MempoolError::Invalid(e)),
            });
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(MempoolError::Full { count: 0, bytes: 0 })))
            .collect()
    }

    /// Admits transactions whose signatures the caller already checked (with
    /// [`ledger::verify_batch`], outside any lock). Results are in input order.
    pub fn add_verified(
        &mut self,
        txs: Vec<Result<VerifiedTransfer, TxError>>,
        ledger: &Ledger,
    ) -> Vec<Result<TxHash, MempoolError>> {
        self.add_checked(txs, ledger, false, false)
    }

    /// [`Mempool::add_verified`] for transactions already in this node's mempool
    /// log: each admitted one, and each one that was already pending, is marked
    /// logged, so its departure is reported by [`Mempool::take_departed`].
    pub fn add_logged(
        &mut self,
        txs: Vec<Result<VerifiedTransfer, TxError>>,
        ledger: &Ledger,
    ) -> Vec<Result<TxHash, MempoolError>> {
        self.add_checked(txs, ledger, true, false)
    }

    /// [`Mempool::add_logged`] for submissions whose log write this node just
    /// made after [`Mempool::reserve`]: one that was pending (by gossip) when
    /// reserved, and so held nothing, and has left the pool since (dropped behind
    /// a gap) arrives anew and passes the arrival checks again (the gap share, the
    /// balance), so a drop is not undone by the write it overlapped.
    pub fn add_written(
        &mut self,
        txs: Vec<Result<VerifiedTransfer, TxError>>,
        ledger: &Ledger,
    ) -> Vec<Result<TxHash, MempoolError>> {
        self.add_checked(txs, ledger, true, true)
    }

    pub(super) fn add_checked(
        &mut self,
        txs: Vec<Result<VerifiedTransfer, TxError>>,
        ledger: &Ledger,
        logged: bool,
        written: bool,
    ) -> Vec<Result<TxHash, MempoolError>> {
        txs.into_iter()
            .map(|result| {
                let tx = result?;
                let hash = tx.hash();
                if self.committed.contains(&hash) {
                    if logged {
                        self.unreserve(&hash);
                    }
                    return Err(MempoolError::AlreadyCommitted(hash));
                }
                if let Some(entry) = self.entries.get_mut(&hash) {
                    entry.logged |= logged;
                    if logged {
                        self.unreserve(&hash);
                    }
                    return Err(MempoolError::AlreadyPending(hash));
                }
                self.verified
                    .insert(verified_key(&hash, &tx.signed().signature));
                let arriving = !logged || (written && !self.reserved.contains_key(&hash));
                let admitted = self.admit(tx, ledger, logged, arriving);
                if logged {
                    if admitted.is_ok() {
                        // Pending now: other submissions of the same bytes find the
                        // entry, so nothing more is held for them.
                        self.drop_reservation(&hash);
                    } else {
                        self.unreserve(&hash);
                    }
                }
                admitted
            })
            .collect()
    }

    /// Whether [`Mempool::add_logged`] will take `tx`: admit it, or mark it logged
    /// when it is pending but not logged yet (it came by gossip). A new one is
    /// reserved: its sender's nonce and its room are held for it until
    /// [`Mempool::add_logged`] takes it or [`Mempool::release`] gives them back, so
    /// once it is in the log, only the chain moving on (it committed, its nonce was
    /// used, it expired) can keep the pool from taking it, and a restart that reads
    /// the log back decides the same way.
    pub fn reserve(&mut self, tx: &VerifiedTransfer, ledger: &Ledger) -> Result<(), MempoolError> {
        let hash = tx.hash();
        if self.committed.contains(&hash) {
            return Err(MempoolError::AlreadyCommitted(hash));
        }
        match self.entries.get(&hash) {
            Some(entry) if entry.logged => return Err(MempoolError::AlreadyPending(hash)),
            Some(_) => return Ok(()),
            None => {}
        }
        if let Some(r) = self.reserved.get_mut(&hash) {
            r.holders += 1;
            return Ok(());
        }
        let Admissible { in_line, next } = self.admissible(tx, ledger, true)?;
        let gapped = !in_line;
        let t = tx.transfer();
        let bytes = encoded_len(tx.signed());
        self.reserved_gapped += usize::from(gapped);
        self.reserved.insert(
            hash,
            Reservation {
                from: t.from,
                nonce: t.nonce,
                amount: t.amount,
                bytes,
                holders: 1,
                gapped,
            },
        );
        self.reserved_nonces.insert((t.from, t.nonce), hash);
        self.reserved_bytes += bytes;
        self.book_held(t.from, t.nonce, t.amount, next);
        Ok(())
    }

    /// Gives back what [`Mempool::reserve`] held for `hashes` (their write to the log
    /// failed).
    pub fn release(&mut self, hashes: &[TxHash]) {
        for hash in hashes {
            self.unreserve(hash);
        }
    }

    pub(super) fn unreserve(&mut self, hash: &TxHash) {
        let Some(r) = self.reserved.get_mut(hash) else {
            return;
        };
        r.holders -= 1;
        if r.holders == 0 {
            self.drop_reservation(hash);
        }
    }

    pub(super) fn drop_reservation(&mut self, hash: &TxHash) {
        if let Some(r) = self.reserved.remove(hash) {
            self.reserved_nonces.remove(&(r.from, r.nonce));
            self.reserved_bytes -= r.bytes;
            self.reserved_gapped -= usize::from(r.gapped);
            self.book_released(r.from, r.nonce, r.amount);
        }
    }

    /// Why a new submission would be refused before its signatures are checked, if
    /// it would: the pool is full, or more than [`VERIFY_BACKLOG_MAX`] transactions
    /// (`verify_backlog`: gossiped ones and those in the signature queue) wait for
    /// signature checks. Either way the node
    /// answers at once and keeps its CPU for the transactions it already has.
    pub fn refusal(&self, verify_backlog: usize) -> Option<MempoolError> {
        if verify_backlog > VERIFY_BACKLOG_MAX {
            return Some(MempoolError::Busy {
                waiting: verify_backlog,
            });
        }
        self.is_full().then(|| MempoolError::Full {
            count: self.len(),
            bytes: self.bytes(),
        })
    }

    /// Whether the pool is at its count limit (callers skip verification then).
    pub fn is_full(&self) -> bool {
        self.entries.len() + self.reserved.len() >= self.config.count_max
    }

    /// The admission rules that depend on the pool's state and the ledger, not on
    /// whether the transaction is already known.
    /// `arriving`: whether the rules for new arrivals apply (gossip, a
    /// submission's reservation): the share of transfers behind nonce gaps, and the
    /// sender's balance less its pending spends. They do not apply to a transfer
    /// already in the mempool log: its reservation passed them, or a restart reads
    /// back what was answered 202, and that must not be refused for a share or a
    /// sum that the counting since the restart fills differently.
    /// Returns whether the transfer is in line (see [`Mempool::in_line`]), which
    /// decides whether it counts toward the gapped share once taken, and the
    /// sender's next nonce it was judged against.
    pub(super) fn admissible(
        &self,
        tx: &VerifiedTransfer,
        ledger: &Ledger,
        arriving: bool,
    ) -> Result<Admissible, MempoolError> {
        let t = tx.transfer();
        if let Some(height) = ledger.failed_at(&tx.hash()) {
            return Err(MempoolError::AlreadyFailed {
                hash: tx.hash(),
                height,
            });
        }
        if t.valid_until <= self.tip {
            return Err(MempoolError::Expired {
                valid_until: t.valid_until,
                tip: self.tip,
            });
        }
        if t.valid_until - self.tip > self.config.valid_for_max {
            return Err(MempoolError::ValidTooLong {
                valid_until: t.valid_until,
                tip: self.tip,
                max: self.config.valid_for_max,
            });
        }
        let account = ledger.account(&t.from);
        let next = account.nonce;
        if t.nonce < next {
            return Err(MempoolError::StaleNonce { next, got: t.nonce });
        }
        if t.nonce - next > self.config.nonce_ahead_max {
            return Err(MempoolError::NonceTooFarAhead {
                next,
                got: t.nonce,
                max: self.config.nonce_ahead_max,
            });
        }
        let pending = self
            .by_sender
            .get(&t.from)
            .and_then(|m| m.get(&t.nonce))
            .or_else(|| {
                self.reserved_nonces
                    .get(&(t.from, t.nonce))
                    .filter(|h| **h != tx.hash())
            });
        if let Some(pending) = pending {
            return Err(MempoolError::NonceTaken {
                nonce: t.nonce,
                pending: *pending,
            });
        }
        let in_line = self.in_line(&t.from, t.nonce, next);
        if arriving && !in_line && self.gapped() >= self.gapped_max() {
            return Err(MempoolError::Gapped {
                next,
                got: t.nonce,
                held: self.gapped(),
            });
        }
        // A transfer's own reservation is the room it takes, not room taken from it.
        let own = self.reserved.get(&tx.hash());
        let (own_count, own_bytes, own_amount) = own.map_or((0, 0, 0), |r| (1, r.bytes, r.amount));
        if arriving {
            let balance = account.balance;
            let mut pending = self
                .pending_spend(&t.from)
                .saturating_sub(u128::from(own_amount));
            if u128::from(balance) < pending + u128::from(t.amount) && in_line {
                // In line, it executes after the run before it and before the rest,
                // which would fail instead of it: only the run counts. Walks the
                // run, only when the sum of everything held is too much.
                pending = self.spend_before(&t.from, next, t.nonce);
            }
            let available = u128::from(balance).saturating_sub(pending);
            if available < u128::from(t.amount) {
                return Err(MempoolError::Unfunded {
                    balance,
                    pending,
                    available: u64::try_from(available).unwrap_or(u64::MAX),
                    amount: t.amount,
                });
            }
        }
        let bytes = encoded_len(tx.signed());
        let count = self.entries.len() + self.reserved.len() - own_count;
        let held = self.bytes + self.reserved_bytes - own_bytes;
        if count >= self.config.count_max || held + bytes > self.config.bytes_max {
            return Err(MempoolError::Full { count, bytes: held });
        }
        Ok(Admissible { in_line, next })
    }

    pub(super) fn admit(
        &mut self,
        tx: VerifiedTransfer,
        ledger: &Ledger,
        logged: bool,
        arriving: bool,
    ) -> Result<TxHash, MempoolError> {
        let hash = tx.hash();
        if !logged && self.reserved.contains_key(&hash) {
            // Its log write is in flight and admits it: taken now, it would count
            // twice until then.
            return Err(MempoolError::AlreadyPending(hash));
        }
        let Admissible { in_line, next } = self.admissible(&tx, ledger, arriving)?;
        let t = tx.transfer();
        let (from, nonce, amount) = (t.from, t.nonce, t.amount);
        self.gapped += usize::from(!in_line);
        let bytes = encoded_len(tx.signed());
        self.by_sender.entry(from).or_default().insert(nonce, hash);
        self.book_held(from, nonce, amount, next);
        self.by_expiry.insert((t.valid_until, hash));
        self.bytes += bytes;
        let round = self.round;
        self.entries.insert(
            hash,
            Box::new(Entry {
                tx,
                bytes,
                logged,
                round,
            }),
        );
        Ok(hash)
    }
}
