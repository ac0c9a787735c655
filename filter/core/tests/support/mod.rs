//! Fixtures for the core's table tests: a realistic config, keys of every
//! algorithm, token minting and request building.

#![allow(dead_code, missing_docs)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use meshgate_core::engine::{Engine, Request};
use meshgate_core::header_map::HeaderPair;
use meshgate_core::{apikey, compile};
use serde_json::{Value, json};
use std::sync::OnceLock;

pub const NOW: u64 = 1_800_000_000;
/// `NOW` in microseconds, as `Engine::decide` takes it.
pub const NOW_US: u64 = NOW * 1_000_000;
pub const ISS: &str = "https://auth.test";
pub const HS_SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

pub struct Keys {
    pub ed: Ed25519KeyPair,
    pub es: ES256KeyPair,
    pub rs: RS256KeyPair,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        ed: Ed25519KeyPair::generate().with_key_id("ed1"),
        es: ES256KeyPair::generate().with_key_id("es1"),
        rs: RS256KeyPair::generate(2048).expect("rsa").with_key_id("rs1"),
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn api_key(n: u8) -> String {
    apikey::generate("mg", &[n; 32]).expect("key")
}

pub fn service_key() -> String {
    apikey::generate("svc", &[200; 32]).expect("key")
}

pub fn admin_key() -> String {
    apikey::generate("adm", &[201; 32]).expect("key")
}

pub fn jwks() -> Value {
    let k = keys();
    let ed = k.ed.public_key().to_bytes();
    let es = k.es.public_key().public_key().to_bytes_uncompressed();
    let rs = k.rs.public_key().to_components();
    json!([
        {"kty": "oct", "kid": "hs1", "k": b64(HS_SECRET)},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": b64(&ed)},
        {"kty": "EC", "crv": "P-256", "kid": "es1", "x": b64(&es[1..33]), "y": b64(&es[33..65])},
        {"kty": "RSA", "kid": "rs1", "n": b64(&rs.n), "e": b64(&rs.e)},
    ])
}

fn key_record(id: &str, key: &str, subject: &str, extra: Value) -> Value {
    let mut record = json!({"id": id, "digest": apikey::digest(key).to_hex(), "subject": subject});
    if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    record
}

pub fn config() -> Value {
    config_with_keys(jwks())
}

/// The fixture config with these issuer keys (no key generation).
pub fn config_with_keys(jwks: Value) -> Value {
    json!({
        "routes": [
            {"name": "health", "path": {"exact": "/health"}, "policy": {"access": "public"}},
            {"name": "public", "path": {"prefix": "/public"}, "policy": {"access": "public"}},
            {"name": "admin-host", "host": "admin.example.com", "path": {"prefix": "/"},
             "policy": {"roles_all": ["admin", "ops"]}},
            {"name": "admin", "path": {"prefix": "/admin"}, "policy": {"roles_any": ["admin"]}},
            {"name": "reports", "path": {"template": "/reports/{id}"}, "methods": ["GET"],
             "policy": {"scopes": ["reports:read"]}},
            {"name": "billing", "path": {"prefix": "/billing"}, "policy": {"apps": ["billing"]}},
            {"name": "catalog", "path": {"prefix": "/catalog"}, "policy": {"guest": true}},
            {"name": "internal", "path": {"prefix": "/internal"}, "policy": {"credentials": ["service"]}},
            {"name": "ops", "path": {"prefix": "/ops"}, "policy": {"credentials": ["admin"]}},
            {"name": "jwt-only", "path": {"prefix": "/jwt"}, "policy": {"credentials": ["jwt"]}},
            {"name": "blocked", "path": {"prefix": "/blocked"}, "policy": {"access": "deny"}},
            {"name": "api", "path": {"prefix": "/api"}, "policy": {}}
        ],
        "issuers": [{"issuer": ISS, "audiences": ["api"], "keys": jwks, "clock_skew_secs": 30}],
        "keys": {
            "api_key_prefixes": ["mg"],
            "api_keys": [
                key_record("key_good", &api_key(1), "user-k", json!({"app_id": "billing", "roles": ["reader"], "scopes": ["reports:read"]})),
                key_record("key_expired", &api_key(2), "user-k", json!({"expires_at": NOW - 1})),
                key_record("key_revoked", &api_key(3), "user-k", json!({}))
            ],
            "service_keys": [key_record("svc_billing", &service_key(), "billing-svc", json!({"roles": ["service"]}))],
            "admin_keys": [key_record("adm_root", &admin_key(), "root", json!({"roles": ["admin"]}))]
        },
        "security_headers": {"content_type_options": true}
    })
}

pub fn engine() -> Engine {
    let compiled = compile(config().to_string().as_bytes()).expect("fixture config compiles");
    let mut engine = Engine::new(compiled);
    engine.revocations.revoke_key("key_revoked", NOW + 3600);
    engine.revocations.revoke_token("jti-revoked", NOW + 3600);
    engine.revocations.revoke_session("sid-revoked", NOW + 3600);
    engine.revocations.revoke_subject("user-logged-out", NOW - 10, NOW + 3600);
    engine
}

#[derive(Serialize, Deserialize, Default)]
pub struct Extra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Standard claims valid at NOW for user-1, with `edit` applied.
pub fn claims(edit: impl FnOnce(&mut JWTClaims<Extra>)) -> JWTClaims<Extra> {
    let mut c = JWTClaims {
        issued_at: Some(Duration::from_secs(NOW - 60)),
        expires_at: Some(Duration::from_secs(NOW + 900)),
        invalid_before: None,
        issuer: Some(ISS.to_owned()),
        subject: Some("user-1".to_owned()),
        audiences: Some(Audiences::AsString("api".to_owned())),
        jwt_id: Some("jti-1".to_owned()),
        nonce: None,
        custom: Extra {
            app_id: Some("shop".into()),
            roles: Some(vec!["admin".into(), "ops".into()]),
            scope: Some("reports:read orders:write".into()),
            sid: Some("sid-1".into()),
        },
    };
    edit(&mut c);
    c
}

pub fn hs(c: JWTClaims<Extra>) -> String {
    HS256Key::from_bytes(HS_SECRET).with_key_id("hs1").authenticate(c).expect("sign")
}

pub fn ed(c: JWTClaims<Extra>) -> String {
    keys().ed.sign(c).expect("sign")
}

pub fn es(c: JWTClaims<Extra>) -> String {
    keys().es.sign(c).expect("sign")
}

pub fn rs(c: JWTClaims<Extra>) -> String {
    keys().rs.sign(c).expect("sign")
}

/// A token assembled by hand: header and payload JSON, raw signature.
pub fn raw_token(header: &Value, payload: &Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()), b64(sig))
}

