//! Wants and supplies: the transfers a backup lacks, asked of the primary after a
//! short delay and again at a period; the primary's bounded answers; supplies
//! checked against what was asked.

use super::*;

impl Relay {
    /// The wants due `now`: for each proposal that gossip has not filled within
    /// [`WANT_DELAY`], what it still lacks, to send to its primary; sent again
    /// after [`WANT_RESEND`] without a supply, [`ANSWERS_PER_PEER`] times in all.
    pub fn due(&mut self, now: Instant) -> Vec<(ReplicaId, Want)> {
        let mut wants = Vec::new();
        for pending in &mut self.pending {
            let due = match pending.asked_at {
                None => now.saturating_duration_since(pending.arrived) >= WANT_DELAY,
                Some(at) => {
                    let wait = WANT_RESEND
                        + WANT_RESEND_PER_TRANSFER.saturating_mul(pending.asked.len() as u32);
                    pending.wants_sent < ANSWERS_PER_PEER
                        && now.saturating_duration_since(at) >= wait
                }
            };
            if due {
                if pending.asked.is_empty() {
                    pending.asked = pending.missing();
                }
                pending.asked_at = Some(now);
                pending.wants_sent += 1;
                wants.push((pending.from, pending.want()));
            }
        }
        wants
    }

    /// Validator `from` wants transfers of an own proposal: the answer, or `Ok(None)`
    /// when the proposal is no longer kept or `from` was answered enough.
    pub fn answer(&mut self, from: ReplicaId, want: &Want) -> Result<Option<Supply>, RelayError> {
        let Some(own) = self.own.iter_mut().find(|o| o.digest == want.digest) else {
            return Ok(None);
        };
        let ascending = want.indexes.windows(2).all(|w| w[0] < w[1]);
        if !ascending || want.indexes.iter().any(|&i| i as usize >= own.txs.len()) {
            return Err(RelayError::BadWant);
        }
        let Some(answers) = own.answers.get_mut(from.0 as usize) else {
            return Ok(None);
        };
        if *answers >= ANSWERS_PER_PEER {
            return Ok(None);
        }
        *answers += 1;
        Ok(Some(Supply {
            digest: want.digest,
            indexes: want.indexes.clone(),
            txs: want
                .indexes
                .iter()
                .map(|&i| own.txs[i as usize].clone())
                .collect(),
        }))
    }

    /// Checks a supply from `from` against what this node asked it for: `Ok(true)`
    /// if it answers a waiting proposal (verify its transfers, then
    /// [`Self::complete`]), `Ok(false)` if nothing waits for it (already completed,
    /// or a copy of a frame a failed link wrote again: not the sender's fault).
    pub fn supplied(&self, from: ReplicaId, supply: &Supply) -> Result<bool, RelayError> {
        let Some(pending) = self
            .pending
            .iter()
            .find(|p| p.pre_prepare.body.digest == supply.digest && p.from == from)
        else {
            return Ok(false);
        };
        if pending.asked.is_empty() || supply.indexes != pending.asked {
            return Ok(false);
        }
        if supply.txs.len() != pending.asked.len() {
            return Err(RelayError::BadSupply("number of transfers"));
        }
        for (tx, &i) in supply.txs.iter().zip(&pending.asked) {
            if tx.hash() != pending.ids[i as usize] {
                return Err(RelayError::BadSupply("a transfer with another id"));
            }
            if signature_digest(&tx.signature) != pending.signatures[i as usize] {
                return Err(RelayError::BadSupply("a transfer with another signature"));
            }
        }
        Ok(true)
    }

    /// Gives up proposal `digest` from `from`: its primary supplied transfers that
    /// do not verify, so the block is invalid and the view change replaces it.
    pub fn abandon(&mut self, from: ReplicaId, digest: &Digest) {
        self.pending
            .retain(|p| !(p.from == from && p.pre_prepare.body.digest == *digest));
    }
}
