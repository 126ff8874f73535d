//! The mempool: verified transactions waiting to be ordered.
//!
//! - Each signature is checked once: on admission (in batches), and a bounded cache of
//!   (transaction id, signature) pairs lets block validation skip transactions this
//!   node already verified.
//! - Per sender, transactions are kept by nonce; a block takes each sender's
//!   transactions contiguously from its next nonce, round-robin over senders.
//! - Bounded in count and bytes ("mempool full" is an answer, not a crash); refuses
//!   duplicates, stale nonces, nonces too far ahead, and transactions it saw committed.
//! - Transfers behind a gap in their sender's nonces (which no block can take until
//!   the gap is filled) hold at most a quarter of the pool ([`Mempool::gapped_max`]).
//!   Without that share, a client that sends nonces out of order, or a spammer with
//!   a few keys and far-ahead nonces, fills the pool with transfers that cannot
//!   commit, and the full pool then refuses the very transfers that would fill the
//!   gaps: blocks go empty and stay empty. Transfers admitted in line can fall
//!   behind a gap later (a nonce before them fails in a block or expires): after
//!   each block, those past the share leave, the furthest ahead first.
//! - Expiry: a transaction is admitted only while `valid_until` lies after the tip and
//!   at most [`MempoolConfig::valid_for_max`] heights ahead of it; once the tip reaches
//!   its `valid_until` it can no longer be included, so it is dropped. A bounded memory
//!   of dropped transactions says why, for the status API.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mosaic_crypto::{ChainId, Hash, PublicKey};

use crate::ledger::{self, Ledger, SignedTransfer, TxError, TxHash, VerifiedTransfer};

/// Limits of the mempool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub count_max: usize,
    /// Most bytes held (encoded transactions).
    pub bytes_max: usize,
    /// How far past a sender's next nonce a transaction may be.
    pub nonce_ahead_max: u64,
    /// Verified signatures remembered for block validation (at least half this many
    /// of the latest; keep it at least twice `count_max` so pending transactions are
    /// not forgotten).
    pub verified_cache_max: usize,
    /// Committed transaction ids remembered to refuse re-gossip (at least half this
    /// many of the latest).
    pub committed_memory_max: usize,
    /// How far past the tip a transaction's `valid_until` may lie, in heights.
    pub valid_for_max: u64,
    /// Dropped transactions remembered with their reason (at least half this many of
    /// the latest).
    pub dropped_memory_max: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            count_max: 200_000,
            bytes_max: 64 * 1024 * 1024,
            nonce_ahead_max: 1_000,
            verified_cache_max: 400_000,
            committed_memory_max: 200_000,
            valid_for_max: VALID_FOR_MAX,
            dropped_memory_max: 200_000,
        }
    }
}

/// Default of [`MempoolConfig::valid_for_max`]: 100,000 heights, over an hour at
/// 20 blocks/s and a day at one block per second.
pub const VALID_FOR_MAX: u64 = 100_000;

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// Invalid on its own.
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// No room; try again later.
    #[error("mempool full ({count} transactions, {bytes} bytes): try again later")]
    Full {
        /// Transactions held.
        count: usize,
        /// Bytes held.
        bytes: usize,
    },
    /// The node has more work waiting for signature checks than it lets new
    /// submissions queue behind; try again later.
    #[error("node busy with signature checks ({waiting} waiting); try again later")]
    Busy {
        /// Transactions waiting.
        waiting: usize,
    },
    /// Already waiting.
    #[error("transaction {0} is already pending")]
    AlreadyPending(TxHash),
    /// Already in a committed block.
    #[error("transaction {0} is already committed")]
    AlreadyCommitted(TxHash),
    /// It failed in a block: a failed transfer is final and never included again.
    #[error(
        "transaction {hash} already failed in block {height} (see its status for why); a failed transfer never applies: sign a new one (another valid_until makes it new)"
    )]
    AlreadyFailed {
        /// The transaction.
        hash: TxHash,
        /// The block it failed in.
        height: u64,
    },
    /// The sender already used this nonce.
    #[error("nonce {got} is already used: the account's next nonce is {next}")]
    StaleNonce {
        /// The account's next nonce.
        next: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Too far ahead of the account's next nonce.
    #[error(
        "nonce {got} is too far ahead of the account's next nonce {next} (at most {max} ahead)"
    )]
    NonceTooFarAhead {
        /// The account's next nonce.
        next: u64,
        /// The transaction's nonce.
        got: u64,
        /// The allowed distance.
        max: u64,
    },
    /// Another transaction with the same sender and nonce is pending.
    #[error("another transaction from this sender with nonce {nonce} is pending ({pending})")]
    NonceTaken {
        /// The nonce.
        nonce: u64,
        /// The pending transaction's id.
        pending: TxHash,
    },
    /// The sender's confirmed balance, less what its transfers pending here spend,
    /// cannot pay it: it would fail in a block. For a transfer in line only the
    /// transfers before it count (it executes first, and a later one fails
    /// instead); for one behind a gap, all of them. Incoming transfers count once
    /// they commit, not while they are pending.
    #[error(
        "insufficient funds: the sender's confirmed balance is {balance} and its transfers pending here spend {pending} (for a transfer next in line, those with lower nonces), which leaves {available}, less than the amount {amount}; wait until the pending transfers (its own, or one paying it) commit, or send less"
    )]
    Unfunded {
        /// The sender's balance at this node's executed tip.
        balance: u64,
        /// What the sender's transfers counted against it spend together.
        pending: u128,
        /// What is left for this one.
        available: u64,
        /// The transfer's amount.
        amount: u64,
    },
    /// Behind a gap in the sender's nonces, and the pool's share for such transfers
    /// is taken: the earlier nonces must come first.
    #[error(
        "nonce {got} waits behind a gap (the account's next nonce is {next} and the nonces between are not pending here), and the pool's room for such transfers is full ({held}); send nonce {next} and the ones after it first"
    )]
    Gapped {
        /// The account's next nonce.
        next: u64,
        /// The transaction's nonce.
        got: u64,
        /// Transfers behind gaps held.
        held: usize,
    },
    /// More work is queued than the validators commit in the configured time
    /// (`mempool.backlog_ms_max`): shed at the door rather than queued.
    #[error(
        "node overloaded: {queued} transfers queued, the bound is {limit} (the chain commits about {rate:.0}/s); retry in a second"
    )]
    Overloaded {
        /// Ready transfers queued.
        queued: usize,
        /// The bound.
        limit: usize,
        /// Committed transfers per second.
        rate: u64,
    },
    /// This node is further behind the network than it admits submissions at: its
    /// checks would run against an old state.
    #[error(
        "catching up: {behind} heights behind the network (this node is at {tip}, the network at {network}); send it to another validator or retry shortly"
    )]
    Behind {
        /// Heights behind.
        behind: u64,
        /// This node's executed tip.
        tip: u64,
        /// The network's height as peers report it.
        network: u64,
    },
    /// This node could not write it to its mempool log (disk full, log full,
    /// unwritable): it is not accepted here.
    #[error(
        "this node cannot keep the transfer on disk ({0}); send it to another validator or try again later"
    )]
    Log(String),
    /// Its last valid height is already executed: it can never be included.
    #[error(
        "expired: valid until height {valid_until}, and the chain is at height {tip}; sign it again with a later valid_until"
    )]
    Expired {
        /// The transaction's last valid height.
        valid_until: u64,
        /// The tip's height.
        tip: u64,
    },
    /// Valid for longer than this node holds transactions.
    #[error(
        "valid_until {valid_until} is more than {max} heights past the tip {tip}; sign it with valid_until at most {}", tip.saturating_add(*max)
    )]
    ValidTooLong {
        /// The transaction's last valid height.
        valid_until: u64,
        /// The tip's height.
        tip: u64,
        /// The allowed distance.
        max: u64,
    },
}

/// Why a pending transaction left the pool without being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dropped {
    /// The tip reached its last valid height before a block included it (often
    /// because an earlier nonce of its sender never arrived).
    Expired {
        /// Its last valid height.
        valid_until: u64,
        /// The sender's next nonce when it was dropped.
        next_nonce: u64,
    },
    /// Another transaction of the same sender and nonce committed.
    NonceUsed {
        /// The nonce.
        nonce: u64,
    },
    /// It waited behind a gap in its sender's nonces (an earlier nonce never
    /// arrived, expired or failed in a block) while such transfers held more than
    /// their share of the pool ([`Mempool::gapped_max`]), and it was among the
    /// furthest ahead. Only this validator let it go: another may still include it.
    BehindGap {
        /// Its nonce.
        nonce: u64,
        /// The sender's next nonce when it was dropped.
        next_nonce: u64,
    },
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Expired {
                valid_until,
                next_nonce,
            } => write!(
                f,
                "expired at height {valid_until} without being included (the sender's next nonce was {next_nonce}); it can never commit: the same nonce may be sent again"
            ),
            Dropped::NonceUsed { nonce } => write!(
                f,
                "another transfer of the sender with nonce {nonce} committed first; this one can never commit"
            ),
            Dropped::BehindGap { nonce, next_nonce } => write!(
                f,
                "behind a nonce gap: its nonce {nonce} waited behind the sender's next nonce {next_nonce} while transfers behind nonce gaps held their whole share of this validator's pool; another validator may still include it, so send the same signed transfer again once the nonces before it are in, and use the nonce for another transfer only after this one's valid_until has passed"
            ),
        }
    }
}

