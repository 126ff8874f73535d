//! The frames of the consensus links: a consensus message, a compact proposal, a
//! want, a supply; encoded by reference (no copy of a large payload) and decoded
//! within each kind's bound.

use super::*;

/// The digest naming one signature of a transfer in a compact proposal.
pub fn signature_digest(signature: &Signature) -> Hash {
    Hash::of(signature.as_bytes())
}

/// One frame on a consensus link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A consensus message, as the replica sent it.
    Consensus(Message),
    /// A PRE-PREPARE with the block's header and transfer ids instead of its body.
    Proposal(Box<Compact>),
    /// A backup asks the primary for transfers of a proposal it lacks.
    Want(Want),
    /// The primary answers a [`Want`].
    Supply(Supply),
}

/// [`Frame`] by reference, for encoding without copying (the same bytes: variants in
/// the same order).
#[derive(Serialize)]
pub(super) enum FrameRef<'a> {
    Consensus(&'a Message),
    Proposal(&'a Compact),
    Want(&'a Want),
    Supply(&'a Supply),
}

/// The canonical frame carrying consensus `message`.
pub fn consensus_frame(message: &Message) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&FrameRef::Consensus(message))
}

/// The canonical frame carrying `want`.
pub fn want_frame(want: &Want) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&FrameRef::Want(want))
}

/// The canonical frame carrying `supply`.
pub fn supply_frame(supply: &Supply) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&FrameRef::Supply(supply))
}

/// Decodes a frame from a validator, refusing a consensus frame over
/// `consensus_limit` bytes and a relay frame over [`RELAY_FRAME_MAX`], before
/// anything is allocated.
pub fn decode_frame(bytes: &[u8], consensus_limit: usize) -> Result<Frame, codec::CodecError> {
    // The codec writes a variant as a little-endian u32 first; 0 is `Consensus`.
    let consensus = bytes.get(..4).is_some_and(|tag| tag == [0, 0, 0, 0]);
    let limit = if consensus {
        consensus_limit
    } else {
        RELAY_FRAME_MAX.min(consensus_limit)
    };
    codec::decode(bytes, limit)
}
