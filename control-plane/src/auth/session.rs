//! Sessions and rotating refresh tokens (`id.secret`, only a SHA-256 of the
//! secret stored).
//!
//! A session is one login; its refresh tokens form one family. Each use
//! rotates: the presented token is marked used and a successor issued. A
//! successor's secret is an HMAC of its predecessor (key derived from the
//! master key), so a retry of the same token within the grace window can be
//! answered with the *same* successor without storing any secret. Presenting a
//! used token outside that window is treated as theft: the whole family and
//! the session are revoked, and a session revocation is recorded for filters.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::Row;

use crate::audit::{self, Event};
use crate::crypto;
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::revocations::{self, Kind};
use crate::state::AppState;

/// A session's identity after a successful refresh.
#[derive(Debug)]
pub struct Refreshed {
    /// User id.
    pub user_id: String,
    /// App id.
    pub app_id: String,
    /// Session id.
    pub session_id: String,
    /// The successor refresh token (plain, for the client).
    pub refresh_token: String,
}

fn successor_secret(state: &AppState, id: &str, secret: &str) -> ApiResult<String> {
    let key = state.master.derive("refresh-successor");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|e| ApiError::Internal(e.to_string()))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(secret.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

async fn insert_token(tx: &mut Tx, id: &str, sid: &str, secret: &str, now: i64, exp: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, session_id, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(sid)
    .bind(crypto::sha256_hex(secret.as_bytes()))
    .bind(now)
    .bind(exp)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Opens a session for `user_id` in `app_id`; returns (session id, refresh token).
pub async fn create(tx: &mut Tx, state: &AppState, user_id: &str, app_id: &str) -> ApiResult<(String, String)> {
    let now = state.now();
    let exp = now + state.config.refresh_ttl_secs;
    let sid = crypto::new_id();
    sqlx::query("INSERT INTO sessions (id, user_id, app_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&sid)
        .bind(user_id)
        .bind(app_id)
        .bind(now)
        .bind(exp)
        .execute(&mut **tx)
        .await?;
    let (id, secret) = (crypto::new_id(), crypto::new_secret());
    insert_token(tx, &id, &sid, &secret, now, exp).await?;
    Ok((sid, format!("{id}.{secret}")))
}

/// Marks a session and all its refresh tokens revoked.
pub async fn end_session(tx: &mut Tx, sid: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(sid)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE session_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(sid)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Ends every open session of a user.
pub async fn end_user_sessions(tx: &mut Tx, user_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND session_id IN \
         (SELECT id FROM sessions WHERE user_id = $2 AND revoked_at IS NULL)",
    )
    .bind(now)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Rotates `presented`; see the module doc for the reuse rules.
pub async fn refresh(state: &AppState, presented: &str, ip: &str) -> ApiResult<Refreshed> {
    // One retry: a concurrent use of the same token may win the race, after
    // which this attempt takes the grace path.
    match refresh_once(state, presented, ip).await {
        Err(ApiError::Conflict(_)) => refresh_once(state, presented, ip).await,
        other => other,
    }
}

async fn refresh_once(state: &AppState, presented: &str, ip: &str) -> ApiResult<Refreshed> {
    let (id, secret) = presented.split_once('.').ok_or(ApiError::InvalidRefreshToken)?;
    if id.is_empty() || id.len() > 64 || secret.len() > 128 {
        return Err(ApiError::InvalidRefreshToken);
    }
    let now = state.now();
    let mut tx = state.db.begin().await?;
    let row = sqlx::query(
        "SELECT t.secret_hash, t.expires_at, t.used_at, t.successor_id, t.revoked_at, \
                s.id AS sid, s.user_id, s.app_id, s.revoked_at AS s_revoked, s.expires_at AS s_exp \
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::InvalidRefreshToken)?;
    let stored: String = row.try_get("secret_hash")?;
    if !crypto::ct_eq(stored.as_bytes(), crypto::sha256_hex(secret.as_bytes()).as_bytes()) {
        return Err(ApiError::InvalidRefreshToken);
    }
    let sid: String = row.try_get("sid")?;
    let user_id: String = row.try_get("user_id")?;
    let app_id: String = row.try_get("app_id")?;
    let revoked =
        row.try_get::<Option<i64>, _>("revoked_at")?.is_some() || row.try_get::<Option<i64>, _>("s_revoked")?.is_some();
    let session_exp: i64 = row.try_get("s_exp")?;
    if revoked || row.try_get::<i64, _>("expires_at")? <= now || session_exp <= now {
        return Err(ApiError::InvalidRefreshToken);
    }
    let next_secret = successor_secret(state, id, secret)?;
    if let Some(used_at) = row.try_get::<Option<i64>, _>("used_at")? {
        let successor: Option<String> = row.try_get("successor_id")?;
        let successor_unused = match &successor {
            Some(s) => sqlx::query("SELECT used_at FROM refresh_tokens WHERE id = $1")
                .bind(s)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<Option<i64>, _>(0))
                .transpose()?
                .is_some_and(|u| u.is_none()),
            None => false,
        };
        if now - used_at <= state.config.refresh_grace_secs && successor_unused {
            state.metrics.inc("meshgate_refresh_total{outcome=\"retry\"}");
            let successor = successor.unwrap_or_default();
            tx.rollback().await?;
            return Ok(Refreshed {
                user_id,
                app_id,
                session_id: sid,
                refresh_token: format!("{successor}.{next_secret}"),
            });
        }
        // Reuse outside the grace window: theft. Kill the family and session.
        end_session(&mut tx, &sid, now).await?;
        let until = now + state.config.access_ttl_secs + 60;
        revocations::upsert(&mut tx, Kind::Session, &sid, None, until, Some("refresh token reuse"), now).await?;
        let event = Event {
            action: "refresh.reuse_detected",
            actor: Some(&user_id),
            target: Some(&sid),
            ip: Some(ip),
            outcome: "denied",
            detail: Some(serde_json::json!({"refresh_token_id": id})),
        };
        audit::record(&mut tx, now, event).await?;
        tx.commit().await?;
        state.sync.changed();
        state.metrics.inc("meshgate_refresh_total{outcome=\"reuse\"}");
        tracing::warn!(session = %sid, "refresh token reuse detected; session revoked");
        return Err(ApiError::InvalidRefreshToken);
    }
    let next_id = crypto::new_id();
    let claimed =
        sqlx::query("UPDATE refresh_tokens SET used_at = $1, successor_id = $2 WHERE id = $3 AND used_at IS NULL")
            .bind(now)
            .bind(&next_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if claimed.rows_affected() != 1 {
        tx.rollback().await?;
        return Err(ApiError::Conflict("concurrent refresh".into()));
    }
    insert_token(&mut tx, &next_id, &sid, &next_secret, now, session_exp).await?;
    tx.commit().await?;
    state.metrics.inc("meshgate_refresh_total{outcome=\"rotated\"}");
    Ok(Refreshed { user_id, app_id, session_id: sid, refresh_token: format!("{next_id}.{next_secret}") })
}
