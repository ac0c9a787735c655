//! Verification keys: JWKs compiled into jwt-simple key types.
//!
//! The key's type fixes the algorithm (jwt-simple's design): an `oct` key
//! can only ever verify HS256, an Ed25519 key only EdDSA. A token's `alg`
//! header is compared with the key's algorithm, never used to choose one, so
//! HS/RS and HS/EdDSA confusion cannot happen.

use crate::config::ConfigError;
use crate::ed25519::Ed25519Key;
use crate::es256::Es256Key;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::{HS256Key, RS256PublicKey};
use meshgate_wire::config::Jwk;

/// An algorithm the filter can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// Ed25519.
    EdDsa,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl Algorithm {
    /// Parses a JOSE `alg` name, case-sensitively (`none`, `None`, `hs256`
    /// are all unknown).
    pub fn from_jose(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Self::Hs256),
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn jose(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

/// Key material for one algorithm.
#[derive(Clone)]
pub enum KeyMaterial {
    /// HS256 secret.
    Hs256(HS256Key),
    /// Ed25519 public key (verified by `crate::ed25519`, not jwt-simple).
    EdDsa(Ed25519Key),
    /// P-256 public key (verified by `crate::es256`, not jwt-simple).
    Es256(Es256Key),
    /// RSA public key.
    Rs256(Box<RS256PublicKey>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never print; public keys are not interesting in logs.
        write!(f, "KeyMaterial({})", self.algorithm().jose())
    }
}

impl KeyMaterial {
    /// The algorithm this key is pinned to.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hs256(_) => Algorithm::Hs256,
            Self::EdDsa(_) => Algorithm::EdDsa,
            Self::Es256(_) => Algorithm::Es256,
            Self::Rs256(_) => Algorithm::Rs256,
        }
    }
}

fn b64(value: Option<&String>, field: &str, what: &str) -> Result<Vec<u8>, ConfigError> {
    let text = value.ok_or_else(|| ConfigError::new(field, format!("missing '{what}'")))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| ConfigError::new(field, format!("'{what}' is not base64url")))
}

/// Compiles one JWK; `field` names it in errors.
pub fn compile(jwk: &Jwk, field: &str) -> Result<KeyMaterial, ConfigError> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(ConfigError::new(field, "only 'use: sig' keys can verify tokens"));
    }
    let derived = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("oct", _) => Algorithm::Hs256,
        ("OKP", Some("Ed25519")) => Algorithm::EdDsa,
        ("EC", Some("P-256")) => Algorithm::Es256,
        ("RSA", _) => Algorithm::Rs256,
        _ => return Err(ConfigError::new(field, "unsupported kty/crv (oct, OKP Ed25519, EC P-256, RSA)")),
    };
    if let Some(alg) = &jwk.alg
        && Algorithm::from_jose(alg) != Some(derived)
    {
        return Err(ConfigError::new(field, format!("alg '{alg}' does not fit this key type")));
    }
    let invalid = |_| ConfigError::new(field, "invalid key material");
    Ok(match derived {
        Algorithm::Hs256 => {
            let secret = b64(jwk.k.as_ref(), field, "k")?;
            if secret.len() < 32 {
                return Err(ConfigError::new(field, "HS256 secrets must be at least 32 bytes"));
            }
            KeyMaterial::Hs256(HS256Key::from_bytes(&secret))
        }
        Algorithm::EdDsa => {
            let x = b64(jwk.x.as_ref(), field, "x")?;
            KeyMaterial::EdDsa(
                Ed25519Key::from_bytes(&x).ok_or_else(|| ConfigError::new(field, "invalid key material"))?,
            )
        }
        Algorithm::Es256 => {
            let mut point = vec![0x04];
            point.extend(b64(jwk.x.as_ref(), field, "x")?);
            point.extend(b64(jwk.y.as_ref(), field, "y")?);
            KeyMaterial::Es256(
                Es256Key::from_sec1(&point).ok_or_else(|| ConfigError::new(field, "invalid key material"))?,
            )
        }
        Algorithm::Rs256 => {
            let n = b64(jwk.n.as_ref(), field, "n")?;
            let e = b64(jwk.e.as_ref(), field, "e")?;
            if n.len() < 256 {
                return Err(ConfigError::new(field, "RSA keys must be at least 2048 bits"));
            }
            KeyMaterial::Rs256(Box::new(RS256PublicKey::from_components(&n, &e).map_err(invalid)?))
        }
    })
}
