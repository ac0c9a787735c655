//! The revocation set, consulted before any signature work.
//!
//! Every entry carries `until`: the latest time at which what it revokes
//! could still be accepted (the token's or key's own expiry). Entries past
//! `until` are dropped by [`Revocations::prune`], so the set stays bounded
//! by what is live. Lookups are hash lookups: O(1) however large the set.

use std::collections::HashMap;

/// Anything that can say whether a token or key is revoked: the in-memory
/// [`Revocations`], the synced set in the process-wide store, or both.
pub trait RevocationSource {
    /// Whether a token with these (unverified) claims is revoked. A subject
    /// with a not-before revokes tokens without `iat` too: their age is
    /// unknown.
    fn token_revoked(&self, jti: Option<&str>, sid: Option<&str>, sub: Option<&str>, iat: Option<u64>) -> bool;
    /// Whether a key id is revoked.
    fn key_revoked(&self, key_id: &str) -> bool;
}

/// Revoked token ids, sessions, subjects (not-before) and keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// `jti` → until.
    tokens: HashMap<String, u64>,
    /// `sid` → until.
    sessions: HashMap<String, u64>,
    /// `sub` → (not_before, until): tokens issued before `not_before` are
    /// revoked.
    subjects: HashMap<String, (u64, u64)>,
    /// API/service/admin key id → until.
    keys: HashMap<String, u64>,
}

impl Revocations {
    /// Revokes one token by `jti`.
    pub fn revoke_token(&mut self, jti: impl Into<String>, until: u64) {
        self.tokens.insert(jti.into(), until);
    }

    /// Revokes every token of a session.
    pub fn revoke_session(&mut self, sid: impl Into<String>, until: u64) {
        self.sessions.insert(sid.into(), until);
    }

    /// Revokes every token of `sub` issued before `not_before`.
    pub fn revoke_subject(&mut self, sub: impl Into<String>, not_before: u64, until: u64) {
        self.subjects.insert(sub.into(), (not_before, until));
    }

    /// Revokes a key by id.
    pub fn revoke_key(&mut self, key_id: impl Into<String>, until: u64) {
        self.keys.insert(key_id.into(), until);
    }

    /// Drops entries whose `until` is before `now`.
    pub fn prune(&mut self, now: u64) {
        self.tokens.retain(|_, until| *until >= now);
        self.sessions.retain(|_, until| *until >= now);
        self.subjects.retain(|_, (_, until)| *until >= now);
        self.keys.retain(|_, until| *until >= now);
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.tokens.len() + self.sessions.len() + self.subjects.len() + self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RevocationSource for Revocations {
    fn token_revoked(&self, jti: Option<&str>, sid: Option<&str>, sub: Option<&str>, iat: Option<u64>) -> bool {
        jti.is_some_and(|j| self.tokens.contains_key(j))
            || sid.is_some_and(|s| self.sessions.contains_key(s))
            || sub.and_then(|s| self.subjects.get(s)).is_some_and(|(nbf, _)| iat.is_none_or(|iat| iat < *nbf))
    }

    fn key_revoked(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_pruning() {
        let mut r = Revocations::default();
        r.revoke_token("t1", 100);
        r.revoke_session("s1", 200);
        r.revoke_subject("u1", 50, 300);
        r.revoke_key("k1", 400);
        assert!(r.token_revoked(Some("t1"), None, None, None));
        assert!(r.token_revoked(None, Some("s1"), None, None));
        assert!(r.token_revoked(None, None, Some("u1"), Some(49)));
        assert!(!r.token_revoked(None, None, Some("u1"), Some(50)));
        assert!(r.token_revoked(None, None, Some("u1"), None));
        assert!(!r.token_revoked(Some("t2"), Some("s2"), Some("u2"), Some(1)));
        assert!(r.key_revoked("k1"));
        r.prune(250);
        assert_eq!(r.len(), 2);
        assert!(!r.token_revoked(Some("t1"), None, None, None));
        assert!(r.key_revoked("k1"));
    }
}
