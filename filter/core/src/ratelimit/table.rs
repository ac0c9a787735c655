//! Counters in a host key-value store with compare-and-swap: proxy-wasm
//! shared data in Envoy (shared by every worker), a `RefCell` map in tests.
//!
//! Memory is bounded without a small cardinality cap: a table is a fixed
//! number of slots (keys `<prefix><slot>`), each holding up to
//! [`BUCKET`] entries of 40 bytes. Entries carry their own expiry; an
//! expired entry is free, and when a bucket is full of live entries the one
//! expiring soonest is evicted. Slots are created at configure time
//! ([`SlotTable::init`]) because the proxy-wasm 0.2.1 ABI has no
//! insert-if-absent: a CAS of 0 on an existing key overwrites it.

use std::cell::RefCell;
use std::collections::HashMap;

/// Entries per slot.
pub const BUCKET: usize = 4;
const ENTRY_BYTES: usize = 40;
/// CAS attempts before giving up on a hot slot.
pub const MAX_CAS_ATTEMPTS: u32 = 32;

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the value since it was read.
    #[error("compare-and-swap conflict")]
    Conflict,
    /// The host refused or failed the call.
    #[error("store unavailable")]
    Unavailable,
    /// [`MAX_CAS_ATTEMPTS`] conflicts in a row.
    #[error("store contention")]
    Contention,
}

/// A key-value store with compare-and-swap versions.
pub trait CounterStore {
    /// The value and its version; `(None, 0)` when absent.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError>;
    /// Stores `value` if the version is still `cas` (0: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// An in-memory store with the same CAS semantics as Envoy's shared data.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next: RefCell<u32>,
}

impl CounterStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        Ok(self.map.borrow().get(key).map_or((None, 0), |(v, c)| (Some(v.clone()), *c)))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut map = self.map.borrow_mut();
        if let Some((_, current)) = map.get(key)
            && cas != 0
            && cas != *current
        {
            return Err(StoreError::Conflict);
        }
        let mut next = self.next.borrow_mut();
        *next = next.wrapping_add(1).max(1);
        map.insert(key.to_owned(), (value.to_vec(), *next));
        Ok(())
    }
}

/// One tracked key: its hash, when it stops mattering, and three words of
/// state whose meaning belongs to the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    /// 64-bit hash of the counter key.
    pub hash: u64,
    /// Microseconds since the epoch after which the entry is free.
    pub expires_us: u64,
    /// Caller state.
    pub data: [u64; 3],
}

fn decode(bytes: &[u8]) -> Vec<Entry> {
    bytes
        .chunks_exact(ENTRY_BYTES)
        .take(BUCKET)
        .map(|c| {
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c.get(i * 8..i * 8 + 8).unwrap_or(&[0; 8]));
                u64::from_le_bytes(w)
            };
            Entry { hash: word(0), expires_us: word(1), data: [word(2), word(3), word(4)] }
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        for w in [e.hash, e.expires_us, e.data[0], e.data[1], e.data[2]] {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// A fixed set of slots under one key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    prefix: String,
    slots: u32,
}

impl SlotTable {
    /// A table of `slots` slots (≥ 1) under `prefix`.
    pub fn new(prefix: String, slots: u32) -> Self {
        Self { prefix, slots: slots.max(1) }
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    fn key(&self, hash: u64) -> String {
        format!("{}{}", self.prefix, hash % u64::from(self.slots))
    }

    /// Creates every absent slot, empty. Existing slots are left alone.
    pub fn init(&self, store: &dyn CounterStore) -> Result<(), StoreError> {
        for slot in 0..self.slots {
            let key = format!("{}{slot}", self.prefix);
            if store.get(&key)?.0.is_none() {
                store.set(&key, &[], 0)?;
            }
        }
        Ok(())
    }

    /// Reads the entry for `hash` (a fresh one if absent or expired), lets
    /// `f` compute the new entry and a result, and writes it with CAS,
    /// retrying on conflict. `f` returning `None` skips the write.
    pub fn update<R>(
        &self,
        store: &dyn CounterStore,
        hash: u64,
        now_us: u64,
        mut f: impl FnMut(Entry) -> (Option<Entry>, R),
    ) -> Result<R, StoreError> {
        let key = self.key(hash);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (value, cas) = store.get(&key)?;
            let mut entries = decode(value.as_deref().unwrap_or(&[]));
            entries.retain(|e| e.expires_us > now_us);
            let current = entries.iter().position(|e| e.hash == hash);
            let entry = current.and_then(|i| entries.get(i).copied()).unwrap_or(Entry { hash, ..Entry::default() });
            let (next, result) = f(entry);
            let Some(next) = next else { return Ok(result) };
            match current {
                Some(i) => {
                    if let Some(slot) = entries.get_mut(i) {
                        *slot = next;
                    }
                }
                None if entries.len() < BUCKET => entries.push(next),
                None => {
                    // Full of live entries: evict the one expiring soonest.
                    if let Some(victim) = entries.iter_mut().min_by_key(|e| e.expires_us) {
                        *victim = next;
                    }
                }
            }
            match store.set(&key, &encode(&entries), cas) {
                Ok(()) => return Ok(result),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contention)
    }
}

/// A 64-bit hash of a counter key (first 8 bytes of SHA-256: stable across
/// workers and builds, and not steerable into one slot cheaply).
pub fn hash_key(parts: &[&str]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut w = [0u8; 8];
    w.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(w)
}
