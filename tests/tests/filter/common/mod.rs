//! Shared fixtures for the filter scenario tests: a realistic plugin configuration, tokens
//! and keys that match it.
#![allow(dead_code)]

use meshgate_tests::tokens;
use serde_json::{Value, json};

/// The scenarios' wall clock.
pub const NOW: u64 = 1_700_000_000;
/// Issuer of the test tokens.
pub const ISSUER: &str = "https://auth.meshgate.test";
/// Audience the routes accept.
pub const AUDIENCE: &str = "api";
/// HS256 secret of key `k1` (32 bytes, the filter's minimum).
pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// A second key of the same issuer.
pub const SECRET2: &[u8] = b"fedcba9876543210fedcba9876543210";

/// The API key the config knows (prefix `mg`).
pub fn api_key() -> String {
    tokens::api_key("mg", &[7u8; 32])
}

/// A well-formed key the config does not know.
pub fn unknown_api_key() -> String {
    tokens::api_key("mg", &[9u8; 32])
}

/// An API key that expired an hour before [`NOW`].
pub fn expired_api_key() -> String {
    tokens::api_key("mg", &[8u8; 32])
}

/// The service key the config knows.
pub fn service_key() -> String {
    tokens::api_key("svc", &[5u8; 32])
}

/// The admin key the config knows.
pub fn admin_key() -> String {
    tokens::api_key("adm", &[6u8; 32])
}

/// Claims of a valid user token: roles `admin`,`dev`, scopes `reports:read profile`, app
/// `billing`, session `sess-9`.
pub fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "iat": NOW - 60,
        "exp": NOW + 3600,
        "jti": "tok-1",
        "sid": "sess-9",
        "roles": ["admin", "dev"],
        "scope": "reports:read profile",
        "app_id": "billing",
    })
}

/// `claims()` with some fields replaced (`null` removes a field).
pub fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().expect("object").iter() {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A valid HS256 token with [`claims`], signed by `k1`.
pub fn token() -> String {
    tokens::hs256("k1", &claims(), SECRET)
}

/// A token with changed claims, signed by `k1`.
pub fn token_with(changes: Value) -> String {
    tokens::hs256("k1", &claims_with(changes), SECRET)
}

fn key_record(id: &str, key: &str, subject: &str, extra: Value) -> Value {
    let mut r = json!({"id": id, "digest": tokens::sha256_hex(key.as_bytes()), "subject": subject});
    for (k, v) in extra.as_object().expect("object") {
        r[k] = v.clone();
    }
    r
}

/// The scenarios' plugin configuration.
pub fn config() -> Value {
    json!({
        "issuers": [{
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "keys": [
                {"kty": "oct", "kid": "k1", "k": tokens::b64url(SECRET)},
                {"kty": "oct", "kid": "k2", "k": tokens::b64url(SECRET2)}
            ]
        }],
        "keys": {
            "api_keys": [
                key_record("key-1", &api_key(), "svc-reporting",
                    json!({"app_id": "reports", "roles": ["reader"], "scopes": ["reports:read"]})),
                key_record("key-old", &expired_api_key(), "svc-old", json!({"expires_at": NOW - 3600}))
            ],
            "service_keys": [key_record("svc-1", &service_key(), "svc-billing",
                json!({"app_id": "billing", "roles": ["service"]}))],
            "admin_keys": [key_record("adm-1", &admin_key(), "ops", json!({"roles": ["admin"]}))]
        },
        "routes": [
            {"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}},
            {"name": "internal", "path": {"prefix": "/internal"}, "policy": {"access": "deny"}},
            {"name": "admin", "path": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
            {"name": "ops", "path": {"prefix": "/ops"}, "policy": {"roles_all": ["admin", "oncall"]}},
            {"name": "reports", "path": {"prefix": "/reports"}, "policy": {"scopes": ["reports:read"]}},
            {"name": "exports", "path": {"prefix": "/exports"}, "policy": {"scopes": ["reports:write"]}},
            {"name": "billing", "path": {"prefix": "/billing"}, "policy": {"apps": ["billing"]}},
            {"name": "catalog", "path": {"prefix": "/catalog"}, "policy": {"guest": true}},
            {"name": "jwt-only", "path": {"prefix": "/me"}, "policy": {"credentials": ["jwt"]}},
            {"name": "item", "path": {"template": "/items/{id}"}, "methods": ["GET", "PUT"], "policy": {}},
            {"name": "tenant", "host": "*.tenant.test", "path": {"prefix": "/"}, "policy": {"access": "public"}},
            {"name": "api", "path": {"prefix": "/api"}, "policy": {}}
        ]
    })
}

/// [`config`] with top-level fields replaced.
pub fn config_with(changes: Value) -> Value {
    let mut c = config();
    for (k, v) in changes.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

/// A scenario on [`config`] at [`NOW`].
pub fn scenario() -> meshgate_tests::Scenario {
    scenario_on(config())
}

/// A scenario on another configuration at [`NOW`].
pub fn scenario_on(config: Value) -> meshgate_tests::Scenario {
    meshgate_tests::Scenario::new().config(config).now(NOW)
}

/// Asserts a denial: status, problem+json content type, stable `type`, `status` in the body;
/// returns the body.
pub fn assert_denied(r: &meshgate_tests::ScenarioResult, status: u32, slug: &str) -> Value {
    let d = r.denial();
    let body = d.body_json();
    assert_eq!(
        (d.status, body["type"].as_str()),
        (status, Some(format!("urn:meshgate:problem:{slug}").as_str())),
        "body: {body}; logs:\n{}",
        r.log_text()
    );
    assert_eq!(d.header("content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string(), "{body}");
    body
}

/// The `WWW-Authenticate` header of the denial.
pub fn challenge(r: &meshgate_tests::ScenarioResult) -> String {
    r.denial().header("www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate in {:?}", r.denial().headers))
}

/// Runs `GET path` with extra headers on [`config`].
pub fn get(path: &str, headers: &[(&str, &str)]) -> meshgate_tests::ScenarioResult {
    let path = path.to_string();
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    scenario()
        .request(move |mut r| {
            r = r.path(&path);
            for (k, v) in &headers {
                r = r.header(k, v);
            }
            r
        })
        .run()
}

/// `GET path` with a bearer token.
pub fn get_with_token(path: &str, token: &str) -> meshgate_tests::ScenarioResult {
    get(path, &[("authorization", &format!("Bearer {token}"))])
}
