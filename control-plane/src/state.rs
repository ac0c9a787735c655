//! Shared application state: database, settings, master key, clock, signing
//! key cache, login limiter and metrics. Cloned into every handler by `Arc`.

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::limiter::LoginLimiter;
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::db::Db;
use crate::error::ApiResult;
use crate::ops::metrics::Metrics;
use crate::signing::keyring::{self, SigningKey};

/// How long a loaded keyring is trusted before re-reading the table (other
/// replicas may have rotated), in seconds of the state's [`Clock`]: a test
/// that moves the clock sees the cache expire too.
const KEYRING_TTL_SECS: i64 = 5;

/// Wall clock in unix seconds with an adjustable offset, so tests can move
/// time forward instead of sleeping.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    /// Current unix time in seconds.
    pub fn now(&self) -> i64 {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        real + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock forward by `secs` (tests).
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }

    /// Whether something stamped `at` (by [`Clock::now`]) is younger than
    /// `ttl_secs`. A stamp from the future (the wall clock stepped back)
    /// counts as stale, so a cache refetches rather than trusting it longer.
    pub fn fresh(&self, at: i64, ttl_secs: i64) -> bool {
        (0..ttl_secs).contains(&(self.now() - at))
    }
}

/// Everything a handler may need.
#[derive(Debug)]
pub struct Inner {
    /// Storage.
    pub db: Db,
    /// Settings.
    pub config: Config,
    /// Encrypts signing keys at rest.
    pub master: MasterKey,
    /// Time source, shared with the login caches (`Login::clock`).
    pub clock: Arc<Clock>,
    /// Failed-login counters.
    pub limiter: LoginLimiter,
    /// Prometheus counters.
    pub metrics: Metrics,
    /// Wake-ups of held sync feed polls.
    pub sync: crate::sync::Notifier,
    /// Recently built sync feed answers.
    pub sync_cache: crate::sync::Cache,
    /// Revocations and API keys the forward-auth endpoint checks in memory.
    pub forward_auth: crate::forward_auth::Cache,
    /// Login providers, trusted issuers, mailer.
    pub login: crate::login::Login,
    /// Decrypted signing keys and when they were loaded.
    keys: Mutex<Option<(i64, Arc<Vec<SigningKey>>)>>,
}

/// Cheaply clonable handle on [`Inner`].
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state over an open, migrated database.
    pub fn new(config: Config, db: Db, master: MasterKey, mut login: crate::login::Login) -> Self {
        let limiter = LoginLimiter::new(
            config.login_max_failures_per_account,
            config.login_max_failures_per_ip,
            config.login_lockout_secs,
        );
        let clock = Arc::new(Clock::default());
        login.clock = Arc::clone(&clock);
        Self(Arc::new(Inner {
            db,
            config,
            master,
            clock,
            limiter,
            metrics: Metrics::default(),
            sync: crate::sync::Notifier::default(),
            sync_cache: crate::sync::Cache::default(),
            forward_auth: crate::forward_auth::Cache::default(),
            login,
            keys: Mutex::new(None),
        }))
    }

    /// Current unix time.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The signing keys, from cache when fresh.
    pub async fn keyring(&self) -> ApiResult<Arc<Vec<SigningKey>>> {
        if let Ok(guard) = self.keys.lock()
            && let Some((at, keys)) = guard.as_ref()
            && (0..KEYRING_TTL_SECS).contains(&(self.now() - at))
        {
            return Ok(keys.clone());
        }
        self.reload_keyring().await
    }

    /// Re-reads the signing keys (after a rotation, or on an unknown `kid`).
    pub async fn reload_keyring(&self) -> ApiResult<Arc<Vec<SigningKey>>> {
        let now = self.now();
        let keys = Arc::new(keyring::load(&self.db, &self.master, now).await?);
        if let Ok(mut guard) = self.keys.lock() {
            *guard = Some((now, keys.clone()));
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn a_stamp_is_fresh_for_its_ttl_and_never_when_it_is_from_the_future() {
        let clock = Clock::default();
        let at = clock.now();
        assert!(clock.fresh(at, 10));
        clock.advance(9);
        assert!(clock.fresh(at, 10));
        clock.advance(1);
        assert!(!clock.fresh(at, 10), "ten seconds on, a 10 s entry is stale");
        assert!(!clock.fresh(clock.now() + 5, 10), "stamped ahead of now: the clock stepped back");
    }
}