/// Where a pending transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingState {
    /// Its nonce.
    pub nonce: u64,
    /// Its last valid height.
    pub valid_until: u64,
    /// `None`: it is next in line for its sender (a block may include it now).
    /// `Some(n)`: it waits for nonce `n` of its sender, which this node has not got.
    pub waiting_for: Option<u64>,
}

/// A set that remembers at least its last `⌈max/2⌉` and at most its last
/// `2⌈max/2⌉` insertions: two generations, the older dropped whole when the newer is
/// full. Inserting a value the older generation holds moves it to the newer one.
/// Each value is stored once (no separate order queue).
#[derive(Debug, Clone)]
struct BoundedSet<T: Eq + std::hash::Hash> {
    map: BoundedMap<T, ()>,
}

impl<T: Eq + std::hash::Hash> BoundedSet<T> {
    fn new(max: usize) -> Self {
        BoundedSet {
            map: BoundedMap::new(max),
        }
    }
    fn insert(&mut self, value: T) {
        self.map.insert(value, ());
    }
    fn contains(&self, value: &T) -> bool {
        self.map.get(value).is_some()
    }
}

/// [`BoundedSet`]'s two generations, with a value per key. Inserting a key again
/// replaces its value and makes it new.
#[derive(Debug, Clone)]
struct BoundedMap<K: Eq + std::hash::Hash, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    max: usize,
}

impl<K: Eq + std::hash::Hash, V> BoundedMap<K, V> {
    fn new(max: usize) -> Self {
        BoundedMap {
            current: HashMap::new(),
            previous: HashMap::new(),
            max,
        }
    }
    fn insert(&mut self, key: K, value: V) {
        if self.max == 0 {
            return;
        }
        if let Some(slot) = self.current.get_mut(&key) {
            *slot = value;
            return;
        }
        self.previous.remove(&key);
        if self.current.len() >= self.max.div_ceil(2) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }
    fn get(&self, key: &K) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }
    fn remove(&mut self, key: &K) {
        if self.current.remove(key).is_none() {
            self.previous.remove(key);
        }
    }
}

/// The key under which a checked (id, signature) pair is remembered: 32 bytes
/// instead of 96, with blake3's collision resistance.
fn verified_key(hash: &TxHash, signature: &mosaic_crypto::Signature) -> Hash {
    Hash::of_parts(&[hash.as_bytes(), signature.as_bytes()])
}

#[derive(Debug, Clone)]
struct Entry {
    tx: VerifiedTransfer,
    bytes: usize,
    /// In this node's mempool log: its departure is reported
    /// ([`Mempool::take_departed`]) so the log can forget it.
    logged: bool,
    /// The [`Mempool::stale`] round it was admitted or last handed out in.
    round: u64,
}

/// A submission on its way through the mempool log ([`Mempool::reserve`]).
#[derive(Debug, Clone, Copy)]
struct Reservation {
    from: PublicKey,
    nonce: u64,
    amount: u64,
    bytes: usize,
    /// Submissions of these same bytes in flight at once.
    holders: u32,
    /// Behind a gap in its sender's nonces when reserved: it counts toward the
    /// gapped share while its log write is in flight.
    gapped: bool,
}

/// What [`Mempool::admissible`] found.
#[derive(Debug, Clone, Copy)]
struct Admissible {
    /// In line (see [`Mempool::in_line`]).
    in_line: bool,
    /// The sender's next nonce in the ledger it was judged against.
    next: u64,
}

/// What the pool holds of one sender, pending or reserved, kept as transfers come
/// and go so that admission costs the same for the 1,000th nonce of a run as for
/// the first.
#[derive(Debug, Clone, Copy)]
struct SenderBook {
    /// Transfers held: entries plus reservations (an entry and the reservation it
    /// came through count twice for the moment between the two).
    held: usize,
    /// Their amounts together, counted the same way.
    spend: u128,
    /// A run of held nonces: every nonce in `run.0..run.1` is held and `run.1` is
    /// not, so for a next nonce anywhere in `run.0..=run.1` the sender's transfers
    /// are in line up to `run.1`. It starts at the sender's next nonce as the
    /// pool last saw it.
    run: (u64, u64),
}

/// The pool of pending transactions.
#[derive(Debug, Clone)]
pub struct Mempool {
    config: MempoolConfig,
    chain: ChainId,
    // Hash maps, entries boxed: a transfer with its two parsed keys is ~0.5 KB, and
    // B-tree maps shifted whole values and keys on every insert and remove
    // (`BTreeMap::remove` in `remove_committed` alone was 2.5% of a validator's CPU
    // at 5,000 transfers/s). A proposal
    // takes senders round-robin in the map's order; when a block fills up, the
    // senders late in that order wait for the next one (as with key order before).
    entries: HashMap<TxHash, Box<Entry>>,
    by_sender: HashMap<PublicKey, BTreeMap<u64, TxHash>>,
    /// (valid_until, id) of every entry: what expires next comes first.
    by_expiry: BTreeSet<(u64, TxHash)>,
    bytes: usize,
    verified: BoundedSet<Hash>,
    committed: BoundedSet<TxHash>,
    dropped: BoundedMap<TxHash, Dropped>,
    /// The height of the last executed block: admission and expiry are relative to it.
    tip: u64,
    /// Logged entries that left the pool since the last [`Mempool::take_departed`].
    departed: Vec<TxHash>,
    /// Entries dropped (expired, superseded or behind a gap) since the last
    /// [`Mempool::take_departed`].
    dropped_since: u64,
    /// Rounds of [`Mempool::stale`] so far.
    round: u64,
    /// Submissions between [`Mempool::reserve`] and [`Mempool::add_logged`] (their
    /// write to the mempool log in flight): each holds its sender's nonce and counts
    /// against the pool's limits, so the pool takes whatever got that far and a log
    /// never holds two transfers of one sender and nonce that a restart would have to
    /// choose between.
    reserved: HashMap<TxHash, Reservation>,
    reserved_nonces: HashMap<(PublicKey, u64), TxHash>,
    reserved_bytes: usize,
    /// Per sender with anything held: its run of nonces and what it spends.
    books: HashMap<PublicKey, SenderBook>,
    /// Transactions of blocks whose signatures this node had not checked before the
    /// block carried them, since the last [`Mempool::take_unchecked_in_blocks`].
    unchecked_in_blocks: u64,
    /// Entries behind a gap in their sender's nonces: counted after each executed
    /// block (which drops those past the share: [`Mempool::drop_gapped`]), and
    /// raised by each such admission since. A later admission that fills a gap is
    /// not subtracted until the next block, so between blocks the count is at
    /// least the truth, but for entries behind a reservation given back since.
    gapped: usize,
    /// Reservations behind a gap (see [`Reservation::gapped`]): a batch of them,
    /// or many batches at once, reserve before any is admitted, so the share
    /// counts them too.
    reserved_gapped: usize,
    /// Entries a block could take when the last block executed (see
    /// [`Mempool::ready_count`]).
    ready_at_block: usize,
}

fn encoded_len(tx: &SignedTransfer) -> usize {
    tx.transfer.signed_len()
}

impl Mempool {
    /// An empty pool for `chain` whose executed tip is at height `tip`.
    pub fn new(chain: ChainId, config: MempoolConfig, tip: u64) -> Self {
        Mempool {
            verified: BoundedSet::new(config.verified_cache_max),
            committed: BoundedSet::new(config.committed_memory_max),
            dropped: BoundedMap::new(config.dropped_memory_max),
            config,
            chain,
            entries: HashMap::new(),
            by_sender: HashMap::new(),
            by_expiry: BTreeSet::new(),
            bytes: 0,
            tip,
            departed: Vec::new(),
            dropped_since: 0,
            round: 0,
            unchecked_in_blocks: 0,
            reserved: HashMap::new(),
            reserved_nonces: HashMap::new(),
            reserved_bytes: 0,
            books: HashMap::new(),
            gapped: 0,
            reserved_gapped: 0,
            ready_at_block: 0,
        }
    }

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

    /// Entries blocks could take one after another when the last block executed.
    pub fn ready_at_block(&self) -> usize {
        self.ready_at_block
    }

    /// Whether a transfer of `sender` with `nonce` would be next in line once
    /// admitted: its nonce is the account's `next`, or every nonce from `next` up
    /// to it is pending or reserved (a reservation is the one in-flight write of
    /// its sender's nonce, so a run through it is judged as if it were pending).
    /// One lookup: the sender's run of held nonces ([`SenderBook::run`]) answers
    /// it whenever `next` lies within the run, as it does for the ledger the pool
    /// follows; any other `next` walks up from it (bounded by what is held).
    fn in_line(&self, sender: &PublicKey, nonce: u64, next: u64) -> bool {
        if nonce <= next {
            return nonce == next;
        }
        self.run_end(sender, next) >= nonce
    }

