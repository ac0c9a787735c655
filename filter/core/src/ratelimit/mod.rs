//! Rate limits and abuse controls.
//!
//! | module | role |
//! |---|---|
//! | [`gcra`] | the admission math, on a fake clock |
//! | [`table`] | bounded CAS slot tables over the host's shared data |
//! | [`abuse`] | lockouts and bans per client IP |
//!
//! [`RateLimits::check`] runs every rule that applies to a request, and
//! returns either a pass (with optional response fields) or the refusal
//! with `RateLimit-Policy`, `RateLimit` and `Retry-After`.

pub mod abuse;
pub mod gcra;
pub mod table;

use std::borrow::Cow;

use crate::config::ConfigError;
use crate::credential::HeaderPair;
use crate::identity::Identity;
use abuse::{Abuse, Block};
use gcra::{Gcra, Verdict};
use meshgate_wire::ratelimit::{ClientIpSource, RateLimitConfig, RateLimitRule};
use table::{CounterStore, SlotTable, StoreError, hash_key};

/// One part of a counter key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyPart {
    Ip,
    User,
    ApiKey,
    App,
    Route,
    Header(String),
    Claim(String),
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Name (policy id, metric suffix).
    pub name: String,
    routes: Vec<String>,
    key: Vec<KeyPart>,
    /// The limit.
    pub gcra: Gcra,
    /// Count only.
    pub shadow: bool,
    table: SlotTable,
    /// Cells a worker takes from the shared counter at once (1: every
    /// request goes to shared data). See [`lease_size`].
    pub lease: u32,
    leases: Leases,
}

/// Most cells one worker takes at once for one key.
pub const LEASE_MAX: u32 = 64;
/// How long a worker keeps cells it took and has not used yet.
pub const LEASE_TTL_US: u64 = 1_000_000;
/// Keys with cells in hand per rule and worker; emptied when full.
const LEASE_KEYS: usize = 4096;

/// Cells per take for a limit: `LEASE_MAX` at most, and at most 1/64 of
/// both the rate per second and the burst, so the cells a worker may hold
/// and lose (taken, unused within [`LEASE_TTL_US`]) stay under 1/64 of the
/// rate per worker. Limits under 128 per second take one cell at a time:
/// exact, every request reads and writes shared data.
pub fn lease_size(gcra: &Gcra) -> u32 {
    let per_sec = u64::from(gcra.limit) / u64::from(gcra.window_secs.max(1));
    let k = (per_sec / 64).min(u64::from(gcra.burst / 64)).min(u64::from(LEASE_MAX));
    u32::try_from(k).unwrap_or(1).max(1)
}

/// Cells a worker took from a rule's shared counter and has not used yet,
/// by a local hash of the counter key. A request that finds one here is
/// admitted without touching shared data (two host calls and a SHA-256 in
/// V8); the shared counter already counts it, so limits are never
/// exceeded, and cells not used within [`LEASE_TTL_US`] are lost.
#[derive(Default)]
struct Leases {
    /// Keyed by [`Leases::local_key`], already a keyed SipHash: the map
    /// does not hash it again.
    held: std::sync::Mutex<std::collections::HashMap<u64, Lease, crate::prehashed::BuildPrehashed>>,
    hasher: std::hash::RandomState,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    left: u32,
    until_us: u64,
    /// The shared TAT after the take: when the quota is whole again.
    tat_us: u64,
}

impl Leases {
    fn local_key(&self, parts: &[Cow<'_, str>]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(parts)
    }

    /// Uses one held cell for `key`, if any is still valid.
    fn take(&self, key: u64, now_us: u64) -> Option<Verdict> {
        let mut held = self.held.lock().ok()?;
        let lease = held.get_mut(&key)?;
        if lease.left == 0 || now_us >= lease.until_us {
            held.remove(&key);
            return None;
        }
        lease.left -= 1;
        Some(Verdict {
            allowed: true,
            remaining: lease.left,
            reset_secs: lease.tat_us.saturating_sub(now_us).div_ceil(1_000_000),
            retry_after_secs: 0,
            new_tat_us: lease.tat_us,
        })
    }

    fn keep(&self, key: u64, lease: Lease) {
        let Ok(mut held) = self.held.lock() else { return };
        if held.len() >= LEASE_KEYS {
            held.clear();
        }
        held.insert(key, lease);
    }
}

impl Clone for Leases {
    /// A copy starts with nothing in hand (cells belong to one worker).
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Leases {
    /// Cells in hand are state, not configuration.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Leases {}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leases")
    }
}

/// Which limit an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleId {
    /// A configured rule, by index.
    Rule(usize),
    /// The key's own limit (`rate_limit` on its record).
    KeyLimit,
    /// The abuse controls' per-IP per-route limit.
    Abuse,
}

