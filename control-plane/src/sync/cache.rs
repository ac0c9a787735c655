//! The last few encoded answers, shared by every poll of one process.
//!
//! When a change commits, every held poll wakes at once, and most hold the
//! same `since`: the first builds the delta, the others wait for it (one
//! build per kind at a time) and reuse the bytes. Likewise many filters
//! starting together share one snapshot. Entries are keyed by the requested
//! `since` (none: snapshot) and the version they bring a filter to; they go
//! stale only through the clock (an expired key or revocation still listed,
//! which filters check themselves), so they live at most [`TTL_SECS`] of
//! the state's clock (the caller passes `now`).

use std::sync::Mutex;

use meshgate_wire::sync::SyncKind;

use super::feed::Built;

/// How long an entry is served, in seconds.
pub const TTL_SECS: i64 = 10;
/// Entries kept (at most one of them a snapshot).
const CAPACITY: usize = 8;

/// Requested `since` (`None`: a snapshot was asked for), version, and the
/// page size of a paged snapshot's first page.
pub type CacheKey = (Option<u64>, u64, Option<u32>);

/// The cache and its single-flight locks.
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<Vec<(CacheKey, i64, Built)>>,
    /// Held while building a snapshot.
    pub snapshot_build: tokio::sync::Mutex<()>,
    /// Held while building a delta.
    pub delta_build: tokio::sync::Mutex<()>,
}

impl Cache {
    /// A fresh entry for `key` at `now` (unix seconds).
    pub fn get(&self, key: CacheKey, now: i64) -> Option<Built> {
        let entries = self.entries.lock().ok()?;
        entries.iter().find(|(k, at, _)| *k == key && fresh(*at, now)).map(|(_, _, b)| b.clone())
    }

    /// Stores `built` under `key`, dropping expired entries, older snapshots
    /// and, beyond the capacity, the oldest.
    pub fn put(&self, key: CacheKey, built: Built, now: i64) {
        let Ok(mut entries) = self.entries.lock() else { return };
        // One snapshot at most: they can be large.
        let snapshot = built.kind == SyncKind::Snapshot;
        entries.retain(|(k, at, b)| fresh(*at, now) && *k != key && !(snapshot && b.kind == SyncKind::Snapshot));
        if entries.len() >= CAPACITY {
            entries.remove(0);
        }
        entries.push((key, now, built));
    }
}

/// Stamped `at`, still served at `now` (a stamp ahead of `now`, the clock
/// having stepped back, is not).
fn fresh(at: i64, now: i64) -> bool {
    (0..TTL_SECS).contains(&(now - at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(kind: SyncKind, version: u64) -> Built {
        Built { kind, version, body: axum::body::Bytes::new() }
    }

    #[test]
    fn entries_live_ttl_seconds_of_the_callers_clock() {
        let cache = Cache::default();
        let key = (Some(3), 4, None);
        cache.put(key, built(SyncKind::Delta, 4), 1_000);
        assert!(cache.get(key, 1_000).is_some());
        assert!(cache.get(key, 1_000 + TTL_SECS - 1).is_some());
        assert!(cache.get(key, 1_000 + TTL_SECS).is_none(), "expired");
        assert!(cache.get(key, 999).is_none(), "a clock that stepped back does not extend an entry");
        assert!(cache.get((Some(2), 4, None), 1_000).is_none(), "another key");
    }
}
