//! The forward-auth endpoint (`/api/v1/forward-auth[/{*rest}]`), on every
//! backend: identity headers, revocations taking effect at once, bad
//! credentials, query policies, credential conflicts.

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine as _;
use common::{Kind, TestApp, assert_problem, on_each_backend};
use serde_json::{Value, json};

const FA: &str = "/api/v1/forward-auth";

async fn fa(app: &TestApp, method: Method, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    app.send(req.body(Body::empty()).unwrap()).await
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Creates an API key as `admin`; returns (key, id).
async fn new_key(app: &TestApp, admin: &str, scopes: Value) -> (String, String) {
    let body = json!({"name": "fa", "expires_in_days": 1, "scopes": scopes});
    let (s, v) = app.call(Method::POST, "/api/v1/apikeys", Some(admin), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (v["key"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string())
}

fn assert_denied(got: (StatusCode, HeaderMap, Value), status: StatusCode, slug: &str, challenge: Option<&str>) {
    let (s, headers, body) = got;
    assert_problem(&headers, &body, status, s, slug);
    assert_eq!(h(&headers, "www-authenticate"), challenge, "{body}");
    assert!(h(&headers, "x-user-id").is_none());
}

const INVALID: Option<&str> = Some("Bearer realm=\"meshgate\", error=\"invalid_token\"");

#[tokio::test]
async fn identity_headers_for_tokens_and_keys_any_method_any_suffix() {
    on_each_backend("forward_auth_identity", |app| async move {
        let admin = app.admin_token().await;
        let c = claims(&admin);
        let auth = bearer(&admin);
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT, Method::HEAD] {
            for path in [FA.to_string(), format!("{FA}/"), format!("{FA}/api/bench"), format!("{FA}/a/b?role=no&x")] {
                let (s, hd, body) = fa(&app, method.clone(), &path, &[("authorization", &auth)]).await;
                assert_eq!(s, StatusCode::OK, "{method} {path}: {body}");
                assert_eq!(body, Value::Null, "empty body");
                assert_eq!(h(&hd, "x-user-id"), c["sub"].as_str());
                assert_eq!(h(&hd, "x-user-roles"), Some("admin"));
                assert_eq!(h(&hd, "x-user-scopes"), Some("admin"));
                assert_eq!(h(&hd, "x-app-id"), Some("meshgate"));
                assert_eq!(h(&hd, "x-auth-method"), Some("jwt"));
                assert_eq!(h(&hd, "x-session-id"), c["sid"].as_str());
                assert_eq!(h(&hd, "x-key-id"), None);
                assert_eq!(h(&hd, "x-envoy-auth-headers-to-remove"), Some("x-key-id"));
            }
        }
        let (key, id) = new_key(&app, &admin, json!(["reports:read", "bench:read"])).await;
        let by_bearer = bearer(&key);
        // Twice each: a cache miss, then a hit.
        for creds in [[("x-api-key", key.as_str())], [("authorization", by_bearer.as_str())]].iter().cycle().take(4) {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                let (s, hd, body) = fa(&app, method, &format!("{FA}/api/bench"), creds).await;
                assert_eq!(s, StatusCode::OK, "{body}");
                assert_eq!(h(&hd, "x-auth-method"), Some("api_key"));
                assert_eq!(h(&hd, "x-key-id"), Some(id.as_str()));
                assert_eq!(h(&hd, "x-user-id"), c["sub"].as_str());
                assert_eq!(h(&hd, "x-user-scopes"), Some("reports:read,bench:read"));
                assert_eq!(h(&hd, "x-user-roles"), None);
                assert_eq!(h(&hd, "x-app-id"), None);
                assert_eq!(h(&hd, "x-session-id"), None);
                assert_eq!(h(&hd, "x-envoy-auth-headers-to-remove"), Some("x-user-roles,x-app-id,x-session-id"));
            }
        }
        // A key with another prefix than the configured one, as a bearer.
        let body = json!({"name": "p", "expires_in_days": 1, "prefix": "svc"});
        let (_, v) = app.call(Method::POST, "/api/v1/apikeys", Some(&admin), Some(body)).await;
        let svc = bearer(v["key"].as_str().unwrap());
        let (s, hd, _) = fa(&app, Method::GET, FA, &[("authorization", &svc)]).await;
        assert_eq!((s, h(&hd, "x-auth-method")), (StatusCode::OK, Some("api_key")));
        app
    })
    .await;
}

#[tokio::test]
async fn revocations_take_effect_at_once() {
    on_each_backend("forward_auth_revocations", |app| async move {
        let admin = app.admin_token().await;
        let revoke = |kind: &'static str, value: String| {
            let admin = admin.clone();
            let app = &app;
            async move {
                let body = json!({"kind": kind, "value": value});
                let (s, v) = app.call(Method::POST, "/api/v1/revocations", Some(&admin), Some(body)).await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
            }
        };
        let ok = |t: String| {
            let app = &app;
            async move { fa(app, Method::GET, &format!("{FA}/x"), &[("authorization", &bearer(&t))]).await }
        };
        app.create_user(&admin, "bob", "bob-password-1").await;
        let login = |user: &'static str, pw: &'static str| {
            let app = &app;
            async move { app.login(user, pw, None).await.1["access_token"].as_str().unwrap().to_string() }
        };

        // By token id.
        let t = login("bob", "bob-password-1").await;
        assert_eq!(ok(t.clone()).await.0, StatusCode::OK);
        revoke("token", claims(&t)["jti"].as_str().unwrap().to_string()).await;
        assert_denied(ok(t).await, StatusCode::UNAUTHORIZED, "invalid-token", INVALID);
        // By session.
        let t = login("bob", "bob-password-1").await;
        assert_eq!(ok(t.clone()).await.0, StatusCode::OK);
        revoke("session", claims(&t)["sid"].as_str().unwrap().to_string()).await;
        assert_denied(ok(t).await, StatusCode::UNAUTHORIZED, "invalid-token", INVALID);
        // By logout.
        let t = login("bob", "bob-password-1").await;
        assert_eq!(ok(t.clone()).await.0, StatusCode::OK);
        let (s, _) = app.call(Method::POST, "/api/v1/auth/logout", Some(&t), Some(json!({}))).await;
        assert!(s.is_success(), "{s}");
        assert_denied(ok(t).await, StatusCode::UNAUTHORIZED, "invalid-token", INVALID);
        // By user not-before: older tokens refused, newer ones fine.
        let t = login("bob", "bob-password-1").await;
        assert_eq!(ok(t.clone()).await.0, StatusCode::OK);
        revoke("user", claims(&t)["sub"].as_str().unwrap().to_string()).await;
        assert_denied(ok(t).await, StatusCode::UNAUTHORIZED, "invalid-token", INVALID);
        app.state.clock.advance(2);
        assert_eq!(ok(login("bob", "bob-password-1").await).await.0, StatusCode::OK);

        // Keys: cached as valid first, then revoked both ways.
        for by_api in [true, false] {
            let (key, id) = new_key(&app, &admin, json!([])).await;
            for _ in 0..2 {
                assert_eq!(fa(&app, Method::GET, FA, &[("x-api-key", &key)]).await.0, StatusCode::OK);
            }
            if by_api {
                let (s, _) = app.call(Method::DELETE, &format!("/api/v1/apikeys/{id}"), Some(&admin), None).await;
                assert_eq!(s, StatusCode::NO_CONTENT);
            } else {
                revoke("key", id).await;
            }
            for creds in [("x-api-key", key.clone()), ("authorization", bearer(&key))] {
                let got = fa(&app, Method::GET, FA, &[(creds.0, &creds.1)]).await;
                assert_denied(got, StatusCode::UNAUTHORIZED, "invalid-api-key", INVALID);
            }
        }
        // Expiry of a cached key.
        let (key, _) = new_key(&app, &admin, json!([])).await;
        assert_eq!(fa(&app, Method::GET, FA, &[("x-api-key", &key)]).await.0, StatusCode::OK);
        app.state.clock.advance(86_400);
        let got = fa(&app, Method::GET, FA, &[("x-api-key", &key)]).await;
        assert_denied(got, StatusCode::UNAUTHORIZED, "invalid-api-key", INVALID);
        app
    })
    .await;
}

