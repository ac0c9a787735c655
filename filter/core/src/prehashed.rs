//! A `Hasher` for map keys that already are keyed hashes (the verified
//! token cache's 128-bit keys, the rate-limit leases' 64-bit ones): hashing
//! them again would spend a SipHash per lookup on bits that are already
//! uniform and unpredictable.

use std::hash::{BuildHasherDefault, Hasher};

/// Passes a `u64` or `u128` key through (folded to 64 bits); other input is
/// mixed byte by byte, which only non-hash keys would need.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prehashed(u64);

/// `HashMap` hasher state for keys that are keyed hashes.
pub type BuildPrehashed = BuildHasherDefault<Prehashed>;

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write_u128(&mut self, n: u128) {
        // Truncation intended: both halves are already uniform.
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn hash_keys_pass_through() {
        let b = BuildPrehashed::default();
        assert_eq!(b.hash_one(0x1234_u64), 0x1234);
        assert_eq!(b.hash_one((7_u128 << 64) | 5), 7 ^ 5);
        assert_ne!(b.hash_one([1u8, 2]), b.hash_one([2u8, 1]));
    }
}
