//! Runs many decisions of one kind, for `valgrind --tool=callgrind`:
//! `cargo run --release -p meshgate-core --example profile_decide -- hs256 20000`.

#[path = "../tests/support/mod.rs"]
mod support;

use meshgate_core::ratelimit::table::MemoryStore;
use std::hint::black_box;
use support::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("hs256", String::as_str);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    // HS256 and API keys only: the fixture's RSA key generation is random
    // and would swamp the instruction counts.
    use base64::Engine as _;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(HS_SECRET);
    let mut cfg = config_with_keys(serde_json::json!([{"kty": "oct", "kid": "hs1", "k": k}]));
    if kind == "ratelimit" {
        cfg["rate_limits"] =
            serde_json::json!({"rules": [{"name": "u", "key": ["user"], "limit": 1_000_000_000u32, "window_secs": 1}]});
    }
    let engine =
        meshgate_core::Engine::new(meshgate_core::compile(cfg.to_string().as_bytes()).unwrap_or_else(|e| fail(&e)));
    let store = MemoryStore::default();
    let req = match kind {
        "apikey" => Req::get("/api/x").header("x-api-key", &api_key(1)),
        "anon" => Req::get("/public/x"),
        _ => Req::get("/api/x").bearer(&hs(claims(|_| {}))),
    };
    for _ in 0..n {
        black_box(engine.decide(black_box(&req.view()), NOW_US, &store));
    }
}

/// Reports a setup error and exits (a benchmark binary, not filter code).
fn fail<T>(error: &dyn std::fmt::Display) -> T {
    eprintln!("setup failed: {error}");
    std::process::exit(1)
}
