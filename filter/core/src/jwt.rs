//! JWT verification.
//!
//! Order of work, cheapest and most decisive first: size cap, segment
//! count, header (algorithm allow-list, `crit`, `typ`), key selection by
//! `kid`, algorithm pinned by the key, revocation lookup on the unverified
//! claims (a revoked token costs no signature work), then the signature and
//! time/issuer/audience checks with the caller's `now`: in jwt-simple for
//! HS256 and RS256; for ES256 and EdDSA, whose signatures `crate::es256` and
//! `crate::ed25519` check several times faster (per-key tables), `verify_jws`
//! does what jwt-simple does around them (`tests/signatures.rs` holds both
//! paths to the same answers).

use crate::denial::Reason;
use crate::identity::{Identity, is_header_safe_token};
use crate::jwk::{Algorithm, KeyMaterial};
use crate::revocation::RevocationSource;
use crate::token_cache::Verified;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::JWTError;
use jwt_simple::prelude::*;
use jwt_simple::token::MAX_HEADER_LENGTH;
use meshgate_wire::config::CredentialKind;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

/// A trusted issuer, compiled.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Exact `iss`.
    pub issuer: String,
    audiences: HashSet<String>,
    algorithms: Vec<Algorithm>,
    skew_secs: u64,
    /// Token size cap in bytes.
    pub max_token_bytes: usize,
    typ: Option<Vec<String>>,
    required_claims: Vec<String>,
}

/// A verification key and the issuer it belongs to.
#[derive(Debug, Clone)]
pub struct VerifyKey {
    /// Index into the issuer list.
    pub issuer: usize,
    /// The key, pinned to its algorithm.
    pub material: KeyMaterial,
}

/// All issuers and their keys, indexed by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    /// Issuers, in config order.
    pub issuers: Vec<Issuer>,
    /// Keys by `kid`.
    pub keys: HashMap<String, VerifyKey>,
    /// Largest `max_token_bytes` of any issuer: the pre-parse cap.
    pub max_token_bytes: usize,
}

/// meshgate's own claims beyond the registered ones.
#[derive(Debug, Default, Deserialize)]
struct ExtraClaims {
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    sid: Option<String>,
}

/// The claims read before verification, for the revocation lookup only.
#[derive(Debug, Default, Deserialize)]
struct RevocationClaims {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    iat: Option<serde_json::Value>,
}

impl Issuer {
    /// Builds an issuer from validated parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        issuer: String,
        audiences: HashSet<String>,
        algorithms: Vec<Algorithm>,
        skew_secs: u64,
        max_token_bytes: usize,
        typ: Option<Vec<String>>,
        required_claims: Vec<String>,
    ) -> Self {
        Self { issuer, audiences, algorithms, skew_secs, max_token_bytes, typ, required_claims }
    }

    fn typ_allowed(&self, typ: Option<&str>) -> bool {
        match (&self.typ, typ) {
            (None, None) => true,
            (None, Some(t)) => t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt"),
            (Some(list), Some(t)) => list.iter().any(|a| a.eq_ignore_ascii_case(t)),
            (Some(list), None) => list.is_empty(),
        }
    }

    fn options(&self, now: u64) -> VerificationOptions {
        VerificationOptions {
            accept_future: false,
            allowed_issuers: Some(HashSet::from([self.issuer.clone()])),
            allowed_audiences: Some(self.audiences.clone()),
            time_tolerance: Some(Duration::from_secs(self.skew_secs)),
            max_token_length: Some(self.max_token_bytes),
            artificial_time: Some(Duration::from_secs(now)),
            ..VerificationOptions::default()
        }
    }
}

fn map_error(err: &jwt_simple::Error) -> Reason {
    match err.downcast_ref::<JWTError>() {
        Some(JWTError::TokenHasExpired) => Reason::TokenExpired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => Reason::TokenNotYetValid,
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => Reason::InvalidIssuer,
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => Reason::InvalidAudience,
        Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag) => Reason::InvalidSignature,
        Some(JWTError::TokenTooLong) => Reason::TokenTooLarge,
        _ => Reason::MalformedToken,
    }
}

