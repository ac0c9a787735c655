//! The URLs an app's browser logins may return to:
//! `GET|PUT /api/v1/apps/{id}/return-urls` (admin). A `return_to` must equal
//! one of them byte for byte — no prefix, wildcard, case or trailing-slash
//! leniency — so a login can never hand tokens to a URL the app's admin did
//! not name.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::apps;
use crate::audit::{self, Event};
use crate::auth::principal::Admin;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path};
use crate::state::AppState;

/// Most URLs one app may list.
const MAX_URLS: usize = 32;

/// Body and answer of the return URL routes.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnUrls {
    /// Absolute `https://` URLs (or `http://` on localhost / 127.0.0.1 /
    /// `[::1]`), without a fragment, in their normalised form.
    pub urls: Vec<String>,
}

/// Return URL routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/apps/{id}/return-urls", get(list).put(replace))
}

/// Checks one URL: absolute, https (http only on loopback), no fragment or
/// credentials, and written exactly as its normal form (so the exact match
/// at login time cannot be dodged by an equivalent spelling).
pub fn check_url(url: &str) -> ApiResult<()> {
    let parsed = reqwest::Url::parse(url).map_err(|_| ApiError::invalid(format!("{url:?} is not an absolute URL")))?;
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    let scheme_ok = parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback);
    if !scheme_ok {
        return Err(ApiError::invalid(format!("{url:?} must use https (http only on localhost)")));
    }
    if parsed.fragment().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid(format!("{url:?} must not have a fragment or credentials")));
    }
    if parsed.as_str() != url || url.len() > 2048 {
        return Err(ApiError::invalid(format!("{url:?} must be written in normal form: {:?}", parsed.as_str())));
    }
    Ok(())
}

/// Whether `return_to` is one of the app's URLs (exact match).
pub async fn is_allowed(db: &Db, app_id: &str, return_to: &str) -> ApiResult<bool> {
    let row = sqlx::query("SELECT url FROM app_return_urls WHERE app_id = $1 AND url = $2")
        .bind(app_id)
        .bind(return_to)
        .fetch_optional(&db.pool)
        .await?;
    // Re-compared here so the rule does not depend on the database's collation.
    Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?.is_some_and(|u| u == return_to))
}

/// Refuses a `return_to` that is not allow-listed for `app_id` (422), or an
/// unknown app.
pub async fn require(db: &Db, app_id: &str, return_to: &str) -> ApiResult<()> {
    if !apps::exists(db, app_id).await? {
        return Err(ApiError::invalid("unknown app_id"));
    }
    if !is_allowed(db, app_id, return_to).await? {
        return Err(ApiError::invalid("return_to is not an allowed return URL of this app"));
    }
    Ok(())
}

async fn fetch(db: &Db, app_id: &str) -> ApiResult<ReturnUrls> {
    let rows = sqlx::query("SELECT url FROM app_return_urls WHERE app_id = $1 ORDER BY url")
        .bind(app_id)
        .fetch_all(&db.pool)
        .await?;
    let urls = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?;
    Ok(ReturnUrls { urls })
}

/// Lists an app's return URLs.
#[utoipa::path(get, path = "/api/v1/apps/{id}/return-urls",
    responses((status = 200, body = ReturnUrls), (status = 404, body = crate::error::Problem)))]
pub async fn list(State(state): State<AppState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Json<ReturnUrls>> {
    if !apps::exists(&state.db, &id).await? {
        return Err(ApiError::NotFound);
    }
    Ok(Json(fetch(&state.db, &id).await?))
}

/// Replaces an app's return URLs.
#[utoipa::path(put, path = "/api/v1/apps/{id}/return-urls", request_body = ReturnUrls,
    responses((status = 200, body = ReturnUrls), (status = 422, body = crate::error::Problem)))]
pub async fn replace(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Body(req): Body<ReturnUrls>,
) -> ApiResult<Json<ReturnUrls>> {
    if req.urls.len() > MAX_URLS {
        return Err(ApiError::invalid(format!("at most {MAX_URLS} return URLs")));
    }
    req.urls.iter().try_for_each(|u| check_url(u))?;
    if !apps::exists(&state.db, &id).await? {
        return Err(ApiError::NotFound);
    }
    let now = state.now();
    let mut tx = state.db.begin().await?;
    sqlx::query("DELETE FROM app_return_urls WHERE app_id = $1").bind(&id).execute(&mut *tx).await?;
    let unique: std::collections::BTreeSet<&String> = req.urls.iter().collect();
    for url in &unique {
        sqlx::query("INSERT INTO app_return_urls (app_id, url, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(url.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    let event = Event {
        action: "app.return_urls",
        actor: Some(&admin.0.user_id),
        target: Some(&id),
        ip: Some(&admin.0.ip),
        outcome: "success",
        detail: Some(serde_json::json!({"urls": unique})),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    Ok(Json(fetch(&state.db, &id).await?))
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn return_url_syntax() {
        assert!(check_url("https://app.example.com/cb").is_ok());
        assert!(check_url("http://127.0.0.1:3000/cb").is_ok());
        assert!(check_url("http://app.example.com/cb").is_err());
        assert!(check_url("https://app.example.com/cb#x").is_err());
        assert!(check_url("https://u:p@app.example.com/cb").is_err());
        assert!(check_url("https://App.example.com/cb").is_err());
        assert!(check_url("https://app.example.com").is_err());
        assert!(check_url("/relative").is_err());
    }
}
