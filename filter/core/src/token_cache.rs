//! A bounded cache of verified JWTs, keyed by a 128-bit keyed hash of the
//! token.
//!
//! Signature checks dominate the cost of asymmetric tokens (tens to
//! hundreds of microseconds for ES256/RS256 in V8), and clients send the
//! same token many times. A hit costs one keyed hash of the token and a map
//! lookup. The key is SipHash-1-3 with 128-bit output under a random key
//! drawn when the cache is created, so nobody can construct a token that
//! lands on another token's entry (that would be authentication without a
//! signature: the attacker never sees a hash, and would need ~2^128 tries
//! online), and no token bytes are compared in variable time. One pass
//! over the token, and the map does not hash the key again. SHA-256 would be as safe
//! but costs about twenty thousand instructions for a typical token, which
//! was most of the decision. Safety is unchanged: on every hit `exp` is re-checked and the
//! revocation set is consulted with the cached claims, so a revocation
//! takes effect at once; only successful verifications are stored; the
//! cache is per engine, so new configuration or keys start it empty.

use crate::identity::Identity;
use crate::prehashed::BuildPrehashed;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

/// Entries kept before the cache is emptied and refilled.
pub const DEFAULT_CAPACITY: usize = 8192;

/// What a hit needs: the identity and the claims revocation looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The identity the token proved (shared by every request using it).
    pub identity: Arc<Identity>,
    /// `exp` plus the issuer's skew: the last second the token is valid.
    pub valid_until: u64,
    /// `jti`.
    pub jti: Option<String>,
    /// `iat`.
    pub iat: Option<u64>,
}

/// A bounded map from a keyed 128-bit hash of a credential to what its
/// verification established. Interior mutability: engines are shared
/// read-only.
#[derive(Debug)]
pub struct VerifiedCache<V> {
    entries: RefCell<HashMap<u128, V, BuildPrehashed>>,
    capacity: usize,
    /// The SipHash key.
    keys: (u64, u64),
}

/// A cached token and the synced version its revocation was last checked
/// at (the in-memory revocations are checked on every hit; the synced ones,
/// which live in shared data, only when the version moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    /// What verification established.
    pub verified: Verified,
    /// Synced version of the last revocation check.
    pub checked: u64,
}

/// Verified JWTs.
pub type TokenCache = VerifiedCache<CachedToken>;

impl<V> Default for VerifiedCache<V> {
    /// A cache that stores nothing (capacity 0), still with a random key.
    fn default() -> Self {
        Self::new(0)
    }
}

impl<V> Clone for VerifiedCache<V> {
    fn clone(&self) -> Self {
        // A clone is a new engine: it starts cold.
        Self::new(self.capacity)
    }
}

impl<V: Clone> VerifiedCache<V> {
    /// The value stored for `key`.
    pub fn lookup(&self, key: &u128) -> Option<V> {
        self.entries.borrow().get(key).cloned()
    }
}

impl TokenCache {
    /// A still-valid, unrevoked identity for `key`; `Err` carries the
    /// reason a cached token is now refused. `recheck` gets the entry and
    /// the version it was last checked at, and answers the version it is
    /// now checked at, or why the token is refused.
    pub fn get(
        &self,
        key: &u128,
        now: u64,
        recheck: impl FnOnce(&Verified, u64) -> Result<u64, crate::Reason>,
    ) -> Option<Result<Arc<Identity>, crate::Reason>> {
        let mut entries = self.entries.borrow_mut();
        let hit = entries.get_mut(key)?;
        if now > hit.verified.valid_until {
            return Some(Err(crate::Reason::TokenExpired));
        }
        Some(recheck(&hit.verified, hit.checked).map(|checked| {
            hit.checked = checked;
            Arc::clone(&hit.verified.identity)
        }))
    }
}

impl<V> VerifiedCache<V> {
    /// An empty cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        // std's RandomState is seeded from the OS (WASI `random_get` in
        // Envoy): hashing two constants with one yields two random words.
        let seed = RandomState::new();
        Self { entries: RefCell::default(), capacity, keys: (seed.hash_one(0u8), seed.hash_one(1u8)) }
    }

    /// The cache key of a token (only meaningful for this cache).
    pub fn key(&self, token: &str) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(token.as_bytes());
        h.finish128().as_u128()
    }

    /// A cache holding what `other` held (same keys), leaving it empty:
    /// a new engine for a new synced version keeps its warm entries.
    pub fn take(other: &Self) -> Self {
        Self {
            entries: RefCell::new(std::mem::take(&mut *other.entries.borrow_mut())),
            capacity: other.capacity,
            keys: other.keys,
        }
    }

    /// Stores a verified credential's outcome.
    pub fn put(&self, key: u128, verified: V) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity {
            // Emptying is O(n) once per `capacity` insertions and keeps the
            // memory bound exact without per-entry bookkeeping.
            entries.clear();
        }
        entries.insert(key, verified);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything (keys or issuers changed).
    pub fn clear(&self) {
        self.entries.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_per_cache_and_random_across_caches() {
        let (a, b) = (TokenCache::new(4), TokenCache::new(4));
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln";
        assert_eq!(a.key(token), a.key(token));
        assert_ne!(a.key(token), a.key("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2In0.c2ln"));
        // Another cache, another SipHash key: nothing computed offline carries over.
        assert_ne!(a.key(token), b.key(token));
        assert_ne!(TokenCache::default().key(token), TokenCache::default().key(token));
        // Both halves carry key material (not a 64-bit hash widened).
        let k = a.key(token);
        assert!(k >> 64 != 0 && k as u64 != 0);
        let taken = TokenCache::take(&a);
        assert_eq!(taken.key(token), k);
    }
}
