//! Provider logins against a fake provider written here (so each flaw can be
//! produced on purpose): ID tokens with a wrong `aud`, `nonce`, `iss` or
//! signature, a provider advertising only `plain` PKCE, a token endpoint
//! failing with 500, linking by verified email only, GitHub (OAuth 2.0 plus
//! its API) and Sign in with Apple (form_post, ES256 client secret); then
//! token exchange for a trusted external issuer.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::backends;
use common::login::{LoginEnv, RETURN_TO, browser, form, fragment, location};
use jwt_simple::prelude::*;
use serde_json::{Value, json};
use sha2::Digest as _;

const CLIENT: &str = "meshgate-client";

struct Fake {
    base: String,
    key: ES256KeyPair,
    other_key: ES256KeyPair,
    apple_key: ES256PublicKey,
    codes: Mutex<HashMap<String, (String, String, String)>>,
}

fn jwk(key: &ES256PublicKey, kid: &str) -> Value {
    let point = key.public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
           "y": URL_SAFE_NO_PAD.encode(&point[33..65]), "kid": kid, "alg": "ES256", "use": "sig"})
}

async fn discovery(State(f): State<Arc<Fake>>, Path(mode): Path<String>) -> Json<Value> {
    let issuer = format!("{}/{mode}", f.base);
    let pkce = if mode == "plain-pkce" { json!(["plain"]) } else { json!(["S256"]) };
    Json(json!({
        "issuer": issuer, "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{}/jwks", f.base),
        "response_types_supported": ["code"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"], "code_challenge_methods_supported": pkce,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
}

async fn jwks(State(f): State<Arc<Fake>>) -> Json<Value> {
    Json(json!({"keys": [jwk(&f.key.public_key(), "fake")]}))
}

/// Authorization endpoint: remembers nonce and challenge, redirects back.
async fn authorize(State(f): State<Arc<Fake>>, Query(q): Query<HashMap<String, String>>) -> Response {
    assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"));
    let code = format!("code-{}", f.codes.lock().unwrap().len());
    let entry = (q.get("nonce").cloned().unwrap_or_default(), q["code_challenge"].clone(), q["redirect_uri"].clone());
    f.codes.lock().unwrap().insert(code.clone(), entry);
    Redirect::to(&format!("{}?{}", q["redirect_uri"], form(&[("code", &code), ("state", &q["state"])]))).into_response()
}

/// Token endpoint: checks PKCE (and Apple's client secret), then issues an
/// ID token with the flaw the mode asks for.
async fn token(
    State(f): State<Arc<Fake>>,
    Path(mode): Path<String>,
    Form(p): Form<HashMap<String, String>>,
) -> Response {
    if mode == "token-500" {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let Some((nonce, challenge, _)) = f.codes.lock().unwrap().remove(&p["code"]) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    };
    let verifier = p.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())) != challenge {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    }
    if mode == "apple" {
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from(["TEAM123456".to_string()])),
            allowed_audiences: Some(HashSet::from([format!("{}/apple", f.base)])),
            ..Default::default()
        };
        let secret = p.get("client_secret").cloned().unwrap_or_default();
        let ok = f
            .apple_key
            .verify_token::<NoCustomClaims>(&secret, Some(options))
            .is_ok_and(|c| c.subject.as_deref() == Some(CLIENT));
        if !ok || p.get("client_id").map(String::as_str) != Some(CLIENT) {
            return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
        }
    }
    let issuer = if mode == "wrong-iss" { format!("{}/other", f.base) } else { format!("{}/{mode}", f.base) };
    let aud = if mode == "wrong-aud" { "someone-else" } else { CLIENT };
    let nonce = if mode == "wrong-nonce" { "not-the-nonce".to_string() } else { nonce };
    let custom = json!({"email": "Shared@Example.test", "email_verified": mode != "unverified"});
    let claims = Claims::with_custom_claims(custom, Duration::from_mins(5))
        .with_issuer(issuer)
        .with_audience(aud)
        .with_subject(format!("sub-{mode}"))
        .with_nonce(nonce);
    let key = if mode == "bad-sig" { &f.other_key } else { &f.key };
    let id_token = key.sign(claims).unwrap();
    Json(json!({"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": id_token})).into_response()
}

