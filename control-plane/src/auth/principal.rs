//! Who is calling: the [`Principal`] extractor (bearer access token, or an
//! API key in `X-API-Key` / `Authorization: Bearer <prefix>_…`) and the
//! [`Admin`] extractor (admin role in the control plane's own app, or an
//! admin-scoped API key).

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use sqlx::Row;

use crate::apikeys;
use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::state::AppState;
use crate::tokens::{self, TokenIdentity};

/// The app that represents the control plane itself.
pub const ADMIN_APP: &str = "meshgate";
/// The role in [`ADMIN_APP`] that grants admin access.
pub const ADMIN_ROLE: &str = "admin";
/// The API key scope that grants admin access.
pub const ADMIN_SCOPE: &str = "admin";

/// How the caller authenticated.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A verified access token.
    Token(Box<TokenIdentity>),
    /// A verified API key.
    ApiKey {
        /// The key's id.
        key_id: String,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id (the key owner for API keys).
    pub user_id: String,
    /// App the credential is bound to.
    pub app_id: Option<String>,
    /// Roles (tokens only).
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The credential itself.
    pub credential: Credential,
    /// Client IP.
    pub ip: String,
}

impl Principal {
    /// Admin: the admin role in the control plane's app, or an admin-scoped key.
    pub fn is_admin(&self) -> bool {
        match &self.credential {
            Credential::Token(_) => {
                self.app_id.as_deref() == Some(ADMIN_APP) && self.roles.iter().any(|r| r == ADMIN_ROLE)
            }
            Credential::ApiKey { .. } => self.scopes.iter().any(|s| s == ADMIN_SCOPE),
        }
    }

    /// The token, when authenticated by one.
    pub fn token(&self) -> Option<&TokenIdentity> {
        match &self.credential {
            Credential::Token(t) => Some(t),
            Credential::ApiKey { .. } => None,
        }
    }

    /// Admin, or the user `user_id` themself.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.is_admin() || self.user_id == user_id
    }
}

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
    let (scheme, rest) = value.split_once(' ').ok_or(ApiError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
        return Err(ApiError::InvalidToken);
    }
    Ok(Some(rest.trim()))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let header_key = parts.headers.get("x-api-key").map(|v| v.to_str().unwrap_or_default().to_string());
        let bearer = bearer(parts)?.map(str::to_string);
        let principal = match (header_key, bearer) {
            (Some(_), Some(_)) => return Err(ApiError::Unauthenticated),
            (Some(key), None) => key_principal(state, &key, ip).await?,
            (None, Some(b)) if meshgate_core::apikey::parse(&b).is_ok() => key_principal(state, &b, ip).await?,
            (None, Some(b)) => token_principal(state, &b, ip).await?,
            (None, None) => return Err(ApiError::Unauthenticated),
        };
        let row = sqlx::query("SELECT disabled FROM users WHERE id = $1")
            .bind(&principal.user_id)
            .fetch_optional(&state.db.pool)
            .await?;
        match row.map(|r| r.try_get::<i64, _>(0).map(|d| d != 0)).transpose()? {
            Some(false) => Ok(principal),
            _ if matches!(principal.credential, Credential::ApiKey { .. }) => Err(ApiError::InvalidApiKey),
            _ => Err(ApiError::InvalidToken),
        }
    }
}

async fn token_principal(state: &AppState, token: &str, ip: String) -> Result<Principal, ApiError> {
    let id = tokens::verify(state, token).await?;
    Ok(Principal {
        user_id: id.user_id.clone(),
        app_id: Some(id.claims.app_id.clone()),
        roles: id.claims.roles.clone(),
        scopes: id.claims.scope.split_whitespace().map(str::to_string).collect(),
        credential: Credential::Token(Box::new(id)),
        ip,
    })
}

async fn key_principal(state: &AppState, key: &str, ip: String) -> Result<Principal, ApiError> {
    let k = apikeys::store::authenticate(state, key).await?;
    Ok(Principal {
        user_id: k.owner_id,
        app_id: k.app_id,
        roles: Vec::new(),
        scopes: k.scopes,
        credential: Credential::ApiKey { key_id: k.id },
        ip,
    })
}

/// A principal that passed the admin check; 403 otherwise.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        if p.is_admin() { Ok(Self(p)) } else { Err(ApiError::Forbidden) }
    }
}
