//! Browser login through a provider:
//! `GET /api/v1/auth/providers`, `GET /api/v1/auth/oauth/{provider}/authorize`
//! and `GET|POST /api/v1/auth/oauth/{provider}/callback`.
//!
//! Authorize checks `return_to` against the app's exact URLs, draws a
//! one-time `state`, stores only its SHA-256 together with the SHA-256 of a
//! browser-binding cookie, and redirects to the provider with PKCE (S256
//! only) and, for OIDC, a nonce. Verifier and nonce are HMACs of the state
//! under a key derived from the master key, so no secret is stored. The
//! callback accepts a state once, before its expiry, and only from the
//! browser that started it; then the code is exchanged with the verifier,
//! the identity resolved, and the browser sent to `return_to` with the tokens
//! in the URL **fragment** (never the query: fragments are not sent to
//! servers or put in `Referer`).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::Row;

use super::oidc::FlowSecrets;
use super::settings::{ProviderKind, ProviderSettings};
use super::{LoginTokens, Method, finish, github, oidc, return_urls};
use crate::crypto;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, Form, Path, Query};
use crate::state::AppState;

/// The browser-binding cookie.
const COOKIE: &str = "mg_login";
/// Path the cookie is sent to (every provider's callback).
const COOKIE_PATH: &str = "/api/v1/auth/oauth/";

/// An entry of `GET /api/v1/auth/providers`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    /// Id, the path segment of its routes.
    pub id: String,
    /// Label for people.
    pub name: String,
    /// `oidc`, `google`, `microsoft`, `okta`, `apple` or `github`.
    pub kind: String,
    /// Whether every setting it needs is present (otherwise its routes
    /// answer 503 `provider-not-configured`).
    pub available: bool,
    /// Where a browser starts (add `app_id` and `return_to`).
    pub authorize_path: String,
}

/// Query of the authorize route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeQuery {
    /// App to sign in to.
    pub app_id: String,
    /// Where to send the browser afterwards: exactly one of the app's return URLs.
    pub return_to: String,
}

/// What a provider sends back (query or `form_post` body). Unknown
/// parameters are ignored: providers add their own.
#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    /// Authorization code.
    pub code: Option<String>,
    /// The one-time state.
    pub state: Option<String>,
    /// OAuth error code, when the user declined or the provider failed.
    pub error: Option<String>,
    /// Issuer identification (RFC 9207), checked when present.
    pub iss: Option<String>,
}

/// Routes of the provider flow.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/providers", get(providers))
        .route("/api/v1/auth/oauth/{provider}/authorize", get(authorize))
        .route("/api/v1/auth/oauth/{provider}/callback", get(callback_get).post(callback_post))
}

/// The declared providers.
#[utoipa::path(get, path = "/api/v1/auth/providers", responses((status = 200, body = [ProviderInfo])))]
pub async fn providers(State(state): State<AppState>) -> Json<Vec<ProviderInfo>> {
    let list = state
        .login
        .settings
        .providers
        .iter()
        .map(|p| ProviderInfo {
            id: p.id.clone(),
            name: p.display_name(),
            kind: format!("{:?}", p.kind).to_lowercase(),
            available: p.missing().is_none(),
            authorize_path: format!("/api/v1/auth/oauth/{}/authorize", p.id),
        })
        .collect();
    Json(list)
}

/// A declared, fully configured provider (404 unknown, 503 incomplete).
pub fn provider<'a>(state: &'a AppState, id: &str) -> ApiResult<&'a ProviderSettings> {
    let p = state.login.settings.providers.iter().find(|p| p.id == id).ok_or(ApiError::NotFound)?;
    match p.missing() {
        Some(m) => Err(ApiError::ProviderNotConfigured(format!("provider {id:?} is missing {m}"))),
        None => Ok(p),
    }
}

fn callback_url(state: &AppState, provider: &str) -> String {
    format!("{}/api/v1/auth/oauth/{provider}/callback", state.config.public_base())
}

/// Nonce and PKCE verifier of a flow, derived from its state.
fn flow_secrets(state: &AppState, flow: String) -> ApiResult<FlowSecrets> {
    let key = state.master.derive("oauth-flow");
    let derive = |label: &str| -> ApiResult<String> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|e| ApiError::Internal(e.to_string()))?;
        mac.update(label.as_bytes());
        mac.update(flow.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    };
    Ok(FlowSecrets { nonce: derive("nonce:")?, verifier: derive("pkce:")?, state: flow })
}

/// The binding cookie's value, when the request carries a well-formed one.
fn binding_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

fn set_cookie(state: &AppState, value: &str) -> ApiResult<HeaderValue> {
    // Apple's form_post callback is a cross-site POST: over https the cookie
    // must be SameSite=None to come along; on plain http (local use) Lax.
    let site = if state.config.public_base().starts_with("https://") { "None; Secure" } else { "Lax" };
    let cookie = format!(
        "{COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite={site}",
        state.config.oauth_state_ttl_secs
    );
    HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Starts a browser login at the provider.
#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/authorize", params(AuthorizeQuery),
    responses((status = 302), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
              (status = 503, body = crate::error::Problem)))]
