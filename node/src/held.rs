//! PRE-PREPAREs that arrived before their parent is executed here.
//!
//! A PRE-PREPARE's block header names the state after `seq - 1`, so the replica can
//! check it only once that block is executed; until then the event loop holds it
//! here and [`Held::release_through`] hands it back once the parent is in.
//!
//! Everything held was signed by the primary of its view (the event loop verifies
//! before it holds), but a Byzantine validator leads every n-th view and can sign as
//! many future PRE-PREPAREs as it likes. So what one sender can hold is bounded by
//! its own count and byte budget, a replacement on the same `(seq, sender)` gives
//! back the bytes of the message it replaces, and a payload over consensus' limit is
//! refused before it is held: one sender can fill only its own share, never the
//! room an honest primary needs.

use std::collections::BTreeMap;

use mosaic_consensus::{Message, ReplicaId, SeqNum, View};

/// What one sender may hold, and the largest payload consensus accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLimits {
    /// PRE-PREPAREs held per sender.
    pub per_sender_max: usize,
    /// Payload bytes held per sender.
    pub sender_bytes_max: usize,
    /// A payload larger than this is refused by consensus, so it is never held.
    pub payload_bytes_max: usize,
}

impl HeldLimits {
    /// Limits that share `total_bytes_max` among `validators` senders, each allowed
    /// at least one payload of the largest size.
    pub fn shared(
        total_bytes_max: usize,
        validators: usize,
        per_sender_max: usize,
        payload_bytes_max: usize,
    ) -> Self {
        HeldLimits {
            per_sender_max,
            sender_bytes_max: (total_bytes_max / validators.max(1)).max(payload_bytes_max),
            payload_bytes_max,
        }
    }
}

/// Why a PRE-PREPARE was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// The message is not a PRE-PREPARE.
    #[error("not a pre-prepare")]
    NotPrePrepare,
    /// Its payload is larger than consensus accepts (no honest primary sends it).
    #[error("payload of {len} bytes exceeds consensus' limit of {max}")]
    PayloadTooLarge {
        /// Payload bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The sender's count or byte budget is spent.
    #[error("sender {sender} holds {held} pre-prepares of {bytes} bytes: its budget is spent")]
    SenderFull {
        /// The sender.
        sender: u32,
        /// Pre-prepares it holds.
        held: usize,
        /// Their payload bytes.
        bytes: usize,
    },
    /// The sender already signed a PRE-PREPARE for this (view, seq) with another
    /// digest: proof of equivocation, which no honest primary produces.
    #[error("sender {sender} signed two pre-prepares for view {view}, seq {seq}")]
    Equivocation {
        /// The sender.
        sender: u32,
        /// The view.
        view: u64,
        /// The seq.
        seq: u64,
    },
    /// Exactly this PRE-PREPARE is held already (a link's rewrite after a failed
    /// write, or a replay).
    #[error("this pre-prepare is held already")]
    Duplicate,
    /// A PRE-PREPARE of a later view is held for the same `(seq, sender)`.
    #[error("a pre-prepare of view {held} is held for this seq; view {got} is older")]
    Stale {
        /// The view held.
        held: u64,
        /// The view offered.
        got: u64,
    },
}

#[derive(Debug)]
struct Entry {
    view: View,
    payload_bytes: usize,
    message: Message,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    count: usize,
    bytes: usize,
}

/// Held PRE-PREPAREs by `(seq, sender)`, with each sender's count and bytes.
#[derive(Debug)]
pub struct Held {
    limits: HeldLimits,
    entries: BTreeMap<(SeqNum, ReplicaId), Entry>,
    /// Count and payload bytes per sender; no entry for a sender holding nothing.
    usage: BTreeMap<ReplicaId, Usage>,
    bytes: usize,
}

