//! Users: `GET /api/v1/users`, `POST /api/v1/users` (admin), and
//! `GET|PATCH /api/v1/users/{id}` (admin, or the user themself).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{self, Event};
use crate::auth::password::{self, Cost};
use crate::auth::principal::{Admin, Credential, Principal};
use crate::crypto;
use crate::db::{Db, Tx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path, Query};
use crate::state::AppState;

/// A user as returned by the API (never the password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Id.
    pub id: String,
    /// Login name (lower case).
    pub username: String,
    /// Email (lower case).
    pub email: Option<String>,
    /// Whether the address is proven: set by an admin, or by a provider or
    /// email-code login. Only a verified address links an external login to
    /// this user; one the user set themself is unverified.
    pub email_verified: bool,
    /// Display name.
    pub display_name: Option<String>,
    /// Disabled users cannot log in or use their tokens and keys.
    pub disabled: bool,
    /// Unix time.
    pub created_at: i64,
}

const COLUMNS: &str = "id, username, email, email_verified, display_name, disabled, created_at";

fn from_row(r: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        email: r.try_get("email")?,
        email_verified: r.try_get::<i64, _>("email_verified")? != 0,
        display_name: r.try_get("display_name")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

/// The configured argon2 cost.
pub fn cost(state: &AppState) -> Cost {
    Cost { memory_kib: state.config.argon2_memory_kib, iterations: state.config.argon2_iterations }
}

/// Loads a user or 404.
pub async fn fetch(db: &Db, id: &str) -> ApiResult<User> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(from_row(&row)?)
}

/// Whether the user exists and is not disabled.
pub async fn is_active(db: &Db, id: &str) -> ApiResult<bool> {
    let row = sqlx::query("SELECT disabled FROM users WHERE id = $1").bind(id).fetch_optional(&db.pool).await?;
    Ok(matches!(row.map(|r| r.try_get::<i64, _>(0).map(|d| d != 0)).transpose()?, Some(false)))
}

/// Usernames: 1–64 of `[a-z0-9._-]`, stored lower case.
pub fn check_username(name: &str) -> ApiResult<String> {
    let name = name.to_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok { Ok(name) } else { Err(ApiError::invalid("username must be 1 to 64 characters of [a-z0-9._-]")) }
}

/// Email syntax, normalised to lower case.
pub fn check_email(email: &str) -> ApiResult<String> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(email) } else { Err(ApiError::invalid("email is not a valid address")) }
}

fn check_display_name(name: &str) -> ApiResult<()> {
    if name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("display_name must be at most 128 printable characters"));
    }
    Ok(())
}

/// Inserts a user (already validated); returns the id. `email` is stored
/// as verified: every caller either is an admin or has proof of the address.
pub async fn insert(
    tx: &mut Tx,
    username: &str,
    email: Option<&str>,
    hash: &str,
    now: i64,
) -> Result<String, sqlx::Error> {
    let id = crypto::new_id();
    sqlx::query(
        "INSERT INTO users (id, username, email, email_verified, display_name, password_hash, disabled, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, $5, 0, $6, $6)",
    )
    .bind(&id)
    .bind(username)
    .bind(email)
    .bind(i64::from(email.is_some()))
    .bind(hash)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// Email.
    pub email: Option<String>,
    /// Initial password (8–1024 characters).
    pub password: String,
}

/// Body of `PATCH /api/v1/users/{id}`. Absent fields are left unchanged.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New email: verified when an admin sets it, unverified when the user
    /// sets a new one themself.
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New password.
    pub password: Option<String>,
    /// Disable or enable (admin only).
    pub disabled: Option<bool>,
}

/// Paging for the user list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1–500 (default 100).
    pub limit: Option<i64>,
    /// Offset.
    pub offset: Option<i64>,
}

/// User routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/users", get(list).post(create)).route("/api/v1/users/{id}", get(get_one).patch(patch))
}

/// Lists users.
#[utoipa::path(get, path = "/api/v1/users", params(ListQuery), responses((status = 200, body = [User])))]
pub async fn list(State(state): State<AppState>, _a: Admin, Query(q): Query<ListQuery>) -> ApiResult<Json<Vec<User>>> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2"))
        .bind(q.limit.unwrap_or(100).clamp(1, 500))
        .bind(q.offset.unwrap_or(0).max(0))
        .fetch_all(&state.db.pool)
        .await?;
    Ok(Json(rows.iter().map(from_row).collect::<Result<_, _>>()?))
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", request_body = NewUser, responses((status = 201, body = User)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Body(req): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let username = check_username(&req.username)?;
    let email = req.email.as_deref().map(check_email).transpose()?;
    password::check_policy(&req.password)?;
    let hash = password::hash(req.password, cost(&state)).await?;
    let now = state.now();
    let mut tx = state.db.begin().await?;
    let id = insert(&mut tx, &username, email.as_deref(), &hash, now).await?;
    let event = Event {
        action: "user.create",
        actor: Some(&admin.user_id),
        target: Some(&id),
        ip: Some(&admin.ip),
        outcome: "success",
        detail: None,
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(fetch(&state.db, &id).await?)))
}

