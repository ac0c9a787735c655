//! What one warm request costs in host calls. In V8 every crossing of the Wasm boundary
//! (a host call, and the allocation callback of every call that returns data) costs about a
//! microsecond, more than the decision itself, so the per-request budget is pinned here:
//! `make bench` measures the time, these tests keep the count from creeping back.
//!
//! The policy is the one `make bench` runs (`bench/envoy/meshgate-plugin.json`): a JWT or an
//! API key, a route with roles and scopes, a per-user rate limit, two identity headers and
//! one security header on the response.

use std::collections::BTreeMap;

use meshgate_tests::{Headers, Host, Outcome, Request, Vm, VmOptions, host_calls};
use serde_json::{Value, json};

use crate::common::*;

fn bench_policy() -> Value {
    config_with(json!({
        "rate_limits": {"rules": [
            {"name": "per-user", "routes": ["api"], "key": ["user"], "limit": 6_000_000, "window_secs": 60}
        ]},
        "headers": {"user_id": "x-user-id", "user_roles": "x-user-roles"},
        "security_headers": {"content_type_options": true}
    }))
}

/// Host calls per request, averaged over `n` warm requests on one VM (the first request,
/// which fills the caches, is not counted).
fn per_request(config: &Value, request: &Request, n: u64) -> BTreeMap<&'static str, u64> {
    let host = Host::new();
    host.set_now(NOW);
    let mut vm = Vm::filter(&host, VmOptions::with_config(config.to_string())).expect("vm");
    let response = Headers(vec![(":status".into(), b"200".to_vec())]);
    let once = |vm: &mut Vm| {
        let exchange = vm.send(request).expect("send");
        assert!(matches!(exchange.outcome, Outcome::Continued), "{:?}", exchange.outcome);
        vm.response_headers(exchange.id, response.clone(), true).expect("response");
        vm.close(exchange.id).expect("close");
    };
    once(&mut vm);
    host_calls();
    for _ in 0..n {
        once(&mut vm);
    }
    let calls = host_calls();
    assert!(calls.values().all(|c| c % n == 0), "some calls are not per request: {calls:?}");
    calls.into_iter().map(|(name, c)| (name, c / n)).collect()
}

fn total(calls: &BTreeMap<&'static str, u64>) -> u64 {
    calls.values().sum()
}

#[test]
fn warm_jwt_request_with_rate_limit_and_identity_headers() {
    let calls = per_request(&bench_policy(), &Request::get("/api/orders").bearer(&token()), 16);
    println!("JWT, per-user limit, 2 identity headers, 1 security header: {calls:?}");
    // Read the headers, read the clock, write the edited headers, set the security header.
    // Rate-limit cells are taken 64 at a time and counters are flushed on the tick, so
    // neither shows up per request.
    assert_eq!(total(&calls), 4, "{calls:?}");
    assert_eq!(calls.get("proxy_set_header_map_pairs"), Some(&1), "{calls:?}");
}

#[test]
fn warm_api_key_request_with_rate_limit_and_identity_headers() {
    let request = Request::get("/api/orders").header("x-api-key", &api_key());
    let calls = per_request(&bench_policy(), &request, 16);
    println!("API key, per-user limit, 2 identity headers, 1 security header: {calls:?}");
    // The same four: hiding the key header is part of the one header write.
    assert_eq!(total(&calls), 4, "{calls:?}");
}
