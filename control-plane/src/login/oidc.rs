//! OpenID Connect through the `openidconnect` crate: discovery (cached),
//! the authorization URL (PKCE S256, nonce), the code exchange and the ID
//! token checks (signature with the provider's JWKS, asymmetric algorithms
//! only, `iss`, `aud`/`azp`, `exp`, `nonce`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType, CoreUserInfoClaims,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, DiscoveryError, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, RequestTokenError,
    Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};

use super::accounts::ExternalIdentity;
use super::settings::{ProviderKind, ProviderSettings};
use super::{Login, apple};
use crate::error::{ApiError, ApiResult};

/// How long discovered metadata (and its JWKS) is reused.
const DISCOVERY_TTL_SECS: i64 = 3600;

/// The only signature algorithms accepted on ID tokens: asymmetric ones.
/// (HS256 keyed with the client secret and `none` are never accepted.)
const ID_TOKEN_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Discovery fields the core metadata type lacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraMetadata {
    /// PKCE methods the provider supports (RFC 8414).
    pub code_challenge_methods_supported: Option<Vec<String>>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

/// Discovered provider metadata.
pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A client built from discovery: authorization endpoint set, token and
/// userinfo endpoints as discovered.
type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// Discovered metadata per provider id, with when it was fetched.
#[derive(Debug, Default)]
pub struct Cache(Mutex<HashMap<String, (i64, Arc<Metadata>)>>);

/// The per-login secrets derived from the state (see `oauth`).
#[derive(Debug)]
pub struct FlowSecrets {
    /// The one-time `state`.
    pub state: String,
    /// The OIDC nonce.
    pub nonce: String,
    /// The PKCE code verifier (43 characters).
    pub verifier: String,
}

/// Metadata for `provider`, discovered or cached; `fresh` forces a refetch
/// (after a signature failure: the provider may have rotated keys).
pub async fn metadata(login: &Login, provider: &ProviderSettings, fresh: bool) -> ApiResult<Arc<Metadata>> {
    if !fresh
        && let Ok(cache) = login.discovery.0.lock()
        && let Some((at, meta)) = cache.get(&provider.id)
        && login.clock.fresh(*at, DISCOVERY_TTL_SECS)
    {
        return Ok(meta.clone());
    }
    let issuer = provider.issuer_url().map_err(|m| ApiError::ProviderNotConfigured(format!("missing {m}")))?;
    let issuer = IssuerUrl::new(issuer).map_err(|e| ApiError::ProviderNotConfigured(format!("issuer: {e}")))?;
    let meta = Metadata::discover_async(issuer, &login.http).await.map_err(|e| match e {
        DiscoveryError::Request(e) => ApiError::ProviderUnavailable(format!("{}: discovery: {e}", provider.id)),
        other => ApiError::ProviderError(format!("{}: discovery: {other}", provider.id)),
    })?;
    let meta = Arc::new(meta);
    if let Ok(mut cache) = login.discovery.0.lock() {
        cache.insert(provider.id.clone(), (login.clock.now(), meta.clone()));
    }
    Ok(meta)
}

/// The client for one provider over its metadata.
fn client(provider: &ProviderSettings, meta: &Metadata, redirect: &str, secret: Option<String>) -> ApiResult<Client> {
    let redirect = RedirectUrl::new(redirect.to_string()).map_err(|e| ApiError::Internal(format!("redirect: {e}")))?;
    let post_only = meta.token_endpoint_auth_methods_supported().is_some_and(|m| {
        !m.contains(&CoreClientAuthMethod::ClientSecretBasic) && m.contains(&CoreClientAuthMethod::ClientSecretPost)
    });
    let auth =
        if post_only || provider.kind == ProviderKind::Apple { AuthType::RequestBody } else { AuthType::BasicAuth };
    let client = CoreClient::from_provider_metadata(
        meta.clone(),
        ClientId::new(provider.client_id.clone()),
        secret.map(ClientSecret::new),
    )
    .set_redirect_uri(redirect)
    .set_auth_type(auth);
    // The typestate of `from_provider_metadata` keeps the token endpoint
    // optional; a provider without one cannot do the code flow.
    if meta.token_endpoint().is_none() {
        return Err(ApiError::ProviderError(format!("{}: discovery lists no token endpoint", provider.id)));
    }
    Ok(client)
}

/// The provider's authorization URL for one login. Refuses providers that
/// advertise PKCE methods without `S256`.
pub async fn authorize_url(
    login: &Login,
    provider: &ProviderSettings,
    redirect: &str,
    secrets: &FlowSecrets,
) -> ApiResult<String> {
    let meta = metadata(login, provider, false).await?;
    if let Some(methods) = &meta.additional_metadata().code_challenge_methods_supported
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(ApiError::ProviderNotConfigured("the provider does not support PKCE S256".into()));
    }
    let client = client(provider, &meta, redirect, None)?;
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(secrets.verifier.clone()));
    let (state, nonce) = (secrets.state.clone(), secrets.nonce.clone());
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        )
        .set_pkce_challenge(challenge);
    for scope in provider.scope_list().into_iter().filter(|s| s != "openid") {
        request = request.add_scope(Scope::new(scope));
    }
    if provider.kind == ProviderKind::Apple {
        // Apple returns name and email only with a form_post callback.
        request = request.add_extra_param("response_mode", "form_post");
    }
    let (url, _, _) = request.url();
    Ok(url.to_string())
}