/// What happened to one rule for one request (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleEvent {
    /// Admitted.
    Allowed,
    /// Refused.
    Limited,
    /// Would have been refused; shadow mode let it pass.
    ShadowLimited,
}

/// The limiting part of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitReport {
    /// What each applicable limit did.
    pub events: Vec<(RuleId, RuleEvent)>,
    /// Headers for the response (429 or, when configured, allowed ones).
    pub headers: Vec<(String, String)>,
}

/// Response header fields, lower-case names.
pub type Fields = Vec<(String, String)>;

/// The result of [`RateLimits::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitOutcome {
    /// Every rule admitted the request.
    Pass(LimitReport),
    /// A rule or the abuse control refused it.
    Refused(Refusal, LimitReport),
}

/// Why a request was refused by limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A rule's quota is spent.
    Limited,
    /// The IP is locked out after repeated violations.
    LockedOut,
    /// The IP is banned.
    Banned,
}

/// Everything the limits need to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct LimitInput<'a> {
    /// Matched route name.
    pub route: &'a str,
    /// Client IP per the configured source.
    pub ip: Option<&'a str>,
    /// Verified identity.
    pub identity: Option<&'a Identity>,
    /// Request headers.
    pub headers: &'a [HeaderPair<'a>],
}

/// All limits of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Rules in config order.
    pub rules: Vec<Rule>,
    /// Abuse controls.
    pub abuse: Option<Abuse>,
    ip_source: ClientIpSource,
    headers_on_allowed: bool,
    legacy_headers: bool,
    /// Counters for keys' own limits.
    key_table: SlotTable,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            abuse: None,
            ip_source: ClientIpSource::Peer,
            headers_on_allowed: false,
            legacy_headers: false,
            key_table: key_table(),
        }
    }
}

fn key_table() -> SlotTable {
    SlotTable::new("mg:rl:key:".to_owned(), 16_384)
}

fn compile_key(part: &str, field: &str) -> Result<KeyPart, ConfigError> {
    Ok(match part {
        "ip" => KeyPart::Ip,
        "user" => KeyPart::User,
        "api_key" => KeyPart::ApiKey,
        "app" => KeyPart::App,
        "route" => KeyPart::Route,
        _ => match part.split_once(':') {
            Some(("header", name)) if !name.is_empty() => KeyPart::Header(name.to_ascii_lowercase()),
            Some(("claim", c @ ("sub" | "app_id" | "sid"))) => KeyPart::Claim(c.to_owned()),
            _ => {
                return Err(ConfigError::new(
                    field,
                    "must be ip, user, api_key, app, route, header:<name> or claim:<sub|app_id|sid>",
                ));
            }
        },
    })
}

