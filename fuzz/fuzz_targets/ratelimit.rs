//! Rate-limit math and header rendering: a fuzzed rate-limit section
//! (rules, abuse controls, legacy headers) and a fuzzed request sequence
//! (time steps, routes, IPs, identities) through `RateLimits::check`, then
//! the denial each refusal becomes.
//!
//! Properties: no panic (no overflow at any limit/window/burst the config
//! accepts); header values are sendable; a refusal carries `Retry-After`
//! >= 1; `remaining` never exceeds the limit; the rendered 429 is clean.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshgate_core::identity::Identity;
use meshgate_core::ratelimit::table::MemoryStore;
use meshgate_core::ratelimit::{LimitInput, LimitOutcome, RateLimits};
use meshgate_core::{Denial, Reason};
use meshgate_fuzz::*;
use meshgate_wire::config::{CredentialKind, ProblemDetails};
use meshgate_wire::ratelimit::RateLimitConfig;
use serde_json::json;

#[derive(Debug, Arbitrary)]
struct RuleIn {
    name: u8,
    route: Option<u8>,
    key: Vec<u8>,
    limit: u32,
    window_secs: u32,
    burst: Option<u32>,
    shadow: bool,
    max_keys: Option<u32>,
}

#[derive(Debug, Arbitrary)]
struct AbuseIn {
    limit: Option<u32>,
    window_secs: Option<u32>,
    violations: Option<u32>,
    lockout_secs: Option<u32>,
    ban_after_lockouts: Option<u32>,
    ban_secs: Option<u32>,
}

#[derive(Debug, Arbitrary)]
struct Step {
    advance_us: u32,
    route: u8,
    ip: u8,
    user: Option<u8>,
    key_limit: Option<(u32, u32)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    rules: Vec<RuleIn>,
    abuse: Option<AbuseIn>,
    xff_hops: Option<u8>,
    headers_on_allowed: bool,
    legacy_headers: bool,
    steps: Vec<Step>,
    realm: String,
    scopes: Vec<String>,
}

const ROUTES: [&str; 3] = ["login", "api", "health"];
const KEYS: [&str; 9] = ["ip", "user", "api_key", "app", "route", "header:x-tenant", "claim:sub", "claim:sid", "bogus"];
const IPS: [&str; 4] = ["10.0.0.1", "2001:db8::1", "2001:db8::2", "::ffff:10.0.0.1"];

fn config(input: &Input) -> Option<RateLimits> {
    let rules: Vec<_> = input
        .rules
        .iter()
        .take(4)
        .map(|r| {
            json!({
                "name": format!("r{}", r.name % 8),
                "routes": r.route.map(|i| vec![ROUTES[usize::from(i) % 3]]).unwrap_or_default(),
                "key": r.key.iter().take(3).map(|k| KEYS[usize::from(*k) % KEYS.len()]).collect::<Vec<_>>(),
                "limit": r.limit, "window_secs": r.window_secs, "burst": r.burst, "shadow": r.shadow,
                "max_keys": r.max_keys.map(|m| m % 4096),
            })
        })
        .collect();
    let mut cfg = json!({"rules": rules, "headers_on_allowed": input.headers_on_allowed,
                         "legacy_headers": input.legacy_headers});
    if let Some(a) = &input.abuse {
        cfg["abuse"] = json!({"routes": ["login"], "exempt_routes": ["health"], "limit": a.limit,
            "window_secs": a.window_secs, "violations": a.violations, "lockout_secs": a.lockout_secs,
            "ban_after_lockouts": a.ban_after_lockouts, "ban_secs": a.ban_secs});
    }
    if let Some(h) = input.xff_hops {
        cfg["client_ip"] = json!({"source": "x_forwarded_for", "trusted_hops": h});
    }
    let parsed: RateLimitConfig = serde_json::from_value(cfg).ok()?;
    RateLimits::compile(&parsed).ok()
}

fn check_headers(headers: &[(String, String)], refused: bool) {
    for (n, v) in headers {
        assert_header_value(n, v);
    }
    if refused {
        let retry = headers.iter().find(|(n, _)| n == "retry-after").map(|(_, v)| v.as_str());
        let secs: u64 =
            retry.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("refusal without retry-after: {headers:?}"));
        assert!(secs >= 1, "retry-after {secs}");
    }
}

fuzz_target!(|input: Input| {
    let Some(limits) = config(&input) else { return };
    // No `init`: it creates every slot (tens of thousands) and would
    // dominate each run; updates create absent slots all the same.
    let store = MemoryStore::default();
    let mut now_us = NOW_US;
    let xff = [("x-forwarded-for", b"192.0.2.1, 198.51.100.7".as_slice()), ("x-tenant", b"t1".as_slice())];
    for step in input.steps.iter().take(64) {
        now_us += u64::from(step.advance_us);
        let identity = step.user.map(|u| Identity {
            method: CredentialKind::ApiKey,
            subject: format!("user-{}", u % 4),
            roles: Vec::new(),
            scopes: Vec::new(),
            app_id: Some("app".to_owned()),
            key_id: Some(format!("key-{}", u % 4)),
            session_id: None,
            guest_id: None,
            key_limit: step.key_limit,
        });
        let route = ROUTES[usize::from(step.route) % 3];
        let ip = limits.client_ip(Some(IPS[usize::from(step.ip) % IPS.len()]), &xff);
        let _ = limits.blocked(&store, route, ip, now_us);
        let input_l = LimitInput { route, ip, identity: identity.as_ref(), headers: &xff };
        let Ok(outcome) = limits.check(&input_l, &store, now_us) else { continue };
        let (report, refused) = match outcome {
            LimitOutcome::Pass(r) => (r, false),
            LimitOutcome::Refused(_, r) => (r, true),
        };
        check_headers(&report.headers, refused);
        for (n, v) in &report.headers {
            if n == "x-ratelimit-remaining" || n == "x-ratelimit-limit" {
                assert!(v.parse::<u64>().is_ok(), "{n}: {v}");
            }
        }
        if refused {
            let mut denial = Denial::new(Reason::RateLimited);
            denial.headers = report.headers;
            denial.route = Some(route.to_owned());
            for details in [ProblemDetails::Full, ProblemDetails::Minimal] {
                let resp = denial.render("meshgate", details);
                assert_eq!(resp.status, 429);
                assert_local_response(&resp);
            }
        }
    }
    // Denial rendering with arbitrary realm and scopes (the renderer must
    // keep header values sendable whatever it is given).
    let mut denial = Denial::new(Reason::InsufficientScope);
    denial.required_scopes = input.scopes.clone();
    assert_local_response(&denial.render(&input.realm, ProblemDetails::Full));
});
