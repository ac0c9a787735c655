//! What the forward-auth endpoint checks in memory: every live revocation,
//! and the API keys recently presented (hits and misses).
//!
//! Freshness comes from the sync feed's change watch
//! ([`crate::sync::Notifier::generation`]): every write path that revokes or
//! changes a key signals it right after its commit (and on PostgreSQL other
//! replicas' commits arrive through `LISTEN`), so a request that starts after
//! a revocation call has answered sees a new generation and first reloads.
//! The reload is a delta: revocation rows stamped after the last version
//! read, in one read transaction with the change counter (versions become
//! visible in commit order, see [`crate::db::bump`]). Any change empties the
//! API key cache. Without a signal the state is still re-read every
//! [`TTL_SECS`] seconds, as a safety net for lost notifications.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use meshgate_core::apikey::ApiKeyDigest;
use sqlx::Row;

use crate::apikeys::ApiKey;
use crate::db::Backend;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::tokens::TokenIdentity;

/// Longest time a loaded state is trusted without a change signal, in
/// seconds of the state's clock.
pub const TTL_SECS: i64 = 5;
/// Most API keys remembered (hits and misses); the cache is emptied when full.
const MAX_KEYS: usize = 100_000;
/// Most verified tokens remembered; the cache is emptied when full.
const MAX_TOKENS: usize = 100_000;

/// Live revocations by kind, each with its `until` (and `not_before` for
/// users).
#[derive(Debug, Default)]
struct Revoked {
    /// Generation of the change watch the state was loaded at.
    generation: Option<u64>,
    /// When it was loaded (`AppState::now`).
    loaded_at: Option<i64>,
    /// Change version read with the rows.
    version: i64,
    jti: HashMap<String, i64>,
    sid: HashMap<String, i64>,
    /// User id → (not_before, until).
    sub: HashMap<String, (Option<i64>, i64)>,
    key: HashMap<String, i64>,
}

impl Revoked {
    /// Loaded at `generation` under [`TTL_SECS`] ago (a load stamped
    /// after `now`, the clock having stepped back, is not current).
    fn current(&self, generation: u64, now: i64) -> bool {
        self.generation == Some(generation) && self.loaded_at.is_some_and(|t| (0..TTL_SECS).contains(&(now - t)))
    }
}

/// A key that verified, as remembered.
#[derive(Debug)]
pub struct CachedKey {
    /// Its metadata when it verified.
    pub meta: ApiKey,
    /// Its digest, compared again in constant time on every hit.
    pub digest: ApiKeyDigest,
    /// Last `last_used_at` written (coarse, like `apikeys::store`).
    pub last_used: AtomicI64,
}

/// The forward-auth cache (one per process, in [`AppState`]).
#[derive(Debug, Default)]
pub struct Cache {
    revoked: RwLock<Revoked>,
    /// Digest → the key, or `None` for a well-formed key that did not verify.
    keys: RwLock<HashMap<[u8; 32], Option<Arc<CachedKey>>>>,
    /// SHA-256 of a token → what its verification found (signature, `typ`,
    /// `iss`, `aud`), so an asymmetric signature is checked once per token.
    /// Revocations and expiry are still checked on every use.
    tokens: RwLock<HashMap<[u8; 32], Arc<TokenIdentity>>>,
    /// One reload at a time.
    reload: tokio::sync::Mutex<()>,
}

impl Cache {
    /// Makes sure the state reflects every change signalled so far.
    pub async fn refresh(&self, state: &AppState) -> ApiResult<()> {
        if self.revoked.read().is_ok_and(|r| r.current(state.sync.generation(), state.now())) {
            return Ok(());
        }
        let _one = self.reload.lock().await;
        // Read before loading: a change signalled during the load makes the
        // next request reload again.
        let generation = state.sync.generation();
        let since = match self.revoked.read() {
            Ok(r) if r.current(generation, state.now()) => return Ok(()),
            Ok(r) => r.generation.map(|_| r.version),
            Err(_) => None,
        };
        let delta = load(state, since).await?;
        let now = state.now();
        if let Ok(mut r) = self.revoked.write() {
            if since.is_none() {
                *r = Revoked::default();
            }
            let changed = since != Some(delta.version);
            for (kind, value, not_before, until) in delta.rows {
                match kind.as_str() {
                    "jti" => r.jti.insert(value, until).map(|_| ()),
                    "sid" => r.sid.insert(value, until).map(|_| ()),
                    "sub" => r.sub.insert(value, (not_before, until)).map(|_| ()),
                    "key" => r.key.insert(value, until).map(|_| ()),
                    _ => None,
                };
            }
            // Expired records are purged from the table too; tokens and keys
            // they covered have expired by then.
            r.jti.retain(|_, until| *until >= now);
            r.sid.retain(|_, until| *until >= now);
            r.sub.retain(|_, (_, until)| *until >= now);
            r.key.retain(|_, until| *until >= now);
            r.version = delta.version;
            r.generation = Some(generation);
            r.loaded_at = Some(now);
            if changed {
                // Keys may have been revoked or signing keys retired.
                if let Ok(mut keys) = self.keys.write() {
                    keys.clear();
                }
                if let Ok(mut tokens) = self.tokens.write() {
                    tokens.clear();
                }
            }
        }
        Ok(())
    }

