//! The one error type of the HTTP API and its single mapping to
//! `application/problem+json` (RFC 9457). Internal details are logged here and
//! never sent to clients.

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every way a request can fail. Each variant has one status and one stable
/// problem `type` (`urn:meshgate:problem:<slug>`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is JSON but does not fit the schema (missing, unknown or
    /// mistyped fields).
    #[error("invalid body: {0}")]
    InvalidBody(String),
    /// A field value is out of range or malformed.
    #[error("invalid value: {0}")]
    Validation(String),
    /// A query parameter is malformed, unknown or repeated (400).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The body is not declared as `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body exceeds the configured limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// No credential was presented where one is required.
    #[error("authentication required")]
    Unauthenticated,
    /// Login failed; deliberately says nothing about which part was wrong.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A bearer token is expired, forged, revoked or for the wrong audience.
    #[error("invalid token")]
    InvalidToken,
    /// A refresh token is unknown, expired, revoked or was replayed.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// An API key is malformed, unknown, expired or revoked (uniformly).
    #[error("invalid API key")]
    InvalidApiKey,
    /// Authenticated, but not allowed to do this.
    #[error("forbidden")]
    Forbidden,
    /// No such resource (or not visible to the caller).
    #[error("not found")]
    NotFound,
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Would violate a uniqueness rule.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A deduction larger than the account's balance (402).
    #[error("insufficient credits")]
    InsufficientCredits,
    /// Too many failed attempts; retry after the given seconds.
    #[error("too many attempts")]
    TooManyAttempts {
        /// Seconds until the lockout ends.
        retry_after: i64,
    },
    /// A one-time `state` of a browser login is unknown, expired, already
    /// used, or was started by another browser.
    #[error("invalid login state")]
    InvalidState,
    /// An external login was refused: the provider rejected the code, its ID
    /// token failed verification, or it vouches for no usable identity.
    /// The detail is a fixed sentence, never provider output.
    #[error("login rejected: {0}")]
    LoginRejected(&'static str),
    /// An email one-time code is wrong, expired or unknown (uniformly).
    #[error("invalid code")]
    InvalidCode,
    /// Asked again too soon (code resend); retry after the given seconds.
    #[error("throttled")]
    Throttled {
        /// Seconds until another request is accepted.
        retry_after: i64,
    },
    /// The login provider is declared but lacks a setting (named in the
    /// detail) or cannot be used safely (no PKCE S256).
    #[error("provider not configured: {0}")]
    ProviderNotConfigured(String),
    /// The login provider (or mail server) could not be reached; the cause is
    /// logged, the client sees a fixed detail.
    #[error("provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// The login provider answered with something unusable (5xx, garbage);
    /// the cause is logged.
    #[error("bad answer from provider: {0}")]
    ProviderError(String),
    /// The database cannot be reached right now (connection lost, server
    /// restarting, pool exhausted): 503 with `Retry-After`; the cause is logged.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The database has no space left for this write (SQLite `SQLITE_FULL`,
    /// PostgreSQL `disk_full`): 507; the cause is logged, reads keep working.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// Anything else: logged with its cause, answered as a bare 500.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// The RFC 9457 body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable problem type URI, `urn:meshgate:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human-readable summary of the type.
    pub title: &'static str,
    /// HTTP status code.
    pub status: u16,
    /// Explanation of this occurrence (never internal details).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ApiError {
    /// The single mapping: status, problem slug, title.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::MalformedJson(_) => (S::BAD_REQUEST, "malformed-json", "Malformed JSON body"),
            Self::InvalidBody(_) => (S::UNPROCESSABLE_ENTITY, "invalid-body", "Invalid request body"),
            Self::Validation(_) => (S::UNPROCESSABLE_ENTITY, "validation", "Invalid field value"),
            Self::InvalidQuery(_) => (S::BAD_REQUEST, "invalid-query", "Invalid query parameter"),
            Self::UnsupportedMediaType => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Expected application/json")
            }
            Self::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload-too-large", "Body too large"),
            Self::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated", "Authentication required"),
            Self::InvalidCredentials => (S::UNAUTHORIZED, "invalid-credentials", "Invalid credentials"),
            Self::InvalidToken => (S::UNAUTHORIZED, "invalid-token", "Invalid access token"),
            Self::InvalidRefreshToken => (S::UNAUTHORIZED, "invalid-refresh-token", "Invalid refresh token"),
            Self::InvalidApiKey => (S::UNAUTHORIZED, "invalid-api-key", "Invalid API key"),
            Self::Forbidden => (S::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound => (S::NOT_FOUND, "not-found", "Not found"),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed"),
            Self::Conflict(_) => (S::CONFLICT, "conflict", "Conflict"),
            Self::InsufficientCredits => (S::PAYMENT_REQUIRED, "insufficient-credits", "Insufficient credits"),
            Self::TooManyAttempts { .. } => (S::TOO_MANY_REQUESTS, "too-many-attempts", "Too many failed attempts"),
            Self::InvalidState => (S::BAD_REQUEST, "invalid-state", "Invalid or expired login state"),
            Self::LoginRejected(_) => (S::UNAUTHORIZED, "login-rejected", "Login rejected"),
            Self::InvalidCode => (S::UNAUTHORIZED, "invalid-code", "Invalid or expired code"),
            Self::Throttled { .. } => (S::TOO_MANY_REQUESTS, "throttled", "Too many requests"),
            Self::ProviderNotConfigured(_) => {
                (S::SERVICE_UNAVAILABLE, "provider-not-configured", "Login provider not configured")
            }
            Self::ProviderUnavailable(_) => {
                (S::SERVICE_UNAVAILABLE, "provider-unavailable", "Login provider unreachable")
            }
            Self::ProviderError(_) => (S::BAD_GATEWAY, "provider-error", "Bad answer from login provider"),
            Self::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable"),
            Self::StorageFull(_) => (S::INSUFFICIENT_STORAGE, "storage-full", "Storage full"),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    /// The client-visible detail, if any.
    fn detail(&self) -> Option<String> {
        match self {
            Self::MalformedJson(d)
            | Self::InvalidBody(d)
            | Self::Validation(d)
            | Self::InvalidQuery(d)
            | Self::Conflict(d)
            | Self::ProviderNotConfigured(d) => Some(d.clone()),
            Self::LoginRejected(d) => Some((*d).to_string()),
            _ => None,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// Shorthand for a validation failure.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::Validation(detail.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        match &self {
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            Self::Unavailable(cause) => tracing::warn!(%cause, "database unavailable"),
            Self::StorageFull(cause) => tracing::error!(%cause, "database storage full"),
            Self::ProviderUnavailable(cause) | Self::ProviderError(cause) => {
                tracing::warn!(%cause, "login provider failure");
            }
            _ => {}
        }
        let problem = Problem {
            kind: format!("urn:meshgate:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: self.detail(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            let value = match self {
                Self::InvalidToken => "Bearer realm=\"meshgate\", error=\"invalid_token\"",
                _ => "Bearer realm=\"meshgate\"",
            };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        if matches!(self, Self::Unavailable(_)) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::TooManyAttempts { retry_after } | Self::Throttled { retry_after } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after.max(1).to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(db) = err.as_database_error() {
            if db.is_unique_violation() {
                return Self::Conflict("already exists".into());
            }
            if db.is_foreign_key_violation() {
                return Self::NotFound;
            }
            match db.code().as_deref() {
                // SQLITE_FULL; PostgreSQL disk_full.
                Some("13" | "53100") => return Self::StorageFull(format!("database: {err}")),
                // PostgreSQL shutting down, restarting or refusing connections
                // (class 57P), connection exceptions (class 08).
                Some(code) if code.starts_with("57P") || code.starts_with("08") => {
                    return Self::Unavailable(format!("database: {err}"));
                }
                _ => {}
            }
        }
        if matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_))
        {
            return Self::Unavailable(format!("database: {err}"));
        }
        Self::Internal(format!("database: {err}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => Self::MalformedJson(e.body_text()),
            JsonRejection::JsonDataError(e) => Self::InvalidBody(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::MalformedJson(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Validation(rejection.body_text())
    }
}

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> Self {
        match rejection {
            FormRejection::InvalidFormContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::Validation(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::Validation(rejection.body_text())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Internal(format!("blocking task: {err}"))
    }
}