#[tokio::test]
async fn bad_credentials_conflicts_and_policies() {
    on_each_backend("forward_auth_refusals", |app| async move {
        let admin = app.admin_token().await;
        let auth = bearer(&admin);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = admin.split('.').collect();
        let mut forged_claims = claims(&admin);
        forged_claims["roles"] = json!(["admin", "superuser"]);
        let forged = format!("{}.{}.{}", parts[0], b64.encode(forged_claims.to_string()), parts[2]);
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"at+jwt"}"#), parts[1]);
        let (key, _) = new_key(&app, &admin, json!(["reports:read"])).await;
        let unknown_key = {
            // Well-formed (prefix and checksum), never issued.
            let (k, id) = new_key(&app, &admin, json!([])).await;
            app.call(Method::DELETE, &format!("/api/v1/apikeys/{id}"), Some(&admin), None).await;
            k
        };

        let missing = fa(&app, Method::GET, FA, &[]).await;
        assert_denied(missing, StatusCode::UNAUTHORIZED, "missing-credentials", Some("Bearer realm=\"meshgate\""));
        let basic = fa(&app, Method::GET, FA, &[("authorization", "Basic YTpi")]).await;
        assert_denied(basic, StatusCode::UNAUTHORIZED, "missing-credentials", Some("Bearer realm=\"meshgate\""));
        for bad in [forged.as_str(), none.as_str(), "not.a.jwt", "eyJhbGciOiJIUzI1NiJ9"] {
            let got = fa(&app, Method::GET, FA, &[("authorization", &bearer(bad))]).await;
            assert_denied(got, StatusCode::UNAUTHORIZED, "invalid-token", INVALID);
        }
        for bad in [unknown_key.as_str(), "mg_notakey", "garbage"] {
            let got = fa(&app, Method::POST, &format!("{FA}/y"), &[("x-api-key", bad)]).await;
            assert_denied(got, StatusCode::UNAUTHORIZED, "invalid-api-key", INVALID);
        }
        let service = fa(&app, Method::GET, FA, &[("x-service-key", "whatever")]).await;
        assert_denied(service, StatusCode::UNAUTHORIZED, "credential-not-accepted", INVALID);

        // Two credentials, or one sent twice.
        let req_invalid = Some("Bearer realm=\"meshgate\", error=\"invalid_request\"");
        let two = fa(&app, Method::GET, FA, &[("authorization", &auth), ("x-api-key", &key)]).await;
        assert_denied(two, StatusCode::BAD_REQUEST, "conflicting-credentials", req_invalid);
        let dup = fa(&app, Method::GET, FA, &[("authorization", &auth), ("authorization", &auth)]).await;
        assert_denied(dup, StatusCode::BAD_REQUEST, "duplicate-credential", req_invalid);
        let dup = fa(&app, Method::GET, FA, &[("x-api-key", &key), ("x-api-key", &key)]).await;
        assert_denied(dup, StatusCode::BAD_REQUEST, "duplicate-credential", req_invalid);

        // Policies on the exact path.
        for (query, creds, status) in [
            ("?role=admin", ("authorization", auth.as_str()), StatusCode::OK),
            ("?role=editor&role=admin", ("authorization", auth.as_str()), StatusCode::OK),
            ("?scope=admin", ("authorization", auth.as_str()), StatusCode::OK),
            ("?scope=reports%3Aread", ("x-api-key", key.as_str()), StatusCode::OK),
            ("?role=editor", ("authorization", auth.as_str()), StatusCode::FORBIDDEN),
            ("?role=admin", ("x-api-key", key.as_str()), StatusCode::FORBIDDEN),
            ("?scope=admin&scope=reports:write", ("authorization", auth.as_str()), StatusCode::FORBIDDEN),
            ("?scope=reports:read&scope=x", ("x-api-key", key.as_str()), StatusCode::FORBIDDEN),
        ] {
            let got = fa(&app, Method::GET, &format!("{FA}{query}"), &[creds]).await;
            assert_eq!(got.0, status, "{query}: {}", got.2);
            if status == StatusCode::FORBIDDEN {
                let slug = if query.starts_with("?role") { "insufficient-role" } else { "insufficient-scope" };
                assert_problem(&got.1, &got.2, status, got.0, slug);
                assert!(h(&got.1, "www-authenticate").unwrap().contains("error=\"insufficient_scope\""));
            }
        }
        let got = fa(&app, Method::GET, &format!("{FA}?scope=admin&scope=x"), &[("authorization", &auth)]).await;
        assert!(h(&got.1, "www-authenticate").unwrap().ends_with("scope=\"admin x\""));
        for bad in ["?roles=admin", "?role=", "?role=a,b", "?scope=a%20b"] {
            let (s, hd, v) = fa(&app, Method::GET, &format!("{FA}{bad}"), &[("authorization", &auth)]).await;
            assert_problem(&hd, &v, StatusCode::BAD_REQUEST, s, "invalid-query");
        }
        // Expired, past the skew.
        app.state.clock.advance(900 + 31);
        let got = fa(&app, Method::GET, FA, &[("authorization", &auth)]).await;
        assert_denied(got, StatusCode::UNAUTHORIZED, "invalid-token", INVALID);
        app
    })
    .await;
}

