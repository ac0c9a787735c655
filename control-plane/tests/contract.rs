//! Contract with the filter: tokens and API keys issued here are accepted by
//! the filter's own engine (`meshgate_core`), fed with this service's JWKS
//! and key digests.

mod common;

use axum::http::{Method, StatusCode};
use common::{Kind, TestApp};
use meshgate_core::engine::{Decision, Engine, Request};
use meshgate_core::ratelimit::table::MemoryStore;
use serde_json::json;

fn decide(engine: &Engine, header: (&str, &str), now: i64) -> Decision<'static> {
    // The decision borrows the engine and the request's headers; leak both
    // for the test's convenience.
    let name: &'static str = Box::leak(header.0.into());
    let value: &'static [u8] = Box::leak(header.1.as_bytes().into());
    let headers: &'static [(&str, &[u8])] = Box::leak(vec![(name, value)].into_boxed_slice());
    let req = Request { method: "GET", path: b"/orders", authority: "shop", headers, peer: None };
    let engine: &'static Engine = Box::leak(Box::new(engine.clone()));
    engine.decide(&req, (now as u64) * 1_000_000, &MemoryStore::default())
}

#[tokio::test]
async fn filter_engine_accepts_what_the_control_plane_issues() {
    let app = TestApp::new(Kind::Sqlite).await;
    let admin = app.admin_token().await;
    let (s, key) = app
        .call(
            Method::POST,
            "/api/v1/apikeys",
            Some(&admin),
            Some(json!({"name": "svc", "expires_in_days": 5, "scopes": ["orders:read"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, jwks) = app.call(Method::GET, "/.well-known/jwks.json", None, None).await;
    let digest = meshgate_core::apikey::digest(key["key"].as_str().unwrap()).to_hex();
    let config = json!({
        "routes": [{"name": "all", "path": {"prefix": "/"}, "policy": {}}],
        "issuers": [{"issuer": app.state.config.issuer, "audiences": [app.state.config.audience], "keys": jwks["keys"]}],
        "keys": {"api_keys": [{"id": key["id"], "digest": digest, "subject": key["owner_id"], "scopes": key["scopes"], "expires_at": key["expires_at"]}]}
    });
    let compiled = meshgate_core::compile(config.to_string().as_bytes()).expect("filter accepts the config");
    let engine = Engine::new(compiled);
    let now = app.state.now();

    let Decision::Allow(allow) = decide(&engine, ("authorization", &format!("Bearer {admin}")), now) else {
        panic!("filter refused a control-plane token");
    };
    let id = allow.identity.expect("identity");
    assert_eq!(id.roles, vec!["admin".to_string()]);
    assert_eq!(id.app_id.as_deref(), Some("meshgate"));
    assert!(id.session_id.is_some());

    let Decision::Allow(allow) = decide(&engine, ("x-api-key", key["key"].as_str().unwrap()), now) else {
        panic!("filter refused a control-plane API key");
    };
    assert_eq!(allow.identity.expect("identity").key_id.as_deref(), key["id"].as_str());

    // A tampered token is refused by the filter too.
    let sig_at = admin.rfind('.').unwrap() + 10;
    let flipped = if &admin[sig_at..=sig_at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &admin[..sig_at], &admin[sig_at + 1..]);
    assert!(matches!(decide(&engine, ("authorization", &format!("Bearer {forged}")), now), Decision::Deny(_)));
    app.cleanup().await;
}
