//! API key storage and verification. Only the SHA-256 digest of a key is
//! stored (format and digest from `meshgate_core::apikey`, shared with the
//! filter). Verification answers a uniform "invalid" for every failure and
//! compares digests in constant time.

use meshgate_core::apikey::{self, ApiKeyDigest};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `last_used_at` is refreshed at most this often (seconds), so verification
/// is not a write per request.
const LAST_USED_GRANULARITY: i64 = 60;

/// An API key's metadata (never the key itself).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    /// Id.
    pub id: String,
    /// Visible prefix of the key.
    pub prefix: String,
    /// Name.
    pub name: String,
    /// Owning user.
    pub owner_id: String,
    /// App the key is bound to.
    pub app_id: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Requests per minute allowed by filters, if limited.
    pub rate_limit: Option<i64>,
    /// Unix time of expiry.
    pub expires_at: i64,
    /// Unix time of creation.
    pub created_at: i64,
    /// Unix time of last use (coarse).
    pub last_used_at: Option<i64>,
    /// Unix time of revocation.
    pub revoked_at: Option<i64>,
}

/// Column list matching [`from_row`].
pub const COLUMNS: &str =
    "id, prefix, name, owner_id, app_id, scopes, rate_limit, expires_at, created_at, last_used_at, revoked_at";

/// Decodes a row selected with [`COLUMNS`].
pub fn from_row(r: &AnyRow) -> Result<ApiKey, sqlx::Error> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        prefix: r.try_get("prefix")?,
        name: r.try_get("name")?,
        owner_id: r.try_get("owner_id")?,
        app_id: r.try_get("app_id")?,
        scopes: r.try_get::<String, _>("scopes")?.split_whitespace().map(str::to_string).collect(),
        rate_limit: r.try_get("rate_limit")?,
        expires_at: r.try_get("expires_at")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Verifies a presented key: format and checksum, digest lookup, constant-time
/// digest comparison, not revoked, not expired, owner active. Every failure is
/// the same [`ApiError::InvalidApiKey`].
pub async fn authenticate(state: &AppState, key: &str) -> ApiResult<ApiKey> {
    let presented = match apikey::parse(key) {
        Ok(_) => apikey::digest(key),
        Err(_) => {
            state.metrics.inc("meshgate_apikey_verify_total{outcome=\"invalid\"}");
            return Err(ApiError::InvalidApiKey);
        }
    };
    let row = sqlx::query(&format!(
        "SELECT k.digest, u.disabled, {} FROM api_keys k JOIN users u ON u.id = k.owner_id WHERE k.digest = $1",
        COLUMNS.split(", ").map(|c| format!("k.{c}")).collect::<Vec<_>>().join(", ")
    ))
    .bind(presented.to_hex())
    .fetch_optional(&state.db.pool)
    .await?;
    let now = state.now();
    let found = match &row {
        Some(r) => {
            let stored = ApiKeyDigest::from_hex(&r.try_get::<String, _>("digest")?);
            let same = stored.is_some_and(|d| d.ct_eq(&presented));
            let disabled = r.try_get::<i64, _>("disabled")? != 0;
            let key = from_row(r)?;
            (same && !disabled && key.revoked_at.is_none() && key.expires_at > now).then_some(key)
        }
        None => {
            // Same work as a hit, so a miss is not faster.
            let _ = ApiKeyDigest::from_bytes([0; 32]).ct_eq(&presented);
            None
        }
    };
    let Some(key) = found else {
        state.metrics.inc("meshgate_apikey_verify_total{outcome=\"invalid\"}");
        return Err(ApiError::InvalidApiKey);
    };
    if key.last_used_at.is_none_or(|t| now - t >= LAST_USED_GRANULARITY) {
        let updated = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&key.id)
            .execute(&state.db.pool)
            .await;
        if let Err(e) = updated {
            tracing::debug!(error = %e, "last_used_at not updated");
        }
    }
    state.metrics.inc("meshgate_apikey_verify_total{outcome=\"valid\"}");
    Ok(key)
}