pub async fn authorize(
    State(state): State<AppState>,
    Path(provider_id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<AuthorizeQuery>,
) -> ApiResult<Response> {
    let p = provider(&state, &provider_id)?;
    return_urls::require(&state.db, &q.app_id, &q.return_to).await?;
    let binding = binding_cookie(&headers).unwrap_or_else(crypto::new_secret);
    let secrets = flow_secrets(&state, crypto::new_secret())?;
    let redirect = callback_url(&state, &p.id);
    // The provider is asked first: when it is down, nothing is written.
    let url = match p.kind {
        ProviderKind::Github => github::authorize_url(p, &redirect, &secrets)?,
        _ => oidc::authorize_url(&state.login, p, &redirect, &secrets).await?,
    };
    let now = state.now();
    sqlx::query(
        "INSERT INTO oauth_states (state_hash, binding_hash, provider, app_id, return_to, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(crypto::sha256_hex(secrets.state.as_bytes()))
    .bind(crypto::sha256_hex(binding.as_bytes()))
    .bind(&p.id)
    .bind(&q.app_id)
    .bind(&q.return_to)
    .bind(now)
    .bind(now + state.config.oauth_state_ttl_secs)
    .execute(&state.db.pool)
    .await?;
    let location = HeaderValue::from_str(&url).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = StatusCode::FOUND.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::SET_COOKIE, set_cookie(&state, &binding)?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The provider's redirect back (query); `POST` with the same fields as a
/// form is Apple's `form_post`.
#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/callback",
    params(("code" = Option<String>, Query, description = "authorization code"),
           ("state" = Option<String>, Query, description = "the one-time state")),
    responses((status = 303, description = "to return_to, tokens in the fragment"),
              (status = 400, body = crate::error::Problem), (status = 401, body = crate::error::Problem),
              (status = 502, body = crate::error::Problem), (status = 503, body = crate::error::Problem)))]
pub async fn callback_get(
    State(state): State<AppState>,
    Path(provider_id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> ApiResult<Response> {
    callback(state, provider_id, ip, headers, params).await
}

/// The provider's redirect back as a `form_post` (Apple).
pub async fn callback_post(
    State(state): State<AppState>,
    Path(provider_id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(params): Form<CallbackParams>,
) -> ApiResult<Response> {
    callback(state, provider_id, ip, headers, params).await
}

/// A pending login taken out of the table.
struct Pending {
    app_id: String,
    return_to: String,
}

/// Takes the state: it must exist, belong to this provider and to the
/// browser presenting it (otherwise it stays, so a stranger cannot burn
/// it), and be unexpired. It is deleted before anything else happens, so
/// it works once.
async fn take_state(state: &AppState, provider: &str, flow: &str, binding: Option<String>) -> ApiResult<Pending> {
    let hash = crypto::sha256_hex(flow.as_bytes());
    let row = sqlx::query(
        "SELECT binding_hash, provider, app_id, return_to, expires_at FROM oauth_states WHERE state_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or(ApiError::InvalidState)?;
    let stored: String = row.try_get("binding_hash")?;
    let presented = crypto::sha256_hex(binding.ok_or(ApiError::InvalidState)?.as_bytes());
    if !crypto::ct_eq(stored.as_bytes(), presented.as_bytes()) || row.try_get::<String, _>("provider")? != provider {
        return Err(ApiError::InvalidState);
    }
    let taken =
        sqlx::query("DELETE FROM oauth_states WHERE state_hash = $1").bind(&hash).execute(&state.db.pool).await?;
    if taken.rows_affected() != 1 || row.try_get::<i64, _>("expires_at")? <= state.now() {
        return Err(ApiError::InvalidState);
    }
    Ok(Pending { app_id: row.try_get("app_id")?, return_to: row.try_get("return_to")? })
}

async fn callback(
    state: AppState,
    provider_id: String,
    ip: String,
    headers: HeaderMap,
    params: CallbackParams,
) -> ApiResult<Response> {
    let p = provider(&state, &provider_id)?;
    let flow = params.state.filter(|s| !s.is_empty() && s.len() <= 128).ok_or(ApiError::InvalidState)?;
    let pending = take_state(&state, &p.id, &flow, binding_cookie(&headers)).await?;
    if params.error.is_some() {
        return Err(ApiError::LoginRejected("the provider reported an error (declined or failed)"));
    }
    let code = params.code.filter(|c| !c.is_empty() && c.len() <= 2048);
    let code = code.ok_or(ApiError::LoginRejected("the provider sent no authorization code"))?;
    let secrets = flow_secrets(&state, flow)?;
    let redirect = callback_url(&state, &p.id);
    let identity = match p.kind {
        ProviderKind::Github => github::complete(&state.login, p, &redirect, &code, &secrets).await?,
        _ => {
            if let Some(iss) = &params.iss
                && iss.trim_end_matches('/') != oidc::issuer(&state.login, p).await?.trim_end_matches('/')
            {
                return Err(ApiError::LoginRejected("the callback names another issuer"));
            }
            oidc::complete(&state.login, p, &redirect, &code, &secrets).await?
        }
    };
    let tokens = finish(&state, &identity, &pending.app_id, Method { kind: "oauth", provider: &p.id }, &ip).await?;
    deliver(&pending.return_to, &tokens)
}

/// A redirect to `return_to` with the tokens in the fragment.
pub fn deliver(return_to: &str, t: &LoginTokens) -> ApiResult<Response> {
    let fragment = oauth2::url::form_urlencoded::Serializer::new(String::new())
        .append_pair("access_token", &t.tokens.access_token)
        .append_pair("token_type", t.tokens.token_type)
        .append_pair("expires_in", &t.tokens.expires_in.to_string())
        .append_pair("refresh_token", &t.tokens.refresh_token)
        .append_pair("is_new_user", if t.is_new_user { "true" } else { "false" })
        .finish();
    let location =
        HeaderValue::from_str(&format!("{return_to}#{fragment}")).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}
