//! Attacks on the control plane (issue 11), each answered as `SECURITY.md`
//! says: mass assignment through PATCH, PUT and POST bodies; oversized and
//! deeply nested JSON; races and replays of one refresh token; admin routes
//! with every lesser credential; password guessing and spraying; and the
//! browser-login attacks (PKCE downgrade, an injected authorization code, a
//! code minted for another client, open redirect through `return_to`) against
//! a provider written here that can be made as sloppy as the attack needs.
//!
//! Every refusal is checked twice: the answer (status and problem type) and
//! the database afterwards (nothing written). Each test runs on SQLite and,
//! when it answers, on PostgreSQL.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::login::{LoginEnv, RETURN_TO, browser, enc, location};
use common::{ADMIN_PASSWORD, TestApp, backends, on_each_backend};
use http_body_util::BodyExt;
use jwt_simple::prelude::{Claims, ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// The longest any single request of these tests may take.
const BOUND: std::time::Duration = std::time::Duration::from_secs(10);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {BOUND:?}"),
    }
}

/// A problem+json answer with `status` and problem `slug`.
fn assert_slug(what: &str, got: (StatusCode, &HeaderMap, &Value), status: StatusCode, slug: &str) {
    let (s, h, v) = got;
    assert_eq!(s, status, "{what}: {v}");
    assert_eq!(
        h.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()),
        Some("application/problem+json"),
        "{what}: {v}"
    );
    assert_eq!(v["type"], format!("urn:meshgate:problem:{slug}"), "{what}");
    assert_eq!(v["status"], status.as_u16(), "{what}");
}

/// A problem+json answer with one of the `allowed` statuses.
fn assert_refused(what: &str, got: (StatusCode, &HeaderMap, &Value), allowed: &[StatusCode]) {
    let (s, h, v) = got;
    assert!(allowed.contains(&s), "{what}: got {s}, want one of {allowed:?}: {v}");
    assert_eq!(
        h.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()),
        Some("application/problem+json"),
        "{what}: {v}"
    );
    assert_eq!(v["status"], s.as_u16(), "{what}: {v}");
}

