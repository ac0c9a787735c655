//! Denials and how they are rendered: the one place that maps a reason to
//! an HTTP status, a `WWW-Authenticate` challenge (RFC 6750) and an RFC 9457
//! problem body with a stable `type`.

use meshgate_wire::config::ProblemDetails;

/// Every reason the filter refuses a request. The slug (see
/// [`Reason::slug`]) is stable: clients and dashboards may key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // 400
    /// The path could not be normalized unambiguously.
    InvalidPath,
    /// A credential header appeared more than once.
    DuplicateCredential,
    /// Two different credentials in one request.
    ConflictingCredentials,
    /// A credential header is not valid text, or the guest id is malformed.
    MalformedCredential,
    // 401
    /// No credential on a route that needs one.
    MissingCredentials,
    /// A credential kind this route does not accept.
    CredentialNotAccepted,
    /// Not a well-formed JWT (segments, base64, JSON).
    MalformedToken,
    /// The JWT exceeds the configured size.
    TokenTooLarge,
    /// `alg` is `none`, unknown, or not allowed for the issuer.
    UnsupportedAlgorithm,
    /// No configured key has the token's `kid` (or no `kid` and no unique key).
    UnknownKey,
    /// `alg` differs from the algorithm the selected key is pinned to.
    AlgorithmMismatch,
    /// Signature does not verify.
    InvalidSignature,
    /// `exp` is past (beyond skew).
    TokenExpired,
    /// `nbf` or `iat` is in the future (beyond skew).
    TokenNotYetValid,
    /// `iss` is not the key's issuer.
    InvalidIssuer,
    /// `aud` names none of the issuer's audiences.
    InvalidAudience,
    /// Header `typ` is not accepted.
    InvalidTokenType,
    /// A required claim is absent.
    MissingClaim,
    /// A claim that becomes a header has unsafe characters.
    InvalidClaim,
    /// Token, session, subject or key revoked.
    Revoked,
    /// API key fails the format or checksum check.
    MalformedApiKey,
    /// No key with this digest.
    UnknownApiKey,
    /// Key past its expiry.
    ApiKeyExpired,
    // 403
    /// The route's access is `deny`, or no rule matched under default deny.
    RouteDenied,
    /// Required role missing.
    InsufficientRole,
    /// Required scope missing.
    InsufficientScope,
    /// Identity belongs to another app.
    WrongApp,
    /// A guest tried an unsafe method.
    GuestReadOnly,
    /// The client IP is banned after repeated lockouts.
    Banned,
    // 429
    /// A rate limit's quota is spent.
    RateLimited,
    /// The client IP is locked out after repeated violations.
    LockedOut,
    // 402 (or 429, per `credits.exhausted_status`)
    /// The paying account's credits are spent (or it has no account).
    CreditsExhausted,
    /// The API key's remaining uses are spent.
    UsesExhausted,
    // 503
    /// The filter cannot decide and the failure mode is closed.
    Unavailable,
}

