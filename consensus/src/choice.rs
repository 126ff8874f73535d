//! How a NEW-VIEW's chain is chosen from 2f+1 VIEW-CHANGE summaries (PBFT 4.4,
//! chained as in docs/adr/003-chained-pbft.md) and which claims it must prove
//! with certificates (docs/adr/010-new-view-summaries.md). The new primary and
//! every receiver run the same choice.

use crate::messages::{
    CheckpointProof, NewView, PrePrepare, PreparedCertificate, Signed, ViewChange,
    ViewChangeSummary,
};
use crate::types::{Digest, SeqNum, View};

/// One re-proposal chosen by NEW-VIEW.
#[derive(Debug, Clone)]
pub(crate) struct Chosen {
    /// The view of the prepared claim chosen at `seq`.
    pub(crate) view: View,
    pub(crate) seq: SeqNum,
    pub(crate) digest: Digest,
    pub(crate) parent: Digest,
}

impl Chosen {
    /// The PRE-PREPARE whose prepared certificate backs this entry.
    pub(crate) fn claim(&self) -> PrePrepare {
        PrePrepare {
            view: self.view,
            seq: self.seq,
            digest: self.digest,
            parent: self.parent,
        }
    }
}

/// PBFT 4.4's choice of re-proposals, for a chain: start at the highest stable
/// checkpoint among the view changes; for each next sequence number take the
/// prepared certificate of the highest view; stop at the first sequence number with
/// none, or whose certificate does not extend the one chosen before it. A committed
/// payload is never cut off: 2f+1 replicas prepared it (and, by the chaining rule,
/// its ancestors in the same view), so its certificate and its ancestors' reach
/// every quorum of view changes, with the highest views.
///
/// Also returns the claim the chain stopped at because it does not extend the
/// entry before it, if it stopped so: that claim decides where the chain ends,
/// so a NEW-VIEW must prove it like the chosen ones (an unproven one could cut a
/// committed payload off).
pub(crate) fn select(
    vcs: &[Signed<ViewChangeSummary>],
    window: u64,
) -> (CheckpointProof, Vec<Chosen>, Option<PrePrepare>) {
    let stable = vcs
        .iter()
        .map(|v| &v.body.stable)
        .max_by_key(|s| s.seq)
        .cloned()
        .unwrap_or_else(|| CheckpointProof::genesis(Digest::default()));
    let mut chain = Vec::new();
    let mut parent = stable.digest;
    let mut seq = stable.seq.next();
    while seq.0 <= stable.seq.0.saturating_add(window) {
        let best = vcs
            .iter()
            .flat_map(|v| v.body.prepared.iter().map(move |c| (v.signer, c)))
            .filter(|(_, c)| c.seq == seq)
            .max_by_key(|(_, c)| {
                #[cfg(test)]
                if crate::types::injected(crate::types::canary::Bug::LowestViewCertificate) {
                    return View(u64::MAX - c.view.0);
                }
                c.view
            });
        let Some((_, pp)) = best else { break };
        if pp.parent != parent {
            return (stable, chain, Some(*pp));
        }
        chain.push(Chosen {
            view: pp.view,
            seq,
            digest: pp.digest,
            parent,
        });
        parent = pp.digest;
        seq = seq.next();
    }
    (stable, chain, None)
}

/// The claims a NEW-VIEW built from `vcs` proves with certificates (see
/// [`NewView::assemble`]).
pub(crate) fn claims_to_prove(vcs: &[Signed<ViewChangeSummary>], window: u64) -> Vec<PrePrepare> {
    let (_, chain, stop) = select(vcs, window);
    proven_claims(&chain, stop)
}

/// The claims a NEW-VIEW proves with certificates, in order: each chosen entry's,
/// then the one the chain stopped at.
pub(crate) fn proven_claims(chain: &[Chosen], stop: Option<PrePrepare>) -> Vec<PrePrepare> {
    chain.iter().map(Chosen::claim).chain(stop).collect()
}

/// The certificate behind `claim` among whole VIEW-CHANGEs, if one carries it.
pub(crate) fn certificate_for(
    view_changes: &[Signed<ViewChange>],
    claim: &PrePrepare,
) -> Option<PreparedCertificate> {
    view_changes
        .iter()
        .flat_map(|v| &v.body.prepared)
        .find(|c| c.pre_prepare.body == *claim)
        .cloned()
}

impl NewView {
    /// A NEW-VIEW for `view` from whole VIEW-CHANGEs and the PRE-PREPAREs it
    /// re-issues: their summaries, and the certificates of the claims the
    /// chain chooses from them (and of the claim it stops at), taken from the
    /// VIEW-CHANGEs; a claim without one is left out.
    pub fn assemble(
        view: View,
        view_changes: &[Signed<ViewChange>],
        pre_prepares: Vec<Signed<PrePrepare>>,
    ) -> NewView {
        let summaries: Vec<Signed<ViewChangeSummary>> =
            view_changes.iter().map(Signed::summarized).collect();
        let certificates = claims_to_prove(&summaries, u64::MAX)
            .iter()
            .filter_map(|claim| certificate_for(view_changes, claim))
            .collect();
        NewView {
            view,
            view_changes: summaries,
            certificates,
            pre_prepares,
        }
    }
}
