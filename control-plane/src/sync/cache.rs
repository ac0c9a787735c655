//! The last few encoded answers, shared by every poll of one process.
//!
//! When a change commits, every held poll wakes at once, and most hold the
//! same `since`: the first builds the delta, the others wait for it (one
//! build per kind at a time) and reuse the bytes. Likewise many filters
//! starting together share one snapshot. Entries are keyed by the requested
//! `since` (none: snapshot) and the version they bring a filter to; they go
//! stale only through the clock (an expired key or revocation still listed,
//! which filters check themselves), so they live at most [`TTL`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshgate_wire::sync::SyncKind;

use super::feed::Built;

/// How long an entry is served.
pub const TTL: Duration = Duration::from_secs(10);
/// Entries kept (at most one of them a snapshot).
const CAPACITY: usize = 8;

/// Requested `since` (`None`: a snapshot was asked for), version, and the
/// page size of a paged snapshot's first page.
pub type CacheKey = (Option<u64>, u64, Option<u32>);

/// The cache and its single-flight locks.
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<Vec<(CacheKey, Instant, Built)>>,
    /// Held while building a snapshot.
    pub snapshot_build: tokio::sync::Mutex<()>,
    /// Held while building a delta.
    pub delta_build: tokio::sync::Mutex<()>,
}

impl Cache {
    /// A fresh entry for `key`.
    pub fn get(&self, key: CacheKey) -> Option<Built> {
        let entries = self.entries.lock().ok()?;
        entries.iter().find(|(k, at, _)| *k == key && at.elapsed() < TTL).map(|(_, _, b)| b.clone())
    }

    /// Stores `built` under `key`, dropping expired entries, older snapshots
    /// and, beyond the capacity, the oldest.
    pub fn put(&self, key: CacheKey, built: Built) {
        let Ok(mut entries) = self.entries.lock() else { return };
        // One snapshot at most: they can be large.
        let snapshot = built.kind == SyncKind::Snapshot;
        entries.retain(|(k, at, b)| at.elapsed() < TTL && *k != key && !(snapshot && b.kind == SyncKind::Snapshot));
        if entries.len() >= CAPACITY {
            entries.remove(0);
        }
        entries.push((key, Instant::now(), built));
    }
}
