//! Operations endpoints: `GET /health`, `GET /metrics`, `GET /openapi.json`.

pub mod metrics;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::OpenApi;

use crate::db;
use crate::state::AppState;

/// Health answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// Whether the database answered.
    pub database: bool,
    /// Current change version (what the sync feed serves).
    pub version: Option<i64>,
}

/// Operations routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/metrics", get(prometheus)).route("/openapi.json", get(openapi))
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let version = db::change_version(&state.db).await.ok();
    let ok = version.is_some();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Health { status: if ok { "ok" } else { "degraded" }, database: ok, version }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text")))]
pub async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    let version = db::change_version(&state.db).await.unwrap_or(-1);
    let pool =
        [("meshgate_change_version", version), ("meshgate_db_pool_connections", i64::from(state.db.pool.size()))];
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&pool))
}

/// The OpenAPI document, generated from the handlers' annotations.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Every documented route.
#[derive(OpenApi)]
#[openapi(
    info(title = "meshgate control plane", description = "Issues the credentials the meshgate filter checks."),
    paths(
        health,
        prometheus,
        crate::auth::login,
        crate::auth::refresh,
        crate::auth::logout,
        crate::auth::me,
        crate::login::oauth::providers,
        crate::login::oauth::authorize,
        crate::login::oauth::callback_get,
        crate::login::otp::send,
        crate::login::otp::verify,
        crate::login::exchange::exchange,
        crate::login::return_urls::list,
        crate::login::return_urls::replace,
        crate::users::list,
        crate::users::create,
        crate::users::get_one,
        crate::users::patch,
        crate::apps::list,
        crate::apps::create,
        crate::apps::list_roles,
        crate::apps::create_role,
        crate::apps::assign,
        crate::apps::unassign,
        crate::apikeys::list,
        crate::apikeys::create,
        crate::apikeys::revoke,
        crate::apikeys::verify,
        crate::revocations::create,
        crate::credits::list,
        crate::credits::grant,
        crate::credits::deduct,
        crate::credits::usage,
        crate::credits::report,
        crate::signing::jwks,
        crate::signing::openid_configuration,
        crate::signing::rotate,
        crate::audit::list,
        crate::sync::sync,
        crate::forward_auth::exact,
    ),
    components(schemas(crate::error::Problem))
)]
pub struct ApiDoc;
