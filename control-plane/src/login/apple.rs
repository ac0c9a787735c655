//! Sign in with Apple specifics: Apple has no static client secret; each
//! token request carries a short-lived ES256 JWT signed with the team's
//! Sign in with Apple key (`iss` team id, `sub` client id, `aud` Apple's
//! issuer, `kid` the key id). The callback arrives as a `form_post`.

use jwt_simple::prelude::*;

use super::settings::ProviderSettings;
use crate::error::{ApiError, ApiResult};

/// Lifetime of a minted client secret (Apple allows up to six months; one
/// request needs minutes).
const SECRET_TTL_SECS: u64 = 300;

/// Mints the client secret JWT for one token request.
pub fn client_secret(provider: &ProviderSettings) -> ApiResult<String> {
    let missing = |what: &str| ApiError::ProviderNotConfigured(format!("missing {what}"));
    let team = provider.team_id.as_deref().ok_or_else(|| missing("team_id"))?;
    let kid = provider.key_id.as_deref().ok_or_else(|| missing("key_id"))?;
    let path = provider.private_key_file.as_ref().ok_or_else(|| missing("private_key_file"))?;
    let pem = std::fs::read_to_string(path)
        .map_err(|e| ApiError::ProviderNotConfigured(format!("private_key_file {}: {e}", path.display())))?;
    let key = ES256KeyPair::from_pem(&pem)
        .map_err(|_| ApiError::ProviderNotConfigured("private_key_file is not a P-256 private key (PEM)".into()))?
        .with_key_id(kid);
    let audience = provider.issuer_url().map_err(|m| missing(&m))?;
    let claims = Claims::create(Duration::from_secs(SECRET_TTL_SECS))
        .with_issuer(team)
        .with_subject(&provider.client_id)
        .with_audience(audience);
    key.sign(claims).map_err(|e| ApiError::Internal(format!("apple client secret: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::settings::{LoginSettings, ProviderKind};

    #[test]
    fn client_secret_is_an_es256_jwt_apple_accepts() {
        let key = ES256KeyPair::generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AuthKey.p8");
        std::fs::write(&path, key.to_pem().unwrap()).unwrap();
        let settings: LoginSettings = serde_json::from_value(serde_json::json!({"providers": [{
            "id": "apple", "kind": "apple", "client_id": "com.example.web", "team_id": "TEAM123456",
            "key_id": "KEY1234567", "private_key_file": path,
        }]}))
        .unwrap();
        let provider = &settings.providers[0];
        assert_eq!(provider.kind, ProviderKind::Apple);
        assert_eq!(provider.missing(), None);
        let jwt = client_secret(provider).unwrap();
        let meta = Token::decode_metadata(&jwt).unwrap();
        assert_eq!((meta.algorithm(), meta.key_id()), ("ES256", Some("KEY1234567")));
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from(["TEAM123456".to_string()])),
            allowed_audiences: Some(HashSet::from(["https://appleid.apple.com".to_string()])),
            ..Default::default()
        };
        let claims = key.public_key().verify_token::<NoCustomClaims>(&jwt, Some(options)).unwrap();
        assert_eq!(claims.subject.as_deref(), Some("com.example.web"));
        let exp = claims.expires_at.unwrap().as_secs() - claims.issued_at.unwrap().as_secs();
        assert_eq!(exp, SECRET_TTL_SECS);
    }
}
