//! Where credit state lives in the process-wide store (Envoy shared data):
//!
//! - `mg:cr:v1:b:<kind>:<id>` — the synced balance: `version u64 · balance
//!   i64` (little-endian), written by the sync publisher only, never moved
//!   back to an older version.
//! - `mg:cr:v1:u:<kind>:<id>` — the usage counter: `unsent i64 · inflight
//!   i64 · batch u64 · listed u8`. Created (empty) by the publisher before
//!   the balance, because the proxy-wasm ABI has no insert-if-absent (a CAS
//!   of 0 overwrites); requests only ever compare-and-swap it.
//! - `mg:cr:v1:d:<shard>` — accounts with unsent usage (`kind:id` lines),
//!   in [`DIRTY_SHARDS`] shards so that a first use rewrites a short list.
//! - `mg:cr:v1:st` — the report in flight: `seq u64 · acked u64` (the
//!   version it was applied at, 0 while unacknowledged). Read by requests.
//! - `mg:cr:v1:batch` — that report's items (JSON), read by the flusher only.

use crate::ratelimit::table::{CounterStore, MAX_CAS_ATTEMPTS, StoreError};
use meshgate_wire::credits::{AccountKind, CreditState};

/// Shards of the dirty list.
pub const DIRTY_SHARDS: u32 = 16;
/// Key of the report status.
pub const STATUS_KEY: &str = "mg:cr:v1:st";
/// Key of the report items.
pub const BATCH_KEY: &str = "mg:cr:v1:batch";
/// Key of the process's report-id nonce.
pub const NONCE_KEY: &str = "mg:cr:v1:nonce";
/// Longest account id accepted from the feed.
pub const MAX_ID_BYTES: usize = 256;

/// A credit account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Account {
    /// Kind.
    pub kind: AccountKind,
    /// User, app or key id.
    pub id: String,
}

impl Account {
    /// `kind:id`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.id)
    }

    /// Parses `kind:id`.
    pub fn parse(name: &str) -> Option<Self> {
        let (kind, id) = name.split_once(':')?;
        Some(Self { kind: AccountKind::parse(kind)?, id: id.to_owned() }).filter(|a| valid_id(&a.id))
    }
}

/// Whether an id can name an account (printable, no separators).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A synced balance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    /// Feed version it was written at.
    pub version: u64,
    /// Credits left at that version.
    pub balance: i64,
}

/// An account's local usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Counted, not yet in a report.
    pub unsent: i64,
    /// In report `batch`.
    pub inflight: i64,
    /// The report `inflight` belongs to.
    pub batch: u64,
    /// Listed in the dirty list.
    pub listed: bool,
}

/// The report in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Sequence number of the newest report.
    pub seq: u64,
    /// Version it was applied at; 0 until acknowledged.
    pub acked: u64,
}

impl Status {
    /// Whether in-flight usage of report `batch` is included in a synced
    /// state at version `synced` (reports are finished in order, so an
    /// older report's leftovers are).
    pub fn reflects(&self, batch: u64, synced: u64) -> bool {
        batch < self.seq || (batch == self.seq && self.acked != 0 && self.acked <= synced)
    }
}

fn word(bytes: &[u8], i: usize) -> u64 {
    bytes.get(i * 8..i * 8 + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_le_bytes)
}

fn signed(bytes: &[u8], i: usize) -> i64 {
    i64::from_le_bytes(word(bytes, i).to_le_bytes())
}

/// Key of an account's balance.
pub fn balance_key(account: &Account) -> String {
    format!("mg:cr:v1:b:{}", account.name())
}

/// Key of an account's usage counter.
pub fn usage_key(account: &Account) -> String {
    format!("mg:cr:v1:u:{}", account.name())
}

/// Key of a dirty-list shard.
pub fn dirty_key(shard: u32) -> String {
    format!("mg:cr:v1:d:{shard}")
}

fn dirty_shard(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % DIRTY_SHARDS
}

/// The synced balance, if the account exists.
pub fn read_balance(store: &dyn CounterStore, account: &Account) -> Result<Option<Balance>, StoreError> {
    let (bytes, _) = store.get(&balance_key(account))?;
    Ok(bytes.filter(|b| b.len() >= 16).map(|b| Balance { version: word(&b, 0), balance: signed(&b, 1) }))
}

/// The usage counter and its CAS version (`(default, 0)` when absent).
pub fn read_usage(store: &dyn CounterStore, account: &Account) -> Result<(Usage, u32), StoreError> {
    let (bytes, cas) = store.get(&usage_key(account))?;
    let Some(b) = bytes else { return Ok((Usage::default(), 0)) };
    let usage =
        Usage { unsent: signed(&b, 0), inflight: signed(&b, 1), batch: word(&b, 2), listed: b.get(24) == Some(&1) };
    Ok((usage, cas))
}

