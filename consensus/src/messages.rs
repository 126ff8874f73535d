//! PBFT messages, their signatures, and the certificates built from them.
//!
//! Every message body is signed by its author over its canonical encoding under a
//! per-kind [`Domain`] and the chain id. Messages arrive as [`Message`] values that
//! are *unverified*; [`crate::Replica`] checks each signature and certificate before
//! any of it is used.

use mosaic_crypto::{Domain, Signature, SignedItem, codec, verify_batch};
use serde::{Deserialize, Serialize};

use crate::types::{Digest, ReplicaId, SeqNum, ValidatorSet, View};

/// A message body that can be signed.
pub trait Body: Serialize {
    /// The signature domain of this kind of message.
    const DOMAIN: Domain;

    /// The canonical bytes its signature covers: its encoding, unless the kind
    /// says otherwise.
    fn signing_bytes(&self) -> Result<Vec<u8>, codec::CodecError> {
        codec::encode(self)
    }
}

/// PBFT 4.2: the primary assigns `digest` to `seq` in `view`. `parent` is the digest
/// at `seq - 1` that this payload extends (see the crate docs on chaining).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepare {
    /// View.
    pub view: View,
    /// Sequence number.
    pub seq: SeqNum,
    /// Payload digest.
    pub digest: Digest,
    /// Digest of the payload at `seq - 1` (or of the genesis checkpoint).
    pub parent: Digest,
}

/// PBFT 4.2: a backup accepted the pre-prepare. It signs the parent too, so a
/// prepared certificate proves the chain link, not only the digest (a Byzantine
/// primary could otherwise pair honest prepares with a pre-prepare naming another
/// parent and make NEW-VIEW cut the chain below a committed payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// View.
    pub view: View,
    /// Sequence number.
    pub seq: SeqNum,
    /// Payload digest.
    pub digest: Digest,
    /// The parent named by the pre-prepare.
    pub parent: Digest,
}

/// PBFT 4.2: the sender is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// View.
    pub view: View,
    /// Sequence number.
    pub seq: SeqNum,
    /// Payload digest.
    pub digest: Digest,
}

/// PBFT 4.3: the sender delivered everything up to `seq`, ending in `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number (a multiple of the checkpoint interval).
    pub seq: SeqNum,
    /// Digest of the payload delivered at `seq` (it commits to the whole chain).
    pub digest: Digest,
}

/// PBFT 4.4: the sender moves to `new_view`, carrying what it has prepared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The view being moved to.
    pub new_view: View,
    /// The sender's latest stable checkpoint, with its proof.
    pub stable: CheckpointProof,
    /// Prepared certificates for sequence numbers above the stable checkpoint.
    pub prepared: Vec<PreparedCertificate>,
    /// The last sequence number the sender delivered: a hint (not trusted for
    /// safety) that lets replicas ahead of it send what it misses.
    pub last_delivered: SeqNum,
}

impl ViewChange {
    /// What the VIEW-CHANGE says, without the evidence: each prepared
    /// certificate stands as the PRE-PREPARE it proves. This is what is signed
    /// (see [`Body::signing_bytes`]), so a NEW-VIEW can carry 2f+1 VIEW-CHANGEs
    /// as summaries and each certificate it needs once.
    pub fn summary(&self) -> ViewChangeSummary {
        ViewChangeSummary {
            new_view: self.new_view,
            stable: self.stable.clone(),
            prepared: self.prepared.iter().map(|c| c.pre_prepare.body).collect(),
            last_delivered: self.last_delivered,
        }
    }
}

impl Signed<ViewChange> {
    /// The signed summary: the same signature, over the same bytes.
    pub fn summarized(&self) -> Signed<ViewChangeSummary> {
        Signed {
            body: self.body.summary(),
            signer: self.signer,
            signature: self.signature,
        }
    }
}

/// A VIEW-CHANGE as a NEW-VIEW carries it: its claims of what was prepared, the
/// certificates left out. A VIEW-CHANGE's signature verifies on its summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChangeSummary {
    /// The view being moved to.
    pub new_view: View,
    /// The sender's latest stable checkpoint, with its proof.
    pub stable: CheckpointProof,
    /// For each certificate of the VIEW-CHANGE, the PRE-PREPARE it proves
    /// prepared, in the same order.
    pub prepared: Vec<PrePrepare>,
    /// As in [`ViewChange::last_delivered`].
    pub last_delivered: SeqNum,
}

