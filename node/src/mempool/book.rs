//! Per sender, the book of what the pool holds (pending or reserved for a log
//! write): the run of consecutive nonces from its next one, so "in line" and the
//! next pending nonce cost one lookup, and the amounts together, so admission can
//! refuse what the confirmed balance less the pending spends cannot pay. And the
//! gapped share: transfers behind a gap hold at most a quarter of the pool.

use super::*;

impl Mempool {
    /// The most entries behind nonce gaps the pool holds: a quarter of its count
    /// limit, so three quarters stay for transfers blocks can take.
    pub fn gapped_max(&self) -> usize {
        (self.config.count_max / 4).max(1)
    }

    /// Entries and reservations behind nonce gaps, as counted for
    /// [`Mempool::gapped_max`] (at least the true number, but for reservations
    /// given back since the last block).
    pub fn gapped(&self) -> usize {
        self.gapped + self.reserved_gapped
    }

    /// Whether a transfer of `sender` with `nonce` would be next in line once
    /// admitted: its nonce is the account's `next`, or every nonce from `next` up
    /// to it is pending or reserved (a reservation is the one in-flight write of
    /// its sender's nonce, so a run through it is judged as if it were pending).
    /// One lookup: the sender's run of held nonces ([`SenderBook::run`]) answers
    /// it whenever `next` lies within the run, as it does for the ledger the pool
    /// follows; any other `next` walks up from it (bounded by what is held).
    pub(super) fn in_line(&self, sender: &PublicKey, nonce: u64, next: u64) -> bool {
        if nonce <= next {
            return nonce == next;
        }
        self.run_end(sender, next) >= nonce
    }

    /// The first nonce from `next` on that the pool holds neither pending nor
    /// reserved for `sender`.
    pub(super) fn run_end(&self, sender: &PublicKey, next: u64) -> u64 {
        match self.books.get(sender) {
            None => next,
            Some(book) if book.run.0 <= next && next <= book.run.1 => book.run.1,
            Some(_) => self.walk(sender, next),
        }
    }

    /// Whether `sender`'s `nonce` is pending or reserved here.
    pub(super) fn holds(&self, sender: &PublicKey, nonce: u64) -> bool {
        self.by_sender
            .get(sender)
            .is_some_and(|m| m.contains_key(&nonce))
            || self.reserved_nonces.contains_key(&(*sender, nonce))
    }

    /// The first nonce from `from` on that is not held, found by looking at each:
    /// costs the length of the run, at most what the sender holds.
    pub(super) fn walk(&self, sender: &PublicKey, from: u64) -> u64 {
        let mut nonce = from;
        while nonce < u64::MAX && self.holds(sender, nonce) {
            nonce += 1;
        }
        nonce
    }

    /// Books a transfer of `amount` at `nonce` that was just added to the entries
    /// or the reservations; `next` is the sender's next nonce in the ledger the
    /// admission checked against. Extends the run when the nonce is its end (a walk
    /// over what follows, each held nonce passed once until a removal cuts the run
    /// before it).
    pub(super) fn book_held(&mut self, sender: PublicKey, nonce: u64, amount: u64, next: u64) {
        let run = match self.books.get(&sender) {
            Some(book) if book.run.0 <= next && next <= book.run.1 => {
                if nonce == book.run.1 {
                    (next, self.walk(&sender, nonce))
                } else {
                    (next, book.run.1)
                }
            }
            Some(_) => (next, self.walk(&sender, next)),
            // Nothing else of the sender is held: only this nonce.
            None if nonce == next => (next, next.saturating_add(1)),
            None => (next, next),
        };
        let book = self.books.entry(sender).or_insert(SenderBook {
            held: 0,
            spend: 0,
            run,
        });
        book.held += 1;
        book.spend += u128::from(amount);
        book.run = run;
    }

    /// Books a transfer that left the entries or the reservations. If nothing else
    /// holds its nonce now: the run starts after it when it was the run's first
    /// (a block took it: the sender's next nonce moves there), or ends at it when
    /// it was further in.
    pub(super) fn book_released(&mut self, sender: PublicKey, nonce: u64, amount: u64) {
        let still_held = self.holds(&sender, nonce);
        let Some(book) = self.books.get_mut(&sender) else {
            return;
        };
        book.held = book.held.saturating_sub(1);
        book.spend = book.spend.saturating_sub(u128::from(amount));
        if !still_held && book.run.0 <= nonce && nonce < book.run.1 {
            if nonce == book.run.0 {
                book.run.0 = nonce + 1;
            } else {
                book.run.1 = nonce;
            }
        }
        if book.held == 0 {
            self.books.remove(&sender);
        }
    }

