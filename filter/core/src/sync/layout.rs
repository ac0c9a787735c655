//! Where the synced state lives in the process-wide store (Envoy shared
//! data), so that one copy serves every worker of an Envoy process.
//!
//! - `mg:sync:v2:meta` — [`Meta`]: version, the current *generation* and its
//!   shard counts, and the small sets every VM holds in memory (signing
//!   keys, bans). JSON; read by a VM only when the version moves.
//! - `mg:sync:v2:k:<gen>:<shard>` — key records ([`super::records`]), by the
//!   top bits of the digest. Keys sorted by digest fill shards in order.
//! - `mg:sync:v2:r:<gen>:<shard>` — revocation records, by the top bits of
//!   `revocation_hash(kind, id)` (a stable hash shared with the control
//!   plane, which pages snapshots in its order: shards fill in order too).
//!
//! A request that needs a key or a revocation reads one shard: a few dozen
//! records whatever the total, so the cost per request does not grow with
//! the number of keys. A full snapshot is written into a fresh generation
//! and switched to by one write of the meta; the replaced generation is
//! blanked a few seconds later (a reader may still be in the middle of a
//! lookup in it).

use super::records::{self, StoredRevocation};
use crate::apikey::ApiKeyDigest;
use crate::keystore::{KeyEntry, KeyKindTag};
use crate::ratelimit::table::{CounterStore, StoreError};
use meshgate_wire::sync::{Ban, SigningKey};
use serde::{Deserialize, Serialize};

/// The published meta record.
pub const META_KEY: &str = "mg:sync:v2:meta";
/// Records a shard holds on average when a generation is sized.
pub const TARGET_PER_SHARD: u64 = 16;
/// Average records per shard at which a delta regrows the table.
pub const MAX_AVERAGE_PER_SHARD: u64 = 64;
/// Fewest shards per table.
pub const MIN_SHARDS: u32 = 16;
/// Most shards per table (2^20: 64 M records at the target load).
pub const MAX_SHARDS: u32 = 1 << 20;

/// The published state's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Feed version (0: nothing published).
    pub version: u64,
    /// Generation whose shards hold the records.
    pub generation: u64,
    /// Key shards (a power of two).
    pub key_shards: u32,
    /// Revocation shards (a power of two).
    pub rev_shards: u32,
    /// Keys held (sizes the table; approximate after races).
    pub keys: u64,
    /// Revocations held (likewise).
    pub revocations: u64,
    /// Signing keys (few: every VM compiles them into its key ring).
    pub signing_keys: Vec<SigningKey>,
    /// Client IP bans.
    pub bans: Vec<Ban>,
    /// A replaced generation, blanked once its time has come.
    #[serde(default)]
    pub retired: Option<Retired>,
}

/// A generation waiting to be blanked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The generation.
    pub generation: u64,
    /// Its key shards.
    pub key_shards: u32,
    /// Its revocation shards.
    pub rev_shards: u32,
    /// Milliseconds since the epoch after which nobody reads it.
    pub after_ms: u64,
}

impl Meta {
    /// Reads the meta and its CAS version (`Meta::default()` when absent).
    pub fn read(store: &dyn CounterStore) -> Result<(Self, u32), StoreError> {
        let (bytes, cas) = store.get(META_KEY)?;
        match bytes {
            None => Ok((Self::default(), cas)),
            Some(b) if b.is_empty() => Ok((Self::default(), cas)),
            // The meta is only ever written by this module; anything else is
            // a foreign writer, refused like an unreachable store.
            Some(b) => serde_json::from_slice(&b).map(|m| (m, cas)).map_err(|_| StoreError::Unavailable),
        }
    }

    /// Writes the meta if nobody wrote it since `cas`.
    pub fn write(&self, store: &dyn CounterStore, cas: u32) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(self).map_err(|_| StoreError::Unavailable)?;
        store.set(META_KEY, &bytes, cas)
    }

    /// What a reader needs to find records.
    pub fn view(&self) -> View {
        View {
            version: self.version,
            generation: self.generation,
            key_shards: self.key_shards,
            rev_shards: self.rev_shards,
        }
    }
}

