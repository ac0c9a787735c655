//! Sync feed helpers shared by the feed tests.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use meshgate_wire::sync::SyncResponse;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::TestApp;

/// Creates an API key as `admin` with `scopes`; returns (plain key, metadata).
pub async fn create_key(app: &TestApp, admin: &str, scopes: &[&str], extra: Value) -> (String, Value) {
    let mut body = json!({"name": "k", "expires_in_days": 30, "scopes": scopes});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (s, v) = app.call(Method::POST, "/api/v1/apikeys", Some(admin), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (v["key"].as_str().expect("key").to_string(), v)
}

/// A `sync`-scoped key, the filter's credential.
pub async fn sync_key(app: &TestApp, admin: &str) -> String {
    create_key(app, admin, &["sync"], json!({})).await.0
}

/// `GET /api/v1/sync?<query>` with `cred`; returns status, raw body bytes.
pub async fn get_raw(router: &axum::Router, query: &str, cred: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(Method::GET).uri(format!("/api/v1/sync?{query}"));
    if let Some(c) = cred {
        req = req.header(header::AUTHORIZATION, format!("Bearer {c}"));
    }
    let resp = router.clone().oneshot(req.body(Body::empty()).expect("request")).await.expect("oneshot");
    let status = resp.status();
    (status, resp.into_body().collect().await.expect("body").to_bytes().to_vec())
}

/// The feed answer, parsed with the wire contract's own types.
pub async fn get(app: &TestApp, query: &str, cred: &str) -> SyncResponse {
    let (s, body) = get_raw(&app.router, query, Some(cred)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("a SyncResponse")
}

/// The current change version.
pub async fn version(app: &TestApp) -> u64 {
    meshgate::db::change_version(&app.state.db).await.expect("version") as u64
}

/// Lower-case hex SHA-256 of a plain key.
pub fn digest(key: &str) -> String {
    meshgate_core::apikey::digest(key).to_hex()
}
