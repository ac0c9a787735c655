//! Forward auth: central verification for proxies that cannot load the Wasm
//! filter. Any method on `/api/v1/forward-auth` and
//! `/api/v1/forward-auth/{*rest}` (Envoy `ext_authz` sends the original
//! method to `path_prefix` + the original path; nginx `auth_request` a
//! subrequest to a fixed URL; Traefik `forwardAuth` a GET with
//! `X-Forwarded-Method` / `X-Forwarded-Uri`).
//!
//! The credential is read from the request's own headers exactly as the
//! filter reads it (`meshgate_core::credential::extract`): `Authorization:
//! Bearer <jwt>`, or an API key in `Authorization: Bearer <prefix>_…` or
//! `X-API-Key`. Tokens are verified with the control plane's own signing keys
//! (in memory), keys by their digest (cached, else the regular lookup), and
//! both against revocations held in memory ([`cache`]) and reloaded as soon
//! as a change is signalled — no database query per request once warm.
//!
//! Answers: **200** with empty body and the identity headers that apply
//! (`X-User-ID`, `X-User-Roles`, `X-User-Scopes`, `X-App-ID`,
//! `X-Auth-Method`, `X-Key-ID`, `X-Session-ID`) plus
//! `x-envoy-auth-headers-to-remove` naming the identity headers not set, so
//! Envoy strips spoofed ones; **401** (`WWW-Authenticate: Bearer
//! realm="meshgate"`, with `error="invalid_token"` for a bad credential);
//! **400** for a credential header sent twice or two credentials; **403**
//! `insufficient_scope` when a policy in the query is not met. Policy
//! (`?role=a&role=b`: any of; `?scope=x&scope=y`: all of) is read only on
//! the exact path: behind Envoy the query after a suffix is the original
//! request's, not ours.

pub mod cache;

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::any;
use meshgate_core::apikey;
use meshgate_core::credential::{self, Credential, HeaderPair};
use meshgate_core::denial::Reason;
use meshgate_core::identity::Headers;
use sha2::{Digest as _, Sha256};

use crate::error::{ApiError, Problem};
use crate::state::AppState;
pub use cache::Cache;

/// The exact path (policy in its query).
pub const PATH: &str = "/api/v1/forward-auth";

/// Identity headers, in the order they are answered.
const IDENTITY_HEADERS: [&str; 7] =
    ["x-user-id", "x-user-roles", "x-user-scopes", "x-app-id", "x-auth-method", "x-key-id", "x-session-id"];

/// Credential header names: the filter's defaults.
static NAMES: LazyLock<Headers> = LazyLock::new(|| {
    Headers::compile(&meshgate_wire::config::HeaderNames::default()).expect("default header names are valid")
});

/// Forward-auth routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(PATH, any(exact))
        // Envoy asks about `/` as `/api/v1/forward-auth/`, which `{*rest}` does not match.
        .route("/api/v1/forward-auth/", any(suffix))
        .route("/api/v1/forward-auth/{*rest}", any(suffix))
}

/// A policy from the query: any of `roles` (when given), all of `scopes`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// At least one of these roles (none: no role needed).
    pub roles: Vec<String>,
    /// Every one of these scopes.
    pub scopes: Vec<String>,
}

impl Policy {
    /// Parses `role` and `scope` (each repeatable); anything else is a 400,
    /// so a misspelt policy never silently allows.
    pub fn parse(uri: &Uri) -> Result<Self, ApiError> {
        let Query(pairs) =
            Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
        let mut policy = Self::default();
        for (name, value) in pairs {
            let list = match name.as_str() {
                "role" => &mut policy.roles,
                "scope" => &mut policy.scopes,
                _ => return Err(ApiError::InvalidQuery(format!("unknown parameter {name} (role and scope only)"))),
            };
            if value.is_empty() || value.contains([' ', ',']) {
                return Err(ApiError::InvalidQuery(format!("{name}: must be non-empty without spaces or commas")));
            }
            list.push(value);
        }
        Ok(policy)
    }
}

/// Who the credential belongs to.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// User id (the key's owner for keys).
    pub user_id: String,
    /// Roles (tokens only).
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// App the credential is bound to.
    pub app_id: Option<String>,
    /// `jwt` or `api_key`.
    pub method: &'static str,
    /// Key id (keys).
    pub key_id: Option<String>,
    /// Session id (tokens).
    pub session_id: Option<String>,
}