impl Held {
    /// An empty room.
    pub fn new(limits: HeldLimits) -> Self {
        Held {
            limits,
            entries: BTreeMap::new(),
            usage: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// Holds `message` (a verified PRE-PREPARE from `from`) until its parent is
    /// executed. A PRE-PREPARE of a later view from the same sender for the same seq
    /// replaces the earlier one; one of the same view is a duplicate or, with another
    /// digest, an equivocation, and is refused.
    pub fn hold(&mut self, from: ReplicaId, message: Message) -> Result<(), HoldError> {
        let Message::PrePrepare {
            pre_prepare,
            payload,
        } = &message
        else {
            return Err(HoldError::NotPrePrepare);
        };
        let key = (pre_prepare.body.seq, from);
        let view = pre_prepare.body.view;
        let payload_bytes = payload.len();
        if payload_bytes > self.limits.payload_bytes_max {
            return Err(HoldError::PayloadTooLarge {
                len: payload_bytes,
                max: self.limits.payload_bytes_max,
            });
        }
        let replaced = match self.entries.get(&key) {
            Some(entry) if entry.view > view => {
                return Err(HoldError::Stale {
                    held: entry.view.0,
                    got: view.0,
                });
            }
            Some(entry) if entry.view == view => {
                let same = matches!(&entry.message, Message::PrePrepare { pre_prepare: held, .. }
                    if held.body == pre_prepare.body);
                return Err(if same {
                    HoldError::Duplicate
                } else {
                    HoldError::Equivocation {
                        sender: from.0,
                        view: view.0,
                        seq: pre_prepare.body.seq.0,
                    }
                });
            }
            Some(entry) => Some(entry.payload_bytes),
            None => None,
        };
        let usage = self.usage.get(&from).copied().unwrap_or_default();
        let count_after = usage.count + usize::from(replaced.is_none());
        let bytes_after = usage.bytes - replaced.unwrap_or(0) + payload_bytes;
        if count_after > self.limits.per_sender_max || bytes_after > self.limits.sender_bytes_max {
            return Err(HoldError::SenderFull {
                sender: from.0,
                held: usage.count,
                bytes: usage.bytes,
            });
        }
        self.usage.insert(
            from,
            Usage {
                count: count_after,
                bytes: bytes_after,
            },
        );
        self.bytes = self.bytes - replaced.unwrap_or(0) + payload_bytes;
        self.entries.insert(
            key,
            Entry {
                view,
                payload_bytes,
                message,
            },
        );
        Ok(())
    }

    /// Takes out every PRE-PREPARE for a seq up to and including `seq`, in seq order.
    pub fn release_through(&mut self, seq: SeqNum) -> Vec<(ReplicaId, Message)> {
        let later = match seq.0.checked_add(1) {
            Some(next) => self.entries.split_off(&(SeqNum(next), ReplicaId(0))),
            None => BTreeMap::new(),
        };
        let ready = std::mem::replace(&mut self.entries, later);
        ready
            .into_iter()
            .map(|((_, from), entry)| {
                self.forget(from, entry.payload_bytes);
                (from, entry.message)
            })
            .collect()
    }

    fn forget(&mut self, from: ReplicaId, payload_bytes: usize) {
        self.bytes -= payload_bytes;
        if let Some(usage) = self.usage.get_mut(&from) {
            usage.count -= 1;
            usage.bytes -= payload_bytes;
            if usage.count == 0 {
                self.usage.remove(&from);
            }
        }
    }

    /// Payload bytes held for `from`.
    pub fn bytes_of(&self, from: ReplicaId) -> usize {
        self.usage.get(&from).map_or(0, |u| u.bytes)
    }

    /// Asserts that the counts and byte sums agree with the entries.
    pub fn check_invariants(&self) {
        let mut usage: BTreeMap<ReplicaId, Usage> = BTreeMap::new();
        for ((_, from), entry) in &self.entries {
            let u = usage.entry(*from).or_default();
            u.count += 1;
            u.bytes += entry.payload_bytes;
            assert!(entry.payload_bytes <= self.limits.payload_bytes_max);
        }
        assert_eq!(usage, self.usage, "per-sender usage out of step");
        for u in usage.values() {
            assert!(u.count <= self.limits.per_sender_max);
            assert!(u.bytes <= self.limits.sender_bytes_max);
        }
        assert_eq!(
            self.bytes,
            usage.values().map(|u| u.bytes).sum::<usize>(),
            "total bytes out of step"
        );
    }

    /// Payload bytes held in all.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// PRE-PREPAREs held in all.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosaic_consensus::{Digest, PrePrepare, Signed};
    use mosaic_crypto::{Hash, Signature};

    const LIMITS: HeldLimits = HeldLimits {
        per_sender_max: 4,
        sender_bytes_max: 1_000,
        payload_bytes_max: 400,
    };

    fn pre_prepare(view: u64, seq: u64, from: u32, payload_bytes: usize) -> Message {
        Message::PrePrepare {
            pre_prepare: Signed {
                body: PrePrepare {
                    view: View(view),
                    seq: SeqNum(seq),
                    digest: Digest(Hash::from_bytes([seq as u8; 32])),
                    parent: Digest(Hash::from_bytes([0; 32])),
                },
                signer: ReplicaId(from),
                signature: Signature::from_bytes([0; 64]),
            },
            payload: vec![0; payload_bytes],
        }
    }

    #[test]
    fn replacing_on_one_key_gives_back_the_replaced_bytes() -> Result<(), HoldError> {
        // A Byzantine primary of views 1, 5, 9, ... re-signs seq 10 with large
        // payloads again and again: it must not use up anyone else's room.
        let mut held = Held::new(LIMITS);
        for round in 0..32 {
            held.hold(ReplicaId(1), pre_prepare(1 + 4 * round, 10, 1, 400))?;
        }
        assert_eq!(held.bytes(), 400);
        assert_eq!(held.len(), 1);
        held.hold(ReplicaId(0), pre_prepare(4, 10, 0, 400))?;
        held.hold(ReplicaId(0), pre_prepare(4, 11, 0, 400))?;
        assert_eq!(held.bytes(), 1_200);
        let released = held.release_through(SeqNum(11));
        assert_eq!(released.len(), 3);
        assert_eq!(held.bytes(), 0);
        assert!(held.is_empty());
        held.check_invariants();
        Ok(())
    }

    #[test]
    fn a_full_sender_leaves_the_others_their_room() -> Result<(), HoldError> {
        let mut held = Held::new(LIMITS);
        // Sender 1 fills its byte budget with new keys, then its count.
        held.hold(ReplicaId(1), pre_prepare(1, 10, 1, 400))?;
        held.hold(ReplicaId(1), pre_prepare(1, 11, 1, 400))?;
        assert!(matches!(
            held.hold(ReplicaId(1), pre_prepare(1, 12, 1, 400)),
            Err(HoldError::SenderFull { sender: 1, .. })
        ));
        held.hold(ReplicaId(1), pre_prepare(1, 12, 1, 100))?;
        held.hold(ReplicaId(1), pre_prepare(1, 13, 1, 0))?;
        assert!(matches!(
            held.hold(ReplicaId(1), pre_prepare(1, 14, 1, 0)),
            Err(HoldError::SenderFull { sender: 1, .. })
        ));
        // A replacement that would pass the budget is refused, and changes nothing.
        assert!(matches!(
            held.hold(ReplicaId(1), pre_prepare(5, 13, 1, 200)),
            Err(HoldError::SenderFull { .. })
        ));
        assert_eq!(held.bytes_of(ReplicaId(1)), 900);
        // Sender 0 still has all of its own.
        held.hold(ReplicaId(0), pre_prepare(4, 10, 0, 400))?;
        held.hold(ReplicaId(0), pre_prepare(4, 11, 0, 400))?;
        assert_eq!(held.bytes_of(ReplicaId(0)), 800);
        held.check_invariants();
        // Releasing through seq 11 frees both senders' early entries.
        assert_eq!(held.release_through(SeqNum(11)).len(), 4);
        assert_eq!(held.bytes_of(ReplicaId(1)), 100);
        assert_eq!(held.bytes_of(ReplicaId(0)), 0);
        held.check_invariants();
        Ok(())
    }

    #[test]
    fn an_oversized_or_stale_pre_prepare_is_not_held() -> Result<(), HoldError> {
        let mut held = Held::new(LIMITS);
        assert_eq!(
            held.hold(ReplicaId(1), pre_prepare(1, 10, 1, 401)),
            Err(HoldError::PayloadTooLarge { len: 401, max: 400 })
        );
        held.hold(ReplicaId(1), pre_prepare(5, 10, 1, 10))?;
        assert_eq!(
            held.hold(ReplicaId(1), pre_prepare(1, 10, 1, 10)),
            Err(HoldError::Stale { held: 5, got: 1 })
        );
        assert_eq!(
            held.hold(ReplicaId(1), Message::Prepare(signed_prepare())),
            Err(HoldError::NotPrePrepare)
        );
        assert_eq!(held.len(), 1);
        held.check_invariants();
        Ok(())
    }

    #[test]
    fn a_second_pre_prepare_for_one_view_and_seq_is_a_duplicate_or_an_equivocation()
    -> Result<(), HoldError> {
        let mut held = Held::new(LIMITS);
        held.hold(ReplicaId(1), pre_prepare(1, 10, 1, 100))?;
        assert_eq!(
            held.hold(ReplicaId(1), pre_prepare(1, 10, 1, 100)),
            Err(HoldError::Duplicate)
        );
        let mut other = pre_prepare(1, 10, 1, 300);
        if let Message::PrePrepare { pre_prepare, .. } = &mut other {
            pre_prepare.body.digest = Digest(Hash::from_bytes([0xEE; 32]));
        }
        assert_eq!(
            held.hold(ReplicaId(1), other),
            Err(HoldError::Equivocation {
                sender: 1,
                view: 1,
                seq: 10
            })
        );
        // Neither changed what is held.
        assert_eq!(held.bytes_of(ReplicaId(1)), 100);
        assert_eq!(held.len(), 1);
        held.check_invariants();
        Ok(())
    }

    fn signed_prepare() -> Signed<mosaic_consensus::Prepare> {
        Signed {
            body: mosaic_consensus::Prepare {
                view: View(1),
                seq: SeqNum(1),
                digest: Digest(Hash::from_bytes([1; 32])),
                parent: Digest(Hash::from_bytes([0; 32])),
            },
            signer: ReplicaId(1),
            signature: Signature::from_bytes([0; 64]),
        }
    }

    #[test]
    fn release_through_the_last_seq_takes_everything() -> Result<(), HoldError> {
        let mut held = Held::new(LIMITS);
        held.hold(ReplicaId(2), pre_prepare(2, u64::MAX, 2, 5))?;
        held.hold(ReplicaId(2), pre_prepare(2, 3, 2, 5))?;
        assert_eq!(held.release_through(SeqNum(2)).len(), 0);
        assert_eq!(held.release_through(SeqNum(u64::MAX)).len(), 2);
        assert!(held.is_empty());
        held.check_invariants();
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn budgets_hold_under_any_sequence(
            ops in proptest::collection::vec((0u32..3, 0u64..6, 0u64..8, 0usize..500, proptest::bool::ANY), 0..200)
        ) {
            let mut held = Held::new(LIMITS);
            for (from, view, seq, bytes, release) in ops {
                if release {
                    held.release_through(SeqNum(seq));
                } else {
                    let _ = held.hold(ReplicaId(from), pre_prepare(view, seq, from, bytes));
                }
                held.check_invariants();
            }
        }
    }
}
