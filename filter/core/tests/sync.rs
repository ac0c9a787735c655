//! Applying the sync feed: versions only move forward, deltas only on their
//! base, responses all-or-nothing, and what they carry changes decisions.

mod support;

use meshgate_core::engine::{Decision, Engine};
use meshgate_core::ratelimit::table::MemoryStore;
use meshgate_core::sync::{SyncError, SyncedState};
use meshgate_core::{CompiledConfig, Reason};
use serde_json::{Value, json};
use std::sync::Arc;
use support::*;

/// The fixture config with an extra issuer whose keys come only from the feed.
fn synced_config() -> Arc<CompiledConfig> {
    let mut cfg = config();
    if let Some(list) = cfg["issuers"].as_array_mut() {
        list.push(json!({"issuer": "https://cp.test", "audiences": ["api"]}));
    }
    cfg["sync"] = json!({"cluster": "control_plane", "api_key": api_key(50)});
    Arc::new(meshgate_core::compile(cfg.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}")))
}

const CP_SECRET: &[u8; 32] = b"control-plane-secret-0123456789a";

fn cp_token(edit: impl FnOnce(&mut Value)) -> String {
    let mut payload = json!({"iss": "https://cp.test", "aud": "api", "sub": "u-9", "exp": NOW + 600, "iat": NOW - 5,
                             "jti": "t-1", "sid": "s-1", "roles": ["admin"]});
    edit(&mut payload);
    hs_raw(&json!({"alg": "HS256", "kid": "cp-1", "typ": "at+jwt"}), &payload, CP_SECRET)
}

fn snapshot(version: u64) -> Value {
    use base64::Engine as _;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(CP_SECRET);
    json!({
        "version": version, "kind": "snapshot",
        "signing_keys": [{"issuer": "https://cp.test", "jwk": {"kty": "oct", "kid": "cp-1", "alg": "HS256", "k": k}}],
        "api_keys": [{"id": "k-sync", "digest": meshgate_core::apikey::digest(&api_key(60)).to_hex(), "subject": "u-9"}],
        "revocations": [{"kind": "token", "id": "t-revoked", "until": NOW + 600}]
    })
}

fn apply(state: &SyncedState, body: Value) -> Result<SyncedState, SyncError> {
    state.apply_bytes(body.to_string().as_bytes(), NOW)
}

fn decide(engine: &Engine, req: Req) -> Option<Reason> {
    match engine.decide(&req.view(), NOW_US, &MemoryStore::default()) {
        Decision::Allow(_) => None,
        Decision::Deny(d) => Some(d.reason),
    }
}

fn state_at(version: u64) -> SyncedState {
    apply(&SyncedState::default(), snapshot(version)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_snapshot_brings_keys_and_revocations() {
    let config = synced_config();
    let before = SyncedState::default().engine(config.clone()).unwrap_or_else(|e| panic!("{e}"));
    // Not synced yet: 503 (retry), not a 401 that sends clients to log in again.
    assert_eq!(decide(&before, Req::get("/api/x").bearer(&cp_token(|_| {}))), Some(Reason::Unavailable));
    assert_eq!(decide(&before, Req::get("/api/x").header("x-api-key", &api_key(60))), Some(Reason::Unavailable));

    let state = state_at(5);
    let engine = state.engine(config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(engine.sync_version, 5);
    assert_eq!(decide(&engine, Req::get("/api/x").bearer(&cp_token(|_| {}))), None);
    assert_eq!(decide(&engine, Req::get("/api/x").header("x-api-key", &api_key(60))), None);
    let revoked = cp_token(|p| p["jti"] = json!("t-revoked"));
    assert_eq!(decide(&engine, Req::get("/api/x").bearer(&revoked)), Some(Reason::Revoked));
    // Static keys still work next to synced ones.
    assert_eq!(decide(&engine, Req::get("/api/x").bearer(&hs(claims(|_| {})))), None);
}

#[test]
fn deltas_apply_on_their_base_only_and_versions_never_go_back() {
    let config = synced_config();
    let state = state_at(5);
    let delta = |version: u64, since: u64, extra: Value| {
        let mut d = json!({"version": version, "kind": "delta", "since": since});
        if let (Some(d), Some(e)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        d
    };
    let revoke_session = json!({"revocations": [{"kind": "session", "id": "s-1", "until": NOW + 600}]});
    let next = apply(&state, delta(7, 5, revoke_session.clone())).unwrap_or_else(|e| panic!("{e}"));
    let engine = next.engine(config.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decide(&engine, Req::get("/api/x").bearer(&cp_token(|_| {}))), Some(Reason::Revoked));
    // Duplicates and older versions are ignored; a delta from another base is refused.
    assert_eq!(apply(&next, delta(7, 5, json!({}))), Err(SyncError::Stale { have: 7, got: 7 }));
    assert_eq!(apply(&next, snapshot(6)), Err(SyncError::Stale { have: 7, got: 6 }));
    assert_eq!(apply(&next, delta(9, 6, json!({}))), Err(SyncError::BaseMismatch { have: 7, since: Some(6) }));
    // Removals: a key and a signing key.
    let removal = delta(
        8,
        7,
        json!({"removed_keys": [meshgate_core::apikey::digest(&api_key(60)).to_hex()],
                                      "removed_signing_keys": ["cp-1"]}),
    );
    let removed = apply(&next, removal).unwrap_or_else(|e| panic!("{e}"));
    let engine = removed.engine(config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decide(&engine, Req::get("/api/x").header("x-api-key", &api_key(60))), Some(Reason::UnknownApiKey));
    assert_eq!(
        decide(&engine, Req::get("/api/x").bearer(&cp_token(|p| p["sid"] = json!("s-2")))),
        Some(Reason::UnknownKey)
    );
    // A later snapshot replaces everything (the session revocation is gone).
    let fresh = apply(&removed, snapshot(20)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fresh.counts(), (1, 1, 1));
}

#[test]
fn bad_responses_are_refused_whole_and_the_old_state_is_kept() {
    let config = synced_config();
    let state = state_at(5);
    for body in [
        b"not json".to_vec(),
        b"{\"version\": 9, \"kind\": \"snapshot\", \"unexpected\": 1}".to_vec(),
        b"{\"version\": 9, \"kind\": \"delta\"}".to_vec(),
        br#"{"version": 9, "kind": "snapshot", "revocations": [{"kind": "user", "id": "u", "until": 1}]}"#.to_vec(),
        Vec::from(&snapshot(9).to_string().as_bytes()[..40]),
    ] {
        assert!(state.apply_bytes(&body, NOW).is_err(), "{}", String::from_utf8_lossy(&body));
    }
    // Shape-valid but with an invalid record: the state applies, the engine
    // build refuses it, so the caller keeps the previous engine.
    let mut bad = snapshot(9);
    bad["api_keys"][0]["digest"] = json!("not-hex");
    let applied = apply(&state, bad).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(applied.engine(config.clone()), Err(SyncError::Invalid(_))));
    let mut weak = snapshot(9);
    weak["signing_keys"][0]["jwk"]["k"] = json!("c2hvcnQ");
    assert!(apply(&state, weak).and_then(|s| s.engine(config.clone())).is_err());
    assert_eq!(state.version, 5);
    assert!(state.engine(config).is_ok());
}

#[test]
fn keys_of_untrusted_issuers_are_skipped_and_bans_apply() {
    let config = synced_config();
    let mut body = snapshot(3);
    body["signing_keys"][0]["issuer"] = json!("https://rogue.test");
    body["bans"] = json!([{"ip": "198.51.100.66", "until": NOW + 60}, {"ip": "2001:db8:9:9::/64", "until": NOW + 60}]);
    let engine = apply(&SyncedState::default(), body).and_then(|s| s.engine(config)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decide(&engine, Req::get("/api/x").bearer(&cp_token(|_| {}))), Some(Reason::UnknownKey));
    assert_eq!(decide(&engine, Req::get("/public/x").peer("198.51.100.66:5")), Some(Reason::Banned));
    assert_eq!(decide(&engine, Req::get("/public/x").peer("[2001:db8:9:9::7]:5")), Some(Reason::Banned));
    assert_eq!(decide(&engine, Req::get("/public/x").peer("198.51.100.67:5")), None);
}

#[test]
fn the_published_snapshot_reproduces_the_state_and_expired_entries_are_pruned() {
    let mut body = snapshot(4);
    if let Some(r) = body["revocations"].as_array_mut() {
        r.push(json!({"kind": "key", "id": "old", "until": NOW - 1}));
    }
    let state = apply(&SyncedState::default(), body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.counts(), (1, 1, 1), "the expired revocation is dropped");
    let published = serde_json::to_vec(&state.snapshot()).unwrap_or_default();
    let copy = SyncedState::default().apply_bytes(&published, NOW).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(copy, state);
}

#[test]
fn sync_config_is_validated() {
    for (sync, field) in [
        (json!({"cluster": "", "api_key": api_key(1)}), "sync.cluster"),
        (json!({"cluster": "cp", "api_key": "secret"}), "sync.api_key"),
        (json!({"cluster": "cp", "api_key": api_key(1), "path": "api/v1/sync"}), "sync.path"),
        (json!({"cluster": "cp", "api_key": api_key(1), "wait_secs": 1000}), "sync.wait_secs"),
        (json!({"cluster": "cp", "api_key": api_key(1), "on_stale": "panic"}), "sync.on_stale"),
    ] {
        let mut cfg = config();
        cfg["sync"] = sync.clone();
        let err = meshgate_core::compile(cfg.to_string().as_bytes()).err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some(field), "{sync}");
    }
    let mut cfg = config();
    if let Some(l) = cfg["issuers"].as_array_mut() {
        l.push(json!({"issuer": "x", "audiences": ["a"]}));
    }
    let err = meshgate_core::compile(cfg.to_string().as_bytes()).err().map(|e| e.field);
    assert_eq!(err.as_deref(), Some("issuers[1].keys"), "keyless issuers need a sync feed");
}

#[test]
fn before_the_first_sync_unknown_keys_are_503_not_401() {
    let config = synced_config();
    let cold = SyncedState::default().engine(config.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert!(cold.awaiting_first_sync());
    let req = Req::get("/api/x").bearer(&cp_token(|_| {}));
    let Decision::Deny(d) = cold.decide(&req.view(), NOW_US, &MemoryStore::default()) else { panic!("allowed") };
    assert_eq!(d.reason, Reason::Unavailable);
    assert!(d.headers.contains(&("retry-after".to_owned(), "1".to_owned())));
    assert_eq!(decide(&cold, Req::get("/api/x").header("x-api-key", &api_key(60))), Some(Reason::Unavailable));
    // Static keys, bad signatures and missing credentials are answered as usual.
    assert_eq!(decide(&cold, Req::get("/api/x").bearer(&hs(claims(|_| {})))), None);
    assert_eq!(decide(&cold, Req::get("/api/x")), Some(Reason::MissingCredentials));
    // Once synced, an unknown key is a 401 again.
    let warm = state_at(5).engine(config).unwrap_or_else(|e| panic!("{e}"));
    let stranger = hs_raw(&json!({"alg": "HS256", "kid": "nope"}), &valid_payload(), CP_SECRET);
    assert_eq!(decide(&warm, Req::get("/api/x").bearer(&stranger)), Some(Reason::UnknownKey));
}