/// Why a request is refused.
#[derive(Debug)]
pub enum Denied {
    /// A filter-style reason (400s, missing credential, 403s).
    Reason(Reason, Option<String>),
    /// The control plane's own error (invalid token / key, query, internal).
    Api(ApiError),
}

impl From<ApiError> for Denied {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

/// Central verification; the query may carry a policy.
#[utoipa::path(get, path = "/api/v1/forward-auth",
    description = "Forward auth (any method; also any suffix: `/api/v1/forward-auth/{*rest}`, where the query is \
        not read). Verifies the request's own credential (`Authorization: Bearer <jwt or API key>` or `X-API-Key`).",
    params(
        ("role" = Option<Vec<String>>, Query, description = "at least one of these roles (repeatable)"),
        ("scope" = Option<Vec<String>>, Query, description = "all of these scopes (repeatable)"),
    ),
    responses(
        (status = 200, description = "allowed; identity in X-User-ID, X-User-Roles, X-User-Scopes, X-App-ID, \
            X-Auth-Method, X-Key-ID, X-Session-ID (those that apply); empty body"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn exact(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response<Body> {
    let policy = match Policy::parse(&uri) {
        Ok(p) => p,
        Err(e) => return respond(&state, Err(Denied::Api(e))),
    };
    let outcome = check(&state, &headers, &policy).await;
    respond(&state, outcome)
}

/// The same for Envoy's `path_prefix` + original path; no policy.
pub async fn suffix(State(state): State<AppState>, headers: HeaderMap) -> Response<Body> {
    let outcome = check(&state, &headers, &Policy::default()).await;
    respond(&state, outcome)
}

/// Authenticates the request's credential, then applies `policy`.
pub async fn check(state: &AppState, headers: &HeaderMap, policy: &Policy) -> Result<Identity, Denied> {
    let pairs: Vec<HeaderPair> = headers
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "authorization" | "x-api-key" | "x-service-key" | "x-admin-key"))
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let prefixes = [state.config.apikey_prefix.clone()];
    let found = credential::extract(&pairs, &NAMES, &prefixes, false).map_err(|r| Denied::Reason(r, None))?;
    let identity = match found {
        None => return Err(Denied::Reason(Reason::MissingCredentials, None)),
        // A key with another prefix than the configured one is still a key.
        Some(Credential::Jwt(t)) if !t.contains('.') && apikey::parse(t).is_ok() => api_key(state, t).await?,
        Some(Credential::Jwt(t)) => jwt(state, t).await?,
        Some(Credential::ApiKey { key, .. }) => api_key(state, key).await?,
        // Service and admin keys are the filter's own, unknown here.
        Some(_) => return Err(Denied::Reason(Reason::CredentialNotAccepted, None)),
    };
    if !policy.roles.is_empty() && !policy.roles.iter().any(|r| identity.roles.contains(r)) {
        return Err(Denied::Reason(Reason::InsufficientRole, None));
    }
    let missing: Vec<&str> =
        policy.scopes.iter().filter(|s| !identity.scopes.contains(s)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(Denied::Reason(Reason::InsufficientScope, Some(policy.scopes.join(" "))));
    }
    Ok(identity)
}

async fn jwt(state: &AppState, token: &str) -> Result<Identity, ApiError> {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let generation = state.sync.generation();
    state.forward_auth.refresh(state).await?;
    let id = match state.forward_auth.token(&digest, state.now()) {
        Some(hit) => hit,
        None => {
            let id = crate::tokens::verify_signed(state, token).await?;
            state.forward_auth.remember_token(state, generation, digest, id.clone());
            std::sync::Arc::new(id)
        }
    };
    if state.forward_auth.token_revoked(&id) {
        return Err(ApiError::InvalidToken);
    }
    Ok(Identity {
        roles: id.claims.roles.clone(),
        scopes: id.claims.scope.split_whitespace().map(str::to_string).collect(),
        app_id: Some(id.claims.app_id.clone()),
        method: "jwt",
        key_id: None,
        session_id: Some(id.claims.sid.clone()),
        user_id: id.user_id.clone(),
    })
}

async fn api_key(state: &AppState, key: &str) -> Result<Identity, ApiError> {
    if apikey::parse(key).is_err() {
        return Err(ApiError::InvalidApiKey);
    }
    let presented = apikey::digest(key);
    let generation = state.sync.generation();
    state.forward_auth.refresh(state).await?;
    let now = state.now();
    let meta = match state.forward_auth.key(&presented) {
        Some(Some(hit)) if hit.digest.ct_eq(&presented) => {
            if hit.claim_last_used(now) {
                touch(state, hit.meta.id.clone(), now);
            }
            hit.meta.clone()
        }
        Some(_) => return Err(ApiError::InvalidApiKey),
        None => match crate::apikeys::store::authenticate(state, key).await {
            Ok(meta) => {
                state.forward_auth.remember(state, generation, presented, Some(meta.clone()));
                meta
            }
            Err(ApiError::InvalidApiKey) => {
                state.forward_auth.remember(state, generation, presented, None);
                return Err(ApiError::InvalidApiKey);
            }
            Err(e) => return Err(e),
        },
    };
    if meta.expires_at <= now || meta.revoked_at.is_some() || state.forward_auth.key_revoked(&meta.id) {
        return Err(ApiError::InvalidApiKey);
    }
    Ok(Identity {
        user_id: meta.owner_id,
        roles: Vec::new(),
        scopes: meta.scopes,
        app_id: meta.app_id,
        method: "api_key",
        key_id: Some(meta.id),
        session_id: None,
    })
}

/// Refreshes a cached key's `last_used_at` off the request path.
fn touch(state: &AppState, key_id: String, now: i64) {
    let state = state.clone();
    tokio::spawn(async move {
        let updated = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&key_id)
            .execute(&state.db.pool)
            .await;
        if let Err(e) = updated {
            tracing::debug!(error = %e, "last_used_at not updated");
        }
    });
}

/// Renders an outcome.
fn respond(state: &AppState, outcome: Result<Identity, Denied>) -> Response<Body> {
    match outcome {
        Ok(identity) => {
            state.metrics.inc("meshgate_forward_auth_total{outcome=\"allowed\"}");
            allowed(&identity)
        }
        Err(denied) => {
            state.metrics.inc("meshgate_forward_auth_total{outcome=\"denied\"}");
            refused(denied)
        }
    }
}

fn allowed(id: &Identity) -> Response<Body> {
    let values = [
        Some(id.user_id.clone()).filter(|u| !u.is_empty()),
        Some(id.roles.join(",")).filter(|r| !r.is_empty()),
        Some(id.scopes.join(",")).filter(|s| !s.is_empty()),
        id.app_id.clone(),
        Some(id.method.to_string()),
        id.key_id.clone(),
        id.session_id.clone(),
    ];
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    let mut unset = Vec::new();
    for (name, value) in IDENTITY_HEADERS.into_iter().zip(values) {
        match value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            Some(v) => {
                headers.insert(name, v);
            }
            None => unset.push(name),
        }
    }
    if !unset.is_empty()
        && let Ok(v) = HeaderValue::from_str(&unset.join(","))
    {
        headers.insert("x-envoy-auth-headers-to-remove", v);
    }
    response
}

