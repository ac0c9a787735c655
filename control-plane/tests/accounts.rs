//! Accounts and sessions: lockout, no enumeration, user updates, logout of all
//! sessions, revocations, audit paging, other signing algorithms, operations.

mod common;

use axum::http::{Method, StatusCode, header};
use common::{ADMIN_PASSWORD, Kind, TestApp, assert_problem, on_each_backend};
use meshgate::config::SigningAlg;
use serde_json::json;

#[tokio::test]
async fn lockout_without_enumeration() {
    on_each_backend("lockout_without_enumeration", |app| async move {
        // Unknown user and wrong password answer identically.
        let (s1, h1, b1) = app
            .raw(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "ghost", "password": "whatever1"}).to_string()),
            )
            .await;
        let (s2, _h2, b2) = app
            .raw(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "admin", "password": "whatever1"}).to_string()),
            )
            .await;
        assert_problem(&h1, &b1, StatusCode::UNAUTHORIZED, s1, "invalid-credentials");
        assert_eq!((s1, b1), (s2, b2));
        // Five failures lock the account (known or not) with 429 + Retry-After.
        for name in ["admin", "ghost"] {
            for _ in 0..4 {
                app.login(name, "wrong-password", None).await;
            }
            let (s, h, v) = app
                .raw(
                    Method::POST,
                    "/api/v1/auth/login",
                    None,
                    Some(json!({"username": name, "password": ADMIN_PASSWORD}).to_string()),
                )
                .await;
            assert_problem(&h, &v, StatusCode::TOO_MANY_REQUESTS, s, "too-many-attempts");
            assert!(h.get(header::RETRY_AFTER).is_some());
        }
        // The lockout ends.
        app.state.clock.advance(901);
        let (s, _) = app.login("ADMIN", ADMIN_PASSWORD, None).await;
        assert_eq!(s, StatusCode::OK);
        // Failures are audited without the password.
        let admin = app.admin_token().await;
        let (_, v) = app.call(Method::GET, "/api/v1/audit?action=login.failure", Some(&admin), None).await;
        assert!(v["items"].as_array().unwrap().len() >= 9);
        assert!(!v.to_string().contains("wrong-password"));
        app
    })
    .await;
}

