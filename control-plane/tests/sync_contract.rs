//! Contract with the filter: the feed's JSON is `meshgate_wire`'s
//! `SyncResponse`, and its signing keys and API keys, fed to the filter's own
//! engine (`meshgate_core`), accept what the control plane issues. Also
//! measures the encoding's size per API key and per revocation.

mod common;

use std::time::Instant;

use axum::http::{Method, StatusCode};
use common::feed::{self, create_key, sync_key};
use common::{Kind, TestApp, notice};
use meshgate::config::SigningAlg;
use meshgate_core::engine::{Decision, Engine, Request};
use meshgate_core::ratelimit::table::MemoryStore;
use meshgate_wire::sync::{SyncKind, SyncResponse};
use serde_json::json;

fn allowed(engine: &Engine, header: (&str, &str), now: i64) -> bool {
    let headers = [(header.0, header.1.as_bytes())];
    let req = Request { method: "GET", path: b"/orders", authority: "shop", headers: &headers, peer: None };
    matches!(engine.decide(&req, (now as u64) * 1_000_000, &MemoryStore::default()), Decision::Allow(_))
}

/// A filter configuration built only from a feed snapshot.
fn engine_from(app: &TestApp, snap: &SyncResponse) -> Engine {
    let issuer = &app.state.config.issuer;
    let jwks: Vec<_> = snap.signing_keys.iter().filter(|k| &k.issuer == issuer).map(|k| &k.jwk).collect();
    let config = json!({
        "routes": [{"name": "all", "path": {"prefix": "/"}, "policy": {}}],
        "issuers": [{"issuer": issuer, "audiences": [app.state.config.audience], "keys": jwks}],
        "keys": {"api_keys": snap.api_keys},
    });
    Engine::new(meshgate_core::compile(config.to_string().as_bytes()).expect("the filter accepts the feed's keys"))
}

