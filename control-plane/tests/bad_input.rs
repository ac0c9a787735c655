//! Bad input on every surface: malformed JSON, wrong shapes, oversized
//! bodies, SQL metacharacters, and bad credentials on every protected route.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use common::{ADMIN_PASSWORD, TestApp, assert_problem, on_each_backend};
use serde_json::json;

const SQLI: &str = "x'; DROP TABLE users; -- \" OR 1=1 /*";

/// Every protected route, with a body that would be valid.
fn protected_routes(uid: &str) -> Vec<(Method, String, Option<serde_json::Value>, bool)> {
    // (method, path, body, admin-only)
    vec![
        (Method::GET, "/api/v1/auth/me".into(), None, false),
        (Method::POST, "/api/v1/auth/logout".into(), None, false),
        (Method::GET, "/api/v1/users".into(), None, true),
        (Method::POST, "/api/v1/users".into(), Some(json!({"username": "zed", "password": "zed-password"})), true),
        (Method::GET, format!("/api/v1/users/{uid}"), None, false),
        (Method::PATCH, format!("/api/v1/users/{uid}"), Some(json!({"display_name": "Z"})), false),
        (Method::GET, "/api/v1/apps".into(), None, true),
        (Method::POST, "/api/v1/apps".into(), Some(json!({"name": "n"})), true),
        (Method::GET, "/api/v1/apps/meshgate/roles".into(), None, true),
        (Method::POST, "/api/v1/apps/meshgate/roles".into(), Some(json!({"name": "r"})), true),
        (Method::POST, format!("/api/v1/apps/meshgate/users/{uid}/roles"), Some(json!({"role": "admin"})), true),
        (Method::DELETE, format!("/api/v1/apps/meshgate/users/{uid}/roles?role=admin"), None, true),
        (Method::GET, "/api/v1/apikeys".into(), None, false),
        (Method::POST, "/api/v1/apikeys".into(), Some(json!({"name": "k", "expires_in_days": 1})), false),
        (Method::DELETE, "/api/v1/apikeys/nope".into(), None, false),
        (Method::POST, "/api/v1/revocations".into(), Some(json!({"kind": "token", "value": "j"})), true),
        (Method::POST, "/api/v1/signing-keys/rotate".into(), None, true),
        (Method::GET, "/api/v1/audit".into(), None, true),
    ]
}

fn forge(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["admin", "superuser"]);
    parts[1] = b64.encode(claims.to_string());
    parts.join(".")
}

fn alg_none(token: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let header = b64.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    format!("{header}.{}.", parts[1])
}

#[tokio::test]
async fn bad_credentials_on_every_protected_route() {
    on_each_backend("bad_credentials_on_every_protected_route", |app| async move {
        let admin = app.admin_token().await;
        let uid = app.create_user(&admin, "bob", "bob-password").await;
        app.call(Method::POST, "/api/v1/apps", Some(&admin), Some(json!({"id": "other", "name": "Other"}))).await;
        let (_, t) = app.login("bob", "bob-password", Some("other")).await;
        let other_app = t["access_token"].as_str().unwrap().to_string();
        let (_, t) = app.login("admin", ADMIN_PASSWORD, None).await;
        let soon_expired = t["access_token"].as_str().unwrap().to_string();
        let forged = forge(&admin);
        let none = alg_none(&admin);
        let garbage = "not.a.jwt".to_string();
        let huge = format!("{}.{}.{}", "e".repeat(5000), "e".repeat(5000), "e".repeat(100));

        for (method, path, body, admin_only) in protected_routes(&uid) {
            let body_text = body.as_ref().map(|b| b.to_string());
            let (s, h, v) = app.raw(method.clone(), &path, None, body_text.clone()).await;
            assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "unauthenticated");
            for bad in [&forged, &none, &garbage, &huge] {
                let (s, h, v) = app.raw(method.clone(), &path, Some(bad), body_text.clone()).await;
                assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-token");
                assert!(h.get(header::WWW_AUTHENTICATE).is_some());
            }
            if admin_only {
                let (s, h, v) = app.raw(method.clone(), &path, Some(&other_app), body_text.clone()).await;
                assert_problem(&h, &v, StatusCode::FORBIDDEN, s, "forbidden");
            }
            // Wrong scheme.
            let req = Request::builder()
                .method(method.clone())
                .uri(&path)
                .header(header::AUTHORIZATION, format!("Basic {admin}"))
                .body(Body::empty())
                .unwrap();
            let (s, h, v) = app.send(req).await;
            assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-token");
        }
        // Other users' records are off limits to a non-admin.
        let (s, _) = app.call(Method::GET, "/api/v1/users/someone-else", Some(&other_app), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = app
            .call(Method::PATCH, &format!("/api/v1/users/{uid}"), Some(&other_app), Some(json!({"disabled": true})))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);

        // Expired: past exp plus skew.
        app.state.clock.advance(900 + 31);
        for (method, path, body, _) in protected_routes(&uid) {
            let (s, h, v) = app.raw(method, &path, Some(&soon_expired), body.map(|b| b.to_string())).await;
            assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-token");
        }
        app
    })
    .await;
}