fn compile_rule(rule: &RateLimitRule, i: usize) -> Result<Rule, ConfigError> {
    let field = format!("rate_limits.rules[{i}]");
    if !crate::identity::is_header_safe_token(&rule.name) || rule.name.contains('"') {
        return Err(ConfigError::new(format!("{field}.name"), "must be a token without quotes"));
    }
    if rule.limit == 0 {
        return Err(ConfigError::new(format!("{field}.limit"), "must be at least 1"));
    }
    if !(1..=86_400).contains(&rule.window_secs) {
        return Err(ConfigError::new(format!("{field}.window_secs"), "must be between 1 and 86400"));
    }
    let burst = rule.burst.unwrap_or(rule.limit);
    if burst == 0 || burst > rule.limit {
        return Err(ConfigError::new(format!("{field}.burst"), "must be between 1 and limit"));
    }
    let key = rule
        .key
        .iter()
        .enumerate()
        .map(|(k, p)| compile_key(p, &format!("{field}.key[{k}]")))
        .collect::<Result<_, _>>()?;
    let max_keys = rule.max_keys.unwrap_or(65_536).clamp(64, 1 << 22);
    let gcra = Gcra::new(rule.limit, rule.window_secs, burst);
    Ok(Rule {
        name: rule.name.clone(),
        routes: rule.routes.clone(),
        key,
        gcra,
        shadow: rule.shadow,
        table: SlotTable::new(format!("mg:rl:{}:", rule.name), max_keys.div_ceil(table::BUCKET as u32)),
        lease: lease_size(&gcra),
        leases: Leases::default(),
    })
}

/// The counting unit for an IP: IPv4 as is, IPv6 by its /64 (one
/// subscriber usually holds a whole /64 and could rotate through it).
pub fn ip_bucket(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or_else(|| ip.to_owned(), |v4| v4.to_string()),
        _ => ip.to_owned(),
    }
}

/// Strips a port from `host:port` / `[v6]:port`.
fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    }
}

impl RateLimits {
    /// Validates the rate-limit section.
    pub fn compile(cfg: &RateLimitConfig) -> Result<Self, ConfigError> {
        let rules = cfg.rules.iter().enumerate().map(|(i, r)| compile_rule(r, i)).collect::<Result<Vec<_>, _>>()?;
        for (i, r) in rules.iter().enumerate() {
            if rules.iter().take(i).any(|o| o.name == r.name) {
                return Err(ConfigError::new(format!("rate_limits.rules[{i}].name"), "is used twice"));
            }
        }
        if let ClientIpSource::XForwardedFor { trusted_hops: 0 } = cfg.client_ip {
            return Err(ConfigError::new("rate_limits.client_ip.trusted_hops", "must be at least 1"));
        }
        Ok(Self {
            rules,
            abuse: cfg.abuse.as_ref().map(Abuse::compile),
            ip_source: cfg.client_ip.clone(),
            headers_on_allowed: cfg.headers_on_allowed,
            legacy_headers: cfg.legacy_headers,
            key_table: key_table(),
        })
    }