fn refused(denied: Denied) -> Response<Body> {
    let (reason, scope) = match denied {
        Denied::Reason(r, scope) => (r, scope),
        Denied::Api(e) => {
            let bad_credential = matches!(e, ApiError::InvalidToken | ApiError::InvalidApiKey);
            let mut response = e.into_response();
            if bad_credential {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"meshgate\", error=\"invalid_token\""),
                );
            }
            return response;
        }
    };
    let status = StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let challenge = match status.as_u16() {
        400 => Some("Bearer realm=\"meshgate\", error=\"invalid_request\"".to_string()),
        401 if reason == Reason::MissingCredentials => Some("Bearer realm=\"meshgate\"".to_string()),
        401 => Some("Bearer realm=\"meshgate\", error=\"invalid_token\"".to_string()),
        403 => Some(match &scope {
            Some(s) => format!("Bearer realm=\"meshgate\", error=\"insufficient_scope\", scope=\"{s}\""),
            None => "Bearer realm=\"meshgate\", error=\"insufficient_scope\"".to_string(),
        }),
        _ => None,
    };
    let problem = Problem {
        kind: format!("urn:meshgate:problem:{}", reason.slug()),
        title: reason.title(),
        status: status.as_u16(),
        detail: None,
    };
    let mut response = (status, serde_json::to_vec(&problem).unwrap_or_default()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::WWW_AUTHENTICATE, v);
    }
    response
}