fn verify_signature(
    key: &KeyMaterial,
    token: &str,
    typ: Option<&str>,
    issuer: &Issuer,
    now: u64,
) -> Result<JWTClaims<ExtraClaims>, Reason> {
    let result = match key {
        KeyMaterial::Hs256(k) => k.verify_token::<ExtraClaims>(token, Some(issuer.options(now))),
        KeyMaterial::EdDsa(k) => return verify_jws(token, typ, issuer, now, |m, s| k.verify(m, s), Some(64)),
        KeyMaterial::Es256(k) => return verify_jws(token, typ, issuer, now, |m, s| k.verify(m, s), None),
        KeyMaterial::Rs256(k) => k.verify_token::<ExtraClaims>(token, Some(issuer.options(now))),
    };
    result.map_err(|e| map_error(&e))
}

/// What jwt-simple's `verify_token` does, in its order and with its
/// answers, around meshgate's own signature check `signed(message,
/// signature)`. The caller has already checked the size, the segment count,
/// `alg`, `kid` and `crit`. `signature_len`: a length jwt-simple refuses as
/// malformed (not as a bad signature) before checking.
fn verify_jws(
    token: &str,
    typ: Option<&str>,
    issuer: &Issuer,
    now: u64,
    signed: impl FnOnce(&[u8], &[u8]) -> bool,
    signature_len: Option<usize>,
) -> Result<JWTClaims<ExtraClaims>, Reason> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(Reason::MalformedToken)?;
    let (header, payload) = signing_input.split_once('.').ok_or(Reason::MalformedToken)?;
    if header.len() > MAX_HEADER_LENGTH {
        return Err(Reason::MalformedToken);
    }
    // jwt-simple's rule for a `typ` nobody required: JWT or `…+JWT`.
    if let Some(typ) = typ {
        let typ = typ.to_ascii_uppercase();
        if typ != "JWT" && !typ.ends_with("+JWT") {
            return Err(Reason::MalformedToken);
        }
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| Reason::MalformedToken)?;
    if signature_len.is_some_and(|len| signature.len() != len) {
        return Err(Reason::MalformedToken);
    }
    if !signed(signing_input.as_bytes(), &signature) {
        return Err(Reason::InvalidSignature);
    }
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Reason::MalformedToken)?;
    let claims: JWTClaims<ExtraClaims> = serde_json::from_slice(&payload).map_err(|_| Reason::MalformedToken)?;
    check_claims(&claims, issuer, now)?;
    Ok(claims)
}

/// jwt-simple's claim checks for the options `Issuer::options` sets:
/// `iat` and `nbf` not ahead of now (with skew), `exp` not behind it, `iss`
/// exact, `aud` one of the issuer's. Times compare in coarsetime ticks, as
/// jwt-simple's do (claims may carry fractions of a second).
fn check_claims(claims: &JWTClaims<ExtraClaims>, issuer: &Issuer, now: u64) -> Result<(), Reason> {
    let now = Duration::from_secs(now).as_ticks();
    let skew = Duration::from_secs(issuer.skew_secs).as_ticks();
    let ahead = |t: Option<Duration>| t.is_some_and(|t| t.as_ticks() > now.saturating_add(skew));
    if ahead(claims.issued_at) || ahead(claims.invalid_before) {
        return Err(Reason::TokenNotYetValid);
    }
    if claims.expires_at.is_some_and(|exp| now < skew || now - skew > exp.as_ticks()) {
        return Err(Reason::TokenExpired);
    }
    if claims.issuer.as_deref() != Some(issuer.issuer.as_str()) {
        return Err(Reason::InvalidIssuer);
    }
    if !claims.audiences.as_ref().is_some_and(|a| a.contains(&issuer.audiences)) {
        return Err(Reason::InvalidAudience);
    }
    Ok(())
}

fn iat_seconds(value: Option<&serde_json::Value>) -> Option<u64> {
    value.and_then(|v| v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)))
}

fn check_revocation(payload_b64: &str, revocations: &dyn RevocationSource) -> Result<(), Reason> {
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| Reason::MalformedToken)?;
    let claims: RevocationClaims = serde_json::from_slice(&payload).map_err(|_| Reason::MalformedToken)?;
    let iat = iat_seconds(claims.iat.as_ref());
    if revocations.token_revoked(claims.jti.as_deref(), claims.sid.as_deref(), claims.sub.as_deref(), iat) {
        return Err(Reason::Revoked);
    }
    Ok(())
}

