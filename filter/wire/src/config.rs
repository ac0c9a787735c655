//! The filter's plugin configuration: the JSON placed in Envoy's
//! `configuration` field (or an Istio `WasmPlugin`'s `pluginConfig`).
//!
//! These types only describe the JSON. Validation (key material, header
//! names, route templates, cross-field rules) happens once, when
//! `meshgate-core` compiles them at `on_configure`. Every struct rejects
//! unknown fields so a misspelt option fails loudly instead of being ignored.

use serde::{Deserialize, Serialize};

/// Root of the plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Route rules, tried in order; the first match gives the policy.
    #[serde(default)]
    pub routes: Vec<RouteRule>,
    /// Policy for requests no rule matches. Default: `{"access": "deny"}`
    /// (default deny), so forgetting a route never opens it.
    #[serde(default)]
    pub default_policy: Option<Policy>,
    /// Trusted JWT issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// API keys, service keys and admin keys.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Names of the headers the filter reads credentials from and injects
    /// identity into.
    #[serde(default)]
    pub headers: HeaderNames,
    /// What to do when the filter cannot decide (host call failure,
    /// unusable state). Default `closed`: answer 503.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// How much a denial body explains. Default `full`.
    #[serde(default)]
    pub problem_details: ProblemDetails,
    /// `realm` in `WWW-Authenticate`. Default `meshgate`.
    #[serde(default)]
    pub realm: Option<String>,
    /// Security headers added to every response. Default: none.
    #[serde(default)]
    pub security_headers: SecurityHeaders,
    /// Path matching options.
    #[serde(default)]
    pub paths: PathOptions,
    /// Rate limits and abuse controls. Default: none.
    #[serde(default)]
    pub rate_limits: crate::ratelimit::RateLimitConfig,
    /// The sync feed from the control plane. Absent: static config only.
    #[serde(default)]
    pub sync: Option<SyncConfig>,
    /// Credits and usage metering (needs `sync`). Absent: nothing metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<crate::credits::CreditsConfig>,
}

/// Where and how the filter follows the control plane's sync feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Envoy cluster of the control plane.
    pub cluster: String,
    /// `:authority` of the feed requests. Default `meshgate-control-plane`.
    #[serde(default)]
    pub authority: Option<String>,
    /// Feed path. Default `/api/v1/sync`.
    #[serde(default)]
    pub path: Option<String>,
    /// The filter's credential: an API key with scope `sync`.
    pub api_key: String,
    /// Long-poll wait asked of the control plane, seconds. Default 30.
    #[serde(default)]
    pub wait_secs: Option<u32>,
    /// Age of the last successful contact after which the state counts as
    /// stale, seconds. Default 300.
    #[serde(default)]
    pub max_staleness_secs: Option<u32>,
    /// What to do while stale. Default `serve` (keep the last good state).
    #[serde(default)]
    pub on_stale: StalePolicy,
    /// Largest feed response accepted, bytes. Default 64 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

/// Behaviour once the synced state is older than `max_staleness_secs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StalePolicy {
    /// Keep serving with the last good state (default).
    #[default]
    Serve,
    /// Answer 503 until the feed is reachable again.
    FailClosed,
}

/// One route rule: a match and the policy applied when it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// A name for logs, metrics and problem bodies. Default: `route-<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Host to match (`:authority` without port, case-insensitive): exact
    /// (`api.example.com`) or one leading wildcard label (`*.example.com`).
    /// Absent: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path to match, against the normalized path.
    pub path: PathMatch,
    /// Methods to match (upper-case). Absent or empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The policy for matching requests.
    pub policy: Policy,
}

/// How a rule matches the normalized path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// The whole path equals this.
    Exact(String),
    /// The path equals this or continues with `/` after it: `/admin`
    /// matches `/admin` and `/admin/x`, never `/administrator`.
    Prefix(String),
    /// Segments compared one by one: `{name}` matches any one non-empty
    /// segment; a final `{*}` matches one or more remaining segments.
    Template(String),
}