    /// Moves `sender`'s run to start at its new next nonce `next` (a block used the
    /// nonces before it): the same run's tail when `next` lies within it, else
    /// measured again from `next`.
    pub(super) fn book_next_nonce(&mut self, sender: &PublicKey, next: u64) {
        let Some(run) = self.books.get(sender).map(|b| b.run) else {
            return;
        };
        let run = if run.0 <= next && next <= run.1 {
            (next, run.1)
        } else {
            (next, self.walk(sender, next))
        };
        if let Some(book) = self.books.get_mut(sender) {
            book.run = run;
        }
    }

    /// What `sender`'s transfers pending or reserved here with nonces from `next`
    /// up to `nonce` (not included) spend together: one lookup per nonce.
    pub(super) fn spend_before(&self, sender: &PublicKey, next: u64, nonce: u64) -> u128 {
        let pending = self.by_sender.get(sender);
        (next..nonce)
            .map(|n| {
                let entry = pending
                    .and_then(|m| m.get(&n))
                    .and_then(|h| self.entries.get(h))
                    .map(|e| e.tx.transfer().amount);
                let reserved = || {
                    self.reserved_nonces
                        .get(&(*sender, n))
                        .and_then(|h| self.reserved.get(h))
                        .map(|r| r.amount)
                };
                u128::from(entry.or_else(reserved).unwrap_or(0))
            })
            .sum()
    }

    /// What `sender`'s transfers pending or reserved here spend together.
    pub fn pending_spend(&self, sender: &PublicKey) -> u128 {
        self.books.get(sender).map_or(0, |b| b.spend)
    }

    /// The nonce after the run of `sender`'s transfers pending or reserved here in
    /// turn from its next nonce `next` (`next` itself when none is): the nonce a
    /// client signs next so that its transfers in flight are not replaced. One
    /// lookup (see [`Mempool::in_line`]).
    pub fn pending_nonce(&self, sender: &PublicKey, next: u64) -> u64 {
        self.run_end(sender, next)
    }

    /// Drops transfers behind nonce gaps, those furthest ahead of their senders'
    /// next nonces first, until they hold at most [`Mempool::gapped_max`].
    /// Admission keeps new arrivals within that share, but transfers admitted in
    /// line fall behind a gap later, when a nonce before them fails in a block (a
    /// failed transfer leaves the nonce where it was) or expires; kept, they would
    /// hold the pool until they expire and lock out the transfers blocks can take.
    /// The furthest ahead are the least likely to be taken soon, and a sender that
    /// only has one nonce missing keeps the transfers right behind it. A transfer
    /// behind a reservation is in line ([`Mempool::in_line`]) and stays.
    pub(super) fn drop_gapped(&mut self, ledger: &Ledger) {
        // (distance to the sender's next nonce, id, nonce, next nonce)
        let mut behind: Vec<(u64, TxHash, u64, u64)> = Vec::new();
        for (sender, by_nonce) in &self.by_sender {
            let next = ledger.account(sender).nonce;
            let mut expected = Some(next);
            for (&nonce, hash) in by_nonce.range(next..) {
                if let Some(e) = expected.as_mut() {
                    while *e < nonce && self.reserved_nonces.contains_key(&(*sender, *e)) {
                        *e = e.saturating_add(1);
                    }
                    if *e == nonce {
                        *e = e.saturating_add(1);
                        continue;
                    }
                }
                expected = None;
                behind.push((nonce - next, *hash, nonce, next));
            }
        }
        let max = self.gapped_max();
        self.gapped = behind.len().min(max);
        if behind.len() <= max {
            return;
        }
        let excess = behind.len() - max;
        behind.sort_unstable_by_key(|&(distance, hash, ..)| (std::cmp::Reverse(distance), hash));
        for &(_, hash, nonce, next_nonce) in &behind[..excess] {
            self.remove(&hash);
            self.dropped
                .insert(hash, Dropped::BehindGap { nonce, next_nonce });
            self.dropped_since += 1;
        }
    }
}