#[tokio::test]
async fn user_self_service_and_disable() {
    on_each_backend("user_self_service_and_disable", |app| async move {
        let admin = app.admin_token().await;
        let uid = app.create_user(&admin, "carol", "carol-password").await;
        let (_, t) = app.login("carol", "carol-password", None).await;
        let carol = t["access_token"].as_str().unwrap().to_string();
        let (s, u) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/users/{uid}"),
                Some(&carol),
                Some(json!({"email": "Carol@Example.org", "password": "new-carol-password"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{u}");
        assert_eq!(u["email"], "carol@example.org");
        assert!(u.get("password_hash").is_none());
        // Log in by email with the new password.
        let (s, _) = app.login("carol@example.org", "new-carol-password", None).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = app.call(Method::GET, "/api/v1/users", Some(&carol), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, k) = app
            .call(Method::POST, "/api/v1/apikeys", Some(&carol), Some(json!({"name": "mine", "expires_in_days": 7})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{k}");
        let (s, mine) = app.call(Method::GET, "/api/v1/apikeys?owner_id=someone", Some(&carol), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(mine.as_array().unwrap().len(), 1, "a non-admin sees only their own keys: {mine}");
        // A non-admin cannot mint keys for others or with admin scope.
        let (s, _) = app
            .call(
                Method::POST,
                "/api/v1/apikeys",
                Some(&carol),
                Some(json!({"name": "x", "expires_in_days": 7, "scopes": ["admin"]})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // Admin disables: tokens, keys and logins stop working, and filters
        // are told through revocations.
        let (s, _) = app
            .call(Method::PATCH, &format!("/api/v1/users/{uid}"), Some(&admin), Some(json!({"disabled": true})))
            .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = app.call(Method::POST, "/api/v1/apikeys/verify", None, Some(json!({"key": k["key"]}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let kinds: Vec<(String,)> =
            sqlx::query_as("SELECT kind FROM revocations ORDER BY kind").fetch_all(&app.state.db.pool).await.unwrap();
        assert_eq!(kinds, vec![("key".to_string(),), ("sub".to_string(),)]);
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&carol), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = app.login("carol", "new-carol-password", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, list) = app.call(Method::GET, "/api/v1/users?limit=1", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1);
        let (s, _) = app
            .call(
                Method::POST,
                "/api/v1/users",
                Some(&admin),
                Some(json!({"username": "carol", "password": "another-pass"})),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT);
        app
    })
    .await;
}

#[tokio::test]
async fn logout_all_and_revocations() {
    on_each_backend("logout_all_and_revocations", |app| async move {
        let a = app.admin_token().await;
        let (_, second) = app.login("admin", ADMIN_PASSWORD, None).await;
        let b = second["access_token"].as_str().unwrap().to_string();
        let (s, _) = app.call(Method::POST, "/api/v1/auth/logout", Some(&a), Some(json!({"all": true}))).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&b), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = app
            .call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": second["refresh_token"]})))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        app.state.clock.advance(2);
        let admin = app.admin_token().await;
        let victim = app.admin_token().await;
        let jti = common_claim(&victim, "jti");
        let v0 = meshgate::db::change_version(&app.state.db).await.unwrap();
        let (s, r) = app
            .call(Method::POST, "/api/v1/revocations", Some(&admin), Some(json!({"kind": "token", "value": jti})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        assert!(r["until"].as_i64().unwrap() > app.state.now());
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&victim), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        // Every revocation advances the change version, readable cheaply.
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT value, version FROM revocations WHERE version > $1")
            .bind(v0)
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, jti);
        assert!(meshgate::db::change_version(&app.state.db).await.unwrap() > v0);
        app
    })
    .await;
}

fn common_claim(token: &str, name: &str) -> String {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
    v[name].as_str().unwrap().to_string()
}

#[tokio::test]
async fn audit_filters_and_paging() {
    on_each_backend("audit_filters_and_paging", |app| async move {
        let admin = app.admin_token().await;
        for i in 0..5 {
            app.call(
                Method::POST,
                "/api/v1/apps",
                Some(&admin),
                Some(json!({"id": format!("app-{i}"), "name": format!("App {i}")})),
            )
            .await;
        }
        let (s, p1) = app.call(Method::GET, "/api/v1/audit?action=app.create&limit=2", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(p1["items"].as_array().unwrap().len(), 2);
        assert_eq!(p1["items"][0]["target"], "app-4");
        let cursor = p1["next_before"].as_i64().unwrap();
        let (_, p2) = app
            .call(Method::GET, &format!("/api/v1/audit?action=app.create&limit=2&before={cursor}"), Some(&admin), None)
            .await;
        assert_eq!(p2["items"][0]["target"], "app-2");
        let (_, p3) = app
            .call(
                Method::GET,
                &format!("/api/v1/audit?action=app.create&limit=2&before={}", p2["next_before"]),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(p3["items"].as_array().unwrap().len(), 1);
        assert!(p3["next_before"].is_null());
        let (_, all) = app.call(Method::GET, "/api/v1/audit?outcome=success", Some(&admin), None).await;
        assert!(all["items"].as_array().unwrap().iter().all(|e| e["outcome"] == "success"));
        let (s, _) = app.call(Method::GET, "/api/v1/audit?bogus=1", Some(&admin), None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        app
    })
    .await;
}

#[tokio::test]
async fn operations_endpoints() {
    let app = TestApp::new(Kind::Sqlite).await;
    let (s, v) = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    app.admin_token().await;
    let (s, h, v) = app.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    let text = v.as_str().unwrap();
    assert!(text.contains("meshgate_login_total{outcome=\"success\"} 1"), "{text}");
    assert!(text.contains("meshgate_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("meshgate_change_version"));
    let (s, doc) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/auth/login",
        "/api/v1/apikeys/verify",
        "/api/v1/apps/{id}/users/{user_id}/roles",
        "/.well-known/jwks.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from OpenAPI");
    }
    // SQLite runs in WAL mode.
    let mode: (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(&app.state.db.pool).await.unwrap();
    assert_eq!(mode.0.to_lowercase(), "wal");
    app.cleanup().await;
}

#[tokio::test]
async fn es256_and_hs256_signing() {
    for alg in [SigningAlg::Es256, SigningAlg::Hs256] {
        let app = TestApp::with(Kind::Sqlite, |c| c.signing_alg = alg).await;
        let token = app.admin_token().await;
        let header: serde_json::Value = {
            use base64::Engine as _;
            let h = token.split('.').next().unwrap();
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
        };
        assert_eq!(header["alg"], alg.as_str());
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&token), None).await;
        assert_eq!(s, StatusCode::OK);
        let (_, jwks) = app.call(Method::GET, "/.well-known/jwks.json", None, None).await;
        let n = jwks["keys"].as_array().unwrap().len();
        // HS256 secrets are never published.
        assert_eq!(n, if alg == SigningAlg::Hs256 { 0 } else { 2 }, "{jwks}");
        app.cleanup().await;
    }
}

#[tokio::test]
async fn master_key_protects_signing_keys() {
    let app = TestApp::new(Kind::Sqlite).await;
    let wrong = meshgate::crypto::MasterKey::random();
    let err = meshgate::signing::keyring::load(&app.state.db, &wrong, app.state.now()).await;
    assert!(err.is_err());
    app.cleanup().await;
}

#[tokio::test]
async fn housekeeping_purges_only_expired_rows() {
    on_each_backend("housekeeping_purges_only_expired_rows", |app| async move {
        let admin = app.admin_token().await;
        let (s, _) = app
            .call(Method::POST, "/api/v1/revocations", Some(&admin), Some(json!({"kind": "token", "value": "old-jti"})))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let now = app.state.now();
        assert_eq!(meshgate::housekeeping::purge(&app.state.db, now).await.unwrap(), 0);
        let later = now + 900 + 61;
        assert!(meshgate::housekeeping::purge(&app.state.db, later).await.unwrap() >= 1);
        let left: (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM revocations").fetch_one(&app.state.db.pool).await.unwrap();
        assert_eq!(left.0, 0);
        app
    })
    .await;
}

#[tokio::test]
async fn trusted_forwarded_for_takes_the_entry_the_proxy_appended() {
    use axum::body::Body;
    use axum::http::Request;
    let app = TestApp::with(Kind::Sqlite, |c| c.trust_forwarded_for = true).await;
    // The client sent "6.6.6.6"; the trusted proxy appended the real peer.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
        .body(Body::from(json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string()))
        .expect("request");
    let (status, _, _) = app.send(req).await;
    assert_eq!(status, StatusCode::OK);
    let admin = app.admin_token().await;
    let (_, _, audit) = app.raw(Method::GET, "/api/v1/audit?action=login.success", Some(&admin), None).await;
    let ips: Vec<&str> =
        audit["items"].as_array().into_iter().flatten().filter_map(|i| i["source_ip"].as_str()).collect();
    assert!(ips.contains(&"203.0.113.9"), "audit source IPs: {ips:?}");
    assert!(!ips.contains(&"6.6.6.6"));
    app.cleanup().await;
}
