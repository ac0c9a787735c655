//! How one API key and one revocation are written into a feed body: the
//! fields of `meshgate_wire::config::KeyRecord` and
//! `meshgate_wire::sync::Revocation`, serialised from values borrowed from
//! the database row (a page of 20 000 keys would otherwise build 20 000
//! records of owned strings only to encode and drop them). Shared by the
//! sqlx reader in [`super::feed`] and the SQLite one in [`super::direct`];
//! the tests parse every answer with the wire types, which refuse unknown
//! fields.

use meshgate_wire::config::KeyRateLimit;
use meshgate_wire::sync::RevocationKind;
use serde::{Serialize, Serializer};

use crate::error::{ApiError, ApiResult};

/// Window of the per-key limit: the control plane stores requests per minute.
const KEY_LIMIT_WINDOW_SECS: u32 = 60;

/// One live key, as `KeyRecord`.
#[derive(Debug, Serialize)]
pub struct KeyOut<'a> {
    id: &'a str,
    digest: &'a str,
    subject: &'a str,
    app_id: Option<&'a str>,
    /// API keys carry scopes only, as when the control plane itself
    /// authenticates them: roles belong to a user's tokens.
    roles: [&'a str; 0],
    #[serde(serialize_with = "words")]
    scopes: &'a str,
    expires_at: Option<u64>,
    rate_limit: Option<KeyRateLimit>,
}

impl<'a> KeyOut<'a> {
    /// From the `api_keys` columns: `scopes` space-separated, `rate_limit`
    /// in requests per minute.
    pub fn new(
        id: &'a str,
        digest: &'a str,
        owner_id: &'a str,
        app_id: Option<&'a str>,
        scopes: &'a str,
        rate_limit: Option<i64>,
        expires_at: i64,
    ) -> Self {
        Self {
            id,
            digest,
            subject: owner_id,
            app_id,
            roles: [],
            scopes,
            expires_at: Some(unix(expires_at)),
            rate_limit: rate_limit.map(|limit| KeyRateLimit {
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                window_secs: KEY_LIMIT_WINDOW_SECS,
            }),
        }
    }
}

fn words<S: Serializer>(scopes: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(scopes.split_whitespace())
}

/// One revocation, as `Revocation`.
#[derive(Debug, Serialize)]
pub struct RevocationOut<'a> {
    /// What is revoked.
    pub kind: RevocationKind,
    /// `jti`, `sid`, subject or key id.
    pub id: &'a str,
    /// Unix seconds after which it no longer matters.
    pub until: u64,
    /// For a user: tokens issued before this are revoked.
    pub not_before: Option<u64>,
}

/// The wire kind for a `revocations.kind` column value (`None`: unknown,
/// skipped).
pub fn revocation_kind(column: &str) -> Option<RevocationKind> {
    crate::revocations::Kind::parse(column).map(crate::revocations::Kind::wire)
}

/// Unix seconds from a BIGINT column (negative: 0).
pub fn unix(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

/// Appends `value` as JSON.
pub fn item<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> ApiResult<()> {
    serde_json::to_writer(out, value).map_err(|e| ApiError::Internal(format!("encode: {e}")))
}

/// Appends `value` as the next element of a JSON array whose `[` is
/// already written (`first`: no comma before it).
pub fn element<T: Serialize + ?Sized>(out: &mut Vec<u8>, first: &mut bool, value: &T) -> ApiResult<()> {
    if !std::mem::take(first) {
        out.push(b',');
    }
    item(out, value)
}

#[cfg(test)]
mod tests {
    use meshgate_wire::config::KeyRecord;
    use meshgate_wire::sync::Revocation;

    use super::*;

    #[test]
    fn a_key_encodes_as_the_wire_record() {
        let mut out = Vec::new();
        let key =
            KeyOut::new("key_1", "ab", "usr_1", Some("app_1"), "a:read  b:write", Some(5_000_000_000), 1_700_000_000);
        item(&mut out, &key).unwrap();
        let record: KeyRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(record.id, "key_1");
        assert_eq!(record.subject, "usr_1");
        assert_eq!(record.app_id.as_deref(), Some("app_1"));
        assert_eq!(record.scopes, ["a:read", "b:write"]);
        assert!(record.roles.is_empty());
        assert_eq!(record.expires_at, Some(1_700_000_000));
        assert_eq!(record.rate_limit, Some(KeyRateLimit { limit: u32::MAX, window_secs: 60 }));

        let mut out = Vec::new();
        item(&mut out, &KeyOut::new("k", "d", "u", None, "", None, -5)).unwrap();
        let record: KeyRecord = serde_json::from_slice(&out).unwrap();
        assert!(record.scopes.is_empty() && record.app_id.is_none() && record.rate_limit.is_none());
        assert_eq!(record.expires_at, Some(0));
    }

    #[test]
    fn revocations_encode_as_the_wire_type_in_an_array() {
        let (mut out, mut first) = (b"[".to_vec(), true);
        for (id, not_before) in [("t\"1", None), ("u", Some(7))] {
            let r = RevocationOut { kind: RevocationKind::User, id, until: 9, not_before };
            element(&mut out, &mut first, &r).unwrap();
        }
        out.push(b']');
        let parsed: Vec<Revocation> = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].id, "t\"1");
        assert_eq!(parsed[1].not_before, Some(7));
    }
}
