//! The state pushed by the control plane's sync feed, and the rules for
//! applying it: versions only move forward, a delta applies only on top of
//! the version it was computed from, and a response is taken whole or not
//! at all (every record is validated before anything is written).
//!
//! The state is not held by any one VM: the polling VM (the *publisher*)
//! writes it into the process-wide store ([`layout`]: a meta record plus
//! sharded binary [`records`]), and every VM's engine looks records up
//! there per request. One copy per Envoy process however many workers, and
//! the cost of a lookup does not depend on how many keys there are.
//!
//! | module | what it holds |
//! |---|---|
//! | [`records`] | binary key and revocation records |
//! | [`layout`] | meta, shard names and hashing, the reader's [`layout::View`] |
//! | (this) | [`Publisher`]: feed responses → store; [`engine_for`]: meta → engine |

pub mod layout;
pub mod records;

use crate::config::{CompiledConfig, ConfigError};
use crate::engine::Engine;
use crate::jwk;
use crate::jwt::VerifyKey;
use crate::keystore::{KeyEntry, KeyKindTag};
use crate::ratelimit::table::{CounterStore, StoreError};
use crate::token_cache::VerifiedCache;
use layout::{Meta, Retired};
use meshgate_wire::sync::{Ban, Revocation, RevocationKind, SyncKind, SyncResponse};
use records::StoredRevocation;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// How long a replaced generation stays readable (a reader that looked at
/// the meta just before the switch finishes its lookup in it).
pub const RETIRE_AFTER_MS: u64 = 5_000;

/// Why a feed response was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Not newer than what is held (duplicate or out of order): ignored.
    #[error("version {got} is not newer than {have}")]
    Stale {
        /// Version held.
        have: u64,
        /// Version received.
        got: u64,
    },
    /// A delta computed from another version than the one held.
    #[error("delta from {since:?} does not apply on top of {have}")]
    BaseMismatch {
        /// Version held.
        have: u64,
        /// The delta's base.
        since: Option<u64>,
    },
    /// Malformed JSON, or a record that does not validate.
    #[error("invalid sync response: {0}")]
    Invalid(String),
    /// The store failed or another publisher wrote first; nothing newer was
    /// published by this response (ask again from what is published).
    #[error("sync store: {0}")]
    Store(StoreError),
}

impl From<ConfigError> for SyncError {
    fn from(e: ConfigError) -> Self {
        Self::Invalid(format!("{}: {}", e.field, e.message))
    }
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<records::TooLarge> for SyncError {
    fn from(e: records::TooLarge) -> Self {
        Self::Invalid(e.0.to_owned())
    }
}

/// What to ask the feed for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Changes since the published version (0: a snapshot).
    Since(u64),
    /// The next page of the snapshot being received.
    Page(String),
}

/// What an applied response did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A new version is published.
    Published(u64),
    /// A snapshot page was stored; more pages follow.
    Page,
}

/// A response, validated and encoded, before anything is written.
struct Checked {
    response: SyncResponse,
    /// Encoded key records by digest (bytes include the length prefix).
    keys: Vec<(crate::apikey::ApiKeyDigest, Vec<u8>)>,
    /// Encoded revocations: (kind byte, id, record).
    revocations: Vec<(u8, String, Vec<u8>)>,
    /// Digests removed.
    removed: Vec<crate::apikey::ApiKeyDigest>,
}

