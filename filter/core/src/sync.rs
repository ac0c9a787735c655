//! The state pushed by the control plane's sync feed, and the rules for
//! applying it: versions only move forward, a delta applies only on top of
//! the version it was computed from, and a response is taken whole or not
//! at all (every record is validated by building the engine from it before
//! it replaces the last good state).

use crate::config::{CompiledConfig, ConfigError};
use crate::engine::Engine;
use crate::jwk;
use crate::jwt::VerifyKey;
use crate::keystore::{KeyEntry, KeyKindTag};
use meshgate_wire::config::KeyRecord;
use meshgate_wire::sync::{Ban, Revocation, RevocationKind, SigningKey, SyncKind, SyncResponse};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Why a feed response was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Not newer than what is held (duplicate or out of order): ignored.
    #[error("version {got} is not newer than {have}")]
    Stale {
        /// Version held.
        have: u64,
        /// Version received.
        got: u64,
    },
    /// A delta computed from another version than the one held.
    #[error("delta from {since:?} does not apply on top of {have}")]
    BaseMismatch {
        /// Version held.
        have: u64,
        /// The delta's base.
        since: Option<u64>,
    },
    /// Malformed JSON, or a record that does not validate.
    #[error("invalid sync response: {0}")]
    Invalid(String),
}

impl From<ConfigError> for SyncError {
    fn from(e: ConfigError) -> Self {
        Self::Invalid(format!("{}: {}", e.field, e.message))
    }
}

/// Everything the feed has delivered, as of `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncedState {
    /// Version held (0: nothing yet).
    pub version: u64,
    signing_keys: BTreeMap<String, SigningKey>,
    keys: [BTreeMap<String, KeyRecord>; 3],
    revocations: BTreeMap<(u8, String), Revocation>,
    bans: BTreeMap<String, u64>,
}

const KINDS: [KeyKindTag; 3] = [KeyKindTag::Api, KeyKindTag::Service, KeyKindTag::Admin];

fn kind_code(kind: RevocationKind) -> u8 {
    match kind {
        RevocationKind::Token => 0,
        RevocationKind::Session => 1,
        RevocationKind::User => 2,
        RevocationKind::Key => 3,
    }
}

impl SyncedState {
    /// Parses and applies a response body, returning the new state.
    pub fn apply_bytes(&self, body: &[u8], now: u64) -> Result<Self, SyncError> {
        let response: SyncResponse = serde_json::from_slice(body).map_err(|e| SyncError::Invalid(e.to_string()))?;
        self.apply(response, now)
    }

    /// Applies a response, returning the new state (`self` is untouched).
    pub fn apply(&self, response: SyncResponse, now: u64) -> Result<Self, SyncError> {
        if response.version <= self.version {
            return Err(SyncError::Stale { have: self.version, got: response.version });
        }
        let mut next = match response.kind {
            SyncKind::Snapshot => Self::default(),
            SyncKind::Delta if response.since == Some(self.version) => self.clone(),
            SyncKind::Delta => return Err(SyncError::BaseMismatch { have: self.version, since: response.since }),
        };
        next.version = response.version;
        for kid in &response.removed_signing_keys {
            next.signing_keys.remove(kid);
        }
        for key in response.signing_keys {
            let kid = key.jwk.kid.clone().ok_or_else(|| SyncError::Invalid("a signing key has no kid".into()))?;
            next.signing_keys.insert(kid, key);
        }
        for digest in &response.removed_keys {
            for table in &mut next.keys {
                table.remove(digest);
            }
        }
        for (table, records) in
            next.keys.iter_mut().zip([response.api_keys, response.service_keys, response.admin_keys])
        {
            for record in records {
                table.insert(record.digest.to_ascii_lowercase(), record);
            }
        }
        for revocation in response.revocations {
            if revocation.kind == RevocationKind::User && revocation.not_before.is_none() {
                return Err(SyncError::Invalid(format!("user revocation of {} has no not_before", revocation.id)));
            }
            next.revocations.insert((kind_code(revocation.kind), revocation.id.clone()), revocation);
        }
        for ban in response.bans {
            next.bans.insert(ban.ip, ban.until);
        }
        next.revocations.retain(|_, r| r.until >= now);
        next.bans.retain(|_, until| *until >= now);
        Ok(next)
    }

    /// The whole state as one snapshot response (what the polling worker
    /// publishes for the others).
    pub fn snapshot(&self) -> SyncResponse {
        let [api, service, admin] = &self.keys;
        SyncResponse {
            version: self.version,
            kind: SyncKind::Snapshot,
            since: None,
            signing_keys: self.signing_keys.values().cloned().collect(),
            removed_signing_keys: Vec::new(),
            api_keys: api.values().cloned().collect(),
            service_keys: service.values().cloned().collect(),
            admin_keys: admin.values().cloned().collect(),
            removed_keys: Vec::new(),
            revocations: self.revocations.values().cloned().collect(),
            bans: self.bans.iter().map(|(ip, until)| Ban { ip: ip.clone(), until: *until }).collect(),
        }
    }

    /// The snapshot as JSON bytes, for publishing.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        // Serializing plain data structures with string keys cannot fail.
        serde_json::to_vec(&self.snapshot()).unwrap_or_default()
    }

    /// Number of keys, revocations and signing keys held.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.keys.iter().map(BTreeMap::len).sum(), self.revocations.len(), self.signing_keys.len())
    }

    /// Builds the engine for this state on top of the static configuration.
    /// Fails (and the state must then be discarded) if any record is
    /// invalid. Signing keys of issuers the filter does not trust are
    /// skipped: their tokens are refused as `unknown-key`.
    pub fn engine(&self, config: Arc<CompiledConfig>) -> Result<Engine, SyncError> {
        let mut engine = Engine::from_shared(config);
        for (kid, key) in &self.signing_keys {
            let field = format!("signing_keys[{kid}]");
            let material = jwk::compile(&key.jwk, &field)?;
            if let Some(issuer) = engine.keyring.issuers.iter().position(|i| i.issuer == key.issuer) {
                engine.keyring.keys.insert(kid.clone(), VerifyKey { issuer, material });
            }
        }
        for (kind, table) in KINDS.iter().zip(&self.keys) {
            for (digest, record) in table {
                engine.keys.insert(*kind, KeyEntry::compile(record, &format!("keys[{digest}]"))?);
            }
        }
        for r in self.revocations.values() {
            match r.kind {
                RevocationKind::Token => engine.revocations.revoke_token(r.id.clone(), r.until),
                RevocationKind::Session => engine.revocations.revoke_session(r.id.clone(), r.until),
                RevocationKind::User => {
                    engine.revocations.revoke_subject(r.id.clone(), r.not_before.unwrap_or(r.until), r.until)
                }
                RevocationKind::Key => engine.revocations.revoke_key(r.id.clone(), r.until),
            }
        }
        engine.bans = self.bans.iter().map(|(ip, until)| (ip.clone(), *until)).collect::<HashMap<_, _>>();
        engine.sync_version = self.version;
        Ok(engine)
    }
}
