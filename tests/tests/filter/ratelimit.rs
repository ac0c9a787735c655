//! Rate limits across workers: counters in shared data with CAS, IETF `RateLimit` fields,
//! 429 problem bodies, shadow mode, client-IP sources, abuse lockouts.

use std::time::Duration;

use meshgate_tests::{Host, Outcome, Request, Stream, Vm, VmOptions};
use serde_json::{Value, json};

use crate::common::*;

fn limited_config(rate_limits: Value) -> Value {
    config_with(json!({ "rate_limits": rate_limits }))
}

fn per_user(limit: u32) -> Value {
    limited_config(json!({"rules": [
        {"name": "api-user", "routes": ["api"], "key": ["user"], "limit": limit, "window_secs": 60}
    ]}))
}

fn workers(config: &Value, n: usize) -> (Host, Vec<Vm>) {
    let host = Host::new();
    host.set_now(NOW);
    let vms = (0..n).map(|_| Vm::filter(&host, VmOptions::with_config(config.to_string())).unwrap()).collect();
    (host, vms)
}

fn send(vm: &mut Vm, req: &Request) -> (Outcome, Stream) {
    vm.roundtrip(req).unwrap_or_else(|e| panic!("{e}"))
}

fn status(outcome: &Outcome) -> u32 {
    match outcome {
        Outcome::Responded(r) => r.status,
        Outcome::Continued => 200,
        other => panic!("{other:?}"),
    }
}

fn user_request(sub: &str) -> Request {
    Request::get("/api/x").bearer(&token_with(json!({ "sub": sub })))
}

#[test]
fn quota_spent_gives_429_with_ietf_fields() {
    let (_host, mut vms) = workers(&per_user(3), 1);
    let vm = &mut vms[0];
    for _ in 0..3 {
        assert_eq!(status(&send(vm, &user_request("u1")).0), 200);
    }
    let (outcome, _) = send(vm, &user_request("u1"));
    let Outcome::Responded(r) = outcome else { panic!("{outcome:?}") };
    assert_eq!(r.status, 429);
    assert_eq!(r.body_json()["type"], "urn:meshgate:problem:rate-limited");
    assert_eq!(r.header("ratelimit-policy").as_deref(), Some("\"api-user\";q=3;w=60"));
    let state = r.header("ratelimit").unwrap_or_default();
    assert!(state.starts_with("\"api-user\";r=0;t="), "{state}");
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=60).contains(&retry), "retry-after {retry}");
}

#[test]
fn the_quota_is_shared_by_all_workers() {
    let (_host, mut vms) = workers(&per_user(4), 2);
    let mut allowed = 0;
    for i in 0..8 {
        if status(&send(&mut vms[i % 2], &user_request("u1")).0) == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "two workers must not each grant the full quota");
}

#[test]
fn the_window_refills_as_time_passes() {
    let (host, mut vms) = workers(&per_user(2), 1);
    let vm = &mut vms[0];
    send(vm, &user_request("u1"));
    send(vm, &user_request("u1"));
    assert_eq!(status(&send(vm, &user_request("u1")).0), 429);
    host.advance(Duration::from_secs(30));
    assert_eq!(status(&send(vm, &user_request("u1")).0), 200, "half the window refills one request");
    host.advance(Duration::from_secs(60));
    assert_eq!(status(&send(vm, &user_request("u1")).0), 200);
}

#[test]
fn users_have_separate_counters_and_anonymous_requests_are_not_counted() {
    let c = limited_config(json!({"rules": [
        {"name": "per-user", "key": ["user"], "limit": 1, "window_secs": 60}
    ]}));
    let (_host, mut vms) = workers(&c, 1);
    let vm = &mut vms[0];
    assert_eq!(status(&send(vm, &user_request("u1")).0), 200);
    assert_eq!(status(&send(vm, &user_request("u1")).0), 429);
    assert_eq!(status(&send(vm, &user_request("u2")).0), 200);
    for _ in 0..3 {
        assert_eq!(status(&send(vm, &Request::get("/health")).0), 200);
    }
}

