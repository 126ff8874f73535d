//! Bytes from a peer or the disk into a fragment, checked against a real block's
//! commitment: never a panic, and never accepted unless it is the real fragment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_crypto::codec;
use mosaic_storage::{Fragment, coding};

fuzz_target!(|data: &[u8]| {
    let Ok(fragment) = codec::decode::<Fragment>(data, 1 << 20) else { return };
    let Ok(encoded) = coding::encode(b"a block body for the fuzzer", 2, 4) else { return };
    let index = fragment.index as usize;
    if let Ok(checked) = fragment.check(&encoded.commitment()) {
        assert_eq!(Some(checked.into_fragment()), encoded.fragment(index));
    }
});