/// The access token of a password login.
async fn token(app: &TestApp, user: &str, password: &str, app_id: Option<&str>) -> String {
    let (s, v) = app.login(user, password, app_id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["access_token"].as_str().expect("access token").to_string()
}

/// `GET /api/v1/auth/me` with `token`.
async fn me(app: &TestApp, token: &str) -> Value {
    let (s, v) = app.call(Method::GET, "/api/v1/auth/me", Some(token), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// A claim of a JWT (unverified: the tests only read their own tokens).
fn claim(jwt: &str, name: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json");
    claims[name].clone()
}

/// Every row a refused request must leave as it was (an API key's last use
/// aside), one line per row, sorted.
async fn footprint(app: &TestApp) -> Vec<String> {
    const QUERIES: [&str; 14] = [
        "SELECT 'user ' || id || ' ' || username || ' ' || COALESCE(email, '-') || ' ' \
         || COALESCE(display_name, '-') || ' ' || password_hash || ' ' || CAST(disabled AS TEXT) || ' ' \
         || CAST(created_at AS TEXT) || ' ' || CAST(updated_at AS TEXT) FROM users",
        "SELECT 'app ' || id || ' ' || name || ' ' || COALESCE(description, '-') FROM apps",
        "SELECT 'role ' || id || ' ' || app_id || ' ' || name || ' ' || scopes FROM roles",
        "SELECT 'assignment ' || user_id || ' ' || role_id || ' ' || app_id FROM role_assignments",
        "SELECT 'session ' || id || ' ' || COALESCE(CAST(revoked_at AS TEXT), '-') FROM sessions",
        "SELECT 'refresh ' || id || ' ' || COALESCE(CAST(used_at AS TEXT), '-') || ' ' \
         || COALESCE(CAST(revoked_at AS TEXT), '-') FROM refresh_tokens",
        "SELECT 'signing ' || kid || ' ' || status FROM signing_keys",
        "SELECT 'apikey ' || id || ' ' || owner_id || ' ' || COALESCE(app_id, '-') || ' ' || scopes || ' ' \
         || COALESCE(CAST(revoked_at AS TEXT), '-') FROM api_keys",
        "SELECT 'revocation ' || kind || ' ' || value FROM revocations",
        "SELECT 'audit ' || CAST(id AS TEXT) || ' ' || action FROM audit_log",
        "SELECT 'return ' || app_id || ' ' || url FROM app_return_urls",
        "SELECT 'identity ' || provider || ' ' || subject || ' ' || user_id FROM identities",
        "SELECT 'state ' || state_hash FROM oauth_states",
        "SELECT 'counter ' || name || ' ' || CAST(value AS TEXT) FROM counters",
    ];
    let mut out = Vec::new();
    for q in QUERIES {
        let rows: Vec<(String,)> = sqlx::query_as(q).fetch_all(&app.state.db.pool).await.expect(q);
        out.extend(rows.into_iter().map(|r| r.0));
    }
    out.sort();
    out
}

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    let row: (i64,) = sqlx::query_as(sql).bind(bind).fetch_one(&app.state.db.pool).await.expect(sql);
    row.0
}

/// Sends `body` as JSON (or as a form) with an optional bearer credential.
async fn send_body(
    app: &TestApp,
    method: Method,
    path: &str,
    credential: Option<&str>,
    form: bool,
    body: impl Into<Body>,
) -> (StatusCode, HeaderMap, Value) {
    let kind = if form { "application/x-www-form-urlencoded" } else { "application/json" };
    let mut req = Request::builder().method(method).uri(path).header(header::CONTENT_TYPE, kind);
    if let Some(c) = credential {
        req = req.header(header::AUTHORIZATION, format!("Bearer {c}"));
    }
    bounded(path, app.send(req.body(body.into()).expect("request"))).await
}

// ---------------------------------------------------------------------------
// 1. Mass assignment
// ---------------------------------------------------------------------------

#[tokio::test]
async fn mass_assignment_through_patch_is_refused_and_writes_nothing() {
    on_each_backend("mass_assignment_through_patch_is_refused_and_writes_nothing", |app| async move {
        let admin = app.admin_token().await;
        let admin_id = me(&app, &admin).await["user"]["id"].as_str().expect("id").to_string();
        let bob = app.create_user(&admin, "bob", "bob-password").await;
        let carol = app.create_user(&admin, "carol", "carol-password").await;
        let bob_token = token(&app, "bob", "bob-password", None).await;
        let known_hash = meshgate::auth::password::hash("pwned-password".into(), meshgate::users::cost(&app.state))
            .await
            .expect("hash");

        // Fields a caller never sets, alone or next to a legitimate one.
        let mut smuggled: Vec<String> = [
            json!({"id": "attacker-chosen-id"}),
            json!({"username": "admin"}),
            json!({"roles": ["admin"]}),
            json!({"role": "admin"}),
            json!({"is_admin": true}),
            json!({"admin": true}),
            json!({"password_hash": known_hash}),
            json!({"created_at": 0}),
            json!({"updated_at": 0}),
            json!({"app_id": "meshgate"}),
            json!({"email_verified": true}),
            json!({"scopes": ["admin"]}),
            json!({"Disabled": false}),
            json!({"DISPLAY_NAME": "case variant"}),
            json!({"display_name": "Mallory", "roles": ["admin"]}),
            json!({"email": "mallory@example.test", "email_verified": true}),
            json!({"password": "pwned-password", "password_hash": known_hash}),
            json!({"user": {"roles": ["admin"]}}),
            json!({"__proto__": {"is_admin": true}}),
        ]
        .iter()
        .map(Value::to_string)
        .collect();
        // A repeated key (last-wins parsers would read the second).
        smuggled.push(r#"{"display_name": "Bob", "display_name": "Mallory"}"#.into());

        let before = footprint(&app).await;
        // The schema refuses them whoever asks, admins included, before any
        // permission check or write.
        for (who, credential, target) in
            [("bob on himself", &bob_token, &bob), ("admin on bob", &admin, &bob), ("bob on carol", &bob_token, &carol)]
        {
            for body in &smuggled {
                let path = format!("/api/v1/users/{target}");
                let (s, h, v) = send_body(&app, Method::PATCH, &path, Some(credential), false, body.clone()).await;
                assert_slug(&format!("{who}: {body}"), (s, &h, &v), StatusCode::UNPROCESSABLE_ENTITY, "invalid-body");
            }
        }
        // A positional body longer than the schema (serde also reads a
        // struct from an array): refused as malformed or invalid.
        let positional = r#"[null, "Mallory", null, null, true]"#;
        let (s, h, v) =
            send_body(&app, Method::PATCH, &format!("/api/v1/users/{bob}"), Some(&admin), false, positional).await;
        assert_refused("positional body", (s, &h, &v), &[StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY]);
        // Well-formed bodies a non-admin may not send: admin-only fields on
        // themself, anything on someone else.
        for (target, body) in [
            (&bob, json!({"disabled": false})),
            (&bob, json!({"disabled": true})),
            (&carol, json!({"display_name": "pwned"})),
            (&carol, json!({"password": "pwned-password"})),
            (&carol, json!({"email": "bob@example.test"})),
            (&admin_id, json!({"password": "pwned-password"})),
            (&admin_id, json!({"email": "bob@example.test"})),
            (&admin_id, json!({"disabled": true})),
        ] {
            let path = format!("/api/v1/users/{target}");
            let (s, h, v) = app.raw(Method::PATCH, &path, Some(&bob_token), Some(body.to_string())).await;
            assert_slug(&format!("bob: PATCH {target} {body}"), (s, &h, &v), StatusCode::FORBIDDEN, "forbidden");
        }
        // Nor grant himself the admin role through the role routes.
        let path = format!("/api/v1/apps/meshgate/users/{bob}/roles");
        let (s, h, v) =
            app.raw(Method::POST, &path, Some(&bob_token), Some(json!({"role": "admin"}).to_string())).await;
        assert_slug("bob assigns himself admin", (s, &h, &v), StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(footprint(&app).await, before, "a refused PATCH wrote something");

        // Read back: no role, no password change, nobody disabled.
        let fresh = token(&app, "bob", "bob-password", None).await;
        assert_eq!(me(&app, &fresh).await["roles"], json!([]));
        for user in ["admin", "bob", "carol"] {
            let (s, _) = app.login(user, "pwned-password", None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{user}'s password was changed");
        }
        // Control: the same route does write what the caller may set.
        let (s, u) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/users/{bob}"),
                Some(&bob_token),
                Some(json!({"display_name": "Bob"})),
            )
            .await;
        assert_eq!((s, &u["display_name"]), (StatusCode::OK, &json!("Bob")), "{u}");
        app
    })
    .await;
}

#[tokio::test]
async fn mass_assignment_through_put_and_post_bodies_is_refused() {
    on_each_backend("mass_assignment_through_put_and_post_bodies_is_refused", |app| async move {
        let admin = app.admin_token().await;
        let bob = app.create_user(&admin, "bob", "bob-password").await;
        let bob_token = token(&app, "bob", "bob-password", None).await;
        let (s, _) =
            app.call(Method::POST, "/api/v1/apps", Some(&admin), Some(json!({"id": "shop", "name": "Shop"}))).await;
        assert_eq!(s, StatusCode::CREATED);
        let urls = "/api/v1/apps/shop/return-urls";
        let (s, v) = app.call(Method::PUT, urls, Some(&admin), Some(json!({"urls": [RETURN_TO]}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");

        let evil = "https://evil.test/cb";
        let assign = format!("/api/v1/apps/shop/users/{bob}/roles");
        let cases: Vec<(Method, &str, Value)> = vec![
            (Method::PUT, urls, json!({"urls": [evil], "app_id": "meshgate"})),
            (Method::PUT, urls, json!({"urls": [evil], "id": "meshgate"})),
            (Method::PUT, urls, json!({"urls": [evil], "match": "prefix"})),
            (Method::POST, "/api/v1/users", json!({"username": "u2", "password": "long-enough", "roles": ["admin"]})),
            (Method::POST, "/api/v1/users", json!({"username": "u2", "password": "long-enough", "is_admin": true})),
            (Method::POST, "/api/v1/users", json!({"username": "u2", "password": "long-enough", "id": "chosen"})),
            (Method::POST, "/api/v1/users", json!({"username": "u2", "password": "x", "password_hash": "$argon2id$"})),
            (Method::POST, "/api/v1/users", json!({"username": "u2", "password": "long-enough", "disabled": false})),
            (Method::POST, "/api/v1/users", json!({"username": "u2", "password": "long-enough", "created_at": 0})),
            (
                Method::POST,
                "/api/v1/users",
                json!({"username": "u2", "password": "long-enough", "email": "a@b.test", "email_verified": true}),
            ),
            (Method::POST, "/api/v1/apps", json!({"name": "n", "created_at": 0})),
            (Method::POST, "/api/v1/apps/shop/roles", json!({"name": "r", "app_id": "meshgate"})),
            (Method::POST, "/api/v1/apps/shop/roles", json!({"name": "r", "id": "chosen"})),
            (Method::POST, assign.as_str(), json!({"role": "admin", "app_id": "meshgate"})),
            (Method::POST, "/api/v1/apikeys", json!({"name": "k", "expires_in_days": 1, "id": "chosen"})),
            (Method::POST, "/api/v1/apikeys", json!({"name": "k", "expires_in_days": 1, "digest": "00"})),
            (
                Method::POST,
                "/api/v1/apikeys",
                json!({"name": "k", "expires_in_days": 1, "expires_at": 9_999_999_999i64}),
            ),
            (Method::POST, "/api/v1/apikeys", json!({"name": "k", "expires_in_days": 1, "revoked_at": null})),
            (Method::POST, "/api/v1/apikeys", json!({"name": "k", "expires_in_days": 1, "version": 0})),
            (Method::POST, "/api/v1/revocations", json!({"kind": "token", "value": "v", "until": 0})),
            (Method::POST, "/api/v1/revocations", json!({"kind": "user", "value": bob, "not_before": 0})),
            (Method::POST, "/api/v1/auth/refresh", json!({"refresh_token": "a.b", "session_id": "s"})),
            (Method::POST, "/api/v1/auth/otp/email/send", json!({"email": "a@b.test", "email_verified": true})),
            (Method::POST, "/api/v1/auth/exchange", json!({"token": "a.b.c", "roles": ["admin"]})),
        ];
        let before = footprint(&app).await;
        for (method, path, body) in &cases {
            let (s, h, v) = app.raw(method.clone(), path, Some(&admin), Some(body.to_string())).await;
            assert_slug(
                &format!("{method} {path} {body}"),
                (s, &h, &v),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
            );
        }
        // A non-admin may not replace an app's return URLs at all.
        let (s, h, v) = app.raw(Method::PUT, urls, Some(&bob_token), Some(json!({"urls": [evil]}).to_string())).await;
        assert_slug("bob replaces return URLs", (s, &h, &v), StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(footprint(&app).await, before, "a refused body wrote something");
        let (_, v) = app.call(Method::GET, urls, Some(&admin), None).await;
        assert_eq!(v["urls"], json!([RETURN_TO]));
        app
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. Oversized and deeply nested bodies
// ---------------------------------------------------------------------------

/// Every route that reads a body: (method, path, needs the admin token, form).
fn body_routes(admin_id: &str) -> Vec<(Method, String, bool, bool)> {
    let route = |m: Method, p: &str, admin: bool, form: bool| (m, p.to_string(), admin, form);
    vec![
        route(Method::POST, "/api/v1/auth/login", false, false),
        route(Method::POST, "/api/v1/auth/refresh", false, false),
        route(Method::POST, "/api/v1/auth/logout", true, false),
        route(Method::POST, "/api/v1/auth/exchange", false, false),
        route(Method::POST, "/api/v1/auth/otp/email/send", false, false),
        route(Method::POST, "/api/v1/auth/otp/email/verify", false, false),
        route(Method::POST, "/api/v1/users", true, false),
        route(Method::PATCH, &format!("/api/v1/users/{admin_id}"), true, false),
        route(Method::POST, "/api/v1/apps", true, false),
        route(Method::POST, "/api/v1/apps/meshgate/roles", true, false),
        route(Method::POST, &format!("/api/v1/apps/meshgate/users/{admin_id}/roles"), true, false),
        route(Method::PUT, "/api/v1/apps/meshgate/return-urls", true, false),
        route(Method::POST, "/api/v1/apikeys", true, false),
        route(Method::POST, "/api/v1/apikeys/verify", false, false),
        route(Method::POST, "/api/v1/revocations", true, false),
        route(Method::POST, "/api/v1/credits/grant", true, false),
        route(Method::POST, "/api/v1/credits/deduct", true, false),
        route(Method::POST, "/api/v1/credits/report", true, false),
        route(Method::POST, "/signin/password", false, true),
        route(Method::POST, "/signin/otp/send", false, true),
        route(Method::POST, "/signin/otp/verify", false, true),
        route(Method::POST, "/api/v1/auth/oauth/any/callback", false, true),
    ]
}

/// The service keeps answering, and a normal login still works.
async fn still_serving(app: &TestApp) {
    let (s, _) = bounded("health", app.call(Method::GET, "/health", None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = bounded("login", app.login("admin", ADMIN_PASSWORD, None)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn oversized_bodies_are_413_on_every_body_route() {
    on_each_backend("oversized_bodies_are_413_on_every_body_route", |app| async move {
        let admin = app.admin_token().await;
        let admin_id = me(&app, &admin).await["user"]["id"].as_str().expect("id").to_string();
        let limit = app.state.config.max_body_bytes;
        let filler = "a".repeat(limit + 1024);
        let before = footprint(&app).await;
        for (method, path, needs_admin, form) in body_routes(&admin_id) {
            let body = if form { format!("username={filler}") } else { json!({"username": filler}).to_string() };
            let credential = needs_admin.then_some(admin.as_str());
            let (s, h, v) = send_body(&app, method.clone(), &path, credential, form, body).await;
            assert_slug(&format!("{method} {path}"), (s, &h, &v), StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        }
        assert_eq!(footprint(&app).await, before);
        // The admin's session survived its refused logout.
        me(&app, &admin).await;
        still_serving(&app).await;
        app
    })
    .await;
}

/// One request on a fresh connection; returns the status and the head.
async fn raw_http(addr: std::net::SocketAddr, request: Vec<u8>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything: a
    // failed write is expected then, the answer is still there to read.
    let _ = stream.write_all(&request).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_lowercase();
    (status, head)
}

#[tokio::test]
async fn oversized_bodies_over_a_socket_with_length_or_chunked() {
    on_each_backend("oversized_bodies_over_a_socket_with_length_or_chunked", |app| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(meshgate::run(listener, app.state.clone(), async move {
            let _ = stopped.await;
        }));
        let limit = app.state.config.max_body_bytes;
        let body = json!({"username": "a".repeat(limit + 1024), "password": "x"}).to_string();
        let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: meshgate\r\nConnection: close\r\n\
                    Content-Type: application/json\r\n";
        let with_length = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes();
        // Chunked: no length up front, the limit must hold while reading.
        let mut chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
        for chunk in body.as_bytes().chunks(4096) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        for (what, request) in [("content-length", with_length), ("chunked", chunked)] {
            let (status, head) = bounded(what, raw_http(addr, request)).await;
            assert_eq!(status, 413, "{what}: {head}");
            assert!(head.contains("content-type: application/problem+json"), "{what}: {head}");
        }
        let health = b"GET /health HTTP/1.1\r\nHost: meshgate\r\nConnection: close\r\n\r\n".to_vec();
        assert_eq!(bounded("health", raw_http(addr, health)).await.0, 200);
        let _ = stop.send(());
        let _ = bounded("shutdown", server).await;
        app
    })
    .await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_overflow_or_hang() {
    for kind in backends("deeply_nested_json_is_refused_without_overflow_or_hang").await {
        // Room for 100 000 levels under the body limit.
        let app = TestApp::with(kind, |c| c.max_body_bytes = 1 << 20).await;
        let admin = app.admin_token().await;
        let admin_id = me(&app, &admin).await["user"]["id"].as_str().expect("id").to_string();
        let n = 100_000;
        let bodies = [
            "[".repeat(n),
            format!("{}{}", "[".repeat(n), "]".repeat(n)),
            "{\"a\":".repeat(n),
            format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)),
            format!("{{\"username\":{}", "[".repeat(n)),
            format!("{{\"username\":\"u\",\"password\":{}\"p\"{}}}", "{\"a\":".repeat(n), "}".repeat(n)),
        ];
        let before = footprint(&app).await;
        for (method, path, needs_admin, form) in body_routes(&admin_id) {
            if form {
                continue;
            }
            for body in &bodies {
                let credential = needs_admin.then_some(admin.as_str());
                let what = format!("{method} {path} with {}…", &body[..12]);
                // A hang guard, not a speed target: a parser that recursed
                // or backtracked on the nesting would never answer.
                let send = send_body(&app, method.clone(), &path, credential, false, body.clone());
                let (s, h, v) = tokio::time::timeout(std::time::Duration::from_secs(5), send)
                    .await
                    .unwrap_or_else(|_| panic!("{what}: no answer within 5 s"));
                assert_refused(&what, (s, &h, &v), &[StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY]);
            }
        }
        assert_eq!(footprint(&app).await, before);
        me(&app, &admin).await;
        still_serving(&app).await;
        app.cleanup().await;
    }
    // Under the default limit too: 60 000 levels fit in 64 KiB.
    let app = TestApp::new(common::Kind::Sqlite).await;
    for body in ["[".repeat(60_000), "{\"a\":".repeat(13_000)] {
        let (s, h, v) = send_body(&app, Method::POST, "/api/v1/auth/login", None, false, body).await;
        assert_refused("default limit", (s, &h, &v), &[StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY]);
    }
    still_serving(&app).await;
    app.cleanup().await;
}

// ---------------------------------------------------------------------------
// 3. Refresh races and replays
// ---------------------------------------------------------------------------

/// `n` refreshes of one token released together, spread over `routers`
/// (replicas of one database); every answer in order.
async fn refresh_together(routers: &[Router], refresh: &str, n: usize) -> Vec<(StatusCode, Value)> {
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (router, gate) = (routers[i % routers.len()].clone(), gate.clone());
            let body = json!({"refresh_token": refresh}).to_string();
            tokio::spawn(async move {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri("/api/v1/auth/refresh")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .expect("request");
                gate.wait().await;
                let resp = router.oneshot(req).await.expect("oneshot");
                let status = resp.status();
                let bytes = resp.into_body().collect().await.expect("body").to_bytes();
                (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(bounded("concurrent refresh", t).await.expect("task"));
    }
    answers
}

/// Ids of a session's refresh tokens that are neither used nor revoked.
async fn usable_tokens(app: &TestApp, sid: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM refresh_tokens WHERE session_id = $1 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(sid)
    .fetch_all(&app.state.db.pool)
    .await
    .expect("tokens");
    rows.into_iter().map(|r| r.0).collect()
}

fn token_id(refresh: &str) -> String {
    refresh.split_once('.').map(|(id, _)| id.to_string()).unwrap_or_default()
}

async fn refresh(app: &TestApp, refresh: &str) -> (StatusCode, HeaderMap, Value) {
    app.raw(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": refresh}).to_string())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_of_one_token_leave_one_successor_chain() {
    on_each_backend("concurrent_refreshes_of_one_token_leave_one_successor_chain", |app| async move {
        let replica = app.replica().await;
        let (s, login) = app.login("admin", ADMIN_PASSWORD, None).await;
        assert_eq!(s, StatusCode::OK, "{login}");
        let sid = claim(login["access_token"].as_str().expect("at"), "sid").as_str().expect("sid").to_string();
        let mut current = login["refresh_token"].as_str().expect("rt").to_string();
        let one = [app.router.clone()];
        let two = [app.router.clone(), replica.router.clone()];
        for (round, (n, routers)) in [(2usize, &one[..]), (8, &one[..]), (8, &two[..])].into_iter().enumerate() {
            let answers = refresh_together(routers, &current, n).await;
            // Inside the grace window every racer is answered, all with the
            // same successor (an HMAC of the presented token).
            for (s, v) in &answers {
                assert_eq!(*s, StatusCode::OK, "round {round}: {v}");
                assert_eq!(claim(v["access_token"].as_str().expect("at"), "sid"), json!(sid), "round {round}");
            }
            let successors: BTreeSet<&str> =
                answers.iter().map(|(_, v)| v["refresh_token"].as_str().expect("rt")).collect();
            assert_eq!(successors.len(), 1, "round {round}: two successor chains: {successors:?}");
            let next = successors.into_iter().next().expect("one").to_string();
            assert_ne!(next, current);
            // Exactly one usable token in the family: that successor.
            assert_eq!(usable_tokens(&app, &sid).await, vec![token_id(&next)], "round {round}");
            let family = count(&app, "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = $1", &sid).await;
            assert_eq!(family, round as i64 + 2, "round {round}: one new token per race");
            current = next;
        }
        // The chain goes on from that one successor.
        let (s, _, v) = refresh(&app, &current).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        me(&app, v["access_token"].as_str().expect("at")).await;
        replica.cleanup().await;
        app
    })
    .await;
}

/// A fresh login: (session id, refresh token).
async fn start_session(app: &TestApp) -> (String, String) {
    let (s, l) = app.login("admin", ADMIN_PASSWORD, None).await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let sid = claim(l["access_token"].as_str().expect("at"), "sid").as_str().expect("sid").to_string();
    (sid, l["refresh_token"].as_str().expect("rt").to_string())
}

/// One successful rotation: (refresh token, access token).
async fn rotate(app: &TestApp, rt: String) -> (String, String) {
    let (s, _, v) = refresh(app, &rt).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (v["refresh_token"].as_str().expect("rt").to_string(), v["access_token"].as_str().expect("at").to_string())
}

#[tokio::test]
async fn replayed_refresh_token_revokes_the_whole_family() {
    on_each_backend("replayed_refresh_token_revokes_the_whole_family", |app| async move {
        let grace = app.state.config.refresh_grace_secs;
        let (_, bystander) = app.login("admin", ADMIN_PASSWORD, None).await;
        // Inside the grace window, but the successor was already used: theft.
        let (sid, r0) = start_session(&app).await;
        let (r1, _) = rotate(&app, r0.clone()).await;
        let (r2, at2) = rotate(&app, r1).await;
        let (s, h, v) = refresh(&app, &r0).await;
        assert_slug(
            "replay after the successor was used",
            (s, &h, &v),
            StatusCode::UNAUTHORIZED,
            "invalid-refresh-token",
        );
        // The whole family and the session are gone; filters learn it by sid.
        let (s, h, v) = refresh(&app, &r2).await;
        assert_slug("newest token of a revoked family", (s, &h, &v), StatusCode::UNAUTHORIZED, "invalid-refresh-token");
        let (s, _) = app.call(Method::GET, "/api/v1/auth/me", Some(&at2), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "access token of a revoked session");
        assert_eq!(usable_tokens(&app, &sid).await, Vec::<String>::new());
        assert_eq!(count(&app, "SELECT COUNT(*) FROM revocations WHERE kind = 'sid' AND value = $1", &sid).await, 1);
        let audited = "SELECT COUNT(*) FROM audit_log WHERE action = 'refresh.reuse_detected' AND target = $1";
        assert_eq!(count(&app, audited, &sid).await, 1);
        assert_eq!(
            count(&app, "SELECT COUNT(*) FROM sessions WHERE id = $1 AND revoked_at IS NOT NULL", &sid).await,
            1
        );

        // Outside the grace window, the successor still unused: theft too.
        let (sid, r0) = start_session(&app).await;
        let (r1, _) = rotate(&app, r0.clone()).await;
        app.state.clock.advance(grace + 1);
        let (s, h, v) = refresh(&app, &r0).await;
        assert_slug("replay after the grace window", (s, &h, &v), StatusCode::UNAUTHORIZED, "invalid-refresh-token");
        let (s, h, v) = refresh(&app, &r1).await;
        assert_slug("successor after the replay", (s, &h, &v), StatusCode::UNAUTHORIZED, "invalid-refresh-token");
        assert_eq!(usable_tokens(&app, &sid).await, Vec::<String>::new());

        // A race inside the window, then a late replay of the raced token.
        let (sid, r0) = start_session(&app).await;
        let (r1, _) = rotate(&app, r0.clone()).await;
        let (r1_again, _) = rotate(&app, r0.clone()).await;
        assert_eq!(r1, r1_again);
        app.state.clock.advance(grace + 1);
        let (s, _, _) = refresh(&app, &r0).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(refresh(&app, &r1).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(usable_tokens(&app, &sid).await, Vec::<String>::new());

        // Another session of the same user is not touched.
        let (s, _, v) = refresh(&app, bystander["refresh_token"].as_str().expect("rt")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        app
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. Admin routes with lesser credentials
// ---------------------------------------------------------------------------

/// An API key made with `credential`.
async fn api_key(app: &TestApp, credential: &str, body: Value) -> String {
    let (s, v) = app.call(Method::POST, "/api/v1/apikeys", Some(credential), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["key"].as_str().expect("key").to_string()
}

#[tokio::test]
async fn admin_routes_refuse_every_lesser_credential() {
    on_each_backend("admin_routes_refuse_every_lesser_credential", |app| async move {
        let admin = app.admin_token().await;
        let admin_id = me(&app, &admin).await["user"]["id"].as_str().expect("id").to_string();
        let bob = app.create_user(&admin, "bob", "bob-password").await;
        let olga = app.create_user(&admin, "olga", "olga-password").await;
        let setup = [
            (Method::POST, "/api/v1/apps".to_string(), json!({"id": "other", "name": "Other"})),
            (Method::POST, "/api/v1/apps".to_string(), json!({"id": "shop", "name": "Shop"})),
            (Method::POST, "/api/v1/apps/other/roles".to_string(), json!({"name": "admin", "scopes": ["admin"]})),
            (Method::POST, format!("/api/v1/apps/other/users/{olga}/roles"), json!({"role": "admin"})),
            (Method::PUT, "/api/v1/apps/shop/return-urls".to_string(), json!({"urls": [RETURN_TO]})),
        ];
        for (method, path, body) in setup {
            let (s, v) = app.call(method, &path, Some(&admin), Some(body)).await;
            assert!(s.is_success(), "{path}: {v}");
        }
        let user = token(&app, "bob", "bob-password", None).await;
        let other_admin = token(&app, "olga", "olga-password", Some("other")).await;
        assert_eq!(me(&app, &other_admin).await["roles"], json!(["admin"]), "olga is admin of app other");
        let admin_elsewhere = token(&app, "admin", ADMIN_PASSWORD, Some("other")).await;
        let bob_key = api_key(&app, &user, json!({"name": "bob", "expires_in_days": 1})).await;
        let sync_key = api_key(&app, &admin, json!({"name": "feed", "expires_in_days": 1, "scopes": ["sync"]})).await;
        let ops_key = api_key(&app, &admin, json!({"name": "ops", "expires_in_days": 1, "scopes": ["ops:read"]})).await;
        let (_, keys) = app.call(Method::GET, "/api/v1/apikeys", Some(&admin), None).await;
        let admin_key_id = keys.as_array().expect("keys").iter().find(|k| k["name"] == "ops").expect("ops")["id"]
            .as_str()
            .expect("id")
            .to_string();

        let body = |v: Value| Some(v.to_string());
        let routes: Vec<(Method, String, Option<String>)> = vec![
            (Method::GET, "/api/v1/apps".into(), None),
            (Method::POST, "/api/v1/apps".into(), body(json!({"id": "evil", "name": "Evil"}))),
            (Method::GET, "/api/v1/apps/meshgate/roles".into(), None),
            (Method::POST, "/api/v1/apps/meshgate/roles".into(), body(json!({"name": "root", "scopes": ["admin"]}))),
            (Method::POST, format!("/api/v1/apps/meshgate/users/{bob}/roles"), body(json!({"role": "admin"}))),
            (Method::POST, format!("/api/v1/apps/other/users/{bob}/roles"), body(json!({"role": "admin"}))),
            (Method::DELETE, format!("/api/v1/apps/meshgate/users/{admin_id}/roles?role=admin"), None),
            (Method::DELETE, format!("/api/v1/apps/other/users/{olga}/roles?role=admin"), None),
            (Method::GET, "/api/v1/apps/shop/return-urls".into(), None),
            (Method::PUT, "/api/v1/apps/shop/return-urls".into(), body(json!({"urls": ["https://evil.test/cb"]}))),
            (Method::GET, "/api/v1/users".into(), None),
            (Method::POST, "/api/v1/users".into(), body(json!({"username": "eve", "password": "eve-password"}))),
            (Method::GET, format!("/api/v1/users/{admin_id}"), None),
            (Method::PATCH, format!("/api/v1/users/{admin_id}"), body(json!({"password": "pwned-password"}))),
            (Method::PATCH, format!("/api/v1/users/{admin_id}"), body(json!({"disabled": true}))),
            (Method::PATCH, format!("/api/v1/users/{olga}"), body(json!({"email": "eve@example.test"}))),
            (Method::POST, "/api/v1/revocations".into(), body(json!({"kind": "user", "value": admin_id}))),
            (Method::POST, "/api/v1/signing-keys/rotate".into(), None),
            (Method::POST, "/api/v1/signing-keys/rotate?force=true".into(), None),
            (Method::GET, "/api/v1/audit".into(), None),
            (Method::POST, "/api/v1/credits/grant".into(), body(json!({"account": admin_id, "amount": 1000}))),
            (Method::GET, "/api/v1/sync?wait=0".into(), None),
            (Method::GET, "/api/v1/sync?since=0&snapshot=true&wait=0".into(), None),
        ];
        let credentials = [
            ("user token", &user, &bob, false),
            ("admin role of another app", &other_admin, &olga, false),
            ("the admin's token for another app", &admin_elsewhere, &admin_id, false),
            ("user's API key", &bob_key, &bob, true),
            ("the admin's sync key", &sync_key, &admin_id, true),
            ("the admin's key without admin scope", &ops_key, &admin_id, true),
        ];
        let before = footprint(&app).await;
        for (who, credential, own_id, is_key) in credentials {
            for (method, path, body) in &routes {
                let own = path.starts_with(&format!("/api/v1/users/{own_id}"));
                // A person may read and edit their own record with a token;
                // an API key may read its owner's but never edit it.
                if own && (*method == Method::GET || !is_key) {
                    continue;
                }
                if who.contains("sync key") && path.starts_with("/api/v1/sync") {
                    continue;
                }
                let (s, h, v) = app.raw(method.clone(), path, Some(credential), body.clone()).await;
                assert_slug(&format!("{who}: {method} {path}"), (s, &h, &v), StatusCode::FORBIDDEN, "forbidden");
            }
            // Someone else's key is invisible, so it cannot be revoked.
            if *own_id != admin_id {
                let path = format!("/api/v1/apikeys/{admin_key_id}");
                let (s, h, v) = app.raw(Method::DELETE, &path, Some(credential), None).await;
                assert_slug(&format!("{who}: revoke the admin's key"), (s, &h, &v), StatusCode::NOT_FOUND, "not-found");
            }
        }
        assert_eq!(footprint(&app).await, before, "a refused admin request wrote something");
        // The refusals were about the routes: the sync key reads the feed and
        // the admin's password is unchanged.
        let (s, _) = app.call(Method::GET, "/api/v1/sync?wait=0", Some(&sync_key), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(app.login("admin", "pwned-password", None).await.0, StatusCode::UNAUTHORIZED);
        let (s, _) = app.call(Method::GET, "/api/v1/audit", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        app
    })
    .await;
}

// ---------------------------------------------------------------------------
// 5. Password guessing
// ---------------------------------------------------------------------------

/// A password login sent with `X-Forwarded-For: xff` (the app trusts it);
/// returns what a client observes (status, body, header names), timing aside.
async fn login_from(app: &TestApp, xff: &str, user: &str, password: &str) -> (StatusCode, Value, Vec<String>) {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", xff)
        .body(Body::from(json!({"username": user, "password": password}).to_string()))
        .expect("request");
    let (s, h, v) = bounded("login", app.send(req)).await;
    let mut names: Vec<String> = h.keys().map(|k| k.as_str().to_string()).collect();
    names.sort();
    (s, v, names)
}

#[tokio::test]
async fn password_guessing_locks_out_without_revealing_who_exists() {
    for kind in backends("password_guessing_locks_out_without_revealing_who_exists").await {
        let app = TestApp::with(kind, |c| c.trust_forwarded_for = true).await;
        let admin = app.admin_token().await;
        app.create_user(&admin, "bob", "bob-password").await;
        app.create_user(&admin, "carol", "carol-password").await;
        let max = app.state.config.login_max_failures_per_account as usize;

        // The same guesses at a real and at an unknown account, each from
        // its own address: the same answers, in the same order, and the
        // right password is refused too once locked.
        let mut seen = Vec::new();
        for (user, ip) in [("bob", "198.51.100.1"), ("ghost", "198.51.100.2")] {
            let mut answers = Vec::new();
            for i in 0..max + 2 {
                let password = if i == max + 1 { "bob-password" } else { "wrong-password" };
                answers.push(login_from(&app, ip, user, password).await);
            }
            for (i, (s, v, _)) in answers.iter().enumerate() {
                let (status, slug) = if i < max {
                    (StatusCode::UNAUTHORIZED, "invalid-credentials")
                } else {
                    (StatusCode::TOO_MANY_REQUESTS, "too-many-attempts")
                };
                assert_eq!((*s, v["type"].as_str()), (status, Some(format!("urn:meshgate:problem:{slug}").as_str())));
            }
            assert!(answers[max].2.contains(&"retry-after".to_string()));
            seen.push(answers);
        }
        assert_eq!(seen[0], seen[1], "a real and an unknown account answer differently");
        // The account stays locked from any address and in any case.
        for (ip, name) in [("198.51.100.3", "BOB"), ("198.51.100.4", "bob")] {
            let (s, v, _) = login_from(&app, ip, name, "bob-password").await;
            assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{name} from {ip}: {v}");
        }

        // Spraying one wrong password over many accounts from one address
        // locks the address, and spoofed earlier X-Forwarded-For entries do
        // not get around it (only the last one, the trusted proxy's, counts).
        let sprayer = "203.0.113.7";
        let per_ip = app.state.config.login_max_failures_per_ip as usize;
        for i in 0..per_ip {
            let (s, _, _) = login_from(&app, sprayer, &format!("user{i}"), "Summer2026!").await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
        for xff in [sprayer.to_string(), format!("192.0.2.55, {sprayer}"), format!("10.0.0.1, 192.0.2.56, {sprayer}")] {
            let (s, v, _) = login_from(&app, &xff, "carol", "carol-password").await;
            assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "X-Forwarded-For {xff}: {v}");
        }
        // Carol herself, from her own address, is not locked out.
        let (s, v, _) = login_from(&app, "198.51.100.20", "carol", "carol-password").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // The lockout ends with its window.
        app.state.clock.advance(app.state.config.login_lockout_secs + 1);
        let (s, v, _) = login_from(&app, "198.51.100.1", "bob", "bob-password").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // Failures are audited, never with the password.
        let admin = app.admin_token().await;
        let (_, v) = app.call(Method::GET, "/api/v1/audit?action=login.failure&limit=500", Some(&admin), None).await;
        let items = v["items"].as_array().expect("items");
        assert!(items.len() >= 2 * max + per_ip, "{} failures audited", items.len());
        assert!(!v.to_string().contains("wrong-password") && !v.to_string().contains("Summer2026"));
        app.cleanup().await;
    }
}

// ---------------------------------------------------------------------------
// 6. Browser login: PKCE downgrade, code injection, open redirect
// ---------------------------------------------------------------------------

/// One authorization the provider granted.
#[derive(Clone)]
struct Grant {
    client_id: String,
    nonce: String,
    challenge: Option<String>,
    method: Option<String>,
    redirect_uri: String,
}

/// An OpenID provider at `/{mode}`: `strict` binds each code to its client,
/// redirect URI and PKCE challenge as a provider must; `sloppy` checks none
/// of it, so only meshgate's own checks (nonce, audience) stand between an
/// attacker and a login; `plain` advertises only the `plain` PKCE method.
struct Provider {
    base: String,
    key: ES256KeyPair,
    grants: Mutex<HashMap<String, Grant>>,
}

async fn op_discovery(State(p): State<Arc<Provider>>, Path(mode): Path<String>) -> Json<Value> {
    let issuer = format!("{}/{mode}", p.base);
    let pkce = if mode == "plain" { json!(["plain"]) } else { json!(["S256"]) };
    Json(json!({
        "issuer": issuer, "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{}/jwks", p.base),
        "response_types_supported": ["code"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"], "code_challenge_methods_supported": pkce,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
}

async fn op_jwks(State(p): State<Arc<Provider>>) -> Json<Value> {
    let point = p.key.public_key().public_key().to_bytes_uncompressed();
    Json(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]), "kid": "op", "alg": "ES256", "use": "sig"}]}))
}

/// Grants at once (the person is always "victim") and redirects back.
async fn op_authorize(State(p): State<Arc<Provider>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut grants = p.grants.lock().expect("grants");
    let code = format!("code-{}", grants.len());
    let param = |name: &str| q.get(name).cloned();
    let redirect_uri = param("redirect_uri").unwrap_or_default();
    grants.insert(
        code.clone(),
        Grant {
            client_id: param("client_id").unwrap_or_default(),
            nonce: param("nonce").unwrap_or_default(),
            challenge: param("code_challenge"),
            method: param("code_challenge_method"),
            redirect_uri: redirect_uri.clone(),
        },
    );
    let state = param("state").unwrap_or_default();
    Redirect::to(&format!("{redirect_uri}?code={}&state={}", enc(&code), enc(&state))).into_response()
}

/// The client named by HTTP Basic authentication or the form.
fn client_of(headers: &HeaderMap, form: &HashMap<String, String>) -> Option<String> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(id, _)| id.to_string()));
    basic.or_else(|| form.get("client_id").cloned())
}

async fn op_token(
    State(p): State<Arc<Provider>>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let refuse = || (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    let code = form.get("code").cloned().unwrap_or_default();
    let Some(grant) = p.grants.lock().expect("grants").remove(&code) else { return refuse() };
    if mode == "strict" {
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let expected = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        let pkce_ok = grant.method.as_deref() == Some("S256") && grant.challenge.as_deref() == Some(expected.as_str());
        let client_ok = client_of(&headers, &form).as_deref() == Some(grant.client_id.as_str());
        let redirect_ok = form.get("redirect_uri") == Some(&grant.redirect_uri);
        if !(pkce_ok && client_ok && redirect_ok) {
            return refuse();
        }
    }
    let claims = Claims::with_custom_claims(
        json!({"email": "victim@example.test", "email_verified": true}),
        jwt_simple::prelude::Duration::from_mins(5),
    )
    .with_issuer(format!("{}/{mode}", p.base))
    .with_audience(grant.client_id)
    .with_subject("victim")
    .with_nonce(grant.nonce);
    let id_token = p.key.sign(claims).expect("sign");
    Json(json!({"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": id_token})).into_response()
}

async fn start_provider() -> Arc<Provider> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let provider =
        Arc::new(Provider { base, key: ES256KeyPair::generate().with_key_id("op"), grants: Mutex::default() });
    let router = Router::new()
        .route("/jwks", get(op_jwks))
        .route("/{mode}/.well-known/openid-configuration", get(op_discovery))
        .route("/{mode}/authorize", get(op_authorize))
        .route("/{mode}/token", post(op_token))
        .with_state(provider.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    provider
}

fn provider_config(base: &str) -> Value {
    let p = |id: &str, mode: &str| json!({"id": id, "kind": "oidc", "issuer": format!("{base}/{mode}"), "client_id": "meshgate", "client_secret": "s"});
    json!({"providers": [p("strict", "strict"), p("sloppy", "sloppy"), p("plain", "plain")]})
}

/// A query parameter of `url`, percent-decoded.
fn param(url: &str, name: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let raw = query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v);
    let raw = raw.unwrap_or_else(|| panic!("no {name} in {url}"));
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).expect("escape"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Starts a login at meshgate in `browser`; returns where meshgate sends it
/// (the provider's authorization URL).
async fn begin(env: &LoginEnv, browser: &reqwest::Client, provider: &str) -> String {
    let resp = bounded("authorize", browser.get(env.authorize_url(provider, RETURN_TO)).send()).await.expect("get");
    assert_eq!(resp.status(), StatusCode::FOUND);
    location(&resp)
}

/// Visits the provider: returns its redirect back (the callback URL with a code).
async fn visit(browser: &reqwest::Client, url: &str) -> String {
    let resp = bounded("provider", browser.get(url).send()).await.expect("get");
    assert!(resp.status().is_redirection(), "{}", resp.status());
    location(&resp)
}

async fn problem_of(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let kind = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(kind, "application/problem+json", "status {status}");
    let body: Value = resp.json().await.expect("problem");
    (status, body["type"].as_str().unwrap_or("").trim_start_matches("urn:meshgate:problem:").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn pkce_is_s256_only_and_cannot_be_downgraded() {
    let provider = start_provider().await;
    for kind in backends("pkce_is_s256_only_and_cannot_be_downgraded").await {
        let env = LoginEnv::start(kind, |_| provider_config(&provider.base), &[]).await;
        // Every authorization request carries an S256 challenge; the strict
        // provider checks it against the verifier of the exchange.
        let alice = browser();
        let to_op = begin(&env, &alice, "strict").await;
        assert_eq!(param(&to_op, "code_challenge_method"), "S256");
        assert_eq!(param(&to_op, "code_challenge").len(), 43);
        let back = visit(&alice, &to_op).await;
        let resp = bounded("callback", alice.get(&back).send()).await.expect("callback");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert!(location(&resp).starts_with(&format!("{RETURN_TO}#access_token=")));
        // A client cannot ask for another method (or bring its own challenge).
        let before = footprint(&env.app).await;
        for extra in ["code_challenge_method=plain", "code_challenge=abc", "code_challenge_method=none"] {
            let url = format!("{}&{extra}", env.authorize_url("strict", RETURN_TO));
            let (s, slug) = problem_of(bounded("authorize", alice.get(&url).send()).await.expect("get")).await;
            assert_eq!((s, slug.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "validation"), "{extra}");
        }
        // A provider that offers only `plain` is not used at all.
        let (s, slug) = problem_of(alice.get(env.authorize_url("plain", RETURN_TO)).send().await.expect("get")).await;
        assert_eq!((s, slug.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "provider-not-configured"));
        assert_eq!(footprint(&env.app).await, before, "a refused authorize wrote something");
        env.finish().await.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_authorization_codes_are_refused() {
    let provider = start_provider().await;
    for kind in backends("injected_authorization_codes_are_refused").await {
        let env = LoginEnv::start(kind, |_| provider_config(&provider.base), &[]).await;
        let callback = |p: &str, code: &str, state: &str| {
            format!("{}/api/v1/auth/oauth/{p}/callback?code={}&state={}", env.base, enc(code), enc(state))
        };
        for p in ["strict", "sloppy"] {
            // Control: an honest login through this provider works.
            let alice = browser();
            let back = visit(&alice, &begin(&env, &alice, p).await).await;
            let resp = bounded("callback", alice.get(&back).send()).await.expect("callback");
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{p}");

            // Alice's code stolen before it reached meshgate, injected by
            // Mallory into a login Mallory started: PKCE (strict provider) or
            // the nonce (sloppy provider) refuses it.
            let stolen = param(&visit(&alice, &begin(&env, &alice, p).await).await, "code");
            let mallory = browser();
            let state = param(&begin(&env, &mallory, p).await, "state");
            let before = env.footprint().await;
            let resp = bounded("callback", mallory.get(callback(p, &stolen, &state)).send()).await.expect("get");
            let (s, slug) = problem_of(resp).await;
            assert_eq!((s, slug.as_str()), (StatusCode::UNAUTHORIZED, "login-rejected"), "{p}: stolen code");
            assert_eq!(env.footprint().await, before, "{p}: stolen code");

            // A code minted for another client ("evil", Mallory's own app at
            // the same provider) with everything else copied from a login
            // Mallory started at meshgate: the nonce and even the PKCE
            // challenge match, only the audience betrays it.
            let to_op = begin(&env, &mallory, p).await;
            let state = param(&to_op, "state");
            let evil = to_op.replace("client_id=meshgate", "client_id=evil");
            assert_ne!(evil, to_op);
            let code = param(&visit(&mallory, &evil).await, "code");
            let before = env.footprint().await;
            let resp = bounded("callback", mallory.get(callback(p, &code, &state)).send()).await.expect("get");
            let (s, slug) = problem_of(resp).await;
            assert_eq!((s, slug.as_str()), (StatusCode::UNAUTHORIZED, "login-rejected"), "{p}: other client's code");
            assert_eq!(env.footprint().await, before, "{p}: other client's code");

            // Alice's whole callback replayed in Mallory's browser: the state
            // is bound to Alice's browser.
            let back = visit(&alice, &begin(&env, &alice, p).await).await;
            let (s, slug) = problem_of(bounded("callback", mallory.get(&back).send()).await.expect("get")).await;
            assert_eq!((s, slug.as_str()), (StatusCode::BAD_REQUEST, "invalid-state"), "{p}");
            assert_eq!(
                bounded("callback", alice.get(&back).send()).await.expect("get").status(),
                StatusCode::SEE_OTHER
            );
        }
        env.finish().await.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn open_redirect_through_return_to_is_refused() {
    let provider = start_provider().await;
    for kind in backends("open_redirect_through_return_to_is_refused").await {
        let env = LoginEnv::start(kind, |_| provider_config(&provider.base), &[]).await;
        let admin = env.app.admin_token().await;
        let client = browser();
        let bad = [
            format!("{RETURN_TO}/"),
            RETURN_TO.replace("callback", "Callback"),
            format!("{RETURN_TO}x"),
            format!("{RETURN_TO}/../../evil"),
            format!("{RETURN_TO}?next=https://evil.test/"),
            format!("{RETURN_TO}#https://evil.test/"),
            format!("{RETURN_TO}%2F..%2Fevil"),
            format!("{RETURN_TO}\r\nLocation: https://evil.test/"),
            format!(" {RETURN_TO}"),
            RETURN_TO.replace("http://", "HTTP://"),
            RETURN_TO.replace("http://", "https://"),
            RETURN_TO.replace(":9/", ":90/"),
            RETURN_TO.replace("127.0.0.1:9", "127.0.0.1:9@evil.test"),
            RETURN_TO.replace("127.0.0.1:9", "127.0.0.1:9\\@evil.test"),
            RETURN_TO.replace("http://127.0.0.1:9", "//evil.test"),
            RETURN_TO.replace("http://127.0.0.1:9", ""),
            RETURN_TO.replace("127.0.0.1", "evil.test"),
            format!("javascript:alert(document.domain)//{RETURN_TO}"),
            String::new(),
        ];
        let before = footprint(&env.app).await;
        for url in &bad {
            let resp = bounded("authorize", client.get(env.authorize_url("sloppy", url)).send()).await.expect("get");
            let (s, slug) = problem_of(resp).await;
            assert_eq!((s, slug.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "validation"), "authorize {url:?}");
            let page = format!("{}/signin?app_id=shop&return_to={}", env.base, enc(url));
            let resp = bounded("signin", client.get(page).send()).await.expect("get");
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "signin {url:?}");
            assert!(!resp.text().await.expect("html").contains("<form"), "signin {url:?}");
        }
        // Return URLs are per app: shop's is no good for another app.
        let q = format!("app_id=meshgate&return_to={}", enc(RETURN_TO));
        let url = format!("{}/api/v1/auth/oauth/sloppy/authorize?{q}", env.base);
        let (s, slug) = problem_of(client.get(url).send().await.expect("get")).await;
        assert_eq!((s, slug.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "validation"));
        // Nor can an admin register one that a browser would read another way.
        for url in [
            "HTTP://127.0.0.1:9/app/callback",
            "http://evil.test/cb",
            "https://evil.test/cb#frag",
            "https://user:pw@evil.test/cb",
            "https://evil.test/a/../cb",
            "javascript:alert(1)",
            "//evil.test/cb",
        ] {
            let (s, v) = env
                .app
                .call(
                    Method::PUT,
                    "/api/v1/apps/shop/return-urls",
                    Some(&admin),
                    Some(json!({"urls": [RETURN_TO, url]})),
                )
                .await;
            assert_eq!((s, &v["type"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("urn:meshgate:problem:validation")));
        }
        assert_eq!(footprint(&env.app).await, before, "a refused return_to wrote something");
        // Control: the listed URL itself is accepted.
        let resp = client.get(env.authorize_url("sloppy", RETURN_TO)).send().await.expect("get");
        assert_eq!(resp.status(), StatusCode::FOUND);
        env.finish().await.cleanup().await;
    }
}
