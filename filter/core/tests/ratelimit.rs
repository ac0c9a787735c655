//! Rate limits and abuse controls through the engine, on a fake clock, with
//! one in-memory CAS store standing in for Envoy's shared data (two
//! "workers" are two engines over the same store).

mod support;

use meshgate_core::Reason;
use meshgate_core::engine::{Decision, Engine};
use meshgate_core::ratelimit::table::{CounterStore, MemoryStore, SlotTable, StoreError};
use meshgate_core::ratelimit::{Fields, RuleEvent, RuleId};
use serde_json::{Value, json};
use support::*;

const S: u64 = 1_000_000;

fn engine_with(rate_limits: Value) -> Engine {
    let mut cfg = config();
    cfg["rate_limits"] = rate_limits;
    let compiled = meshgate_core::compile(cfg.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(compiled)
}

fn outcome(engine: &Engine, req: &Req, now_us: u64, store: &MemoryStore) -> Result<Fields, (Reason, Fields)> {
    match engine.decide(&req.view(), now_us, store) {
        Decision::Allow(a) => Ok(a.response_headers),
        Decision::Deny(d) => Err((d.reason, d.headers)),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn per_ip(limit: u32, window: u32) -> Value {
    json!({"rules": [{"name": "per-ip", "key": ["ip"], "limit": limit, "window_secs": window}]})
}

#[test]
fn a_burst_of_1000_across_two_workers_admits_exactly_100() {
    let store = MemoryStore::default();
    let a = engine_with(per_ip(100, 60));
    let b = engine_with(per_ip(100, 60));
    a.config.rate_limits.init(&store).unwrap_or_else(|e| panic!("{e}"));
    b.config.rate_limits.init(&store).unwrap_or_else(|e| panic!("{e}"));
    let req = Req::get("/public/x");
    let admitted = (0..1000)
        .filter(|i| {
            let worker = if i % 2 == 0 { &a } else { &b };
            outcome(worker, &req, NOW_US, &store).is_ok()
        })
        .count();
    assert_eq!(admitted, 100);
}

#[test]
fn refusals_carry_ietf_fields_and_retry_after() {
    let store = MemoryStore::default();
    let engine = engine_with(per_ip(2, 10));
    let req = Req::get("/public/x");
    assert!(outcome(&engine, &req, NOW_US, &store).is_ok());
    assert!(outcome(&engine, &req, NOW_US, &store).is_ok());
    let Decision::Deny(denial) = engine.decide(&req.view(), NOW_US, &store) else { panic!("third request admitted") };
    assert_eq!(
        denial.limit_events,
        vec![(RuleId::Rule(0), RuleEvent::Limited)],
        "refusals report their rule for metrics"
    );
    let (reason, headers) = (denial.reason, denial.headers);
    assert_eq!(reason, Reason::RateLimited);
    assert_eq!(header(&headers, "ratelimit-policy"), Some("\"per-ip\";q=2;w=10"));
    assert_eq!(header(&headers, "ratelimit"), Some("\"per-ip\";r=0;t=10"));
    assert_eq!(header(&headers, "retry-after"), Some("5"));
    assert_eq!(header(&headers, "x-ratelimit-limit"), None, "legacy fields are opt-in");
    // Five seconds later one request fits again.
    assert!(outcome(&engine, &req, NOW_US + 5 * S, &store).is_ok());
    let rendered = meshgate_core::Denial {
        reason,
        route: None,
        required_scopes: Vec::new(),
        headers: headers.clone(),
        limit_events: Vec::new(),
    }
    .render("meshgate", meshgate_wire::config::ProblemDetails::Full);
    assert_eq!(rendered.status, 429);
    assert!(rendered.body.contains("urn:meshgate:problem:rate-limited"));
}

#[test]
fn allowed_responses_carry_fields_when_configured_and_legacy_on_request() {
    let store = MemoryStore::default();
    let mut limits = per_ip(3, 60);
    limits["headers_on_allowed"] = json!(true);
    limits["legacy_headers"] = json!(true);
    let engine = engine_with(limits);
    let Ok(headers) = outcome(&engine, &Req::get("/public/x"), NOW_US, &store) else { panic!("refused") };
    assert_eq!(header(&headers, "ratelimit"), Some("\"per-ip\";r=2;t=20"));
    assert_eq!(header(&headers, "x-ratelimit-limit"), Some("3"));
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("2"));
    assert_eq!(header(&headers, "retry-after"), None);
}

#[test]
fn keys_separate_counters() {
    let store = MemoryStore::default();
    let engine = engine_with(json!({"rules": [
        {"name": "per-user", "key": ["user"], "limit": 1, "window_secs": 60, "routes": ["api"]}
    ]}));
    let alice = hs(claims(|c| c.subject = Some("alice".into())));
    let bob = hs(claims(|c| c.subject = Some("bob".into())));
    assert!(outcome(&engine, &Req::get("/api/x").bearer(&alice), NOW_US, &store).is_ok());
    assert!(outcome(&engine, &Req::get("/api/x").bearer(&bob), NOW_US, &store).is_ok());
    assert!(outcome(&engine, &Req::get("/api/x").bearer(&alice), NOW_US, &store).is_err());
    // Other routes are not covered by the rule; anonymous requests lack the key part.
    assert!(outcome(&engine, &Req::get("/admin/x").bearer(&alice), NOW_US, &store).is_ok());
    assert!(outcome(&engine, &Req::get("/public/x"), NOW_US, &store).is_ok());
    assert!(outcome(&engine, &Req::get("/public/x"), NOW_US, &store).is_ok());
}

#[test]
fn shadow_rules_count_but_never_refuse() {
    let store = MemoryStore::default();
    let engine = engine_with(json!({"rules": [
        {"name": "trial", "key": ["ip"], "limit": 1, "window_secs": 60, "shadow": true}
    ]}));
    let req = Req::get("/public/x");
    for i in 0..5 {
        let Decision::Allow(a) = engine.decide(&req.view(), NOW_US, &store) else { panic!("shadow refused {i}") };
        let want = if i == 0 { RuleEvent::Allowed } else { RuleEvent::ShadowLimited };
        assert_eq!(a.limits.events, vec![(RuleId::Rule(0), want)]);
    }
}

#[test]
fn client_ip_from_x_forwarded_for_counts_trusted_hops_from_the_right() {
    let mut limits = per_ip(1, 60);
    limits["client_ip"] = json!({"source": "x_forwarded_for", "trusted_hops": 1});
    let engine = engine_with(limits);
    let rl = &engine.config.rate_limits;
    let headers = [("x-forwarded-for", &b"6.6.6.6, 203.0.113.7"[..])];
    assert_eq!(rl.client_ip(Some("10.1.1.1:443"), &headers), Some("203.0.113.7"));
    assert_eq!(rl.client_ip(Some("10.1.1.1:443"), &[]), Some("10.1.1.1"), "falls back to the peer");
    assert_eq!(engine_with(per_ip(1, 60)).config.rate_limits.client_ip(Some("[::1]:8080"), &headers), Some("::1"));
    // A client rotating its own left-most XFF entry stays one client.
    let store = MemoryStore::default();
    let spoof = |fake: &str| Req::get("/public/x").header("x-forwarded-for", &format!("{fake}, 203.0.113.7"));
    assert!(outcome(&engine, &spoof("1.1.1.1"), NOW_US, &store).is_ok());
    assert!(outcome(&engine, &spoof("2.2.2.2"), NOW_US, &store).is_err());
}

fn abuse_engine() -> Engine {
    engine_with(json!({"abuse": {"routes": ["health"], "exempt_routes": ["docs"], "limit": 2, "window_secs": 60,
                                 "violations": 3, "lockout_secs": 900, "ban_after_lockouts": 2, "ban_secs": 86400}}))
}

#[test]
fn violations_lock_out_then_ban_repeat_offenders() {
    let store = MemoryStore::default();
    let engine = abuse_engine();
    let login = Req::get("/health").peer("198.51.100.9:1234");
    let other = Req::get("/public/x").peer("198.51.100.9:1234");
    assert!(outcome(&engine, &login, NOW_US, &store).is_ok());
    assert!(outcome(&engine, &login, NOW_US, &store).is_ok());
    // Violations 1 and 2 are plain 429s; the 3rd starts a lockout.
    for _ in 0..2 {
        assert!(matches!(outcome(&engine, &login, NOW_US, &store), Err((Reason::RateLimited, _))));
    }
    let Err((Reason::LockedOut, headers)) = outcome(&engine, &login, NOW_US, &store) else { panic!("no lockout") };
    assert_eq!(header(&headers, "retry-after"), Some("900"));
    // Locked out everywhere but exempt routes, until it expires.
    assert!(matches!(outcome(&engine, &other, NOW_US + S, &store), Err((Reason::LockedOut, _))));
    assert!(outcome(&engine, &Req::get("/health").peer("198.51.100.10:1"), NOW_US + S, &store).is_ok());
    assert!(outcome(&engine, &other, NOW_US + 901 * S, &store).is_ok());
    // A second lockout within the ban memory becomes a ban (403).
    let later = NOW_US + 1000 * S;
    let mut last = Ok(Vec::new());
    for _ in 0..5 {
        last = outcome(&engine, &login, later, &store);
    }
    let Err((Reason::Banned, headers)) = last else { panic!("no ban: {last:?}") };
    assert_eq!(header(&headers, "retry-after"), Some("86400"));
    assert!(matches!(outcome(&engine, &other, later + 3600 * S, &store), Err((Reason::Banned, _))));
    assert!(outcome(&engine, &other, later + 86_401 * S, &store).is_ok());
}

#[test]
fn failing_store_follows_the_failure_mode() {
    struct Broken;
    impl CounterStore for Broken {
        fn get(&self, _: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
            Err(StoreError::Unavailable)
        }
        fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
            Err(StoreError::Unavailable)
        }
    }
    let closed = engine_with(per_ip(5, 60));
    let Decision::Deny(d) = closed.decide(&Req::get("/public/x").view(), NOW_US, &Broken) else { panic!("allowed") };
    assert_eq!(d.reason, Reason::Unavailable);
    let mut cfg = config();
    cfg["rate_limits"] = per_ip(5, 60);
    cfg["failure_mode"] = json!("open");
    let open = Engine::new(meshgate_core::compile(cfg.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}")));
    assert!(matches!(open.decide(&Req::get("/public/x").view(), NOW_US, &Broken), Decision::Allow(_)));
}

#[test]
fn slot_tables_stay_bounded_and_evict_the_idlest() {
    let store = MemoryStore::default();
    let table = SlotTable::new("t:".to_owned(), 1);
    table.init(&store).unwrap_or_else(|e| panic!("{e}"));
    for hash in 0..10u64 {
        table
            .update(&store, hash, 100, |mut e| {
                e.expires_us = 1000 + hash;
                (Some(e), ())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (value, _) = store.get("t:0").unwrap_or_default();
    assert_eq!(value.map(|v| v.len()), Some(4 * 40), "one slot holds at most 4 entries");
    // The survivors are the four expiring last.
    let seen = table.update(&store, 9, 100, |e| (None, e.expires_us)).unwrap_or(0);
    assert_eq!(seen, 1009);
    let evicted = table.update(&store, 0, 100, |e| (None, e.expires_us)).unwrap_or(1);
    assert_eq!(evicted, 0);
    // Expired entries free their place.
    let fresh = table.update(&store, 9, 5000, |e| (None, e.expires_us)).unwrap_or(1);
    assert_eq!(fresh, 0);
}

#[test]
fn bad_rate_limit_configs_name_the_field() {
    let cases = [
        (json!({"rules": [{"name": "a", "limit": 0, "window_secs": 1}]}), "rate_limits.rules[0].limit"),
        (json!({"rules": [{"name": "a", "limit": 1, "window_secs": 0}]}), "rate_limits.rules[0].window_secs"),
        (json!({"rules": [{"name": "a", "limit": 5, "burst": 6, "window_secs": 1}]}), "rate_limits.rules[0].burst"),
        (
            json!({"rules": [{"name": "a", "limit": 1, "window_secs": 1, "key": ["cookie"]}]}),
            "rate_limits.rules[0].key[0]",
        ),
        (json!({"rules": [{"name": "a b", "limit": 1, "window_secs": 1}]}), "rate_limits.rules[0].name"),
        (
            json!({"rules": [{"name": "a", "limit": 1, "window_secs": 1}, {"name": "a", "limit": 1, "window_secs": 1}]}),
            "rate_limits.rules[1].name",
        ),
        (json!({"client_ip": {"source": "x_forwarded_for", "trusted_hops": 0}}), "rate_limits.client_ip.trusted_hops"),
        (json!({"client_ip": {"source": "cookie"}}), "rate_limits.client_ip.source"),
    ];
    for (limits, field) in cases {
        let mut cfg = config();
        cfg["rate_limits"] = limits.clone();
        let err = meshgate_core::compile(cfg.to_string().as_bytes()).err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some(field), "{limits}");
    }
}

#[test]
fn a_keys_own_limit_applies_to_every_request_made_with_it() {
    let mut cfg = config();
    let key = api_key(7);
    if let Some(keys) = cfg["keys"]["api_keys"].as_array_mut() {
        keys.push(json!({"id": "key_limited", "digest": meshgate_core::apikey::digest(&key).to_hex(),
                         "subject": "user-k", "rate_limit": {"limit": 2, "window_secs": 60}}));
    }
    let engine = Engine::new(meshgate_core::compile(cfg.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}")));
    let store = MemoryStore::default();
    let req = Req::get("/api/x").header("x-api-key", &key);
    assert!(outcome(&engine, &req, NOW_US, &store).is_ok());
    assert!(outcome(&engine, &req, NOW_US, &store).is_ok());
    let Decision::Deny(d) = engine.decide(&req.view(), NOW_US, &store) else { panic!("third admitted") };
    assert_eq!(d.reason, Reason::RateLimited);
    assert_eq!(d.limit_events, vec![(RuleId::KeyLimit, RuleEvent::Limited)]);
    assert_eq!(header(&d.headers, "ratelimit-policy"), Some("\"key\";q=2;w=60"));
    // Another key is not affected.
    assert!(outcome(&engine, &Req::get("/api/x").header("x-api-key", &api_key(1)), NOW_US, &store).is_ok());
    // A bad limit on a key record is a config error naming it.
    let mut bad = config();
    bad["keys"]["api_keys"][0]["rate_limit"] = json!({"limit": 0, "window_secs": 60});
    let field = meshgate_core::compile(bad.to_string().as_bytes()).err().map(|e| e.field);
    assert_eq!(field.as_deref(), Some("keys.api_keys[0].rate_limit"));
}

#[test]
fn ipv6_clients_are_counted_per_64() {
    let store = MemoryStore::default();
    let engine = engine_with(per_ip(1, 60));
    assert!(outcome(&engine, &Req::get("/public/x").peer("[2001:db8:1:2::1]:443"), NOW_US, &store).is_ok());
    let same_64 = Req::get("/public/x").peer("[2001:db8:1:2:ffff::9]:443");
    assert!(outcome(&engine, &same_64, NOW_US, &store).is_err(), "same /64 shares the counter");
    assert!(outcome(&engine, &Req::get("/public/x").peer("[2001:db8:1:3::1]:443"), NOW_US, &store).is_ok());
    // IPv4-mapped addresses count as their IPv4 address.
    assert!(outcome(&engine, &Req::get("/public/x").peer("192.0.2.77:1"), NOW_US, &store).is_ok());
    assert!(outcome(&engine, &Req::get("/public/x").peer("[::ffff:192.0.2.77]:1"), NOW_US, &store).is_err());
}

/// A [`MemoryStore`] that counts reads (each one a host call and a copy in Envoy).
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    reads: std::cell::Cell<u64>,
}

impl CounterStore for CountingStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        self.reads.set(self.reads.get() + 1);
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.inner.set(key, value, cas)
    }
}

fn decide_ok(engine: &Engine, req: &Req, now_us: u64, store: &dyn CounterStore) -> bool {
    matches!(engine.decide(&req.view(), now_us, store), Decision::Allow(_))
}

fn per_ip_fast(limit: u32) -> Value {
    json!({"rules": [{"name": "per-ip", "key": ["ip"], "limit": limit, "window_secs": 1}]})
}

#[test]
fn lease_sizes_follow_the_rate() {
    use meshgate_core::ratelimit::{gcra::Gcra, lease_size};
    assert_eq!(lease_size(&Gcra::new(100, 60, 100)), 1, "slow limits stay exact");
    assert_eq!(lease_size(&Gcra::new(127, 1, 127)), 1);
    assert_eq!(lease_size(&Gcra::new(1_000, 1, 1_000)), 15);
    assert_eq!(lease_size(&Gcra::new(6_000_000, 60, 6_000_000)), 64);
    assert_eq!(lease_size(&Gcra::new(100_000, 1, 100)), 1, "a small burst keeps it exact");
}

#[test]
fn fast_limits_take_cells_in_batches_and_never_admit_more_than_the_limit() {
    let store = CountingStore::default();
    let a = engine_with(per_ip_fast(6_400));
    let b = engine_with(per_ip_fast(6_400));
    assert_eq!(a.config.rate_limits.rules[0].lease, 64);
    a.config.rate_limits.init(&store.inner).unwrap_or_else(|e| panic!("{e}"));
    let req = Req::get("/public/x");
    store.reads.set(0);
    let admitted = (0..8_000).filter(|i| decide_ok(if i % 2 == 0 { &a } else { &b }, &req, NOW_US, &store)).count();
    // Every cell taken is used: exactly the burst, from two workers.
    assert_eq!(admitted, 6_400);
    // 6 400 / 64 takes, plus the refusals (no cell in hand, so shared data is asked).
    let reads = store.reads.get();
    assert!(reads <= 100 + 1_600 + 4, "{reads} shared reads for 8 000 requests");
    assert!(reads < 8_000 / 4, "{reads}");
}

#[test]
fn held_cells_expire_and_are_never_counted_twice() {
    let store = CountingStore::default();
    let a = engine_with(per_ip_fast(6_400));
    let req = Req::get("/public/x");
    assert!(decide_ok(&a, &req, NOW_US, &store));
    let after_take = store.reads.get();
    for i in 0..63 {
        assert!(decide_ok(&a, &req, NOW_US + i, &store), "held cell {i}");
    }
    assert_eq!(store.reads.get(), after_take, "63 held cells, no shared read");
    // The 65th request takes again.
    assert!(decide_ok(&a, &req, NOW_US + 100, &store));
    assert_eq!(store.reads.get(), after_take + 1);
    // Past the hold time the rest are dropped: the next request asks shared data.
    assert!(decide_ok(&a, &req, NOW_US + 100 + LEASE, &store));
    assert_eq!(store.reads.get(), after_take + 2);
    // A second worker gets the rest of the refilled burst: the 64 cells the first one took
    // at that moment are counted in shared data.
    let b = engine_with(per_ip_fast(6_400));
    let admitted = (0..10_000).filter(|_| decide_ok(&b, &req, NOW_US + 200 + LEASE, &store)).count();
    assert!((6_330..=6_336).contains(&admitted), "{admitted}");
}

const LEASE: u64 = meshgate_core::ratelimit::LEASE_TTL_US;

#[test]
fn allowed_responses_with_fields_stay_exact() {
    let store = CountingStore::default();
    let mut limits = per_ip_fast(6_400);
    limits["headers_on_allowed"] = json!(true);
    let a = engine_with(limits);
    let req = Req::get("/public/x");
    for _ in 0..10 {
        assert!(decide_ok(&a, &req, NOW_US, &store));
    }
    assert_eq!(store.reads.get(), 10, "one shared read per request");
}
