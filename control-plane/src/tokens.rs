//! Access tokens: minting (`typ: at+jwt`, signed by the active key) and
//! verification for the control plane's own protected routes (signature by the
//! key named in `kid`, `iss`/`aud`/`typ`/`exp`, then revocations).

use std::collections::HashSet;

use jwt_simple::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::crypto;
use crate::error::{ApiError, ApiResult};
use crate::signing::keyring::KeyStatus;
use crate::state::AppState;

/// Longest bearer token looked at, in bytes (checked before any decoding).
const MAX_TOKEN_BYTES: usize = 8192;

/// Clock skew tolerated when verifying, in seconds.
const SKEW_SECS: u64 = 30;

/// Claims beyond the registered ones. Field names are the filter contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The app (tenant) the token was minted for.
    pub app_id: String,
    /// The user's roles in that app.
    pub roles: Vec<String>,
    /// Space-separated scopes.
    pub scope: String,
    /// Session id.
    pub sid: String,
}

/// What a verified access token says.
#[derive(Debug, Clone)]
pub struct TokenIdentity {
    /// `sub`: the user id.
    pub user_id: String,
    /// Claims specific to meshgate.
    pub claims: AccessClaims,
    /// `jti`.
    pub jti: String,
    /// `iat` (unix seconds).
    pub issued_at: i64,
    /// `exp` (unix seconds).
    pub expires_at: i64,
}

/// A freshly minted token.
#[derive(Debug)]
pub struct Minted {
    /// The compact JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `kid`.
    pub kid: String,
}

/// Signs an access token for `user_id` with the active key.
pub async fn mint(state: &AppState, user_id: &str, claims: AccessClaims) -> ApiResult<Minted> {
    let keys = state.keyring().await?;
    let key = keys
        .iter()
        .find(|k| k.status == KeyStatus::Active)
        .ok_or_else(|| ApiError::Internal("no active signing key".into()))?;
    let now = state.now();
    let jti = crypto::new_id();
    let jwt = JWTClaims {
        issued_at: Some(Duration::from_secs(now as u64)),
        expires_at: Some(Duration::from_secs((now + state.config.access_ttl_secs) as u64)),
        invalid_before: None,
        issuer: Some(state.config.issuer.clone()),
        subject: Some(user_id.to_string()),
        audiences: Some(Audiences::AsString(state.config.audience.clone())),
        jwt_id: Some(jti.clone()),
        nonce: None,
        custom: claims,
    };
    let token = key.sign(jwt)?;
    Ok(Minted { token, jti, kid: key.kid.clone() })
}

/// Verifies a bearer token: signature with the key its `kid` names (that
/// key's algorithm), `typ`, `iss`, `aud`, `exp`, then revocation records.
pub async fn verify(state: &AppState, token: &str) -> ApiResult<TokenIdentity> {
    let identity = verify_signed(state, token).await?;
    if is_revoked(state, &identity).await? {
        return Err(ApiError::InvalidToken);
    }
    Ok(identity)
}

/// Everything [`verify`] checks except revocations: size, `kid`, signature
/// with that key's own algorithm, `typ`, `iss`, `aud`, `exp`. No database
/// query while the keyring is cached. Callers must check revocations
/// themselves (the forward-auth endpoint does so from memory).
pub async fn verify_signed(state: &AppState, token: &str) -> ApiResult<TokenIdentity> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::InvalidToken);
    }
    let meta = Token::decode_metadata(token).map_err(|_| ApiError::InvalidToken)?;
    let kid = meta.key_id().ok_or(ApiError::InvalidToken)?.to_string();
    let mut keys = state.keyring().await?;
    if !keys.iter().any(|k| k.kid == kid) {
        keys = state.reload_keyring().await?;
    }
    let now = state.now();
    let key = keys.iter().find(|k| k.kid == kid && k.is_live(now)).ok_or(ApiError::InvalidToken)?;
    let options = VerificationOptions {
        required_signature_type: Some("at+jwt".into()),
        allowed_issuers: Some(HashSet::from([state.config.issuer.clone()])),
        allowed_audiences: Some(HashSet::from([state.config.audience.clone()])),
        time_tolerance: Some(Duration::from_secs(SKEW_SECS)),
        artificial_time: Some(Duration::from_secs(now.max(0) as u64)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        ..Default::default()
    };
    let verified = key.verify::<AccessClaims>(token, options).map_err(|_| ApiError::InvalidToken)?;
    let (Some(sub), Some(jti), Some(iat), Some(exp)) =
        (verified.subject, verified.jwt_id, verified.issued_at, verified.expires_at)
    else {
        return Err(ApiError::InvalidToken);
    };
    let identity = TokenIdentity {
        user_id: sub,
        claims: verified.custom,
        jti,
        issued_at: iat.as_secs() as i64,
        expires_at: exp.as_secs() as i64,
    };
    Ok(identity)
}

/// Whether a revocation record covers the token (by jti, session or
/// subject-not-before).
async fn is_revoked(state: &AppState, id: &TokenIdentity) -> ApiResult<bool> {
    let rows = sqlx::query(
        "SELECT kind, not_before FROM revocations WHERE \
         (kind = 'jti' AND value = $1) OR (kind = 'sid' AND value = $2) OR (kind = 'sub' AND value = $3)",
    )
    .bind(&id.jti)
    .bind(&id.claims.sid)
    .bind(&id.user_id)
    .fetch_all(&state.db.pool)
    .await?;
    for row in rows {
        let kind: String = row.try_get(0)?;
        let not_before: Option<i64> = row.try_get(1)?;
        let revoked = match kind.as_str() {
            "sub" => not_before.is_none_or(|nb| id.issued_at < nb),
            _ => true,
        };
        if revoked {
            return Ok(true);
        }
    }
    Ok(false)
}