pub fn hs_raw(header: &Value, payload: &Value, secret: &[u8]) -> String {
    use hmac_sha256::HMAC;
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
    let mac = HMAC::mac(signing_input.as_bytes(), secret);
    format!("{signing_input}.{}", b64(&mac))
}

pub fn valid_payload() -> Value {
    json!({"iss": ISS, "aud": "api", "sub": "user-1", "exp": NOW + 900, "iat": NOW - 60, "roles": ["admin"]})
}

/// An owned request; `view()` borrows it as the engine's `Request`.
pub struct Req {
    pub method: String,
    pub path: String,
    pub authority: String,
    /// Leaked, so `view()` can lend them as the borrowed pairs a
    /// `Request` holds (the filter borrows them from the host's buffer);
    /// a test builds a handful of requests, a bench builds them once.
    pub headers: Vec<HeaderPair<'static>>,
    pub peer: Option<String>,
}

impl Req {
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            authority: "api.example.com".into(),
            headers: Vec::new(),
            peer: Some("192.0.2.10:40000".into()),
        }
    }

    pub fn header(self, name: &str, value: &str) -> Self {
        self.raw_header(name, value.as_bytes())
    }

    pub fn raw_header(mut self, name: &str, value: &[u8]) -> Self {
        let name: &'static str = Box::leak(name.into());
        self.headers.push((name, Box::leak(value.into())));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn peer(mut self, peer: &str) -> Self {
        self.peer = Some(peer.into());
        self
    }

    pub fn host(mut self, host: &str) -> Self {
        self.authority = host.into();
        self
    }

    pub fn view(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: self.path.as_bytes(),
            authority: &self.authority,
            headers: &self.headers,
            peer: self.peer.as_deref(),
        }
    }
}
