//! The one place that holds the consensus signing key and the record of what it
//! signed (as aptos's safety rules). It refuses to sign anything that conflicts with
//! the record, and every signature that changes the record comes with the record to
//! persist: the host MUST make that record durable before sending the message, so a
//! replica restarted from its persisted record never signs two digests for one
//! (view, seq), and never votes in a view it has left.

use std::collections::BTreeMap;

use mosaic_crypto::Keypair;
use serde::{Deserialize, Serialize};

use crate::messages::{
    Body, Checkpoint, Commit, NewView, PrePrepare, Prepare, PreparedCertificate, Signed, ViewChange,
};
use crate::types::{Digest, ReplicaId, SeqNum, ValidatorSet, View};

/// What this replica has signed, as far as safety needs to remember.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyRecord {
    /// The highest view this replica has entered or asked to change to; it never
    /// signs PRE-PREPARE, PREPARE or COMMIT for a lower view again.
    pub view: View,
    /// Per sequence number: the latest (view, digest) it pre-prepared or prepared.
    pub prepared: BTreeMap<SeqNum, (View, Digest)>,
    /// Per sequence number: the latest (view, digest) it committed.
    pub committed: BTreeMap<SeqNum, (View, Digest)>,
    /// Checkpoints signed above the stable one.
    pub checkpoints: BTreeMap<SeqNum, Digest>,
    /// Sequence numbers at or below this are garbage-collected.
    pub low_watermark: SeqNum,
    /// The view the replica is in (entered by NEW-VIEW, or 0); below or equal to
    /// `view`. A restarted replica with `view > entered` resumes its view change.
    pub entered: View,
    /// The replica's prepared certificates above the low watermark. They must
    /// survive a crash: the view-change argument counts on every honest replica that
    /// prepared a payload to report it.
    pub prepared_certs: BTreeMap<SeqNum, PreparedCertificate>,
}

/// Why the safety rules refused to sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetyError {
    /// The view is below one this replica has already moved past.
    #[error("refusing to sign for {got}: already at {current}")]
    OldView {
        /// Record's view.
        current: View,
        /// View asked.
        got: View,
    },
    /// A different digest was already signed at this (view, seq).
    #[error("refusing to sign {digest} at ({view}, {seq}): {signed} already signed")]
    Conflict {
        /// View.
        view: View,
        /// Sequence number.
        seq: SeqNum,
        /// Digest asked.
        digest: Digest,
        /// Digest signed before.
        signed: Digest,
    },
    /// At or below the garbage-collected watermark.
    #[error("refusing to sign at {seq}: at or below the stable checkpoint {low}")]
    BelowWatermark {
        /// Sequence number asked.
        seq: SeqNum,
        /// Watermark.
        low: SeqNum,
    },
}

/// Which per-sequence-number vote record a signature belongs to.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// PRE-PREPARE and PREPARE.
    Prepare,
    /// COMMIT.
    Commit,
}

/// The signing key and its record.
#[derive(Debug)]
pub struct SafetyRules {
    key: Keypair,
    id: ReplicaId,
    record: SafetyRecord,
}

/// A signature together with the record the host must persist before sending it
/// (`None` when the record did not change).
#[derive(Debug)]
pub struct SignedWithRecord<T> {
    /// The signed message.
    pub signed: Signed<T>,
    /// The record to persist first, if it changed.
    pub persist: Option<SafetyRecord>,
}

impl SafetyRules {
    /// Rules for replica `id`, restored from `record` (default for a new replica).
    pub fn new(key: Keypair, id: ReplicaId, record: SafetyRecord) -> Self {
        SafetyRules { key, id, record }
    }

    /// The record.
    pub fn record(&self) -> &SafetyRecord {
        &self.record
    }

    fn sign<T: Body>(&self, validators: &ValidatorSet, body: T) -> Signed<T> {
        let bytes = Signed::signing_bytes(&body).unwrap_or_default();
        let signature = self.key.sign(T::DOMAIN, validators.chain(), &bytes);
        Signed {
            body,
            signer: self.id,
            signature,
        }
    }

    fn check_vote(
        &self,
        map: &BTreeMap<SeqNum, (View, Digest)>,
        view: View,
        seq: SeqNum,
        digest: Digest,
    ) -> Result<bool, SafetyError> {
        if view < self.record.view {
            return Err(SafetyError::OldView {
                current: self.record.view,
                got: view,
            });
        }
        if seq <= self.record.low_watermark {
            return Err(SafetyError::BelowWatermark {
                seq,
                low: self.record.low_watermark,
            });
        }
        match map.get(&seq) {
            Some(&(v, d)) if v == view && d != digest => Err(SafetyError::Conflict {
                view,
                seq,
                digest,
                signed: d,
            }),
            Some(&(v, _)) if v > view => Err(SafetyError::OldView {
                current: v,
                got: view,
            }),
            Some(&(v, d)) if v == view && d == digest => Ok(false),
            _ => Ok(true),
        }
    }

