//! PBFT (Castro & Liskov, OSDI '99) for Mosaic, with ed25519 signatures instead of
//! MACs, as a pure state machine: no sockets, no clock, no tokio, no randomness.
//! The node feeds [`Input`]s to [`Replica::handle`] and carries out the returned
//! [`Output`]s; the [`sim`] module (tests) drives many replicas deterministically.
//!
//! # Protocol rules
//! - n = 3f+1 replicas; the primary of view v is v mod n; quorum 2f+1.
//! - Normal case (PBFT 4.2): the primary sends PRE-PREPARE(v, s, d, parent) with the
//!   payload; a backup accepts it if it is in view v, s is inside the watermarks
//!   (stable checkpoint h < s <= h + L), no other digest is accepted at (v, s), the
//!   caller's [`PayloadCheck`] accepts the payload with digest d, and `parent` is the
//!   digest it accepted at s - 1 (chaining, below); it broadcasts PREPARE(v, s, d,
//!   parent), signing the chain link too. With the
//!   pre-prepare and 2f matching prepares it is *prepared* and broadcasts COMMIT;
//!   2f+1 matching commits form a [`CommitCertificate`] and the payload is delivered
//!   strictly in sequence order. Several sequence numbers are in flight at once.
//! - Chaining: payloads form a hash chain (each names its parent), so a view change
//!   must never pair a payload with a different parent. Two rules guarantee it: a
//!   pre-prepare is accepted only if its parent is the digest accepted at s - 1 in
//!   the same view (or delivered), and a replica becomes prepared at s only once it
//!   is prepared at s - 1 (or delivered it). NEW-VIEW then re-issues the longest
//!   consistent chain of prepared certificates above the stable checkpoint (see
//!   `select`); no null requests are needed and heights stay contiguous.
//! - Checkpoints (4.3): every K sequence numbers each replica signs
//!   CHECKPOINT(s, digest at s); 2f+1 matching make it stable, move the low watermark
//!   and drop the log below it. A replica that sees a stable checkpoint above what it
//!   delivered asks the host for a [`Output::StateTransfer`].
//! - View change (4.4): a backup with work outstanding (client requests or accepted
//!   pre-prepares) that sees no delivery before its timer fires sends
//!   VIEW-CHANGE(v+1, stable checkpoint proof, prepared certificates); the new
//!   primary gathers 2f+1, fetches any payload it lacks, and sends NEW-VIEW with the
//!   view changes and its re-issued pre-prepares; every replica recomputes the choice
//!   and rejects a NEW-VIEW that differs. Timeouts double on consecutive view changes.
//!   f+1 view changes for higher views make a replica join the smallest of them.
//!   A NEW-VIEW carries the re-issued payloads that fit in
//!   [`Config::message_bytes_max`]; a replica that lacks one of the others fetches it
//!   (FETCH-PAYLOAD) and checks it before it votes.
//! - Progress never waits on the path a parent took: a pre-prepare parked for its
//!   parent, and a slot blocked by the chaining rule, are re-examined whenever the
//!   parent is delivered (own slot, commits, catch-up) or becomes the stable
//!   checkpoint.
//! - A current-view message for a height just above the window (one window ahead
//!   at most) is kept, within its sender's share, and fed again when the stable
//!   checkpoint moves: a backup whose CHECKPOINTs lag its commits still votes for
//!   the primary's next height instead of leaving it a vote short.
//! - Budgets are per peer: certified payloads kept for catch-up are bounded per
//!   sender; help to a lagging replica (certified payloads, checkpoint proofs, the
//!   NEW-VIEW) and answers to FETCH-PAYLOAD are given once per peer per help period
//!   ([`Timer::HelpPeriod`]), so a repeated small message never becomes a flood.
//! - Certificates are canonical: exactly the quorum of signatures, signers strictly
//!   ascending, so one set of votes has one encoding.
//! - Crash safety: [`SafetyRules`] hold the key; every new vote is preceded by an
//!   [`Output::Persist`] of the record, so a restarted replica never signs two
//!   digests for one (view, seq) or votes in a view it left.
//! - Every message is checked (sender, signature, view, window, size, certificate
//!   shapes); refusals are counted by reason ([`Replica::rejections`]), never panics.
//!
//! ```
//! use mosaic_consensus::{Config, Digest, Input, Output, PayloadCheck, Replica, ReplicaId, SeqNum, ValidatorSet};
//! use mosaic_crypto::{ChainId, Hash, Keypair};
//!
//! struct AnyPayload;
//! impl PayloadCheck for AnyPayload {
//!     fn check(&self, _seq: SeqNum, _parent: Digest, payload: &[u8]) -> Result<Digest, String> {
//!         Ok(Digest(Hash::of(payload)))
//!     }
//! }
//!
//! let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
//! let validators = ValidatorSet::new(ChainId::new("doc")?, keys.iter().map(|k| k.public()).collect())?;
//! let config = Config::new(ReplicaId(0), validators, Digest(Hash::ZERO));
//! let mut primary = Replica::new(config, Keypair::from_seed_for_tests(0), Box::new(AnyPayload), None);
//! let outputs = primary.start();
//! assert!(outputs.iter().any(|o| matches!(o, Output::ProposalWanted { .. })));
//! let out = primary.handle(Input::Propose { seq: SeqNum(1), parent: Digest(Hash::ZERO), payload: b"batch".to_vec() });
//! assert!(matches!(out[0], Output::PersistPayload { .. }), "the payload is persisted first");
//! assert!(matches!(out[1], Output::Persist(_)), "then the vote, before it is sent");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ahead;
mod choice;
pub mod messages;
pub mod replica;
pub mod safety;
#[cfg(test)]
pub mod sim;
pub mod types;

pub use messages::{
    Checkpoint, CheckpointProof, Commit, CommitCertificate, Message, NewView, PrePrepare, Prepare,
    PreparedCertificate, Signed, VerifyError, ViewChange, ViewChangeSummary,
};
pub use replica::{Config, Input, Output, PayloadCheck, Replica, Restored, Status, Timer};
pub use safety::{SafetyError, SafetyRecord, SafetyRules};
pub use types::{Digest, ReplicaId, SeqNum, ValidatorSet, ValidatorSetError, View};
