//! Login flows beyond passwords: browser sign-in through OAuth/OIDC
//! providers, email one-time codes, token exchange for trusted external
//! issuers, and the sign-in page.
//!
//! | module | what |
//! |---|---|
//! | [`settings`] | the login configuration file (providers, trusted issuers) |
//! | [`return_urls`] | the exact URLs each app's browser logins may return to |
//! | [`oauth`] | `authorize` and `callback`: one-time state, PKCE S256, fragment delivery |
//! | [`oidc`] | discovery, code exchange, ID token verification (`openidconnect`) |
//! | [`github`] | GitHub: OAuth 2.0 (`oauth2`) plus its user and email API |
//! | [`apple`] | Sign in with Apple's ES256 client secret |
//! | [`accounts`] | external identity → user: linking by verified email only |
//! | [`otp`] | email one-time codes |
//! | [`mailer`] | SMTP, or files for local use |
//! | [`exchange`] | external token → meshgate tokens |
//! | [`page`] | the HTML sign-in page (no JavaScript) |

pub mod accounts;
pub mod apple;
pub mod exchange;
pub mod github;
pub mod mailer;
pub mod oauth;
pub mod oidc;
pub mod otp;
pub mod page;
pub mod return_urls;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serde::Serialize;

use crate::audit::{self, Event};
use crate::auth::{TokenResponse, issue, session};
use crate::config::Config;
use crate::error::ApiResult;
use crate::state::AppState;
use settings::LoginSettings;

/// Seconds an HTTP call to a provider may take before it counts as down.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Login state shared by the handlers: settings, HTTP client, caches, mailer.
#[derive(Debug)]
pub struct Login {
    /// The parsed configuration file (empty without one).
    pub settings: LoginSettings,
    /// Client for provider calls: no redirects followed (SSRF hygiene, as
    /// the `openidconnect` crate requires), bounded time.
    pub http: reqwest::Client,
    /// Discovered provider metadata.
    pub discovery: oidc::Cache,
    /// Fetched JWKS of trusted issuers.
    pub issuer_keys: exchange::KeyCache,
    /// Where email codes go.
    pub mailer: mailer::Mailer,
    /// Ages the caches above: the state's clock once `AppState::new` has
    /// taken this `Login` (so a test that moves time expires them too).
    pub clock: Arc<crate::state::Clock>,
}

impl Login {
    /// Reads the login configuration and builds the mailer.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let settings = match &config.login_config {
            Some(path) => LoginSettings::load(path)?,
            None => LoginSettings::default(),
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_TIMEOUT)
            .build()?;
        Ok(Self {
            settings,
            http,
            discovery: oidc::Cache::default(),
            issuer_keys: exchange::KeyCache::default(),
            mailer: mailer::Mailer::from_config(config)?,
            clock: Arc::default(),
        })
    }
}

/// Tokens of a login that may have created the account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginTokens {
    /// The token pair.
    #[serde(flatten)]
    pub tokens: TokenResponse,
    /// Whether this login created the user.
    pub is_new_user: bool,
}

/// All login-flow routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(oauth::router())
        .merge(otp::router())
        .merge(exchange::router())
        .merge(return_urls::router())
        .merge(page::router())
}

/// How a user was authenticated, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Method<'a> {
    /// `oauth`, `otp` or `exchange`.
    pub kind: &'static str,
    /// Provider or issuer id.
    pub provider: &'a str,
}

/// Resolves the identity to a user, opens a session and mints tokens, all
/// database writes in one transaction (nothing is written on failure).
pub async fn finish(
    state: &AppState,
    identity: &accounts::ExternalIdentity,
    app_id: &str,
    method: Method<'_>,
    ip: &str,
) -> ApiResult<LoginTokens> {
    let now = state.now();
    let mut tx = state.db.begin().await?;
    let resolved = accounts::resolve(&mut tx, state, identity, now).await?;
    let (sid, refresh) = session::create(&mut tx, state, &resolved.user_id, app_id).await?;
    let detail = serde_json::json!({
        "app_id": app_id, "method": method.kind, "provider": method.provider, "new_user": resolved.is_new,
    });
    let event = Event {
        action: "login.success",
        actor: Some(&resolved.user_id),
        target: Some(&sid),
        ip: Some(ip),
        outcome: "success",
        detail: Some(detail),
    };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    state.metrics.inc("meshgate_login_total{outcome=\"success\"}");
    let tokens = issue(state, &resolved.user_id, app_id, &sid, refresh).await?;
    Ok(LoginTokens { tokens, is_new_user: resolved.is_new })
}