#[tokio::test]
async fn malformed_and_mistyped_bodies() {
    on_each_backend("malformed_and_mistyped_bodies", |app| async move {
        let admin = app.admin_token().await;
        let cases: Vec<(&str, &str, StatusCode, &str)> = vec![
            ("/api/v1/auth/login", "{\"username\": ", StatusCode::BAD_REQUEST, "malformed-json"),
            ("/api/v1/auth/login", "nope", StatusCode::BAD_REQUEST, "malformed-json"),
            (
                "/api/v1/auth/login",
                "{\"username\": 5, \"password\": \"x\"}",
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
            ),
            ("/api/v1/auth/login", "{\"username\": \"admin\"}", StatusCode::UNPROCESSABLE_ENTITY, "invalid-body"),
            (
                "/api/v1/auth/login",
                "{\"username\": \"a\", \"password\": \"b\", \"role\": \"admin\"}",
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
            ),
            ("/api/v1/auth/refresh", "{}", StatusCode::UNPROCESSABLE_ENTITY, "invalid-body"),
            (
                "/api/v1/auth/refresh",
                "{\"refresh_token\": \"nodot\"}",
                StatusCode::UNAUTHORIZED,
                "invalid-refresh-token",
            ),
            ("/api/v1/apikeys/verify", "{\"key\": null}", StatusCode::UNPROCESSABLE_ENTITY, "invalid-body"),
            (
                "/api/v1/apikeys",
                "{\"name\": \"k\", \"expires_in_days\": \"30\"}",
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
            ),
            (
                "/api/v1/apikeys",
                "{\"name\": \"k\", \"expires_in_days\": 30, \"owner\": \"x\"}",
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
            ),
            (
                "/api/v1/revocations",
                "{\"kind\": \"everything\", \"value\": \"x\"}",
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
            ),
            ("/api/v1/apps", "{\"name\": \"a\", \"id\": \"Bad Id!\"}", StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            (
                "/api/v1/users",
                "{\"username\": \"u\", \"password\": \"short\"}",
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
            ),
        ];
        for (path, body, status, slug) in cases {
            let (s, h, v) = app.raw(Method::POST, path, Some(&admin), Some(body.to_string())).await;
            assert_problem(&h, &v, status, s, slug);
        }
        // Not declared as JSON.
        let req = Request::builder().method(Method::POST).uri("/api/v1/auth/login").body(Body::from("{}")).unwrap();
        let (s, h, v) = app.send(req).await;
        assert_problem(&h, &v, StatusCode::UNSUPPORTED_MEDIA_TYPE, s, "unsupported-media-type");
        // Oversized.
        let big = json!({"username": "a".repeat(200_000), "password": "x"}).to_string();
        let (s, h, v) = app.raw(Method::POST, "/api/v1/auth/login", None, Some(big)).await;
        assert_problem(&h, &v, StatusCode::PAYLOAD_TOO_LARGE, s, "payload-too-large");
        // Unknown route and method.
        let (s, h, v) = app.raw(Method::GET, "/api/v1/nothing", None, None).await;
        assert_problem(&h, &v, StatusCode::NOT_FOUND, s, "not-found");
        let (s, h, v) = app.raw(Method::PUT, "/health", None, None).await;
        assert_problem(&h, &v, StatusCode::METHOD_NOT_ALLOWED, s, "method-not-allowed");
        // Bad query parameters.
        let (s, h, v) = app.raw(Method::GET, "/api/v1/audit?limit=lots", Some(&admin), None).await;
        assert_problem(&h, &v, StatusCode::UNPROCESSABLE_ENTITY, s, "validation");
        app
    })
    .await;
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let row: (i64,) =
        sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&app.state.db.pool).await.unwrap();
    row.0
}

