//! The login configuration file (`MESHGATE_LOGIN_CONFIG`, JSON): which
//! providers a browser may sign in with, and which external issuers' tokens
//! `POST /api/v1/auth/exchange` accepts.
//!
//! ```json
//! {
//!   "providers": [
//!     {"id": "google", "kind": "google", "client_id": "…", "client_secret_env": "GOOGLE_SECRET"},
//!     {"id": "okta", "kind": "oidc", "name": "Okta", "issuer": "https://corp.okta.com",
//!      "client_id": "…", "client_secret": "…"},
//!     {"id": "github", "kind": "github", "client_id": "…", "client_secret_env": "GH_SECRET"},
//!     {"id": "apple", "kind": "apple", "client_id": "com.example.web", "team_id": "…",
//!      "key_id": "…", "private_key_file": "/run/secrets/apple.p8"}
//!   ],
//!   "trusted_issuers": [
//!     {"id": "clerk", "issuer": "https://clerk.example.com",
//!      "jwks_url": "https://clerk.example.com/.well-known/jwks.json"}
//!   ]
//! }
//! ```
//!
//! A provider that lacks a setting (an unset secret variable, a missing key
//! file) is kept and answers 503 `provider-not-configured` naming what is
//! missing, so a half-finished setup is visible instead of silently absent.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// Browser login providers, shown in this order.
    #[serde(default)]
    pub providers: Vec<ProviderSettings>,
    /// Issuers whose tokens may be exchanged for meshgate tokens.
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuer>,
}

/// Which protocol and presets a provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenID Connect issuer, through discovery (`issuer` required).
    Oidc,
    /// Google (OIDC, issuer `https://accounts.google.com`).
    Google,
    /// Microsoft Entra ID (OIDC, issuer built from `tenant`).
    Microsoft,
    /// Okta (OIDC; `issuer` is the Okta org or authorization server URL).
    Okta,
    /// Sign in with Apple: OIDC with a `form_post` callback and a client
    /// secret minted as an ES256 JWT.
    Apple,
    /// GitHub: plain OAuth 2.0; identity from its REST API.
    Github,
}

/// One browser login provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Path segment in `/api/v1/auth/oauth/{id}/…`: 1–32 of `[a-z0-9-]`.
    pub id: String,
    /// Protocol and presets.
    pub kind: ProviderKind,
    /// Label on the sign-in page. Default: from the kind.
    pub name: Option<String>,
    /// OIDC issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    /// Required for `oidc` and `okta`; overrides the preset of the others
    /// (tests point presets at a local provider this way).
    pub issuer: Option<String>,
    /// Microsoft tenant id or domain (the `common` tenant cannot be verified
    /// against one issuer and is refused).
    pub tenant: Option<String>,
    /// OAuth client id.
    pub client_id: String,
    /// Client secret, inline (prefer `client_secret_env`).
    pub client_secret: Option<String>,
    /// Name of the environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// Scopes to request. Default: `openid email profile` (OIDC), `name
    /// email` (Apple, plus `openid`), `read:user user:email` (GitHub).
    pub scopes: Option<Vec<String>>,
    /// Apple: the developer team id (`iss` of the client secret JWT).
    pub team_id: Option<String>,
    /// Apple: the key id of the Sign in with Apple private key (`kid`).
    pub key_id: Option<String>,
    /// Apple: path of the `.p8` private key (PEM, P-256).
    pub private_key_file: Option<PathBuf>,
    /// GitHub: base of the web endpoints. Default `https://github.com`.
    pub web_url: Option<String>,
    /// GitHub: base of the REST API. Default `https://api.github.com`.
    pub api_url: Option<String>,
}