/// The issuer a provider's callback `iss` parameter must equal (RFC 9207).
pub async fn issuer(login: &Login, provider: &ProviderSettings) -> ApiResult<String> {
    Ok(metadata(login, provider, false).await?.issuer().to_string())
}

/// Exchanges the code (with the verifier) and verifies the ID token.
pub async fn complete(
    login: &Login,
    provider: &ProviderSettings,
    redirect: &str,
    code: &str,
    secrets: &FlowSecrets,
) -> ApiResult<ExternalIdentity> {
    let meta = metadata(login, provider, false).await?;
    let secret = match provider.kind {
        ProviderKind::Apple => Some(apple::client_secret(provider)?),
        _ => provider.secret(),
    };
    let client = client(provider, &meta, redirect, secret)?;
    let response = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| ApiError::ProviderError(format!("{}: {e}", provider.id)))?
        .set_pkce_verifier(PkceCodeVerifier::new(secrets.verifier.clone()))
        .request_async(&login.http)
        .await
        .map_err(|e| token_error(&provider.id, e))?;
    let id_token = response.id_token().ok_or(ApiError::LoginRejected("the provider returned no ID token"))?;
    let nonce = Nonce::new(secrets.nonce.clone());
    let verify = |client: &Client| {
        let verifier = client.id_token_verifier().set_allowed_algs(ID_TOKEN_ALGS);
        id_token.claims(&verifier, &nonce).cloned()
    };
    let claims = match verify(&client) {
        Ok(c) => c,
        Err(e @ ClaimsVerificationError::SignatureVerification(_)) => {
            // One refetch of the keys in case the provider rotated them.
            tracing::info!(provider = %provider.id, error = %e, "ID token signature not verified; refreshing provider keys");
            let meta = metadata(login, provider, true).await?;
            let client = self::client(provider, &meta, redirect, None)?;
            verify(&client).map_err(|e| {
                tracing::warn!(provider = %provider.id, error = %e, "ID token rejected");
                ApiError::LoginRejected("the ID token failed verification")
            })?
        }
        Err(e) => {
            tracing::warn!(provider = %provider.id, error = %e, "ID token rejected");
            return Err(ApiError::LoginRejected("the ID token failed verification"));
        }
    };
    let mut email = claims.email().map(|e| e.as_str().to_lowercase());
    let mut verified = claims.email_verified() == Some(true);
    let mut name = claims.preferred_username().map(|u| u.as_str().to_string());
    if email.is_none() && meta.userinfo_endpoint().is_some() {
        // Providers that keep ID tokens small (Okta, oidc-provider) answer
        // the email at the userinfo endpoint; `sub` must match the ID token.
        let info: CoreUserInfoClaims = client
            .user_info(response.access_token().clone(), Some(claims.subject().clone()))
            .map_err(|e| ApiError::ProviderError(format!("{}: userinfo: {e}", provider.id)))?
            .request_async(&login.http)
            .await
            .map_err(|e| ApiError::ProviderError(format!("{}: userinfo: {e}", provider.id)))?;
        email = info.email().map(|e| e.as_str().to_lowercase());
        verified = info.email_verified() == Some(true);
        name = name.or_else(|| info.preferred_username().map(|u| u.as_str().to_string()));
    }
    Ok(ExternalIdentity {
        provider: provider.id.clone(),
        subject: claims.subject().as_str().to_string(),
        email_verified: email.is_some() && verified,
        email,
        name_hint: name,
    })
}

/// Maps a failed token request: a refusal by the provider (expired or
/// replayed code, PKCE mismatch) is the login's fault (401); a network
/// failure or garbage answer is the provider's (502).
pub fn token_error<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    provider: &str,
    err: RequestTokenError<RE, T>,
) -> ApiError {
    match err {
        RequestTokenError::ServerResponse(e) => {
            tracing::info!(%provider, error = %e, "provider refused the authorization code");
            ApiError::LoginRejected("the provider refused the authorization code")
        }
        RequestTokenError::Request(e) => ApiError::ProviderError(format!("{provider}: token request: {e}")),
        other => ApiError::ProviderError(format!("{provider}: token response: {other}")),
    }
}
