//! A small input must not make the decoder allocate a large buffer, whatever its
//! length prefixes claim.
//!
//! The proof reads the process's peak virtual size (`VmPeak`): a buffer that the
//! decoder allocates for a length claim raises it even when its pages are never
//! touched (a zeroed allocation is mapped, not written, so resident size would not
//! show it). This file holds one test so that nothing else in its process moves the
//! peak.
#![cfg(target_os = "linux")]

use mosaic_crypto::codec::{self, CodecError};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    height: u64,
    label: String,
    parts: Vec<(u32, String)>,
    tail: Option<String>,
}

/// The largest growth of the peak virtual size allowed over all cases: serde may
/// reserve up to 1 MiB for a claimed sequence, and the test harness itself moves a
/// little; a length claim honoured before its bytes are seen costs far more.
const PEAK_GROWTH_BYTES_MAX: u64 = 16 * 1024 * 1024;

fn peak_virtual_bytes() -> Result<u64, TestCaseError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| TestCaseError::fail(format!("read /proc/self/status: {e}")))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmPeak:"))
        .ok_or_else(|| TestCaseError::fail("no VmPeak line"))?;
    let kib: u64 = line
        .trim_start_matches("VmPeak:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| TestCaseError::fail(format!("VmPeak {line:?}: {e}")))?;
    Ok(kib * 1024)
}

/// Bytes of a `Message` that end right after a length prefix claiming `claim` bytes
/// for one of its strings (`at` picks which; `label` fills the ones before it).
fn claiming(at: u8, claim: u64, label: &str) -> Vec<u8> {
    let mut bytes = 7u64.to_le_bytes().to_vec();
    match at % 3 {
        0 => bytes.extend_from_slice(&claim.to_le_bytes()),
        1 => {
            bytes.extend_from_slice(&(label.len() as u64).to_le_bytes());
            bytes.extend_from_slice(label.as_bytes());
            bytes.extend_from_slice(&1u64.to_le_bytes());
            bytes.extend_from_slice(&3u32.to_le_bytes());
            bytes.extend_from_slice(&claim.to_le_bytes());
        }
        _ => {
            bytes.extend_from_slice(&(label.len() as u64).to_le_bytes());
            bytes.extend_from_slice(label.as_bytes());
            bytes.extend_from_slice(&0u64.to_le_bytes());
            bytes.push(1);
            bytes.extend_from_slice(&claim.to_le_bytes());
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn small_input_cannot_claim_a_large_allocation(
        at: u8,
        claim in 1u64 << 20..(200u64 << 20),
        label in "[a-z]{0,16}",
        limit in 64usize..(256 << 20),
    ) {
        let baseline = peak_virtual_bytes()?;
        let bytes = claiming(at, claim, &label);
        let result = codec::decode::<Message>(&bytes, limit.max(bytes.len()));
        prop_assert!(
            matches!(result, Err(CodecError::Truncated)),
            "{} bytes claiming {claim}: {result:?}",
            bytes.len()
        );
        let growth = peak_virtual_bytes()?.saturating_sub(baseline);
        prop_assert!(
            growth <= PEAK_GROWTH_BYTES_MAX,
            "{} bytes claiming {claim} raised the peak by {growth} bytes",
            bytes.len()
        );
    }
}
