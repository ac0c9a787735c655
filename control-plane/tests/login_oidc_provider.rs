//! Browser login against a real, certified OpenID Provider (npm
//! `oidc-provider`, started by this test through `tests/harness/op.mjs`):
//! the whole flow walked with a cookie-keeping HTTP client, then every
//! negative case the flow must refuse. Needs `make login-harness` (node
//! modules); fails with that instruction otherwise.

mod common;

use axum::http::StatusCode;
use common::backends;
use common::login::{LoginEnv, Op, RETURN_TO, browser, fragment, location, walk};
use meshgate_core::engine::{Decision, Engine, Request};
use meshgate_core::ratelimit::table::MemoryStore;
use serde_json::{Value, json};

fn clients(base: &str) -> Value {
    json!([
        {"client_id": "meshgate", "client_secret": "op-secret",
         "redirect_uris": [format!("{base}/api/v1/auth/oauth/op/callback")]},
        {"client_id": "meshgate-short", "client_secret": "op-secret-2", "code_ttl": 1,
         "redirect_uris": [format!("{base}/api/v1/auth/oauth/op-short/callback")]}
    ])
}

fn login_config(op: &str, closed_port: u16) -> Value {
    json!({"providers": [
        {"id": "op", "kind": "oidc", "name": "Test OP", "issuer": op, "client_id": "meshgate", "client_secret": "op-secret"},
        {"id": "op-short", "kind": "oidc", "issuer": op, "client_id": "meshgate-short", "client_secret": "op-secret-2"},
        {"id": "down", "kind": "oidc", "issuer": format!("http://127.0.0.1:{closed_port}"), "client_id": "x", "client_secret": "y"},
        {"id": "half", "kind": "google", "client_id": "x", "client_secret_env": "MESHGATE_TEST_UNSET_SECRET"}
    ]})
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The filter's own engine accepts the minted token (as in `contract.rs`).
async fn filter_accepts(env: &LoginEnv, token: &str) -> String {
    let (_, jwks) = env.app.call(axum::http::Method::GET, "/.well-known/jwks.json", None, None).await;
    let config = json!({
        "routes": [{"name": "all", "path": {"prefix": "/"}, "policy": {}}],
        "issuers": [{"issuer": env.app.state.config.issuer, "audiences": [env.app.state.config.audience], "keys": jwks["keys"]}],
    });
    let engine = Engine::new(meshgate_core::compile(config.to_string().as_bytes()).expect("filter config"));
    let bearer = format!("Bearer {token}");
    let headers = [("authorization", bearer.as_bytes())];
    let req = Request { method: "GET", path: b"/orders", authority: "shop", headers: &headers, peer: None };
    let now = (env.app.state.now() as u64) * 1_000_000;
    match engine.decide(&req, now, &MemoryStore::default()) {
        Decision::Allow(allow) => {
            let id = allow.identity.expect("identity");
            assert_eq!(id.app_id.as_deref(), Some("shop"));
            id.subject.to_string()
        }
        other => panic!("the filter refused the minted token: {other:?}"),
    }
}

/// Starts a flow with `who`, walks the provider; returns the callback URL.
async fn to_callback(env: &LoginEnv, who: &reqwest::Client, provider: &str, login: &str) -> String {
    let resp = who.get(env.authorize_url(provider, RETURN_TO)).send().await.expect("authorize");
    assert_eq!(resp.status(), StatusCode::FOUND);
    walk(who, &location(&resp), &format!("{}/api/v1/auth/oauth/{provider}/callback", env.base), login).await
}

async fn problem(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(ct, "application/problem+json", "status {status}");
    let body: Value = resp.json().await.expect("problem body");
    (status, body["type"].as_str().unwrap_or("").trim_start_matches("urn:meshgate:problem:").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_login_through_a_real_openid_provider() {
    for kind in backends("browser_login_through_a_real_openid_provider").await {
        let closed = closed_port();
        let mut op: Option<Op> = None;
        let env = LoginEnv::start(
            kind,
            |base| {
                let started = Op::start(clients(base));
                let config = login_config(&started.issuer, closed);
                op = Some(started);
                config
            },
            &[],
        )
        .await;
        let mut op = op.expect("op");
        run_flow_and_negatives(&env).await;
        // Provider down after the flow started: the code exchange cannot
        // reach it → 502, nothing written.
        let alice = browser();
        let callback = to_callback(&env, &alice, "op", "carol").await;
        op.stop();
        let before = env.footprint().await;
        let (s, slug) = problem(alice.get(&callback).send().await.expect("callback")).await;
        assert_eq!((s, slug.as_str()), (StatusCode::BAD_GATEWAY, "provider-error"));
        assert_eq!(env.footprint().await, before);
        env.finish().await.cleanup().await;
    }
}

async fn run_flow_and_negatives(env: &LoginEnv) {
    // The provider list.
    let list: Value = reqwest::get(format!("{}/api/v1/auth/providers", env.base)).await.unwrap().json().await.unwrap();
    let ids: Vec<(&str, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["available"].as_bool().unwrap()))
        .collect();
    assert_eq!(ids, [("op", true), ("op-short", true), ("down", true), ("half", false)]);

    // The authorize redirect: PKCE S256 (never plain), state, nonce.
    let alice = browser();
    let resp = alice.get(env.authorize_url("op", RETURN_TO)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let to_op = location(&resp);
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(to_op.contains("code_challenge_method=S256") && to_op.contains("code_challenge="), "{to_op}");
    assert!(to_op.contains("nonce=") && to_op.contains("state=") && !to_op.contains("plain"), "{to_op}");
    let stored: (String,) =
        sqlx::query_as("SELECT state_hash FROM oauth_states").fetch_one(&env.app.state.db.pool).await.unwrap();
    let state = to_op.split("state=").nth(1).unwrap().split('&').next().unwrap();
    assert_ne!(stored.0, state, "the state is stored hashed");

    // The whole flow: fragment delivery, user upsert, a token the filter accepts.
    let callback = walk(&alice, &to_op, &format!("{}/api/v1/auth/oauth/op/callback", env.base), "alice").await;
    let resp = alice.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let back = location(&resp);
    assert!(back.starts_with(&format!("{RETURN_TO}#")), "{back}");
    let f = fragment(&back);
    assert_eq!(f["token_type"], "Bearer");
    assert_eq!(f["is_new_user"], "true");
    let user_id = filter_accepts(env, &f["access_token"]).await;
    let row: (String, Option<String>) = sqlx::query_as("SELECT username, email FROM users WHERE id = $1")
        .bind(&user_id)
        .fetch_one(&env.app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(row, ("alice".to_string(), Some("alice@example.test".to_string())));
    let ident: (String,) = sqlx::query_as("SELECT user_id FROM identities WHERE provider = 'op' AND subject = 'alice'")
        .fetch_one(&env.app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(ident.0, user_id);

    // State replay: the same callback again.
    let (s, slug) = problem(alice.get(&callback).send().await.unwrap()).await;
    assert_eq!((s, slug.as_str()), (StatusCode::BAD_REQUEST, "invalid-state"));

    // A second login is the same user, not new.
    let callback = to_callback(env, &alice, "op", "alice").await;
    let f = fragment(&location(&alice.get(&callback).send().await.unwrap()));
    assert_eq!(f["is_new_user"], "false");
    assert_eq!(filter_accepts(env, &f["access_token"]).await, user_id);

    // State from another session: Mallory presents Alice's callback.
    let callback = to_callback(env, &alice, "op", "alice").await;
    let mallory = browser();
    let (s, slug) = problem(mallory.get(&callback).send().await.unwrap()).await;
    assert_eq!((s, slug.as_str()), (StatusCode::BAD_REQUEST, "invalid-state"));
    // ... which did not burn it for Alice.
    assert_eq!(alice.get(&callback).send().await.unwrap().status(), StatusCode::SEE_OTHER);

    // return_to must match exactly: not a trailing slash, not another case.
    for bad in [format!("{RETURN_TO}/"), RETURN_TO.replace("callback", "Callback"), "http://127.0.0.1:9/app/".into()] {
        let before: (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM oauth_states").fetch_one(&env.app.state.db.pool).await.unwrap();
        let (s, slug) = problem(alice.get(env.authorize_url("op", &bad)).send().await.unwrap()).await;
        assert_eq!((s, slug.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "validation"), "{bad}");
        let after: (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM oauth_states").fetch_one(&env.app.state.db.pool).await.unwrap();
        assert_eq!(before, after);
    }

    // Missing PKCE: a code minted at the provider without a challenge (an
    // injected code) fails the exchange, which always sends the verifier.
    let resp = alice.get(env.authorize_url("op", RETURN_TO)).send().await.unwrap();
    let ours = location(&resp);
    let state = ours.split("state=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let no_pkce = ours
        .split('&')
        .filter(|kv| !kv.starts_with("code_challenge"))
        .map(|kv| if kv.starts_with("state=") { "state=attacker".to_string() } else { kv.to_string() })
        .collect::<Vec<_>>()
        .join("&");
    assert!(!no_pkce.contains("code_challenge"));
    let mallory = browser();
    let injected = walk(&mallory, &no_pkce, &format!("{}/api/v1/auth/oauth/op/callback", env.base), "mallory").await;
    let code = injected.split("code=").nth(1).unwrap().split('&').next().unwrap();
    let forged = format!("{}/api/v1/auth/oauth/op/callback?code={code}&state={state}", env.base);
    let before = env.footprint().await;
    let (s, slug) = problem(alice.get(&forged).send().await.unwrap()).await;
    assert_eq!((s, slug.as_str()), (StatusCode::UNAUTHORIZED, "login-rejected"));
    assert_eq!(env.footprint().await, before);
    // A `plain` challenge is refused by this provider too (S256 only).
    let plain = ours.replace("code_challenge_method=S256", "code_challenge_method=plain");
    let resp = mallory.get(&plain).send().await.unwrap();
    assert!(location(&resp).contains("error=invalid_request"), "{}", location(&resp));

    // Expired authorization code (this client's codes live 1 s).
    let callback = to_callback(env, &alice, "op-short", "dave").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let before = env.footprint().await;
    let (s, slug) = problem(alice.get(&callback).send().await.unwrap()).await;
    assert_eq!((s, slug.as_str()), (StatusCode::UNAUTHORIZED, "login-rejected"));
    assert_eq!(env.footprint().await, before);

    // Expired state (the login took longer than MESHGATE_OAUTH_STATE_TTL).
    let callback = to_callback(env, &alice, "op", "erin").await;
    env.app.state.clock.advance(env.app.state.config.oauth_state_ttl_secs + 1);
    let (s, slug) = problem(alice.get(&callback).send().await.unwrap()).await;
    assert_eq!((s, slug.as_str()), (StatusCode::BAD_REQUEST, "invalid-state"));

    // A provider whose discovery is unreachable: 503, no state written.
    let before: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM oauth_states").fetch_one(&env.app.state.db.pool).await.unwrap();
    let (s, slug) = problem(alice.get(env.authorize_url("down", RETURN_TO)).send().await.unwrap()).await;
    assert_eq!((s, slug.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "provider-unavailable"));
    let after: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM oauth_states").fetch_one(&env.app.state.db.pool).await.unwrap();
    assert_eq!(before, after);
    // Not fully configured: 503 naming what is missing; unknown: 404.
    let resp = alice.get(env.authorize_url("half", RETURN_TO)).send().await.unwrap();
    let (s, slug) = problem(resp).await;
    assert_eq!((s, slug.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "provider-not-configured"));
    let (s, _) = problem(alice.get(env.authorize_url("nope", RETURN_TO)).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
