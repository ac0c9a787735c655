//! Apps (tenants), their roles, and role assignments. Tokens are minted per
//! app and carry the user's roles in that app plus the union of those roles'
//! scopes. Routes: `/api/v1/apps`, `/api/v1/apps/{id}/roles`,
//! `/api/v1/apps/{id}/users/{user_id}/roles` (all admin).

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::principal::Admin;
use crate::crypto;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path, Query};
use crate::state::AppState;

/// An app.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct App {
    /// Id (the `app_id` claim).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Unix time.
    pub created_at: i64,
}

/// Body of `POST /api/v1/apps`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    /// Optional id, 2–64 of `[a-z0-9-]`; generated when absent.
    pub id: Option<String>,
    /// Unique name, 1–128 printable characters.
    pub name: String,
    /// Description, up to 1000 characters.
    pub description: Option<String>,
}

/// A role of an app.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Role {
    /// Id.
    pub id: String,
    /// App.
    pub app_id: String,
    /// Name, unique in the app.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Scopes the role grants.
    pub scopes: Vec<String>,
}

/// Body of `POST /api/v1/apps/{id}/roles`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// Name, 1–64 of `[A-Za-z0-9._:-]`.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Scopes granted by the role (each 1–64 of `[A-Za-z0-9._:/-]`).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Body of `POST /api/v1/apps/{id}/users/{user_id}/roles`; also the query of
/// the `DELETE`.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RoleRef {
    /// Role name.
    pub role: String,
}

/// The user's roles in an app after a change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Assignment {
    /// User.
    pub user_id: String,
    /// App.
    pub app_id: String,
    /// Role names.
    pub roles: Vec<String>,
}

/// Whether `s` is 1–`max` characters, each allowed by `ok`.
pub fn is_token(s: &str, max: usize, ok: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(ok)
}

/// Scope syntax (shared with API keys).
pub fn check_scope(s: &str) -> ApiResult<()> {
    if is_token(s, 64, |b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b)) {
        Ok(())
    } else {
        Err(ApiError::invalid("scopes must be 1 to 64 characters of [A-Za-z0-9._:/-]"))
    }
}

fn check_text(field: &str, s: &str, max: usize) -> ApiResult<()> {
    if s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!("{field} must be at most {max} printable characters")));
    }
    Ok(())
}

/// Whether an app exists.
pub async fn exists(db: &Db, id: &str) -> ApiResult<bool> {
    Ok(sqlx::query("SELECT 1 FROM apps WHERE id = $1").bind(id).fetch_optional(&db.pool).await?.is_some())
}

/// A user's role names in an app and the space-separated union of their scopes.
pub async fn roles_for(db: &Db, user_id: &str, app_id: &str) -> ApiResult<(Vec<String>, String)> {
    let rows = sqlx::query(
        "SELECT r.name, r.scopes FROM role_assignments a JOIN roles r ON r.id = a.role_id \
         WHERE a.user_id = $1 AND a.app_id = $2 ORDER BY r.name",
    )
    .bind(user_id)
    .bind(app_id)
    .fetch_all(&db.pool)
    .await?;
    let mut roles = Vec::with_capacity(rows.len());
    let mut scopes = BTreeSet::new();
    for r in rows {
        roles.push(r.try_get::<String, _>(0)?);
        scopes.extend(r.try_get::<String, _>(1)?.split_whitespace().map(str::to_string));
    }
    Ok((roles, scopes.into_iter().collect::<Vec<_>>().join(" ")))
}

/// App routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/apps", get(list).post(create))
        .route("/api/v1/apps/{id}/roles", get(list_roles).post(create_role))
        .route("/api/v1/apps/{id}/users/{user_id}/roles", post(assign).delete(unassign))
}

/// Lists apps.
#[utoipa::path(get, path = "/api/v1/apps", responses((status = 200, body = [App])))]
pub async fn list(State(state): State<AppState>, _a: Admin) -> ApiResult<Json<Vec<App>>> {
    let rows = sqlx::query("SELECT id, name, description, created_at FROM apps ORDER BY created_at, id")
        .fetch_all(&state.db.pool)
        .await?;
    let apps = rows
        .iter()
        .map(|r| {
            Ok(App { id: r.try_get(0)?, name: r.try_get(1)?, description: r.try_get(2)?, created_at: r.try_get(3)? })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(apps))
}

/// Creates an app.
#[utoipa::path(post, path = "/api/v1/apps", request_body = NewApp, responses((status = 201, body = App)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Body(req): Body<NewApp>,
) -> ApiResult<(StatusCode, Json<App>)> {
    let id = req.id.unwrap_or_else(|| crypto::new_id().to_lowercase().replace('_', "-"));
    if !is_token(&id, 64, |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') || id.len() < 2 {
        return Err(ApiError::invalid("id must be 2 to 64 characters of [a-z0-9-]"));
    }
    if req.name.trim().is_empty() {
        return Err(ApiError::invalid("name must not be empty"));
    }
    check_text("name", &req.name, 128)?;
    if let Some(d) = &req.description {
        check_text("description", d, 1000)?;
    }
    let now = state.now();
    let mut tx = state.db.begin().await?;
    sqlx::query("INSERT INTO apps (id, name, description, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(&req.name)
        .bind(&req.description)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let event = Event {
        action: "app.create",
        actor: Some(&admin.user_id),
        target: Some(&id),
        ip: Some(&admin.ip),
        outcome: "success",
        detail: None,
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(App { id, name: req.name, description: req.description, created_at: now })))
}