    /// Checks a vote against the record of its phase, records it, and signs it. The
    /// one path by which PRE-PREPARE, PREPARE and COMMIT get signed.
    fn sign_vote<T: Body>(
        &mut self,
        validators: &ValidatorSet,
        body: T,
        phase: Phase,
        (view, seq, digest): (View, SeqNum, Digest),
    ) -> Result<SignedWithRecord<T>, SafetyError> {
        let votes = match phase {
            Phase::Prepare => &self.record.prepared,
            Phase::Commit => &self.record.committed,
        };
        let changed = self.check_vote(votes, view, seq, digest)?;
        if changed {
            let votes = match phase {
                Phase::Prepare => &mut self.record.prepared,
                Phase::Commit => &mut self.record.committed,
            };
            votes.insert(seq, (view, digest));
        }
        Ok(self.with_record(validators, body, changed))
    }

    /// Signs a PRE-PREPARE (as primary); it counts as the primary's prepare vote.
    pub fn sign_pre_prepare(
        &mut self,
        validators: &ValidatorSet,
        body: PrePrepare,
    ) -> Result<SignedWithRecord<PrePrepare>, SafetyError> {
        let vote = (body.view, body.seq, body.digest);
        self.sign_vote(validators, body, Phase::Prepare, vote)
    }

    /// Signs a PREPARE.
    pub fn sign_prepare(
        &mut self,
        validators: &ValidatorSet,
        body: Prepare,
    ) -> Result<SignedWithRecord<Prepare>, SafetyError> {
        let vote = (body.view, body.seq, body.digest);
        self.sign_vote(validators, body, Phase::Prepare, vote)
    }

    /// Signs a COMMIT.
    pub fn sign_commit(
        &mut self,
        validators: &ValidatorSet,
        body: Commit,
    ) -> Result<SignedWithRecord<Commit>, SafetyError> {
        let vote = (body.view, body.seq, body.digest);
        self.sign_vote(validators, body, Phase::Commit, vote)
    }

    /// Signs a CHECKPOINT; refuses a second digest for one sequence number.
    pub fn sign_checkpoint(
        &mut self,
        validators: &ValidatorSet,
        body: Checkpoint,
    ) -> Result<SignedWithRecord<Checkpoint>, SafetyError> {
        match self.record.checkpoints.get(&body.seq) {
            Some(&d) if d != body.digest => {
                return Err(SafetyError::Conflict {
                    view: self.record.view,
                    seq: body.seq,
                    digest: body.digest,
                    signed: d,
                });
            }
            Some(_) => return Ok(self.with_record(validators, body, false)),
            None => {}
        }
        self.record.checkpoints.insert(body.seq, body.digest);
        Ok(self.with_record(validators, body, true))
    }

    /// Signs a VIEW-CHANGE; from then on nothing is signed for lower views.
    pub fn sign_view_change(
        &mut self,
        validators: &ValidatorSet,
        body: ViewChange,
    ) -> Result<SignedWithRecord<ViewChange>, SafetyError> {
        if body.new_view < self.record.view {
            return Err(SafetyError::OldView {
                current: self.record.view,
                got: body.new_view,
            });
        }
        let changed = body.new_view > self.record.view;
        self.record.view = body.new_view;
        Ok(self.with_record(validators, body, changed))
    }

    /// Signs a NEW-VIEW (as the new primary).
    pub fn sign_new_view(
        &mut self,
        validators: &ValidatorSet,
        body: NewView,
    ) -> Result<SignedWithRecord<NewView>, SafetyError> {
        if body.view < self.record.view {
            return Err(SafetyError::OldView {
                current: self.record.view,
                got: body.view,
            });
        }
        let changed = body.view > self.record.view;
        self.record.view = body.view;
        Ok(self.with_record(validators, body, changed))
    }

    /// Records entering `view` (after a valid NEW-VIEW).
    pub fn enter_view(&mut self, view: View, chain: &[(SeqNum, Digest)]) -> Option<SafetyRecord> {
        if view <= self.record.entered {
            return None;
        }
        self.record.view = self.record.view.max(view);
        self.record.entered = view;
        for &(seq, digest) in chain {
            if seq > self.record.low_watermark
                && self
                    .record
                    .prepared
                    .get(&seq)
                    .is_none_or(|(v, _)| *v < view)
            {
                self.record.prepared.insert(seq, (view, digest));
            }
        }
        Some(self.record.clone())
    }

