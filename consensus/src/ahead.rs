//! Messages of the current view for sequence numbers just above the window.
//!
//! A backup's window moves when 2f+1 CHECKPOINTs arrive, which can be after the
//! commits that let the primary (whose own window already moved) propose the next
//! height. Dropping those PRE-PREPAREs, PREPAREs and COMMITs would leave the height
//! short of a quorum until its view times out. They are kept here, per sender and
//! within each sender's share, and fed again when the stable checkpoint advances.
//! The cheap checks (a duplicate, the sender's share) come before the signature
//! check, so a replayed or share-exceeding copy costs no verification; every kept
//! message goes through the full checks again when it is fed again. Only the
//! view's primary sends PRE-PREPAREs (the caller refuses relayed ones), so its
//! share of bytes is all of them: one maximal PRE-PREPARE always fits.

use std::collections::BTreeMap;

use crate::messages::Message;
use crate::types::ReplicaId;

/// Why a message was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The same message from the same sender is kept already.
    Duplicate,
    /// The sender's share of messages or bytes is used up.
    Full,
}

impl Refused {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refused::Duplicate => "ahead-duplicate",
            Refused::Full => "ahead-buffer-full",
        }
    }
}

/// The per-sender buffer.
#[derive(Debug, Default)]
pub(crate) struct Ahead {
    kept: BTreeMap<ReplicaId, Vec<Message>>,
    bytes: BTreeMap<ReplicaId, usize>,
}

impl Ahead {
    /// Whether `message` from `from` (with `bytes` payload bytes) is new and fits
    /// the sender's share of `messages_max` messages and `bytes_max` bytes.
    pub(crate) fn room(
        &self,
        from: ReplicaId,
        message: &Message,
        bytes: usize,
        messages_max: usize,
        bytes_max: usize,
    ) -> Result<(), Refused> {
        let kept = self.kept.get(&from).map_or(&[][..], Vec::as_slice);
        if kept.contains(message) {
            return Err(Refused::Duplicate);
        }
        let used = self.bytes(from);
        if kept.len() >= messages_max || used.saturating_add(bytes) > bytes_max {
            return Err(Refused::Full);
        }
        Ok(())
    }

    /// Keeps `message` from `from` (with `bytes` payload bytes) after [`Self::room`]
    /// admitted it.
    pub(crate) fn keep(&mut self, from: ReplicaId, message: Message, bytes: usize) {
        self.kept.entry(from).or_default().push(message);
        *self.bytes.entry(from).or_default() += bytes;
    }

    /// Keeps `message` if [`Self::room`] admits it.
    #[cfg(test)]
    pub(crate) fn admit(
        &mut self,
        from: ReplicaId,
        message: Message,
        bytes: usize,
        messages_max: usize,
        bytes_max: usize,
    ) -> Result<(), Refused> {
        self.room(from, &message, bytes, messages_max, bytes_max)?;
        self.keep(from, message, bytes);
        Ok(())
    }

    /// Takes everything kept, in arrival order per sender.
    pub(crate) fn take(&mut self) -> Vec<(ReplicaId, Message)> {
        self.bytes.clear();
        std::mem::take(&mut self.kept)
            .into_iter()
            .flat_map(|(from, messages)| messages.into_iter().map(move |m| (from, m)))
            .collect()
    }

    /// Drops everything (the view changed: what is kept belongs to the old one).
    pub(crate) fn clear(&mut self) {
        self.kept.clear();
        self.bytes.clear();
    }

    /// Messages kept from `from`.
    pub(crate) fn count(&self, from: ReplicaId) -> usize {
        self.kept.get(&from).map_or(0, Vec::len)
    }

    /// Payload bytes kept from `from`.
    pub(crate) fn bytes(&self, from: ReplicaId) -> usize {
        self.bytes.get(&from).copied().unwrap_or(0)
    }

    /// Senders with something kept.
    pub(crate) fn senders(&self) -> usize {
        self.kept.values().filter(|m| !m.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Digest, SeqNum};
    use mosaic_crypto::Hash;

    fn fetch(seq: u64) -> Message {
        Message::FetchPayload {
            seq: SeqNum(seq),
            digest: Digest(Hash::ZERO),
        }
    }

    #[test]
    fn one_sender_cannot_take_another_senders_share() {
        let mut a = Ahead::default();
        for s in 0..3 {
            assert_eq!(a.admit(ReplicaId(1), fetch(s), 10, 3, 100), Ok(()));
        }
        assert_eq!(
            a.admit(ReplicaId(1), fetch(9), 10, 3, 100),
            Err(Refused::Full)
        );
        assert_eq!(a.admit(ReplicaId(2), fetch(9), 10, 3, 100), Ok(()));
        assert_eq!(
            a.admit(ReplicaId(2), fetch(9), 10, 3, 100),
            Err(Refused::Duplicate)
        );
        assert_eq!(
            a.admit(ReplicaId(2), fetch(8), 95, 3, 100),
            Err(Refused::Full)
        );
        assert_eq!(a.count(ReplicaId(1)), 3);
        assert_eq!(a.bytes(ReplicaId(2)), 10);
        let taken = a.take();
        assert_eq!(taken.len(), 4);
        assert_eq!(a.senders(), 0);
        assert_eq!(a.bytes(ReplicaId(1)), 0);
    }
}