    /// Whether no rule or abuse control exists (keys' own limits aside).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.abuse.is_none()
    }

    /// Whether any limit needs the client IP (rules keyed by `ip`, abuse
    /// controls): otherwise the glue skips reading the peer address.
    pub fn needs_ip(&self) -> bool {
        self.abuse.is_some() || self.rules.iter().any(|r| r.key.contains(&KeyPart::Ip))
    }

    /// Creates every counter slot; run once per VM at configure time.
    pub fn init(&self, store: &dyn CounterStore) -> Result<(), StoreError> {
        self.key_table.init(store)?;
        for rule in &self.rules {
            rule.table.init(store)?;
        }
        if let Some(abuse) = &self.abuse {
            abuse.table().init(store)?;
        }
        Ok(())
    }

    /// The client IP: the peer, or the configured `X-Forwarded-For` entry
    /// (falling back to the peer when the header is absent or short).
    pub fn client_ip<'a>(&self, peer: Option<&'a str>, headers: &'a [HeaderPair<'a>]) -> Option<&'a str> {
        let peer = peer.map(strip_port);
        let ClientIpSource::XForwardedFor { trusted_hops } = self.ip_source else { return peer };
        let xff = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let hops = usize::try_from(trusted_hops).unwrap_or(usize::MAX);
        xff.len().checked_sub(hops).and_then(|i| xff.get(i).copied()).filter(|ip| !ip.is_empty()).or(peer)
    }

    /// Whether `ip` is locked out or banned (checked before verification,
    /// so a locked-out brute-forcer costs no signature work).
    pub fn blocked(
        &self,
        store: &dyn CounterStore,
        route: &str,
        ip: Option<&str>,
        now_us: u64,
    ) -> Result<Option<(Refusal, Fields)>, StoreError> {
        let (Some(abuse), Some(ip)) = (&self.abuse, ip) else { return Ok(None) };
        if abuse.exempt_routes.iter().any(|r| r == route) {
            return Ok(None);
        }
        Ok(abuse.blocked(store, ip, now_us)?.map(block_refusal))
    }

    /// The parts of `rule`'s counter key for this request, borrowed where
    /// they can be (the hot path should not allocate per part).
    fn key_parts<'a>(&self, rule: &'a Rule, input: &LimitInput<'a>) -> Option<Vec<Cow<'a, str>>> {
        let mut parts: Vec<Cow<'a, str>> = Vec::with_capacity(rule.key.len() + 1);
        parts.push(Cow::Borrowed(rule.name.as_str()));
        for part in &rule.key {
            let value = match part {
                KeyPart::Ip => Cow::Owned(ip_bucket(input.ip?)),
                KeyPart::User => Cow::Borrowed(input.identity.map(|i| i.subject.as_str()).filter(|s| !s.is_empty())?),
                KeyPart::ApiKey => Cow::Borrowed(input.identity?.key_id.as_deref()?),
                KeyPart::App => Cow::Borrowed(input.identity?.app_id.as_deref()?),
                KeyPart::Route => Cow::Borrowed(input.route),
                KeyPart::Header(name) => Cow::Borrowed(
                    input
                        .headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .and_then(|(_, v)| std::str::from_utf8(v).ok())?,
                ),
                KeyPart::Claim(claim) => Cow::Borrowed(match claim.as_str() {
                    "sub" => Some(input.identity?.subject.as_str()),
                    "app_id" => input.identity?.app_id.as_deref(),
                    _ => input.identity?.session_id.as_deref(),
                }?),
            };
            parts.push(value);
        }
        Some(parts)
    }

    /// One rule for one key: a held cell when there is one, else the shared
    /// counter (taking up to `rule.lease` cells, keeping the spare ones).
    /// Allowed responses that show `RateLimit` fields need the exact shared
    /// state, so `headers_on_allowed` takes one cell at a time.
    fn run_rule(
        &self,
        rule: &Rule,
        parts: &[Cow<'_, str>],
        store: &dyn CounterStore,
        now_us: u64,
    ) -> Result<Verdict, StoreError> {
        // Only a take from the shared counter needs its key.
        let shared_key = || hash_key(&parts.iter().map(|p| p.as_ref()).collect::<Vec<&str>>());
        if rule.lease <= 1 || self.headers_on_allowed {
            return self.run(&rule.table, &rule.gcra, shared_key(), store, now_us);
        }
        let local = rule.leases.local_key(parts);
        if let Some(verdict) = rule.leases.take(local, now_us) {
            return Ok(verdict);
        }
        let (verdict, taken) = rule.table.update(store, shared_key(), now_us, |mut e| {
            let (v, taken) = rule.gcra.check_n(e.data[0], now_us, rule.lease);
            if !v.allowed {
                return (None, (v, 0));
            }
            e.data[0] = v.new_tat_us;
            e.expires_us = v.new_tat_us;
            (Some(e), (v, taken))
        })?;
        if taken > 1 {
            let lease = Lease { left: taken - 1, until_us: now_us + LEASE_TTL_US, tat_us: verdict.new_tat_us };
            rule.leases.keep(local, lease);
        }
        Ok(verdict)
    }

    fn run(
        &self,
        table: &SlotTable,
        gcra: &Gcra,
        hash: u64,
        store: &dyn CounterStore,
        now_us: u64,
    ) -> Result<Verdict, StoreError> {
        table.update(store, hash, now_us, |mut e| {
            let v = gcra.check(e.data[0], now_us);
            if !v.allowed {
                return (None, v);
            }
            e.data[0] = v.new_tat_us;
            e.expires_us = v.new_tat_us;
            (Some(e), v)
        })
    }

    /// Applies every rule that matches, then the abuse limit.
    pub fn check(
        &self,
        input: &LimitInput<'_>,
        store: &dyn CounterStore,
        now_us: u64,
    ) -> Result<LimitOutcome, StoreError> {
        let mut report = LimitReport::default();
        let mut applied: Vec<(&str, &Gcra, Verdict)> = Vec::new();
        let mut refused = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.routes.is_empty() && !rule.routes.iter().any(|r| r == input.route) {
                continue;
            }
            let Some(parts) = self.key_parts(rule, input) else { continue };
            let verdict = self.run_rule(rule, &parts, store, now_us)?;
            let event = match (verdict.allowed, rule.shadow) {
                (true, _) => RuleEvent::Allowed,
                (false, true) => RuleEvent::ShadowLimited,
                (false, false) => RuleEvent::Limited,
            };
            report.events.push((RuleId::Rule(i), event));
            if event == RuleEvent::Limited {
                refused = true;
            }
            if !rule.shadow {
                applied.push((&rule.name, &rule.gcra, verdict));
            }
        }
        let key_gcra;
        if let Some(id) = input.identity
            && let (Some(key_id), Some((limit, window))) = (id.key_id.as_deref(), id.key_limit)
        {
            key_gcra = Gcra::new(limit, window, limit);
            let verdict = self.run(&self.key_table, &key_gcra, hash_key(&["key-limit", key_id]), store, now_us)?;
            report
                .events
                .push((RuleId::KeyLimit, if verdict.allowed { RuleEvent::Allowed } else { RuleEvent::Limited }));
            refused |= !verdict.allowed;
            applied.push(("key", &key_gcra, verdict));
        }
        if let (Some(abuse), Some(ip)) = (&self.abuse, input.ip)
            && abuse.routes.iter().any(|r| r == input.route)
        {
            let hash = hash_key(&["abuse-limit", input.route, ip]);
            let verdict = self.run(abuse.table(), &abuse.gcra, hash, store, now_us)?;
            report.events.push((RuleId::Abuse, if verdict.allowed { RuleEvent::Allowed } else { RuleEvent::Limited }));
            if !verdict.allowed {
                if let Some(block) = abuse.record_violation(store, ip, now_us)? {
                    let (refusal, headers) = block_refusal(block);
                    report.headers = headers;
                    return Ok(LimitOutcome::Refused(refusal, report));
                }
                refused = true;
            }
            applied.push(("abuse", &abuse.gcra, verdict));
        }
        if refused || self.headers_on_allowed {
            report.headers = self.render(&applied, refused);
        }
        Ok(if refused { LimitOutcome::Refused(Refusal::Limited, report) } else { LimitOutcome::Pass(report) })
    }

    fn render(&self, applied: &[(&str, &Gcra, Verdict)], refused: bool) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        if applied.is_empty() {
            return headers;
        }
        let policy: Vec<String> =
            applied.iter().map(|(n, g, _)| format!("\"{n}\";q={};w={}", g.limit, g.window_secs)).collect();
        let state: Vec<String> =
            applied.iter().map(|(n, _, v)| format!("\"{n}\";r={};t={}", v.remaining, v.reset_secs)).collect();
        headers.push(("ratelimit-policy".to_owned(), policy.join(", ")));
        headers.push(("ratelimit".to_owned(), state.join(", ")));
        let tightest = applied.iter().min_by_key(|(_, _, v)| (v.allowed, v.remaining));
        if refused {
            let retry = applied.iter().filter(|(_, _, v)| !v.allowed).map(|(_, _, v)| v.retry_after_secs).max();
            headers.push(("retry-after".to_owned(), retry.unwrap_or(1).to_string()));
        }
        if let (true, Some((_, g, v))) = (self.legacy_headers, tightest) {
            headers.push(("x-ratelimit-limit".to_owned(), g.limit.to_string()));
            headers.push(("x-ratelimit-remaining".to_owned(), v.remaining.to_string()));
            headers.push(("x-ratelimit-reset".to_owned(), v.reset_secs.to_string()));
        }
        headers
    }
}

fn block_refusal(block: Block) -> (Refusal, Fields) {
    let refusal = if block.banned { Refusal::Banned } else { Refusal::LockedOut };
    (refusal, vec![("retry-after".to_owned(), block.retry_after_secs.to_string())])
}
