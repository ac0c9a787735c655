//! Signing keys: generation, encryption at rest, rotation, and the in-memory
//! keyring used to sign and verify access tokens.
//!
//! Life cycle: `next` (published in JWKS, not signing) → `active` (signing) →
//! `retired` (published until `retire_after`, when every token it signed has
//! expired). Rotation promotes `next`, so a key is always published at least
//! one rotation before it signs, and filters have it before they meet it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::json;
use sqlx::Row;

use crate::config::SigningAlg;
use crate::crypto::{self, MasterKey};
use crate::db::{self, Counter, Db, Tx};
use crate::error::{ApiError, ApiResult};

/// Where a key is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Published, will sign after the next rotation.
    Next,
    /// Signs new tokens.
    Active,
    /// Still published so its tokens verify, until `retire_after`.
    Retired,
}

impl KeyStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "next" => Some(Self::Next),
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}

/// Private key material; the type fixes the algorithm.
pub enum KeyMaterial {
    /// Ed25519.
    EdDsa(Ed25519KeyPair),
    /// ECDSA P-256.
    Es256(ES256KeyPair),
    /// HMAC-SHA256 shared secret.
    Hs256(HS256Key),
}

/// One decrypted signing key.
pub struct SigningKey {
    /// Key id (`kid`).
    pub kid: String,
    /// Life-cycle state.
    pub status: KeyStatus,
    /// Unix seconds after which a retired key is no longer published.
    pub retire_after: Option<i64>,
    /// The key itself.
    pub material: KeyMaterial,
    /// Public JWK (none for HS256, which is never published).
    pub public_jwk: Option<serde_json::Value>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("status", &self.status).finish()
    }
}

impl SigningKey {
    /// Whether the key is still published at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.status != KeyStatus::Retired || self.retire_after.is_some_and(|t| t > now)
    }

    /// Signs `claims` with header `typ: at+jwt` and this key's `kid`.
    pub fn sign<C: Serialize + DeserializeOwned>(&self, claims: JWTClaims<C>) -> ApiResult<String> {
        let opts = HeaderOptions { signature_type: Some("at+jwt".into()), ..Default::default() };
        let signed = match &self.material {
            KeyMaterial::EdDsa(k) => k.sign_with_options(claims, &opts),
            KeyMaterial::Es256(k) => k.sign_with_options(claims, &opts),
            KeyMaterial::Hs256(k) => k.authenticate_with_options(claims, &opts),
        };
        signed.map_err(|e| ApiError::Internal(format!("sign: {e}")))
    }

    /// Verifies `token` with this key (the key's algorithm, never the token's).
    pub fn verify<C: Serialize + DeserializeOwned>(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<C>, jwt_simple::Error> {
        match &self.material {
            KeyMaterial::EdDsa(k) => k.public_key().verify_token(token, Some(options)),
            KeyMaterial::Es256(k) => k.public_key().verify_token(token, Some(options)),
            KeyMaterial::Hs256(k) => k.verify_token(token, Some(options)),
        }
    }
}

/// Generates a key of `alg`, returning (material bytes, public JWK).
fn generate(alg: SigningAlg, kid: &str) -> (Vec<u8>, Option<serde_json::Value>) {
    match alg {
        SigningAlg::EdDsa => {
            let kp = Ed25519KeyPair::generate();
            let x = URL_SAFE_NO_PAD.encode(kp.public_key().to_bytes());
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"});
            (kp.to_bytes(), Some(jwk))
        }
        SigningAlg::Es256 => {
            let kp = ES256KeyPair::generate();
            let point = kp.public_key().public_key().to_bytes_uncompressed();
            let (x, y) = point[1..].split_at(32);
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y), "kid": kid, "alg": "ES256", "use": "sig"});
            (kp.to_bytes(), Some(jwk))
        }
        SigningAlg::Hs256 => (crypto::random_bytes::<32>().to_vec(), None),
    }
}

fn material(alg: SigningAlg, bytes: &[u8], kid: &str) -> Option<KeyMaterial> {
    Some(match alg {
        SigningAlg::EdDsa => KeyMaterial::EdDsa(Ed25519KeyPair::from_bytes(bytes).ok()?.with_key_id(kid)),
        SigningAlg::Es256 => KeyMaterial::Es256(ES256KeyPair::from_bytes(bytes).ok()?.with_key_id(kid)),
        SigningAlg::Hs256 => KeyMaterial::Hs256(HS256Key::from_bytes(bytes).with_key_id(kid)),
    })
}