fn safe_list(items: Vec<String>) -> Result<Vec<String>, Reason> {
    if items.iter().all(|i| is_header_safe_token(i)) { Ok(items) } else { Err(Reason::InvalidClaim) }
}

fn safe_opt(value: Option<String>) -> Result<Option<String>, Reason> {
    match value {
        Some(v) if !is_header_safe_token(&v) => Err(Reason::InvalidClaim),
        other => Ok(other),
    }
}

impl KeyRing {
    /// Selects the key for a token header: by `kid`, or the only key of
    /// that algorithm when the token has no `kid`.
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyKey, Reason> {
        match kid {
            Some(kid) => self.keys.get(kid).ok_or(Reason::UnknownKey),
            None => {
                let mut candidates = self.keys.values().filter(|k| k.material.algorithm() == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Ok(only),
                    _ => Err(Reason::UnknownKey),
                }
            }
        }
    }

    /// Verifies `token` at `now` (unix seconds): the identity plus what a
    /// cache needs to re-check it later.
    pub fn verify(&self, token: &str, revocations: &dyn RevocationSource, now: u64) -> Result<Verified, Reason> {
        if token.len() > self.max_token_bytes {
            return Err(Reason::TokenTooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::MalformedToken);
        };
        if header.is_empty() || payload.is_empty() {
            return Err(Reason::MalformedToken);
        }
        let meta = Token::decode_metadata(token).map_err(|_| Reason::MalformedToken)?;
        let alg = Algorithm::from_jose(meta.algorithm()).ok_or(Reason::UnsupportedAlgorithm)?;
        if meta.critical().is_some() {
            // We implement no JWS extensions, so any `crit` must be refused.
            return Err(Reason::MalformedToken);
        }
        let key = self.select(meta.key_id(), alg)?;
        if key.material.algorithm() != alg {
            return Err(Reason::AlgorithmMismatch);
        }
        let issuer = self.issuers.get(key.issuer).ok_or(Reason::UnknownKey)?;
        if !issuer.algorithms.contains(&alg) {
            return Err(Reason::UnsupportedAlgorithm);
        }
        if token.len() > issuer.max_token_bytes {
            return Err(Reason::TokenTooLarge);
        }
        if !issuer.typ_allowed(meta.signature_type()) {
            return Err(Reason::InvalidTokenType);
        }
        check_revocation(payload, revocations)?;
        let claims = verify_signature(&key.material, token, meta.signature_type(), issuer, now)?;
        self.identity(issuer, claims)
    }

    fn identity(&self, issuer: &Issuer, claims: JWTClaims<ExtraClaims>) -> Result<Verified, Reason> {
        let Some(exp) = claims.expires_at else { return Err(Reason::MissingClaim) };
        for required in &issuer.required_claims {
            let present = match required.as_str() {
                "sub" => claims.subject.is_some(),
                "jti" => claims.jwt_id.is_some(),
                "iat" => claims.issued_at.is_some(),
                "nbf" => claims.invalid_before.is_some(),
                "sid" => claims.custom.sid.is_some(),
                "app_id" => claims.custom.app_id.is_some(),
                "roles" => claims.custom.roles.is_some(),
                "scope" => claims.custom.scope.is_some() || claims.custom.scopes.is_some(),
                _ => true,
            };
            if !present {
                return Err(Reason::MissingClaim);
            }
        }
        let extra = claims.custom;
        let mut scopes: Vec<String> =
            extra.scope.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();
        scopes.extend(extra.scopes.unwrap_or_default());
        let subject = claims.subject.unwrap_or_default();
        if !subject.is_empty() && !is_header_safe_token(&subject) {
            return Err(Reason::InvalidClaim);
        }
        let valid_until = exp.as_secs().saturating_add(issuer.skew_secs);
        let jti = claims.jwt_id;
        let iat = claims.issued_at.map(|t| t.as_secs());
        let identity = Identity {
            method: CredentialKind::Jwt,
            subject,
            roles: safe_list(extra.roles.unwrap_or_default())?,
            scopes: safe_list(scopes)?,
            app_id: safe_opt(extra.app_id)?,
            key_id: None,
            session_id: safe_opt(extra.sid)?,
            guest_id: None,
            key_limit: None,
        };
        Ok(Verified { identity: std::sync::Arc::new(identity), valid_until, jti, iat })
    }
}
