//! Token exchange: `POST /api/v1/auth/exchange` turns a token from a
//! trusted external issuer (Clerk, Supabase, Auth0, …; see
//! `settings::TrustedIssuer`) into meshgate tokens for the mapped user.
//!
//! The token's `iss` picks the issuer (unknown → 401); its header `alg` must
//! be one the issuer allows **and** match the key type of the JWK its `kid`
//! names (so an RSA key is never used as an HMAC secret); then signature,
//! `iss`, `aud` (when configured), `exp`/`nbf` with 30 s skew. Keys come
//! inline or from the JWKS URL (cached 5 min, refetched on an unknown `kid`
//! at most once a minute). The identity is `exchange:<id>` + `sub`; a
//! verified email links to an existing user as for browser logins.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::accounts::ExternalIdentity;
use super::settings::TrustedIssuer;
use super::{Login, LoginTokens, Method, finish};
use crate::apps;
use crate::auth::principal::ADMIN_APP;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, ClientIp};
use crate::state::AppState;

/// Longest token looked at, in bytes.
const MAX_TOKEN_BYTES: usize = 8192;
/// How long fetched keys are reused, in seconds.
const KEYS_TTL_SECS: i64 = 300;
/// Least time between two fetches for an unknown `kid`, in seconds.
const REFETCH_GAP_SECS: i64 = 60;
/// Default accepted algorithms.
const DEFAULT_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// An issuer's JWKs and when they were fetched (`Login::clock` seconds).
type Fetched = (i64, Arc<Vec<Value>>);

/// Fetched JWKs per issuer id.
#[derive(Debug, Default)]
pub struct KeyCache(Mutex<HashMap<String, Fetched>>);

/// Body of `POST /api/v1/auth/exchange`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The external token (compact JWS).
    pub token: String,
    /// App to mint tokens for; default `meshgate`.
    pub app_id: Option<String>,
}

/// Exchange route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/auth/exchange", post(exchange))
}

/// Exchanges a trusted external token for meshgate tokens.
#[utoipa::path(post, path = "/api/v1/auth/exchange", request_body = ExchangeRequest,
    responses((status = 200, body = LoginTokens), (status = 401, body = crate::error::Problem),
              (status = 503, body = crate::error::Problem)))]
pub async fn exchange(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(req): Body<ExchangeRequest>,
) -> ApiResult<Json<LoginTokens>> {
    let app_id = req.app_id.unwrap_or_else(|| ADMIN_APP.to_string());
    let (issuer, claims) = verify(&state.login, &req.token).await?;
    let sub = claims.subject.clone().filter(|s| !s.is_empty() && s.len() <= 255).ok_or(ApiError::InvalidToken)?;
    if !apps::exists(&state.db, &app_id).await? {
        return Err(ApiError::invalid("unknown app_id"));
    }
    let email_claim = issuer.email_claim.as_deref().unwrap_or("email");
    let email = claims.custom.get(email_claim).and_then(Value::as_str).map(str::to_lowercase);
    let verified = issuer.trust_email || claims.custom.get("email_verified") == Some(&Value::Bool(true));
    let identity = ExternalIdentity {
        provider: format!("exchange:{}", issuer.id),
        subject: sub,
        email_verified: verified && email.is_some(),
        email,
        name_hint: claims.custom.get("preferred_username").and_then(Value::as_str).map(str::to_string),
    };
    let method = Method { kind: "exchange", provider: &issuer.id };
    Ok(Json(finish(&state, &identity, &app_id, method, &ip).await?))
}

/// The `iss` claim, read before verification only to pick the issuer.
fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let json: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    json.get("iss")?.as_str().map(str::to_string)
}

