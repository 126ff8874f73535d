//! Network bytes into a consensus message, then into a replica: decoding must never
//! panic, and whatever decodes must be handled by the replica without panicking
//! (the replica's invariants are checked after the step).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_consensus::{Config, Digest, Input, Message, PayloadCheck, Replica, ReplicaId, SeqNum, ValidatorSet};
use mosaic_crypto::{ChainId, Hash, Keypair};

struct AnyPayload;

impl PayloadCheck for AnyPayload {
    fn check(&self, _seq: SeqNum, _parent: Digest, payload: &[u8]) -> Result<Digest, String> {
        Ok(Digest(Hash::of(payload)))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data, 1 << 20) else { return };
    let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
    let Ok(chain) = ChainId::new("fuzz") else { return };
    let Ok(validators) = ValidatorSet::new(chain, keys.iter().map(|k| k.public()).collect()) else { return };
    let config = Config::new(ReplicaId(1), validators, Digest(Hash::ZERO));
    let mut replica = Replica::new(config, Keypair::from_seed_for_tests(1), Box::new(AnyPayload), None);
    let _ = replica.start();
    let _ = replica.handle(Input::Message { from: ReplicaId(0), message });
    replica.check_invariants();
});
