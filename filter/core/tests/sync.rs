//! Applying the sync feed: versions only move forward, deltas only on their
//! base, responses all-or-nothing, and what they carry changes decisions.
//! The state lives in a store shared by every VM (Envoy shared data; here
//! a `MemoryStore`), written by one publisher and read per request.

mod support;

use jwt_simple::prelude::{ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair};
use meshgate_core::engine::{Decision, Engine};
use meshgate_core::jwk::KeyMaterial;
use meshgate_core::ratelimit::table::{CounterStore, MemoryStore, StoreError};
use meshgate_core::sync::layout::{self, Meta};
use meshgate_core::sync::{Applied, Ask, Publisher, SyncError, engine_for};
use meshgate_core::{CompiledConfig, Reason};
use serde_json::{Value, json};
use std::cell::Cell;
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

fn delta(version: u64, since: u64, extra: Value) -> Value {
    let mut d = json!({"version": version, "kind": "delta", "since": since});
    if let (Some(d), Some(e)) = (d.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    d
}

const NOW_MS: u64 = NOW * 1000;

/// A store shared by "VMs", with a publisher writing into it.
struct Process {
    store: MemoryStore,
    publisher: Publisher,
    config: Arc<CompiledConfig>,
}

impl Process {
    fn new() -> Self {
        Self { store: MemoryStore::default(), publisher: Publisher::new(1), config: synced_config() }
    }

    fn apply(&mut self, body: Value) -> Result<Applied, SyncError> {
        self.publisher.apply_bytes(&self.store, body.to_string().as_bytes(), NOW_MS)
    }

    fn at(version: u64) -> Self {
        let mut p = Self::new();
        assert_eq!(p.apply(snapshot(version)), Ok(Applied::Published(version)));
        p
    }

    fn meta(&self) -> Meta {
        Meta::read(&self.store).map(|(m, _)| m).unwrap_or_else(|e| panic!("{e}"))
    }

    /// What a VM builds when it sees the published version.
    fn engine(&self) -> Engine {
        engine_for(self.config.clone(), &self.meta(), None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn decide(&self, engine: &Engine, req: Req) -> Option<Reason> {
        match engine.decide(&req.view(), NOW_US, &self.store) {
            Decision::Allow(_) => None,
            Decision::Deny(d) => Some(d.reason),
        }
    }
}

#[test]
fn a_snapshot_brings_keys_and_revocations() {
    let p = Process::new();
    let before = p.engine();
    // Not synced yet: 503 (retry), not a 401 that sends clients to log in again.
    assert_eq!(p.decide(&before, Req::get("/api/x").bearer(&cp_token(|_| {}))), Some(Reason::Unavailable));
    assert_eq!(p.decide(&before, Req::get("/api/x").header("x-api-key", &api_key(60))), Some(Reason::Unavailable));

    let p = Process::at(5);
    let engine = p.engine();
    assert_eq!(engine.sync_version, 5);
    assert_eq!(p.decide(&engine, Req::get("/api/x").bearer(&cp_token(|_| {}))), None);
    assert_eq!(p.decide(&engine, Req::get("/api/x").header("x-api-key", &api_key(60))), None);
    let revoked = cp_token(|p| p["jti"] = json!("t-revoked"));
    assert_eq!(p.decide(&engine, Req::get("/api/x").bearer(&revoked)), Some(Reason::Revoked));
    // Static keys still work next to synced ones.
    assert_eq!(p.decide(&engine, Req::get("/api/x").bearer(&hs(claims(|_| {})))), None);
    // A key record is found under its own kind only.
    assert_eq!(
        p.decide(&engine, Req::get("/api/x").header("x-service-key", &api_key(60))),
        Some(Reason::UnknownApiKey)
    );
}

#[test]
fn a_revocation_push_keeps_the_signing_keys_and_their_tables() {
    let mut p = Process::new();
    let es = keys().es.public_key().public_key().to_bytes_uncompressed();
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
    let mut body = snapshot(5);
    body["signing_keys"] = json!([{"issuer": "https://cp.test",
        "jwk": {"kty": "EC", "crv": "P-256", "kid": "cp-es", "x": b64(&es[1..33]), "y": b64(&es[33..65])}}]);
    assert_eq!(p.apply(body), Ok(Applied::Published(5)));
    let signer = ES256KeyPair::from_bytes(&keys().es.to_bytes()).unwrap_or_else(|e| panic!("{e}")).with_key_id("cp-es");
    let token = signer.sign(claims(|c| c.issuer = Some("https://cp.test".into()))).unwrap_or_else(|e| panic!("{e}"));
    let table_built = |engine: &Engine| match &engine.keyring.keys["cp-es"].material {
        KeyMaterial::Es256(key) => format!("{key:?}").contains("table_built: true"),
        other => panic!("{other:?}"),
    };

    let first = p.engine();
    assert!(!table_built(&first), "tables are built on first use");
    assert_eq!(p.decide(&first, Req::get("/api/x").bearer(&token)), None);
    assert!(table_built(&first));

    let revoke = json!({"revocations": [{"kind": "token", "id": "t-other", "until": NOW + 600}]});
    assert_eq!(p.apply(delta(6, 5, revoke)), Ok(Applied::Published(6)));
    let second = engine_for(p.config.clone(), &p.meta(), Some(&first)).unwrap_or_else(|e| panic!("{e}"));
    assert!(table_built(&second), "the key, table and all, moved to the new engine");
    assert_eq!(p.decide(&second, Req::get("/api/x").bearer(&token)), None);
    assert!(!table_built(&p.engine()), "an engine with no predecessor compiles its keys");
}

#[test]
fn deltas_apply_on_their_base_only_and_versions_never_go_back() {
    let mut p = Process::at(5);
    let warm = p.engine();
    assert_eq!(p.decide(&warm, Req::get("/api/x").bearer(&cp_token(|_| {}))), None, "cached at version 5");
    let revoke_session = json!({"revocations": [{"kind": "session", "id": "s-1", "until": NOW + 600}]});
    assert_eq!(p.apply(delta(7, 5, revoke_session)), Ok(Applied::Published(7)));
    // A VM moving to 7 keeps its warm token cache, and the cached token is
    // re-checked against the new revocations.
    let engine = engine_for(p.config.clone(), &p.meta(), Some(&warm)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(engine.token_cache.len(), 1, "the cache moved to the new engine");
    assert_eq!(p.decide(&engine, Req::get("/api/x").bearer(&cp_token(|_| {}))), Some(Reason::Revoked));
    // Duplicates and older versions are ignored; a delta from another base is refused.
    assert_eq!(p.apply(delta(7, 5, json!({}))), Err(SyncError::Stale { have: 7, got: 7 }));
    assert_eq!(p.apply(snapshot(6)), Err(SyncError::Stale { have: 7, got: 6 }));
    assert_eq!(p.apply(delta(9, 6, json!({}))), Err(SyncError::BaseMismatch { have: 7, since: Some(6) }));
    // Removals: a key and a signing key.
    let removal = delta(
        8,
        7,
        json!({"removed_keys": [meshgate_core::apikey::digest(&api_key(60)).to_hex()],
                                      "removed_signing_keys": ["cp-1"]}),
    );
    assert_eq!(p.apply(removal), Ok(Applied::Published(8)));
    let engine = p.engine();
    assert_eq!(p.decide(&engine, Req::get("/api/x").header("x-api-key", &api_key(60))), Some(Reason::UnknownApiKey));
    assert_eq!(
        p.decide(&engine, Req::get("/api/x").bearer(&cp_token(|p| p["sid"] = json!("s-2")))),
        Some(Reason::UnknownKey)
    );
    // A later snapshot replaces everything (the session revocation is gone).
    assert_eq!(p.apply(snapshot(20)), Ok(Applied::Published(20)));
    let meta = p.meta();
    assert_eq!((meta.keys, meta.revocations, meta.signing_keys.len()), (1, 1, 1));
    assert_eq!(p.decide(&p.engine(), Req::get("/api/x").bearer(&cp_token(|_| {}))), None);
}

#[test]
fn bad_responses_are_refused_whole_and_the_published_state_is_kept() {
    let mut p = Process::at(5);
    let mut bad_digest = snapshot(9);
    bad_digest["api_keys"][0]["digest"] = json!("not-hex");
    let mut weak = snapshot(9);
    weak["signing_keys"][0]["jwk"]["k"] = json!("c2hvcnQ");
    let mut bad_key_in_delta =
        delta(9, 5, json!({"revocations": [{"kind": "token", "id": "t-new", "until": NOW + 9}]}));
    bad_key_in_delta["api_keys"] = json!([{"id": "k bad", "digest": "00".repeat(32), "subject": "u"}]);
    for body in [
        b"not json".to_vec(),
        b"{\"version\": 9, \"kind\": \"snapshot\", \"unexpected\": 1}".to_vec(),
        b"{\"version\": 9, \"kind\": \"delta\"}".to_vec(),
        br#"{"version": 9, "kind": "snapshot", "revocations": [{"kind": "user", "id": "u", "until": 1}]}"#.to_vec(),
        br#"{"version": 9, "kind": "delta", "since": 5, "next": "k:1"}"#.to_vec(),
        Vec::from(&snapshot(9).to_string().as_bytes()[..40]),
        bad_digest.to_string().into_bytes(),
        weak.to_string().into_bytes(),
        bad_key_in_delta.to_string().into_bytes(),
    ] {
        let result = p.publisher.apply_bytes(&p.store, &body, NOW_MS);
        assert!(matches!(result, Err(SyncError::Invalid(_))), "{result:?}: {}", String::from_utf8_lossy(&body));
    }
    // The error names the record and field (built only on failure: a
    // valid snapshot formats no field names).
    let mut bad_role = snapshot(9);
    let good = bad_role["api_keys"][0].clone();
    let mut bad = json!({"id": "k-2", "digest": "11".repeat(32), "subject": "u", "roles": ["ok", "no spaces"]});
    bad["scopes"] = json!(["s"]);
    bad_role["api_keys"] = json!([good, bad]);
    match p.publisher.apply_bytes(&p.store, bad_role.to_string().as_bytes(), NOW_MS) {
        Err(SyncError::Invalid(message)) => assert!(message.starts_with("api_keys[1].roles[1]: "), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.meta().version, 5);
    let engine = p.engine();
    // Nothing of the refused delta leaked into the shards.
    assert_eq!(p.decide(&engine, Req::get("/api/x").bearer(&cp_token(|p| p["jti"] = json!("t-new")))), None);
    assert_eq!(p.decide(&engine, Req::get("/api/x").header("x-api-key", &api_key(60))), None);
}

#[test]
fn keys_of_untrusted_issuers_are_skipped_and_bans_apply() {
    let mut p = Process::new();
    let mut body = snapshot(3);
    body["signing_keys"][0]["issuer"] = json!("https://rogue.test");
    body["bans"] = json!([{"ip": "198.51.100.66", "until": NOW + 60}, {"ip": "2001:db8:9:9::/64", "until": NOW + 60}]);
    assert_eq!(p.apply(body), Ok(Applied::Published(3)));
    let engine = p.engine();
    assert_eq!(p.decide(&engine, Req::get("/api/x").bearer(&cp_token(|_| {}))), Some(Reason::UnknownKey));
    assert_eq!(p.decide(&engine, Req::get("/public/x").peer("198.51.100.66:5")), Some(Reason::Banned));
    assert_eq!(p.decide(&engine, Req::get("/public/x").peer("[2001:db8:9:9::7]:5")), Some(Reason::Banned));
    assert_eq!(p.decide(&engine, Req::get("/public/x").peer("198.51.100.67:5")), None);
}

#[test]
fn expired_revocations_are_dropped_when_their_shard_is_rewritten() {
    let mut p = Process::new();
    let mut body = snapshot(4);
    if let Some(r) = body["revocations"].as_array_mut() {
        r.push(json!({"kind": "key", "id": "old", "until": NOW - 1}));
    }
    assert_eq!(p.apply(body), Ok(Applied::Published(4)));
    assert_eq!(p.meta().revocations, 1, "the expired revocation is not stored");
}

/// A snapshot of `keys` keys and `revocations` token revocations, in pages
/// of `page` records (keys first, sorted by digest as the control plane
/// sends them).
fn big_snapshot(version: u64, keys: usize, revocations: usize, page: usize) -> Vec<Value> {
    let mut records: Vec<(String, Value)> = (0..keys)
        .map(|i| {
            let digest = meshgate_core::apikey::digest(&format!("key-{i}")).to_hex();
            (digest.clone(), json!({"id": format!("k{i}"), "digest": digest, "subject": format!("u{i}")}))
        })
        .collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let mut all: Vec<(bool, Value)> = records.into_iter().map(|(_, v)| (true, v)).collect();
    all.extend(
        (0..revocations).map(|i| (false, json!({"kind": "token", "id": format!("jti-{i}"), "until": NOW + 600}))),
    );
    let chunks: Vec<_> = all.chunks(page.max(1)).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut body = if i == 0 { snapshot(version) } else { json!({"version": version + 1, "kind": "snapshot"}) };
            let page_keys = chunk.iter().filter(|(k, _)| *k).map(|(_, v)| v.clone());
            // The first page keeps the fixture's key (api_key(60)).
            let fixture = if i == 0 { body["api_keys"].as_array().cloned().unwrap_or_default() } else { vec![] };
            body["api_keys"] = fixture.into_iter().chain(page_keys).collect();
            body["revocations"] = chunk.iter().filter(|(k, _)| !*k).map(|(_, v)| v.clone()).collect();
            if i == 0 {
                body["total_keys"] = json!(keys);
                body["total_revocations"] = json!(revocations);
            }
            if i + 1 < n {
                body["next"] = json!(format!("cursor-{}", i + 1));
            }
            body
        })
        .collect()
}

#[test]
fn a_paged_snapshot_switches_at_its_last_page_and_the_old_generation_is_blanked_later() {
    let mut p = Process::at(5);
    let old = p.meta();
    let pages = big_snapshot(9, 3000, 2000, 1000);
    assert_eq!(pages.len(), 5);
    for (i, page) in pages.iter().enumerate() {
        let result = p.apply(page.clone());
        if i + 1 < pages.len() {
            assert_eq!(result, Ok(Applied::Page));
            assert_eq!(p.publisher.ask(&p.meta()), Ask::Page(format!("cursor-{}", i + 1)));
            // Readers still see version 5, whole.
            assert_eq!(p.meta().version, 5);
            assert_eq!(p.decide(&p.engine(), Req::get("/api/x").header("x-api-key", &api_key(60))), None);
        } else {
            assert_eq!(result, Ok(Applied::Published(9)));
        }
    }
    let meta = p.meta();
    assert_eq!((meta.keys, meta.revocations), (3001, 2000), "3000 keys + the one of the first page's fixture");
    assert_eq!(meta.key_shards, layout::shards_for(3000));
    assert_eq!(p.publisher.ask(&meta), Ask::Since(9));
    let engine = p.engine();
    assert_eq!(
        p.decide(&engine, Req::get("/api/x").bearer(&cp_token(|p| p["jti"] = json!("jti-1999")))),
        Some(Reason::Revoked)
    );
    assert_eq!(p.decide(&engine, Req::get("/api/x").bearer(&cp_token(|p| p["jti"] = json!("jti-2000")))), None);
    for i in [0, 1234, 2999] {
        let digest = meshgate_core::apikey::digest(&format!("key-{i}"));
        let found = engine.synced.key(&p.store, meshgate_core::keystore::KeyKindTag::Api, &digest);
        assert_eq!(found.ok().flatten().map(|e| e.id), Some(format!("k{i}")));
    }
    // The replaced generation stays readable for a while, then is blanked.
    let retired = meta.retired.unwrap_or_else(|| panic!("no retired generation"));
    assert_eq!(retired.generation, old.generation);
    let fixture = layout::key_shard_of(&meshgate_core::apikey::digest(&api_key(60)), old.key_shards);
    let shard = |g: u64| p.store.get(&layout::key_shard(g, fixture)).ok().and_then(|(v, _)| v).unwrap_or_default();
    assert!(!shard(old.generation).is_empty(), "still readable right after the switch");
    assert_eq!(p.publisher.sweep(&p.store, NOW_MS + 1000), Ok(()));
    assert!(p.meta().retired.is_some(), "too early");
    // A VM that takes the lease over sweeps what the previous leader retired.
    let mut successor = Publisher::new(99);
    assert_eq!(successor.sweep(&p.store, NOW_MS + 1000), Ok(()));
    assert!(p.meta().retired.is_some(), "still too early");
    assert_eq!(successor.sweep(&p.store, NOW_MS + 60_000), Ok(()));
    assert!(p.meta().retired.is_none());
    for s in 0..old.key_shards {
        assert!(
            p.store.get(&layout::key_shard(old.generation, s)).ok().and_then(|(v, _)| v).unwrap_or_default().is_empty()
        );
    }
}

#[test]
fn an_interrupted_paged_snapshot_publishes_nothing() {
    let mut p = Process::at(5);
    let pages = big_snapshot(9, 100, 0, 40);
    assert_eq!(p.apply(pages[0].clone()), Ok(Applied::Page));
    // The next "page" is a delta: the snapshot is abandoned, 5 stays.
    assert!(matches!(p.apply(delta(9, 5, json!({}))), Err(SyncError::Invalid(_))));
    assert_eq!(p.meta().version, 5);
    assert_eq!(p.publisher.ask(&p.meta()), Ask::Since(5));
    // Another publisher published 12 meanwhile: finishing 9 is refused.
    let mut q = Process { store: MemoryStore::default(), publisher: Publisher::new(2), config: synced_config() };
    std::mem::swap(&mut q.store, &mut p.store);
    assert_eq!(q.apply(pages[0].clone()), Ok(Applied::Page));
    let mut other = Publisher::new(3);
    assert_eq!(
        other.apply_bytes(&q.store, delta(12, 5, json!({})).to_string().as_bytes(), NOW_MS),
        Ok(Applied::Published(12))
    );
    assert_eq!(q.apply(pages[1].clone()), Ok(Applied::Page));
    assert_eq!(q.apply(pages[2].clone()), Err(SyncError::Stale { have: 12, got: 9 }));
    assert_eq!(q.meta().version, 12);
}

#[test]
fn deltas_that_outgrow_the_shards_regrow_the_table() {
    let mut p = Process::at(1);
    let start = p.meta();
    for (version, batch) in (1u64..).zip(0..12) {
        let keys: Vec<Value> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                json!({"id": format!("k{n}"), "digest": meshgate_core::apikey::digest(&format!("key-{n}")).to_hex(), "subject": "u"})
            })
            .collect();
        assert_eq!(
            p.apply(delta(version + 1, version, json!({"api_keys": keys}))),
            Ok(Applied::Published(version + 1))
        );
    }
    let meta = p.meta();
    assert_eq!(meta.keys, 1201);
    assert!(meta.key_shards > start.key_shards, "regrown: {} shards", meta.key_shards);
    assert_ne!(meta.generation, start.generation);
    let engine = p.engine();
    for n in [0, 599, 1199] {
        let digest = meshgate_core::apikey::digest(&format!("key-{n}"));
        let found = engine.synced.key(&p.store, meshgate_core::keystore::KeyKindTag::Api, &digest);
        assert_eq!(found.ok().flatten().map(|e| e.id), Some(format!("k{n}")));
    }
    assert_eq!(p.decide(&engine, Req::get("/api/x").header("x-api-key", &api_key(60))), None);
}

/// Counts reads, to show what a request costs in shared-data reads.
struct Counting<'a> {
    inner: &'a MemoryStore,
    reads: Cell<usize>,
}