#[tokio::test]
async fn filter_engine_accepts_credentials_through_the_feed() {
    for alg in [SigningAlg::EdDsa, SigningAlg::Es256, SigningAlg::Hs256] {
        let app = TestApp::with(Kind::Sqlite, |c| c.signing_alg = alg).await;
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        let (key, _) = create_key(&app, &admin, &["orders:read"], json!({"rate_limit": 1000})).await;
        let (revoked, meta) = create_key(&app, &admin, &[], json!({})).await;
        let path = format!("/api/v1/apikeys/{}", meta["id"].as_str().unwrap());
        assert_eq!(app.call(Method::DELETE, &path, Some(&admin), None).await.0, StatusCode::NO_CONTENT);

        // Parsed with the wire types, which reject unknown fields.
        let (s, body) = feed::get_raw(&app.router, "", Some(&filter)).await;
        assert_eq!(s, StatusCode::OK);
        let snap: SyncResponse = serde_json::from_slice(&body).expect("wire SyncResponse");
        assert_eq!(snap.kind, SyncKind::Snapshot);
        if alg == SigningAlg::Hs256 {
            // The shared secret, only here: never in JWKS.
            assert!(snap.signing_keys.iter().all(|k| k.jwk.kty == "oct" && k.jwk.k.is_some()));
            let (_, jwks) = app.call(Method::GET, "/.well-known/jwks.json", None, None).await;
            assert_eq!(jwks["keys"], json!([]));
        }
        let engine = engine_from(&app, &snap);
        let now = app.state.now();
        assert!(allowed(&engine, ("authorization", &format!("Bearer {admin}")), now), "{alg:?} token refused");
        assert!(allowed(&engine, ("x-api-key", &key), now), "API key refused");
        assert!(allowed(&engine, ("authorization", &format!("Bearer {key}")), now));
        assert!(!allowed(&engine, ("x-api-key", &revoked), now), "revoked key accepted");

        // The next key is shipped before it signs: after a rotation, a token
        // from the new active key verifies with the pre-rotation snapshot.
        let (s, _) = app.call(Method::POST, "/api/v1/signing-keys/rotate?force=true", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        let fresh = app.admin_token().await;
        assert!(allowed(&engine, ("authorization", &format!("Bearer {fresh}")), now), "next key missing");
        app.cleanup().await;
    }
}

/// Inserts `n` API keys and `n` token revocations directly (one transaction).
async fn bulk(app: &TestApp, owner: &str, keys: usize, revocations: usize) {
    use meshgate::crypto;
    use meshgate::db::{self, Counter};
    let now = app.state.now();
    let mut tx = app.state.db.begin().await.expect("begin");
    let version = db::bump(&mut tx, Counter::Change).await.expect("bump");
    for _ in 0..keys {
        let digest = crypto::hex(&crypto::random_bytes::<32>());
        sqlx::query(
            "INSERT INTO api_keys (id, prefix, digest, name, owner_id, app_id, scopes, rate_limit, expires_at, created_at, version) \
             VALUES ($1, 'mg', $2, 'bulk', $3, 'meshgate', 'orders:read orders:write', 600, $4, $5, $6)",
        )
        .bind(crypto::new_id())
        .bind(digest)
        .bind(owner)
        .bind(now + 365 * 86_400)
        .bind(now)
        .bind(version)
        .execute(&mut *tx)
        .await
        .expect("insert key");
    }
    for _ in 0..revocations {
        sqlx::query(
            "INSERT INTO revocations (kind, value, not_before, until, reason, created_at, version) VALUES ('jti', $1, NULL, $2, NULL, $3, $4)",
        )
        .bind(crypto::new_id())
        .bind(now + 960)
        .bind(now)
        .bind(version)
        .execute(&mut *tx)
        .await
        .expect("insert revocation");
    }
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn encoding_size_per_key_and_revocation() {
    // MESHGATE_SYNC_BENCH_N=100000 measures a larger set.
    let n: usize = std::env::var("MESHGATE_SYNC_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let app = TestApp::new(Kind::Sqlite).await;
    let admin = app.admin_token().await;
    let filter = sync_key(&app, &admin).await;
    let owner = app.state.db.pool.clone();
    let owner: String =
        sqlx::query_scalar("SELECT id FROM users WHERE username = 'admin'").fetch_one(&owner).await.expect("admin id");
    let size = |body: &[u8], n| -> usize {
        let snap: SyncResponse = serde_json::from_slice(body).expect("SyncResponse");
        assert_eq!(snap.api_keys.len() + snap.revocations.len(), n);
        body.len()
    };
    let (_, base) = feed::get_raw(&app.router, "", Some(&filter)).await;
    let base = size(&base, 1);

    bulk(&app, &owner, n, 0).await;
    let started = Instant::now();
    let (_, with_keys) = feed::get_raw(&app.router, "", Some(&filter)).await;
    let keys_time = started.elapsed();
    let with_keys = size(&with_keys, n + 1);

    bulk(&app, &owner, 0, n).await;
    let v = feed::version(&app).await;
    let started = Instant::now();
    let (_, with_revs) = feed::get_raw(&app.router, "", Some(&filter)).await;
    let full_time = started.elapsed();
    let with_revs = size(&with_revs, 2 * n + 1);

    // A delta over one change stays small whatever the totals are.
    let body = json!({"kind": "token", "value": "one-more"});
    assert_eq!(app.call(Method::POST, "/api/v1/revocations", Some(&admin), Some(body)).await.0, StatusCode::CREATED);
    let started = Instant::now();
    let (_, delta) = feed::get_raw(&app.router, &format!("since={v}&wait=0"), Some(&filter)).await;
    let delta_time = started.elapsed();

    let per_key = (with_keys - base) as f64 / n as f64;
    let per_rev = (with_revs - with_keys) as f64 / n as f64;
    notice(&format!(
        "sync encoding (JSON, SQLite, {} build): {per_key:.1} bytes/API key, {per_rev:.1} bytes/revocation; \
         snapshot {n} keys {with_keys} B in {keys_time:?}; {n} keys + {n} revocations {with_revs} B in {full_time:?}; \
         one-change delta {} B in {delta_time:?}",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        delta.len(),
    ));
    assert!(per_key < 400.0 && per_rev < 150.0);
    assert!(delta.len() < 1024);
    app.cleanup().await;
}