async fn gh_token(State(f): State<Arc<Fake>>, Form(p): Form<HashMap<String, String>>) -> Json<Value> {
    let (_, challenge, _) = f.codes.lock().unwrap().remove(&p["code"]).unwrap();
    let verifier = p.get("code_verifier").cloned().unwrap_or_default();
    assert_eq!(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())), challenge);
    Json(json!({"access_token": "gho_test", "token_type": "bearer", "scope": "read:user,user:email"}))
}

async fn gh_user(headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer gho_test") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(json!({"id": 4242, "login": "octocat"})).into_response()
}

async fn gh_emails() -> Json<Value> {
    Json(json!([{"email": "octo@unverified.test", "verified": false, "primary": true},
                {"email": "Octo@Example.test", "verified": true, "primary": false}]))
}

async fn start_fake(apple_key: ES256PublicKey) -> Arc<Fake> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(Fake {
        base,
        key: ES256KeyPair::generate().with_key_id("fake"),
        other_key: ES256KeyPair::generate().with_key_id("fake"),
        apple_key,
        codes: Mutex::default(),
    });
    let router = Router::new()
        .route("/jwks", get(jwks))
        .route("/issuer-jwks", get(|| async { Json(json!({"keys": [jwk(&exchange_key().public_key(), "ext")]})) }))
        .route("/gh/login/oauth/authorize", get(authorize))
        .route("/gh/login/oauth/access_token", post(gh_token))
        .route("/gh-api/user", get(gh_user))
        .route("/gh-api/user/emails", get(gh_emails))
        .route("/{mode}/.well-known/openid-configuration", get(discovery))
        .route("/{mode}/authorize", get(authorize))
        .route("/{mode}/token", post(token))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    fake
}

/// The trusted issuer's signing key (fixed per process).
fn exchange_key() -> &'static ES256KeyPair {
    static KEY: std::sync::OnceLock<ES256KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| ES256KeyPair::generate().with_key_id("ext"))
}

const MODES: [&str; 8] =
    ["good", "unverified", "wrong-aud", "wrong-iss", "wrong-nonce", "bad-sig", "plain-pkce", "token-500"];

fn login_config(fake: &str, apple_pem: &std::path::Path) -> Value {
    let mut providers: Vec<Value> = MODES
        .iter()
        .map(|m| json!({"id": m, "kind": "oidc", "issuer": format!("{fake}/{m}"), "client_id": CLIENT, "client_secret": "s"}))
        .collect();
    providers.push(json!({"id": "github", "kind": "github", "client_id": "gh", "client_secret": "s",
        "web_url": format!("{fake}/gh"), "api_url": format!("{fake}/gh-api")}));
    providers.push(json!({"id": "apple", "kind": "apple", "issuer": format!("{fake}/apple"), "client_id": CLIENT,
        "team_id": "TEAM123456", "key_id": "APPLEKEY01", "private_key_file": apple_pem}));
    json!({"providers": providers, "trusted_issuers": [
        {"id": "clerk", "issuer": "https://clerk.test", "audiences": ["shop"],
         "jwks": {"keys": [jwk(&exchange_key().public_key(), "ext")]}},
        {"id": "remote", "issuer": "https://remote.test", "jwks_url": format!("{fake}/issuer-jwks"), "trust_email": true},
        {"id": "gone", "issuer": "https://gone.test", "jwks_url": "http://127.0.0.1:9/jwks"}
    ]})
}

