//! Login, refresh, logout and `me`: `/api/v1/auth/*`.
//!
//! Submodules: [`password`] (argon2id off the runtime), [`limiter`] (failed
//! login lockout), [`session`] (sessions and rotating refresh tokens),
//! [`principal`] (the caller extractors).

pub mod limiter;
pub mod password;
pub mod principal;
pub mod session;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit::{self, Event};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, ClientIp};
use crate::revocations::{self, Kind};
use crate::state::AppState;
use crate::tokens::{self, AccessClaims};
use crate::{apps, users};
use principal::{ADMIN_APP, Principal};

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username or email.
    pub username: String,
    /// Password.
    pub password: String,
    /// App to mint the token for; default `meshgate` (the control plane).
    pub app_id: Option<String>,
}

/// Tokens handed to a client (login and refresh).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The access token (JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime in seconds.
    pub expires_in: i64,
    /// The refresh token (`id.secret`), rotated on every use.
    pub refresh_token: String,
}

/// Body of `POST /api/v1/auth/refresh`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The current refresh token.
    pub refresh_token: String,
}

/// Optional body of `POST /api/v1/auth/logout`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// End every session of the user, not only this one.
    #[serde(default)]
    pub all: bool,
}

/// `GET /api/v1/auth/me`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The user.
    pub user: users::User,
    /// App of the presented credential.
    pub app_id: Option<String>,
    /// Roles in that app.
    pub roles: Vec<String>,
    /// Scopes.
    pub scope: String,
    /// Session id (tokens only).
    pub sid: Option<String>,
}

/// Auth routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me))
}

/// Mints the token pair for a session.
pub(crate) async fn issue(
    state: &AppState,
    user_id: &str,
    app_id: &str,
    sid: &str,
    refresh: String,
) -> ApiResult<TokenResponse> {
    let (roles, scope) = apps::roles_for(&state.db, user_id, app_id).await?;
    let claims = AccessClaims { app_id: app_id.into(), roles, scope, sid: sid.into() };
    let minted = tokens::mint(state, user_id, claims).await?;
    Ok(TokenResponse {
        access_token: minted.token,
        token_type: "Bearer",
        expires_in: state.config.access_ttl_secs,
        refresh_token: refresh,
    })
}

/// Password login.
#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem),
              (status = 429, body = crate::error::Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    if req.username.is_empty() || req.username.len() > 254 || req.password.len() > 1024 {
        return Err(ApiError::InvalidCredentials);
    }
    let now = state.now();
    let login = req.username.to_lowercase();
    if let Err(retry_after) = state.limiter.check(&login, &ip, now) {
        state.metrics.inc("meshgate_login_total{outcome=\"locked\"}");
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    let row = sqlx::query("SELECT id, password_hash, disabled FROM users WHERE username = $1 OR email = $1")
        .bind(&login)
        .fetch_optional(&state.db.pool)
        .await?;
    let (user_id, hash, disabled) = match row {
        Some(r) => (Some(r.try_get::<String, _>(0)?), Some(r.try_get::<String, _>(1)?), r.try_get::<i64, _>(2)? != 0),
        None => (None, None, false),
    };
    let ok = password::verify(req.password, hash, users::cost(&state)).await? && !disabled;
    let Some(user_id) = user_id.filter(|_| ok) else {
        let locked = state.limiter.record_failure(&login, &ip, now);
        state.metrics.inc("meshgate_login_total{outcome=\"failure\"}");
        let detail = serde_json::json!({"locked": locked});
        let event = Event {
            action: "login.failure",
            target: Some(&login),
            ip: Some(&ip),
            outcome: "failure",
            detail: Some(detail),
            ..Default::default()
        };
        audit::record_alone(&state.db, now, event).await?;
        return Err(ApiError::InvalidCredentials);
    };
    state.limiter.record_success(&login);
    let app_id = req.app_id.unwrap_or_else(|| ADMIN_APP.to_string());
    if !apps::exists(&state.db, &app_id).await? {
        return Err(ApiError::invalid("unknown app_id"));
    }
    let mut tx = state.db.begin().await?;
    let (sid, refresh) = session::create(&mut tx, &state, &user_id, &app_id).await?;
    let event = Event {
        action: "login.success",
        actor: Some(&user_id),
        target: Some(&sid),
        ip: Some(&ip),
        outcome: "success",
        detail: Some(serde_json::json!({"app_id": app_id})),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    state.metrics.inc("meshgate_login_total{outcome=\"success\"}");
    Ok(Json(issue(&state, &user_id, &app_id, &sid, refresh).await?))
}

/// Rotates a refresh token into a new token pair.
#[utoipa::path(post, path = "/api/v1/auth/refresh", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(req): Body<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let r = session::refresh(&state, &req.refresh_token, &ip).await?;
    if !users::is_active(&state.db, &r.user_id).await? {
        return Err(ApiError::InvalidRefreshToken);
    }
    Ok(Json(issue(&state, &r.user_id, &r.app_id, &r.session_id, r.refresh_token).await?))
}

/// Ends the caller's session (or all of the user's sessions with `all`).
#[utoipa::path(post, path = "/api/v1/auth/logout", request_body = Option<LogoutRequest>,
    responses((status = 204), (status = 401, body = crate::error::Problem)))]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    // Mapped here like every other body (the plain `Bytes` rejection answers
    // an oversized body in text/plain, not problem+json).
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::MalformedJson(e.body_text()),
    })?;
    let req: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::InvalidBody(e.to_string()),
            _ => ApiError::MalformedJson(e.to_string()),
        })?
    };
    let token = principal.token().ok_or(ApiError::Forbidden)?;
    let now = state.now();
    let until = now + state.config.access_ttl_secs + 60;
    let mut tx = state.db.begin().await?;
    if req.all {
        session::end_user_sessions(&mut tx, &principal.user_id, now).await?;
        revocations::upsert(&mut tx, Kind::User, &principal.user_id, Some(now + 1), until, Some("logout all"), now)
            .await?;
    } else {
        session::end_session(&mut tx, &token.claims.sid, now).await?;
        revocations::upsert(&mut tx, Kind::Session, &token.claims.sid, None, until, Some("logout"), now).await?;
    }
    let event = Event {
        action: "logout",
        actor: Some(&principal.user_id),
        target: Some(&token.claims.sid),
        ip: Some(&principal.ip),
        outcome: "success",
        detail: Some(serde_json::json!({"all": req.all})),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    state.sync.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/auth/me",
    responses((status = 200, body = Me), (status = 401, body = crate::error::Problem)))]
pub async fn me(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<Me>> {
    let user = users::fetch(&state.db, &principal.user_id).await?;
    let sid = principal.token().map(|t| t.claims.sid.clone());
    Ok(Json(Me { user, app_id: principal.app_id, roles: principal.roles, scope: principal.scopes.join(" "), sid }))
}