/// An external token issuer (e.g. Clerk, Supabase, Auth0) whose tokens are
/// exchanged for meshgate tokens of the mapped user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// Short name, recorded as the identity provider `exchange:<id>`.
    pub id: String,
    /// Exact `iss` of its tokens.
    pub issuer: String,
    /// Accepted `aud` values; when empty, `aud` is not checked (Clerk session
    /// tokens carry none).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where its public keys are published.
    pub jwks_url: Option<String>,
    /// Or the keys themselves (a JWK Set object).
    pub jwks: Option<serde_json::Value>,
    /// Accepted algorithms. Default `["RS256", "ES256", "EdDSA"]`.
    pub algorithms: Option<Vec<String>>,
    /// Claim holding the email address. Default `email`.
    pub email_claim: Option<String>,
    /// Treat the email claim as verified even without `email_verified: true`
    /// (only for issuers that never put unverified addresses in tokens).
    /// Default false.
    #[serde(default)]
    pub trust_email: bool,
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("MESHGATE_LOGIN_CONFIG {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the documented shape.
    #[error("MESHGATE_LOGIN_CONFIG {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why (names the field).
        source: serde_json::Error,
    },
    /// A value is invalid; the message names it.
    #[error("MESHGATE_LOGIN_CONFIG: {0}")]
    Invalid(String),
}

impl LoginSettings {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SettingsError::Read { path: path.display().to_string(), source })?;
        let settings: Self = serde_json::from_str(&text)
            .map_err(|source| SettingsError::Parse { path: path.display().to_string(), source })?;
        settings.check()?;
        Ok(settings)
    }

    /// Rejects duplicate or malformed ids and issuers without keys.
    pub fn check(&self) -> Result<(), SettingsError> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.providers {
            let ok = !p.id.is_empty()
                && p.id.len() <= 32
                && p.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(SettingsError::Invalid(format!("provider id {:?} must be 1-32 of [a-z0-9-]", p.id)));
            }
            if !seen.insert(p.id.as_str()) {
                return Err(SettingsError::Invalid(format!("provider id {:?} appears twice", p.id)));
            }
        }
        for t in &self.trusted_issuers {
            if t.issuer.is_empty() || (t.jwks_url.is_none() == t.jwks.is_none()) {
                return Err(SettingsError::Invalid(format!(
                    "trusted issuer {:?} needs an issuer and exactly one of jwks_url, jwks",
                    t.id
                )));
            }
        }
        Ok(())
    }
}

