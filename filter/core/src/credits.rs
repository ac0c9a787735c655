//! Credits at the edge: which account pays for a request, whether it may
//! pass, and the process-wide usage counters that are flushed to the
//! control plane. Pure: the store is the host's shared data (CAS), the
//! synced version and the current time come in as values.
//!
//! ## The budget
//!
//! For an account, the filter holds (all in the process-wide store):
//!
//! - the **synced balance** `B`, pushed by the sync feed at some version;
//! - **unsent** usage `U`: counted here, not yet in a report;
//! - **in-flight** usage `F`: in the report being sent (or acknowledged at
//!   version `Va` but not yet reflected in the synced state).
//!
//! `remaining = B − U − F`, where `F` stops counting as soon as the synced
//! version reaches `Va` (the pushed balance then includes it): usage is
//! subtracted exactly once, never twice and never zero times. A request is
//! admitted when `remaining ≥ max(cost, 1)` and its cost is added to `U` in
//! the same compare-and-swap, so every worker of an Envoy process shares one
//! budget: a static cost never overspends within a process.
//!
//! | module | what |
//! |---|---|
//! | [`records`] | shared-data keys and binary records |
//! | [`flush`] | usage reports: build, resend, acknowledge, settle |
//! | (this) | compiled config, admission, response-cost settlement |

pub mod flush;
pub mod records;

use crate::config::ConfigError;
use crate::denial::{Denial, LocalResponse, Reason};
use crate::identity::Identity;
use crate::ratelimit::table::{CounterStore, MAX_CAS_ATTEMPTS, StoreError};
use meshgate_wire::config::ProblemDetails;
use meshgate_wire::credits::{
    AccountKind, CreditsConfig, DEFAULT_COST_HEADER, DEFAULT_FLUSH_INTERVAL_MS, DEFAULT_REPORT_PATH, Unmetered,
};
use records::{Account, Usage};
use std::collections::HashMap;

/// Largest cost a request or a response header may carry.
pub const MAX_COST: u64 = 1_000_000_000;

/// The `credits` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledCredits {
    /// Static cost by route name (metered routes only).
    pub routes: HashMap<String, u64>,
    /// Lower-case response header carrying the real cost.
    pub cost_header: String,
    /// 402 or 429.
    pub exhausted_status: u16,
    /// Flush interval, milliseconds.
    pub flush_interval_ms: u64,
    /// Report path on the control plane.
    pub report_path: String,
    /// Account kinds that pay, in order.
    pub charge: Vec<AccountKind>,
    /// Metered requests without an account.
    pub unmetered: Unmetered,
}

/// Compiles the section; `routes` are the configured route names.
pub fn compile(cfg: &CreditsConfig, routes: &[&str], has_sync: bool) -> Result<CompiledCredits, ConfigError> {
    if !has_sync {
        return Err(ConfigError::new("credits", "needs `sync` (balances come from the feed, usage goes back)"));
    }
    for (name, cost) in &cfg.routes {
        if !routes.contains(&name.as_str()) {
            return Err(ConfigError::new(format!("credits.routes.{name}"), "no route has this name"));
        }
        if *cost > MAX_COST {
            return Err(ConfigError::new(format!("credits.routes.{name}"), "cost must be at most 1000000000"));
        }
    }
    let cost_header = cfg.cost_header.clone().unwrap_or_else(|| DEFAULT_COST_HEADER.to_owned()).to_ascii_lowercase();
    if !crate::identity::is_header_safe_token(&cost_header) || cost_header.starts_with(':') {
        return Err(ConfigError::new("credits.cost_header", "must be a header name"));
    }
    let exhausted_status = cfg.exhausted_status.unwrap_or(402);
    if !matches!(exhausted_status, 402 | 429) {
        return Err(ConfigError::new("credits.exhausted_status", "must be 402 or 429"));
    }
    let flush_interval_ms = cfg.flush_interval_ms.unwrap_or(DEFAULT_FLUSH_INTERVAL_MS);
    if !(200..=60_000).contains(&flush_interval_ms) {
        return Err(ConfigError::new("credits.flush_interval_ms", "must be between 200 and 60000"));
    }
    let report_path = cfg.report_path.clone().unwrap_or_else(|| DEFAULT_REPORT_PATH.to_owned());
    if !report_path.starts_with('/')
        || report_path.contains('?')
        || !crate::identity::is_header_safe_token(&report_path)
    {
        return Err(ConfigError::new("credits.report_path", "must be an absolute path without a query"));
    }
    let charge = cfg.charge.clone().unwrap_or_else(|| vec![AccountKind::Key, AccountKind::User, AccountKind::App]);
    if charge.is_empty() || charge.contains(&AccountKind::Uses) {
        return Err(ConfigError::new("credits.charge", "must list some of key, user, app"));
    }
    Ok(CompiledCredits {
        routes: cfg.routes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        cost_header,
        exhausted_status,
        flush_interval_ms,
        report_path,
        charge,
        unmetered: cfg.unmetered,
    })
}

