//! Abuse controls per client IP: violations on sensitive routes lead to a
//! lockout, repeated lockouts to a ban. State lives in the same CAS slot
//! table as the limits, so every worker sees the same lockout.

use super::gcra::Gcra;
use super::table::{CounterStore, Entry, SlotTable, StoreError, hash_key};
use meshgate_wire::ratelimit::AbuseConfig;

const US: u64 = 1_000_000;

/// Compiled abuse settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abuse {
    /// Sensitive routes.
    pub routes: Vec<String>,
    /// Routes never blocked.
    pub exempt_routes: Vec<String>,
    /// Per-IP per-route limit on sensitive routes.
    pub limit: u32,
    /// Its window in seconds.
    pub window_secs: u32,
    /// That limit, compiled.
    pub gcra: Gcra,
    violations: u32,
    lockout_us: u64,
    ban_after: u32,
    ban_us: u64,
    table: SlotTable,
}

/// An IP that may not pass right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Seconds until the block ends.
    pub retry_after_secs: u64,
    /// Ban (repeat offender) rather than lockout.
    pub banned: bool,
}

// Entry data: [violations | lockouts << 32, violation window start, blocked until];
// bit 63 of data[2] marks a ban.
const BAN_BIT: u64 = 1 << 63;

fn block_of(e: &Entry, now_us: u64) -> Option<Block> {
    let until = e.data[2] & !BAN_BIT;
    (until > now_us)
        .then(|| Block { retry_after_secs: (until - now_us).div_ceil(US).max(1), banned: e.data[2] & BAN_BIT != 0 })
}

impl Abuse {
    /// Fills defaults: 20 requests / 60 s, 10 violations → 15 min lockout,
    /// 3 lockouts → 24 h ban.
    pub fn compile(cfg: &AbuseConfig) -> Self {
        let limit = cfg.limit.unwrap_or(20).max(1);
        let window_secs = cfg.window_secs.unwrap_or(60).clamp(1, 86_400);
        Self {
            routes: cfg.routes.clone(),
            exempt_routes: cfg.exempt_routes.clone(),
            limit,
            window_secs,
            gcra: Gcra::new(limit, window_secs, limit),
            violations: cfg.violations.unwrap_or(10).max(1),
            lockout_us: u64::from(cfg.lockout_secs.unwrap_or(900).max(1)) * US,
            ban_after: cfg.ban_after_lockouts.unwrap_or(3).max(1),
            ban_us: u64::from(cfg.ban_secs.unwrap_or(86_400).max(1)) * US,
            table: SlotTable::new("mg:abuse:".to_owned(), 16_384),
        }
    }

    /// The state table (initialized at configure time).
    pub fn table(&self) -> &SlotTable {
        &self.table
    }

    /// Whether `ip` is locked out or banned now.
    pub fn blocked(&self, store: &dyn CounterStore, ip: &str, now_us: u64) -> Result<Option<Block>, StoreError> {
        self.table.update(store, hash_key(&["abuse", ip]), now_us, |e| (None, block_of(&e, now_us)))
    }

    /// Records one violation by `ip`; returns the block it triggered, if any.
    pub fn record_violation(
        &self,
        store: &dyn CounterStore,
        ip: &str,
        now_us: u64,
    ) -> Result<Option<Block>, StoreError> {
        self.table.update(store, hash_key(&["abuse", ip]), now_us, |mut e| {
            if let Some(block) = block_of(&e, now_us) {
                return (None, Some(block));
            }
            let mut violations = (e.data[0] & 0xffff_ffff) as u32;
            let mut lockouts = (e.data[0] >> 32) as u32;
            if now_us.saturating_sub(e.data[1]) > self.lockout_us {
                violations = 0;
                e.data[1] = now_us;
            }
            violations += 1;
            if violations >= self.violations {
                violations = 0;
                lockouts += 1;
                e.data[2] = if lockouts >= self.ban_after {
                    (now_us + self.ban_us) | BAN_BIT
                } else {
                    now_us + self.lockout_us
                };
            }
            e.data[0] = u64::from(violations) | (u64::from(lockouts) << 32);
            // Remember offences for a ban period so repeat offenders add up.
            e.expires_us = (e.data[2] & !BAN_BIT).max(now_us + self.ban_us);
            let block = block_of(&e, now_us);
            (Some(e), block)
        })
    }
}