/// A `WWW-Authenticate` error code (RFC 6750 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl Reason {
    /// Every reason, for defining one metric each at configure time.
    pub const ALL: [Reason; 34] = {
        use Reason::*;
        [
            InvalidPath,
            DuplicateCredential,
            ConflictingCredentials,
            MalformedCredential,
            MissingCredentials,
            CredentialNotAccepted,
            MalformedToken,
            TokenTooLarge,
            UnsupportedAlgorithm,
            UnknownKey,
            AlgorithmMismatch,
            InvalidSignature,
            TokenExpired,
            TokenNotYetValid,
            InvalidIssuer,
            InvalidAudience,
            InvalidTokenType,
            MissingClaim,
            InvalidClaim,
            Revoked,
            MalformedApiKey,
            UnknownApiKey,
            ApiKeyExpired,
            RouteDenied,
            InsufficientRole,
            InsufficientScope,
            WrongApp,
            GuestReadOnly,
            Banned,
            RateLimited,
            LockedOut,
            CreditsExhausted,
            UsesExhausted,
            Unavailable,
        ]
    };

    /// HTTP status.
    pub fn status(self) -> u16 {
        use Reason::*;
        match self {
            InvalidPath | DuplicateCredential | ConflictingCredentials | MalformedCredential => 400,
            RouteDenied | InsufficientRole | InsufficientScope | WrongApp | GuestReadOnly | Banned => 403,
            RateLimited | LockedOut => 429,
            CreditsExhausted | UsesExhausted => 402,
            Unavailable => 503,
            _ => 401,
        }
    }

    /// Stable slug used in the problem `type` and in metric names.
    pub fn slug(self) -> &'static str {
        use Reason::*;
        match self {
            InvalidPath => "invalid-path",
            DuplicateCredential => "duplicate-credential",
            ConflictingCredentials => "conflicting-credentials",
            MalformedCredential => "malformed-credential",
            MissingCredentials => "missing-credentials",
            CredentialNotAccepted => "credential-not-accepted",
            MalformedToken => "malformed-token",
            TokenTooLarge => "token-too-large",
            UnsupportedAlgorithm => "unsupported-algorithm",
            UnknownKey => "unknown-key",
            AlgorithmMismatch => "algorithm-mismatch",
            InvalidSignature => "invalid-signature",
            TokenExpired => "token-expired",
            TokenNotYetValid => "token-not-yet-valid",
            InvalidIssuer => "invalid-issuer",
            InvalidAudience => "invalid-audience",
            InvalidTokenType => "invalid-token-type",
            MissingClaim => "missing-claim",
            InvalidClaim => "invalid-claim",
            Revoked => "revoked",
            MalformedApiKey => "malformed-api-key",
            UnknownApiKey => "unknown-api-key",
            ApiKeyExpired => "api-key-expired",
            RouteDenied => "route-denied",
            InsufficientRole => "insufficient-role",
            InsufficientScope => "insufficient-scope",
            WrongApp => "wrong-app",
            GuestReadOnly => "guest-read-only",
            Banned => "banned",
            RateLimited => "rate-limited",
            LockedOut => "locked-out",
            CreditsExhausted => "credits-exhausted",
            UsesExhausted => "key-uses-exhausted",
            Unavailable => "unavailable",
        }
    }

    /// Human-readable title (constant per type, as RFC 9457 asks).
    pub fn title(self) -> &'static str {
        use Reason::*;
        match self {
            InvalidPath => "Invalid request path",
            DuplicateCredential => "Credential header sent more than once",
            ConflictingCredentials => "More than one credential sent",
            MalformedCredential => "Malformed credential header",
            MissingCredentials => "Authentication required",
            CredentialNotAccepted => "Credential type not accepted on this route",
            MalformedToken => "Malformed token",
            TokenTooLarge => "Token too large",
            UnsupportedAlgorithm => "Token algorithm not accepted",
            UnknownKey => "Token signed by an unknown key",
            AlgorithmMismatch => "Token algorithm does not match its key",
            InvalidSignature => "Invalid token signature",
            TokenExpired => "Token expired",
            TokenNotYetValid => "Token not yet valid",
            InvalidIssuer => "Token issuer not trusted",
            InvalidAudience => "Token audience not accepted",
            InvalidTokenType => "Token type not accepted",
            MissingClaim => "Token lacks a required claim",
            InvalidClaim => "Token claim has invalid characters",
            Revoked => "Credential revoked",
            MalformedApiKey => "Malformed API key",
            UnknownApiKey => "Invalid API key",
            ApiKeyExpired => "API key expired",
            RouteDenied => "Access to this route is denied",
            InsufficientRole => "Missing required role",
            InsufficientScope => "Missing required scope",
            WrongApp => "Credential belongs to another app",
            GuestReadOnly => "Guests may only read",
            Banned => "Client banned",
            RateLimited => "Too many requests",
            LockedOut => "Client locked out after repeated violations",
            CreditsExhausted => "Credits exhausted",
            UsesExhausted => "API key has no uses left",
            Unavailable => "Authorization unavailable",
        }
    }

    fn challenge(self) -> Challenge {
        match self.status() {
            400 => Challenge::InvalidRequest,
            403 if !matches!(self, Reason::RouteDenied | Reason::Banned) => Challenge::InsufficientScope,
            401 if self == Reason::MissingCredentials => Challenge::None,
            401 => Challenge::InvalidToken,
            _ => Challenge::None,
        }
    }
}

/// A refusal: the reason plus what the renderer needs to explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub reason: Reason,
    /// Matched route name, if any.
    pub route: Option<String>,
    /// Scopes the route requires, advertised on 403 `insufficient_scope`.
    pub required_scopes: Vec<String>,
    /// Extra response headers (`Retry-After`, `RateLimit`…).
    pub headers: Vec<(String, String)>,
    /// What each rate-limit rule did before the refusal (for metrics).
    pub limit_events: Vec<(crate::ratelimit::RuleId, crate::ratelimit::RuleEvent)>,
}

/// A response the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body (problem+json).
    pub body: String,
}

/// Escapes a value for a quoted-string in `WWW-Authenticate`.
fn quoted(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect()
}

impl Denial {
    /// A denial with no route context.
    pub fn new(reason: Reason) -> Self {
        Self { reason, route: None, required_scopes: Vec::new(), headers: Vec::new(), limit_events: Vec::new() }
    }

    /// The `WWW-Authenticate` value, if the status calls for one.
    pub fn www_authenticate(&self, realm: &str) -> Option<String> {
        let realm = quoted(realm);
        let status = self.reason.status();
        if !matches!(status, 400 | 401 | 403) || matches!(self.reason, Reason::RouteDenied | Reason::Banned) {
            return None;
        }
        Some(match self.reason.challenge() {
            Challenge::None => format!("Bearer realm=\"{realm}\""),
            Challenge::InvalidRequest => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{}\"",
                self.reason.title()
            ),
            Challenge::InvalidToken => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                self.reason.title()
            ),
            Challenge::InsufficientScope if !self.required_scopes.is_empty() => format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                quoted(&self.required_scopes.join(" "))
            ),
            Challenge::InsufficientScope => format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\""),
        })
    }

    /// Renders status, headers and problem+json body.
    pub fn render(&self, realm: &str, details: ProblemDetails) -> LocalResponse {
        let reason = self.reason;
        let mut body = serde_json::Map::new();
        body.insert("type".into(), format!("urn:meshgate:problem:{}", reason.slug()).into());
        body.insert("title".into(), reason.title().into());
        body.insert("status".into(), reason.status().into());
        if details == ProblemDetails::Full {
            if let Some(route) = &self.route {
                body.insert("route".into(), route.clone().into());
            }
            if !self.required_scopes.is_empty() && reason == Reason::InsufficientScope {
                body.insert("required_scopes".into(), self.required_scopes.clone().into());
            }
        }
        let mut headers = vec![
            ("content-type".to_owned(), "application/problem+json".to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        if let Some(challenge) = self.www_authenticate(realm) {
            headers.push(("www-authenticate".to_owned(), challenge));
        }
        headers.extend(self.headers.iter().cloned());
        LocalResponse { status: reason.status(), headers, body: serde_json::Value::Object(body).to_string() }
    }
}
