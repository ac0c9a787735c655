//! Fixtures and invariants shared by the fuzz targets (`fuzz_targets/`).
//!
//! Every target calls the core's public API the way the wasm glue does, then
//! checks properties that must hold for any input: no panic (libFuzzer
//! reports one as a crash), header values the host can send, decisions that
//! do not change when the request is replayed in its canonical form.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use meshgate_core::engine::{Decision, Engine, Request};
use meshgate_core::header_map::HeaderPair;
use meshgate_core::ratelimit::table::{CounterStore, MemoryStore};
use meshgate_core::{CompiledConfig, LocalResponse, apikey};
use meshgate_wire::config::ProblemDetails;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

/// The fixed "now" of every target (unix seconds).
pub const NOW: u64 = 1_800_000_000;
/// [`NOW`] in microseconds.
pub const NOW_US: u64 = NOW * 1_000_000;
/// The fixture issuer.
pub const ISS: &str = "https://auth.fuzz";
/// The fixture HS256 secret (kid `hs1`).
pub const HS_SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

/// The fixture API key (`mg_…`), known to the fixture config.
pub fn api_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| apikey::generate("mg", &[7; 32]).unwrap_or_default())
}

/// Base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.HMAC-SHA256(secret)`: a token whose signature verifies,
/// so the claim handling behind the signature check is reached.
pub fn hs_sign(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(HS_SECRET).unwrap_or_else(|_| unreachable!());
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// A realistic plugin configuration: every route shape, every credential
/// kind, an HS256 issuer, a rate limit with headers on allowed responses.
pub fn config_json(case_insensitive: bool) -> Value {
    json!({
        "routes": [
            {"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}},
            {"name": "public", "path": {"prefix": "/public"}, "policy": {"access": "public"}},
            {"name": "admin-host", "host": "admin.example.com", "path": {"prefix": "/"},
             "policy": {"roles_all": ["admin", "ops"]}},
            {"name": "wild", "host": "*.tenants.example", "path": {"prefix": "/"}, "policy": {"access": "authenticated"}},
            {"name": "admin", "path": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
            {"name": "reports", "path": {"template": "/reports/{id}/{*}"}, "methods": ["GET"],
             "policy": {"scopes": ["reports:read"]}},
            {"name": "catalog", "path": {"prefix": "/catalog"}, "policy": {"guest": true}},
            {"name": "internal", "path": {"prefix": "/internal"}, "policy": {"credentials": ["service"]}},
            {"name": "blocked", "path": {"prefix": "/blocked"}, "policy": {"access": "deny"}},
            {"name": "api", "path": {"prefix": "/api"}, "policy": {}}
        ],
        "default_policy": {"access": "deny"},
        "issuers": [{"issuer": ISS, "audiences": ["api"], "clock_skew_secs": 30,
                     "algorithms": ["HS256", "EdDSA", "ES256", "RS256"],
                     "keys": [{"kty": "oct", "kid": "hs1", "alg": "HS256", "k": b64(HS_SECRET)}]}],
        "keys": {
            "api_key_prefixes": ["mg"],
            "api_keys": [{"id": "key_good", "digest": apikey::digest(api_key()).to_hex(), "subject": "user-k",
                          "app_id": "billing", "roles": ["reader"], "scopes": ["reports:read"]}]
        },
        "paths": {"case_insensitive": case_insensitive},
        "rate_limits": {"rules": [{"name": "per-ip", "key": ["ip"], "limit": 1000, "window_secs": 60}],
                        "headers_on_allowed": true, "legacy_headers": true},
        "security_headers": {"content_type_options": true}
    })
}

/// The compiled fixture configuration.
pub fn config(case_insensitive: bool) -> Arc<CompiledConfig> {
    static CS: OnceLock<Arc<CompiledConfig>> = OnceLock::new();
    static CI: OnceLock<Arc<CompiledConfig>> = OnceLock::new();
    let cell = if case_insensitive { &CI } else { &CS };
    Arc::clone(cell.get_or_init(|| {
        let text = config_json(case_insensitive).to_string();
        match meshgate_core::compile(text.as_bytes()) {
            Ok(c) => Arc::new(c),
            Err(e) => panic!("fixture config does not compile: {e}"),
        }
    }))
}

/// A fresh engine over the fixture configuration, with revocations.
pub fn engine(case_insensitive: bool) -> Engine {
    let mut engine = Engine::from_shared(config(case_insensitive));
    engine.revocations.revoke_token("jti-revoked", NOW + 3600);
    engine.revocations.revoke_subject("user-logged-out", NOW - 10, NOW + 3600);
    engine
}

/// A header value the host can send: visible ASCII and spaces, no CR/LF.
pub fn assert_header_value(name: &str, value: &str) {
    assert!(
        value.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
        "header {name} has an unsendable value {value:?}"
    );
    assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'), "bad header name {name:?}");
}

/// Checks a rendered local response: sendable headers, JSON problem body
/// whose `status` is the response status.
pub fn assert_local_response(resp: &LocalResponse) {
    assert!((400..=599).contains(&resp.status), "status {}", resp.status);
    for (n, v) in &resp.headers {
        assert_header_value(n, v);
    }
    let body: Value = match serde_json::from_str(&resp.body) {
        Ok(v) => v,
        Err(e) => panic!("problem body is not JSON: {e}: {:?}", resp.body),
    };
    assert_eq!(body["status"].as_u64(), Some(u64::from(resp.status)));
    let ty = body["type"].as_str().unwrap_or_default();
    assert!(ty.starts_with("urn:meshgate:problem:"), "type {ty}");
}

/// `GET /api/x` on `api.example.com` from `10.0.0.1` with `headers`: the
/// request the targets that vary only headers send.
pub fn api_request<'a>(headers: &'a [HeaderPair<'a>]) -> Request<'a> {
    Request { method: "GET", path: b"/api/x", authority: "api.example.com", headers, peer: Some("10.0.0.1") }
}

/// Runs one request through `engine` and checks the decision's output:
/// an allow only sets sendable identity headers; a denial renders cleanly.
/// Returns the matched route name on allow, `None` on denial.
pub fn decide_checked(engine: &Engine, req: &Request<'_>) -> Option<String> {
    decide_checked_in(engine, req, &MemoryStore::default())
}

/// [`decide_checked`] with the caller's store (synced state lives there).
pub fn decide_checked_in(engine: &Engine, req: &Request<'_>, store: &dyn CounterStore) -> Option<String> {
    match engine.decide(req, NOW_US, store) {
        Decision::Allow(allow) => {
            for (n, v) in allow.set() {
                assert_header_value(n, &v.to_string());
            }
            for (n, v) in &allow.response_headers {
                assert_header_value(n, v);
            }
            if let Some(p) = &allow.rewrite_path {
                // The query is passed through as the client sent it (UTF-8
                // checked, controls refused), so non-ASCII may remain there.
                assert!(p.starts_with('/'), "rewritten path {p:?}");
                assert!(!p.chars().any(|c| c.is_control() || c == ' ' || c == '#'), "rewritten path {p:?}");
            }
            Some(allow.route.to_owned())
        }
        Decision::Deny(denial) => {
            for details in [ProblemDetails::Full, ProblemDetails::Minimal] {
                assert_local_response(&denial.render(&engine.config.realm, details));
            }
            None
        }
    }
}

/// Splits `data` at the first `sep` byte: (before, after).
pub fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