/// What a request reserved: settled when the response says what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    /// The credit account charged and the static cost reserved.
    pub credits: Option<(Account, u64)>,
    /// The remaining-uses account charged one use.
    pub uses: Option<Account>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The paying account's budget is spent (or it has none).
    Credits,
    /// The key's remaining uses are spent.
    Uses,
    /// The store failed (the caller applies the failure mode).
    Store(StoreError),
}

impl Refusal {
    /// The denial reason (its problem type and metric).
    pub fn reason(self) -> Reason {
        match self {
            Self::Credits => Reason::CreditsExhausted,
            Self::Uses => Reason::UsesExhausted,
            Self::Store(_) => Reason::Unavailable,
        }
    }
}

impl CompiledCredits {
    /// The accounts of `identity` that may pay, in charge order.
    fn candidates(&self, identity: &Identity) -> Vec<Account> {
        self.charge
            .iter()
            .filter_map(|kind| {
                let id = match kind {
                    AccountKind::Key => identity.key_id.clone(),
                    AccountKind::User => Some(identity.subject.clone()).filter(|s| !s.is_empty()),
                    AccountKind::App => identity.app_id.clone(),
                    AccountKind::Uses => None,
                }?;
                Some(Account { kind: *kind, id })
            })
            .collect()
    }

    /// Admits a request on `route` for `identity`, reserving its static cost
    /// (and one use for a remaining-uses key), or refuses it. `synced` is
    /// the version of the synced state the caller's engine reads.
    pub fn admit(
        &self,
        store: &dyn CounterStore,
        synced: u64,
        route: &str,
        identity: Option<&Identity>,
    ) -> Result<Reservation, Refusal> {
        let mut reservation = Reservation::default();
        if let Some(key_id) = identity.and_then(|i| i.key_id.as_deref()) {
            let uses = Account { kind: AccountKind::Uses, id: key_id.to_owned() };
            match reserve(store, &uses, synced, 1).map_err(Refusal::Store)? {
                Reserved::NoAccount => {}
                Reserved::Exhausted => return Err(Refusal::Uses),
                Reserved::Yes => reservation.uses = Some(uses),
            }
        }
        let Some(&cost) = self.routes.get(route) else { return Ok(reservation) };
        let refund = |r: &Reservation| {
            if let Some(uses) = &r.uses {
                let _ = add_unsent(store, uses, -1);
            }
        };
        let candidates = identity.map(|i| self.candidates(i)).unwrap_or_default();
        for account in candidates {
            match reserve(store, &account, synced, cost) {
                Ok(Reserved::NoAccount) => continue,
                Ok(Reserved::Yes) => {
                    reservation.credits = Some((account, cost));
                    return Ok(reservation);
                }
                Ok(Reserved::Exhausted) => {
                    refund(&reservation);
                    return Err(Refusal::Credits);
                }
                Err(e) => {
                    refund(&reservation);
                    return Err(Refusal::Store(e));
                }
            }
        }
        match self.unmetered {
            Unmetered::Allow => Ok(reservation),
            Unmetered::Deny => {
                refund(&reservation);
                Err(Refusal::Credits)
            }
        }
    }

