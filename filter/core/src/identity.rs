//! Verified identities and the headers that carry them upstream.
//!
//! Services behind the mesh trust `X-User-ID` and friends, so the filter
//! owns those names: every one of them is removed from every request before
//! anything else, and only values taken from a verified credential are put
//! back. Values are checked to be header-safe when the credential is
//! verified, so a claim can never smuggle a second header or a fake list
//! element (a role containing `,`).

use crate::config::ConfigError;
use crate::header_map::Value;
use meshgate_wire::config::{CredentialKind, HeaderNames};

/// Who is asking, once a credential has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// How the identity was established.
    pub method: CredentialKind,
    /// User, service or key owner id (`X-User-ID`); empty for guests.
    pub subject: String,
    /// Roles (`X-User-Roles`, comma-joined).
    pub roles: Vec<String>,
    /// Scopes (`X-User-Scopes`, comma-joined).
    pub scopes: Vec<String>,
    /// App (`X-App-ID`).
    pub app_id: Option<String>,
    /// Key id for API/service/admin keys (`X-Key-ID`).
    pub key_id: Option<String>,
    /// Session id from a JWT `sid` (`X-Session-ID`).
    pub session_id: Option<String>,
    /// Guest id (`X-Guest-ID`).
    pub guest_id: Option<String>,
    /// The key's own limit `(limit, window_secs)`, for keys that have one.
    pub key_limit: Option<(u32, u32)>,
}

/// Whether `value` may appear in a header or a comma-joined list: visible
/// ASCII, no comma, no whitespace. Keeps list headers unambiguous.
pub fn is_header_safe_token(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && value.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Whether `value` may be a single header value: visible ASCII and spaces
/// only (no CR, LF, NUL, or other controls).
pub fn is_header_safe_value(value: &str) -> bool {
    !value.is_empty() && value.len() <= 1024 && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// The method name put in `X-Auth-Method`.
pub fn method_name(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Jwt => "jwt",
        CredentialKind::ApiKey => "api_key",
        CredentialKind::Service => "service",
        CredentialKind::Admin => "admin",
        CredentialKind::Guest => "guest",
    }
}

/// Header names, validated and lower-cased once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// Credential: API key.
    pub api_key: String,
    /// Credential: service key.
    pub service_key: String,
    /// Credential: admin key.
    pub admin_key: String,
    /// Credential and injected: guest id.
    pub guest_id: String,
    /// Injected: user id.
    pub user_id: String,
    /// Injected: roles.
    pub user_roles: String,
    /// Injected: scopes.
    pub user_scopes: String,
    /// Injected: app id.
    pub app_id: String,
    /// Injected: auth method.
    pub auth_method: String,
    /// Injected: key id.
    pub key_id: String,
    /// Injected: session id.
    pub session_id: String,
}

fn header_name(value: Option<&String>, default: &str, field: &str) -> Result<String, ConfigError> {
    let name = value.map_or(default, String::as_str).to_ascii_lowercase();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let reserved = ["authorization", "host", "cookie", "content-length", "transfer-encoding"];
    if name.is_empty() || name.starts_with(':') || !name.bytes().all(token) || reserved.contains(&name.as_str()) {
        return Err(ConfigError::new(format!("headers.{field}"), "must be a valid, non-reserved header name"));
    }
    Ok(name)
}

impl Headers {
    /// Validates configured names, filling defaults.
    pub fn compile(names: &HeaderNames) -> Result<Self, ConfigError> {
        let h = Self {
            api_key: header_name(names.api_key.as_ref(), "x-api-key", "api_key")?,
            service_key: header_name(names.service_key.as_ref(), "x-service-key", "service_key")?,
            admin_key: header_name(names.admin_key.as_ref(), "x-admin-key", "admin_key")?,
            guest_id: header_name(names.guest_id.as_ref(), "x-guest-id", "guest_id")?,
            user_id: header_name(names.user_id.as_ref(), "x-user-id", "user_id")?,
            user_roles: header_name(names.user_roles.as_ref(), "x-user-roles", "user_roles")?,
            user_scopes: header_name(names.user_scopes.as_ref(), "x-user-scopes", "user_scopes")?,
            app_id: header_name(names.app_id.as_ref(), "x-app-id", "app_id")?,
            auth_method: header_name(names.auth_method.as_ref(), "x-auth-method", "auth_method")?,
            key_id: header_name(names.key_id.as_ref(), "x-key-id", "key_id")?,
            session_id: header_name(names.session_id.as_ref(), "x-session-id", "session_id")?,
        };
        let all = h.all();
        for (i, a) in all.iter().enumerate() {
            if all[..i].contains(a) {
                return Err(ConfigError::new("headers", format!("header name '{a}' is used twice")));
            }
        }
        Ok(h)
    }

    fn all(&self) -> [&str; 11] {
        [
            &self.api_key,
            &self.service_key,
            &self.admin_key,
            &self.guest_id,
            &self.user_id,
            &self.user_roles,
            &self.user_scopes,
            &self.app_id,
            &self.auth_method,
            &self.key_id,
            &self.session_id,
        ]
    }

    /// Identity headers the filter owns: always stripped from requests.
    pub fn owned(&self) -> [&str; 8] {
        self.owned_values(None).map(|(name, _)| name)
    }

    /// Key headers removed when credentials are hidden from upstreams.
    pub fn key_headers(&self) -> [&str; 3] {
        [&self.api_key, &self.service_key, &self.admin_key]
    }

    /// Every owned header with the value `identity` gives it, borrowed from
    /// both (`None`: the header is not set, only stripped). A warm request
    /// allocates nothing for them: lists are joined where they are written
    /// (see [`Value`]).
    pub fn owned_values<'h, 'i>(&'h self, identity: Option<&'i Identity>) -> [(&'h str, Option<Value<'i>>); 8] {
        let text = |v: Option<&'i str>| v.map(|v| Value::Bytes(v.as_bytes()));
        let list = |l: &'i [String]| (!l.is_empty()).then_some(Value::List(l));
        let id = identity;
        [
            (&self.auth_method, id.map(|i| Value::Bytes(method_name(i.method).as_bytes()))),
            (&self.user_id, text(id.map(|i| i.subject.as_str()).filter(|s| !s.is_empty()))),
            (&self.user_roles, id.and_then(|i| list(&i.roles))),
            (&self.user_scopes, id.and_then(|i| list(&i.scopes))),
            (&self.app_id, text(id.and_then(|i| i.app_id.as_deref()))),
            (&self.key_id, text(id.and_then(|i| i.key_id.as_deref()))),
            (&self.session_id, text(id.and_then(|i| i.session_id.as_deref()))),
            (&self.guest_id, text(id.and_then(|i| i.guest_id.as_deref()))),
        ]
        .map(|(name, value)| (name.as_str(), value))
    }
}

/// Whether header `name` spells `owned` with `_` for some `-` (ASCII case
/// ignored): a different name to Envoy, the same one to CGI-style servers.
pub fn same_but_underscores(name: &str, owned: &str) -> bool {
    name.len() == owned.len()
        && name.bytes().zip(owned.bytes()).all(|(a, b)| a.eq_ignore_ascii_case(&b) || (a == b'_' && b == b'-'))
}