#[test]
fn ip_rule_uses_the_peer_address() {
    let c = limited_config(json!({"rules": [
        {"name": "per-ip", "routes": ["health"], "key": ["ip"], "limit": 2, "window_secs": 60}
    ]}));
    let (_host, mut vms) = workers(&c, 1);
    let vm = &mut vms[0];
    let from = |ip: &str| Request::get("/health").source(&format!("{ip}:5000"));
    assert_eq!(status(&send(vm, &from("198.51.100.1")).0), 200);
    assert_eq!(status(&send(vm, &from("198.51.100.1")).0), 200);
    assert_eq!(status(&send(vm, &from("198.51.100.1")).0), 429);
    assert_eq!(status(&send(vm, &from("198.51.100.2")).0), 200);
}

#[test]
fn forwarded_for_counts_from_the_right() {
    let c = limited_config(json!({
        "client_ip": {"source": "x_forwarded_for", "trusted_hops": 1},
        "rules": [{"name": "per-ip", "routes": ["health"], "key": ["ip"], "limit": 1, "window_secs": 60}]
    }));
    let (_host, mut vms) = workers(&c, 1);
    let vm = &mut vms[0];
    let xff = |v: &str| Request::get("/health").header("x-forwarded-for", v);
    assert_eq!(status(&send(vm, &xff("10.9.9.9, 203.0.113.5")).0), 200);
    // The client controls the left part; changing it must not reset its counter.
    assert_eq!(status(&send(vm, &xff("10.1.1.1, 203.0.113.5")).0), 429);
    assert_eq!(status(&send(vm, &xff("10.9.9.9, 203.0.113.6")).0), 200);
}

#[test]
fn shadow_rules_count_but_never_refuse() {
    let c = limited_config(json!({"rules": [
        {"name": "trial", "key": ["user"], "limit": 1, "window_secs": 60, "shadow": true}
    ]}));
    let (host, mut vms) = workers(&c, 1);
    for _ in 0..3 {
        assert_eq!(status(&send(&mut vms[0], &user_request("u1")).0), 200);
    }
    vms[0].tick().unwrap();
    assert_eq!(host.metric("meshgate.ratelimit.trial.shadow_limited").map(|m| m.value), Some(2));
    assert_eq!(host.metric("meshgate.ratelimit.trial.allowed").map(|m| m.value), Some(1));
}

#[test]
fn lost_cas_races_are_retried_without_losing_counts() {
    let (host, mut vms) = workers(&per_user(5), 2);
    host.contend(6);
    let mut allowed = 0;
    for i in 0..10 {
        if status(&send(&mut vms[i % 2], &user_request("u1")).0) == 200 {
            allowed += 1;
        }
    }
    assert_eq!(host.pending_contention(), 0, "the filter never wrote conditionally");
    assert_eq!(allowed, 5, "a retried write must neither lose nor double a count");
}

#[test]
fn allowed_responses_can_carry_ratelimit_fields() {
    let c = limited_config(json!({
        "headers_on_allowed": true,
        "legacy_headers": true,
        "rules": [{"name": "api-user", "routes": ["api"], "key": ["user"], "limit": 3, "window_secs": 60}]
    }));
    let (_host, mut vms) = workers(&c, 1);
    let vm = &mut vms[0];
    let ex = vm.send(&user_request("u1")).unwrap();
    assert_eq!(ex.outcome, Outcome::Continued);
    let mut upstream = meshgate_tests::Headers::default();
    upstream.add(":status", b"200");
    vm.response_headers(ex.id, upstream, true).unwrap();
    let h = vm.close(ex.id).unwrap().response_headers;
    assert_eq!(h.get("ratelimit-policy").as_deref(), Some("\"api-user\";q=3;w=60"));
    assert!(h.get("ratelimit").unwrap_or_default().starts_with("\"api-user\";r=2"), "{h:?}");
    assert_eq!(h.get("x-ratelimit-limit").as_deref(), Some("3"));
}

