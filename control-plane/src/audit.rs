//! Audit log: every admin action and security event, written in the same
//! transaction as the change it records, and `GET /api/v1/audit` with filters
//! and keyset paging (newest first).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::auth::principal::Admin;
use crate::db::{self, Counter, Db, Tx};
use crate::error::ApiResult;
use crate::extract::Query;
use crate::state::AppState;

/// One thing that happened.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    /// Dotted action name, e.g. `login.failure`, `apikey.create`.
    pub action: &'a str,
    /// Who did it (user id), when known.
    pub actor: Option<&'a str>,
    /// What it was done to (id or name).
    pub target: Option<&'a str>,
    /// Client IP.
    pub ip: Option<&'a str>,
    /// `success`, `failure` or `denied`.
    pub outcome: &'a str,
    /// Extra structured data (never secrets).
    pub detail: Option<serde_json::Value>,
}

/// Appends `event` inside `tx`.
pub async fn record(tx: &mut Tx, now: i64, event: Event<'_>) -> Result<(), sqlx::Error> {
    let id = db::bump(tx, Counter::Audit).await?;
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, target, source_ip, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(now)
    .bind(event.actor)
    .bind(event.action)
    .bind(event.target)
    .bind(event.ip)
    .bind(event.outcome)
    .bind(event.detail.map(|d| d.to_string()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends `event` in a transaction of its own (events with no other write).
pub async fn record_alone(db: &Db, now: i64, event: Event<'_>) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    record(&mut tx, now, event).await?;
    tx.commit().await
}

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Exact action name.
    pub action: Option<String>,
    /// Actor user id.
    pub actor: Option<String>,
    /// Target id or name.
    pub target: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// Only entries at or after this unix time.
    pub since: Option<i64>,
    /// Only entries before this unix time.
    pub until: Option<i64>,
    /// Page cursor: only entries with id below this (from `next_before`).
    pub before: Option<i64>,
    /// Page size, 1–500, default 100.
    pub limit: Option<i64>,
}

/// One audit entry as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// Unix time.
    pub at: i64,
    /// Actor user id.
    pub actor: Option<String>,
    /// Action name.
    pub action: String,
    /// Target.
    pub target: Option<String>,
    /// Client IP.
    pub source_ip: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Extra data.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// A page of entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub items: Vec<AuditEntry>,
    /// Cursor for the next (older) page, absent on the last page.
    pub next_before: Option<i64>,
}

/// Audit routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(list))
}

/// Lists audit entries.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 401, body = crate::error::Problem)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let mut sql =
        String::from("SELECT id, at, actor, action, target, source_ip, outcome, detail FROM audit_log WHERE 1 = 1");
    let mut texts: Vec<String> = Vec::new();
    let mut n = 0;
    for (col, value) in [("action", &q.action), ("actor", &q.actor), ("target", &q.target), ("outcome", &q.outcome)] {
        if let Some(v) = value {
            n += 1;
            sql.push_str(&format!(" AND {col} = ${n}"));
            texts.push(v.clone());
        }
    }
    let mut ints: Vec<i64> = Vec::new();
    for (cond, value) in [("at >=", q.since), ("at <", q.until), ("id <", q.before)] {
        if let Some(v) = value {
            n += 1;
            sql.push_str(&format!(" AND {cond} ${n}"));
            ints.push(v);
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit + 1));
    let mut query = sqlx::query(&sql);
    for t in &texts {
        query = query.bind(t);
    }
    for i in &ints {
        query = query.bind(i);
    }
    let rows = query.fetch_all(&state.db.pool).await?;
    let mut items = rows
        .iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                source_ip: r.try_get("source_ip")?,
                outcome: r.try_get("outcome")?,
                detail: r.try_get::<Option<String>, _>("detail")?.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_before = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_before }))
}
