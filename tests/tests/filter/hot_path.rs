//! What one warm request costs in host calls. In V8 every crossing of the Wasm boundary
//! costs about a microsecond, and the whole-map header write half a microsecond per header
//! it carries (bench/README, "Host calls, priced"), so the per-request calls are pinned here:
//! `make bench` measures the time, these tests keep the count from creeping back.
//!
//! The policy is the one `make bench` runs (`bench/envoy/meshgate-plugin.json`): a JWT or an
//! API key, a route with roles and scopes, a per-user rate limit, identity headers and one
//! security header on the response.

use std::collections::BTreeMap;

use meshgate_tests::{Headers, Host, Outcome, Program, Request, Vm, VmOptions, host_calls};
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

/// What one warm request costs: host calls by name, and Wasm fuel (about one unit per
/// instruction), averaged over `n` requests on one VM of `program` (the first request, which
/// fills the caches, is not counted).
struct Cost {
    calls: BTreeMap<&'static str, u64>,
    fuel: u64,
}

/// A configured VM of `program` and one request's round trip on it.
fn warm_vm(host: &Host, program: &Program, config: &Value) -> Vm {
    host.set_now(NOW);
    let mut vm = Vm::new(host, program, VmOptions::with_config(config.to_string())).expect("vm");
    vm.configure().expect("configure");
    vm
}

fn round_trip(vm: &mut Vm, request: &Request) {
    let exchange = vm.send(request).expect("send");
    assert!(!matches!(exchange.outcome, Outcome::Responded(_)), "{:?}", exchange.outcome);
    vm.response_headers(exchange.id, Headers(vec![(":status".into(), b"200".to_vec())]), true).expect("response");
    vm.close(exchange.id).expect("close");
}

fn cost_on(program: &Program, config: &Value, request: &Request, n: u64) -> Cost {
    let host = Host::new();
    let mut vm = warm_vm(&host, program, config);
    round_trip(&mut vm, request);
    host_calls();
    vm.take_fuel();
    for _ in 0..n {
        round_trip(&mut vm, request);
    }
    let calls = host_calls();
    assert!(calls.values().all(|c| c % n == 0), "some calls are not per request: {calls:?}");
    Cost { calls: calls.into_iter().map(|(name, c)| (name, c / n)).collect(), fuel: vm.take_fuel() / n }
}

fn per_request(config: &Value, request: &Request, n: u64) -> BTreeMap<&'static str, u64> {
    cost_on(Program::filter(), config, request, n).calls
}

fn total(calls: &BTreeMap<&'static str, u64>) -> u64 {
    calls.values().sum()
}

#[test]
fn warm_jwt_request_with_rate_limit_and_identity_headers() {
    let calls = per_request(&bench_policy(), &Request::get("/api/orders").bearer(&token()), 16);
    println!("JWT, per-user limit, identity headers, 1 security header: {calls:?}");
    // Read the headers, read the clock, set the six identity headers the token gives
    // (method, user, roles, scopes, app, session) one call each, set the security header.
    // Rate-limit cells are taken 64 at a time and counters are flushed on the tick, so
    // neither shows up per request.
    assert_eq!(calls.get("proxy_get_header_map_pairs"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("proxy_replace_header_map_value"), Some(&7), "{calls:?}");
    assert_eq!(calls.get("proxy_set_header_map_pairs"), None, "{calls:?}");
    assert_eq!(total(&calls), 9, "{calls:?}");
}

#[test]
fn warm_api_key_request_with_rate_limit_and_identity_headers() {
    let request = Request::get("/api/orders").header("x-api-key", &api_key());
    let calls = per_request(&bench_policy(), &request, 16);
    println!("API key, per-user limit, identity headers, 1 security header: {calls:?}");
    // Seven edits (six identity headers, the key header hidden) on a request of a handful
    // of headers: one whole-map write is the cheaper way here. Read, clock, write, security
    // header.
    assert_eq!(calls.get("proxy_set_header_map_pairs"), Some(&1), "{calls:?}");
    assert_eq!(total(&calls), 4, "{calls:?}");
}

/// A small request carrying many headers the filter owns: one whole-map write costs less
/// than a removal and a replacement each, and is what the filter does.
#[test]
fn spoofed_identity_headers_on_a_small_request_go_in_one_write() {
    let mut request = Request::get("/api/orders").bearer(&token());
    for name in ["x-user-id", "x-user-roles", "x-user-scopes", "x-auth-method", "x-app-id", "x-key-id", "x-session-id"]
    {
        request = request.header(name, "spoofed");
    }
    let calls = per_request(&bench_policy(), &request, 4);
    assert_eq!(calls.get("proxy_set_header_map_pairs"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("proxy_remove_header_map_value"), None, "{calls:?}");
}

/// Wasm instructions per warm request, next to the no-op filter `make bench` compares with
/// (`bench/noop-filter`, when built): the part of the gap that is our own code, as opposed
/// to host calls and Envoy's work. Printed for the record (`-- --nocapture`); the ceiling
/// only catches a large regression.
#[test]
fn wasm_work_per_request() {
    let jwt = Request::get("/api/orders").bearer(&token());
    let key = Request::get("/api/orders").header("x-api-key", &api_key());
    let public = Request::get("/health");
    let mut rows = Vec::new();
    for (label, request) in [("JWT", &jwt), ("API key", &key), ("public route", &public)] {
        let cost = cost_on(Program::filter(), &bench_policy(), request, 32);
        rows.push((label, cost.fuel, cost.calls.values().sum::<u64>()));
    }
    let noop = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bench/noop-filter/target/wasm32-wasip1/release/meshgate_bench_noop.wasm");
    if let Ok(bytes) = std::fs::read(&noop) {
        let program = Program::from_bytes(&bytes).expect("no-op filter");
        let cost = cost_on(&program, &json!({}), &jwt, 32);
        rows.push(("no-op filter", cost.fuel, cost.calls.values().sum::<u64>()));
    } else {
        println!("(no-op filter not built: `make bench-envoy` builds it)");
    }
    for (label, fuel, calls) in &rows {
        println!("{label:>14}: {fuel:>7} Wasm instructions, {calls} host calls per request");
    }
    for (label, fuel, _) in &rows {
        assert!(*fuel < 400_000, "{label}: {fuel} instructions per request");
    }
}

/// Not a check: a loop of warm requests to run under `perf record` with
/// `MESHGATE_PERFMAP=1` (README, "Profiling the filter"). `MESHGATE_PROFILE` picks
/// the request (`jwt`, `key`, `public`; default `jwt`), `MESHGATE_PROFILE_REQUESTS`
/// how many (default 100000).
#[test]
#[ignore = "a profiling loop, run by hand"]
fn profile_loop() {
    let request = match std::env::var("MESHGATE_PROFILE").as_deref() {
        Ok("key") => Request::get("/api/orders").header("x-api-key", &api_key()),
        Ok("public") => Request::get("/health"),
        _ => Request::get("/api/orders").bearer(&token()),
    };
    let n = std::env::var("MESHGATE_PROFILE_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let host = Host::new();
    let mut vm = warm_vm(&host, Program::filter(), &bench_policy());
    vm.take_fuel();
    for _ in 0..n {
        round_trip(&mut vm, &request);
    }
    println!("{n} requests, {} Wasm instructions each", vm.take_fuel() / n);
    for (k, v) in meshgate_tests::take_marks() {
        println!("{k:>28} {:>8}", v / n);
    }
}