/// Writes the usage counter if unchanged since `cas`.
pub fn write_usage(store: &dyn CounterStore, account: &Account, usage: &Usage, cas: u32) -> Result<(), StoreError> {
    let mut out = Vec::with_capacity(25);
    out.extend_from_slice(&usage.unsent.to_le_bytes());
    out.extend_from_slice(&usage.inflight.to_le_bytes());
    out.extend_from_slice(&usage.batch.to_le_bytes());
    out.push(u8::from(usage.listed));
    store.set(&usage_key(account), &out, cas)
}

/// The report status (zeros when none was ever sent).
pub fn read_status(store: &dyn CounterStore) -> Result<Status, StoreError> {
    Ok(read_status_cas(store)?.0)
}

/// The report status and its CAS version.
pub fn read_status_cas(store: &dyn CounterStore) -> Result<(Status, u32), StoreError> {
    let (bytes, cas) = store.get(STATUS_KEY)?;
    let b = bytes.unwrap_or_default();
    Ok((Status { seq: word(&b, 0), acked: word(&b, 1) }, cas))
}

/// Writes the report status if unchanged since `cas`.
pub fn write_status(store: &dyn CounterStore, status: Status, cas: u32) -> Result<(), StoreError> {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&status.seq.to_le_bytes());
    out[8..].copy_from_slice(&status.acked.to_le_bytes());
    store.set(STATUS_KEY, &out, cas)
}

/// Creates the fixed keys that several VMs compare-and-swap (at configure
/// time, like the rate-limit slots). Existing keys are left alone.
pub fn init(store: &dyn CounterStore) -> Result<(), StoreError> {
    let keys = (0..DIRTY_SHARDS).map(dirty_key).chain([STATUS_KEY.to_owned(), BATCH_KEY.to_owned()]);
    for key in keys {
        if store.get(&key)?.0.is_none() {
            store.set(&key, &[], 0)?;
        }
    }
    Ok(())
}

/// Lists an account as having unsent usage.
pub fn mark_dirty(store: &dyn CounterStore, account: &Account) -> Result<(), StoreError> {
    let name = account.name();
    let key = dirty_key(dirty_shard(&name));
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (bytes, cas) = store.get(&key)?;
        let mut list = bytes.unwrap_or_default();
        if list.split(|b| *b == b'\n').any(|line| line == name.as_bytes()) {
            return Ok(());
        }
        list.extend_from_slice(name.as_bytes());
        list.push(b'\n');
        match store.set(&key, &list, cas) {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contention)
}

/// Takes up to `max` accounts off the dirty list (the rest stay listed).
pub fn take_dirty(store: &dyn CounterStore, max: usize) -> Result<Vec<Account>, StoreError> {
    let mut taken = Vec::new();
    for shard in 0..DIRTY_SHARDS {
        let key = dirty_key(shard);
        let mut done = false;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (bytes, cas) = store.get(&key)?;
            let list = bytes.unwrap_or_default();
            let lines: Vec<&[u8]> = list.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
            let room = max.saturating_sub(taken.len());
            let (now, later) = lines.split_at(room.min(lines.len()));
            let rest: Vec<u8> = later.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
            if now.is_empty() {
                done = true;
                break;
            }
            match store.set(&key, &rest, cas) {
                Ok(()) => {
                    taken.extend(now.iter().filter_map(|l| std::str::from_utf8(l).ok()).filter_map(Account::parse));
                    done = true;
                    break;
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        if !done {
            return Err(StoreError::Contention);
        }
        if taken.len() >= max {
            break;
        }
    }
    Ok(taken)
}

/// Why pushed credit state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credits[{index}]: {message}")]
pub struct InvalidCredit {
    /// Position in the response.
    pub index: usize,
    /// What is wrong.
    pub message: &'static str,
}

/// Checks pushed credit state before anything is written.
pub fn check(credits: &[CreditState]) -> Result<(), InvalidCredit> {
    for (index, c) in credits.iter().enumerate() {
        if !valid_id(&c.id) {
            return Err(InvalidCredit { index, message: "id must be 1-256 printable characters" });
        }
    }
    Ok(())
}

/// Writes pushed balances at `version` (each only forward), creating each
/// account's usage counter first. Call before the version is published, so
/// that a reader at that version sees balances at least that new.
pub fn publish(store: &dyn CounterStore, credits: &[CreditState], version: u64) -> Result<(), StoreError> {
    for c in credits {
        let account = Account { kind: c.kind, id: c.id.clone() };
        let (usage, cas) = read_usage(store, &account)?;
        if cas == 0 {
            write_usage(store, &account, &usage, 0)?;
        }
        let key = balance_key(&account);
        let mut written = false;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (bytes, cas) = store.get(&key)?;
            let held = bytes.filter(|b| b.len() >= 16).map_or(0, |b| word(&b, 0));
            if held >= version && cas != 0 {
                written = true;
                break;
            }
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&version.to_le_bytes());
            out[8..].copy_from_slice(&c.balance.to_le_bytes());
            match store.set(&key, &out, cas) {
                Ok(()) => {
                    written = true;
                    break;
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        if !written {
            return Err(StoreError::Contention);
        }
    }
    Ok(())
}