    /// The first nonce from `next` on that the pool holds neither pending nor
    /// reserved for `sender`.
    fn run_end(&self, sender: &PublicKey, next: u64) -> u64 {
        match self.books.get(sender) {
            None => next,
            Some(book) if book.run.0 <= next && next <= book.run.1 => book.run.1,
            Some(_) => self.walk(sender, next),
        }
    }

    /// Whether `sender`'s `nonce` is pending or reserved here.
    fn holds(&self, sender: &PublicKey, nonce: u64) -> bool {
        self.by_sender
            .get(sender)
            .is_some_and(|m| m.contains_key(&nonce))
            || self.reserved_nonces.contains_key(&(*sender, nonce))
    }

    /// The first nonce from `from` on that is not held, found by looking at each:
    /// costs the length of the run, at most what the sender holds.
    fn walk(&self, sender: &PublicKey, from: u64) -> u64 {
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
    fn book_held(&mut self, sender: PublicKey, nonce: u64, amount: u64, next: u64) {
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
    fn book_released(&mut self, sender: PublicKey, nonce: u64, amount: u64) {
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
    fn book_next_nonce(&mut self, sender: &PublicKey, next: u64) {
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
    fn spend_before(&self, sender: &PublicKey, next: u64, nonce: u64) -> u128 {
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

    /// The height admission and expiry are relative to.
    pub fn tip(&self) -> u64 {
        self.tip
    }

    /// Where pending transaction `hash` stands, if it is pending.
    pub fn pending_state(&self, hash: &TxHash, ledger: &Ledger) -> Option<PendingState> {
        let entry = self.entries.get(hash)?;
        let t = entry.tx.transfer();
        let next = ledger.account(&t.from).nonce;
        // The first nonce from `next` on that this pool lacks, if it is below this one.
        let mut expected = next;
        if let Some(by_nonce) = self.by_sender.get(&t.from) {
            for (&nonce, _) in by_nonce.range(next..t.nonce) {
                if nonce != expected {
                    break;
                }
                expected += 1;
            }
        }
        Some(PendingState {
            nonce: t.nonce,
            valid_until: t.valid_until,
            waiting_for: (expected < t.nonce).then_some(expected),
        })
    }

    /// The nonce after the run of `sender`'s transfers pending or reserved here in
    /// turn from its next nonce `next` (`next` itself when none is): the nonce a
    /// client signs next so that its transfers in flight are not replaced. One
    /// lookup (see [`Mempool::in_line`]).
    pub fn pending_nonce(&self, sender: &PublicKey, next: u64) -> u64 {
        self.run_end(sender, next)
    }

    /// Why `hash` was dropped, if it was (recently).
    pub fn dropped(&self, hash: &TxHash) -> Option<Dropped> {
        self.dropped.get(hash).copied()
    }

    /// Logged transactions that left the pool since the last call, each with why
    /// it was dropped (`None`: a block carried it): the mempool log forgets them,
    /// durably for the dropped ones (a block's verdict is in the store).
    pub fn take_departed(&mut self) -> Vec<(TxHash, Option<Dropped>)> {
        std::mem::take(&mut self.departed)
            .into_iter()
            .map(|hash| {
                let why = self.dropped.get(&hash).copied();
                (hash, why)
            })
            .collect()
    }

    /// Takes back what this node had dropped before it restarted (the mempool
    /// log's tombstones), so a status still says why.
    pub fn restore_dropped(&mut self, dropped: impl IntoIterator<Item = (TxHash, Dropped)>) {
        for (hash, why) in dropped {
            if !self.entries.contains_key(&hash) {
                self.dropped.insert(hash, why);
            }
        }
    }

    /// Starts a new round and returns up to `max` transactions that have been
    /// pending since at least `age` rounds ago and were not handed out since, ready
    /// ones first (they are what a block could take now). The node gossips them
    /// again: a transaction whose gossip missed the primary (it was down, or the
    /// queue was full) would otherwise wait in this pool only, and its sender's
    /// later nonces with it, forever.
    pub fn stale(&mut self, age: u64, max: usize, ledger: &Ledger) -> Vec<SignedTransfer> {
        self.round += 1;
        let round = self.round;
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for (hash, entry) in &self.entries {
            if entry.round + age > round {
                continue;
            }
            let t = entry.tx.transfer();
            if ledger.account(&t.from).nonce == t.nonce {
                ready.push(*hash);
            } else if waiting.len() < max {
                waiting.push(*hash);
            }
        }
        ready.extend(waiting);
        ready.truncate(max);
        // Rotating the order from round to round keeps a repeated batch from being
        // identical (gossip drops a message it saw in the last two minutes).
        if !ready.is_empty() {
            let turn = (round as usize) % ready.len();
            ready.rotate_left(turn);
        }
        ready
            .iter()
            .filter_map(|hash| {
                let entry = self.entries.get_mut(hash)?;
                entry.round = round;
                Some(entry.tx.signed().clone())
            })
            .collect()
    }

    /// How many entries were dropped (expired, superseded or behind a gap) since the
    /// last call.
    pub fn take_dropped_count(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_since)
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `hash` is pending.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.entries.contains_key(hash)
    }

    /// The pending transfer `hash`, as this node verified it.
    pub fn verified(&self, hash: &TxHash) -> Option<VerifiedTransfer> {
        self.entries.get(hash).map(|e| e.tx.clone())
    }

    /// Whether `hash` was seen committed (recently).
    pub fn was_committed(&self, hash: &TxHash) -> bool {
        self.committed.contains(hash)
    }

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

    fn add_checked(
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

    fn unreserve(&mut self, hash: &TxHash) {
        let Some(r) = self.reserved.get_mut(hash) else {
            return;
        };
        r.holders -= 1;
        if r.holders == 0 {
            self.drop_reservation(hash);
        }
    }

    fn drop_reservation(&mut self, hash: &TxHash) {
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
    fn admissible(
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

    fn admit(
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

    /// Picks transactions for a block: per sender contiguously from `next_nonce`,
    /// round-robin over senders, within the count and byte limits. Costs one lookup
    /// per sender plus one per transaction picked, however many are pending.
    pub fn select(
        &self,
        next_nonce: impl Fn(&PublicKey) -> u64,
        count_max: usize,
        bytes_max: usize,
    ) -> Vec<VerifiedTransfer> {
        // (sender's pending by nonce, the next nonce to take)
        let mut queues: Vec<(&BTreeMap<u64, TxHash>, u64)> = self
            .by_sender
            .iter()
            .map(|(sender, by_nonce)| (by_nonce, next_nonce(sender)))
            .collect();
        let mut out = Vec::new();
        let mut bytes = 0;
        'rounds: while !queues.is_empty() {
            for queue in queues.iter_mut() {
                let Some(entry) = queue
                    .0
                    .get(&queue.1)
                    .and_then(|h| self.entries.get(h))
                    .filter(|e| e.tx.transfer().valid_until > self.tip)
                else {
                    // Mark the run as ended; removed after the round.
                    queue.1 = u64::MAX;
                    continue;
                };
                if out.len() >= count_max || bytes + entry.bytes > bytes_max {
                    break 'rounds;
                }
                bytes += entry.bytes;
                out.push(entry.tx.clone());
                queue.1 += 1;
            }
            queues.retain(|q| q.1 != u64::MAX);
        }
        out
    }

    /// Whether some sender has a transaction at its next nonce, i.e. whether a block
    /// proposed now would hold anything. Stops at the first such sender.
    pub fn has_ready(&self, next_nonce: impl Fn(&PublicKey) -> u64) -> bool {
        self.by_sender
            .iter()
            .any(|(sender, by_nonce)| by_nonce.contains_key(&next_nonce(sender)))
    }

    /// Sorts [`prepare`]d transactions into those this node already verified (same
    /// id, chain and signature: wrapped as verified, without checking again) and the
    /// rest (to be checked with [`verify_unknown`]). Input order is kept. Only set
    /// lookups: the hashing was done by [`prepare`], outside any lock.
    pub fn known(&self, txs: Vec<Prepared>) -> Vec<Known> {
        txs.into_iter()
            .map(|p| {
                if p.tx.transfer.chain == self.chain && self.verified.contains(&p.key) {
                    Known::Verified(VerifiedTransfer::trusted(p.tx, p.hash))
                } else {
                    Known::Unchecked(p.tx)
                }
            })
            .collect()
    }

    /// Pending transactions blocks could take one after another: for each sender,
    /// the run of consecutive nonces from its next one, up to the first gap. Costs
    /// the ready transactions plus one step per sender, whatever waits behind gaps.
    pub fn ready_count(&self, next_nonce: impl Fn(&PublicKey) -> u64) -> usize {
        self.by_sender
            .iter()
            .map(|(sender, by_nonce)| {
                let mut expected = next_nonce(sender);
                let mut run = 0;
                for &nonce in by_nonce.range(expected..).map(|(n, _)| n) {
                    if nonce != expected {
                        break;
                    }
                    run += 1;
                    expected = expected.saturating_add(1);
                }
                run
            })
            .sum()
    }

    /// Whether the transfer of `sender` with `nonce` is pending and ready when the
    /// sender's next nonce is `next`: every nonce before it down to `next` is
    /// pending or reserved (a reservation is admitted as soon as its log write
    /// lands). One lookup (see [`Mempool::in_line`]).
    pub fn is_ready(&self, sender: &PublicKey, nonce: u64, next: u64) -> bool {
        self.by_sender
            .get(sender)
            .is_some_and(|m| m.contains_key(&nonce))
            && self.in_line(sender, nonce, next)
    }

    /// Verifies a block's transactions, skipping the signature check for those this
    /// node already verified (same id and signature), and remembers the new ones.
    /// Results in input order.
    pub fn verify_for_block(
        &mut self,
        txs: Vec<SignedTransfer>,
    ) -> Vec<Result<VerifiedTransfer, TxError>> {
        let sorted = self.known(prepare(txs));
        let unchecked = sorted
            .iter()
            .filter(|k| matches!(k, Known::Unchecked(_)))
            .count();
        self.unchecked_in_blocks += unchecked as u64;
        let results = verify_unknown(sorted, &self.chain);
        for tx in results.iter().flatten() {
            self.verified
                .insert(verified_key(&tx.hash(), &tx.signed().signature));
        }
        results
    }

    /// How many transactions blocks carried before this node had checked their
    /// signatures (checked then, on the critical path), since the last call.
    pub fn take_unchecked_in_blocks(&mut self) -> u64 {
        std::mem::take(&mut self.unchecked_in_blocks)
    }

    /// Forgets what the committed block at `height` contained, whatever its execution
    /// made stale, and whatever can no longer be included after it (expired).
    pub fn remove_committed<'a>(
        &mut self,
        height: u64,
        committed: impl IntoIterator<Item = &'a VerifiedTransfer>,
        ledger: &Ledger,
    ) {
        self.tip = self.tip.max(height);
        let mut senders = BTreeSet::new();
        for tx in committed {
            self.committed.insert(tx.hash());
            // This validator may have dropped it behind a gap while another kept it.
            self.dropped.remove(&tx.hash());
            self.remove(&tx.hash());
            senders.insert(tx.transfer().from);
        }
        for sender in senders {
            let next = ledger.account(&sender).nonce;
            let stale: Vec<(u64, TxHash)> = self
                .by_sender
                .get(&sender)
                .map(|m| m.range(..next).map(|(n, h)| (*n, *h)).collect())
                .unwrap_or_default();
            for (nonce, hash) in stale {
                self.remove(&hash);
                self.dropped.insert(hash, Dropped::NonceUsed { nonce });
                self.dropped_since += 1;
            }
            self.book_next_nonce(&sender, next);
        }
        while let Some(&(valid_until, hash)) = self.by_expiry.first() {
            if valid_until > self.tip {
                break;
            }
            let next_nonce = self
                .entries
                .get(&hash)
                .map(|e| ledger.account(&e.tx.transfer().from).nonce)
                .unwrap_or_default();
            self.remove(&hash);
            self.dropped_since += 1;
            self.dropped.insert(
                hash,
                Dropped::Expired {
                    valid_until,
                    next_nonce,
                },
            );
        }
        self.ready_at_block = self.ready_count(|k| ledger.account(k).nonce);
        self.gapped = self.entries.len().saturating_sub(self.ready_at_block);
        if self.gapped > self.gapped_max() {
            self.drop_gapped(ledger);
        }
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
    fn drop_gapped(&mut self, ledger: &Ledger) {
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

    fn remove(&mut self, hash: &TxHash) {
        if let Some(entry) = self.entries.remove(hash) {
            self.bytes -= entry.bytes;
            let t = entry.tx.transfer();
            self.by_expiry.remove(&(t.valid_until, *hash));
            if entry.logged {
                self.departed.push(*hash);
            }
            let (from, nonce, amount) = (t.from, t.nonce, t.amount);
            if let Some(m) = self.by_sender.get_mut(&from) {
                m.remove(&nonce);
                if m.is_empty() {
                    self.by_sender.remove(&from);
                }
            }
            self.book_released(from, nonce, amount);
        }
    }

    /// Checks internal consistency (tests).
    pub fn check_invariants(&self) {
        let bytes: usize = self.entries.values().map(|e| e.bytes).sum();
        assert_eq!(bytes, self.bytes);
        let indexed: usize = self.by_sender.values().map(BTreeMap::len).sum();
        assert_eq!(indexed, self.entries.len());
        assert_eq!(self.by_expiry.len(), self.entries.len());
        assert!(self.by_expiry.first().is_none_or(|(v, _)| *v > self.tip));
        assert!(self.entries.len() + self.reserved.len() <= self.config.count_max);
        assert!(self.bytes + self.reserved_bytes <= self.config.bytes_max);
        assert_eq!(self.reserved.len(), self.reserved_nonces.len());
        let reserved: usize = self.reserved.values().map(|r| r.bytes).sum();
        assert_eq!(reserved, self.reserved_bytes);
        let reserved_gapped = self.reserved.values().filter(|r| r.gapped).count();
        assert_eq!(reserved_gapped, self.reserved_gapped);
        let mut books: HashMap<PublicKey, (usize, u128)> = HashMap::new();
        for entry in self.entries.values() {
            let t = entry.tx.transfer();
            let book = books.entry(t.from).or_default();
            book.0 += 1;
            book.1 += u128::from(t.amount);
        }
        for r in self.reserved.values() {
            let book = books.entry(r.from).or_default();
            book.0 += 1;
            book.1 += u128::from(r.amount);
        }
        assert_eq!(books.len(), self.books.len());
        for (sender, book) in &self.books {
            assert_eq!(books.get(sender), Some(&(book.held, book.spend)));
            assert!(book.run.0 <= book.run.1);
            assert_eq!(
                self.walk(sender, book.run.0),
                book.run.1,
                "the run of {sender}"
            );
        }
    }
}

/// Above this many gossiped transactions waiting for signature checks, submissions
/// are refused (503): about two seconds of checks on a small machine. A node that
/// keeps accepting more than it can check only adds latency and starves consensus.
pub const VERIFY_BACKLOG_MAX: usize = 10_000;

/// A transaction with its id and verified-cache key computed (see [`prepare`]).
#[derive(Debug)]
pub struct Prepared {
    tx: SignedTransfer,
    hash: TxHash,
    key: Hash,
}

/// Hashes transactions for [`Mempool::known`]; call it before taking the shared lock.
pub fn prepare(txs: Vec<SignedTransfer>) -> Vec<Prepared> {
    txs.into_iter()
        .map(|tx| {
            let hash = tx.hash();
            let key = verified_key(&hash, &tx.signature);
            Prepared { tx, hash, key }
        })
        .collect()
}

/// A transaction sorted by [`Mempool::known`].
#[derive(Debug)]
pub enum Known {
    /// Verified by this node before.
    Verified(VerifiedTransfer),
    /// Not verified yet.
    Unchecked(SignedTransfer),
}

/// Completes [`Mempool::known`]: checks the unknown transactions in one signature
/// batch and returns every result in input order.
pub fn verify_unknown(
    sorted: Vec<Known>,
    chain: &ChainId,
) -> Vec<Result<VerifiedTransfer, TxError>> {
    verify_unknown_groups(vec![sorted], chain)
        .pop()
        .unwrap_or_default()
}

/// [`verify_unknown`] for several groups at once (see [`ledger::verify_groups`]):
/// results per group, each in input order.
pub fn verify_unknown_groups(
    groups: Vec<Vec<Known>>,
    chain: &ChainId,
) -> Vec<Vec<Result<VerifiedTransfer, TxError>>> {
    let mut all_slots: Vec<Vec<Option<VerifiedTransfer>>> = Vec::with_capacity(groups.len());
    let mut unknown: Vec<Vec<SignedTransfer>> = Vec::with_capacity(groups.len());
    for group in groups {
        let mut slots = Vec::with_capacity(group.len());
        let mut checking = Vec::new();
        for r in group {
            match r {
                Known::Verified(tx) => slots.push(Some(tx)),
                Known::Unchecked(tx) => {
                    slots.push(None);
                    checking.push(tx);
                }
            }
        }
        all_slots.push(slots);
        unknown.push(checking);
    }
    // verify_groups answers once per input, so the fallback is never used.
    ledger::verify_groups(unknown, chain)
        .into_iter()
        .zip(all_slots)
        .map(|(checked, slots)| {
            let mut checked = checked.into_iter();
            slots
                .into_iter()
                .map(|slot| match slot {
                    Some(tx) => Ok(tx),
                    None => checked.next().unwrap_or(Err(TxError::ZeroAmount)),
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Transfer;
    use mosaic_crypto::Keypair;

    /// The last valid height of the test transactions.
    const VALID_UNTIL: u64 = 100;

    fn chain() -> ChainId {
        ChainId::new("pool").unwrap()
    }

    fn key(i: u64) -> Keypair {
        Keypair::from_seed_for_tests(i)
    }

    fn tx(from: u64, nonce: u64) -> SignedTransfer {
        Transfer {
            chain: chain(),
            from: key(from).public(),
            to: key(99).public(),
            amount: 1,
            nonce,
            valid_until: VALID_UNTIL,
        }
        .sign(&key(from))
    }

    fn ledger() -> Ledger {
        Ledger::from_balances(&(0..5).map(|i| (key(i).public(), 1_000)).collect::<Vec<_>>())
            .unwrap()
    }

    fn pool(count_max: usize) -> Mempool {
        Mempool::new(
            chain(),
            MempoolConfig {
                count_max,
                nonce_ahead_max: 10,
                ..MempoolConfig::default()
            },
            0,
        )
    }

    fn tx_until(from: u64, nonce: u64, valid_until: u64) -> SignedTransfer {
        Transfer {
            valid_until,
            ..tx(from, nonce).transfer
        }
        .sign(&key(from))
    }

    #[test]
    fn admits_refuses_and_explains() {
        let l = ledger();
        let mut p = pool(100);
        assert!(p.add(tx(1, 0), &l).is_ok());
        assert!(matches!(
            p.add(tx(1, 0), &l),
            Err(MempoolError::AlreadyPending(_))
        ));
        let mut forged = tx(1, 1);
        forged.transfer.amount = 2;
        assert!(matches!(
            p.add(forged, &l),
            Err(MempoolError::Invalid(TxError::BadSignature { .. }))
        ));
        assert!(matches!(
            p.add(tx(2, 11), &l),
            Err(MempoolError::NonceTooFarAhead { .. })
        ));
        let other = Transfer {
            chain: chain(),
            from: key(1).public(),
            to: key(98).public(),
            amount: 1,
            nonce: 0,
            valid_until: VALID_UNTIL,
        }
        .sign(&key(1));
        assert!(matches!(
            p.add(other, &l),
            Err(MempoolError::NonceTaken { nonce: 0, .. })
        ));
        p.check_invariants();
    }

    #[test]
    fn gapped_transfers_take_at_most_a_quarter_and_never_lock_out_the_ones_that_fill_the_gaps() {
        let l = ledger();
        let mut p = pool(8);
        assert_eq!(p.gapped_max(), 2);
        // Nonces out of order: none of these can be in a block before nonce 0.
        let gapped: Vec<_> = [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 2), (2, 3)]
            .into_iter()
            .map(|(from, nonce)| p.add(tx(from, nonce), &l))
            .collect();
        assert!(gapped[..2].iter().all(Result::is_ok), "{gapped:?}");
        for refused in &gapped[2..] {
            assert!(
                matches!(
                    refused,
                    Err(MempoolError::Gapped {
                        next: 0,
                        held: 2,
                        ..
                    })
                ),
                "{refused:?}"
            );
        }
        assert_eq!(p.gapped(), 2);
        // The transfers blocks can take still find room: the rest of the pool.
        for (from, nonce) in [(1, 0), (3, 0), (4, 0), (0, 0), (3, 1), (4, 1)] {
            assert!(p.add(tx(from, nonce), &l).is_ok(), "{from}/{nonce}");
        }
        assert!(matches!(
            p.add(tx(0, 1), &l),
            Err(MempoolError::Full { .. })
        ));
        assert_eq!(p.ready_count(|k| l.account(k).nonce), 8);
        p.check_invariants();
        // A block recounts: sender 1's 1 and 2 are in line behind its 0 now.
        let block = vec![p.verified(&tx(0, 0).hash()).unwrap()];
        p.remove_committed(1, &block, &l);
        assert_eq!((p.gapped(), p.ready_at_block()), (0, 7));
        assert!(p.add(tx(2, 2), &l).is_ok());
        assert_eq!(p.gapped(), 1);
        p.check_invariants();
    }

    #[test]
    fn logged_transfers_are_taken_back_past_the_gapped_share() {
        // What a restart reads back from the mempool log was answered 202: the
        // share for gapped transfers does not refuse it.
        let l = ledger();
        let mut p = pool(8);
        let verify = |t: SignedTransfer| Ok(t.verify(&chain()).unwrap());
        let back = p.add_logged(
            vec![verify(tx(1, 1)), verify(tx(1, 2)), verify(tx(1, 3))],
            &l,
        );
        assert!(back.iter().all(Result::is_ok), "{back:?}");
        assert_eq!(p.gapped(), 3);
        // New arrivals still meet it.
        assert!(matches!(
            p.add(tx(2, 1), &l),
            Err(MempoolError::Gapped { .. })
        ));
        p.check_invariants();
    }

    #[test]
    fn reservations_behind_gaps_count_toward_the_share() {
        // A batch reserves all its transfers before any is admitted: gapped ones
        // among them must meet the share, or one request could fill the pool.
        let l = ledger();
        let mut p = pool(8);
        let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
        p.reserve(&verify(tx(1, 1)), &l).unwrap();
        p.reserve(&verify(tx(1, 2)), &l).unwrap();
        assert_eq!(p.gapped(), 2);
        let refused = p.reserve(&verify(tx(1, 3)), &l).unwrap_err();
        assert!(
            matches!(refused, MempoolError::Gapped { held: 2, .. }),
            "{refused}"
        );
        assert!(matches!(
            p.add(tx(2, 1), &l),
            Err(MempoolError::Gapped { .. })
        ));
        // In line, reserved or not, still goes in.
        p.reserve(&verify(tx(3, 0)), &l).unwrap();
        assert!(p.add(tx(4, 0), &l).is_ok());
        p.check_invariants();
        // A reservation given back gives its part of the share back.
        p.release(&[tx(1, 2).hash()]);
        assert_eq!(p.gapped(), 1);
        p.check_invariants();
    }

    #[test]
    fn transfers_stranded_behind_a_failed_transfer_leave_past_the_share() {
        // Key 7's transfers are in line and paid for when admitted, but its funds
        // are gone when its nonce 0 executes (as when another validator's transfer
        // of the same sender committed first): nonce 0 fails and leaves the nonce
        // where it was, so the rest can never be in a block. Left in the pool they
        // would hold it past the gapped share and lock out the transfers blocks
        // can take.
        let mut l = ledger();
        let funded = Ledger::from_balances(&[(key(7).public(), 1_000)]).unwrap();
        let mut p = pool(8);
        for nonce in 0..8 {
            assert!(p.add(tx(7, nonce), &funded).is_ok(), "7/{nonce}");
        }
        let block = p.select(|k| l.account(k).nonce, 1, usize::MAX);
        assert_eq!(block.len(), 1);
        l.apply(1, &block);
        assert_eq!(l.account(&key(7).public()).nonce, 0);
        p.remove_committed(1, &block, &l);
        assert_eq!((p.len(), p.gapped()), (p.gapped_max(), p.gapped_max()));
        // The furthest ahead of their sender's next nonce leave first.
        assert!(p.contains(&tx(7, 1).hash()) && p.contains(&tx(7, 2).hash()));
        let dropped = p.dropped(&tx(7, 7).hash());
        assert_eq!(
            dropped,
            Some(Dropped::BehindGap {
                nonce: 7,
                next_nonce: 0
            })
        );
        assert!(
            dropped
                .unwrap()
                .to_string()
                .contains("send the same signed transfer again")
        );
        for from in 0..5 {
            assert!(p.add(tx(from, 0), &l).is_ok(), "{from}/0");
        }
        p.check_invariants();
    }

    #[test]
    fn a_transfer_dropped_behind_a_gap_that_commits_elsewhere_is_not_reported_dropped() {
        // Its head expires: nonces 1 to 4 can no longer be taken, and 3 and 4 leave.
        let mut l = ledger();
        let mut p = pool(8);
        assert!(p.add(tx_until(1, 0, 1), &l).is_ok());
        for nonce in 1..5 {
            assert!(p.add(tx(1, nonce), &l).is_ok(), "1/{nonce}");
        }
        p.remove_committed(1, &[], &l);
        assert_eq!(p.len(), 2);
        assert!(matches!(
            p.dropped(&tx(1, 3).hash()),
            Some(Dropped::BehindGap { nonce: 3, .. })
        ));
        // Another validator kept it and proposes it behind a new nonce 0.
        let block: Vec<_> = p
            .verify_for_block(vec![tx(1, 0), tx(1, 1), tx(1, 2), tx(1, 3)])
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        l.apply(2, &block);
        p.remove_committed(2, &block, &l);
        assert_eq!(p.dropped(&tx(1, 3).hash()), None);
        assert!(matches!(
            p.dropped(&tx(1, 4).hash()),
            Some(Dropped::BehindGap { .. })
        ));
        p.check_invariants();
    }

    #[test]
    fn pending_and_reserved_nonces_in_turn_are_in_line() {
        let l = ledger();
        let mut p = pool(8);
        let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
        assert!(p.add(tx(3, 5), &l).is_ok());
        assert!(p.add(tx(3, 6), &l).is_ok());
        assert_eq!(p.gapped(), p.gapped_max());
        // 0 reserved (its log write in flight), 1 pending, 2 reserved: 3 is in line.
        p.reserve(&verify(tx(1, 0)), &l).unwrap();
        assert!(p.add(tx(1, 1), &l).is_ok());
        p.reserve(&verify(tx(1, 2)), &l).unwrap();
        assert!(p.add(tx(1, 3), &l).is_ok());
        assert_eq!(p.gapped(), p.gapped_max());
        p.check_invariants();
    }

    #[test]
    fn a_transfer_behind_a_reserved_nonce_is_in_line() {
        let l = ledger();
        let mut p = pool(8);
        let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
        for nonce in [4, 5] {
            assert!(p.add(tx(1, nonce), &l).is_ok());
        }
        assert!(matches!(
            p.add(tx(2, 1), &l),
            Err(MempoolError::Gapped { .. })
        ));
        // Nonces 0 and 1 on their way to the log: 1 and 2 behind them are in line,
        // 3 (with 2 neither pending nor reserved) is not.
        p.reserve(&verify(tx(2, 0)), &l).unwrap();
        p.reserve(&verify(tx(2, 1)), &l).unwrap();
        p.reserve(&verify(tx(2, 2)), &l).unwrap();
        p.release(&[tx(2, 2).hash()]);
        assert!(matches!(
            p.add(tx(2, 3), &l),
            Err(MempoolError::Gapped { .. })
        ));
        assert!(p.add(tx(2, 2), &l).is_ok());
        assert_eq!(p.gapped(), 2, "2 is in line behind the reservations");
        p.check_invariants();
    }

    #[test]
    fn a_full_pool_or_a_verification_backlog_refuses_before_checking() {
        let l = ledger();
        let mut p = pool(1);
        assert!(p.refusal(0).is_none());
        assert!(p.refusal(VERIFY_BACKLOG_MAX).is_none());
        assert!(matches!(
            p.refusal(VERIFY_BACKLOG_MAX + 1),
            Some(MempoolError::Busy { waiting }) if waiting == VERIFY_BACKLOG_MAX + 1
        ));
        p.add(tx(1, 0), &l).unwrap();
        assert!(matches!(
            p.refusal(0),
            Some(MempoolError::Full { count: 1, .. })
        ));
    }

    #[test]
    fn full_is_an_answer() {
        let l = ledger();
        let mut p = pool(2);
        p.add(tx(1, 0), &l).unwrap();
        p.add(tx(1, 1), &l).unwrap();
        let err = p.add(tx(1, 2), &l).unwrap_err();
        assert!(matches!(err, MempoolError::Full { count: 2, .. }));
        assert!(err.to_string().contains("try again later"));
        // A full pool answers "full" before spending a signature check: a forged
        // transaction is refused as Full, not as Invalid.
        let mut forged = tx(2, 0);
        forged.transfer.amount += 1;
        let results = p.add_batch(vec![forged], &l);
        assert!(matches!(results[0], Err(MempoolError::Full { .. })));
        assert!(p.is_full());
        p.check_invariants();
    }

    #[test]
    fn selection_is_contiguous_per_sender_and_round_robin() {
        let l = ledger();
        let mut p = pool(100);
        for t in [tx(1, 0), tx(1, 1), tx(1, 3), tx(2, 0), tx(2, 1), tx(3, 1)] {
            p.add(t, &l).unwrap();
        }
        let picked = p.select(|k| l.account(k).nonce, 100, usize::MAX);
        let order: Vec<(PublicKey, u64)> = picked
            .iter()
            .map(|t| (t.transfer().from, t.transfer().nonce))
            .collect();
        // Sender 3 has a gap (nonce 0 missing); sender 1 stops before its gap.
        assert_eq!(order.len(), 4);
        assert!(order.iter().all(|(k, _)| *k != key(3).public()));
        assert!(!order.contains(&(key(1).public(), 3)));
        // Round robin: the first two picks are from two different senders.
        assert_ne!(order[0].0, order[1].0);
        assert_eq!(p.select(|k| l.account(k).nonce, 3, usize::MAX).len(), 3);
    }

    #[test]
    fn blocks_count_the_transactions_not_checked_before() {
        let l = ledger();
        let mut p = pool(100);
        p.add(tx(1, 0), &l).unwrap();
        assert_eq!(p.take_unchecked_in_blocks(), 0);
        let results = p.verify_for_block(vec![tx(1, 0), tx(2, 0), tx(3, 0)]);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(p.take_unchecked_in_blocks(), 2);
        assert_eq!(p.take_unchecked_in_blocks(), 0);
        // Checked by the block, they are known now.
        p.verify_for_block(vec![tx(2, 0), tx(3, 0)]);
        assert_eq!(p.take_unchecked_in_blocks(), 0);
    }

    #[test]
    fn bounded_set_remembers_at_least_the_latest_half() {
        let mut set = BoundedSet::new(10);
        for i in 0..1_000u32 {
            set.insert(i);
            // The latest max/2 are always there; never more than max in all.
            assert!((i.saturating_sub(4)..=i).all(|j| set.contains(&j)), "{i}");
            assert!(set.map.current.len() + set.map.previous.len() <= 10);
        }
        assert!(!set.contains(&0));
        // Inserting again keeps a value alive across rotations.
        let mut kept = BoundedSet::new(4);
        for i in 0..100u32 {
            kept.insert(0);
            kept.insert(1_000 + i);
            assert!(kept.contains(&0), "{i}");
        }
        let mut off = BoundedSet::new(0);
        off.insert(1u32);
        assert!(!off.contains(&1));
    }

    #[test]
    fn ready_means_a_block_would_hold_something() {
        let l = ledger();
        let mut p = pool(100);
        let ready = |p: &Mempool| p.has_ready(|k| l.account(k).nonce);
        assert!(!ready(&p));
        // Only a gapped run (nonce 0 missing): nothing can go in a block yet.
        p.add(tx(3, 1), &l).unwrap();
        assert!(!ready(&p));
        assert!(p.select(|k| l.account(k).nonce, 1, usize::MAX).is_empty());
        p.add(tx(3, 0), &l).unwrap();
        assert!(ready(&p));
        assert_eq!(p.select(|k| l.account(k).nonce, 10, usize::MAX).len(), 2);
    }

    #[test]
    fn the_ready_count_stops_at_each_senders_first_gap() {
        let mut l = ledger();
        let mut p = pool(100);
        let next = |l: &Ledger, i: u64| l.account(&key(i).public()).nonce;
        // Sender 1: 0, 1, 2 ready. Sender 2: 0 ready, 2 and 3 behind the gap at 1.
        // Sender 3: 5 and 6 only, behind a gap at 0.
        for (from, nonce) in [
            (1, 0),
            (1, 1),
            (1, 2),
            (2, 0),
            (2, 2),
            (2, 3),
            (3, 5),
            (3, 6),
        ] {
            p.add(tx(from, nonce), &l).unwrap();
        }
        assert_eq!(p.ready_count(|k| l.account(k).nonce), 4);
        assert!(p.is_ready(&key(1).public(), 2, next(&l, 1)));
        assert!(p.is_ready(&key(2).public(), 0, next(&l, 2)));
        assert!(!p.is_ready(&key(2).public(), 2, next(&l, 2)));
        assert!(!p.is_ready(&key(3).public(), 6, next(&l, 3)));
        assert!(
            !p.is_ready(&key(4).public(), 0, next(&l, 4)),
            "nothing pending"
        );
        // The gap filled: sender 2's run goes on to 3.
        p.add(tx(2, 1), &l).unwrap();
        assert_eq!(p.ready_count(|k| l.account(k).nonce), 7);
        assert!(p.is_ready(&key(2).public(), 3, next(&l, 2)));
        // Sender 1's first two commit: its run now starts at 2.
        let block: Vec<VerifiedTransfer> = [tx(1, 0), tx(1, 1)]
            .into_iter()
            .map(|t| t.verify(&chain()).unwrap())
            .collect();
        l.apply(1, &block);
        p.remove_committed(1, &block, &l);
        assert_eq!(p.ready_count(|k| l.account(k).nonce), 5);
        assert!(p.is_ready(&key(1).public(), 2, next(&l, 1)));
    }

    #[test]
    fn committed_transactions_leave_and_are_not_readmitted() {
        let mut l = ledger();
        let mut p = pool(100);
        for n in 0..3 {
            p.add(tx(1, n), &l).unwrap();
        }
        let block = p.select(|k| l.account(k).nonce, 2, usize::MAX);
        l.apply(1, &block);
        p.remove_committed(1, &block, &l);
        assert_eq!(p.len(), 1);
        assert!(matches!(
            p.add(block[0].signed().clone(), &l),
            Err(MempoolError::AlreadyCommitted(_))
        ));
        p.check_invariants();
    }

    #[test]
    fn block_validation_reuses_verified_signatures() {
        let l = ledger();
        let mut p = pool(100);
        p.add(tx(1, 0), &l).unwrap();
        // Same id, different (invalid) signature: must not ride on the cache.
        let mut swapped = tx(1, 0);
        swapped.signature = tx(2, 0).signature;
        let results = p.verify_for_block(vec![tx(1, 0), swapped, tx(2, 0)]);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(TxError::BadSignature { .. })));
        assert!(results[2].is_ok());
    }

    #[test]
    fn known_skips_only_exactly_verified_transactions() {
        let l = ledger();
        let mut p = pool(100);
        p.add(tx(1, 0), &l).unwrap();
        let mut swapped = tx(1, 0);
        swapped.signature = tx(2, 0).signature;
        let sorted = p.known(prepare(vec![tx(2, 0), tx(1, 0), swapped]));
        let shape: Vec<bool> = sorted
            .iter()
            .map(|k| matches!(k, Known::Verified(_)))
            .collect();
        assert_eq!(shape, vec![false, true, false]);
        let results = verify_unknown(sorted, &chain());
        assert_eq!(results[0].as_ref().map(|t| t.hash()), Ok(tx(2, 0).hash()));
        assert_eq!(results[1].as_ref().map(|t| t.hash()), Ok(tx(1, 0).hash()));
        assert!(matches!(results[2], Err(TxError::BadSignature { .. })));
    }

    #[test]
    fn validity_is_bounded_on_both_sides_of_the_tip() {
        let l = ledger();
        let mut p = Mempool::new(
            chain(),
            MempoolConfig {
                valid_for_max: 50,
                ..MempoolConfig::default()
            },
            10,
        );
        let err = p.add(tx_until(1, 0, 10), &l).unwrap_err();
        assert_eq!(
            err,
            MempoolError::Expired {
                valid_until: 10,
                tip: 10
            }
        );
        assert!(err.to_string().contains("expired"), "{err}");
        let err = p.add(tx_until(1, 0, 61), &l).unwrap_err();
        assert!(matches!(err, MempoolError::ValidTooLong { max: 50, .. }));
        assert!(err.to_string().contains("at most 60"), "{err}");
        assert!(p.add(tx_until(1, 0, 11), &l).is_ok());
        assert!(p.add(tx_until(2, 0, 60), &l).is_ok());
        p.check_invariants();
    }

    #[test]
    fn expired_and_superseded_transactions_are_dropped_with_a_reason() {
        let mut l = ledger();
        let mut p = pool(100);
        // Sender 1: nonce 0 missing, nonce 1 waits and expires at 5. Sender 2: ready,
        // valid until 5 as well, but committed first.
        let gapped = p.add(tx_until(1, 1, 5), &l).unwrap();
        let ready = p.add(tx_until(2, 0, 5), &l).unwrap();
        // Sender 3: two transfers with nonce 0 reach different nodes; the other commits.
        let loser = p.add(tx_until(3, 0, 50), &l).unwrap();
        let winner = Transfer {
            to: key(97).public(),
            ..tx_until(3, 0, 50).transfer
        }
        .sign(&key(3))
        .verify(&chain())
        .unwrap();
        assert_eq!(
            p.pending_state(&gapped, &l),
            Some(PendingState {
                nonce: 1,
                valid_until: 5,
                waiting_for: Some(0)
            })
        );
        assert_eq!(
            p.pending_state(&ready, &l).map(|s| s.waiting_for),
            Some(None)
        );
        let block = p.select(|k| l.account(k).nonce, 1, usize::MAX);
        assert_eq!(block.len(), 1);
        let block = vec![winner];
        l.apply(4, &block);
        p.remove_committed(4, &block, &l);
        assert_eq!(p.dropped(&loser), Some(Dropped::NonceUsed { nonce: 0 }));
        assert!(p.contains(&gapped) && p.contains(&ready));
        // Height 5 is the last at which they could go in; after it they are gone.
        p.remove_committed(5, &[], &l);
        assert_eq!(
            p.dropped(&gapped),
            Some(Dropped::Expired {
                valid_until: 5,
                next_nonce: 0
            })
        );
        assert!(
            p.dropped(&gapped)
                .unwrap()
                .to_string()
                .contains("may be sent again")
        );
        assert!(matches!(p.dropped(&ready), Some(Dropped::Expired { .. })));
        assert!(p.is_empty());
        p.check_invariants();
        // A dropped transaction is not readmitted: it is expired now.
        assert!(matches!(
            p.add(tx_until(1, 1, 5), &l),
            Err(MempoolError::Expired { .. })
        ));
    }

    #[test]
    fn a_proposal_never_takes_what_expires_at_the_tip() {
        let l = ledger();
        let mut p = pool(100);
        p.add(tx_until(1, 0, 3), &l).unwrap();
        p.add(tx_until(1, 1, 9), &l).unwrap();
        assert_eq!(p.select(|k| l.account(k).nonce, 10, usize::MAX).len(), 2);
        // Executed through height 3 without including them (a block of others):
        // nonce 0 expires, and nonce 1 waits behind it.
        p.remove_committed(3, &[], &l);
        assert!(p.select(|k| l.account(k).nonce, 10, usize::MAX).is_empty());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn only_logged_transactions_report_their_departure() {
        let mut l = ledger();
        let mut p = pool(100);
        let gossiped = p.add(tx(1, 0), &l).unwrap();
        let unlogged = p.add(tx(4, 0), &l).unwrap();
        let signed = vec![tx(2, 0).verify(&chain()), tx(2, 1).verify(&chain())];
        let results = p.add_logged(signed, &l);
        assert!(results.iter().all(Result::is_ok));
        assert!(p.take_departed().is_empty());
        // The same transaction arriving through the log later marks it logged.
        let again = p.add_logged(vec![tx(1, 0).verify(&chain())], &l);
        assert!(matches!(again[0], Err(MempoolError::AlreadyPending(_))));
        let block = p.select(|k| l.account(k).nonce, 10, usize::MAX);
        assert_eq!(block.len(), 4);
        l.apply(1, &block);
        p.remove_committed(1, &block, &l);
        assert!(p.is_empty());
        let mut departed: Vec<TxHash> = p.take_departed().into_iter().map(|(h, _)| h).collect();
        departed.sort();
        let mut expected: Vec<TxHash> = block
            .iter()
            .map(|t| t.hash())
            .filter(|h| *h != unlogged)
            .collect();
        expected.sort();
        assert_eq!(departed, expected);
        assert!(departed.contains(&gossiped));
        assert!(p.take_departed().is_empty(), "taken once");
        assert!(p.reserve(&tx(2, 1).verify(&chain()).unwrap(), &l).is_err());
        assert!(p.reserve(&tx(3, 0).verify(&chain()).unwrap(), &l).is_ok());
    }

    #[test]
    fn long_pending_transactions_are_handed_out_again_ready_ones_first_and_not_every_round() {
        let l = ledger();
        let mut p = pool(100);
        p.add(tx(1, 0), &l).unwrap();
        p.add(tx(2, 5), &l).unwrap();
        assert!(p.stale(2, 10, &l).is_empty(), "round 1: too young");
        let handed = p.stale(2, 1, &l);
        assert_eq!(
            handed,
            vec![tx(1, 0)],
            "round 2: the ready one first, within max"
        );
        assert_eq!(p.stale(2, 10, &l), vec![tx(2, 5)], "round 3: the other one");
        assert_eq!(
            p.stale(2, 10, &l),
            vec![tx(1, 0)],
            "round 4: two rounds after the first"
        );
        assert_eq!(
            p.stale(2, 10, &l),
            vec![tx(2, 5)],
            "round 5: the other again"
        );
        p.add(tx(3, 0), &l).unwrap();
        assert_eq!(
            p.stale(2, 10, &l),
            vec![tx(1, 0)],
            "round 6: the first again; the new one is too young"
        );
    }

    #[test]
    fn a_reservation_holds_its_nonce_and_room_until_the_log_answers() {
        let l = ledger();
        let mut p = pool(3);
        let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
        let a = tx(1, 0);
        // Another transfer of the same sender and nonce (a different amount).
        let b = Transfer {
            amount: 2,
            ..a.transfer.clone()
        }
        .sign(&key(1));
        p.reserve(&verify(a.clone()), &l).unwrap();
        // Two submissions of the same bytes at once both go to the log.
        p.reserve(&verify(a.clone()), &l).unwrap();
        let taken = p.reserve(&verify(b.clone()), &l).unwrap_err();
        assert!(
            matches!(taken, MempoolError::NonceTaken { nonce: 0, .. }),
            "{taken}"
        );
        // Gossip cannot take the nonce meanwhile either.
        assert!(matches!(
            p.add(b.clone(), &l),
            Err(MempoolError::NonceTaken { .. })
        ));
        // The reservation counts against the pool's room.
        p.reserve(&verify(tx(2, 0)), &l).unwrap();
        p.add(tx(3, 0), &l).unwrap();
        assert!(p.is_full());
        assert!(matches!(
            p.add(tx(4, 0), &l),
            Err(MempoolError::Full { .. })
        ));
        p.check_invariants();
        // The first answer admits it, the second finds it pending.
        let first = p.add_logged(vec![Ok(verify(a.clone()))], &l);
        assert_eq!(first, vec![Ok(a.hash())]);
        let second = p.add_logged(vec![Ok(verify(a.clone()))], &l);
        assert_eq!(second, vec![Err(MempoolError::AlreadyPending(a.hash()))]);
        // A failed write gives back what it held.
        p.release(&[tx(2, 0).hash()]);
        p.check_invariants();
        assert!(!p.is_full());
        p.add(tx(4, 0), &l).unwrap();
        assert_eq!(p.len(), 3);
        p.check_invariants();
    }

    fn tx_amount(from: u64, nonce: u64, amount: u64) -> SignedTransfer {
        Transfer {
            amount,
            ..tx(from, nonce).transfer
        }
        .sign(&key(from))
    }

    #[test]
    fn a_transfer_its_sender_cannot_pay_after_its_pending_spends_is_refused_with_the_numbers() {
        let l = ledger(); // keys 0..5 hold 1,000 each
        let mut p = pool(16);
        let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
        // Nothing at all: refused, whatever the nonce.
        let refused = p.add(tx(7, 0), &l).unwrap_err();
        assert_eq!(
            refused,
            MempoolError::Unfunded {
                balance: 0,
                pending: 0,
                available: 0,
                amount: 1
            }
        );
        assert!(refused.to_string().contains("balance is 0"), "{refused}");
        // Behind a gap, everything held counts: pending and reserved alike.
        p.add(tx_amount(1, 0, 600), &l).unwrap();
        p.reserve(&verify(tx_amount(1, 2, 300)), &l).unwrap();
        let refused = p.add(tx_amount(1, 3, 101), &l).unwrap_err();
        assert_eq!(
            refused,
            MempoolError::Unfunded {
                balance: 1_000,
                pending: 900,
                available: 100,
                amount: 101
            }
        );
        // In line, only the transfers before it count: it executes first.
        let refused = p.add(tx_amount(1, 1, 401), &l).unwrap_err();
        assert_eq!(
            refused,
            MempoolError::Unfunded {
                balance: 1_000,
                pending: 600,
                available: 400,
                amount: 401
            }
        );
        p.add(tx_amount(1, 1, 400), &l).unwrap();
        assert_eq!(p.pending_spend(&key(1).public()), 1_300);
        p.check_invariants();
        // A reservation given back frees what it held.
        p.release(&[tx_amount(1, 2, 300).hash()]);
        assert_eq!(p.pending_spend(&key(1).public()), 1_000);
        // An earlier nonce that arrives after a later one (gossip from another
        // validator) is not refused for the later one's spend.
        p.add(tx_amount(3, 1, 500), &l).unwrap();
        p.add(tx_amount(3, 0, 600), &l).unwrap();
        // Its own reservation is not counted against a transfer.
        p.reserve(&verify(tx_amount(2, 0, 1_000)), &l).unwrap();
        assert_eq!(
            p.add_logged(vec![Ok(verify(tx_amount(2, 0, 1_000)))], &l),
            vec![Ok(tx_amount(2, 0, 1_000).hash())]
        );
        p.check_invariants();
        // A block that takes them moves the balance and the spends together.
        let mut l = l;
        let block = p.select(|k| l.account(k).nonce, 16, usize::MAX);
        l.apply(1, &block);
        p.remove_committed(1, &block, &l);
        assert_eq!(p.pending_spend(&key(1).public()), 0);
        assert_eq!(l.account(&key(1).public()).balance, 0);
        assert!(matches!(
            p.add(tx(1, 2), &l),
            Err(MempoolError::Unfunded { balance: 0, .. })
        ));
        p.check_invariants();
    }

    #[test]
    fn a_submission_pending_by_gossip_and_dropped_during_its_log_write_arrives_anew() {
        // Key 7's transfers came by gossip; a client submits nonce 7 while it is
        // pending (the reservation holds nothing for it). During the log write a
        // block strands them behind a failed nonce 0 and the furthest ahead leave
        // past the gapped share: the written one must not come back past it.
        let l = ledger();
        let funded = Ledger::from_balances(&[(key(7).public(), 1_000)]).unwrap();
        let mut p = pool(8);
        for nonce in 0..8 {
            p.add(tx(7, nonce), &funded).unwrap();
        }
        let submitted = tx(7, 7).verify(&chain()).unwrap();
        p.reserve(&submitted, &funded).unwrap();
        let mut l = l;
        let block = p.select(|k| l.account(k).nonce, 1, usize::MAX);
        l.apply(1, &block);
        p.remove_committed(1, &block, &l);
        assert!(!p.contains(&tx(7, 7).hash()), "dropped behind the gap");
        let written = p.add_written(vec![Ok(submitted)], &l);
        assert!(
            matches!(written[0], Err(MempoolError::Gapped { .. })),
            "{written:?}"
        );
        assert_eq!(p.gapped(), p.gapped_max());
        p.check_invariants();
    }

    #[test]
    fn a_transfer_read_back_from_the_log_is_not_refused_for_its_balance() {
        // Answered 202 when the sender could pay; after a restart the spends are
        // counted again in log order, and a 202 is not taken back for a sum.
        let l = ledger();
        let mut p = pool(16);
        let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
        let logged = vec![Ok(verify(tx_amount(7, 0, 5)))];
        assert_eq!(
            p.add_logged(logged, &l),
            vec![Ok(tx_amount(7, 0, 5).hash())]
        );
        p.check_invariants();
    }

    #[test]
    fn the_run_of_nonces_follows_admissions_reservations_blocks_and_drops() {
        let mut l = ledger();
        let mut p = pool(64);
        let verify = |t: SignedTransfer| t.verify(&chain()).unwrap();
        let k1 = key(1).public();
        // Out of order: 2 and 3 wait behind 0 and 1.
        p.add(tx(1, 2), &l).unwrap();
        p.add(tx(1, 3), &l).unwrap();
        assert_eq!(p.pending_nonce(&k1, 0), 0);
        assert!(!p.in_line(&k1, 2, 0));
        p.reserve(&verify(tx(1, 0)), &l).unwrap();
        assert_eq!(p.pending_nonce(&k1, 0), 1);
        p.add(tx(1, 1), &l).unwrap();
        // Filling the gap joins the run behind it.
        assert_eq!(p.pending_nonce(&k1, 0), 4);
        assert!(p.in_line(&k1, 4, 0) && !p.in_line(&k1, 5, 0));
        p.check_invariants();
        // A failed write cuts the run at its nonce.
        p.release(&[tx(1, 0).hash()]);
        assert_eq!(p.pending_nonce(&k1, 0), 0);
        p.check_invariants();
        p.add(tx(1, 0), &l).unwrap();
        assert_eq!(p.pending_nonce(&k1, 0), 4);
        // A block takes the front of the run: the rest is the run from the new
        // next nonce.
        let block = p.select(|k| l.account(k).nonce, 2, usize::MAX);
        l.apply(1, &block);
        p.remove_committed(1, &block, &l);
        assert_eq!(l.account(&k1).nonce, 2);
        assert_eq!(p.pending_nonce(&k1, 2), 4);
        p.check_invariants();
        // Asked with a next nonce outside the run, it still answers.
        assert_eq!(p.pending_nonce(&k1, 3), 4);
        assert_eq!(p.pending_nonce(&k1, 9), 9);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the order of admissions, reservations, failed writes, log
        /// answers and blocks, the books (runs and spends) match what the pool
        /// holds, and the one-lookup answers match a walk over every nonce.
        #[test]
        fn the_books_match_the_pool_under_any_order_of_events(
            ops in proptest::collection::vec((0u8..6, 0u64..3, 0u64..8, 1u64..400), 1..80)
        ) {
            let mut l = ledger();
            let mut p = pool(32);
            let mut height = 0;
            let mut reserved: Vec<SignedTransfer> = Vec::new();
            for (op, sender, ahead, amount) in ops {
                let next = l.account(&key(sender).public()).nonce;
                let t = tx_amount(sender, next + ahead, amount);
                match op {
                    0 | 1 => {
                        let _ = p.add(t, &l);
                    }
                    2 => {
                        if p.reserve(&t.clone().verify(&chain()).unwrap(), &l).is_ok() {
                            reserved.push(t);
                        }
                    }
                    3 => {
                        if let Some(t) = reserved.pop() {
                            let _ = p.add_logged(vec![t.verify(&chain())], &l);
                        }
                    }
                    4 => {
                        if let Some(t) = reserved.pop() {
                            p.release(&[t.hash()]);
                        }
                    }
                    _ => {
                        height += 1;
                        let block = p.select(|k| l.account(k).nonce, 3, usize::MAX);
                        l.apply(height, &block);
                        p.remove_committed(height, &block, &l);
                    }
                }
                p.check_invariants();
                for s in 0..3 {
                    let k = key(s).public();
                    let next = l.account(&k).nonce;
                    for from in next..next + 10 {
                        proptest::prop_assert_eq!(p.pending_nonce(&k, from), p.walk(&k, from));
                    }
                }
            }
        }
    }
}