    /// Whether a revocation covers the token: by `jti`, by session, or by
    /// user not-before (the same rules as `tokens::verify`).
    pub fn token_revoked(&self, id: &TokenIdentity) -> bool {
        let Ok(r) = self.revoked.read() else { return true };
        r.jti.contains_key(&id.jti)
            || r.sid.contains_key(&id.claims.sid)
            || r.sub.get(&id.user_id).is_some_and(|(nb, _)| nb.is_none_or(|nb| id.issued_at < nb))
    }

    /// Whether the key id is revoked.
    pub fn key_revoked(&self, key_id: &str) -> bool {
        self.revoked.read().map_or(true, |r| r.key.contains_key(key_id))
    }

    /// The remembered outcome for `digest`: `Some(Some(key))` verified,
    /// `Some(None)` did not, `None` not seen since the last change.
    pub fn key(&self, digest: &ApiKeyDigest) -> Option<Option<Arc<CachedKey>>> {
        self.keys.read().ok()?.get(digest.as_bytes()).cloned()
    }

    /// Remembers an outcome, unless a change was signalled since
    /// `generation` (it may predate that change).
    pub fn remember(&self, state: &AppState, generation: u64, digest: ApiKeyDigest, key: Option<ApiKey>) {
        let Ok(mut keys) = self.keys.write() else { return };
        if state.sync.generation() != generation {
            return;
        }
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        let entry = key.map(|meta| {
            let last_used = AtomicI64::new(meta.last_used_at.unwrap_or_default().max(state.now()));
            Arc::new(CachedKey { meta, digest, last_used })
        });
        keys.insert(*digest.as_bytes(), entry);
    }

    /// A token verified before, still unexpired at `now`.
    pub fn token(&self, digest: &[u8; 32], now: i64) -> Option<Arc<TokenIdentity>> {
        self.tokens.read().ok()?.get(digest).filter(|t| now < t.expires_at).cloned()
    }

    /// Remembers a verified token, unless a change was signalled since
    /// `generation`.
    pub fn remember_token(&self, state: &AppState, generation: u64, digest: [u8; 32], id: TokenIdentity) {
        let Ok(mut tokens) = self.tokens.write() else { return };
        if state.sync.generation() != generation {
            return;
        }
        if tokens.len() >= MAX_TOKENS {
            tokens.clear();
        }
        tokens.insert(digest, Arc::new(id));
    }
}

impl CachedKey {
    /// Whether `last_used_at` is due for a write (at most once a minute per
    /// key and process); claims the write when it is.
    pub fn claim_last_used(&self, now: i64) -> bool {
        let last = self.last_used.load(Ordering::Relaxed);
        now - last >= 60 && self.last_used.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

struct Delta {
    version: i64,
    /// (kind, value, not_before, until).
    rows: Vec<(String, String, Option<i64>, i64)>,
}

/// Revocation rows stamped after `since` (all live ones when `None`), with
/// the change version, from one consistent read.
async fn load(state: &AppState, since: Option<i64>) -> ApiResult<Delta> {
    let mut tx = match state.db.backend {
        Backend::Sqlite => state.db.pool.begin().await?,
        Backend::Postgres => state.db.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?,
    };
    let version: i64 =
        sqlx::query("SELECT value FROM counters WHERE name = 'change'").fetch_one(&mut *tx).await?.try_get(0)?;
    let mut rows = Vec::new();
    if since != Some(version) {
        // `until + 0`: as in the sync feed, keep SQLite on the version index.
        let found = sqlx::query(
            "SELECT kind, value, not_before, until FROM revocations WHERE version > $1 AND until + 0 >= $2",
        )
        .bind(since.unwrap_or(-1))
        .bind(state.now())
        .fetch_all(&mut *tx)
        .await?;
        for row in found {
            rows.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?));
        }
    }
    tx.commit().await?;
    Ok(Delta { version, rows })
}