fn check(response: SyncResponse, now: u64) -> Result<Checked, SyncError> {
    if response.kind == SyncKind::Delta && response.since.is_none() {
        return Err(SyncError::Invalid("a delta needs since".into()));
    }
    for (i, key) in response.signing_keys.iter().enumerate() {
        let kid = key.jwk.kid.as_deref().ok_or_else(|| SyncError::Invalid("a signing key has no kid".into()))?;
        jwk::compile(&key.jwk, &format!("signing_keys[{i}] ({kid})"))?;
    }
    let mut keys = Vec::new();
    let tables = [
        (KeyKindTag::Api, &response.api_keys, "api_keys"),
        (KeyKindTag::Service, &response.service_keys, "service_keys"),
        (KeyKindTag::Admin, &response.admin_keys, "admin_keys"),
    ];
    for (kind, list, name) in tables {
        for (i, record) in list.iter().enumerate() {
            // Millions of records per snapshot: no copy, no field name
            // formatted unless the record is invalid.
            let (digest, rate_limit) = KeyEntry::validate(record)
                .map_err(|(suffix, message)| ConfigError::new(format!("{name}[{i}]{suffix}"), message))?;
            let mut bytes = Vec::with_capacity(96);
            records::write_key_record(&mut bytes, kind, &digest, rate_limit, record)?;
            keys.push((digest, bytes));
        }
    }
    let mut revocations = Vec::with_capacity(response.revocations.len());
    for (i, r) in response.revocations.iter().enumerate() {
        if r.kind == RevocationKind::User && r.not_before.is_none() {
            return Err(SyncError::Invalid(format!("revocations[{i}]: user revocation of {} has no not_before", r.id)));
        }
        if r.until < now {
            // Past its use: whatever it revoked has expired on its own.
            continue;
        }
        let stored = stored(r);
        let mut bytes = Vec::with_capacity(32 + r.id.len());
        records::write_revocation(&mut bytes, &stored)?;
        revocations.push((stored.kind, r.id.clone(), bytes));
    }
    let removed = response
        .removed_keys
        .iter()
        .enumerate()
        .map(|(i, hex)| {
            crate::apikey::ApiKeyDigest::from_hex(hex)
                .ok_or_else(|| SyncError::Invalid(format!("removed_keys[{i}]: must be 64 hex characters")))
        })
        .collect::<Result<_, _>>()?;
    if response.kind == SyncKind::Delta && response.next.is_some() {
        return Err(SyncError::Invalid("a delta cannot have a next page".into()));
    }
    Ok(Checked { response, keys, revocations, removed })
}

fn stored(r: &Revocation) -> StoredRevocation<'_> {
    StoredRevocation {
        kind: records::revocation_byte(r.kind),
        until: r.until,
        not_before: r.not_before.unwrap_or(0),
        id: &r.id,
    }
}

/// Changes to one shard.
#[derive(Default)]
struct ShardEdit {
    /// Records to add or replace, by their identity.
    upserts: Vec<(Identity, Vec<u8>)>,
    /// Identities to drop.
    removals: HashSet<Identity>,
}

/// What identifies a record within its table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Identity {
    Key([u8; 32]),
    Revocation(u8, String),
}

