//! API keys: `GET|POST /api/v1/apikeys`, `DELETE /api/v1/apikeys/{id}`
//! (admin, or the owner) and `POST /api/v1/apikeys/verify` (anyone).
//!
//! Creation returns the plain key once as `key`. Expiry is mandatory and at
//! most the configured maximum (365 days). A non-admin may only create keys
//! for themself, bound to their token's app, with a subset of their scopes.

pub mod store;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::apps::check_scope;
use crate::audit::{self, Event};
use crate::auth::principal::{ADMIN_SCOPE, Principal};
use crate::crypto;
use crate::db::{self, Counter};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path, Query};
use crate::revocations::{self, Kind};
use crate::state::AppState;
pub use store::ApiKey;

/// Body of `POST /api/v1/apikeys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Name, 1–128 printable characters.
    pub name: String,
    /// Owner (admin only; default: the caller).
    pub owner_id: Option<String>,
    /// App to bind the key to.
    pub app_id: Option<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime in days (1 to the maximum, 365 by default). Mandatory.
    pub expires_in_days: i64,
    /// Requests per minute filters allow for this key (1–1000000).
    pub rate_limit: Option<i64>,
    /// Key prefix (2–16 of `[a-z0-9]`); default from the config.
    pub prefix: Option<String>,
    /// A remaining-uses key: valid for this many requests through the
    /// filters (1–1000000000), counted in the credit account `uses:<id>`.
    pub max_uses: Option<i64>,
}

/// The created key: metadata plus the plain key, shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    /// The plain key. Store it now: only its digest is kept.
    pub key: String,
    /// Metadata.
    #[serde(flatten)]
    pub meta: ApiKey,
}

/// Body of `POST /api/v1/apikeys/verify`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key to check.
    pub key: String,
}

/// A valid key's claims.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// Always true (invalid keys get a 401 problem).
    pub valid: bool,
    /// Key metadata.
    #[serde(flatten)]
    pub meta: ApiKey,
}

/// Filter of the key list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only keys of this owner (admins; others always see their own).
    pub owner_id: Option<String>,
}

/// API key routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/apikeys", get(list).post(create))
        .route("/api/v1/apikeys/{id}", delete(revoke))
        .route("/api/v1/apikeys/verify", post(verify))
}

