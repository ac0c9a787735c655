//! Heap allocations per warm decision. In the Wasm filter an allocation
//! and its free cost a few hundred instructions of dlmalloc, which is most
//! of what separates meshgate from the no-op filter once the caches are
//! warm, so the count is pinned here (deterministic, unlike time): a change
//! that adds one to the hot path fails this test and has to say why.
//!
//! The policy is the one `make bench` runs (`bench/envoy/meshgate-plugin.json`):
//! a JWT or an API key, a route with a per-user rate limit, two identity
//! headers.

// A counting global allocator is the one way to see allocations from safe
// code's point of view; it only forwards to `System` (test code, not the filter).
#![allow(unsafe_code)]

mod support;

use meshgate_core::engine::{Decision, Engine};
use meshgate_core::ratelimit::table::MemoryStore;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use support::*;

/// Counts this thread's allocations (tests run on several threads).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a thread-local `Cell` with a const initialiser, which does not
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn bench_engine() -> (Engine, MemoryStore) {
    let mut cfg = config();
    cfg["rate_limits"] = serde_json::json!({"rules": [
        {"name": "per-user", "routes": ["api"], "key": ["user"], "limit": 1_000_000_000u32, "window_secs": 60}
    ]});
    cfg["headers"] = serde_json::json!({"user_id": "x-user-id", "user_roles": "x-user-roles"});
    let compiled = meshgate_core::compile(cfg.to_string().as_bytes()).expect("bench config compiles");
    let engine = Engine::new(compiled);
    let store = MemoryStore::default();
    engine.config.rate_limits.init(&store).expect("limits");
    (engine, store)
}

/// What Envoy hands the filter besides the credential.
fn envoy_request(path: &str) -> Req {
    Req::get(path)
        .header(":scheme", "http")
        .header("user-agent", "wrk")
        .header("accept", "*/*")
        .header("x-forwarded-proto", "http")
        .header("x-request-id", "6f1c2a8e-0b4d-4c57-9a51-0c1d2e3f4a5b")
}

/// Allocations per warm decision (the first decisions fill the caches and
/// take a batch of rate-limit cells; the average over many is what counts).
fn per_decision(engine: &Engine, store: &MemoryStore, req: &Req) -> f64 {
    for _ in 0..4 {
        assert!(matches!(engine.decide(&req.view(), NOW_US, store), Decision::Allow(_)));
    }
    let n = 1000u32;
    let before = allocations();
    for _ in 0..n {
        let decision = engine.decide(&req.view(), NOW_US, store);
        assert!(matches!(decision, Decision::Allow(_)));
    }
    (allocations() - before) as f64 / f64::from(n)
}

#[test]
fn warm_decisions_allocate_little() {
    let (engine, store) = bench_engine();
    let token = hs(claims(|c| c.custom.roles = Some(vec!["reader".into()])));
    // What is left: the rate-limit rule's key parts, the applied verdicts
    // and the report's events (three short `Vec`s), plus the list of headers
    // to remove when there is one (the API key is hidden from upstreams).
    // A public route with a canonical path allocates nothing.
    let cases = [
        ("JWT", envoy_request("/api/orders").bearer(&token), 3.5),
        ("API key", envoy_request("/api/orders").header("x-api-key", &api_key(1)), 4.5),
        ("public route", envoy_request("/health"), 0.0),
    ];
    for (label, req, ceiling) in &cases {
        let count = per_decision(&engine, &store, req);
        println!("{label:>12}: {count:.2} allocations per warm decision");
        assert!(count <= *ceiling, "{label}: {count} allocations per warm decision (ceiling {ceiling})");
    }
}
