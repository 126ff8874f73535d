//! A test schema and block builder shared by the store tests.
#![allow(dead_code)] // each test binary uses a different part

use mosaic_crypto::Hash;
use mosaic_storage::{CommittedBlock, Schema, coding, placement};

#[derive(Debug)]
pub struct TestSchema;

impl Schema for TestSchema {
    type Header = (u64, Hash);
    type Certificate = Vec<u8>;
    type AccountKey = u64;
    type Account = u64;
    type SafetyRecord = (u64, u64);
    type TxRecord = (u64, u32);
}

pub const N: usize = 4;
pub const K: usize = 2;

pub fn body_for(height: u64) -> Vec<u8> {
    let len = 500 + (height as usize * 37) % 3000;
    (0..len)
        .map(|i| (i as u64 ^ height.wrapping_mul(0x9e37)) as u8)
        .collect()
}

/// The block at `height` as validator `validator` would commit it.
pub fn block(height: u64, validator: u32) -> CommittedBlock<TestSchema> {
    let body = body_for(height);
    let encoded = coding::encode(&body, K, N).unwrap();
    let own = placement::fragment_of(validator, height, N as u16);
    CommittedBlock {
        height,
        header: (height, Hash::of(&body)),
        certificate: vec![height as u8; 8],
        commitment: encoded.commitment(),
        own_fragment: encoded.fragment(own as usize).unwrap(),
        body,
        account_changes: vec![
            (height % 5, Some(height)),
            (1000 + height, Some(height * 2)),
        ],
        tx_ids: vec![tx_id(height)],
        tx_records: vec![(tx_id(height), (height, 0))],
        outcome_root: [height as u8; 32],
        live_ids: Vec::new(),
    }
}

/// Fragment `index` of the block at `height`, as a peer would serve it.
pub fn peer_fragment(height: u64, index: u32) -> Option<coding::Fragment> {
    coding::encode(&body_for(height), K, N)
        .ok()?
        .fragment(index as usize)
}

/// The id of the one transaction record the test block at `height` carries.
pub fn tx_id(height: u64) -> [u8; 32] {
    *Hash::of(&height.to_le_bytes()).as_bytes()
}
