//! Which validator keeps which fragment: validator `j` keeps fragment
//! `(j + height) mod n` of the block at `height`. The rotation spreads the data
//! shards (indexes below k) over all validators, so no fixed group of k validators
//! holds the plain data of every block.

/// The fragment index validator `validator` keeps for the block at `height`.
/// `total_shards` must be at least 1.
pub fn fragment_of(validator: u32, height: u64, total_shards: u16) -> u32 {
    let n = u64::from(total_shards.max(1));
    ((u64::from(validator) % n + height % n) % n) as u32
}

/// The validator that keeps fragment `index` of the block at `height`.
pub fn holder_of(index: u32, height: u64, total_shards: u16) -> u32 {
    let n = u64::from(total_shards.max(1));
    ((u64::from(index) % n + n - height % n) % n) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_and_fragment_are_inverse_and_a_permutation() {
        for n in [1u16, 4, 7, 10, 31, 256] {
            for height in [0u64, 1, 5, 1_000_003, u64::MAX] {
                let mut seen = vec![false; n as usize];
                for v in 0..u32::from(n) {
                    let i = fragment_of(v, height, n);
                    assert!(i < u32::from(n));
                    assert!(!seen[i as usize], "two validators keep fragment {i}");
                    seen[i as usize] = true;
                    assert_eq!(holder_of(i, height, n), v);
                }
            }
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(fragment_of(0, 0, 4), 0);
        assert_eq!(fragment_of(1, 2, 4), 3);
        assert_eq!(fragment_of(3, 2, 4), 1);
        assert_eq!(holder_of(1, 2, 4), 3);
    }
}
