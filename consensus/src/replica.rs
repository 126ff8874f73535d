//! The PBFT replica: one synchronous state machine driven by [`Replica::handle`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::ahead::Ahead;
use crate::choice::{Chosen, certificate_for, proven_claims, select};
use crate::messages::{
    Checkpoint, CheckpointProof, Commit, CommitCertificate, Message, NewView, PrePrepare, Prepare,
    PreparedCertificate, Signed, ViewChange, ViewChangeSummary,
};
use crate::safety::{SafetyRecord, SafetyRules, SignedWithRecord};
use crate::types::{Digest, ReplicaId, SeqNum, ValidatorSet, View};
use mosaic_crypto::Keypair;

/// The caller's knowledge of payloads: the crate treats them as opaque bytes.
pub trait PayloadCheck {
    /// Checks that `payload` is a valid proposal for `seq` extending `parent` and
    /// returns its digest; `Err` says why not. Must be deterministic: every honest
    /// replica must reach the same answer for the same arguments. The digest must
    /// commit to the payload's position: a payload that passes for (seq, parent)
    /// must fail for any other parent (e.g. the payload names its parent and height,
    /// and the digest hashes it), because the core relies on a digest meaning one
    /// place in one chain.
    fn check(&self, seq: SeqNum, parent: Digest, payload: &[u8]) -> Result<Digest, String>;
}

/// Tunables. Ticks are the host's logical time unit (the node uses milliseconds).
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica.
    pub id: ReplicaId,
    /// All replicas.
    pub validators: ValidatorSet,
    /// The digest of the genesis state: the parent of sequence number 1.
    pub genesis: Digest,
    /// K: a checkpoint every K sequence numbers.
    pub checkpoint_interval: u64,
    /// L: sequence numbers accepted above the low watermark (>= 2K).
    pub window: u64,
    /// First view-change timeout; doubles on each consecutive view change.
    pub view_change_timeout_ticks: u64,
    /// Upper bound of the growing timeout.
    pub view_change_timeout_max_ticks: u64,
    /// Largest payload accepted.
    pub payload_bytes_max: usize,
    /// Messages for future views kept until the view is entered (split evenly
    /// between senders).
    pub future_messages_max: usize,
    /// Payload bytes of buffered future-view pre-prepares.
    pub future_bytes_max: usize,
    /// Largest message this replica sends (the host's frame limit). A NEW-VIEW
    /// carries the re-issued payloads that fit; a replica that lacks one of the
    /// others fetches it before it votes for it.
    pub message_bytes_max: usize,
}

impl Config {
    /// Defaults for replica `id` of `validators`.
    pub fn new(id: ReplicaId, validators: ValidatorSet, genesis: Digest) -> Self {
        Config {
            id,
            validators,
            genesis,
            checkpoint_interval: 16,
            window: 64,
            view_change_timeout_ticks: 2_000,
            view_change_timeout_max_ticks: 60_000,
            payload_bytes_max: 16 * 1024 * 1024,
            future_messages_max: 4_096,
            future_bytes_max: 64 * 1024 * 1024,
            message_bytes_max: 32 * 1024 * 1024,
        }
    }
}

/// The logical timers the core asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// No progress in `view` for too long: start a view change.
    Progress {
        /// The view it guards.
        view: View,
    },
    /// The view change to `view` did not complete in time: try the next view.
    ViewChange {
        /// The view being changed to.
        view: View,
    },
    /// Still waiting for the view change to `view`: send our VIEW-CHANGE again
    /// (messages may have been lost, e.g. to a partition).
    Retransmit {
        /// The view being changed to.
        view: View,
    },
    /// A help period ended: peers may be sent again what they were sent in it
    /// (certified payloads, checkpoints, NEW-VIEW, fetched payloads). Runs always.
    HelpPeriod,
}

/// Everything that can happen to a replica.
#[derive(Debug, Clone)]
pub enum Input {
    /// A message from replica `from` (the transport's authenticated peer).
    Message {
        /// Sender.
        from: ReplicaId,
        /// The message, unverified.
        message: Message,
    },
    /// The primary's batch, answering [`Output::ProposalWanted`].
    Propose {
        /// The sequence number it was built for.
        seq: SeqNum,
        /// The parent it extends.
        parent: Digest,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Whether the host has client requests waiting to be ordered (arms the
    /// progress timer on backups, so a silent primary gets replaced).
    Pending(bool),
    /// A timer set with [`Output::SetTimer`] fired.
    Timeout(Timer),
    /// The host's connection to `peer` came up again (after a partition, a restart,
    /// a dead link replaced). A replica changing view sends that peer its
    /// VIEW-CHANGE at once: the others may have moved on to other views while they
    /// could not hear each other, and waiting for the next retransmission would
    /// keep a healed quorum apart for that long.
    Reconnected {
        /// The replica now reachable.
        peer: ReplicaId,
    },
    /// A payload with its certificate, fetched for [`Output::StateTransfer`].
    CertifiedPayload {
        /// The payload.
        payload: Vec<u8>,
        /// Its commit certificate.
        certificate: CommitCertificate,
    },
}

/// What the host must do. Carry outputs out in order: a `Persist` must be durable
/// before any output after it is carried out.
#[must_use]
#[derive(Debug, Clone)]
pub enum Output {
    /// Durably store this record (replacing the previous one) BEFORE carrying out any
    /// later output; on restart, hand it back to [`Replica::new`].
    Persist(SafetyRecord),
    /// Durably store this payload BEFORE carrying out any later output (the vote
    /// that follows: PRE-PREPARE, PREPARE or NEW-VIEW); hand it back in
    /// [`Restored::payloads`] after a restart. It may be dropped once a stable
    /// checkpoint covers `seq`.
    PersistPayload {
        /// Sequence number.
        seq: SeqNum,
        /// Digest.
        digest: Digest,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Send `message` to replica `to`.
    Send {
        /// Recipient.
        to: ReplicaId,
        /// Message.
        message: Message,
    },
    /// Send `message` to every other replica.
    Broadcast(Message),
    /// `payload` is committed at `seq`: execute it. Delivered strictly in sequence
    /// order, each exactly once per run.
    Deliver {
        /// Sequence number (height).
        seq: SeqNum,
        /// Payload digest.
        digest: Digest,
        /// The payload.
        payload: Vec<u8>,
        /// Proof of commitment.
        certificate: CommitCertificate,
    },
    /// As primary, build a batch for `seq` extending `parent` and answer with
    /// [`Input::Propose`] when there is something to propose.
    ProposalWanted {
        /// Sequence number to fill.
        seq: SeqNum,
        /// Digest it must extend.
        parent: Digest,
    },
    /// Start (or restart) `timer` to fire after `after_ticks`; replaces a pending one.
    SetTimer {
        /// Which timer.
        timer: Timer,
        /// Delay.
        after_ticks: u64,
    },
    /// Stop `timer` if pending.
    CancelTimer(Timer),
    /// This replica is behind: fetch certified payloads `from..=to` from peers and
    /// feed them back as [`Input::CertifiedPayload`], in order.
    StateTransfer {
        /// First missing sequence number.
        from: SeqNum,
        /// Last one known to be committed.
        to: SeqNum,
    },
    /// A checkpoint became stable (the host may prune what lies below it).
    CheckpointStable(CheckpointProof),
    /// The replica entered `view` (for logs and metrics).
    EnteredView {
        /// The view.
        view: View,
        /// Its primary.
        primary: ReplicaId,
    },
    /// An input was refused for `reason` (for metrics and peer scores; the host
    /// decides which reasons cost the sender points). Comes after the input's other
    /// outputs, in the order of the refusals.
    Refused {
        /// The replica whose message was refused (also when the message was kept
        /// in a buffer and fed again in this step), or `None` for the host's own
        /// inputs (a proposal, a certified payload).
        from: Option<ReplicaId>,
        /// Why.
        reason: &'static str,
    },
}

/// Where the replica is in the view protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Running the normal case in the current view.
    Normal,
    /// Waiting for NEW-VIEW of this view.
    ViewChanging(View),
}

/// What a restarted replica reads back from its store.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The persisted safety record.
    pub record: SafetyRecord,
    /// The last delivered (executed) sequence number and its digest.
    pub last_delivered: (SeqNum, Digest),
    /// The last stable checkpoint the host was told of ([`Output::CheckpointStable`]),
    /// or the genesis checkpoint.
    pub stable: CheckpointProof,
    /// Payloads persisted with [`Output::PersistPayload`] above `stable`.
    pub payloads: Vec<(SeqNum, Digest, Vec<u8>)>,
    /// The digests delivered in the last `window` sequence numbers (from the block
    /// store), so a restarted replica still refuses re-proposals that contradict them.
    pub delivered: Vec<(SeqNum, Digest)>,
}

/// What a peer was sent in the current help period ([`Timer::HelpPeriod`]): a
/// repeated request (a retransmitted or replayed VIEW-CHANGE, the same
/// FETCH-PAYLOAD again) is answered once per period, so a small message can never
/// be turned into a flood of payloads.
#[derive(Debug, Default)]
struct HelpGiven {
    /// Certified payloads sent up to here.
    certified_to: SeqNum,
    /// The stable checkpoint whose proof was sent.
    checkpoint: Option<SeqNum>,
    /// The view whose NEW-VIEW was forwarded.
    new_view: Option<View>,
    /// Payloads sent in answer to FETCH-PAYLOAD, and their bytes.
    payloads: BTreeSet<(SeqNum, Digest)>,
    payload_bytes: usize,
}

#[derive(Debug, Default)]
struct Slot {
    pre_prepare: Option<Signed<PrePrepare>>,
    prepares: BTreeMap<ReplicaId, Signed<Prepare>>,
    commits: BTreeMap<ReplicaId, Signed<Commit>>,
    prepared: bool,
    sent_commit: bool,
}

/// A PBFT replica. See the crate docs for the protocol rules.
pub struct Replica {
    config: Config,
    safety: SafetyRules,
    check: Box<dyn PayloadCheck + Send>,
    view: View,
    status: Status,
    /// Current-view log, keyed by sequence number, inside the window.
    slots: BTreeMap<SeqNum, Slot>,
    /// Pre-prepares waiting for their parent's pre-prepare.
    waiting: BTreeMap<SeqNum, (Signed<PrePrepare>, Vec<u8>)>,
    /// Re-issued pre-prepares of the current view whose payload the NEW-VIEW did
    /// not carry and this replica lacks: fetched, then installed.
    reissued: BTreeMap<SeqNum, Signed<PrePrepare>>,
    /// Payloads known, above stable.
    payloads: BTreeMap<(SeqNum, Digest), Vec<u8>>,
    /// The parent each payload was checked against (a payload extends exactly one).
    checked_parent: BTreeMap<(SeqNum, Digest), Digest>,
    /// Commit certificates formed, not yet delivered.
    certified: BTreeMap<SeqNum, CommitCertificate>,
    /// Digests delivered above the stable checkpoint (plus the one at it).
    delivered: BTreeMap<SeqNum, Digest>,
    /// Certificates of what was delivered above the stable checkpoint (to help
    /// replicas that fall behind).
    delivered_certs: BTreeMap<SeqNum, CommitCertificate>,
    last_delivered_digest: Digest,
    /// Certified payloads received ahead of delivery, checked when their turn comes.
    catch_up: BTreeMap<(SeqNum, ReplicaId), (Vec<u8>, CommitCertificate)>,
    /// Payload bytes in `catch_up`, per sender: each has its own budget, so one
    /// sender's junk cannot crowd out another's real payloads.
    catch_up_bytes: BTreeMap<ReplicaId, usize>,
    /// What each peer was sent in the current help period.
    help: BTreeMap<ReplicaId, HelpGiven>,
    last_delivered: SeqNum,
    stable: CheckpointProof,
    /// Each replica's recent checkpoints: (seq, digest) -> signed, at most a few each.
    checkpoints: BTreeMap<ReplicaId, BTreeMap<SeqNum, Signed<Checkpoint>>>,
    /// Each replica's latest verified view change.
    view_changes: BTreeMap<ReplicaId, Signed<ViewChange>>,
    /// As the new primary: its own VIEW-CHANGE signed again at its current stable
    /// checkpoint, when that moved after the first was sent (see
    /// [`Self::refresh_own_view_change`]). Only the NEW-VIEW carries it: peers keep
    /// the first one they got.
    own_refreshed: Option<Signed<ViewChange>>,
    future: VecDeque<(ReplicaId, Message)>,
    future_bytes: usize,
    /// Current-view messages just above the window, fed again when it moves.
    ahead: Ahead,
    next_proposal: SeqNum,
    proposal_wanted: Option<SeqNum>,
    /// Payloads asked for: (seq, digest) -> the parent they must extend.
    fetches_sent: BTreeMap<(SeqNum, Digest), Digest>,
    /// How often each payload still missing was asked again, one peer at a time
    /// (see [`Self::ask_again`]).
    fetch_retries: BTreeMap<(SeqNum, Digest), u32>,
    state_transfer_to: SeqNum,
    pending_work: bool,
    progress_timer: Option<View>,
    /// The view whose view-change timer is running (armed at 2f+1 view changes).
    view_change_timer: Option<View>,
    /// The NEW-VIEW that started the current view (sent or received; it verifies on
    /// its own), to forward to replicas that missed it.
    last_new_view: Option<Message>,
    consecutive_view_changes: u32,
    rejections: BTreeMap<&'static str, u64>,
    /// The sender of the message being handled (`None` for the host's inputs).
    sender: Option<ReplicaId>,
    /// Refusals of this step, handed to the host as [`Output::Refused`].
    refused: Vec<(Option<ReplicaId>, &'static str)>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.config.id)
            .field("view", &self.view)
            .field("status", &self.status)
            .field("last_delivered", &self.last_delivered)
            .field("stable", &self.stable.seq)
            .finish_non_exhaustive()
    }
}

/// Checkpoints kept per replica (a replica far behind still sees recent ones).
const CHECKPOINTS_PER_REPLICA: usize = 4;

impl Replica {
    /// A replica, new (`restored: None`) or restarted from its persisted record and
    /// the last block it delivered. Returns the outputs to start with (timers).
    pub fn new(
        config: Config,
        key: Keypair,
        check: Box<dyn PayloadCheck + Send>,
        restored: Option<Restored>,
    ) -> Self {
        let (record, (last_delivered, last_digest), stable, saved, recent) = match restored {
            Some(r) => (
                r.record,
                r.last_delivered,
                r.stable,
                r.payloads,
                r.delivered,
            ),
            None => (
                SafetyRecord::default(),
                (SeqNum(0), config.genesis),
                CheckpointProof::genesis(config.genesis),
                Vec::new(),
                Vec::new(),
            ),
        };
        let payloads: BTreeMap<(SeqNum, Digest), Vec<u8>> = saved
            .into_iter()
            .filter(|(seq, _, _)| *seq > stable.seq && seq.0 <= stable.seq.0 + config.window)
            .map(|(seq, digest, payload)| ((seq, digest), payload))
            .collect();
        let view = record.entered;
        let safety = SafetyRules::new(key, config.id, record);
        let floor = last_delivered.0.saturating_sub(config.window);
        let mut delivered: BTreeMap<SeqNum, Digest> = recent
            .into_iter()
            .filter(|(s, _)| s.0 >= floor && *s < last_delivered)
            .collect();
        delivered.insert(last_delivered, last_digest);
        Replica {
            safety,
            check,
            view,
            status: Status::Normal,
            slots: BTreeMap::new(),
            waiting: BTreeMap::new(),
            reissued: BTreeMap::new(),
            payloads,
            checked_parent: BTreeMap::new(),
            certified: BTreeMap::new(),
            delivered,
            delivered_certs: BTreeMap::new(),
            catch_up: BTreeMap::new(),
            catch_up_bytes: BTreeMap::new(),
            help: BTreeMap::new(),
            last_delivered,
            last_delivered_digest: last_digest,
            stable,
            checkpoints: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            own_refreshed: None,
            future: VecDeque::new(),
            future_bytes: 0,
            ahead: Ahead::default(),
            next_proposal: last_delivered.next(),
            // (raised in start() above the primary's own recorded votes)
            proposal_wanted: None,
            fetches_sent: BTreeMap::new(),
            fetch_retries: BTreeMap::new(),
            state_transfer_to: SeqNum(0),
            pending_work: false,
            progress_timer: None,
            view_change_timer: None,
            last_new_view: None,
            consecutive_view_changes: 0,
            rejections: BTreeMap::new(),
            sender: None,
            refused: Vec::new(),
            config,
        }
    }