/// Runs one provider login to the end; returns the callback's answer.
async fn login(env: &LoginEnv, provider: &str) -> reqwest::Response {
    let b = browser();
    let resp = b.get(env.authorize_url(provider, RETURN_TO)).send().await.unwrap();
    if resp.status() != StatusCode::FOUND {
        return resp;
    }
    let back = location(&b.get(location(&resp)).send().await.unwrap());
    assert!(back.starts_with(&env.base), "{back}");
    if provider == "apple" {
        // Apple answers with a form_post: the browser POSTs code and state.
        let q: HashMap<String, String> = back
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let body = form(&[("code", &q["code"]), ("state", &q["state"]), ("user", r#"{"name":{"firstName":"A"}}"#)]);
        let url = back.split('?').next().unwrap().to_string();
        return b
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    b.get(back).send().await.unwrap()
}

async fn slug(resp: reqwest::Response) -> (StatusCode, String) {
    let s = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (s, v["type"].as_str().unwrap_or("").trim_start_matches("urn:meshgate:problem:").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_flaws_linking_github_and_apple() {
    let apple = ES256KeyPair::generate();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("AuthKey.p8");
    std::fs::write(&pem, apple.to_pem().unwrap()).unwrap();
    let fake = start_fake(apple.public_key()).await;
    for kind in backends("provider_flaws_linking_github_and_apple").await {
        let env = LoginEnv::start(kind, |_| login_config(&fake.base, &pem), &[]).await;
        let admin = env.app.admin_token().await;
        let existing = env.app.create_user(&admin, "shared", "shared-password").await;
        let (s, _) = env
            .app
            .call(
                axum::http::Method::PATCH,
                &format!("/api/v1/users/{existing}"),
                Some(&admin),
                Some(json!({"email": "shared@example.test"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);

        // Every flawed ID token is refused and leaves nothing behind.
        for (mode, want) in [
            ("wrong-aud", (StatusCode::UNAUTHORIZED, "login-rejected")),
            ("wrong-iss", (StatusCode::UNAUTHORIZED, "login-rejected")),
            ("wrong-nonce", (StatusCode::UNAUTHORIZED, "login-rejected")),
            ("bad-sig", (StatusCode::UNAUTHORIZED, "login-rejected")),
            ("plain-pkce", (StatusCode::SERVICE_UNAVAILABLE, "provider-not-configured")),
            ("token-500", (StatusCode::BAD_GATEWAY, "provider-error")),
        ] {
            let before = env.footprint().await;
            let (s, t) = slug(login(&env, mode).await).await;
            assert_eq!((s, t.as_str()), (want.0, want.1), "{mode}");
            assert_eq!(env.footprint().await, before, "{mode} wrote something");
        }

        // A verified email links to the existing user ...
        let resp = login(&env, "good").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let f = fragment(&location(&resp));
        assert_eq!(f["is_new_user"], "false");
        let (_, me) = env.app.call(axum::http::Method::GET, "/api/v1/auth/me", Some(&f["access_token"]), None).await;
        assert_eq!(me["user"]["id"], existing.as_str());
        // ... an unverified one never does: a new user, without the address.
        let f = fragment(&location(&login(&env, "unverified").await));
        assert_eq!(f["is_new_user"], "true");
        let (_, me) = env.app.call(axum::http::Method::GET, "/api/v1/auth/me", Some(&f["access_token"]), None).await;
        assert_ne!(me["user"]["id"], existing.as_str());
        assert_eq!(me["user"]["email"], Value::Null);

        // GitHub: id from /user, the verified (not the primary unverified) address.
        let f = fragment(&location(&login(&env, "github").await));
        let (_, me) = env.app.call(axum::http::Method::GET, "/api/v1/auth/me", Some(&f["access_token"]), None).await;
        assert_eq!(
            (me["user"]["username"].as_str(), me["user"]["email"].as_str()),
            (Some("octocat"), Some("octo@example.test"))
        );
        let row: (String,) = sqlx::query_as("SELECT subject FROM identities WHERE provider = 'github'")
            .fetch_one(&env.app.state.db.pool)
            .await
            .unwrap();
        assert_eq!(row.0, "4242");

        // Apple: form_post callback, ES256 client secret checked by the fake.
        let resp = login(&env, "apple").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert!(location(&resp).starts_with(&format!("{RETURN_TO}#access_token=")));

        // Password login of the linked user still works (its password is untouched).
        let (s, _) = env.app.login("shared", "shared-password", None).await;
        assert_eq!(s, StatusCode::OK);
        env.finish().await.cleanup().await;
    }
}

fn ext_token(iss: &str, aud: &str, ttl_secs: u64, key: &ES256KeyPair) -> String {
    let custom = json!({"email": "Ext@Example.test", "email_verified": true});
    let claims = Claims::with_custom_claims(custom, Duration::from_secs(ttl_secs))
        .with_issuer(iss)
        .with_audience(aud)
        .with_subject("ext-user-1");
    key.sign(claims).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_exchange_for_trusted_issuers() {
    let apple = ES256KeyPair::generate();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("AuthKey.p8");
    std::fs::write(&pem, apple.to_pem().unwrap()).unwrap();
    let fake = start_fake(apple.public_key()).await;
    for kind in backends("token_exchange_for_trusted_issuers").await {
        let env = LoginEnv::start(kind, |_| login_config(&fake.base, &pem), &[]).await;
        let post = |token: String| {
            let app = &env.app;
            async move {
                app.call(
                    axum::http::Method::POST,
                    "/api/v1/auth/exchange",
                    None,
                    Some(json!({"token": token, "app_id": "shop"})),
                )
                .await
            }
        };
        let key = exchange_key();
        let (s, v) = post(ext_token("https://clerk.test", "shop", 300, key)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["is_new_user"], true);
        let (_, me) = env.app.call(axum::http::Method::GET, "/api/v1/auth/me", v["access_token"].as_str(), None).await;
        assert_eq!(me["app_id"], "shop");
        assert_eq!(me["user"]["email"], "ext@example.test");
        let (s, v2) = post(ext_token("https://clerk.test", "shop", 300, key)).await;
        assert_eq!((s, &v2["is_new_user"]), (StatusCode::OK, &json!(false)));

        let before = env.footprint().await;
        let forged = ES256KeyPair::generate().with_key_id("ext");
        let hs = HS256Key::from_bytes(b"public-key-as-secret").with_key_id("ext");
        let hs_token = hs
            .authenticate(
                Claims::create(Duration::from_mins(5))
                    .with_issuer("https://clerk.test")
                    .with_audience("shop")
                    .with_subject("ext-user-1"),
            )
            .unwrap();
        for (what, token) in [
            ("wrong aud", ext_token("https://clerk.test", "other-app", 300, key)),
            ("unknown issuer", ext_token("https://evil.test", "shop", 300, key)),
            ("forged signature", ext_token("https://clerk.test", "shop", 300, &forged)),
            ("HS256 (alg confusion)", hs_token),
            ("garbage", "not.a.jwt".to_string()),
        ] {
            let (s, v) = post(token).await;
            assert_eq!(
                (s, v["type"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("urn:meshgate:problem:invalid-token")),
                "{what}"
            );
        }
        let expired = {
            let claims = Claims::with_custom_claims(json!({}), Duration::from_secs(1))
                .with_issuer("https://clerk.test")
                .with_audience("shop")
                .with_subject("ext-user-1");
            let mut claims = claims;
            claims.expires_at = Some(claims.issued_at.unwrap() - Duration::from_secs(120));
            key.sign(claims).unwrap()
        };
        let (s, _) = post(expired).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "expired");
        assert_eq!(env.footprint().await, before);

        // Keys from a JWKS URL; a JWKS URL that is down is a clean 503.
        let (s, v) = post(ext_token("https://remote.test", "any", 300, key)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = post(ext_token("https://gone.test", "any", 300, key)).await;
        assert_eq!(
            (s, v["type"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("urn:meshgate:problem:provider-unavailable"))
        );
        env.finish().await.cleanup().await;
    }
}