/// PBFT 4.4: the new primary's announcement, with the view changes it is based on
/// and the pre-prepares it re-issues.
///
/// Its size is bounded for every validator set: 2f+1 summaries (a checkpoint
/// proof of 2f+1 signatures and at most a window of claims each) and one
/// prepared certificate per re-issued height (2f+1 signatures), 5.4 MiB at
/// n = 256 and a window of 64 (docs/adr/010-new-view-summaries.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    /// The new view.
    pub view: View,
    /// 2f+1 view changes for `view` from distinct replicas, as summaries.
    pub view_changes: Vec<Signed<ViewChangeSummary>>,
    /// For each re-issued pre-prepare, the prepared certificate of the claim the
    /// chain chose at its height, same order: the evidence that the summaries'
    /// claims are true where they decide anything.
    pub certificates: Vec<PreparedCertificate>,
    /// Re-issued pre-prepares, in sequence order, contiguous from the highest stable
    /// checkpoint in `view_changes`.
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

impl Body for PrePrepare {
    const DOMAIN: Domain = Domain::PrePrepare;
}
impl Body for Prepare {
    const DOMAIN: Domain = Domain::Prepare;
}
impl Body for Commit {
    const DOMAIN: Domain = Domain::Commit;
}
impl Body for Checkpoint {
    const DOMAIN: Domain = Domain::Checkpoint;
}
impl Body for ViewChange {
    const DOMAIN: Domain = Domain::ViewChange;

    /// A VIEW-CHANGE is signed as its summary: the claims, not the evidence.
    fn signing_bytes(&self) -> Result<Vec<u8>, codec::CodecError> {
        codec::encode(&self.summary())
    }
}
impl Body for ViewChangeSummary {
    const DOMAIN: Domain = Domain::ViewChange;
}
impl Body for NewView {
    const DOMAIN: Domain = Domain::NewView;
}

/// A body with its author and signature. Unverified until checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    /// The signed content.
    pub body: T,
    /// Who claims to have signed.
    pub signer: ReplicaId,
    /// The signature over the body's canonical bytes.
    pub signature: Signature,
}

/// Why a signature or certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signer is not a validator.
    #[error("signer {0} is not in the validator set")]
    UnknownSigner(ReplicaId),
    /// The signature does not verify.
    #[error("bad signature by {0}")]
    BadSignature(ReplicaId),
    /// The body could not be encoded (never for our types).
    #[error("cannot encode message body")]
    Encode,
    /// A certificate lacks distinct signers or mixes contents.
    #[error("malformed certificate: {0}")]
    Certificate(&'static str),
}

impl<T: Body> Signed<T> {
    /// The canonical bytes that are signed.
    pub fn signing_bytes(body: &T) -> Result<Vec<u8>, VerifyError> {
        body.signing_bytes().map_err(|_| VerifyError::Encode)
    }

    /// Checks the signature against the validator set.
    pub fn verify(&self, validators: &ValidatorSet) -> Result<(), VerifyError> {
        verify_all(validators, std::slice::from_ref(self))
    }
}

/// Verifies many signed bodies of one kind in one batch; on failure names the
/// first bad signer.
pub fn verify_all<T: Body>(
    validators: &ValidatorSet,
    signed: &[Signed<T>],
) -> Result<(), VerifyError> {
    let mut bytes = Vec::with_capacity(signed.len());
    let mut keys = Vec::with_capacity(signed.len());
    for s in signed {
        keys.push(
            *validators
                .key(s.signer)
                .ok_or(VerifyError::UnknownSigner(s.signer))?,
        );
        bytes.push(Signed::signing_bytes(&s.body)?);
    }
    let items: Vec<SignedItem<'_>> = signed
        .iter()
        .zip(&keys)
        .zip(&bytes)
        .map(|((s, key), message)| SignedItem {
            key,
            domain: T::DOMAIN,
            chain: validators.chain(),
            message,
            signature: &s.signature,
        })
        .collect();
    verify_batch(&items).map_err(|e| match e {
        mosaic_crypto::SignError::BadSignatures { bad, .. } => VerifyError::BadSignature(
            bad.first()
                .map_or(ReplicaId(u32::MAX), |&i| signed[i].signer),
        ),
        _ => VerifyError::BadSignature(ReplicaId(u32::MAX)),
    })
}

/// Signers strictly ascending: distinct, and in the one order that makes every
/// certificate's encoding canonical (one set of votes, one byte string).
fn ascending_signers<T>(signed: &[Signed<T>]) -> bool {
    signed.windows(2).all(|w| w[0].signer < w[1].signer)
}

/// PBFT 4.4's P set entry: a pre-prepare and 2f matching prepares from distinct
/// backups, proving the digest was prepared at (view, seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCertificate {
    /// The primary's pre-prepare.
    pub pre_prepare: Signed<PrePrepare>,
    /// 2f prepares matching it, none from the primary.
    pub prepares: Vec<Signed<Prepare>>,
}