/// One user (admin, or self).
#[utoipa::path(get, path = "/api/v1/users/{id}", responses((status = 200, body = User), (status = 404, body = crate::error::Problem)))]
pub async fn get_one(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> ApiResult<Json<User>> {
    if !p.may_act_for(&id) {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(fetch(&state.db, &id).await?))
}

/// Updates a user (admin, or self — with a token, not an API key — for
/// email, display name and password).
#[utoipa::path(patch, path = "/api/v1/users/{id}", request_body = UserPatch, responses((status = 200, body = User)))]
pub async fn patch(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Body(req): Body<UserPatch>,
) -> ApiResult<Json<User>> {
    // An API key is a machine credential (a filter's sync key, a
    // service's key): it may read its owner's record but never change it,
    // or a leaked key would reset its owner's password or email. Only an
    // admin-scoped key acts as an admin.
    let by_key = matches!(p.credential, Credential::ApiKey { .. });
    if !p.may_act_for(&id) || ((req.disabled.is_some() || by_key) && !p.is_admin()) {
        return Err(ApiError::Forbidden);
    }
    let email = req.email.as_deref().map(check_email).transpose()?;
    if let Some(name) = &req.display_name {
        check_display_name(name)?;
    }
    let hash = match req.password {
        Some(pw) => {
            password::check_policy(&pw)?;
            Some(password::hash(pw, cost(&state)).await?)
        }
        None => None,
    };
    let now = state.now();
    let mut tx = state.db.begin().await?;
    fetch_in(&mut tx, &id).await?;
    if let Some(email) = &email {
        // An admin vouches for the address; the user re-setting the same one
        // keeps its proof; a new one set by the user is unverified until a
        // provider or an email code proves it (see `login::accounts`).
        sqlx::query(
            "UPDATE users SET email_verified = CASE WHEN $1 = 1 THEN 1 WHEN email = $2 THEN email_verified ELSE 0 END \
             WHERE id = $3",
        )
        .bind(i64::from(p.is_admin()))
        .bind(email)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    }
    let updates: [(&str, Option<String>); 3] =
        [("email", email), ("display_name", req.display_name), ("password_hash", hash)];
    for (col, value) in updates.into_iter().filter_map(|(c, v)| v.map(|v| (c, v))) {
        sqlx::query(&format!("UPDATE users SET {col} = $1, updated_at = $2 WHERE id = $3"))
            .bind(value)
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(disabled) = req.disabled {
        sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(i64::from(disabled))
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        if disabled {
            cut_off(&mut tx, &state, &id, now).await?;
        }
    }
    let event = Event {
        action: "user.update",
        actor: Some(&p.user_id),
        target: Some(&id),
        ip: Some(&p.ip),
        outcome: "success",
        detail: Some(serde_json::json!({"disabled": req.disabled})),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    if req.disabled == Some(true) {
        state.sync.changed();
    }
    Ok(Json(fetch(&state.db, &id).await?))
}

async fn fetch_in(tx: &mut Tx, id: &str) -> ApiResult<()> {
    sqlx::query("SELECT id FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(())
}

/// A disabled user's credentials stop working at the filters too: their
/// sessions end, their tokens are revoked by subject not-before, and their API
/// keys are revoked (re-enabling does not bring keys back).
async fn cut_off(tx: &mut Tx, state: &AppState, id: &str, now: i64) -> ApiResult<()> {
    use crate::revocations::{self, Kind};
    crate::auth::session::end_user_sessions(tx, id, now).await?;
    let until = now + state.config.access_ttl_secs + 60;
    revocations::upsert(tx, Kind::User, id, Some(now + 1), until, Some("user disabled"), now).await?;
    let keys = sqlx::query("SELECT id, expires_at FROM api_keys WHERE owner_id = $1 AND revoked_at IS NULL")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    for key in keys {
        let (key_id, expires): (String, i64) = (key.try_get(0)?, key.try_get(1)?);
        let version = crate::db::bump(tx, crate::db::Counter::Change).await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1, version = $2 WHERE id = $3")
            .bind(now)
            .bind(version)
            .bind(&key_id)
            .execute(&mut **tx)
            .await?;
        revocations::upsert(tx, Kind::Key, &key_id, None, expires.max(now), Some("owner disabled"), now).await?;
    }
    Ok(())
}