fn identity_of(table: Table, record: &[u8]) -> Option<Identity> {
    match table {
        Table::Keys => records::key_digest(record).map(|d| Identity::Key(*d.as_bytes())),
        Table::Revocations => records::read_revocation(record).map(|r| Identity::Revocation(r.kind, r.id.to_owned())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Keys,
    Revocations,
}

impl Table {
    fn name(self, generation: u64, shard: u32) -> String {
        match self {
            Self::Keys => layout::key_shard(generation, shard),
            Self::Revocations => layout::rev_shard(generation, shard),
        }
    }
}

/// Whether a stored revocation is past its `until`.
fn expired(record: &[u8], now: u64) -> bool {
    records::read_revocation(record).is_some_and(|r| r.until < now)
}

/// Rewrites one shard with `edit` applied (read, merge, compare-and-swap;
/// retried on a race). Returns (records added, records removed).
fn rewrite(
    store: &dyn CounterStore,
    name: &str,
    table: Table,
    edit: &ShardEdit,
    now: u64,
) -> Result<(u64, u64), StoreError> {
    for _ in 0..16 {
        let (bytes, cas) = store.get(name)?;
        let bytes = bytes.unwrap_or_default();
        // A snapshot page mostly fills empty shards: nothing to replace.
        let replaced: HashSet<&Identity> =
            if bytes.is_empty() { HashSet::new() } else { edit.upserts.iter().map(|(id, _)| id).collect() };
        let mut out = Vec::with_capacity(bytes.len() + edit.upserts.iter().map(|(_, r)| r.len()).sum::<usize>());
        let (mut kept, mut before) = (0u64, 0u64);
        for record in records::records(&bytes) {
            before += 1;
            let drop = identity_of(table, record)
                .is_none_or(|id| replaced.contains(&id) || edit.removals.contains(&id))
                || (table == Table::Revocations && expired(record, now));
            if !drop {
                kept += 1;
                push_framed(&mut out, record);
            }
        }
        for (_, record) in &edit.upserts {
            out.extend_from_slice(record);
        }
        let after = kept + edit.upserts.len() as u64;
        match store.set(name, &out, cas) {
            Ok(()) => return Ok((after.saturating_sub(before), before.saturating_sub(after))),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contention)
}

/// Appends a record (as [`records::records`] yields it) with its length.
fn push_framed(out: &mut Vec<u8>, record: &[u8]) {
    // Records came out of a shard with a u16 length: they fit.
    let len = u16::try_from(record.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(record);
}

/// Groups a checked response's records by shard of a generation (moving
/// them out of `checked`).
fn edits(checked: &mut Checked, key_shards: u32, rev_shards: u32) -> [BTreeMap<u32, ShardEdit>; 2] {
    let mut keys: BTreeMap<u32, ShardEdit> = BTreeMap::new();
    for (digest, bytes) in std::mem::take(&mut checked.keys) {
        let edit = keys.entry(layout::key_shard_of(&digest, key_shards)).or_default();
        edit.upserts.push((Identity::Key(*digest.as_bytes()), bytes));
    }
    for digest in &checked.removed {
        keys.entry(layout::key_shard_of(digest, key_shards))
            .or_default()
            .removals
            .insert(Identity::Key(*digest.as_bytes()));
    }
    let mut revs: BTreeMap<u32, ShardEdit> = BTreeMap::new();
    for (kind, id, bytes) in std::mem::take(&mut checked.revocations) {
        let edit = revs.entry(layout::rev_shard_of(kind, &id, rev_shards)).or_default();
        edit.upserts.push((Identity::Revocation(kind, id), bytes));
    }
    [keys, revs]
}

/// Writes the edits into `generation`; returns net (keys, revocations) added.
fn write_edits(
    store: &dyn CounterStore,
    generation: u64,
    edits: &[BTreeMap<u32, ShardEdit>; 2],
    now: u64,
) -> Result<(i64, i64), StoreError> {
    let mut net = [0i64; 2];
    for ((table, shards), net) in [Table::Keys, Table::Revocations].into_iter().zip(edits).zip(&mut net) {
        for (shard, edit) in shards {
            let (added, removed) = rewrite(store, &table.name(generation, *shard), table, edit, now)?;
            *net += i64::try_from(added).unwrap_or(i64::MAX) - i64::try_from(removed).unwrap_or(i64::MAX);
        }
    }
    Ok((net[0], net[1]))
}

fn adjust(count: u64, by: i64) -> u64 {
    count.saturating_add_signed(by)
}

/// Blanks every shard of a generation (the store cannot delete keys; an
/// empty value frees the memory).
fn blank(store: &dyn CounterStore, generation: u64, key_shards: u32, rev_shards: u32) {
    for shard in 0..key_shards {
        let _ = store.set(&layout::key_shard(generation, shard), &[], 0);
    }
    for shard in 0..rev_shards {
        let _ = store.set(&layout::rev_shard(generation, shard), &[], 0);
    }
}

/// Copies a generation into a new one with more shards. Shards are chosen
/// by top bits, so old shard `i` splits into the consecutive new shards
/// `i * f .. (i + 1) * f` (`f = new / old`): read and written one old shard
/// at a time, the copy never holds more than that.
fn regrow(store: &dyn CounterStore, from: &Meta, to: u64, key_shards: u32, rev_shards: u32) -> Result<(), StoreError> {
    for (table, old, new) in
        [(Table::Keys, from.key_shards, key_shards), (Table::Revocations, from.rev_shards, rev_shards)]
    {
        let mut buckets: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for shard in 0..old {
            let (bytes, _) = store.get(&table.name(from.generation, shard))?;
            for record in records::records(&bytes.unwrap_or_default()) {
                let target = match table {
                    Table::Keys => records::key_digest(record).map(|d| layout::key_shard_of(&d, new)),
                    Table::Revocations => {
                        records::read_revocation(record).map(|r| layout::rev_shard_of(r.kind, r.id, new))
                    }
                };
                if let Some(target) = target {
                    push_framed(buckets.entry(target).or_default(), record);
                }
            }
            for (target, bytes) in std::mem::take(&mut buckets) {
                store.set(&table.name(to, target), &bytes, 0)?;
            }
        }
    }
    Ok(())
}

/// A snapshot being received page by page into a generation nobody reads
/// yet.
#[derive(Debug, Clone)]
struct Pending {
    meta: Meta,
}

/// The polling VM's side: applies feed responses to the store. Holds no
/// copy of the state — only a snapshot in progress — so any VM can take
/// over from what is published.
#[derive(Debug)]
pub struct Publisher {
    writer: u64,
    generations: u64,
    pending: Option<Pending>,
    cursor: Option<String>,
    /// When [`Publisher::sweep`] should next read the meta (`None`: no
    /// retired generation is known to wait).
    sweep_at: Option<u64>,
}

impl Publisher {
    /// A publisher for a VM with a process-unique `writer` id (generations
    /// it creates are unique to it).
    pub fn new(writer: u64) -> Self {
        Self { writer, generations: 0, pending: None, cursor: None, sweep_at: Some(0) }
    }

    fn new_generation(&mut self) -> u64 {
        self.generations += 1;
        (self.writer << 24) ^ self.generations
    }

    /// What to ask for next, given the published meta.
    pub fn ask(&self, published: &Meta) -> Ask {
        match (&self.pending, &self.cursor) {
            (Some(_), Some(cursor)) => Ask::Page(cursor.clone()),
            _ => Ask::Since(published.version),
        }
    }

    /// Whether a paged snapshot is being received.
    pub fn receiving(&self) -> bool {
        self.pending.is_some()
    }

    /// Look for a retired generation on the next sweep (this VM just took
    /// over from a publisher that may have left one).
    pub fn recheck_retired(&mut self) {
        self.sweep_at = Some(0);
    }

    /// Forgets a snapshot in progress (its shards are blanked).
    pub fn abandon(&mut self, store: &dyn CounterStore) {
        if let Some(p) = self.pending.take() {
            blank(store, p.meta.generation, p.meta.key_shards, p.meta.rev_shards);
        }
        self.cursor = None;
    }

    /// Parses a response body (nothing is checked or written yet: a poller
    /// can ask for the next page before this one is stored).
    pub fn parse(body: &[u8]) -> Result<SyncResponse, SyncError> {
        serde_json::from_slice(body).map_err(|e| SyncError::Invalid(e.to_string()))
    }

    /// Parses and applies a response body.
    pub fn apply_bytes(&mut self, store: &dyn CounterStore, body: &[u8], now_ms: u64) -> Result<Applied, SyncError> {
        self.apply(store, Self::parse(body)?, now_ms)
    }

    /// Applies a response. On any error the published state is unchanged
    /// (a snapshot in progress may be abandoned).
    pub fn apply(
        &mut self,
        store: &dyn CounterStore,
        response: SyncResponse,
        now_ms: u64,
    ) -> Result<Applied, SyncError> {
        let now = now_ms / 1000;
        let (published, cas) = Meta::read(store)?;
        let mut checked = match check(response, now) {
            Ok(c) => c,
            Err(e) => {
                self.abandon(store);
                return Err(e);
            }
        };
        let response = &checked.response;
        // Credit balances go in before the version is published, so a
        // reader at that version sees balances at least as new (each only
        // moves forward); only from a response that is about to apply.
        let applies = match (&self.pending, response.kind) {
            (Some(_), kind) => kind == SyncKind::Snapshot,
            (None, SyncKind::Snapshot) => response.version > published.version,
            (None, SyncKind::Delta) => {
                response.version > published.version && response.since == Some(published.version)
            }
        };
        if applies && !response.credits.is_empty() {
            if let Err(e) = crate::credits::records::check(&response.credits) {
                self.abandon(store);
                return Err(SyncError::Invalid(e.to_string()));
            }
            crate::credits::records::publish(store, &response.credits, response.version)?;
        }
        if self.pending.is_some() {
            if response.kind != SyncKind::Snapshot {
                self.abandon(store);
                return Err(SyncError::Invalid("expected the next page of a snapshot".into()));
            }
            return self.page(store, &mut checked, now_ms);
        }
        if response.version <= published.version {
            return Err(SyncError::Stale { have: published.version, got: response.version });
        }
        match response.kind {
            SyncKind::Snapshot => {
                let total_keys = response.total_keys.unwrap_or(checked.keys.len() as u64);
                let total_revs = response.total_revocations.unwrap_or(checked.revocations.len() as u64);
                let meta = Meta {
                    version: response.version,
                    generation: self.new_generation(),
                    key_shards: layout::shards_for(total_keys),
                    rev_shards: layout::shards_for(total_revs),
                    keys: 0,
                    revocations: 0,
                    signing_keys: response.signing_keys.clone(),
                    bans: live_bans(&response.bans, now),
                    retired: None,
                };
                self.pending = Some(Pending { meta });
                self.page(store, &mut checked, now_ms)
            }
            SyncKind::Delta if response.since == Some(published.version) => {
                self.delta(store, &mut checked, published, cas, now_ms)
            }
            SyncKind::Delta => Err(SyncError::BaseMismatch { have: published.version, since: response.since }),
        }
    }

    /// Stores one snapshot page; publishes after the last.
    fn page(&mut self, store: &dyn CounterStore, checked: &mut Checked, now_ms: u64) -> Result<Applied, SyncError> {
        let Some(mut pending) = self.pending.take() else {
            return Err(SyncError::Invalid("no snapshot in progress".into()));
        };
        let edits = edits(checked, pending.meta.key_shards, pending.meta.rev_shards);
        match write_edits(store, pending.meta.generation, &edits, now_ms / 1000) {
            Ok((keys, revs)) => {
                pending.meta.keys = adjust(pending.meta.keys, keys);
                pending.meta.revocations = adjust(pending.meta.revocations, revs);
            }
            Err(e) => {
                self.pending = Some(pending);
                self.abandon(store);
                return Err(e.into());
            }
        }
        if let Some(next) = &checked.response.next {
            self.cursor = Some(next.clone());
            self.pending = Some(pending);
            return Ok(Applied::Page);
        }
        self.cursor = None;
        // Switch: only if nothing as new was published meanwhile.
        let (published, cas) = Meta::read(store)?;
        if published.version >= pending.meta.version {
            blank(store, pending.meta.generation, pending.meta.key_shards, pending.meta.rev_shards);
            return Err(SyncError::Stale { have: published.version, got: pending.meta.version });
        }
        let mut meta = pending.meta;
        meta.retired = self.retire(store, &published, now_ms);
        if let Err(e) = meta.write(store, cas) {
            blank(store, meta.generation, meta.key_shards, meta.rev_shards);
            return Err(e.into());
        }
        Ok(Applied::Published(meta.version))
    }

    /// The generation `published` holds, to be blanked later; an older
    /// retired generation still waiting is blanked now.
    fn retire(&mut self, store: &dyn CounterStore, published: &Meta, now_ms: u64) -> Option<Retired> {
        if let Some(old) = published.retired {
            blank(store, old.generation, old.key_shards, old.rev_shards);
        }
        let retired = (published.key_shards > 0).then_some(Retired {
            generation: published.generation,
            key_shards: published.key_shards,
            rev_shards: published.rev_shards,
            after_ms: now_ms + RETIRE_AFTER_MS,
        });
        if let Some(r) = retired {
            self.sweep_at = Some(r.after_ms);
        }
        retired
    }

    fn delta(
        &mut self,
        store: &dyn CounterStore,
        checked: &mut Checked,
        published: Meta,
        cas: u32,
        now_ms: u64,
    ) -> Result<Applied, SyncError> {
        let mut meta = published.clone();
        if meta.key_shards == 0 {
            // Nothing was ever published (a delta from 0 is not sent, but
            // be safe): start an empty generation.
            meta.generation = self.new_generation();
            meta.key_shards = layout::MIN_SHARDS;
            meta.rev_shards = layout::MIN_SHARDS;
        }
        let (keys, revs) =
            write_edits(store, meta.generation, &edits(checked, meta.key_shards, meta.rev_shards), now_ms / 1000)?;
        let response = &checked.response;
        meta.version = response.version;
        meta.keys = adjust(meta.keys, keys);
        meta.revocations = adjust(meta.revocations, revs);
        let removed: HashSet<&str> = response.removed_signing_keys.iter().map(String::as_str).collect();
        let changed: HashSet<&str> = response.signing_keys.iter().filter_map(|k| k.jwk.kid.as_deref()).collect();
        meta.signing_keys
            .retain(|k| k.jwk.kid.as_deref().is_some_and(|kid| !removed.contains(kid) && !changed.contains(kid)));
        meta.signing_keys.extend(response.signing_keys.iter().cloned());
        let mut bans: BTreeMap<String, u64> = meta.bans.iter().map(|b| (b.ip.clone(), b.until)).collect();
        bans.extend(response.bans.iter().map(|b| (b.ip.clone(), b.until)));
        meta.bans =
            live_bans(&bans.into_iter().map(|(ip, until)| Ban { ip, until }).collect::<Vec<_>>(), now_ms / 1000);
        // Regrow when the tables outgrew their shards.
        let grow = |count: u64, shards: u32| {
            if count > u64::from(shards) * layout::MAX_AVERAGE_PER_SHARD { layout::shards_for(count) } else { shards }
        };
        let (key_shards, rev_shards) = (grow(meta.keys, meta.key_shards), grow(meta.revocations, meta.rev_shards));
        if (key_shards, rev_shards) != (meta.key_shards, meta.rev_shards) {
            let generation = self.new_generation();
            regrow(store, &meta, generation, key_shards, rev_shards)?;
            meta.retired = self.retire(store, &published, now_ms);
            (meta.generation, meta.key_shards, meta.rev_shards) = (generation, key_shards, rev_shards);
        }
        meta.write(store, cas)?;
        Ok(Applied::Published(meta.version))
    }

    /// Blanks a retired generation whose time has come (called on every
    /// tick; reads the meta only when a retired generation is known to be
    /// due, or after [`Publisher::recheck_retired`]).
    pub fn sweep(&mut self, store: &dyn CounterStore, now_ms: u64) -> Result<(), StoreError> {
        if self.sweep_at.is_none_or(|at| now_ms < at) {
            return Ok(());
        }
        let (mut meta, cas) = Meta::read(store)?;
        self.sweep_at = meta.retired.map(|r| r.after_ms);
        let Some(old) = meta.retired.filter(|r| r.after_ms <= now_ms) else { return Ok(()) };
        meta.retired = None;
        meta.write(store, cas)?;
        self.sweep_at = None;
        blank(store, old.generation, old.key_shards, old.rev_shards);
        Ok(())
    }
}

fn live_bans(bans: &[Ban], now: u64) -> Vec<Ban> {
    bans.iter().filter(|b| b.until >= now).cloned().collect()
}

/// Builds the engine for the published `meta` on top of the static
/// configuration. Signing keys of issuers the filter does not trust are
/// skipped: their tokens are refused as `unknown-key`. `previous` (the
/// engine this replaces) hands over its verified-token cache when the
/// signing keys did not change: cached tokens are re-checked against the
/// new revocations on their next use. A signing key `previous` already held
/// is taken over rather than compiled again, so its verification tables
/// (built on first use, milliseconds for ES256) survive every revocation
/// push.
pub fn engine_for(config: Arc<CompiledConfig>, meta: &Meta, previous: Option<&Engine>) -> Result<Engine, SyncError> {
    let mut engine = Engine::from_shared(config);
    let previous_keys = previous.filter(|p| Arc::ptr_eq(&p.config, &engine.config));
    for (i, key) in meta.signing_keys.iter().enumerate() {
        let Some(kid) = key.jwk.kid.clone() else { continue };
        // The key `previous` filed under this kid is the last one listed
        // with it (a later duplicate kid replaces an earlier one).
        let held = previous_keys
            .filter(|p| p.signing_keys.iter().rev().find(|k| k.jwk.kid.as_deref() == Some(kid.as_str())) == Some(key))
            .and_then(|p| p.keyring.keys.get(&kid))
            .map(|k| k.material.clone());
        let material = match held {
            Some(material) => material,
            None => jwk::compile(&key.jwk, &format!("signing_keys[{i}]"))?,
        };
        if let Some(issuer) = engine.keyring.issuers.iter().position(|i| i.issuer == key.issuer) {
            engine.keyring.keys.insert(kid, VerifyKey { issuer, material });
        }
    }
    engine.bans = meta.bans.iter().map(|b| (b.ip.clone(), b.until)).collect::<HashMap<_, _>>();
    engine.sync_version = meta.version;
    engine.synced = meta.view();
    engine.signing_keys = meta.signing_keys.clone();
    if let Some(previous) = previous
        && previous.signing_keys == engine.signing_keys
        && Arc::ptr_eq(&previous.config, &engine.config)
    {
        engine.token_cache = VerifiedCache::take(&previous.token_cache);
        engine.key_digests = VerifiedCache::take(&previous.key_digests);
    }
    Ok(engine)
}
