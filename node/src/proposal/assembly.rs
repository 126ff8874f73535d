//! Receiving a compact proposal: checked against its PRE-PREPARE and this
//! replica's standing, completed from the mempool (or waiting for gossip or a
//! supply), and assembled a bounded number of times.

use super::*;

impl Relay {
    /// A compact proposal from validator `from`, received `now` and judged
    /// against where this node `stands`. `lookup` finds a transfer this node
    /// verified (its mempool).
    pub fn receive(
        &mut self,
        from: ReplicaId,
        compact: Compact,
        (stands, now): (Standing, Instant),
        validators: &ValidatorSet,
        lookup: impl Fn(&TxHash) -> Option<VerifiedTransfer>,
    ) -> Result<Received, RelayError> {
        let pp = &compact.pre_prepare.body;
        if compact.pre_prepare.signer != from || validators.primary(pp.view) != from {
            return Err(RelayError::NotPrimary);
        }
        if pp.view < stands.view {
            return Ok(Received::Ignored("old-view"));
        }
        if pp.view > stands.view_max.max(stands.view.next()) {
            return Ok(Received::Ignored("too-far-in-the-future"));
        }
        if pp.seq.0 <= stands.tip || pp.seq.0 > stands.tip + 1 + stands.window {
            return Ok(Received::Ignored("compact-proposal-outside-window"));
        }
        // A copy of a proposal already taken (the digest binds its content) costs
        // no signature check: its want again while it waits, else a count.
        if let Some(waiting) = self
            .pending
            .iter()
            .find(|p| p.pre_prepare.body.digest == pp.digest && p.from == from)
        {
            return Ok(if waiting.asked.is_empty() {
                Received::Ignored("compact-proposal-duplicate")
            } else {
                Received::AlreadyWaiting(waiting.want())
            });
        }
        self.seen
            .retain(|&(_, view, seq), _| view >= stands.view && seq.0 > stands.tip);
        if let Some((digest, times)) = self.seen.get(&(from, pp.view, pp.seq))
            && *digest == pp.digest
            && *times >= ASSEMBLIES_PER_PROPOSAL
        {
            return Ok(Received::Ignored("compact-proposal-duplicate"));
        }
        if compact.pre_prepare.verify(validators).is_err() {
            return Err(RelayError::BadSignature);
        }
        let header = &compact.header;
        if header.height != pp.seq.0
            || header.parent != pp.parent.0
            || header.view != pp.view.0
            || header.proposer != from.0
            || header.hash() != pp.digest.0
        {
            return Err(RelayError::HeaderMismatch);
        }
        if compact.ids.len() > IDS_MAX {
            return Err(RelayError::IdsMismatch("more than a maximal body holds"));
        }
        if compact.ids.len() != header.tx_count as usize {
            return Err(RelayError::IdsMismatch("count differs from tx_count"));
        }
        if compact.signatures.len() != compact.ids.len() {
            return Err(RelayError::IdsMismatch("one signature digest per id"));
        }
        if crate::block::root_of_ids(&compact.ids) != header.tx_root {
            return Err(RelayError::IdsMismatch("root differs from tx_root"));
        }
        // One proposal per view and height from its primary, assembled a bounded
        // number of times: copies and conflicting proposals cost no encoding.
        match self.seen.get_mut(&(from, pp.view, pp.seq)) {
            Some((digest, _)) if *digest != pp.digest => return Err(RelayError::Equivocation),
            Some((_, times)) if *times >= ASSEMBLIES_PER_PROPOSAL => {
                return Ok(Received::Ignored("compact-proposal-duplicate"));
            }
            Some((_, times)) => *times += 1,
            None => {
                self.seen.insert((from, pp.view, pp.seq), (pp.digest, 1));
            }
        }
        // Another signature of the same transfer is not this block's transfer.
        let have: Vec<Option<VerifiedTransfer>> = compact
            .ids
            .iter()
            .zip(&compact.signatures)
            .map(|(id, signature)| matching(id, signature, &lookup))
            .collect();
        let missing = have.iter().filter(|t| t.is_none()).count();
        if missing == 0 {
            return Ok(Received::Complete(Box::new(Assembly {
                pre_prepare: compact.pre_prepare,
                header: compact.header,
                txs: have.into_iter().flatten().collect(),
            })));
        }
        // Only the sender's own oldest entries make room: one validator's frames
        // never push out another's proposal.
        while self.pending.iter().any(|p| p.from == from) {
            let (count, ids) = self
                .pending
                .iter()
                .filter(|p| p.from == from)
                .fold((0, 0), |(c, n), p| (c + 1, n + p.ids.len()));
            if count < PENDING_PER_SENDER && ids + compact.ids.len() <= WAITING_IDS_PER_SENDER {
                break;
            }
            if let Some(oldest) = self.pending.iter().position(|p| p.from == from) {
                self.pending.remove(oldest);
            }
        }
        self.pending.push_back(Pending {
            from,
            pre_prepare: compact.pre_prepare,
            header: compact.header,
            ids: compact.ids,
            signatures: compact.signatures,
            have,
            asked: Vec::new(),
            arrived: now,
            asked_at: None,
            wants_sent: 0,
            refilled_at: None,
        });
        Ok(Received::Missing(missing))
    }

