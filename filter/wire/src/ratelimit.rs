//! Rate-limit and abuse-control configuration (part of the plugin config).

use serde::{Deserialize, Serialize};

/// Rate limiting: rules, the client-IP source, response fields, abuse
/// controls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Where the client IP comes from. Default: the direct peer.
    #[serde(default)]
    pub client_ip: ClientIpSource,
    /// Limits, all applied: a request must pass every rule that matches.
    #[serde(default)]
    pub rules: Vec<RateLimitRule>,
    /// Also send `RateLimit`/`RateLimit-Policy` on allowed responses.
    /// Default false (429s always carry them).
    #[serde(default)]
    pub headers_on_allowed: bool,
    /// Also send `X-RateLimit-Limit/Remaining/Reset`. Default false.
    #[serde(default)]
    pub legacy_headers: bool,
    /// Per-IP abuse controls for sensitive routes. Absent: off.
    #[serde(default)]
    pub abuse: Option<AbuseConfig>,
}

/// The trusted source of the client IP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source", deny_unknown_fields)]
pub enum ClientIpSource {
    /// The TCP peer (`source.address`).
    #[default]
    Peer,
    /// An entry of `X-Forwarded-For`, counted from the right: `trusted_hops:
    /// 1` takes the last entry (appended by the one proxy you trust).
    XForwardedFor {
        /// Number of trusted proxies that appended to the header (≥ 1).
        trusted_hops: u32,
    },
}

/// One limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// Name: the policy id in `RateLimit-Policy` and the metric suffix.
    pub name: String,
    /// Route names the rule applies to. Empty: every route.
    #[serde(default)]
    pub routes: Vec<String>,
    /// What one counter is per: any of `ip`, `user`, `api_key`, `app`,
    /// `route`, `header:<name>`, `claim:<sub|app_id|sid>`. Empty: one
    /// counter for all requests. A request lacking a part (no user on an
    /// anonymous request) is not counted by this rule.
    #[serde(default)]
    pub key: Vec<String>,
    /// Requests allowed per window (≥ 1).
    pub limit: u32,
    /// Window in seconds (1–86400).
    pub window_secs: u32,
    /// Largest burst, ≤ `limit`. Default `limit`: the whole window's quota
    /// may be used at once, never more (GCRA: no 2× bursts at edges).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Count and report, never refuse.
    #[serde(default)]
    pub shadow: bool,
    /// Distinct keys tracked before idle ones are evicted. Default 65536.
    #[serde(default)]
    pub max_keys: Option<u32>,
}

/// Abuse controls: a per-IP, per-route limit on sensitive routes, lockout
/// after repeated violations, bans for repeat offenders. Defaults are the
/// ones operators of auth APIs expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseConfig {
    /// Sensitive route names (login, refresh, OTP…).
    pub routes: Vec<String>,
    /// Route names never locked out (health checks). Default none.
    #[serde(default)]
    pub exempt_routes: Vec<String>,
    /// Requests per IP per route per window on sensitive routes. Default 20.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Window, seconds. Default 60.
    #[serde(default)]
    pub window_secs: Option<u32>,
    /// Violations (429s on sensitive routes) that trigger a lockout.
    /// Default 10.
    #[serde(default)]
    pub violations: Option<u32>,
    /// Lockout length, seconds. Default 900.
    #[serde(default)]
    pub lockout_secs: Option<u32>,
    /// Lockouts after which the IP is banned. Default 3.
    #[serde(default)]
    pub ban_after_lockouts: Option<u32>,
    /// Ban length, seconds. Default 86400.
    #[serde(default)]
    pub ban_secs: Option<u32>,
}