/// Who may pass a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `public`, `authenticated` (default) or `deny`.
    #[serde(default)]
    pub access: Access,
    /// The identity must hold at least one of these roles.
    #[serde(default)]
    pub roles_any: Vec<String>,
    /// The identity must hold all of these roles.
    #[serde(default)]
    pub roles_all: Vec<String>,
    /// The identity must hold all of these scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The identity's `app_id` must be one of these.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Credential kinds accepted on this route. Default: `jwt`, `api_key`,
    /// `service`, `admin`. A guest needs `guest: true` as well.
    #[serde(default)]
    pub credentials: Option<Vec<CredentialKind>>,
    /// Accept `X-Guest-ID` on safe methods (GET, HEAD, OPTIONS) only.
    #[serde(default)]
    pub guest: bool,
}

/// Route access mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone. A valid credential, if sent, still yields identity headers;
    /// an invalid one is ignored (the request proceeds anonymously).
    Public,
    /// A valid identity that meets the policy's requirements.
    #[default]
    Authenticated,
    /// Nobody (403).
    Deny,
}

/// A kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// `Authorization: Bearer <jwt>`.
    Jwt,
    /// `X-API-Key` or `Authorization: Bearer <prefix>_…`.
    ApiKey,
    /// `X-Service-Key`.
    Service,
    /// `X-Admin-Key`.
    Admin,
    /// `X-Guest-ID` (read-only, guest routes only).
    Guest,
}

/// A trusted JWT issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; at least one is required (a token for
    /// another service must not pass here).
    pub audiences: Vec<String>,
    /// Verification keys as JWKs (`oct` for HS256, `OKP`/Ed25519,
    /// `EC`/P-256, `RSA`). Each needs a `kid` unique across issuers. May be
    /// empty when the sync feed supplies the issuer's keys.
    #[serde(default)]
    pub keys: Vec<Jwk>,
    /// Algorithms accepted from this issuer. Default: every key's own
    /// algorithm. Each key is still pinned to its own algorithm.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`, in seconds. Default 30.
    #[serde(default)]
    pub clock_skew_secs: Option<u64>,
    /// Largest token accepted, in bytes, checked before decoding.
    /// Default 8192.
    #[serde(default)]
    pub max_token_bytes: Option<usize>,
    /// Accepted header `typ` values (case-insensitive). Default: absent,
    /// `JWT` or `at+jwt`.
    #[serde(default)]
    pub typ: Option<Vec<String>>,
    /// Claims that must be present. `exp` is always required. Default:
    /// `["sub"]`.
    #[serde(default)]
    pub required_claims: Option<Vec<String>>,
}

/// A JSON Web Key (RFC 7517) holding verification material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `oct`, `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// Key id, matched against the token header's `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// Algorithm the key is pinned to (`HS256`, `EdDSA`, `ES256`, `RS256`).
    /// Default: derived from `kty`/`crv` (`oct` → HS256, Ed25519 → EdDSA,
    /// P-256 → ES256, RSA → RS256).
    #[serde(default)]
    pub alg: Option<String>,
    /// Curve for `OKP` (`Ed25519`) and `EC` (`P-256`).
    #[serde(default)]
    pub crv: Option<String>,
    /// base64url secret for `oct`.
    #[serde(default)]
    pub k: Option<String>,
    /// base64url public coordinate for `OKP`/`EC`.
    #[serde(default)]
    pub x: Option<String>,
    /// base64url `y` coordinate for `EC`.
    #[serde(default)]
    pub y: Option<String>,
    /// base64url modulus for `RSA`.
    #[serde(default)]
    pub n: Option<String>,
    /// base64url exponent for `RSA`.
    #[serde(default)]
    pub e: Option<String>,
    /// `sig` if present; `enc` keys are refused.
    #[serde(rename = "use", default)]
    pub use_: Option<String>,
}