impl PreparedCertificate {
    /// Checks the shape and every signature.
    pub fn verify(&self, validators: &ValidatorSet) -> Result<(), VerifyError> {
        let pp = &self.pre_prepare.body;
        let primary = validators.primary(pp.view);
        if self.pre_prepare.signer != primary {
            return Err(VerifyError::Certificate(
                "pre-prepare not signed by the view's primary",
            ));
        }
        if self.prepares.len() != validators.quorum() - 1 || !ascending_signers(&self.prepares) {
            return Err(VerifyError::Certificate(
                "prepared certificate needs exactly 2f prepares, signers ascending",
            ));
        }
        if self.prepares.iter().any(|p| {
            p.signer == primary
                || p.body.view != pp.view
                || p.body.seq != pp.seq
                || p.body.digest != pp.digest
                || p.body.parent != pp.parent
        }) {
            return Err(VerifyError::Certificate(
                "prepares do not match the pre-prepare",
            ));
        }
        self.pre_prepare.verify(validators)?;
        #[cfg(test)]
        if crate::types::injected(crate::types::canary::Bug::NoPrepareSignatureCheck) {
            return Ok(());
        }
        verify_all(validators, &self.prepares)
    }
}

/// 2f+1 matching checkpoints: proof that a checkpoint is stable. The genesis
/// checkpoint (seq 0) needs no signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointProof {
    /// The checkpoint's sequence number.
    pub seq: SeqNum,
    /// The digest at `seq`.
    pub digest: Digest,
    /// The signed checkpoints (empty for genesis).
    pub checkpoints: Vec<Signed<Checkpoint>>,
}

impl CheckpointProof {
    /// The genesis checkpoint: seq 0 with the chain's genesis digest.
    pub fn genesis(digest: Digest) -> Self {
        CheckpointProof {
            seq: SeqNum(0),
            digest,
            checkpoints: Vec::new(),
        }
    }

    /// Checks the proof (genesis must carry the expected genesis digest).
    pub fn verify(&self, validators: &ValidatorSet, genesis: Digest) -> Result<(), VerifyError> {
        if self.seq == SeqNum(0) {
            return if self.digest == genesis && self.checkpoints.is_empty() {
                Ok(())
            } else {
                Err(VerifyError::Certificate(
                    "genesis checkpoint with the wrong digest",
                ))
            };
        }
        if self.checkpoints.len() != validators.quorum() || !ascending_signers(&self.checkpoints) {
            return Err(VerifyError::Certificate(
                "checkpoint proof needs exactly 2f+1 checkpoints, signers ascending",
            ));
        }
        if self
            .checkpoints
            .iter()
            .any(|c| c.body.seq != self.seq || c.body.digest != self.digest)
        {
            return Err(VerifyError::Certificate("checkpoints do not match"));
        }
        verify_all(validators, &self.checkpoints)
    }
}

/// 2f+1 COMMITs for one (view, seq, digest): proof that the payload with `digest` is
/// the one committed at `seq`. Anyone holding the validator set can check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// The view the commits were made in.
    pub view: View,
    /// The sequence number (ledger height).
    pub seq: SeqNum,
    /// The committed payload's digest.
    pub digest: Digest,
    /// The commit signers and their signatures, ascending by signer.
    pub signatures: Vec<(ReplicaId, Signature)>,
}

impl CommitCertificate {
    /// Checks that exactly 2f+1 validators, ascending, signed COMMIT(view, seq,
    /// digest): one committed payload has exactly one certificate encoding.
    pub fn verify(&self, validators: &ValidatorSet) -> Result<(), VerifyError> {
        let signed: Vec<Signed<Commit>> = self
            .signatures
            .iter()
            .map(|(signer, signature)| Signed {
                body: Commit {
                    view: self.view,
                    seq: self.seq,
                    digest: self.digest,
                },
                signer: *signer,
                signature: *signature,
            })
            .collect();
        if signed.len() != validators.quorum() || !ascending_signers(&signed) {
            return Err(VerifyError::Certificate(
                "commit certificate needs exactly 2f+1 signers, ascending",
            ));
        }
        verify_all(validators, &signed)
    }
}