#[tokio::test]
async fn sql_metacharacters_are_data() {
    on_each_backend("sql_metacharacters_are_data", |app| async move {
        let admin = app.admin_token().await;
        let users_before = count(&app, "users").await;
        // Identifiers with a strict syntax reject them.
        let (s, _) = app
            .call(
                Method::POST,
                "/api/v1/users",
                Some(&admin),
                Some(json!({"username": SQLI, "password": "long-enough"})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _) =
            app.call(Method::POST, "/api/v1/apps/meshgate/roles", Some(&admin), Some(json!({"name": SQLI}))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _) = app
            .call(
                Method::POST,
                "/api/v1/apikeys",
                Some(&admin),
                Some(json!({"name": "k", "expires_in_days": 1, "scopes": [SQLI]})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        // Login with one: just invalid credentials.
        let (s, _) = app.login(SQLI, SQLI, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = app
            .call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": format!("{SQLI}.{SQLI}")})))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = app.call(Method::POST, "/api/v1/apikeys/verify", None, Some(json!({"key": SQLI}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // Free text is stored and returned verbatim.
        let (s, a) = app
            .call(Method::POST, "/api/v1/apps", Some(&admin), Some(json!({"name": SQLI, "description": SQLI})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        assert_eq!(a["name"], SQLI);
        let (s, k) = app
            .call(Method::POST, "/api/v1/apikeys", Some(&admin), Some(json!({"name": SQLI, "expires_in_days": 1})))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(k["name"], SQLI);
        let admin_id = app.call(Method::GET, "/api/v1/auth/me", Some(&admin), None).await.1["user"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (s, u) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/users/{admin_id}"),
                Some(&admin),
                Some(json!({"display_name": SQLI})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(u["display_name"], SQLI);
        let (s, _) = app
            .call(
                Method::POST,
                "/api/v1/revocations",
                Some(&admin),
                Some(json!({"kind": "token", "value": SQLI, "reason": SQLI})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        // In paths and queries.
        let enc = "x%27%3B%20DROP%20TABLE%20users%3B%20--";
        for path in
            [format!("/api/v1/users/{enc}"), format!("/api/v1/apps/{enc}/roles"), format!("/api/v1/apikeys/{enc}")]
        {
            let method = if path.contains("apikeys") { Method::DELETE } else { Method::GET };
            let (s, _) = app.call(method, &path, Some(&admin), None).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        }
        let (s, v) =
            app.call(Method::GET, &format!("/api/v1/audit?action={enc}&actor={enc}"), Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["items"], json!([]));
        assert_eq!(count(&app, "users").await, users_before);
        app
    })
    .await;
}

#[tokio::test]
async fn failed_requests_write_nothing() {
    on_each_backend("failed_requests_write_nothing", |app| async move {
        let admin = app.admin_token().await;
        let (keys, audit) = (count(&app, "api_keys").await, count(&app, "audit_log").await);
        let (s, _) = app
            .call(
                Method::POST,
                "/api/v1/apikeys",
                Some(&admin),
                Some(json!({"name": "k", "expires_in_days": 1, "owner_id": "ghost"})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _) = app
            .call(
                Method::POST,
                "/api/v1/apikeys",
                Some(&admin),
                Some(json!({"name": "k", "expires_in_days": 1, "app_id": "ghost"})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _) = app.call(Method::POST, "/api/v1/apps/ghost/roles", Some(&admin), Some(json!({"name": "r"}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = app
            .call(Method::POST, "/api/v1/apps/meshgate/users/ghost/roles", Some(&admin), Some(json!({"role": "admin"})))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = app
            .call(Method::POST, "/api/v1/revocations", Some(&admin), Some(json!({"kind": "key", "value": "ghost"})))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(count(&app, "api_keys").await, keys);
        assert_eq!(count(&app, "audit_log").await, audit);
        assert_eq!(count(&app, "revocations").await, 0);
        // Duplicates conflict without a second row.
        let (s, _) =
            app.call(Method::POST, "/api/v1/apps", Some(&admin), Some(json!({"id": "dup", "name": "dup"}))).await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, h, v) = app
            .raw(Method::POST, "/api/v1/apps", Some(&admin), Some(json!({"id": "dup", "name": "dup2"}).to_string()))
            .await;
        assert_problem(&h, &v, StatusCode::CONFLICT, s, "conflict");
        assert_eq!(count(&app, "apps").await, 2);
        app
    })
    .await;
}