/// Creates a key.
#[utoipa::path(post, path = "/api/v1/apikeys", request_body = NewApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    Body(req): Body<NewApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    if req.name.trim().is_empty() || req.name.chars().count() > 128 || req.name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name must be 1 to 128 printable characters"));
    }
    let max_days = state.config.apikey_max_days.clamp(1, 365);
    if !(1..=max_days).contains(&req.expires_in_days) {
        return Err(ApiError::invalid(format!("expires_in_days must be 1 to {max_days}")));
    }
    if req.rate_limit.is_some_and(|r| !(1..=1_000_000).contains(&r)) {
        return Err(ApiError::invalid("rate_limit must be 1 to 1000000 requests per minute"));
    }
    if req.max_uses.is_some_and(|n| !(1..=1_000_000_000).contains(&n)) {
        return Err(ApiError::invalid("max_uses must be 1 to 1000000000"));
    }
    if req.scopes.len() > 64 {
        return Err(ApiError::invalid("at most 64 scopes"));
    }
    req.scopes.iter().try_for_each(|s| check_scope(s))?;
    let owner = req.owner_id.clone().unwrap_or_else(|| p.user_id.clone());
    if !p.is_admin() {
        let own_scopes = req.scopes.iter().all(|s| p.scopes.contains(s) && s != ADMIN_SCOPE);
        let own_app = req.app_id.is_none() || req.app_id == p.app_id;
        if owner != p.user_id || !own_scopes || !own_app {
            return Err(ApiError::Forbidden);
        }
    }
    if let Some(app) = &req.app_id
        && !crate::apps::exists(&state.db, app).await?
    {
        return Err(ApiError::invalid("unknown app_id"));
    }
    crate::users::fetch(&state.db, &owner).await.map_err(|_| ApiError::invalid("unknown owner_id"))?;
    let prefix = req.prefix.clone().unwrap_or_else(|| state.config.apikey_prefix.clone());
    let key = meshgate_core::apikey::generate(&prefix, &crypto::random_bytes())
        .map_err(|_| ApiError::invalid("prefix must be 2 to 16 characters of [a-z0-9]"))?;
    let digest = meshgate_core::apikey::digest(&key).to_hex();
    let now = state.now();
    let meta = ApiKey {
        id: crypto::new_id(),
        prefix,
        name: req.name,
        owner_id: owner,
        app_id: req.app_id,
        scopes: req.scopes,
        rate_limit: req.rate_limit,
        expires_at: now + req.expires_in_days * 86_400,
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    let mut tx = state.db.begin().await?;
    let version = db::bump(&mut tx, Counter::Change).await?;
    sqlx::query(
        "INSERT INTO api_keys (id, prefix, digest, name, owner_id, app_id, scopes, rate_limit, expires_at, created_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&meta.id)
    .bind(&meta.prefix)
    .bind(digest)
    .bind(&meta.name)
    .bind(&meta.owner_id)
    .bind(&meta.app_id)
    .bind(meta.scopes.join(" "))
    .bind(meta.rate_limit)
    .bind(meta.expires_at)
    .bind(now)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    if let Some(uses) = req.max_uses {
        crate::credits::open_uses(&mut tx, &meta.id, uses, &p.user_id, version, now).await?;
    }
    let event = Event {
        action: "apikey.create",
        actor: Some(&p.user_id),
        target: Some(&meta.id),
        ip: Some(&p.ip),
        outcome: "success",
        detail: Some(serde_json::json!({"owner_id": meta.owner_id, "scopes": meta.scopes, "max_uses": req.max_uses})),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    state.sync.changed();
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key, meta })))
}

/// Lists keys (admin: all or by owner; others: their own).
#[utoipa::path(get, path = "/api/v1/apikeys", params(ListQuery), responses((status = 200, body = [ApiKey])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    let owner = if p.is_admin() { q.owner_id } else { Some(p.user_id.clone()) };
    let sql =
        format!("SELECT {} FROM api_keys WHERE ($1 = '' OR owner_id = $1) ORDER BY created_at, id", store::COLUMNS);
    let rows = sqlx::query(&sql).bind(owner.unwrap_or_default()).fetch_all(&state.db.pool).await?;
    Ok(Json(rows.iter().map(store::from_row).collect::<Result<_, _>>()?))
}

/// Revokes a key (idempotent).
#[utoipa::path(delete, path = "/api/v1/apikeys/{id}", responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn revoke(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let now = state.now();
    let mut tx = state.db.begin().await?;
    let row = sqlx::query("SELECT owner_id, expires_at, revoked_at FROM api_keys WHERE id = $1")
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    let owner: String = row.try_get(0)?;
    if !p.may_act_for(&owner) {
        return Err(ApiError::NotFound);
    }
    if row.try_get::<Option<i64>, _>(2)?.is_some() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let version = db::bump(&mut tx, Counter::Change).await?;
    sqlx::query("UPDATE api_keys SET revoked_at = $1, version = $2 WHERE id = $3")
        .bind(now)
        .bind(version)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let until = row.try_get::<i64, _>(1)?.max(now);
    revocations::upsert(&mut tx, Kind::Key, &id, None, until, Some("api key revoked"), now).await?;
    let event = Event {
        action: "apikey.revoke",
        actor: Some(&p.user_id),
        target: Some(&id),
        ip: Some(&p.ip),
        outcome: "success",
        detail: None,
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    state.sync.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Verifies a key.
#[utoipa::path(post, path = "/api/v1/apikeys/verify", request_body = VerifyRequest,
    responses((status = 200, body = Verified), (status = 401, body = crate::error::Problem)))]
pub async fn verify(State(state): State<AppState>, Body(req): Body<VerifyRequest>) -> ApiResult<Json<Verified>> {
    let meta = store::authenticate(&state, &req.key).await?;
    Ok(Json(Verified { valid: true, meta }))
}