    /// Fills waiting proposals from `lookup` `now`, after gossip was verified: the
    /// ones now whole leave the waiting list, with their senders. A proposal is
    /// refilled at every call before its want is sent (its [`WANT_DELAY`]) and once
    /// per [`WANT_RESEND`] after, so the lookups it costs stay bounded.
    pub fn refill(
        &mut self,
        now: Instant,
        lookup: impl Fn(&TxHash) -> Option<VerifiedTransfer>,
    ) -> Vec<(ReplicaId, Assembly)> {
        let mut whole = Vec::new();
        for pending in self.pending.iter_mut() {
            if !pending.asked.is_empty() {
                let since = pending.refilled_at.or(pending.asked_at);
                if since.is_some_and(|at| now.saturating_duration_since(at) < WANT_RESEND) {
                    continue;
                }
                pending.refilled_at = Some(now);
            }
            let Pending {
                ids,
                signatures,
                have,
                ..
            } = pending;
            for ((slot, id), signature) in have.iter_mut().zip(ids.iter()).zip(signatures.iter()) {
                if slot.is_none() {
                    *slot = matching(id, signature, &lookup);
                }
            }
        }
        let mut at = 0;
        while at < self.pending.len() {
            if self.pending[at].have.iter().all(Option::is_some)
                && let Some(pending) = self.pending.remove(at)
            {
                let from = pending.from;
                if let Some(assembly) = pending.into_assembly() {
                    whole.push((from, assembly));
                }
                continue;
            }
            at += 1;
        }
        whole
    }

    /// The transfers `from` supplied for proposal `digest`, verified, in the order
    /// asked: the proposal leaves the waiting list, whole. `None` if `from`'s
    /// proposal is not waiting or the transfers are not the ones asked for.
    pub fn complete(
        &mut self,
        from: ReplicaId,
        digest: &Digest,
        supplied: Vec<VerifiedTransfer>,
    ) -> Option<Assembly> {
        let at = self
            .pending
            .iter()
            .position(|p| p.pre_prepare.body.digest == *digest && p.from == from)?;
        if self.pending[at].asked.is_empty() || self.pending[at].asked.len() != supplied.len() {
            return None;
        }
        let mut pending = self.pending.remove(at)?;
        for (tx, &i) in supplied.into_iter().zip(&pending.asked) {
            if tx.hash() != pending.ids[i as usize]
                || signature_digest(&tx.signed().signature) != pending.signatures[i as usize]
            {
                return None;
            }
            pending.have[i as usize] = Some(tx);
        }
        pending.into_assembly()
    }
}