impl ProviderSettings {
    /// The label shown to users.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match self.kind {
            ProviderKind::Google => "Google",
            ProviderKind::Microsoft => "Microsoft",
            ProviderKind::Okta => "Okta",
            ProviderKind::Apple => "Apple",
            ProviderKind::Github => "GitHub",
            ProviderKind::Oidc => self.id.as_str(),
        }
        .to_string()
    }

    /// The client secret (inline or from its variable), if set. Apple's is
    /// minted per request instead.
    pub fn secret(&self) -> Option<String> {
        if let Some(s) = &self.client_secret {
            return Some(s.clone());
        }
        let name = self.client_secret_env.as_deref()?;
        std::env::var(name).ok().filter(|s| !s.is_empty())
    }

    /// The OIDC issuer: explicit, or the kind's preset.
    pub fn issuer_url(&self) -> Result<String, String> {
        if let Some(i) = &self.issuer {
            return Ok(i.clone());
        }
        match self.kind {
            ProviderKind::Google => Ok("https://accounts.google.com".into()),
            ProviderKind::Apple => Ok("https://appleid.apple.com".into()),
            ProviderKind::Microsoft => match self.tenant.as_deref() {
                Some(t) if !matches!(t, "common" | "organizations" | "consumers") => {
                    Ok(format!("https://login.microsoftonline.com/{t}/v2.0"))
                }
                _ => Err("tenant (a tenant id or domain; not common/organizations/consumers)".into()),
            },
            ProviderKind::Oidc | ProviderKind::Okta => Err("issuer".into()),
            ProviderKind::Github => Err("issuer (GitHub is not an OIDC provider)".into()),
        }
    }

    /// The scopes to request.
    pub fn scope_list(&self) -> Vec<String> {
        if let Some(s) = &self.scopes {
            return s.clone();
        }
        let defaults: &[&str] = match self.kind {
            ProviderKind::Github => &["read:user", "user:email"],
            ProviderKind::Apple => &["openid", "name", "email"],
            _ => &["openid", "email", "profile"],
        };
        defaults.iter().map(|s| (*s).to_string()).collect()
    }

    /// What is missing for this provider to work, if anything.
    pub fn missing(&self) -> Option<String> {
        if self.client_id.is_empty() {
            return Some("client_id".into());
        }
        if self.kind != ProviderKind::Github
            && let Err(m) = self.issuer_url()
        {
            return Some(m);
        }
        match self.kind {
            ProviderKind::Apple => {
                let missing: Vec<&str> = [
                    ("team_id", self.team_id.is_none()),
                    ("key_id", self.key_id.is_none()),
                    ("private_key_file", self.private_key_file.as_ref().is_none_or(|p| !p.is_file())),
                ]
                .into_iter()
                .filter_map(|(name, gone)| gone.then_some(name))
                .collect();
                (!missing.is_empty()).then(|| missing.join(", "))
            }
            _ if self.secret().is_none() => Some(match &self.client_secret_env {
                Some(var) => format!("client secret (variable {var} is unset)"),
                None => "client_secret or client_secret_env".into(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(provider: serde_json::Value) -> ProviderSettings {
        let s: LoginSettings = serde_json::from_value(serde_json::json!({ "providers": [provider] })).unwrap();
        s.check().unwrap();
        s.providers.into_iter().next().unwrap()
    }

    #[test]
    fn presets_and_missing_settings() {
        let g = one(serde_json::json!({"id": "google", "kind": "google", "client_id": "c", "client_secret": "s"}));
        assert_eq!(g.issuer_url().unwrap(), "https://accounts.google.com");
        assert_eq!((g.missing(), g.display_name().as_str()), (None, "Google"));
        let m = one(
            serde_json::json!({"id": "ms", "kind": "microsoft", "tenant": "common", "client_id": "c", "client_secret": "s"}),
        );
        assert!(m.missing().unwrap().contains("tenant"));
        let m = one(
            serde_json::json!({"id": "ms", "kind": "microsoft", "tenant": "0000-tenant", "client_id": "c", "client_secret": "s"}),
        );
        assert_eq!(m.issuer_url().unwrap(), "https://login.microsoftonline.com/0000-tenant/v2.0");
        let o = one(serde_json::json!({"id": "okta", "kind": "okta", "client_id": "c", "client_secret": "s"}));
        assert_eq!(o.missing().as_deref(), Some("issuer"));
        let gh = one(
            serde_json::json!({"id": "gh", "kind": "github", "client_id": "c", "client_secret_env": "MESHGATE_UNSET_FOR_TEST"}),
        );
        assert!(gh.missing().unwrap().contains("MESHGATE_UNSET_FOR_TEST"));
        assert_eq!(gh.scope_list(), ["read:user", "user:email"]);
        let a = one(serde_json::json!({"id": "apple", "kind": "apple", "client_id": "c"}));
        assert_eq!(a.missing().as_deref(), Some("team_id, key_id, private_key_file"));
    }

    #[test]
    fn bad_files_are_named() {
        let dup = serde_json::json!({"providers": [
            {"id": "x", "kind": "oidc", "client_id": "c"}, {"id": "x", "kind": "oidc", "client_id": "c"}]});
        let s: LoginSettings = serde_json::from_value(dup).unwrap();
        assert!(s.check().unwrap_err().to_string().contains("appears twice"));
        let bad = serde_json::json!({"providers": [{"id": "Bad Id", "kind": "oidc", "client_id": "c"}]});
        let s: LoginSettings = serde_json::from_value(bad).unwrap();
        assert!(s.check().is_err());
        let t = serde_json::json!({"trusted_issuers": [{"id": "t", "issuer": "https://t"}]});
        let s: LoginSettings = serde_json::from_value(t).unwrap();
        assert!(s.check().unwrap_err().to_string().contains("jwks_url"));
        assert!(serde_json::from_value::<LoginSettings>(serde_json::json!({"providerz": []})).is_err());
    }
}
