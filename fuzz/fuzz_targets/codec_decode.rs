//! Arbitrary bytes into the canonical decoder: it must never panic, never allocate
//! past its limit, and whatever it accepts must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_crypto::{Hash, MerkleProof, PublicKey, Signature, codec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Mixed {
    height: u64,
    label: String,
    body: Vec<u8>,
    parent: Hash,
    signer: PublicKey,
    signature: Signature,
    proof: Option<MerkleProof>,
    parts: Vec<(u32, Vec<u8>)>,
}

const LIMIT: usize = 64 * 1024;

fn round_trips<T: Serialize + for<'de> Deserialize<'de>>(data: &[u8]) {
    if let Ok(value) = codec::decode::<T>(data, LIMIT) {
        let again = codec::encode(&value).unwrap_or_default();
        assert_eq!(again, data, "accepted bytes must be canonical");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trips::<Mixed>(data);
    round_trips::<Vec<Hash>>(data);
    round_trips::<MerkleProof>(data);
});
