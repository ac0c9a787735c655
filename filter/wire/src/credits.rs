//! Credits: the plugin configuration section that meters requests, the
//! credit state the sync feed pushes, and the usage reports the filter
//! flushes to the control plane (`POST /api/v1/credits/report`).
//!
//! An *account* is a kind plus an id: a user (`user:<sub>`), an app
//! (`app:<app_id>`), an API key (`key:<key id>`), or the remaining uses of a
//! key created with `max_uses` (`uses:<key id>`, one use per request on
//! every route).
//!
//! Compatibility: the feed's `credits` field is omitted when empty, so a
//! filter built before credits existed (its `SyncResponse` refuses unknown
//! fields) keeps following a control plane that has no credit accounts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default header upstreams report a response's cost in.
pub const DEFAULT_COST_HEADER: &str = "x-credits-used";
/// Default report path on the control plane.
pub const DEFAULT_REPORT_PATH: &str = "/api/v1/credits/report";
/// Default flush interval, milliseconds.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1_000;
/// Most accounts one usage report carries.
pub const MAX_REPORT_ITEMS: usize = 2_000;

/// What a credit account belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A user (JWT `sub`, or a key's owner).
    User,
    /// An app (`app_id`).
    App,
    /// One API key, by key id.
    Key,
    /// The remaining uses of a key created with `max_uses`, by key id.
    Uses,
}

impl AccountKind {
    /// The name used in JSON, SQL and shared-data keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::App => "app",
            Self::Key => "key",
            Self::Uses => "uses",
        }
    }

    /// The kind for a name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "user" => Self::User,
            "app" => Self::App,
            "key" => Self::Key,
            "uses" => Self::Uses,
            _ => return None,
        })
    }
}

/// The `credits` section of the plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditsConfig {
    /// Static cost per request, by route name (`routes[].name`). Only these
    /// routes are metered in credits; `0` meters with the response cost
    /// alone. (Remaining-uses keys are counted on every route.)
    #[serde(default)]
    pub routes: BTreeMap<String, u64>,
    /// Response header in which an upstream reports what a request really
    /// cost; it replaces the static cost and is removed before the client
    /// sees the response. Default `x-credits-used`.
    #[serde(default)]
    pub cost_header: Option<String>,
    /// Status of a refusal for exhausted credits: 402 (default) or 429.
    #[serde(default)]
    pub exhausted_status: Option<u16>,
    /// How often usage is flushed to the control plane, milliseconds
    /// (200–60000, default 1000).
    #[serde(default)]
    pub flush_interval_ms: Option<u64>,
    /// Report path on the control plane (the sync feed's cluster and
    /// credential are used). Default `/api/v1/credits/report`.
    #[serde(default)]
    pub report_path: Option<String>,
    /// Which account pays, in order: the first the identity has an account
    /// for. Default `["key", "user", "app"]`.
    #[serde(default)]
    pub charge: Option<Vec<AccountKind>>,
    /// A metered request whose identity has no account (or no identity):
    /// `deny` (default, as exhausted) or `allow` (not metered).
    #[serde(default)]
    pub unmetered: Unmetered,
}

/// What happens to metered requests without an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmetered {
    /// Refused as exhausted.
    #[default]
    Deny,
    /// Forwarded without metering.
    Allow,
}

/// One account's balance, as the sync feed pushes it (a snapshot: every
/// account; a delta: the accounts that changed). A balance of 0 or less is
/// exhausted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditState {
    /// Account kind.
    pub kind: AccountKind,
    /// User id, app id or key id.
    pub id: String,
    /// Credits (or uses) left at the response's version; may be negative
    /// after an overspend.
    pub balance: i64,
}

/// A batch of usage the filter flushes. `id` is stable across retries: the
/// control plane applies a report once and answers a retry with the same
/// acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// Report id, unique per filter process and batch.
    pub id: String,
    /// Usage per account.
    pub usage: Vec<UsageItem>,
}

/// Usage of one account in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    /// Account kind.
    pub kind: AccountKind,
    /// Account id.
    pub id: String,
    /// Credits (or uses) consumed; may be negative after refunds.
    pub amount: i64,
}

/// The control plane's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAck {
    /// The report id.
    pub id: String,
    /// The change version at which the report was applied: once the
    /// filter's synced state is at or past it, the balances include it.
    pub version: u64,
    /// True when the report had been applied before (a retry).
    pub duplicate: bool,
}
