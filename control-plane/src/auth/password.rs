//! Argon2id password hashing, always off the async runtime.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{ApiError, ApiResult};

/// Cost parameters (from the config).
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
}

fn hasher(cost: Cost) -> ApiResult<Argon2<'static>> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
        .map_err(|e| ApiError::Internal(format!("argon2 params: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` into a PHC string.
pub async fn hash(password: String, cost: Cost) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&crate::crypto::random_bytes::<16>())
            .map_err(|e| ApiError::Internal(format!("salt: {e}")))?;
        hasher(cost)?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("hash: {e}")))
    })
    .await?
}

/// Checks `password` against `stored`. With `stored = None` (unknown user) a
/// dummy hash of the same cost is checked, so timing does not reveal whether
/// the account exists.
pub async fn verify(password: String, stored: Option<String>, cost: Cost) -> ApiResult<bool> {
    let dummy = dummy_hash(cost)?;
    tokio::task::spawn_blocking(move || {
        let (phc, real) = match &stored {
            Some(s) => (s.as_str(), true),
            None => (dummy.as_str(), false),
        };
        let parsed = PasswordHash::new(phc).map_err(|e| ApiError::Internal(format!("stored hash: {e}")))?;
        let ok = hasher(cost)?.verify_password(password.as_bytes(), &parsed).is_ok();
        Ok(ok && real)
    })
    .await?
}

/// A valid hash of a random password nobody knows: the stored password of
/// accounts created by an external login or an email code (they can set a
/// real one later through `PATCH /api/v1/users/{id}`).
pub fn unusable_hash(cost: Cost) -> ApiResult<String> {
    dummy_hash(cost)
}

/// A hash of a random password, computed once per process.
fn dummy_hash(cost: Cost) -> ApiResult<String> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h.clone());
    }
    let salt = SaltString::encode_b64(&crate::crypto::random_bytes::<16>())
        .map_err(|e| ApiError::Internal(format!("salt: {e}")))?;
    let h = hasher(cost)?
        .hash_password(crate::crypto::new_secret().as_bytes(), &salt)
        .map_err(|e| ApiError::Internal(format!("hash: {e}")))?
        .to_string();
    Ok(DUMMY.get_or_init(|| h).clone())
}

/// Password policy: 8–1024 characters.
pub fn check_policy(password: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if !(8..=1024).contains(&n) {
        return Err(ApiError::invalid("password must be 8 to 1024 characters"));
    }
    Ok(())
}
