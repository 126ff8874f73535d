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

mod admission;
mod book;
mod verify;
pub use verify::{
    Known, Prepared, VERIFY_BACKLOG_MAX, prepare, verify_unknown, verify_unknown_groups,
};

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

    /// Entries blocks could take one after another when the last block executed.
    pub fn ready_at_block(&self) -> usize {
        self.ready_at_block
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

#[cfg(test)]
mod tests;