    /// Outputs to carry out right after construction (the primary asks for a batch).
    pub fn start(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        out.push(Output::EnteredView {
            view: self.view,
            primary: self.primary(),
        });
        out.push(Output::SetTimer {
            timer: Timer::HelpPeriod,
            after_ticks: self.config.view_change_timeout_ticks,
        });
        // A crash between storing a stable checkpoint and the collected record leaves
        // the record behind it: collect now.
        if let Some(record) = self.safety.collect_garbage(self.stable.seq) {
            out.push(Output::Persist(record));
        }
        if self.last_delivered < self.stable.seq {
            // Restored behind our own stable checkpoint: fetch the gap.
            self.state_transfer_to = self.stable.seq;
            out.push(Output::StateTransfer {
                from: self.last_delivered.next(),
                to: self.stable.seq,
            });
        }
        // A restarted primary already pre-prepared some sequence numbers of this view:
        // new proposals go above them (the safety rules would refuse them anyway).
        let own_votes = self
            .safety
            .record()
            .prepared
            .iter()
            .filter(|(_, (v, _))| *v == self.view)
            .map(|(s, _)| *s)
            .max();
        if let Some(highest) = own_votes.filter(|s| *s >= self.next_proposal) {
            self.next_proposal = highest.next();
        }
        let asked = self.safety.record().view;
        if asked > self.view {
            // Restarted in the middle of a view change: resume it.
            self.start_view_change(asked, &mut out);
        }
        self.want_proposal(&mut out);
        self.hand_over_refusals(&mut out);
        out
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.config.id
    }
    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }
    /// Normal or changing views.
    pub fn status(&self) -> Status {
        self.status
    }
    /// The primary of the current view.
    pub fn primary(&self) -> ReplicaId {
        self.config.validators.primary(self.view)
    }
    /// The last delivered sequence number.
    pub fn last_delivered(&self) -> SeqNum {
        self.last_delivered
    }
    /// The stable checkpoint.
    pub fn stable_checkpoint(&self) -> &CheckpointProof {
        &self.stable
    }
    /// Messages refused so far, by reason (for metrics).
    pub fn rejections(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejections
    }
    /// The safety record (what is persisted).
    pub fn safety_record(&self) -> &SafetyRecord {
        self.safety.record()
    }
    /// The validator set.
    pub fn validators(&self) -> &ValidatorSet {
        &self.config.validators
    }

    fn is_primary(&self) -> bool {
        self.primary() == self.config.id
    }

    fn low(&self) -> SeqNum {
        self.stable.seq
    }

    fn in_window(&self, seq: SeqNum) -> bool {
        seq > self.low() && seq.0 <= self.low().0 + self.config.window
    }

    fn reject(&mut self, reason: &'static str) {
        *self.rejections.entry(reason).or_default() += 1;
        self.refused.push((self.sender, reason));
    }

    fn persist_and<T>(out: &mut Vec<Output>, signed: SignedWithRecord<T>) -> Signed<T> {
        #[cfg(test)]
        if crate::types::injected(crate::types::canary::Bug::NoPersistBeforeSend) {
            return signed.signed;
        }
        if let Some(record) = signed.persist {
            out.push(Output::Persist(record));
        }
        signed.signed
    }