/// Verifies `token` against the trusted issuer it names.
pub async fn verify(login: &Login, token: &str) -> ApiResult<(TrustedIssuer, JWTClaims<Map<String, Value>>)> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::InvalidToken);
    }
    let meta = Token::decode_metadata(token).map_err(|_| ApiError::InvalidToken)?;
    let iss = peek_issuer(token).ok_or(ApiError::InvalidToken)?;
    let issuer = login.settings.trusted_issuers.iter().find(|t| t.issuer == iss).ok_or(ApiError::InvalidToken)?;
    let alg = meta.algorithm();
    let allowed = match &issuer.algorithms {
        Some(list) => list.iter().any(|a| a == alg),
        None => DEFAULT_ALGS.contains(&alg),
    };
    if !allowed {
        return Err(ApiError::InvalidToken);
    }
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([issuer.issuer.clone()])),
        allowed_audiences: (!issuer.audiences.is_empty()).then(|| issuer.audiences.iter().cloned().collect()),
        time_tolerance: Some(Duration::from_secs(30)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        ..Default::default()
    };
    let mut keys = issuer_keys(login, issuer, false).await?;
    if !keys.iter().any(|k| kid_matches(k, meta.key_id())) {
        keys = issuer_keys(login, issuer, true).await?;
    }
    for jwk in keys.iter().filter(|k| kid_matches(k, meta.key_id())) {
        if let Some(claims) = verify_with(jwk, alg, token, options.clone())
            && claims.expires_at.is_some()
        {
            return Ok((issuer.clone(), claims));
        }
    }
    Err(ApiError::InvalidToken)
}

fn kid_matches(jwk: &Value, kid: Option<&str>) -> bool {
    match kid {
        Some(kid) => jwk.get("kid").and_then(Value::as_str) == Some(kid),
        None => true,
    }
}

/// Verifies with one JWK, the algorithm pinned by the key's type.
fn verify_with(
    jwk: &Value,
    alg: &str,
    token: &str,
    options: VerificationOptions,
) -> Option<JWTClaims<Map<String, Value>>> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if text("alg").is_some_and(|a| a != alg) || text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let options = Some(options);
    match (alg, text("kty")?, text("crv")) {
        ("RS256", "RSA", _) => {
            RS256PublicKey::from_components(&field("n")?, &field("e")?).ok()?.verify_token(token, options).ok()
        }
        ("ES256", "EC", Some("P-256")) => {
            let mut point = vec![0x04];
            point.extend(field("x")?);
            point.extend(field("y")?);
            ES256PublicKey::from_bytes(&point).ok()?.verify_token(token, options).ok()
        }
        ("EdDSA", "OKP", Some("Ed25519")) => {
            Ed25519PublicKey::from_bytes(&field("x")?).ok()?.verify_token(token, options).ok()
        }
        _ => None,
    }
}

/// The issuer's JWKs: inline, or fetched (cached; `fresh` refetches unless
/// the last fetch was under a minute ago).
async fn issuer_keys(login: &Login, issuer: &TrustedIssuer, fresh: bool) -> ApiResult<Arc<Vec<Value>>> {
    let Some(url) = &issuer.jwks_url else {
        let keys = issuer.jwks.as_ref().and_then(|j| j.get("keys")).and_then(Value::as_array).cloned();
        return Ok(Arc::new(keys.unwrap_or_default()));
    };
    if let Ok(cache) = login.issuer_keys.0.lock()
        && let Some((at, keys)) = cache.get(&issuer.id)
        && (login.clock.fresh(*at, REFETCH_GAP_SECS) || (!fresh && login.clock.fresh(*at, KEYS_TTL_SECS)))
    {
        return Ok(keys.clone());
    }
    let response = login
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| ApiError::ProviderUnavailable(format!("{}: jwks: {e}", issuer.id)))?;
    if !response.status().is_success() {
        return Err(ApiError::ProviderError(format!("{}: jwks: status {}", issuer.id, response.status())));
    }
    let set: Value = response.json().await.map_err(|e| ApiError::ProviderError(format!("{}: jwks: {e}", issuer.id)))?;
    let keys = Arc::new(set.get("keys").and_then(Value::as_array).cloned().unwrap_or_default());
    if let Ok(mut cache) = login.issuer_keys.0.lock() {
        cache.insert(issuer.id.clone(), (login.clock.now(), keys.clone()));
    }
    Ok(keys)
}