/// Static key material, for setups without the sync feed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Prefixes that mark `Authorization: Bearer <prefix>_…` as an API key.
    /// Default `["mg"]`.
    #[serde(default)]
    pub api_key_prefixes: Option<Vec<String>>,
    /// API keys (`X-API-Key` or bearer).
    #[serde(default)]
    pub api_keys: Vec<KeyRecord>,
    /// Service keys (`X-Service-Key`).
    #[serde(default)]
    pub service_keys: Vec<KeyRecord>,
    /// Admin keys (`X-Admin-Key`).
    #[serde(default)]
    pub admin_keys: Vec<KeyRecord>,
    /// Remove key headers (`X-API-Key`, `X-Service-Key`, `X-Admin-Key`, and
    /// `Authorization` carrying an API key) before the request goes
    /// upstream; services see `X-Key-ID` instead. Default true.
    #[serde(default)]
    pub hide_credentials: Option<bool>,
}

/// One key, identified by the SHA-256 digest of its full string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Public key id, injected as `X-Key-ID`.
    pub id: String,
    /// Lower-case hex SHA-256 of the full key string.
    pub digest: String,
    /// Owner (user or service id), injected as `X-User-ID`.
    pub subject: String,
    /// App the key belongs to.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Expiry, unix seconds. Absent: no expiry (static keys only).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The key's own limit, applied to every request made with it (on top
    /// of the configured rules). Absent: none.
    #[serde(default)]
    pub rate_limit: Option<KeyRateLimit>,
}

/// A limit attached to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRateLimit {
    /// Requests per window (≥ 1).
    pub limit: u32,
    /// Window in seconds (1–86400).
    pub window_secs: u32,
}

/// Header names. All names are matched case-insensitively; defaults shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderNames {
    /// `x-api-key`
    #[serde(default)]
    pub api_key: Option<String>,
    /// `x-service-key`
    #[serde(default)]
    pub service_key: Option<String>,
    /// `x-admin-key`
    #[serde(default)]
    pub admin_key: Option<String>,
    /// `x-guest-id` (read as a credential, then re-injected once validated)
    #[serde(default)]
    pub guest_id: Option<String>,
    /// `x-user-id`
    #[serde(default)]
    pub user_id: Option<String>,
    /// `x-user-roles`
    #[serde(default)]
    pub user_roles: Option<String>,
    /// `x-user-scopes`
    #[serde(default)]
    pub user_scopes: Option<String>,
    /// `x-app-id`
    #[serde(default)]
    pub app_id: Option<String>,
    /// `x-auth-method`
    #[serde(default)]
    pub auth_method: Option<String>,
    /// `x-key-id`
    #[serde(default)]
    pub key_id: Option<String>,
    /// `x-session-id`
    #[serde(default)]
    pub session_id: Option<String>,
}

/// Behaviour when the filter cannot reach a decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Answer 503 (default).
    #[default]
    Closed,
    /// Let the request through without identity headers.
    Open,
}

/// How much a problem+json body explains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemDetails {
    /// `type`, `title`, `status`, plus `route` and `required_scopes`
    /// where they apply (default).
    #[default]
    Full,
    /// `type`, `title`, `status` only.
    Minimal,
}

/// Optional security headers added to every response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security` value, e.g. `max-age=63072000`.
    #[serde(default)]
    pub hsts: Option<String>,
    /// Add `X-Content-Type-Options: nosniff`.
    #[serde(default)]
    pub content_type_options: bool,
    /// `X-Frame-Options` value, e.g. `DENY`.
    #[serde(default)]
    pub frame_options: Option<String>,
    /// `Content-Security-Policy` value.
    #[serde(default)]
    pub csp: Option<String>,
}

/// Path matching options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathOptions {
    /// Compare paths case-insensitively. Default false: `/ADMIN` does not
    /// match a `/admin` rule (and so falls to the default policy).
    #[serde(default)]
    pub case_insensitive: bool,
    /// Largest `:path` accepted, in bytes. Default 8192.
    #[serde(default)]
    pub max_path_bytes: Option<usize>,
    /// Accept `;` path parameters. Default false: `/public/..;/admin` is a
    /// classic bypass against servers that strip parameters before
    /// resolving dot segments, so `;` is refused with 400 unless enabled.
    #[serde(default)]
    pub allow_path_parameters: bool,
}