#[test]
fn repeated_violations_lock_the_client_out() {
    let mut c = config();
    c["routes"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"name": "login", "path": {"exact": "/login"}, "policy": {"access": "public"}}));
    c["rate_limits"] = json!({"abuse": {
        "routes": ["login"], "limit": 2, "window_secs": 60, "violations": 2, "lockout_secs": 600
    }});
    let (host, mut vms) = workers(&c, 2);
    let login = || Request::with("POST", "/login").source("192.0.2.50:4000");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (o, _) = send(&mut vms[i % 2], &login());
        statuses.push(match &o {
            Outcome::Responded(r) => r.body_json()["type"].as_str().unwrap_or("").to_string(),
            _ => "ok".into(),
        });
    }
    assert_eq!(statuses[..2], ["ok", "ok"], "{statuses:?}");
    assert!(statuses.last().unwrap().ends_with("locked-out"), "{statuses:?}");
    // Another client is not affected; the lockout ends after its duration.
    assert_eq!(status(&send(&mut vms[0], &Request::with("POST", "/login").source("192.0.2.51:1")).0), 200);
    host.advance(Duration::from_secs(700));
    assert_eq!(status(&send(&mut vms[1], &login()).0), 200);
}

#[test]
fn invalid_rate_limit_rules_are_rejected_at_configure() {
    for rules in [
        json!([{"name": "x", "limit": 0, "window_secs": 60}]),
        json!([{"name": "x", "limit": 5, "window_secs": 0}]),
        json!([{"name": "x", "limit": 5, "window_secs": 60, "burst": 6}]),
        json!([{"name": "x", "limit": 5, "window_secs": 60, "key": ["nonsense"]}]),
    ] {
        let err = meshgate_tests::Scenario::new()
            .config(limited_config(json!({ "rules": rules })))
            .configure()
            .expect_err("accepted");
        assert!(err.log_text().contains("rate_limits"), "{err}");
    }
}

#[test]
fn a_scenario_can_spend_the_quota_before_its_request() {
    let r = scenario_on(per_user(1))
        .before(|vm| vm.roundtrip(&user_request("u1")).map(|_| ()))
        .request(|_| user_request("u1"))
        .run();
    assert_denied(&r, 429, "rate-limited");
}

#[test]
fn endless_cas_contention_follows_the_failure_mode() {
    for (mode, expected) in [("closed", 503), ("open", 200)] {
        let mut c = per_user(100);
        c["failure_mode"] = json!(mode);
        let (host, mut vms) = workers(&c, 1);
        host.contend(u32::MAX);
        let (outcome, stream) = send(&mut vms[0], &user_request("u1"));
        assert_eq!(status(&outcome), expected, "failure_mode {mode}: {outcome:?}");
        if expected == 200 {
            // Failing open lets the request through, but never with an identity nobody checked.
            assert!(
                !stream.request_headers.contains("x-user-id")
                    || stream.request_headers.get("x-user-id").as_deref() == Some("u1")
            );
        } else {
            let Outcome::Responded(r) = outcome else { unreachable!() };
            assert_eq!(r.body_json()["type"], "urn:meshgate:problem:unavailable");
        }
    }
}

#[test]
fn a_worker_starting_later_keeps_the_counts() {
    let (host, mut vms) = workers(&per_user(2), 1);
    send(&mut vms[0], &user_request("u1"));
    send(&mut vms[0], &user_request("u1"));
    let mut late = Vm::filter(&host, VmOptions::with_config(per_user(2).to_string())).unwrap();
    assert_eq!(status(&send(&mut late, &user_request("u1")).0), 429);
    assert_eq!(status(&send(&mut vms[0], &user_request("u1")).0), 429);
}

#[test]
fn failing_open_still_strips_spoofed_identity_headers() {
    // ARCHITECTURE, pipeline step 1: identity headers are stripped "always" — also when the
    // filter cannot decide and lets the request through (failure_mode open).
    let mut c = limited_config(json!({"rules": [
        {"name": "per-ip", "routes": ["health"], "key": ["ip"], "limit": 100, "window_secs": 60}
    ]}));
    c["failure_mode"] = json!("open");
    let (host, mut vms) = workers(&c, 1);
    host.contend(u32::MAX);
    let req = Request::get("/health").header("x-user-roles", "admin").header("x-auth-method", "admin");
    let (outcome, stream) = send(&mut vms[0], &req);
    assert_eq!(outcome, Outcome::Continued);
    assert!(host.pending_contention() < u32::MAX, "the store was never reached");
    let h = &stream.request_headers;
    assert!(
        !h.contains("x-user-roles") && !h.contains("x-auth-method"),
        "spoofed identity reached the upstream: {h:?}"
    );
}
