//! Route policies and authorization.
//!
//! [`CompiledPolicy::authorize`] turns "who is asking" into a [`Permit`] or
//! the exact [`Reason`] for refusing: 401 when there is no acceptable
//! identity, 403 when the identity is known but lacks what the route needs.

use crate::config::ConfigError;
use crate::denial::Reason;
use crate::identity::Identity;
use meshgate_wire::config::{Access, CredentialKind, Policy};

/// Credential kinds accepted when a policy does not say.
const DEFAULT_KINDS: [CredentialKind; 4] =
    [CredentialKind::Jwt, CredentialKind::ApiKey, CredentialKind::Service, CredentialKind::Admin];

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Access mode.
    pub access: Access,
    roles_any: Vec<String>,
    roles_all: Vec<String>,
    /// Scopes all required (also advertised in `WWW-Authenticate`).
    pub scopes: Vec<String>,
    apps: Vec<String>,
    kinds: Vec<CredentialKind>,
    guest: bool,
}

/// Proof that a request passed its route's policy.
#[derive(Debug)]
pub struct Permit<'a> {
    /// The identity to inject, `None` for anonymous access to a public route.
    pub identity: Option<&'a Identity>,
}

fn check_names(list: &[String], field: &str) -> Result<(), ConfigError> {
    for (i, name) in list.iter().enumerate() {
        if !crate::identity::is_header_safe_token(name) {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                "must be non-empty without whitespace, commas or control characters",
            ));
        }
    }
    Ok(())
}

/// Whether `method` cannot change state (RFC 9110 safe methods we allow
/// guests to use).
pub fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

impl CompiledPolicy {
    /// Validates a policy; `field` names it in errors.
    pub fn compile(policy: &Policy, field: &str) -> Result<Self, ConfigError> {
        check_names(&policy.roles_any, &format!("{field}.roles_any"))?;
        check_names(&policy.roles_all, &format!("{field}.roles_all"))?;
        check_names(&policy.scopes, &format!("{field}.scopes"))?;
        check_names(&policy.apps, &format!("{field}.apps"))?;
        let mut kinds = policy.credentials.clone().unwrap_or_else(|| DEFAULT_KINDS.to_vec());
        if policy.guest && !kinds.contains(&CredentialKind::Guest) {
            kinds.push(CredentialKind::Guest);
        }
        if kinds.contains(&CredentialKind::Guest) && !policy.guest {
            return Err(ConfigError::new(
                format!("{field}.credentials"),
                "lists 'guest' but the policy does not set 'guest: true'",
            ));
        }
        if kinds.is_empty() && policy.access == Access::Authenticated {
            return Err(ConfigError::new(format!("{field}.credentials"), "accepts no credential"));
        }
        Ok(Self {
            access: policy.access,
            roles_any: policy.roles_any.clone(),
            roles_all: policy.roles_all.clone(),
            scopes: policy.scopes.clone(),
            apps: policy.apps.clone(),
            kinds,
            guest: policy.guest,
        })
    }

    /// The default-deny policy used when nothing matches.
    pub fn deny() -> Self {
        Self {
            access: Access::Deny,
            roles_any: Vec::new(),
            roles_all: Vec::new(),
            scopes: Vec::new(),
            apps: Vec::new(),
            kinds: Vec::new(),
            guest: false,
        }
    }

    /// Whether this route considers `X-Guest-ID` at all.
    pub fn allows_guests(&self) -> bool {
        self.guest
    }

    /// Whether `kind` is accepted here.
    pub fn accepts(&self, kind: CredentialKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Decides whether `identity` may pass.
    pub fn authorize<'a>(&self, identity: Option<&'a Identity>, method: &str) -> Result<Permit<'a>, Reason> {
        match self.access {
            Access::Deny => return Err(Reason::RouteDenied),
            Access::Public => return Ok(Permit { identity }),
            Access::Authenticated => {}
        }
        let Some(id) = identity else { return Err(Reason::MissingCredentials) };
        if !self.accepts(id.method) {
            return Err(Reason::CredentialNotAccepted);
        }
        if id.method == CredentialKind::Guest && !is_safe_method(method) {
            return Err(Reason::GuestReadOnly);
        }
        let has = |role: &String| id.roles.iter().any(|r| r == role);
        if !self.roles_any.is_empty() && !self.roles_any.iter().any(has) {
            return Err(Reason::InsufficientRole);
        }
        if !self.roles_all.iter().all(has) {
            return Err(Reason::InsufficientRole);
        }
        if !self.scopes.iter().all(|s| id.scopes.iter().any(|x| x == s)) {
            return Err(Reason::InsufficientScope);
        }
        if !self.apps.is_empty() && !id.app_id.as_ref().is_some_and(|app| self.apps.contains(app)) {
            return Err(Reason::WrongApp);
        }
        Ok(Permit { identity: Some(id) })
    }
}