/// Inserts a fresh key with `status`.
async fn insert_key(
    tx: &mut Tx,
    master: &MasterKey,
    alg: SigningAlg,
    status: KeyStatus,
    now: i64,
    version: i64,
) -> Result<String, sqlx::Error> {
    let kid = crypto::new_id();
    let (secret, jwk) = generate(alg, &kid);
    let sealed = master.seal(&kid, &secret);
    let activated = (status == KeyStatus::Active).then_some(now);
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, status, private_enc, public_jwk, created_at, activated_at, retire_after, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)",
    )
    .bind(&kid)
    .bind(alg.as_str())
    .bind(status.as_str())
    .bind(sealed)
    .bind(jwk.map(|j| j.to_string()))
    .bind(now)
    .bind(activated)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(kid)
}

/// Makes sure an active and a next key exist (first start).
pub async fn ensure_keys(db: &Db, master: &MasterKey, alg: SigningAlg, now: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    // Bump first: the counter's row lock makes concurrent replicas take turns.
    let version = db::bump(&mut tx, Counter::Change).await?;
    let statuses: Vec<String> = sqlx::query("SELECT status FROM signing_keys WHERE status IN ('active', 'next')")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    if statuses.is_empty() {
        insert_key(&mut tx, master, alg, KeyStatus::Active, now, version).await?;
        insert_key(&mut tx, master, alg, KeyStatus::Next, now, version).await?;
        tx.commit().await
    } else {
        tx.rollback().await
    }
}

/// Rotates: `next` becomes active, the active key retires after
/// `retire_delay` seconds, and a new `next` is published. Returns the new
/// active kid.
///
/// Unless `force`d (key compromise), the `next` key must have been published
/// for at least `min_published` seconds, so filters and JWKS caches have it
/// before it signs anything.
pub async fn rotate(
    db: &Db,
    master: &MasterKey,
    alg: SigningAlg,
    now: i64,
    retire_delay: i64,
    min_published: Option<i64>,
) -> ApiResult<String> {
    let mut tx = db.begin().await?;
    let version = db::bump(&mut tx, Counter::Change).await?;
    if let Some(min) = min_published {
        let newest: Option<i64> = sqlx::query("SELECT MAX(created_at) FROM signing_keys WHERE status = 'next'")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if newest.is_some_and(|created| now - created < min) {
            return Err(ApiError::Conflict(format!(
                "the next key has been published for less than {min} s; retry later or force"
            )));
        }
    }
    sqlx::query("UPDATE signing_keys SET status = 'retired', retire_after = $1, version = $2 WHERE status = 'active'")
        .bind(now + retire_delay)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    let next: Option<String> =
        sqlx::query("SELECT kid FROM signing_keys WHERE status = 'next' ORDER BY created_at LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?
            .and_then(|r| r.try_get(0).ok());
    let active = match next {
        Some(kid) => {
            sqlx::query("UPDATE signing_keys SET status = 'active', activated_at = $1, version = $2 WHERE kid = $3")
                .bind(now)
                .bind(version)
                .bind(&kid)
                .execute(&mut *tx)
                .await?;
            kid
        }
        None => insert_key(&mut tx, master, alg, KeyStatus::Active, now, version).await?,
    };
    insert_key(&mut tx, master, alg, KeyStatus::Next, now, version).await?;
    tx.commit().await?;
    Ok(active)
}

/// Loads and decrypts every key still worth holding at `now`.
pub async fn load(db: &Db, master: &MasterKey, now: i64) -> ApiResult<Vec<SigningKey>> {
    let rows = sqlx::query(
        "SELECT kid, alg, status, private_enc, public_jwk, retire_after FROM signing_keys \
         WHERE status <> 'retired' OR retire_after > $1 ORDER BY created_at",
    )
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        let kid: String = row.try_get("kid")?;
        let alg = SigningAlg::parse(&row.try_get::<String, _>("alg")?);
        let status = KeyStatus::parse(&row.try_get::<String, _>("status")?);
        let sealed: String = row.try_get("private_enc")?;
        let secret = master.open(&kid, &sealed).map_err(|e| ApiError::Internal(format!("signing key {kid}: {e}")))?;
        let (Some(alg), Some(status)) = (alg, status) else {
            return Err(ApiError::Internal(format!("signing key {kid}: unknown alg or status")));
        };
        let material = material(alg, &secret, &kid)
            .ok_or_else(|| ApiError::Internal(format!("signing key {kid}: bad material")))?;
        let public_jwk = row.try_get::<Option<String>, _>("public_jwk")?.and_then(|j| serde_json::from_str(&j).ok());
        let retire_after = row.try_get("retire_after")?;
        keys.push(SigningKey { kid, status, retire_after, material, public_jwk });
    }
    Ok(keys)
}
