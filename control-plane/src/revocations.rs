//! Revocations by token id, session, user (subject not-before) or API key.
//! Each carries `until`, the longest lifetime of what it revokes, so the set
//! the filters hold stays bounded; each write bumps the change version.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use meshgate_wire::sync::RevocationKind;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::principal::Admin;
use crate::db::{self, Counter, Tx};
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;

/// What a revocation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One access token, by `jti`.
    Token,
    /// Every token of a session, by `sid`.
    Session,
    /// Every token of a user issued before now (subject not-before).
    User,
    /// An API key, by id.
    Key,
}

impl Kind {
    /// The kind for a column value.
    pub fn parse(column: &str) -> Option<Self> {
        Some(match column {
            "jti" => Self::Token,
            "sid" => Self::Session,
            "sub" => Self::User,
            "key" => Self::Key,
            _ => return None,
        })
    }

    /// The feed's name for the kind.
    pub fn wire(self) -> RevocationKind {
        match self {
            Self::Token => RevocationKind::Token,
            Self::Session => RevocationKind::Session,
            Self::User => RevocationKind::User,
            Self::Key => RevocationKind::Key,
        }
    }

    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "jti",
            Self::Session => "sid",
            Self::User => "sub",
            Self::Key => "key",
        }
    }
}

/// Writes (or extends) a revocation inside `tx`, bumping the change version.
pub async fn upsert(
    tx: &mut Tx,
    kind: Kind,
    value: &str,
    not_before: Option<i64>,
    until: i64,
    reason: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let version = db::bump(tx, Counter::Change).await?;
    sqlx::query(
        "INSERT INTO revocations (kind, value, not_before, until, reason, created_at, version, bucket) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (kind, value) DO UPDATE SET \
           not_before = excluded.not_before, \
           until = CASE WHEN excluded.until > revocations.until THEN excluded.until ELSE revocations.until END, \
           reason = excluded.reason, version = excluded.version",
    )
    .bind(kind.as_str())
    .bind(value)
    .bind(not_before)
    .bind(until)
    .bind(reason)
    .bind(now)
    .bind(version)
    .bind(bucket(kind.wire(), value))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The `bucket` column: [`meshgate_wire::sync::revocation_hash`] with its top
/// bit flipped, so that the signed SQL order is the hash's unsigned order
/// (the order of a paged snapshot's revocations).
pub fn bucket(kind: RevocationKind, value: &str) -> i64 {
    let hash = meshgate_wire::sync::revocation_hash(kind.code(), value) ^ (1 << 63);
    i64::from_be_bytes(hash.to_be_bytes())
}

/// Computes `bucket` for rows written before it existed (0), a thousand at
/// a time. Run at start-up; only the order of snapshot pages depends on it.
pub async fn backfill_buckets(pool: &sqlx::AnyPool) -> Result<u64, sqlx::Error> {
    let mut filled = 0;
    loop {
        let rows =
            sqlx::query("SELECT kind, value FROM revocations WHERE bucket = 0 LIMIT 1000").fetch_all(pool).await?;
        let mut changed = 0;
        let mut tx = pool.begin().await?;
        for row in &rows {
            let (column, value): (String, String) = (row.try_get("kind")?, row.try_get("value")?);
            let Some(kind) = Kind::parse(&column) else { continue };
            let bucket = bucket(kind.wire(), &value);
            if bucket == 0 {
                continue;
            }
            sqlx::query("UPDATE revocations SET bucket = $1 WHERE kind = $2 AND value = $3")
                .bind(bucket)
                .bind(&column)
                .bind(&value)
                .execute(&mut *tx)
                .await?;
            changed += 1;
        }
        tx.commit().await?;
        filled += changed;
        if changed == 0 {
            return Ok(filled);
        }
    }
}

/// Body of `POST /api/v1/revocations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// What to revoke.
    pub kind: Kind,
    /// The jti, session id, user id or key id.
    pub value: String,
    /// Free-text reason, kept in the record and the audit log.
    pub reason: Option<String>,
}

/// The stored revocation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revocation {
    /// What was revoked.
    pub kind: Kind,
    /// Its id.
    pub value: String,
    /// For users: tokens issued before this unix time are revoked.
    pub not_before: Option<i64>,
    /// Unix time after which the record no longer matters.
    pub until: i64,
}

/// Revocation routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/revocations", post(create))
}

/// Records a revocation.
#[utoipa::path(post, path = "/api/v1/revocations", request_body = RevocationRequest,
    responses((status = 201, body = Revocation), (status = 403, body = crate::error::Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Body(req): Body<RevocationRequest>,
) -> ApiResult<(StatusCode, Json<Revocation>)> {
    if req.value.is_empty() || req.value.len() > 128 {
        return Err(ApiError::invalid("value must be 1 to 128 characters"));
    }
    if req.reason.as_ref().is_some_and(|r| r.len() > 500) {
        return Err(ApiError::invalid("reason must be at most 500 characters"));
    }
    let now = state.now();
    let access_until = now + state.config.access_ttl_secs + 60;
    let mut tx = state.db.begin().await?;
    let (not_before, until) = match req.kind {
        Kind::Token | Kind::Session => (None, access_until),
        // +1: also covers tokens issued earlier in the current second.
        Kind::User => (Some(now + 1), access_until),
        Kind::Key => {
            let row = sqlx::query("SELECT expires_at FROM api_keys WHERE id = $1")
                .bind(&req.value)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(ApiError::NotFound)?;
            let expires: i64 = row.try_get(0)?;
            let version = db::bump(&mut tx, Counter::Change).await?;
            sqlx::query("UPDATE api_keys SET revoked_at = $1, version = $2 WHERE id = $3 AND revoked_at IS NULL")
                .bind(now)
                .bind(version)
                .bind(&req.value)
                .execute(&mut *tx)
                .await?;
            (None, expires.max(now))
        }
    };
    match req.kind {
        Kind::Session => crate::auth::session::end_session(&mut tx, &req.value, now).await?,
        Kind::User => crate::auth::session::end_user_sessions(&mut tx, &req.value, now).await?,
        Kind::Token | Kind::Key => {}
    }
    upsert(&mut tx, req.kind, &req.value, not_before, until, req.reason.as_deref(), now).await?;
    let detail = serde_json::json!({"kind": req.kind, "reason": req.reason});
    let event = Event {
        action: "revocation.create",
        actor: Some(&admin.user_id),
        target: Some(&req.value),
        ip: Some(&admin.ip),
        outcome: "success",
        detail: Some(detail),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    state.sync.changed();
    Ok((StatusCode::CREATED, Json(Revocation { kind: req.kind, value: req.value, not_before, until })))
}
