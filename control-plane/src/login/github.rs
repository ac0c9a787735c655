//! GitHub: OAuth 2.0 (not OIDC) through the `oauth2` crate, then the user
//! from `GET /user` and a verified address from `GET /user/emails`. Base URLs
//! are settings so tests can point them at a local fake.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _, TokenUrl,
};
use serde::Deserialize;

use super::Login;
use super::accounts::ExternalIdentity;
use super::oidc::{FlowSecrets, token_error};
use super::settings::ProviderSettings;
use crate::error::{ApiError, ApiResult};

/// The configured client type.
type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// `GET /user` (the fields used).
#[derive(Debug, Deserialize)]
struct GithubUser {
    /// Numeric id: stable across renames, the identity's subject.
    id: u64,
    /// Login name.
    login: String,
}

/// One entry of `GET /user/emails`.
#[derive(Debug, Deserialize)]
struct GithubEmail {
    /// Address.
    email: String,
    /// Whether GitHub verified it.
    verified: bool,
    /// Whether it is the primary address.
    primary: bool,
}

fn web_base(p: &ProviderSettings) -> &str {
    p.web_url.as_deref().unwrap_or("https://github.com").trim_end_matches('/')
}

fn api_base(p: &ProviderSettings) -> &str {
    p.api_url.as_deref().unwrap_or("https://api.github.com").trim_end_matches('/')
}

fn client(p: &ProviderSettings, redirect: &str) -> ApiResult<Client> {
    let bad = |e: oauth2::url::ParseError| ApiError::ProviderNotConfigured(format!("web_url: {e}"));
    let secret = p.secret().ok_or_else(|| ApiError::ProviderNotConfigured("client secret".into()))?;
    Ok(BasicClient::new(ClientId::new(p.client_id.clone()))
        .set_client_secret(ClientSecret::new(secret))
        .set_auth_uri(AuthUrl::new(format!("{}/login/oauth/authorize", web_base(p))).map_err(bad)?)
        .set_token_uri(TokenUrl::new(format!("{}/login/oauth/access_token", web_base(p))).map_err(bad)?)
        .set_redirect_uri(RedirectUrl::new(redirect.to_string()).map_err(|e| ApiError::Internal(e.to_string()))?))
}

/// GitHub's authorization URL (PKCE S256).
pub fn authorize_url(p: &ProviderSettings, redirect: &str, secrets: &FlowSecrets) -> ApiResult<String> {
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(secrets.verifier.clone()));
    let state = secrets.state.clone();
    let client = client(p, redirect)?;
    let mut request = client.authorize_url(move || CsrfToken::new(state)).set_pkce_challenge(challenge);
    for scope in p.scope_list() {
        request = request.add_scope(Scope::new(scope));
    }
    Ok(request.url().0.to_string())
}

/// Exchanges the code, then reads the user and their verified address.
pub async fn complete(
    login: &Login,
    p: &ProviderSettings,
    redirect: &str,
    code: &str,
    secrets: &FlowSecrets,
) -> ApiResult<ExternalIdentity> {
    let token = client(p, redirect)?
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(secrets.verifier.clone()))
        .request_async(&login.http)
        .await
        .map_err(|e| token_error(&p.id, e))?;
    let bearer = token.access_token().secret();
    let user: GithubUser = api_get(login, p, "/user", bearer).await?;
    let emails: Vec<GithubEmail> = api_get(login, p, "/user/emails", bearer).await?;
    let verified = emails.iter().filter(|e| e.verified).max_by_key(|e| e.primary).map(|e| e.email.to_lowercase());
    Ok(ExternalIdentity {
        provider: p.id.clone(),
        subject: user.id.to_string(),
        email_verified: verified.is_some(),
        email: verified,
        name_hint: Some(user.login),
    })
}

async fn api_get<T: serde::de::DeserializeOwned>(
    login: &Login,
    p: &ProviderSettings,
    path: &str,
    bearer: &str,
) -> ApiResult<T> {
    let url = format!("{}{path}", api_base(p));
    let response = login
        .http
        .get(&url)
        .bearer_auth(bearer)
        .header("accept", "application/vnd.github+json")
        .header("user-agent", "meshgate")
        .send()
        .await
        .map_err(|e| ApiError::ProviderUnavailable(format!("{}: {path}: {e}", p.id)))?;
    if !response.status().is_success() {
        return Err(ApiError::ProviderError(format!("{}: {path}: status {}", p.id, response.status())));
    }
    response.json().await.map_err(|e| ApiError::ProviderError(format!("{}: {path}: {e}", p.id)))
}