/// Everything replicas say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A pre-prepare with its payload.
    PrePrepare {
        /// The signed pre-prepare.
        pre_prepare: Signed<PrePrepare>,
        /// The payload whose digest it names.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A prepare.
    Prepare(Signed<Prepare>),
    /// A commit.
    Commit(Signed<Commit>),
    /// A checkpoint.
    Checkpoint(Signed<Checkpoint>),
    /// A view change.
    ViewChange(Signed<ViewChange>),
    /// A new view, with the payloads of the re-issued pre-prepares that fit in one
    /// message.
    NewView {
        /// The signed new view.
        new_view: Signed<NewView>,
        /// Payloads for `new_view.pre_prepares`, same order; `None` where the
        /// payload did not fit (a receiver that lacks it fetches it).
        #[serde(with = "byte_strings")]
        payloads: Vec<Option<Vec<u8>>>,
    },
    /// Asks for the payload with this digest at this sequence number.
    FetchPayload {
        /// Sequence number.
        seq: SeqNum,
        /// Digest wanted.
        digest: Digest,
    },
    /// A committed payload with its certificate, sent to a replica that fell behind
    /// inside the window (checked like state transfer by the receiver).
    Certified {
        /// The payload.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// Its commit certificate.
        certificate: CommitCertificate,
    },
    /// Answers [`Message::FetchPayload`]; checked against the digest by the receiver.
    Payload {
        /// Sequence number.
        seq: SeqNum,
        /// The payload.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
}

impl Message {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PrePrepare { .. } => "pre-prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(_) => "view-change",
            Message::NewView { .. } => "new-view",
            Message::FetchPayload { .. } => "fetch-payload",
            Message::Payload { .. } => "payload",
            Message::Certified { .. } => "certified",
        }
    }

    /// Decodes a message from network bytes, refusing more than `limit` bytes.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Message, codec::CodecError> {
        codec::decode(bytes, limit)
    }

    /// The canonical bytes to send.
    pub fn encode(&self) -> Result<Vec<u8>, codec::CodecError> {
        codec::encode(self)
    }
}

/// Serde for a list of optional payloads as byte strings. Payloads go as byte
/// strings rather than sequences of `u8`: the codec writes both the same way
/// (a length, then the bytes), but reads a byte string in one copy instead of
/// one call per byte, which is what makes a maximal frame cheap to refuse.
mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(payloads: &[Option<Vec<u8>>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(payloads.iter().map(|p| p.as_deref().map(Bytes::new)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Vec<u8>>>, D::Error> {
        let read = Vec::<Option<ByteBuf>>::deserialize(d)?;
        Ok(read.into_iter().map(|p| p.map(ByteBuf::into_vec)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommitCertificate;

    /// [`Message`] with its payloads as plain sequences of `u8`: the layout
    /// nodes and stores wrote before payloads were read as byte strings.
    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)] // only the variants' indexes and two of them are used
    enum Plain {
        PrePrepare {
            pre_prepare: Signed<PrePrepare>,
            payload: Vec<u8>,
        },
        Prepare(Signed<Prepare>),
        Commit(Signed<Commit>),
        Checkpoint(Signed<Checkpoint>),
        ViewChange(Signed<ViewChange>),
        NewView {
            new_view: Signed<NewView>,
            payloads: Vec<Option<Vec<u8>>>,
        },
        FetchPayload {
            seq: SeqNum,
            digest: Digest,
        },
        Certified {
            payload: Vec<u8>,
            certificate: CommitCertificate,
        },
        Payload {
            seq: SeqNum,
            payload: Vec<u8>,
        },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsByteStrings(#[serde(with = "byte_strings")] Vec<Option<Vec<u8>>>);

    #[test]
    fn payloads_as_byte_strings_keep_the_encoding() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let ours = codec::encode(&Message::Payload {
            seq: SeqNum(9),
            payload: payload.clone(),
        })
        .unwrap();
        let plain = codec::encode(&Plain::Payload {
            seq: SeqNum(9),
            payload: payload.clone(),
        })
        .unwrap();
        assert_eq!(ours, plain);
        let back: Message = codec::decode(&plain, 1 << 20).unwrap();
        assert_eq!(
            back,
            Message::Payload {
                seq: SeqNum(9),
                payload: payload.clone()
            }
        );

        let list = vec![Some(payload), None, Some(Vec::new())];
        let ours = codec::encode(&AsByteStrings(list.clone())).unwrap();
        assert_eq!(ours, codec::encode(&list).unwrap());
        let back: AsByteStrings = codec::decode(&ours, 1 << 20).unwrap();
        assert_eq!(back, AsByteStrings(list));
    }

    #[test]
    fn a_byte_string_longer_than_its_frame_is_refused() {
        let mut bytes = codec::encode(&Message::Payload {
            seq: SeqNum(1),
            payload: vec![1; 64],
        })
        .unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(codec::decode::<Message>(&bytes, 1 << 20).is_err());
    }
}
