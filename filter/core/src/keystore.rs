//! API, service and admin keys, looked up by SHA-256 digest.
//!
//! A presented key is parsed (prefix and checksum: typos never reach the
//! table), hashed, looked up, and the stored digest compared in constant
//! time. The table never holds a plain key.

use crate::apikey::{self, ApiKeyDigest};
use crate::config::ConfigError;
use crate::denial::Reason;
use crate::identity::{Identity, is_header_safe_token};
use crate::revocation::RevocationSource;
use meshgate_wire::config::{CredentialKind, KeyRecord};
use std::collections::HashMap;
use std::sync::Arc;

/// What the table knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The stored digest (compared again in constant time).
    pub digest: ApiKeyDigest,
    /// Public key id.
    pub id: String,
    /// Owner.
    pub subject: String,
    /// App.
    pub app_id: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry (unix seconds).
    pub expires_at: Option<u64>,
    /// The key's own limit `(limit, window_secs)`.
    pub rate_limit: Option<(u32, u32)>,
    /// The identity a verified key yields, built once when the key is added
    /// (requests share it instead of copying strings).
    pub identity: Option<Arc<Identity>>,
}

/// One table per key kind.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    tables: HashMap<KeyKindTag, HashMap<ApiKeyDigest, KeyEntry>>,
}

/// The key kinds with a table of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKindTag {
    /// `X-API-Key` / bearer API key.
    Api,
    /// `X-Service-Key`.
    Service,
    /// `X-Admin-Key`.
    Admin,
}

impl KeyKindTag {
    fn credential(self) -> CredentialKind {
        match self {
            Self::Api => CredentialKind::ApiKey,
            Self::Service => CredentialKind::Service,
            Self::Admin => CredentialKind::Admin,
        }
    }
}

/// Where a key record failed validation (a suffix of its field name) and why.
type Invalid = (String, &'static str);

fn check_token(value: &str, suffix: impl FnOnce() -> String) -> Result<(), Invalid> {
    if is_header_safe_token(value) {
        Ok(())
    } else {
        Err((suffix(), "must be non-empty without whitespace, commas or control characters"))
    }
}

impl KeyEntry {
    /// Checks a key record without copying it: its digest, and its rate
    /// limit as `(limit, window_secs)`. Snapshots hold millions of records,
    /// so nothing is allocated unless the record is invalid.
    pub fn validate(record: &KeyRecord) -> Result<(ApiKeyDigest, Option<(u32, u32)>), Invalid> {
        let digest = ApiKeyDigest::from_hex(&record.digest)
            .ok_or_else(|| (".digest".to_owned(), "must be 64 hex characters (SHA-256)"))?;
        check_token(&record.id, || ".id".to_owned())?;
        check_token(&record.subject, || ".subject".to_owned())?;
        if let Some(app) = &record.app_id {
            check_token(app, || ".app_id".to_owned())?;
        }
        for (i, r) in record.roles.iter().enumerate() {
            check_token(r, || format!(".roles[{i}]"))?;
        }
        for (i, s) in record.scopes.iter().enumerate() {
            check_token(s, || format!(".scopes[{i}]"))?;
        }
        let rate_limit = match record.rate_limit {
            None => None,
            Some(l) if l.limit >= 1 && (1..=86_400).contains(&l.window_secs) => Some((l.limit, l.window_secs)),
            Some(_) => return Err((".rate_limit".to_owned(), "needs limit >= 1 and window_secs 1-86400")),
        };
        Ok((digest, rate_limit))
    }

    /// Validates a key record (errors name `field`) and compiles it.
    pub fn compile(record: &KeyRecord, field: &str) -> Result<Self, ConfigError> {
        let (digest, rate_limit) = Self::validate(record)
            .map_err(|(suffix, message)| ConfigError::new(format!("{field}{suffix}"), message))?;
        Ok(Self {
            identity: None,
            rate_limit,
            digest,
            id: record.id.clone(),
            subject: record.subject.clone(),
            app_id: record.app_id.clone(),
            roles: record.roles.clone(),
            scopes: record.scopes.clone(),
            expires_at: record.expires_at,
        })
    }
}

impl KeyEntry {
    /// The entry with the identity a verified key of `kind` yields, built
    /// once so requests share it instead of copying strings.
    pub fn with_identity(mut self, kind: KeyKindTag) -> Self {
        self.identity = Some(Arc::new(Identity {
            method: kind.credential(),
            subject: self.subject.clone(),
            roles: self.roles.clone(),
            scopes: self.scopes.clone(),
            app_id: self.app_id.clone(),
            key_id: Some(self.id.clone()),
            session_id: None,
            guest_id: None,
            key_limit: self.rate_limit,
        }));
        self
    }

    /// Checks a found key at `now`: revocation, then expiry.
    pub fn check(&self, revocations: &dyn RevocationSource, now: u64) -> Result<Arc<Identity>, Reason> {
        if revocations.key_revoked(&self.id) {
            return Err(Reason::Revoked);
        }
        if self.expires_at.is_some_and(|exp| now >= exp) {
            return Err(Reason::ApiKeyExpired);
        }
        self.identity.clone().ok_or(Reason::UnknownApiKey)
    }
}

impl KeyStore {
    /// Adds (or replaces) a key.
    pub fn insert(&mut self, kind: KeyKindTag, entry: KeyEntry) {
        let entry = entry.with_identity(kind);
        self.tables.entry(kind).or_default().insert(entry.digest, entry);
    }

    /// The key of `kind` with this digest (compared in constant time).
    pub fn get(&self, kind: KeyKindTag, digest: &ApiKeyDigest) -> Option<&KeyEntry> {
        self.tables.get(&kind).and_then(|t| t.get(digest)).filter(|e| e.digest.ct_eq(digest))
    }

    /// Number of keys of `kind`.
    pub fn len(&self, kind: KeyKindTag) -> usize {
        self.tables.get(&kind).map_or(0, HashMap::len)
    }

    /// Verifies a presented key of `kind` at `now` (format, checksum,
    /// lookup, revocation, expiry).
    pub fn verify(
        &self,
        kind: KeyKindTag,
        presented: &str,
        revocations: &dyn RevocationSource,
        now: u64,
    ) -> Result<Arc<Identity>, Reason> {
        apikey::parse(presented).map_err(|_| Reason::MalformedApiKey)?;
        self.get(kind, &apikey::digest(presented)).ok_or(Reason::UnknownApiKey)?.check(revocations, now)
    }
}
