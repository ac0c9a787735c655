//! The scenario, end to end through the router, on every backend.

mod common;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use common::{ADMIN_PASSWORD, TestApp, on_each_backend};
use serde_json::{Value, json};

fn claims(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let dec = |p: Option<&str>| -> Value {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.unwrap_or_default()).unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    let header = dec(parts.next());
    (header, dec(parts.next()))
}

async fn audit_has(app: &TestApp, admin: &str, action: &str) -> Value {
    let (s, v) = app.call(Method::GET, &format!("/api/v1/audit?action={action}"), Some(admin), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn login_me_refresh_reuse_logout() {
    on_each_backend("login_me_refresh_reuse_logout", |app| async move {
        let (s, login) = app.login("admin", ADMIN_PASSWORD, None).await;
        assert_eq!(s, StatusCode::OK, "{login}");
        assert_eq!(login["token_type"], "Bearer");
        assert_eq!(login["expires_in"], 900);
        let at = login["access_token"].as_str().unwrap().to_string();
        let (header, c) = claims(&at);
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["alg"], "EdDSA");
        assert!(header["kid"].is_string());
        for k in ["iss", "aud", "sub", "app_id", "roles", "scope", "sid", "jti", "iat", "exp"] {
            assert!(!c[k].is_null(), "claim {k} missing: {c}");
        }
        assert!(c["aud"].is_string());
        assert_eq!(c["roles"], json!(["admin"]));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);

        let (s, me) = app.call(Method::GET, "/api/v1/auth/me", Some(&at), None).await;
        assert_eq!(s, StatusCode::OK, "{me}");
        assert_eq!(me["user"]["username"], "admin");
        assert_eq!(me["sid"], c["sid"]);

        // Rotate, then a retry of the same token within the grace window gets
        // the same successor.
        let r0 = login["refresh_token"].as_str().unwrap().to_string();
        let (s, r1) = app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": r0}))).await;
        assert_eq!(s, StatusCode::OK, "{r1}");
        let (s, r1b) = app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": r0}))).await;
        assert_eq!(s, StatusCode::OK, "{r1b}");
        assert_eq!(r1["refresh_token"], r1b["refresh_token"]);
        let r1 = r1["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(r0, r1);
        let (s, r2) = app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": r1}))).await;
        assert_eq!(s, StatusCode::OK, "{r2}");
        let at2 = r2["access_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&at2).1["sid"], c["sid"]);

        // Replay of the old token after the grace window: theft.
        app.state.clock.advance(10);
        let (s, h, v) =
            app.raw(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": r0}).to_string())).await;
        common::assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-refresh-token");
        // The whole family is dead, and so are the session's access tokens.
        let r2_refresh = r2["refresh_token"].as_str().unwrap();
        let (s, _) =
            app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": r2_refresh}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&at2), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        // Recorded: audit entry and a session revocation at a new version.
        let admin = app.admin_token().await;
        let audit = audit_has(&app, &admin, "refresh.reuse_detected").await;
        assert_eq!(audit["items"][0]["target"], c["sid"]);
        assert_eq!(audit["items"][0]["outcome"], "denied");

        // Logout ends the new session; its token stops working.
        let (s, _) = app.call(Method::POST, "/api/v1/auth/logout", Some(&admin), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&admin), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        app
    })
    .await;
}

#[tokio::test]
async fn apps_roles_assign_mint() {
    on_each_backend("apps_roles_assign_mint", |app| async move {
        let admin = app.admin_token().await;
        let uid = app.create_user(&admin, "alice", "alice-password").await;
        let (s, a) =
            app.call(Method::POST, "/api/v1/apps", Some(&admin), Some(json!({"id": "shop", "name": "Shop"}))).await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        let (s, r) = app
            .call(
                Method::POST,
                "/api/v1/apps/shop/roles",
                Some(&admin),
                Some(json!({"name": "editor", "scopes": ["orders:write", "orders:read"]})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let (s, v) = app
            .call(
                Method::POST,
                &format!("/api/v1/apps/shop/users/{uid}/roles"),
                Some(&admin),
                Some(json!({"role": "editor"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["roles"], json!(["editor"]));

        let (s, t) = app.login("alice", "alice-password", Some("shop")).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        let (_, c) = claims(t["access_token"].as_str().unwrap());
        assert_eq!(c["app_id"], "shop");
        assert_eq!(c["roles"], json!(["editor"]));
        assert_eq!(c["scope"], "orders:read orders:write");
        assert_eq!(c["sub"], uid);

        // An admin role in another app is not control-plane admin.
        let (s, _) =
            app.call(Method::POST, "/api/v1/apps/shop/roles", Some(&admin), Some(json!({"name": "admin"}))).await;
        assert_eq!(s, StatusCode::CREATED);
        app.call(
            Method::POST,
            &format!("/api/v1/apps/shop/users/{uid}/roles"),
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await;
        let (_, t) = app.login("alice", "alice-password", Some("shop")).await;
        let shop_admin = t["access_token"].as_str().unwrap();
        let (s, _) = app.call(Method::GET, "/api/v1/apps", Some(shop_admin), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // But it is enough to read oneself.
        let (s, _) = app.call(Method::GET, &format!("/api/v1/users/{uid}"), Some(shop_admin), None).await;
        assert_eq!(s, StatusCode::OK);

        let (s, v) = app
            .call(Method::DELETE, &format!("/api/v1/apps/shop/users/{uid}/roles?role=editor"), Some(&admin), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["roles"], json!(["admin"]));
        let (s, v) = app.call(Method::GET, "/api/v1/apps/shop/roles", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v.as_array().unwrap().len(), 2);
        app
    })
    .await;
}

#[tokio::test]
async fn apikey_create_verify_revoke() {
    on_each_backend("apikey_create_verify_revoke", |app| async move {
        let admin = app.admin_token().await;
        let body = json!({"name": "ci", "scopes": ["deploy"], "expires_in_days": 30, "rate_limit": 600});
        let (s, k) = app.call(Method::POST, "/api/v1/apikeys", Some(&admin), Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{k}");
        let key = k["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("mg_"));
        assert!(meshgate_core::apikey::parse(&key).is_ok());
        let id = k["id"].as_str().unwrap().to_string();

        let (s, v) = app.call(Method::POST, "/api/v1/apikeys/verify", None, Some(json!({"key": key}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["valid"], true);
        assert_eq!(v["id"], id);
        assert_eq!(v["scopes"], json!(["deploy"]));
        assert_eq!(v["rate_limit"], 600);

        // The plain key is never listed; the digest is stored, not the key.
        let (s, list) = app.call(Method::GET, "/api/v1/apikeys", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(!list.to_string().contains(&key));
        let stored: Vec<(String,)> =
            sqlx::query_as("SELECT digest FROM api_keys").fetch_all(&app.state.db.pool).await.unwrap();
        assert_eq!(stored[0].0, meshgate_core::apikey::digest(&key).to_hex());

        // Typos fail the checksum; unknown keys look the same.
        let mut typo = key.clone();
        let last = typo.pop().unwrap();
        typo.push(if last == 'a' { 'b' } else { 'a' });
        for bad in [typo.as_str(), "mg_nope", ""] {
            let (s, h, v) =
                app.raw(Method::POST, "/api/v1/apikeys/verify", None, Some(json!({"key": bad}).to_string())).await;
            common::assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-api-key");
        }

        let (s, _) = app.call(Method::DELETE, &format!("/api/v1/apikeys/{id}"), Some(&admin), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, h, v) =
            app.raw(Method::POST, "/api/v1/apikeys/verify", None, Some(json!({"key": key}).to_string())).await;
        common::assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-api-key");
        let rev: Vec<(String, i64)> = sqlx::query_as("SELECT kind, version FROM revocations WHERE value = $1")
            .bind(&id)
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
        assert_eq!(rev[0].0, "key");
        let audit = audit_has(&app, &admin, "apikey.revoke").await;
        assert_eq!(audit["items"][0]["target"], id);

        // An admin-scoped key authenticates admin routes.
        let body = json!({"name": "ops", "scopes": ["admin"], "expires_in_days": 1});
        let (_, k) = app.call(Method::POST, "/api/v1/apikeys", Some(&admin), Some(body)).await;
        let admin_key = k["key"].as_str().unwrap();
        let (s, _) = app.call(Method::GET, "/api/v1/users", Some(admin_key), None).await;
        assert_eq!(s, StatusCode::OK);

        // Expiry is mandatory and bounded.
        for days in [json!(0), json!(366)] {
            let (s, _) = app
                .call(
                    Method::POST,
                    "/api/v1/apikeys",
                    Some(&admin),
                    Some(json!({"name": "x", "expires_in_days": days})),
                )
                .await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        }
        let (s, _) = app.call(Method::POST, "/api/v1/apikeys", Some(&admin), Some(json!({"name": "x"}))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

        // Expired keys are invalid.
        let (_, k) = app
            .call(Method::POST, "/api/v1/apikeys", Some(&admin), Some(json!({"name": "short", "expires_in_days": 1})))
            .await;
        app.state.clock.advance(86_401);
        let (s, _) = app.call(Method::POST, "/api/v1/apikeys/verify", None, Some(json!({"key": k["key"]}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        app
    })
    .await;
}

#[tokio::test]
async fn rotate_signing_key() {
    on_each_backend("rotate_signing_key", |app| async move {
        let admin = app.admin_token().await;
        let old_kid = claims(&admin).0["kid"].as_str().unwrap().to_string();
        let (s, jwks) = app.call(Method::GET, "/.well-known/jwks.json", None, None).await;
        assert_eq!(s, StatusCode::OK);
        let kids: Vec<String> =
            jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
        assert_eq!(kids.len(), 2, "active + published next: {jwks}");
        assert!(kids.contains(&old_kid));
        let next_kid = kids.iter().find(|k| **k != old_kid).unwrap().clone();

        // Too soon: the next key has not been published long enough.
        let (s, h, v) = app.raw(Method::POST, "/api/v1/signing-keys/rotate", Some(&admin), None).await;
        common::assert_problem(&h, &v, StatusCode::CONFLICT, s, "conflict");
        app.state.clock.advance(61);
        let (s, r) = app.call(Method::POST, "/api/v1/signing-keys/rotate", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        // The key that now signs is the one published before the rotation.
        assert_eq!(r["active_kid"], next_kid);
        let (_, jwks) = app.call(Method::GET, "/.well-known/jwks.json", None, None).await;
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert!(kids.contains(&old_kid.as_str()) && kids.contains(&next_kid.as_str()), "{jwks}");
        assert_eq!(kids.len(), 3);
        // Rotation was audited.
        let audit = audit_has(&app, &admin, "signing_key.rotate").await;
        assert_eq!(audit["items"][0]["target"], next_kid);

        let fresh = app.admin_token().await;
        assert_eq!(claims(&fresh).0["kid"], next_kid);
        // Tokens signed by the old key still verify.
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        // Forced rotation (compromise) skips the publication wait.
        let (s, _) = app.call(Method::POST, "/api/v1/signing-keys/rotate?force=true", Some(&fresh), None).await;
        assert_eq!(s, StatusCode::OK);
        // Once its tokens have expired, the old key is dropped.
        app.state.clock.advance(900 + 61);
        app.state.reload_keyring().await.unwrap();
        let (_, jwks) = app.call(Method::GET, "/.well-known/jwks.json", None, None).await;
        assert!(!jwks.to_string().contains(&old_kid));

        // Private keys are stored encrypted.
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT private_enc FROM signing_keys").fetch_all(&app.state.db.pool).await.unwrap();
        assert!(rows.iter().all(|r| !r.0.is_empty()));
        let (s, oidc) = app.call(Method::GET, "/.well-known/openid-configuration", None, None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(oidc["jwks_uri"].as_str().unwrap().ends_with("/.well-known/jwks.json"));
        app
    })
    .await;
}