/// Shards for `count` records: a power of two near [`TARGET_PER_SHARD`]
/// records each.
pub fn shards_for(count: u64) -> u32 {
    let wanted = count.div_ceil(TARGET_PER_SHARD).max(1).next_power_of_two();
    u32::try_from(wanted).unwrap_or(MAX_SHARDS).clamp(MIN_SHARDS, MAX_SHARDS)
}

/// Name of key shard `shard` of `generation`.
pub fn key_shard(generation: u64, shard: u32) -> String {
    format!("mg:sync:v2:k:{generation:x}:{shard:x}")
}

/// Name of revocation shard `shard` of `generation`.
pub fn rev_shard(generation: u64, shard: u32) -> String {
    format!("mg:sync:v2:r:{generation:x}:{shard:x}")
}

/// The shard of a key: the digest's top bits (`shards` is a power of two).
pub fn key_shard_of(digest: &ApiKeyDigest, shards: u32) -> u32 {
    let b = digest.as_bytes();
    top_bits(u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]), shards)
}

/// The shard of a revocation: the top bits of
/// [`meshgate_wire::sync::revocation_hash`], the order in which the control
/// plane pages a snapshot's revocations.
pub fn rev_shard_of(kind: u8, id: &str, shards: u32) -> u32 {
    top_bits(meshgate_wire::sync::revocation_hash(kind, id), shards)
}

/// The top `log2(shards)` bits of `h` (`shards` is a power of two).
fn top_bits(h: u64, shards: u32) -> u32 {
    let bits = shards.max(1).trailing_zeros();
    if bits == 0 { 0 } else { u32::try_from(h >> (64 - bits)).unwrap_or(0) }
}

/// A reader's handle on one published generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// Version it was read at.
    pub version: u64,
    /// Generation.
    pub generation: u64,
    /// Key shards.
    pub key_shards: u32,
    /// Revocation shards.
    pub rev_shards: u32,
}

impl View {
    /// Whether anything is published.
    pub fn is_empty(&self) -> bool {
        self.key_shards == 0
    }

    /// The key of `kind` with this digest, if held. The digest is compared
    /// in constant time.
    pub fn key(
        &self,
        store: &dyn CounterStore,
        kind: KeyKindTag,
        digest: &ApiKeyDigest,
    ) -> Result<Option<KeyEntry>, StoreError> {
        if self.is_empty() {
            return Ok(None);
        }
        let (bytes, _) = store.get(&key_shard(self.generation, key_shard_of(digest, self.key_shards)))?;
        let bytes = bytes.unwrap_or_default();
        let found = records::records(&bytes)
            .find(|r| records::key_digest(r).is_some_and(|d| d.ct_eq(digest)))
            .and_then(records::read_key);
        Ok(found.filter(|(k, _)| *k == kind).map(|(_, entry)| entry))
    }

    /// The revocation of `kind` for `id`, if held: `(until, not_before)`.
    pub fn revocation(&self, store: &dyn CounterStore, kind: u8, id: &str) -> Result<Option<(u64, u64)>, StoreError> {
        if self.rev_shards == 0 {
            return Ok(None);
        }
        let (bytes, _) = store.get(&rev_shard(self.generation, rev_shard_of(kind, id, self.rev_shards)))?;
        let bytes = bytes.unwrap_or_default();
        Ok(records::records(&bytes)
            .filter_map(records::read_revocation)
            .find(|r: &StoredRevocation<'_>| r.kind == kind && r.id == id)
            .map(|r| (r.until, r.not_before)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_functions_stay_in_range_and_keys_fill_shards_in_digest_order() {
        assert_eq!(shards_for(0), MIN_SHARDS);
        assert_eq!(shards_for(1_000_000), 65_536);
        assert_eq!(shards_for(u64::MAX), MAX_SHARDS);
        let mut last = 0;
        for first in [0u8, 1, 0x7f, 0x80, 0xfe, 0xff] {
            let d = ApiKeyDigest::from_bytes([first; 32]);
            let s = key_shard_of(&d, 256);
            assert!(s < 256 && s >= last);
            last = s;
        }
        for n in [1u32, 16, 1024] {
            assert!(rev_shard_of(0, "jti-1", n) < n);
        }
    }
}