#[tokio::test]
async fn revocation_through_another_replica() {
    if !common::pg_reachable().await {
        common::notice("SKIP revocation_through_another_replica: PostgreSQL not reachable");
        return;
    }
    let a = TestApp::new(Kind::Postgres).await;
    let b = a.replica().await;
    let admin = a.admin_token().await;
    let (key, id) = new_key(&a, &admin, json!([])).await;
    let t = a.admin_token().await;
    assert_eq!(fa(&b, Method::GET, FA, &[("x-api-key", &key)]).await.0, StatusCode::OK);
    assert_eq!(fa(&b, Method::GET, FA, &[("authorization", &bearer(&t))]).await.0, StatusCode::OK);
    a.call(Method::DELETE, &format!("/api/v1/apikeys/{id}"), Some(&admin), None).await;
    let jti = claims(&t)["jti"].as_str().unwrap().to_string();
    a.call(Method::POST, "/api/v1/revocations", Some(&admin), Some(json!({"kind": "token", "value": jti}))).await;
    // The replica hears of it through LISTEN/NOTIFY, well within a second.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let k = fa(&b, Method::GET, FA, &[("x-api-key", &key)]).await.0;
        let j = fa(&b, Method::GET, FA, &[("authorization", &bearer(&t))]).await.0;
        if (k, j) == (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "replica still accepts: key {k}, token {j}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    b.cleanup().await;
    a.cleanup().await;
}

#[tokio::test]
async fn openapi_lists_forward_auth() {
    let app = TestApp::new(Kind::Sqlite).await;
    let (s, _, doc) = app.send(Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let entry = &doc["paths"][FA];
    assert!(entry["get"].is_object(), "{entry}");
    assert!(entry["get"]["responses"]["401"].is_object());
    assert_eq!(doc["paths"][FA]["get"]["parameters"][0]["name"], "role");
    app.cleanup().await;
}