    /// Settles a reservation with the cost the upstream reported (the
    /// header's value; `None`: absent or unreadable, the static cost
    /// stands). Returns the cost charged.
    pub fn settle(
        &self,
        store: &dyn CounterStore,
        reservation: &Reservation,
        reported: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        let Some((account, reserved)) = &reservation.credits else { return Ok(0) };
        let Some(cost) = reported.and_then(parse_cost) else { return Ok(*reserved) };
        let delta = i64::try_from(cost).unwrap_or(i64::MAX) - i64::try_from(*reserved).unwrap_or(i64::MAX);
        if delta != 0 {
            add_unsent(store, account, delta)?;
        }
        Ok(cost)
    }

    /// The local answer for a refusal: problem+json with the configured
    /// status (402 or 429).
    pub fn render(&self, refusal: Refusal, route: &str, realm: &str, details: ProblemDetails) -> LocalResponse {
        let reason = refusal.reason();
        let mut denial = Denial::new(reason);
        denial.route = Some(route.to_owned());
        let mut response = denial.render(realm, details);
        if reason != Reason::Unavailable && response.status != self.exhausted_status {
            response.status = self.exhausted_status;
            if let Ok(serde_json::Value::Object(mut body)) = serde_json::from_str(&response.body) {
                body.insert("status".into(), self.exhausted_status.into());
                response.body = serde_json::Value::Object(body).to_string();
            }
        }
        response
    }
}

/// A cost header's value: a non-negative integer up to [`MAX_COST`].
pub fn parse_cost(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|c| *c <= MAX_COST)
}

enum Reserved {
    NoAccount,
    Exhausted,
    Yes,
}

/// The budget left for `account`: synced balance minus unsent usage minus
/// in-flight usage the synced state does not include yet. `None`: no
/// account.
pub fn remaining(store: &dyn CounterStore, account: &Account, synced: u64) -> Result<Option<i64>, StoreError> {
    let Some(balance) = records::read_balance(store, account)? else { return Ok(None) };
    let (usage, _) = records::read_usage(store, account)?;
    let status = records::read_status(store)?;
    Ok(Some(budget(balance.balance, &usage, status, synced)))
}

fn budget(balance: i64, usage: &Usage, status: records::Status, synced: u64) -> i64 {
    let inflight = if usage.inflight != 0 && !status.reflects(usage.batch, synced) { usage.inflight } else { 0 };
    balance.saturating_sub(usage.unsent).saturating_sub(inflight)
}

/// Reserves `cost` (at least one credit of headroom) with compare-and-swap.
fn reserve(store: &dyn CounterStore, account: &Account, synced: u64, cost: u64) -> Result<Reserved, StoreError> {
    let Some(balance) = records::read_balance(store, account)? else { return Ok(Reserved::NoAccount) };
    let status = records::read_status(store)?;
    let need = i64::try_from(cost.max(1)).unwrap_or(i64::MAX);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (mut usage, cas) = records::read_usage(store, account)?;
        if cas == 0 {
            // The publisher creates the counter before the balance; never
            // create it here (a CAS of 0 overwrites, losing a concurrent
            // count).
            return Err(StoreError::Unavailable);
        }
        if budget(balance.balance, &usage, status, synced) < need {
            return Ok(Reserved::Exhausted);
        }
        if !usage.listed {
            records::mark_dirty(store, account)?;
            usage.listed = true;
        }
        usage.unsent = usage.unsent.saturating_add(i64::try_from(cost).unwrap_or(i64::MAX));
        match records::write_usage(store, account, &usage, cas) {
            Ok(()) => return Ok(Reserved::Yes),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contention)
}

/// Adds `delta` to an account's unsent usage (refunds are negative).
pub fn add_unsent(store: &dyn CounterStore, account: &Account, delta: i64) -> Result<(), StoreError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (mut usage, cas) = records::read_usage(store, account)?;
        if cas == 0 {
            return Err(StoreError::Unavailable);
        }
        if !usage.listed {
            records::mark_dirty(store, account)?;
            usage.listed = true;
        }
        usage.unsent = usage.unsent.saturating_add(delta);
        match records::write_usage(store, account, &usage, cas) {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contention)
}

#[cfg(test)]
mod tests;