    /// Remembers a prepared certificate; it is persisted with the COMMIT vote that
    /// follows it.
    pub fn remember_prepared(&mut self, certificate: PreparedCertificate) {
        let seq = certificate.pre_prepare.body.seq;
        if seq > self.record.low_watermark {
            self.record.prepared_certs.insert(seq, certificate);
        }
    }

    /// Drops what is at or below a stable checkpoint (the record stays bounded).
    pub fn collect_garbage(&mut self, stable: SeqNum) -> Option<SafetyRecord> {
        if stable <= self.record.low_watermark {
            return None;
        }
        self.record.low_watermark = stable;
        self.record.prepared.retain(|s, _| *s > stable);
        self.record.committed.retain(|s, _| *s > stable);
        self.record.checkpoints.retain(|s, _| *s >= stable);
        self.record.prepared_certs.retain(|s, _| *s > stable);
        Some(self.record.clone())
    }

    fn with_record<T: Body>(
        &self,
        validators: &ValidatorSet,
        body: T,
        changed: bool,
    ) -> SignedWithRecord<T> {
        SignedWithRecord {
            signed: self.sign(validators, body),
            persist: changed.then(|| self.record.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_crypto::{ChainId, Hash};

    fn setup() -> (ValidatorSet, SafetyRules) {
        let keys = (0..4)
            .map(|i| Keypair::from_seed_for_tests(i).public())
            .collect();
        let vs = ValidatorSet::new(ChainId::new("t").unwrap(), keys).unwrap();
        let rules = SafetyRules::new(
            Keypair::from_seed_for_tests(1),
            ReplicaId(1),
            SafetyRecord::default(),
        );
        (vs, rules)
    }

    fn d(x: u8) -> Digest {
        Digest(Hash::of(&[x]))
    }

    #[test]
    fn never_two_digests_for_one_view_and_seq_even_after_restart() {
        let (vs, mut rules) = setup();
        let p = |digest| Prepare {
            view: View(2),
            seq: SeqNum(5),
            digest,
            parent: d(0),
        };
        let first = rules.sign_prepare(&vs, p(d(1))).unwrap();
        assert!(
            first.persist.is_some(),
            "a new vote must be persisted before it is sent"
        );
        assert!(first.signed.verify(&vs).is_ok());
        // The same vote again is fine and needs no new persist.
        assert!(rules.sign_prepare(&vs, p(d(1))).unwrap().persist.is_none());
        assert!(matches!(
            rules.sign_prepare(&vs, p(d(2))),
            Err(SafetyError::Conflict { .. })
        ));

        // Restarted from the persisted record: still refuses.
        let record = first.persist.unwrap();
        let mut restarted = SafetyRules::new(Keypair::from_seed_for_tests(1), ReplicaId(1), record);
        assert!(matches!(
            restarted.sign_prepare(&vs, p(d(2))),
            Err(SafetyError::Conflict { .. })
        ));
        // A later view may carry another digest (PBFT re-proposals).
        assert!(
            restarted
                .sign_prepare(
                    &vs,
                    Prepare {
                        view: View(3),
                        seq: SeqNum(5),
                        digest: d(2),
                        parent: d(0),
                    }
                )
                .is_ok()
        );
        // ... and the old view is closed after that.
        assert!(restarted.sign_prepare(&vs, p(d(1))).is_err());
    }

    #[test]
    fn no_votes_in_a_view_left_behind() {
        let (vs, mut rules) = setup();
        let vc = ViewChange {
            new_view: View(4),
            stable: crate::messages::CheckpointProof::genesis(d(0)),
            prepared: vec![],
            last_delivered: SeqNum(0),
        };
        assert!(rules.sign_view_change(&vs, vc).unwrap().persist.is_some());
        let c = Commit {
            view: View(3),
            seq: SeqNum(1),
            digest: d(1),
        };
        assert!(matches!(
            rules.sign_commit(&vs, c),
            Err(SafetyError::OldView { .. })
        ));
    }

    #[test]
    fn garbage_collection_bounds_the_record() {
        let (vs, mut rules) = setup();
        for s in 1..=100 {
            rules
                .sign_commit(
                    &vs,
                    Commit {
                        view: View(0),
                        seq: SeqNum(s),
                        digest: d(s as u8),
                    },
                )
                .unwrap();
        }
        rules.collect_garbage(SeqNum(90));
        assert_eq!(rules.record().committed.len(), 10);
        assert!(matches!(
            rules.sign_commit(
                &vs,
                Commit {
                    view: View(0),
                    seq: SeqNum(90),
                    digest: d(0)
                }
            ),
            Err(SafetyError::BelowWatermark { .. })
        ));
    }
}