/// Lists an app's roles.
#[utoipa::path(get, path = "/api/v1/apps/{id}/roles", responses((status = 200, body = [Role])))]
pub async fn list_roles(
    State(state): State<AppState>,
    _a: Admin,
    Path(app_id): Path<String>,
) -> ApiResult<Json<Vec<Role>>> {
    if !exists(&state.db, &app_id).await? {
        return Err(ApiError::NotFound);
    }
    let rows = sqlx::query("SELECT id, name, description, scopes FROM roles WHERE app_id = $1 ORDER BY name")
        .bind(&app_id)
        .fetch_all(&state.db.pool)
        .await?;
    let roles = rows
        .iter()
        .map(|r| {
            Ok(Role {
                id: r.try_get(0)?,
                app_id: app_id.clone(),
                name: r.try_get(1)?,
                description: r.try_get(2)?,
                scopes: r.try_get::<String, _>(3)?.split_whitespace().map(str::to_string).collect(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(roles))
}

/// Creates a role in an app.
#[utoipa::path(post, path = "/api/v1/apps/{id}/roles", request_body = NewRole, responses((status = 201, body = Role)))]
pub async fn create_role(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(app_id): Path<String>,
    Body(req): Body<NewRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    if !is_token(&req.name, 64, |b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) {
        return Err(ApiError::invalid("name must be 1 to 64 characters of [A-Za-z0-9._:-]"));
    }
    req.scopes.iter().try_for_each(|s| check_scope(s))?;
    if let Some(d) = &req.description {
        check_text("description", d, 1000)?;
    }
    if !exists(&state.db, &app_id).await? {
        return Err(ApiError::NotFound);
    }
    let now = state.now();
    let id = crypto::new_id();
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO roles (id, app_id, name, description, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&app_id)
    .bind(&req.name)
    .bind(&req.description)
    .bind(req.scopes.join(" "))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let event = Event {
        action: "role.create",
        actor: Some(&admin.user_id),
        target: Some(&id),
        ip: Some(&admin.ip),
        outcome: "success",
        detail: Some(serde_json::json!({"app_id": app_id, "name": req.name})),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(Role { id, app_id, name: req.name, description: req.description, scopes: req.scopes }),
    ))
}

async fn role_id(state: &AppState, app_id: &str, name: &str) -> ApiResult<String> {
    let row = sqlx::query("SELECT id FROM roles WHERE app_id = $1 AND name = $2")
        .bind(app_id)
        .bind(name)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(row.try_get(0)?)
}

async fn change(
    state: &AppState,
    admin: &crate::auth::principal::Principal,
    app_id: String,
    user_id: String,
    role: &str,
    add: bool,
) -> ApiResult<Json<Assignment>> {
    let rid = role_id(state, &app_id, role).await?;
    crate::users::fetch(&state.db, &user_id).await?;
    let now = state.now();
    let mut tx = state.db.begin().await?;
    let query = if add {
        sqlx::query("INSERT INTO role_assignments (user_id, role_id, app_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(&user_id)
            .bind(&rid)
            .bind(&app_id)
            .bind(now)
    } else {
        sqlx::query("DELETE FROM role_assignments WHERE user_id = $1 AND role_id = $2").bind(&user_id).bind(&rid)
    };
    query.execute(&mut *tx).await?;
    let action = if add { "role.assign" } else { "role.unassign" };
    let event = Event {
        action,
        actor: Some(&admin.user_id),
        target: Some(&user_id),
        ip: Some(&admin.ip),
        outcome: "success",
        detail: Some(serde_json::json!({"app_id": app_id, "role": role})),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    let (roles, _) = roles_for(&state.db, &user_id, &app_id).await?;
    Ok(Json(Assignment { user_id, app_id, roles }))
}

/// Assigns a role to a user.
#[utoipa::path(post, path = "/api/v1/apps/{id}/users/{user_id}/roles", request_body = RoleRef, responses((status = 200, body = Assignment)))]
pub async fn assign(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((app_id, user_id)): Path<(String, String)>,
    Body(req): Body<RoleRef>,
) -> ApiResult<Json<Assignment>> {
    change(&state, &admin, app_id, user_id, &req.role, true).await
}

/// Removes a role from a user (`?role=<name>`).
#[utoipa::path(delete, path = "/api/v1/apps/{id}/users/{user_id}/roles", params(RoleRef), responses((status = 200, body = Assignment)))]
pub async fn unassign(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((app_id, user_id)): Path<(String, String)>,
    Query(q): Query<RoleRef>,
) -> ApiResult<Json<Assignment>> {
    change(&state, &admin, app_id, user_id, &q.role, false).await
}