impl CounterStore for Counting<'_> {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        if key.starts_with("mg:sync:") {
            self.reads.set(self.reads.get() + 1);
        }
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.inner.set(key, value, cas)
    }
}

#[test]
fn warm_credentials_cost_no_shared_data_reads_and_a_cold_one_reads_one_shard_per_lookup() {
    let mut p = Process::new();
    for page in big_snapshot(5, 20_000, 20_000, 50_000) {
        assert!(p.apply(page).is_ok());
    }
    let engine = p.engine();
    let store = Counting { inner: &p.store, reads: Cell::new(0) };
    let decide = |req: &Req| match engine.decide(&req.view(), NOW_US, &store) {
        Decision::Allow(_) => None,
        Decision::Deny(d) => Some(d.reason),
    };
    let key = Req::get("/api/x").header("x-api-key", &api_key(60));
    assert_eq!(decide(&key), None);
    assert_eq!(store.reads.get(), 2, "one key shard, one revocation shard");
    let token = Req::get("/api/x").bearer(&cp_token(|_| {}));
    assert_eq!(decide(&token), None);
    assert_eq!(store.reads.get(), 5, "jti, sid and sub: one revocation shard each");
    store.reads.set(0);
    for _ in 0..10 {
        assert_eq!(decide(&key), None);
        assert_eq!(decide(&token), None);
    }
    assert_eq!(store.reads.get(), 0, "warm credentials read nothing");
    // The largest shard stays small whatever the totals.
    let meta = p.meta();
    let largest = (0..meta.key_shards)
        .filter_map(|s| p.store.get(&layout::key_shard(meta.generation, s)).ok().and_then(|(v, _)| v))
        .map(|v| v.len())
        .max()
        .unwrap_or(0);
    assert!(largest < 8 * 1024, "largest key shard {largest} bytes");
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
    let p = Process::new();
    let cold = p.engine();
    assert!(cold.awaiting_first_sync());
    let req = Req::get("/api/x").bearer(&cp_token(|_| {}));
    let Decision::Deny(d) = cold.decide(&req.view(), NOW_US, &MemoryStore::default()) else { panic!("allowed") };
    assert_eq!(d.reason, Reason::Unavailable);
    assert!(d.headers.contains(&("retry-after".to_owned(), "1".to_owned())));
    assert_eq!(p.decide(&cold, Req::get("/api/x").header("x-api-key", &api_key(60))), Some(Reason::Unavailable));
    // Static keys, bad signatures and missing credentials are answered as usual.
    assert_eq!(p.decide(&cold, Req::get("/api/x").bearer(&hs(claims(|_| {})))), None);
    assert_eq!(p.decide(&cold, Req::get("/api/x")), Some(Reason::MissingCredentials));
    // Once synced, an unknown key is a 401 again.
    let p = Process::at(5);
    let warm = p.engine();
    let stranger = hs_raw(&json!({"alg": "HS256", "kid": "nope"}), &valid_payload(), CP_SECRET);
    assert_eq!(p.decide(&warm, Req::get("/api/x").bearer(&stranger)), Some(Reason::UnknownKey));
}
