//! Email one-time codes: `POST /api/v1/auth/otp/email/send` and
//! `POST /api/v1/auth/otp/email/verify`.
//!
//! Six digits from the OS-seeded CSPRNG, stored only as an HMAC keyed from
//! the master key (a plain hash of six digits is reversed in a blink),
//! valid `MESHGATE_OTP_TTL` (10 min), refused after `MESHGATE_OTP_MAX_ATTEMPTS`
//! (5) wrong guesses even when the next guess is right, one send per
//! `MESHGATE_OTP_RESEND` (60 s) per address. Sending answers the same for
//! known and unknown addresses: an unknown address gets an account when its
//! code is verified (`is_new_user: true`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::Row;

use super::accounts::ExternalIdentity;
use super::{LoginTokens, Method, finish};
use crate::apps;
use crate::auth::principal::ADMIN_APP;
use crate::crypto;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, ClientIp};
use crate::state::AppState;
use crate::users;

/// Body of `POST /api/v1/auth/otp/email/send`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Address to send the code to.
    pub email: String,
    /// App the resulting tokens are for; default `meshgate`.
    pub app_id: Option<String>,
}

/// Answer of a send (identical whether or not the address is known).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SendResponse {
    /// Always true: a code was sent if the address can receive mail.
    pub sent: bool,
    /// Seconds the code stays valid.
    pub expires_in: i64,
}

/// Body of `POST /api/v1/auth/otp/email/verify`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The address the code was sent to.
    pub email: String,
    /// The six digits.
    pub code: String,
}

/// OTP routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/auth/otp/email/send", post(send)).route("/api/v1/auth/otp/email/verify", post(verify))
}

fn code_hash(state: &AppState, email: &str, code: &str) -> ApiResult<String> {
    let key = state.master.derive("email-otp");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|e| ApiError::Internal(e.to_string()))?;
    mac.update(email.as_bytes());
    mac.update(b":");
    mac.update(code.as_bytes());
    Ok(crypto::hex(&mac.finalize().into_bytes()))
}

/// Sends a code.
#[utoipa::path(post, path = "/api/v1/auth/otp/email/send", request_body = SendRequest,
    responses((status = 202, body = SendResponse), (status = 422, body = crate::error::Problem),
              (status = 429, body = crate::error::Problem)))]
pub async fn send(
    State(state): State<AppState>,
    Body(req): Body<SendRequest>,
) -> ApiResult<(StatusCode, Json<SendResponse>)> {
    let email = users::check_email(&req.email)?;
    let app_id = req.app_id.unwrap_or_else(|| ADMIN_APP.to_string());
    if !apps::exists(&state.db, &app_id).await? {
        return Err(ApiError::invalid("unknown app_id"));
    }
    let now = state.now();
    let ttl = state.config.otp_ttl_secs;
    let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000u32));
    let mut tx = state.db.begin().await?;
    let last =
        sqlx::query("SELECT sent_at FROM email_otps WHERE email = $1").bind(&email).fetch_optional(&mut *tx).await?;
    if let Some(row) = last {
        let wait = row.try_get::<i64, _>(0)? + state.config.otp_resend_secs - now;
        if wait > 0 {
            return Err(ApiError::Throttled { retry_after: wait });
        }
    }
    sqlx::query("DELETE FROM email_otps WHERE email = $1").bind(&email).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO email_otps (email, code_hash, app_id, attempts, sent_at, expires_at) VALUES ($1, $2, $3, 0, $4, $5)",
    )
    .bind(&email)
    .bind(code_hash(&state, &email, &code)?)
    .bind(&app_id)
    .bind(now)
    .bind(now + ttl)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let body = format!(
        "Your meshgate sign-in code is {code}\n\nIt expires in {} minutes. If you did not ask for it, ignore this message.\n",
        ttl / 60
    );
    state.login.mailer.send(&email, "Your sign-in code", body).await?;
    state.metrics.inc("meshgate_otp_sent_total");
    Ok((StatusCode::ACCEPTED, Json(SendResponse { sent: true, expires_in: ttl })))
}

/// Verifies a code and signs the address in (creating its user if new).
#[utoipa::path(post, path = "/api/v1/auth/otp/email/verify", request_body = VerifyRequest,
    responses((status = 200, body = LoginTokens), (status = 401, body = crate::error::Problem),
              (status = 429, body = crate::error::Problem)))]
pub async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(req): Body<VerifyRequest>,
) -> ApiResult<Json<LoginTokens>> {
    let email = users::check_email(&req.email).map_err(|_| ApiError::InvalidCode)?;
    if req.code.len() != 6 || !req.code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::InvalidCode);
    }
    let now = state.now();
    // Counting the attempt and reading the hash is one statement, so
    // concurrent guesses cannot exceed the limit.
    let row = sqlx::query(
        "UPDATE email_otps SET attempts = attempts + 1 \
         WHERE email = $1 AND attempts < $2 AND expires_at > $3 RETURNING code_hash, app_id",
    )
    .bind(&email)
    .bind(state.config.otp_max_attempts)
    .bind(now)
    .fetch_optional(&state.db.pool)
    .await?;
    let Some(row) = row else {
        let live = sqlx::query("SELECT expires_at FROM email_otps WHERE email = $1 AND expires_at > $2")
            .bind(&email)
            .bind(now)
            .fetch_optional(&state.db.pool)
            .await?;
        state.metrics.inc("meshgate_otp_verify_total{outcome=\"refused\"}");
        return Err(match live {
            Some(r) => ApiError::TooManyAttempts { retry_after: r.try_get::<i64, _>(0)? - now },
            None => ApiError::InvalidCode,
        });
    };
    let stored: String = row.try_get(0)?;
    let app_id: String = row.try_get(1)?;
    if !crypto::ct_eq(stored.as_bytes(), code_hash(&state, &email, &req.code)?.as_bytes()) {
        state.metrics.inc("meshgate_otp_verify_total{outcome=\"failure\"}");
        return Err(ApiError::InvalidCode);
    }
    let used = sqlx::query("DELETE FROM email_otps WHERE email = $1 AND code_hash = $2")
        .bind(&email)
        .bind(&stored)
        .execute(&state.db.pool)
        .await?;
    if used.rows_affected() != 1 {
        return Err(ApiError::InvalidCode);
    }
    let identity = ExternalIdentity {
        provider: "email".into(),
        subject: email.clone(),
        email: Some(email),
        email_verified: true,
        name_hint: None,
    };
    let tokens = finish(&state, &identity, &app_id, Method { kind: "otp", provider: "email" }, &ip).await?;
    state.metrics.inc("meshgate_otp_verify_total{outcome=\"success\"}");
    Ok(Json(tokens))
}