    /// Feeds one input; returns what the host must do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        self.sender = None;
        match input {
            Input::Message { from, message } => self.on_message(from, message, &mut out),
            Input::Propose {
                seq,
                parent,
                payload,
            } => self.on_propose(seq, parent, payload, &mut out),
            Input::Pending(pending) => {
                self.pending_work = pending;
                self.arm_progress_timer(&mut out);
            }
            Input::Timeout(timer) => self.on_timeout(timer, &mut out),
            Input::Reconnected { peer } => self.on_reconnected(peer, &mut out),
            Input::CertifiedPayload {
                payload,
                certificate,
            } => self.on_certified_payload(payload, certificate, &mut out),
        }
        self.hand_over_refusals(&mut out);
        #[cfg(test)]
        self.check_invariants();
        out
    }

    /// The step's refusals, after its other outputs.
    fn hand_over_refusals(&mut self, out: &mut Vec<Output>) {
        out.extend(
            self.refused
                .drain(..)
                .map(|(from, reason)| Output::Refused { from, reason }),
        );
    }

    // ----- normal case (PBFT 4.2) -----

    /// The digest at `seq` that a proposal at `seq + 1` must extend, if known.
    fn digest_at(&self, seq: SeqNum) -> Option<Digest> {
        if seq == self.last_delivered {
            return Some(self.last_delivered_digest);
        }
        if let Some(d) = self.delivered.get(&seq) {
            return Some(*d);
        }
        if seq == self.stable.seq {
            return Some(self.stable.digest);
        }
        self.slots
            .get(&seq)
            .and_then(|s| s.pre_prepare.as_ref())
            .map(|p| p.body.digest)
    }

    fn want_proposal(&mut self, out: &mut Vec<Output>) {
        if !self.is_primary() || self.status != Status::Normal {
            return;
        }
        let seq = self.next_proposal;
        if !self.in_window(seq) || self.proposal_wanted == Some(seq) {
            return;
        }
        if let Some(parent) = self.digest_at(seq.prev()) {
            self.proposal_wanted = Some(seq);
            out.push(Output::ProposalWanted { seq, parent });
        }
    }

    fn on_propose(&mut self, seq: SeqNum, parent: Digest, payload: Vec<u8>, out: &mut Vec<Output>) {
        if !self.is_primary()
            || self.status != Status::Normal
            || seq != self.next_proposal
            || self.digest_at(seq.prev()) != Some(parent)
            || !self.in_window(seq)
        {
            // The host answered an earlier request (its parent or height moved on
            // since): ask again for the current one, or the primary stalls.
            self.reject("stale-proposal");
            if self.proposal_wanted == Some(seq) {
                self.proposal_wanted = None;
                self.want_proposal(out);
            }
            return;
        }
        if payload.len() > self.config.payload_bytes_max {
            self.reject("oversized-payload");
            return;
        }
        let digest = match self.check.check(seq, parent, &payload) {
            Ok(d) => d,
            Err(_) => {
                self.reject("own-proposal-invalid");
                return;
            }
        };
        let body = PrePrepare {
            view: self.view,
            seq,
            digest,
            parent,
        };
        let Ok(signed) = self.safety.sign_pre_prepare(&self.config.validators, body) else {
            self.reject("safety-refused");
            return;
        };
        out.push(Output::PersistPayload {
            seq,
            digest,
            payload: payload.clone(),
        });
        let pre_prepare = Self::persist_and(out, signed);
        out.push(Output::Broadcast(Message::PrePrepare {
            pre_prepare: pre_prepare.clone(),
            payload: payload.clone(),
        }));
        self.next_proposal = seq.next();
        self.proposal_wanted = None;
        self.install_pre_prepare(pre_prepare, payload, out);
        self.want_proposal(out);
    }

    /// A message of `from`: what it raises is refused in `from`'s name, also when
    /// it is a buffered one fed again while another sender's message is handled.
    fn on_message(&mut self, from: ReplicaId, message: Message, out: &mut Vec<Output>) {
        let outer = self.sender.replace(from);
        self.on_message_of(from, message, out);
        self.sender = outer;
    }

    fn on_message_of(&mut self, from: ReplicaId, message: Message, out: &mut Vec<Output>) {
        if self.config.validators.key(from).is_none() {
            self.reject("unknown-sender");
            return;
        }
        match message {
            Message::PrePrepare {
                pre_prepare,
                payload,
            } => self.on_pre_prepare(from, pre_prepare, payload, out),
            Message::Prepare(p) => self.on_prepare(from, p, out),
            Message::Commit(c) => self.on_commit(from, c, out),
            Message::Checkpoint(c) => self.on_checkpoint(c, out),
            Message::ViewChange(vc) => self.on_view_change(from, vc, out),
            Message::NewView { new_view, payloads } => self.on_new_view(new_view, payloads, out),
            Message::FetchPayload { seq, digest } => self.on_fetch_payload(from, seq, digest, out),
            Message::Payload { seq, payload } => self.on_payload(seq, payload, out),
            Message::Certified {
                payload,
                certificate,
            } => self.on_catch_up(from, payload, certificate, out),
        }
    }

    /// Answers a FETCH-PAYLOAD with a payload we hold: each (seq, digest) once per
    /// peer per help period, within a per-peer byte budget.
    fn on_fetch_payload(
        &mut self,
        from: ReplicaId,
        seq: SeqNum,
        digest: Digest,
        out: &mut Vec<Output>,
    ) {
        let Some(payload) = self.payloads.get(&(seq, digest)) else {
            return;
        };
        let given = self.help.entry(from).or_default();
        if given.payloads.contains(&(seq, digest))
            || given.payload_bytes + payload.len() > self.config.future_bytes_max
        {
            self.reject("fetch-already-answered");
            return;
        }
        given.payloads.insert((seq, digest));
        given.payload_bytes += payload.len();
        out.push(Output::Send {
            to: from,
            message: Message::Payload {
                seq,
                payload: payload.clone(),
            },
        });
    }

    /// Whether a message of a view not entered yet, of `bytes` payload bytes, would
    /// be kept: only for the view we are moving to (or the next one), not a copy of
    /// one kept from the same sender, and within the sender's share and the byte
    /// bound, so a Byzantine peer can neither exhaust memory nor push out honest
    /// messages. Asked before the signature is checked: a replayed or surplus message
    /// costs no signature check.
    fn future_room(
        &mut self,
        from: ReplicaId,
        view: View,
        bytes: usize,
        same: impl Fn(&Message) -> bool,
    ) -> bool {
        if view > self.target_view().max(self.view.next()) {
            self.reject("too-far-in-the-future");
            return false;
        }
        let mut from_sender = 0;
        for (f, kept) in &self.future {
            if *f == from {
                if same(kept) {
                    self.reject("future-duplicate");
                    return false;
                }
                from_sender += 1;
            }
        }
        let per_sender = (self.config.future_messages_max / self.config.validators.len()).max(1);
        if from_sender >= per_sender || self.future_bytes + bytes > self.config.future_bytes_max {
            self.reject("future-buffer-full");
            return false;
        }
        true
    }

    /// Keeps a verified message that [`Self::future_room`] admitted.
    fn buffer_future(&mut self, from: ReplicaId, message: Message) {
        if let Message::PrePrepare { payload, .. } = &message {
            self.future_bytes += payload.len();
        }
        self.future.push_back((from, message));
    }

    /// A current-view message outside the window: below it, or more than a window
    /// above it, it is refused; just above it, it is kept for when the window moves
    /// (see [`Ahead`]). Its signature is checked first, so a forged one is charged to
    /// its sender now, not to whoever moves the window later.
    fn out_of_window(&mut self, from: ReplicaId, seq: SeqNum, message: Message, bytes: usize) {
        let high = self.low().0 + self.config.window;
        if seq.0 <= high || seq.0 > high + self.config.window {
            self.reject("out-of-window");
            return;
        }
        // Only the primary's own PRE-PREPAREs carry payload bytes here (honest
        // replicas never relay another's), so the primary may use all of the
        // bytes and one maximal PRE-PREPARE always fits.
        if let Message::PrePrepare { pre_prepare, .. } = &message
            && pre_prepare.signer != from
        {
            self.reject("ahead-relayed");
            return;
        }
        let n = self.config.validators.len();
        let messages_max = (3 * self.config.window as usize)
            .min(self.config.future_messages_max / n)
            .max(1);
        let bytes_max = self.config.future_bytes_max;
        // Cheap checks first: a copy or a message past its sender's share costs
        // no signature check.
        if let Err(refused) = self
            .ahead
            .room(from, &message, bytes, messages_max, bytes_max)
        {
            self.reject(refused.reason());
            return;
        }
        let verified = match &message {
            Message::PrePrepare { pre_prepare, .. } => {
                pre_prepare.verify(&self.config.validators).is_ok()
            }
            Message::Prepare(p) => p.verify(&self.config.validators).is_ok(),
            Message::Commit(c) => c.verify(&self.config.validators).is_ok(),
            _ => false,
        };
        if !verified {
            self.reject("bad-signature");
            return;
        }
        self.ahead.keep(from, message, bytes);
    }

    /// Feeds again what [`Self::out_of_window`] kept (the window moved).
    fn replay_ahead(&mut self, out: &mut Vec<Output>) {
        let kept = self.ahead.take();
        if kept.is_empty() {
            return;
        }
        for (from, message) in kept {
            self.on_message(from, message, out);
        }
    }

    fn on_pre_prepare(
        &mut self,
        from: ReplicaId,
        pre_prepare: Signed<PrePrepare>,
        payload: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        let pp = pre_prepare.body;
        if pp.view > self.view || (pp.view == self.view && self.status != Status::Normal) {
            if payload.len() > self.config.payload_bytes_max {
                self.reject("oversized-payload");
                return;
            }
            let same = |kept: &Message| matches!(kept, Message::PrePrepare { pre_prepare: k, .. } if *k == pre_prepare);
            if !self.future_room(from, pp.view, payload.len(), same) {
                return;
            }
            if pre_prepare.signer != self.config.validators.primary(pp.view)
                || pre_prepare.verify(&self.config.validators).is_err()
            {
                self.reject("bad-signature");
                return;
            }
            self.buffer_future(
                from,
                Message::PrePrepare {
                    pre_prepare,
                    payload,
                },
            );
            return;
        }
        if pp.view < self.view {
            self.reject("old-view");
            return;
        }
        if pre_prepare.signer != self.primary() || self.is_primary() {
            self.reject("pre-prepare-not-from-primary");
            return;
        }
        if payload.len() > self.config.payload_bytes_max {
            self.reject("oversized-payload");
            return;
        }
        if !self.in_window(pp.seq) {
            let bytes = payload.len();
            let message = Message::PrePrepare {
                pre_prepare,
                payload,
            };
            self.out_of_window(from, pp.seq, message, bytes);
            return;
        }
        if let Some(existing) = self.slots.get(&pp.seq).and_then(|s| s.pre_prepare.as_ref()) {
            if existing.body.digest != pp.digest {
                self.reject("conflicting-pre-prepare");
            }
            return;
        }
        if pre_prepare.verify(&self.config.validators).is_err() {
            self.reject("bad-signature");
            return;
        }
        self.accept_pre_prepare(pre_prepare, payload, out);
    }

    /// A verified pre-prepare from the current primary: check its chain link and
    /// payload, or park it until its parent's pre-prepare arrives.
    fn accept_pre_prepare(
        &mut self,
        pre_prepare: Signed<PrePrepare>,
        payload: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        let pp = pre_prepare.body;
        let Some(expected_parent) = self.digest_at(pp.seq.prev()) else {
            // Bounded in count (the window) and in payload bytes, like the
            // other buffers of payloads not yet checked.
            let parked: usize = self
                .waiting
                .iter()
                .filter(|(s, _)| **s != pp.seq)
                .map(|(_, (_, p))| p.len())
                .sum();
            if self.waiting.len() < self.config.window as usize
                && parked.saturating_add(payload.len()) <= self.config.future_bytes_max
            {
                self.waiting.insert(pp.seq, (pre_prepare, payload));
            } else {
                self.reject("waiting-buffer-full");
            }
            return;
        };
        if expected_parent != pp.parent {
            self.reject("wrong-parent");
            return;
        }
        if let Some(delivered) = self.delivered.get(&pp.seq)
            && *delivered != pp.digest
        {
            self.reject("conflicts-with-delivered");
            return;
        }
        match self.check.check(pp.seq, pp.parent, &payload) {
            Ok(d) if d == pp.digest => {}
            _ => {
                self.reject("invalid-payload");
                return;
            }
        }
        self.install_pre_prepare(pre_prepare, payload, out);
    }

    /// Records an accepted pre-prepare, sends PREPARE (backups), then advances.
    fn install_pre_prepare(
        &mut self,
        pre_prepare: Signed<PrePrepare>,
        payload: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        let pp = pre_prepare.body;
        let mut own_prepare = None;
        if !self.is_primary() {
            let body = Prepare {
                view: pp.view,
                seq: pp.seq,
                digest: pp.digest,
                parent: pp.parent,
            };
            match self.safety.sign_prepare(&self.config.validators, body) {
                Ok(signed) => {
                    // The payload is durable before our PREPARE leaves: a certificate
                    // built on our vote must never point at a payload nobody kept.
                    out.push(Output::PersistPayload {
                        seq: pp.seq,
                        digest: pp.digest,
                        payload: payload.clone(),
                    });
                    let prepare = Self::persist_and(out, signed);
                    out.push(Output::Broadcast(Message::Prepare(prepare.clone())));
                    own_prepare = Some(prepare);
                }
                Err(_) => {
                    // We voted for another digest here before (e.g. before a restart):
                    // this pre-prepare is not ours to build on.
                    self.reject("safety-refused");
                    return;
                }
            }
        }
        self.payloads.insert((pp.seq, pp.digest), payload);
        self.checked_parent.insert((pp.seq, pp.digest), pp.parent);
        let slot = self.slots.entry(pp.seq).or_default();
        slot.pre_prepare = Some(pre_prepare);
        if let Some(prepare) = own_prepare {
            slot.prepares.insert(self.config.id, prepare);
        }
        self.arm_progress_timer(out);
        self.try_prepared(pp.seq, out);
        if self.certified.contains_key(&pp.seq) {
            // The certificate came first; this was the missing payload.
            self.try_deliver(out);
        }
        // A parked child may now have its parent.
        if let Some((child, child_payload)) = self.waiting.remove(&pp.seq.next())
            && child.body.view == self.view
        {
            self.accept_pre_prepare(child, child_payload, out);
        }
    }

    fn on_prepare(&mut self, from: ReplicaId, prepare: Signed<Prepare>, out: &mut Vec<Output>) {
        let p = prepare.body;
        if p.view > self.view || (p.view == self.view && self.status != Status::Normal) {
            let same = |kept: &Message| matches!(kept, Message::Prepare(k) if *k == prepare);
            if !self.future_room(from, p.view, 0, same) {
                return;
            }
            if prepare.verify(&self.config.validators).is_err() {
                self.reject("bad-signature");
                return;
            }
            self.buffer_future(from, Message::Prepare(prepare));
            return;
        }
        if p.view < self.view {
            self.reject("old-view");
            return;
        }
        if !self.in_window(p.seq) {
            self.out_of_window(from, p.seq, Message::Prepare(prepare), 0);
            return;
        }
        if prepare.signer == self.config.validators.primary(p.view) {
            self.reject("prepare-from-primary");
            return;
        }
        if self
            .slots
            .get(&p.seq)
            .is_some_and(|s| s.prepares.contains_key(&prepare.signer))
        {
            return;
        }
        if prepare.verify(&self.config.validators).is_err() {
            self.reject("bad-signature");
            return;
        }
        self.slots
            .entry(p.seq)
            .or_default()
            .prepares
            .insert(prepare.signer, prepare);
        self.try_prepared(p.seq, out);
    }

    /// PBFT 4.2 prepared(m, v, n, i), plus the chaining rule: a replica becomes
    /// prepared at `seq` only once it is prepared (or has delivered) at `seq - 1`.
    fn try_prepared(&mut self, seq: SeqNum, out: &mut Vec<Output>) {
        let quorum = self.config.validators.quorum();
        let primary = self.primary();
        // Prepared at seq - 1 in this view, or delivered there: and in either case the
        // pre-prepare at seq must extend exactly that digest.
        let prev = seq.prev();
        let parent_ready = match self.slots.get(&seq).and_then(|s| s.pre_prepare.as_ref()) {
            Some(pp) => {
                let parent = pp.body.parent;
                let prepared_prev = self.slots.get(&prev).is_some_and(|s| {
                    s.prepared
                        && s.pre_prepare
                            .as_ref()
                            .is_some_and(|p| p.body.digest == parent)
                });
                prepared_prev
                    || self.delivered.get(&prev) == Some(&parent)
                    || (prev == self.last_delivered && self.last_delivered_digest == parent)
                    || (prev == self.stable.seq && self.stable.digest == parent)
            }
            None => false,
        };
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        let Some(pp) = slot.pre_prepare.clone() else {
            return;
        };
        if slot.prepared || !parent_ready {
            return;
        }
        let matching: Vec<Signed<Prepare>> = slot
            .prepares
            .values()
            .filter(|p| {
                p.body.digest == pp.body.digest
                    && p.body.parent == pp.body.parent
                    && p.signer != primary
            })
            .take(quorum - 1)
            .cloned()
            .collect();
        if matching.len() < quorum - 1 {
            return;
        }
        slot.prepared = true;
        self.safety.remember_prepared(PreparedCertificate {
            pre_prepare: pp.clone(),
            prepares: matching,
        });
        if !slot.sent_commit {
            slot.sent_commit = true;
            let body = Commit {
                view: pp.body.view,
                seq,
                digest: pp.body.digest,
            };
            match self.safety.sign_commit(&self.config.validators, body) {
                Ok(signed) => {
                    let commit = Self::persist_and(out, signed);
                    out.push(Output::Broadcast(Message::Commit(commit.clone())));
                    if let Some(slot) = self.slots.get_mut(&seq) {
                        slot.commits.insert(self.config.id, commit);
                    }
                }
                Err(_) => self.reject("safety-refused"),
            }
        }
        self.try_committed(seq, out);
        self.try_prepared(seq.next(), out);
    }

    fn on_commit(&mut self, from: ReplicaId, commit: Signed<Commit>, out: &mut Vec<Output>) {
        let c = commit.body;
        if c.view > self.view || (c.view == self.view && self.status != Status::Normal) {
            let same = |kept: &Message| matches!(kept, Message::Commit(k) if *k == commit);
            if !self.future_room(from, c.view, 0, same) {
                return;
            }
            if commit.verify(&self.config.validators).is_err() {
                self.reject("bad-signature");
                return;
            }
            self.buffer_future(from, Message::Commit(commit));
            return;
        }
        if c.view < self.view {
            self.reject("old-view");
            return;
        }
        if !self.in_window(c.seq) {
            self.out_of_window(from, c.seq, Message::Commit(commit), 0);
            return;
        }
        if self
            .slots
            .get(&c.seq)
            .is_some_and(|s| s.commits.contains_key(&commit.signer))
        {
            return;
        }
        if commit.verify(&self.config.validators).is_err() {
            self.reject("bad-signature");
            return;
        }
        self.slots
            .entry(c.seq)
            .or_default()
            .commits
            .insert(commit.signer, commit);
        self.try_committed(c.seq, out);
    }

    /// PBFT 4.2 committed: 2f+1 matching commits form a certificate.
    fn try_committed(&mut self, seq: SeqNum, out: &mut Vec<Output>) {
        if self.certified.contains_key(&seq) || seq <= self.last_delivered {
            return;
        }
        let quorum = self.config.validators.quorum();
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        let mut by_digest: BTreeMap<Digest, Vec<&Signed<Commit>>> = BTreeMap::new();
        for c in slot.commits.values() {
            by_digest.entry(c.body.digest).or_default().push(c);
        }
        let Some((digest, commits)) = by_digest.into_iter().find(|(_, v)| v.len() >= quorum) else {
            return;
        };
        let certificate = CommitCertificate {
            view: self.view,
            seq,
            digest,
            signatures: commits
                .iter()
                .take(quorum)
                .map(|c| (c.signer, c.signature))
                .collect(),
        };
        self.certified.insert(seq, certificate);
        self.try_deliver(out);
    }

    /// Delivers certified payloads strictly in order; fetches missing payloads.
    fn try_deliver(&mut self, out: &mut Vec<Output>) {
        loop {
            let seq = self.last_delivered.next();
            // Every sender's candidate for this sequence number, until one checks out
            // (a Byzantine sender's junk cannot shadow an honest one's).
            let candidates: Vec<(Vec<u8>, CommitCertificate)> = self
                .catch_up
                .range((seq, ReplicaId(0))..=(seq, ReplicaId(u32::MAX)))
                .map(|(_, c)| c.clone())
                .collect();
            if !candidates.is_empty() {
                self.prune_catch_up(seq);
                if candidates
                    .into_iter()
                    .any(|(payload, certificate)| self.deliver_certified(payload, certificate, out))
                {
                    continue;
                }
            }
            let Some(certificate) = self.certified.get(&seq).cloned() else {
                break;
            };
            let Some(payload) = self.payloads.get(&(seq, certificate.digest)).cloned() else {
                let parent = self.last_delivered_digest;
                if self
                    .fetches_sent
                    .insert((seq, certificate.digest), parent)
                    .is_none()
                {
                    out.push(Output::Broadcast(Message::FetchPayload {
                        seq,
                        digest: certificate.digest,
                    }));
                }
                break;
            };
            // Delivery extends the chain we delivered, never another branch.
            let key = (seq, certificate.digest);
            let extends = self.checked_parent.get(&key) == Some(&self.last_delivered_digest)
                || self.check.check(seq, self.last_delivered_digest, &payload)
                    == Ok(certificate.digest);
            if !extends {
                self.reject("certified-payload-breaks-chain");
                break;
            }
            self.certified.remove(&seq);
            self.deliver(seq, payload, certificate, out);
        }
        self.settled(self.last_delivered, out);
        self.arm_progress_timer(out);
        self.want_proposal(out);
    }

    /// The digest at `seq` is now settled (delivered, or the stable checkpoint):
    /// the pre-prepare parked for `seq + 1` and a slot at `seq + 1` blocked by the
    /// chaining rule may proceed now, however `seq` got settled (its own slot,
    /// commits, catch-up or a checkpoint).
    fn settled(&mut self, seq: SeqNum, out: &mut Vec<Output>) {
        if self.status != Status::Normal {
            return;
        }
        let next = seq.next();
        if let Some((child, payload)) = self.waiting.remove(&next)
            && child.body.view == self.view
        {
            self.accept_pre_prepare(child, payload, out);
        }
        self.try_prepared(next, out);
    }

    /// Progress was made: the view's timer starts over.
    fn restart_progress_timer(&mut self, out: &mut Vec<Output>) {
        if let Some(v) = self.progress_timer.take() {
            out.push(Output::CancelTimer(Timer::Progress { view: v }));
        }
    }

    fn deliver(
        &mut self,
        seq: SeqNum,
        payload: Vec<u8>,
        certificate: CommitCertificate,
        out: &mut Vec<Output>,
    ) {
        let digest = certificate.digest;
        self.last_delivered = seq;
        self.last_delivered_digest = digest;
        self.prune_catch_up(seq);
        self.delivered.insert(seq, digest);
        self.delivered_certs.insert(seq, certificate.clone());
        self.payloads.insert((seq, digest), payload.clone());
        // What was delivered is kept only for the last `window` sequence numbers, so a
        // replica catching up far past a stale stable checkpoint stays bounded.
        let floor = SeqNum(seq.0.saturating_sub(self.config.window));
        if self
            .delivered
            .first_key_value()
            .is_some_and(|(s, _)| *s < floor)
        {
            self.delivered.retain(|s, _| *s >= floor);
            self.delivered_certs.retain(|s, _| *s > floor);
            let low = self.stable.seq;
            self.payloads
                .retain(|(s, _), _| *s > floor || *s > low.max(seq));
            self.checked_parent
                .retain(|(s, _), _| *s > floor || *s > low.max(seq));
        }
        self.consecutive_view_changes = 0;
        self.restart_progress_timer(out);
        if self.next_proposal <= seq {
            self.next_proposal = seq.next();
        }
        out.push(Output::Deliver {
            seq,
            digest,
            payload,
            certificate,
        });
        if seq.0.is_multiple_of(self.config.checkpoint_interval.max(1)) {
            match self
                .safety
                .sign_checkpoint(&self.config.validators, Checkpoint { seq, digest })
            {
                Ok(signed) => {
                    let checkpoint = Self::persist_and(out, signed);
                    out.push(Output::Broadcast(Message::Checkpoint(checkpoint.clone())));
                    self.record_checkpoint(checkpoint, out);
                }
                Err(_) => self.reject("safety-refused"),
            }
        }
    }

    fn on_payload(&mut self, seq: SeqNum, payload: Vec<u8>, out: &mut Vec<Output>) {
        if payload.len() > self.config.payload_bytes_max {
            self.reject("oversized-payload");
            return;
        }
        let wanted: Vec<(Digest, Digest)> = self
            .fetches_sent
            .range((seq, Digest::default())..)
            .take_while(|((s, _), _)| *s == seq)
            .map(|((_, d), parent)| (*d, *parent))
            .collect();
        if wanted.is_empty() {
            self.reject("unrequested-payload");
            return;
        }
        // Each request knows the parent its payload must extend.
        let found = wanted.iter().find(|(digest, parent)| {
            self.check.check(seq, *parent, &payload).as_ref() == Ok(digest)
        });
        match found {
            Some(&(digest, parent)) => {
                self.fetches_sent.remove(&(seq, digest));
                self.payloads.insert((seq, digest), payload.clone());
                self.checked_parent.insert((seq, digest), parent);
                if self
                    .reissued
                    .get(&seq)
                    .is_some_and(|p| p.body.digest == digest && p.body.parent == parent)
                    && self.status == Status::Normal
                    && let Some(pre_prepare) = self.reissued.remove(&seq)
                {
                    self.install_pre_prepare(pre_prepare, payload, out);
                }
                self.try_deliver(out);
                self.retry_new_view(out);
            }
            None => self.reject("invalid-payload"),
        }
    }

    // ----- checkpoints (PBFT 4.3) -----

    fn on_checkpoint(&mut self, checkpoint: Signed<Checkpoint>, out: &mut Vec<Output>) {
        let c = checkpoint.body;
        if c.seq <= self.stable.seq
            || !c
                .seq
                .0
                .is_multiple_of(self.config.checkpoint_interval.max(1))
        {
            self.reject("stale-checkpoint");
            return;
        }
        if self
            .checkpoints
            .get(&checkpoint.signer)
            .is_some_and(|m| m.contains_key(&c.seq))
        {
            return;
        }
        if checkpoint.verify(&self.config.validators).is_err() {
            self.reject("bad-signature");
            return;
        }
        self.record_checkpoint(checkpoint, out);
    }

    fn record_checkpoint(&mut self, checkpoint: Signed<Checkpoint>, out: &mut Vec<Output>) {
        let c = checkpoint.body;
        let mine = self.checkpoints.entry(checkpoint.signer).or_default();
        mine.insert(c.seq, checkpoint);
        while mine.len() > CHECKPOINTS_PER_REPLICA {
            mine.pop_first();
        }
        let matching: Vec<Signed<Checkpoint>> = self
            .checkpoints
            .values()
            .filter_map(|m| m.get(&c.seq))
            .filter(|s| s.body.digest == c.digest)
            .take(self.config.validators.quorum())
            .cloned()
            .collect();
        // f+1 matching checkpoints above what we delivered prove an honest replica
        // got there: fetch the certified payloads (each carries its own proof).
        if matching.len() >= self.config.validators.weak_quorum()
            && c.seq > self.last_delivered
            && c.seq > self.state_transfer_to
        {
            self.state_transfer_to = c.seq;
            out.push(Output::StateTransfer {
                from: self.last_delivered.next(),
                to: c.seq,
            });
        }
        if matching.len() >= self.config.validators.quorum() {
            self.make_stable(
                CheckpointProof {
                    seq: c.seq,
                    digest: c.digest,
                    checkpoints: matching,
                },
                out,
            );
        }
    }

    /// Moves the low watermark to a proven stable checkpoint and drops the log below.
    fn make_stable(&mut self, proof: CheckpointProof, out: &mut Vec<Output>) {
        if proof.seq <= self.stable.seq {
            return;
        }
        let seq = proof.seq;
        if let Some(mine) = self.delivered.get(&seq) {
            // 2f+1 replicas vouch for another history than ours: more than f are
            // faulty, or we are. Refuse to build on it.
            assert_eq!(
                *mine, proof.digest,
                "stable checkpoint at {seq} disagrees with what this replica delivered"
            );
        }
        self.stable = proof.clone();
        self.slots.retain(|s, _| *s > seq);
        self.waiting.retain(|s, _| *s > seq);
        self.reissued.retain(|s, _| *s > seq);
        self.payloads.retain(|(s, _), _| *s > seq);
        self.checked_parent.retain(|(s, _), _| *s > seq);
        self.certified.retain(|s, _| *s > seq);
        self.fetches_sent.retain(|(s, _), _| *s > seq);
        self.delivered.retain(|s, _| *s >= seq);
        self.delivered_certs.retain(|s, _| *s > seq);
        self.prune_catch_up(seq);
        for m in self.checkpoints.values_mut() {
            m.retain(|s, _| *s > seq);
        }
        // The host stores the proof first: a restart must never find a record
        // collected past the stable checkpoint it remembers.
        out.push(Output::CheckpointStable(proof));
        if let Some(record) = self.safety.collect_garbage(seq) {
            out.push(Output::Persist(record));
        }
        if self.last_delivered < seq && self.state_transfer_to < seq {
            self.state_transfer_to = seq;
            out.push(Output::StateTransfer {
                from: self.last_delivered.next(),
                to: seq,
            });
        }
        if self.next_proposal <= seq {
            self.next_proposal = seq.next();
        }
        if self.last_delivered <= seq {
            self.settled(seq, out);
        }
        self.want_proposal(out);
        self.replay_ahead(out);
    }

    // ----- state transfer -----

    fn on_certified_payload(
        &mut self,
        payload: Vec<u8>,
        certificate: CommitCertificate,
        out: &mut Vec<Output>,
    ) {
        if certificate.seq != self.last_delivered.next() {
            self.reject("state-transfer-out-of-order");
            return;
        }
        if self.deliver_certified(payload, certificate, out) {
            self.try_deliver(out);
        }
    }

    /// Drops catch-up candidates at or below `seq`.
    fn prune_catch_up(&mut self, seq: SeqNum) {
        let keep = self.catch_up.split_off(&(seq.next(), ReplicaId(0)));
        for ((_, from), (payload, _)) in std::mem::replace(&mut self.catch_up, keep) {
            if let Some(bytes) = self.catch_up_bytes.get_mut(&from) {
                *bytes -= payload.len();
                if *bytes == 0 {
                    self.catch_up_bytes.remove(&from);
                }
            }
        }
    }

    /// Each sender's share of the catch-up budget (at least one largest payload).
    fn catch_up_bytes_per_sender(&self) -> usize {
        (self.config.future_bytes_max / self.config.validators.len())
            .max(self.config.payload_bytes_max)
    }

    /// A certified payload from a peer ahead of us: kept (one per sender and
    /// sequence number, within the window and a byte budget) until it is next in
    /// line, then checked and delivered.
    fn on_catch_up(
        &mut self,
        from: ReplicaId,
        payload: Vec<u8>,
        certificate: CommitCertificate,
        out: &mut Vec<Output>,
    ) {
        let seq = certificate.seq;
        if seq <= self.last_delivered
            || seq.0 > self.last_delivered.0 + self.config.window
            || payload.len() > self.config.payload_bytes_max
        {
            self.reject("unneeded-catch-up");
            return;
        }
        if self.catch_up.contains_key(&(seq, from)) {
            return;
        }
        // The very next height is checked at once below and never kept, so it
        // needs no budget; later ones wait within the sender's own share.
        let used = self.catch_up_bytes.get(&from).copied().unwrap_or(0);
        if seq != self.last_delivered.next()
            && used + payload.len() > self.catch_up_bytes_per_sender()
        {
            self.reject("catch-up-budget-full");
            return;
        }
        if certificate.verify(&self.config.validators).is_err() {
            self.reject("bad-certificate");
            return;
        }
        *self.catch_up_bytes.entry(from).or_default() += payload.len();
        self.catch_up.insert((seq, from), (payload, certificate));
        self.try_deliver(out);
    }

    /// Checks a certificate and its payload against the chain, then delivers it.
    fn deliver_certified(
        &mut self,
        payload: Vec<u8>,
        certificate: CommitCertificate,
        out: &mut Vec<Output>,
    ) -> bool {
        let seq = certificate.seq;
        if certificate.verify(&self.config.validators).is_err() {
            self.reject("bad-certificate");
            return false;
        }
        let parent = self.last_delivered_digest;
        match self.check.check(seq, parent, &payload) {
            Ok(d) if d == certificate.digest => {}
            _ => {
                self.reject("invalid-payload");
                return false;
            }
        }
        if seq == self.stable.seq && certificate.digest != self.stable.digest {
            self.reject("state-transfer-mismatch");
            return false;
        }
        self.certified.remove(&seq);
        self.deliver(seq, payload, certificate, out);
        true
    }

    // ----- view changes (PBFT 4.4) -----

    fn timeout_ticks(&self) -> u64 {
        let shift = self.consecutive_view_changes.min(16);
        self.config
            .view_change_timeout_ticks
            .saturating_mul(1 << shift)
            .min(self.config.view_change_timeout_max_ticks)
    }

    /// The progress timer runs while there is work the current view should finish:
    /// client requests waiting, or accepted pre-prepares not yet delivered.
    fn arm_progress_timer(&mut self, out: &mut Vec<Output>) {
        if self.status != Status::Normal {
            return;
        }
        let outstanding = self
            .slots
            .iter()
            .any(|(s, slot)| *s > self.last_delivered && slot.pre_prepare.is_some());
        let want = self.pending_work || outstanding || self.last_delivered < self.state_transfer_to;
        let timer = Timer::Progress { view: self.view };
        match (want, self.progress_timer) {
            (true, Some(v)) if v == self.view => {}
            (true, _) => {
                self.progress_timer = Some(self.view);
                out.push(Output::SetTimer {
                    timer,
                    after_ticks: self.timeout_ticks(),
                });
            }
            (false, Some(_)) => {
                self.progress_timer = None;
                out.push(Output::CancelTimer(timer));
            }
            (false, None) => {}
        }
    }

    fn on_timeout(&mut self, timer: Timer, out: &mut Vec<Output>) {
        match timer {
            Timer::Progress { view } => {
                if view != self.view
                    || self.status != Status::Normal
                    || self.progress_timer != Some(view)
                {
                    return;
                }
                self.progress_timer = None;
                if self.last_delivered < self.state_transfer_to {
                    // We are the ones behind: ask again rather than blame the primary.
                    out.push(Output::StateTransfer {
                        from: self.last_delivered.next(),
                        to: self.state_transfer_to,
                    });
                    self.arm_progress_timer(out);
                    return;
                }
                self.start_view_change(self.view.next(), out);
            }
            Timer::Retransmit { view } => {
                if self.status != Status::ViewChanging(view) {
                    return;
                }
                if let Some(vc) = self
                    .view_changes
                    .get(&self.config.id)
                    .filter(|v| v.body.new_view == view)
                {
                    out.push(Output::Broadcast(Message::ViewChange(vc.clone())));
                }
                if self.last_delivered < self.state_transfer_to {
                    out.push(Output::StateTransfer {
                        from: self.last_delivered.next(),
                        to: self.state_transfer_to,
                    });
                }
                // Payload requests may have been lost: ask again.
                self.fetches_sent.clear();
                self.retry_new_view(out);
                out.push(Output::SetTimer {
                    timer: Timer::Retransmit { view },
                    after_ticks: self.config.view_change_timeout_ticks,
                });
            }
            Timer::ViewChange { view } => {
                if self.status == Status::ViewChanging(view) && self.view_change_timer == Some(view)
                {
                    self.view_change_timer = None;
                    self.start_view_change(view.next(), out);
                }
            }
            Timer::HelpPeriod => {
                self.help.clear();
                self.ask_again(out);
                out.push(Output::SetTimer {
                    timer: Timer::HelpPeriod,
                    after_ticks: self.config.view_change_timeout_ticks,
                });
            }
        }
    }

    /// Asks again, once per help period, for each payload still missing in the
    /// normal case (a re-issued PRE-PREPARE's, a certified height's): the first
    /// request was broadcast, but its answers may have been lost with a dead link
    /// or refused over a peer's help budget, and nothing else would ask again
    /// in this view. Each retry goes to one other replica, the next in turn, so a
    /// holder that is silent or lies is passed over and a retry costs one
    /// payload, not n. While changing views the retransmission timer asks again.
    fn ask_again(&mut self, out: &mut Vec<Output>) {
        let fetches = &self.fetches_sent;
        self.fetch_retries
            .retain(|key, _| fetches.contains_key(key));
        if self.status != Status::Normal {
            return;
        }
        let others: Vec<ReplicaId> = self
            .config
            .validators
            .ids()
            .filter(|id| *id != self.config.id)
            .collect();
        if others.is_empty() {
            return;
        }
        for &(seq, digest) in self.fetches_sent.keys() {
            let tried = self.fetch_retries.entry((seq, digest)).or_default();
            let turn = (seq.0 as usize).wrapping_add(*tried as usize) % others.len();
            *tried = tried.saturating_add(1);
            out.push(Output::Send {
                to: others[turn],
                message: Message::FetchPayload { seq, digest },
            });
        }
    }

    fn on_reconnected(&mut self, peer: ReplicaId, out: &mut Vec<Output>) {
        let Status::ViewChanging(t) = self.status else {
            return;
        };
        if peer == self.config.id || self.config.validators.key(peer).is_none() {
            return;
        }
        if let Some(vc) = self
            .view_changes
            .get(&self.config.id)
            .filter(|v| v.body.new_view == t)
        {
            out.push(Output::Send {
                to: peer,
                message: Message::ViewChange(vc.clone()),
            });
        }
    }

    fn start_view_change(&mut self, new_view: View, out: &mut Vec<Output>) {
        if let Status::ViewChanging(t) = self.status {
            if new_view <= t {
                return;
            }
        } else if new_view <= self.view {
            return;
        }
        if let Some(v) = self.progress_timer.take() {
            out.push(Output::CancelTimer(Timer::Progress { view: v }));
        }
        if let Some(t) = self.view_change_timer.take() {
            out.push(Output::CancelTimer(Timer::ViewChange { view: t }));
        }
        self.status = Status::ViewChanging(new_view);
        self.proposal_wanted = None;
        self.own_refreshed = None;
        let body = self.own_view_change(new_view);
        match self.safety.sign_view_change(&self.config.validators, body) {
            Ok(signed) => {
                let vc = Self::persist_and(out, signed);
                out.push(Output::Broadcast(Message::ViewChange(vc.clone())));
                self.view_changes.insert(self.config.id, vc);
            }
            Err(_) => self.reject("safety-refused"),
        }
        self.consecutive_view_changes = self.consecutive_view_changes.saturating_add(1);
        out.push(Output::SetTimer {
            timer: Timer::Retransmit { view: new_view },
            after_ticks: self.config.view_change_timeout_ticks,
        });
        self.arm_view_change_timer(out);
        self.retry_new_view(out);
    }

    /// This replica's VIEW-CHANGE for `new_view`: its stable checkpoint and the
    /// certificates it prepared above it.
    fn own_view_change(&self, new_view: View) -> ViewChange {
        ViewChange {
            new_view,
            stable: self.stable.clone(),
            prepared: self
                .safety
                .record()
                .prepared_certs
                .range(self.stable.seq.next()..)
                .map(|(_, c)| c.clone())
                .collect(),
            last_delivered: self.last_delivered,
        }
    }

    /// As the new primary of `view`: when its stable checkpoint moved after it sent
    /// its VIEW-CHANGE (CHECKPOINTs arrived while it waited), it signs its
    /// VIEW-CHANGE again at the current checkpoint. The NEW-VIEW's chain then
    /// starts at or above its low watermark: built from the first, it would reach
    /// below it, ask for payloads it dropped and refuse to sign the re-issued
    /// PRE-PREPAREs (`BelowWatermark`) until the view-change timer moved everyone
    /// on. Both VIEW-CHANGEs are true statements; receivers check each in a
    /// NEW-VIEW on its own.
    fn refresh_own_view_change(&mut self, view: View, out: &mut Vec<Output>) {
        let Some(own) = self
            .own_refreshed
            .as_ref()
            .or_else(|| self.view_changes.get(&self.config.id))
            .filter(|v| v.body.new_view == view)
        else {
            return;
        };
        if own.body.stable.seq >= self.stable.seq {
            return;
        }
        let body = self.own_view_change(view);
        match self.safety.sign_view_change(&self.config.validators, body) {
            Ok(signed) => self.own_refreshed = Some(Self::persist_and(out, signed)),
            Err(_) => self.reject("safety-refused"),
        }
    }

    /// PBFT 4.5.2: the timer for view t starts only once 2f+1 replicas asked for t,
    /// so a lone replica that fell behind does not race ahead through views alone
    /// (it waits at t until the others time out and join it).
    fn arm_view_change_timer(&mut self, out: &mut Vec<Output>) {
        let Status::ViewChanging(t) = self.status else {
            return;
        };
        // Replicas asking for t or a later view have all left the old view.
        let leaving = self
            .view_changes
            .values()
            .filter(|v| v.body.new_view >= t)
            .count();
        if self.view_change_timer == Some(t) || leaving < self.config.validators.quorum() {
            return;
        }
        self.view_change_timer = Some(t);
        out.push(Output::SetTimer {
            timer: Timer::ViewChange { view: t },
            after_ticks: self.timeout_ticks(),
        });
    }

    /// The view this replica is in, or moving to while it changes views.
    pub fn target_view(&self) -> View {
        match self.status {
            Status::Normal => self.view,
            Status::ViewChanging(t) => t,
        }
    }

    /// A VIEW-CHANGE as it arrives: its summary (signature, checkpoint proof,
    /// claims) and the certificate behind every claim.
    fn verify_view_change(&self, vc: &Signed<ViewChange>) -> Result<(), &'static str> {
        if vc.body.prepared.len() as u64 > self.config.window {
            return Err("view-change-too-large");
        }
        self.verify_summary(&vc.summarized())?;
        for cert in &vc.body.prepared {
            cert.verify(&self.config.validators)
                .map_err(|_| "bad-prepared-certificate")?;
        }
        Ok(())
    }

    /// A VIEW-CHANGE's summary: signed by its sender, its checkpoint proven, at
    /// most a window of claims at distinct heights above the checkpoint, each of
    /// a view before the one asked for.
    fn verify_summary(&self, vc: &Signed<ViewChangeSummary>) -> Result<(), &'static str> {
        let body = &vc.body;
        if body.prepared.len() as u64 > self.config.window {
            return Err("view-change-too-large");
        }
        vc.verify(&self.config.validators)
            .map_err(|_| "bad-signature")?;
        body.stable
            .verify(&self.config.validators, self.config.genesis)
            .map_err(|_| "bad-checkpoint-proof")?;
        let mut seqs = BTreeSet::new();
        for pp in &body.prepared {
            if pp.view >= body.new_view
                || pp.seq <= body.stable.seq
                || pp.seq.0 > body.stable.seq.0 + self.config.window
                || !seqs.insert(pp.seq)
            {
                return Err("bad-prepared-certificate");
            }
        }
        Ok(())
    }

    fn on_view_change(&mut self, from: ReplicaId, vc: Signed<ViewChange>, out: &mut Vec<Output>) {
        // Help (which can be large) goes only to a replica asking for itself, so a
        // replayed view change cannot turn a small message into a flood.
        let asks_for_itself = from == vc.signer;
        let t = vc.body.new_view;
        if t <= self.view {
            // The sender is asking for a view we already passed: it missed the
            // NEW-VIEW (re-send it if we lead this view) and maybe deliveries.
            if asks_for_itself && vc.verify(&self.config.validators).is_ok() {
                let given = self.help.entry(vc.signer).or_default();
                if let Some(new_view) = &self.last_new_view
                    && given.new_view != Some(self.view)
                {
                    given.new_view = Some(self.view);
                    out.push(Output::Send {
                        to: vc.signer,
                        message: new_view.clone(),
                    });
                }
                self.help_behind(&vc, out);
            } else {
                self.reject("old-view");
            }
            return;
        }
        let previous = self.view_changes.get(&vc.signer);
        let previous_view = previous.map(|old| old.body.new_view);
        // The signature covers the summary, not the certificates' own votes: a
        // copy with other (valid or not) PREPAREs behind the same claims is the
        // same VIEW-CHANGE, never a conflict to charge its signer for.
        let repeated = previous.is_some_and(|old| {
            old == &vc || (old.signature == vc.signature && old.body.summary() == vc.body.summary())
        });
        if previous_view.is_some_and(|old| old > t) {
            return;
        }
        if repeated {
            // A retransmission: already verified; the sender may still need help.
            if asks_for_itself {
                self.help_behind(&vc, out);
            }
            return;
        }
        if previous_view == Some(t) {
            // A second, different view change for the same view (a restarted replica
            // re-signs with what it still knows). Keep the first for NEW-VIEW; still
            // help the sender catch up.
            self.reject("conflicting-view-change");
            if asks_for_itself && vc.verify(&self.config.validators).is_ok() {
                self.help_behind(&vc, out);
            }
            return;
        }
        if let Err(reason) = self.verify_view_change(&vc) {
            self.reject(reason);
            return;
        }
        if asks_for_itself {
            self.help_behind(&vc, out);
        }
        self.view_changes.insert(vc.signer, vc);
        // PBFT 4.5.2: f+1 replicas ahead of us prove at least one honest one timed
        // out; join the smallest of their views.
        let target = self.target_view();
        let ahead: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(r, v)| **r != self.config.id && v.body.new_view > target)
            .map(|(_, v)| v.body.new_view)
            .collect();
        if ahead.len() >= self.config.validators.weak_quorum()
            && let Some(&smallest) = ahead.iter().min()
        {
            self.start_view_change(smallest, out);
        }
        self.arm_view_change_timer(out);
        self.retry_new_view(out);
    }

    /// Sends a view-changing replica what it lacks to catch up: the signed
    /// checkpoints of our stable checkpoint if it is below it, and the certified
    /// payloads we delivered above what it delivered.
    /// What was sent in this help period is not sent again.
    fn help_behind(&mut self, vc: &Signed<ViewChange>, out: &mut Vec<Output>) {
        let given = self.help.entry(vc.signer).or_default();
        // Help a replica that fell behind inside the window: it may be changing views
        // only because it missed what everyone else delivered.
        if vc.body.last_delivered < self.stable.seq && given.checkpoint != Some(self.stable.seq) {
            given.checkpoint = Some(self.stable.seq);
            // It is behind our stable checkpoint: the signed checkpoints prove it and
            // make it fetch the rest by state transfer.
            for checkpoint in &self.stable.checkpoints {
                out.push(Output::Send {
                    to: vc.signer,
                    message: Message::Checkpoint(checkpoint.clone()),
                });
            }
        }
        let behind = vc
            .body
            .last_delivered
            .max(self.stable.seq)
            .max(given.certified_to);
        if behind < self.last_delivered {
            given.certified_to = self.last_delivered;
            for (_, certificate) in self.delivered_certs.range(behind.next()..) {
                if let Some(payload) = self.payloads.get(&(certificate.seq, certificate.digest)) {
                    out.push(Output::Send {
                        to: vc.signer,
                        message: Message::Certified {
                            payload: payload.clone(),
                            certificate: certificate.clone(),
                        },
                    });
                }
            }
        }
    }

    /// Whether a NEW-VIEW chain re-issues another digest at a sequence number this
    /// replica delivered: then a later view committed there and the NEW-VIEW is
    /// stale (built from view changes that predate it); it must not be entered.
    fn contradicts_delivered(&self, chain: &[Chosen]) -> bool {
        chain.iter().any(|e| {
            e.seq > self.stable.seq && self.delivered.get(&e.seq).is_some_and(|d| *d != e.digest)
        })
    }

    /// 2f+1 view changes for `view`, deterministically chosen (lowest replica ids).
    fn view_change_quorum(&self, view: View) -> Option<Vec<Signed<ViewChange>>> {
        // Our own view change first, then the highest stable checkpoints: the chain
        // then starts as high as possible, never below what we garbage-collected.
        let refreshed = self
            .own_refreshed
            .as_ref()
            .filter(|v| v.body.new_view == view);
        let mut vcs: Vec<&Signed<ViewChange>> = self
            .view_changes
            .values()
            .filter(|v| v.body.new_view == view)
            .map(|v| match refreshed {
                Some(own) if v.signer == self.config.id => own,
                _ => v,
            })
            .collect();
        vcs.sort_by_key(|v| {
            (
                v.signer != self.config.id,
                std::cmp::Reverse(v.body.stable.seq),
                v.signer,
            )
        });
        let quorum = self.new_view_quorum();
        let vcs: Vec<Signed<ViewChange>> = vcs.into_iter().take(quorum).cloned().collect();
        (vcs.len() >= quorum).then_some(vcs)
    }

    /// VIEW-CHANGEs a NEW-VIEW is built from: 2f+1.
    fn new_view_quorum(&self) -> usize {
        #[cfg(test)]
        if crate::types::injected(crate::types::canary::Bug::WeakNewViewQuorum) {
            return self.config.validators.weak_quorum();
        }
        self.config.validators.quorum()
    }

    /// As the new primary: when 2f+1 view changes and every needed payload are in
    /// hand, send NEW-VIEW.
    fn retry_new_view(&mut self, out: &mut Vec<Output>) {
        let Status::ViewChanging(t) = self.status else {
            return;
        };
        if self.config.validators.primary(t) != self.config.id {
            return;
        }
        if self
            .view_changes
            .get(&self.config.id)
            .map(|v| v.body.new_view)
            != Some(t)
        {
            return;
        }
        self.refresh_own_view_change(t, out);
        let Some(vcs) = self.view_change_quorum(t) else {
            return;
        };
        let summaries: Vec<Signed<ViewChangeSummary>> =
            vcs.iter().map(Signed::summarized).collect();
        let (stable, chain, stop) = select(&summaries, self.config.window);
        // The certificate of each claim to prove, from the VIEW-CHANGE that made
        // it (each was verified when it arrived).
        let Some(certificates) = proven_claims(&chain, stop)
            .iter()
            .map(|claim| certificate_for(&vcs, claim))
            .collect::<Option<Vec<PreparedCertificate>>>()
        else {
            self.reject("new-view-certificate-missing");
            return;
        };
        if self.contradicts_delivered(&chain) {
            self.reject("new-view-contradicts-delivered");
            return;
        }
        let mut missing = false;
        for entry in &chain {
            if !self.payloads.contains_key(&(entry.seq, entry.digest)) {
                missing = true;
                if self
                    .fetches_sent
                    .insert((entry.seq, entry.digest), entry.parent)
                    .is_none()
                {
                    // Every replica that prepared it holds it, not only those in
                    // the quorum of view changes.
                    out.push(Output::Broadcast(Message::FetchPayload {
                        seq: entry.seq,
                        digest: entry.digest,
                    }));
                }
            }
        }
        if missing {
            return;
        }
        let mut pre_prepares = Vec::with_capacity(chain.len());
        let mut payloads = Vec::with_capacity(chain.len());
        for entry in &chain {
            let body = PrePrepare {
                view: t,
                seq: entry.seq,
                digest: entry.digest,
                parent: entry.parent,
            };
            let payload = self
                .payloads
                .get(&(entry.seq, entry.digest))
                .cloned()
                .unwrap_or_default();
            out.push(Output::PersistPayload {
                seq: entry.seq,
                digest: entry.digest,
                payload,
            });
            match self.safety.sign_pre_prepare(&self.config.validators, body) {
                Ok(signed) => pre_prepares.push(Self::persist_and(out, signed)),
                Err(_) => {
                    self.reject("safety-refused");
                    return;
                }
            }
            payloads.push(
                self.payloads
                    .get(&(entry.seq, entry.digest))
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        let body = NewView {
            view: t,
            view_changes: summaries,
            certificates,
            pre_prepares,
        };
        let Ok(signed) = self.safety.sign_new_view(&self.config.validators, body) else {
            self.reject("safety-refused");
            return;
        };
        let new_view = Self::persist_and(out, signed);
        let message = Message::NewView {
            new_view: new_view.clone(),
            payloads: self.carried_payloads(&new_view, &payloads),
        };
        out.push(Output::Broadcast(message.clone()));
        self.enter_view(
            new_view.body,
            stable,
            payloads.into_iter().map(Some).collect(),
            out,
        );
        self.last_new_view = Some(message);
    }

    /// The re-issued payloads a NEW-VIEW carries: in sequence order, as many as fit
    /// in [`Config::message_bytes_max`] beside the signed NEW-VIEW itself, so the
    /// message never outgrows the host's frame however large the blocks are.
    fn carried_payloads(
        &self,
        new_view: &Signed<NewView>,
        payloads: &[Vec<u8>],
    ) -> Vec<Option<Vec<u8>>> {
        // Framing of the message and of each payload: enum tag, vector lengths, option tags.
        const OVERHEAD: usize = 16;
        let signed = mosaic_crypto::codec::encode(new_view).map_or(usize::MAX, |b| b.len());
        let mut room = self
            .config
            .message_bytes_max
            .saturating_sub(signed.saturating_add(OVERHEAD));
        let mut full = false;
        payloads
            .iter()
            .map(|payload| {
                let cost = payload.len() + OVERHEAD;
                if full || cost > room {
                    full = true;
                    return None;
                }
                room -= cost;
                Some(payload.clone())
            })
            .collect()
    }

    fn on_new_view(
        &mut self,
        new_view: Signed<NewView>,
        payloads: Vec<Option<Vec<u8>>>,
        out: &mut Vec<Output>,
    ) {
        let t = new_view.body.view;
        if t < self.target_view() || (t == self.view && self.status == Status::Normal) {
            self.reject("old-view");
            return;
        }
        if new_view.signer != self.config.validators.primary(t) {
            self.reject("new-view-not-from-primary");
            return;
        }
        if new_view.verify(&self.config.validators).is_err() {
            self.reject("bad-signature");
            return;
        }
        let nv = &new_view.body;
        let signers: BTreeSet<ReplicaId> = nv.view_changes.iter().map(|v| v.signer).collect();
        if nv.view_changes.len() != self.new_view_quorum()
            || signers.len() != nv.view_changes.len()
            || nv.view_changes.iter().any(|v| v.body.new_view != t)
        {
            self.reject("bad-new-view");
            return;
        }
        for vc in &nv.view_changes {
            if let Err(reason) = self.verify_summary(vc) {
                self.reject(reason);
                return;
            }
        }
        #[allow(unused_mut)]
        let (stable, mut chain, stop) = select(&nv.view_changes, self.config.window);
        #[allow(unused_mut)]
        let mut recomputed = true;
        #[cfg(test)]
        if crate::types::injected(crate::types::canary::Bug::NoChainRecompute) {
            // The injected bug trusts the primary's chain: it checks the
            // certificates carried, not that they back the chain.
            recomputed = false;
            chain = nv
                .pre_prepares
                .iter()
                .map(|p| Chosen {
                    view: p.body.view,
                    seq: p.body.seq,
                    digest: p.body.digest,
                    parent: p.body.parent,
                })
                .collect();
        }
        // The claims that decide the chain are proven: one certificate for each
        // chosen height and for the claim it stopped at, of exactly that claim,
        // and nothing more.
        let proven = proven_claims(&chain, stop);
        if recomputed
            && (nv.certificates.len() != proven.len()
                || proven
                    .iter()
                    .zip(&nv.certificates)
                    .any(|(claim, c)| c.pre_prepare.body != *claim))
        {
            self.reject("bad-new-view");
            return;
        }
        for certificate in &nv.certificates {
            if certificate.verify(&self.config.validators).is_err() {
                self.reject("bad-prepared-certificate");
                return;
            }
        }
        let matches = chain.len() == nv.pre_prepares.len()
            && payloads.len() == chain.len()
            && chain.iter().zip(&nv.pre_prepares).all(|(e, p)| {
                p.signer == new_view.signer
                    && p.body
                        == PrePrepare {
                            view: t,
                            seq: e.seq,
                            digest: e.digest,
                            parent: e.parent,
                        }
            });
        if !matches {
            self.reject("bad-new-view");
            return;
        }
        if crate::messages::verify_all(&self.config.validators, &nv.pre_prepares).is_err() {
            self.reject("bad-signature");
            return;
        }
        for (entry, payload) in chain.iter().zip(&payloads) {
            // A payload left out is fetched and checked before this replica votes.
            let Some(payload) = payload else { continue };
            if payload.len() > self.config.payload_bytes_max
                || self.check.check(entry.seq, entry.parent, payload) != Ok(entry.digest)
            {
                self.reject("invalid-payload");
                return;
            }
        }
        if self.contradicts_delivered(&chain) {
            self.reject("new-view-contradicts-delivered");
            return;
        }
        let message = Message::NewView {
            new_view: new_view.clone(),
            payloads: payloads.clone(),
        };
        self.enter_view(new_view.body, stable, payloads, out);
        self.last_new_view = Some(message);
    }

    /// Enters view `nv.view` with its re-issued pre-prepares (verified by the caller).
    fn enter_view(
        &mut self,
        nv: NewView,
        stable: CheckpointProof,
        carried: Vec<Option<Vec<u8>>>,
        out: &mut Vec<Output>,
    ) {
        let t = nv.view;
        if let Some(old) = self.view_change_timer.take() {
            out.push(Output::CancelTimer(Timer::ViewChange { view: old }));
        }
        if let Status::ViewChanging(old) = self.status {
            out.push(Output::CancelTimer(Timer::Retransmit { view: old }));
        }
        self.last_new_view = None;
        if let Some(v) = self.progress_timer.take() {
            out.push(Output::CancelTimer(Timer::Progress { view: v }));
        }
        // The NEW-VIEW's stable checkpoint is stored before the record that says
        // "entered": a restart must not come back in the new view below it.
        if stable.seq > self.stable.seq {
            self.make_stable(stable, out);
        }
        // A payload the NEW-VIEW left out may be one this replica already holds,
        // checked against the same parent.
        let payloads: Vec<Option<Vec<u8>>> = nv
            .pre_prepares
            .iter()
            .zip(carried)
            .map(|(p, carried)| {
                let key = (p.body.seq, p.body.digest);
                carried.or_else(|| {
                    let held = self.payloads.get(&key)?;
                    let checked = self.checked_parent.get(&key) == Some(&p.body.parent)
                        || self.check.check(p.body.seq, p.body.parent, held) == Ok(p.body.digest);
                    checked.then(|| held.clone())
                })
            })
            .collect();
        // The re-issued pre-prepares are voted in the same record that says
        // "entered", so a restart cannot forget them (see ADR 003).
        let floor = self.stable.seq;
        let chain: Vec<(SeqNum, Digest)> = nv
            .pre_prepares
            .iter()
            .map(|p| (p.body.seq, p.body.digest))
            .filter(|(s, _)| *s > floor)
            .collect();
        for ((seq, digest), payload) in nv
            .pre_prepares
            .iter()
            .map(|p| (p.body.seq, p.body.digest))
            .zip(&payloads)
        {
            let Some(payload) = payload else { continue };
            if seq > floor {
                out.push(Output::PersistPayload {
                    seq,
                    digest,
                    payload: payload.clone(),
                });
            }
        }
        if let Some(record) = self.safety.enter_view(t, &chain) {
            out.push(Output::Persist(record));
        }
        self.view = t;
        self.status = Status::Normal;
        self.own_refreshed = None;
        self.slots.clear();
        self.waiting.clear();
        self.reissued.clear();
        self.proposal_wanted = None;
        self.view_changes.retain(|_, v| v.body.new_view > t);
        out.push(Output::EnteredView {
            view: t,
            primary: self.primary(),
        });
        let end = nv
            .pre_prepares
            .last()
            .map_or(self.stable.seq, |p| p.body.seq);
        self.next_proposal = end.max(self.last_delivered).max(self.stable.seq).next();
        for (pre_prepare, payload) in nv.pre_prepares.into_iter().zip(payloads) {
            if pre_prepare.body.seq <= self.stable.seq {
                continue;
            }
            // Stale NEW-VIEWs are refused before entering (contradicts_delivered);
            // should one slip through, its entry is simply not built on.
            if self
                .delivered
                .get(&pre_prepare.body.seq)
                .is_some_and(|d| *d != pre_prepare.body.digest)
            {
                self.reject("conflicts-with-delivered");
                continue;
            }
            match payload {
                Some(payload) => self.install_pre_prepare(pre_prepare, payload, out),
                None => {
                    let key = (pre_prepare.body.seq, pre_prepare.body.digest);
                    if self
                        .fetches_sent
                        .insert(key, pre_prepare.body.parent)
                        .is_none()
                    {
                        out.push(Output::Broadcast(Message::FetchPayload {
                            seq: key.0,
                            digest: key.1,
                        }));
                    }
                    self.reissued.insert(key.0, pre_prepare);
                }
            }
        }
        self.ahead.clear();
        let buffered: Vec<(ReplicaId, Message)> = self.future.drain(..).collect();
        self.future_bytes = 0;
        for (from, message) in buffered {
            self.on_message(from, message, out);
        }
        self.arm_progress_timer(out);
        self.want_proposal(out);
    }

    /// Checks internal invariants; tests and the simulator call it after every step.
    pub fn check_invariants(&self) {
        assert!(
            self.refused.is_empty(),
            "every refusal is handed over with its step"
        );
        assert!(
            self.view <= self.safety.record().view,
            "view ahead of the safety record"
        );
        if let Status::ViewChanging(t) = self.status {
            assert!(t > self.view, "changing to a view that is not ahead");
        }
        for seq in self.slots.keys() {
            assert!(self.in_window(*seq), "slot {seq} outside the window");
        }
        for seq in self.certified.keys() {
            assert!(
                *seq > self.last_delivered,
                "certified {seq} already delivered"
            );
        }
        let mut by_sender: BTreeMap<ReplicaId, usize> = BTreeMap::new();
        for ((_, from), (payload, _)) in &self.catch_up {
            *by_sender.entry(*from).or_default() += payload.len();
        }
        by_sender.retain(|_, b| *b > 0);
        let mut recorded = self.catch_up_bytes.clone();
        recorded.retain(|_, b| *b > 0);
        assert_eq!(recorded, by_sender, "catch-up bytes per sender");
        assert!(
            self.catch_up_bytes
                .values()
                .all(|b| *b <= self.catch_up_bytes_per_sender() + self.config.payload_bytes_max),
            "a sender over its catch-up share"
        );
        assert!(self.help.len() <= self.config.validators.len());
        assert!(
            self.help
                .values()
                .all(|h| h.payload_bytes <= self.config.future_bytes_max)
        );
        assert!(self.delivered_certs.len() as u64 <= self.config.window + 1);
        assert!(self.delivered.len() as u64 <= self.config.window + 2);
        assert!(self.future.len() <= self.config.future_messages_max);
        let n = self.config.validators.len();
        for id in self.config.validators.ids() {
            assert!(self.ahead.count(id) <= (3 * self.config.window as usize).max(1));
            if id != self.primary() {
                assert_eq!(self.ahead.bytes(id), 0, "only the primary's PRE-PREPAREs");
            }
        }
        assert!(self.ahead.bytes(self.primary()) <= self.config.future_bytes_max);
        assert!(
            self.waiting.values().map(|(_, p)| p.len()).sum::<usize>()
                <= self.config.future_bytes_max
        );
        assert!(self.ahead.senders() <= n);
        assert!(self.future_bytes <= self.config.future_bytes_max);
        assert!(self.waiting.len() <= self.config.window as usize);
        assert!(self.reissued.keys().all(|s| self.in_window(*s)));
        assert!(self.reissued.values().all(|p| p.body.view == self.view));
        assert!(
            self.checkpoints
                .values()
                .all(|m| m.len() <= CHECKPOINTS_PER_REPLICA)
        );
        assert!(self.view_changes.len() <= self.config.validators.len());
        assert!(
            self.safety.record().prepared_certs.len() as u64 <= self.config.window + 1,
            "prepared certificates outgrew the window"
        );
    }
}
