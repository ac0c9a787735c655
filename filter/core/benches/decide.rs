//! Cost of one decision in the core, natively, per credential type, with
//! and without a rate limit, and with a large revocation set. The Envoy
//! numbers (V8, whole proxy) are a separate benchmark; these isolate the
//! logic the filter adds.

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use meshgate_core::engine::{Decision, Engine};
use meshgate_core::ratelimit::table::MemoryStore;
use meshgate_core::revocation::RevocationSource;
use serde_json::json;
use std::hint::black_box;
use support::*;

fn run(c: &mut Criterion, name: &str, engine: &Engine, req: &Req, store: &MemoryStore) {
    assert!(matches!(engine.decide(&req.view(), NOW_US, store), Decision::Allow(_)), "{name} must be allowed");
    c.bench_function(name, |b| b.iter(|| black_box(engine.decide(black_box(&req.view()), NOW_US, store))));
}

fn with_limit() -> Engine {
    let mut cfg = config();
    cfg["rate_limits"] =
        json!({"rules": [{"name": "per-user", "key": ["user"], "limit": 1_000_000_000u32, "window_secs": 1}]});
    Engine::new(meshgate_core::compile(cfg.to_string().as_bytes()).unwrap_or_else(|e| fail(&e)))
}

fn benches(c: &mut Criterion) {
    let engine = engine();
    let store = MemoryStore::default();
    run(c, "decide/anonymous_public", &engine, &Req::get("/public/x"), &store);
    run(c, "decide/jwt_hs256", &engine, &Req::get("/api/x").bearer(&hs(claims(|_| {}))), &store);
    run(c, "decide/jwt_eddsa", &engine, &Req::get("/api/x").bearer(&ed(claims(|_| {}))), &store);
    run(c, "decide/jwt_es256", &engine, &Req::get("/api/x").bearer(&es(claims(|_| {}))), &store);
    run(c, "decide/jwt_rs256", &engine, &Req::get("/api/x").bearer(&rs(claims(|_| {}))), &store);
    run(c, "decide/api_key", &engine, &Req::get("/api/x").header("x-api-key", &api_key(1)), &store);

    let limited = with_limit();
    limited.config.rate_limits.init(&store).unwrap_or_else(|e| fail(&e));
    run(c, "decide/jwt_hs256+rate_limit", &limited, &Req::get("/api/x").bearer(&hs(claims(|_| {}))), &store);

    let mut revoked = engine.clone();
    for i in 0..100_000u64 {
        revoked.revocations.revoke_token(format!("revoked-{i}"), NOW + 3600);
    }
    run(c, "decide/jwt_hs256+1e5_revocations", &revoked, &Req::get("/api/x").bearer(&hs(claims(|_| {}))), &store);
    c.bench_function("revocation/lookup_1e5", |b| {
        b.iter(|| {
            black_box(revoked.revocations.token_revoked(
                Some("revoked-77777"),
                Some("sid-1"),
                Some("user-1"),
                Some(NOW),
            ))
        })
    });
}

criterion_group! {
    name = decide;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(decide);

/// Reports a setup error and exits (a benchmark binary, not filter code).
fn fail<T>(error: &dyn std::fmt::Display) -> T {
    eprintln!("setup failed: {error}");
    std::process::exit(1)
}
