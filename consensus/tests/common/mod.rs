//! Helpers shared by the hand-driven scenario tests: a payload rule that makes the
//! chain link checkable, signing as any replica, and routing outputs by hand.
#![allow(dead_code)] // each test binary uses a different part

use mosaic_consensus::*;
use mosaic_crypto::{ChainId, Hash, Keypair};

/// Payloads start with their parent's 32 digest bytes; the digest is their hash.
pub struct ParentFirst;

impl PayloadCheck for ParentFirst {
    fn check(&self, _seq: SeqNum, parent: Digest, payload: &[u8]) -> Result<Digest, String> {
        if payload.len() < 32 || payload[..32] != *parent.0.as_bytes() {
            return Err("wrong parent".into());
        }
        Ok(Digest(Hash::of(payload)))
    }
}

/// A payload extending `parent`, and its digest.
pub fn block(parent: Digest, tag: &[u8]) -> (Vec<u8>, Digest) {
    let mut p = parent.0.as_bytes().to_vec();
    p.extend_from_slice(tag);
    let d = Digest(Hash::of(&p));
    (p, d)
}

/// Signs `body` as replica `id` with key `k` (a Byzantine replica's raw signing).
pub fn sign<T: messages::Body>(k: &Keypair, id: u32, chain: &ChainId, body: T) -> Signed<T> {
    let bytes = Signed::signing_bytes(&body).unwrap();
    Signed {
        signature: k.sign(T::DOMAIN, chain, &bytes),
        body,
        signer: ReplicaId(id),
    }
}

/// The messages among outputs (broadcast or sent).
pub fn messages_of(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(m) | Output::Send { message: m, .. } => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Messages of one kind.
pub fn kind(ms: &[Message], k: &str) -> Vec<Message> {
    ms.iter().filter(|m| m.kind() == k).cloned().collect()
}

/// Feeds messages from `from` to `r`; returns all outputs.
pub fn feed(r: &mut Replica, from: u32, ms: &[Message]) -> Vec<Output> {
    let mut all = vec![];
    for m in ms {
        all.extend(r.handle(Input::Message {
            from: ReplicaId(from),
            message: m.clone(),
        }));
    }
    all
}

/// Like [`feed`], also appending the outputs to `log`.
pub fn feed_logged(
    r: &mut Replica,
    from: u32,
    ms: &[Message],
    log: &mut Vec<Output>,
) -> Vec<Output> {
    let out = feed(r, from, ms);
    log.extend(out.iter().cloned());
    out
}

/// The (seq, digest) pairs delivered among outputs.
pub fn delivered(out: &[Output]) -> Vec<(u64, Digest)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Deliver { seq, digest, .. } => Some((seq.0, *digest)),
            _ => None,
        })
        .collect()
}
