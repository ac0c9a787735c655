//! The sync feed: `GET /api/v1/sync?since=<version>&wait=<seconds>`, from
//! the control plane to every filter.
//!
//! A response brings a filter from `since` (a delta) or from nothing (a
//! snapshot) to `version`. Versions are the control plane's change counter:
//! monotonic, and a filter never applies a response whose `version` is not
//! newer than what it holds. A delta whose `since` differs from the
//! filter's version is ignored, and the filter asks again with its own
//! version (the control plane answers a snapshot when `since` is too old).
//!
//! Long-poll: when nothing is newer than `since`, the control plane holds
//! the request up to `wait` seconds and answers at once when a change
//! commits; if `wait` runs out it answers a delta with no changes and
//! `version == since`.

use crate::config::{Jwk, KeyRecord};
use serde::{Deserialize, Serialize};

/// Largest response body a filter accepts by default (bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One feed response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncResponse {
    /// The version this response brings the filter to.
    pub version: u64,
    /// Snapshot (replace everything) or delta (apply on top of `since`).
    pub kind: SyncKind,
    /// For a delta: the version it applies on top of.
    #[serde(default)]
    pub since: Option<u64>,
    /// Signing keys added or changed (a snapshot: all of them).
    #[serde(default)]
    pub signing_keys: Vec<SigningKey>,
    /// `kid`s of signing keys removed (deltas only).
    #[serde(default)]
    pub removed_signing_keys: Vec<String>,
    /// API keys added or changed, by digest.
    #[serde(default)]
    pub api_keys: Vec<KeyRecord>,
    /// Service keys added or changed.
    #[serde(default)]
    pub service_keys: Vec<KeyRecord>,
    /// Admin keys added or changed.
    #[serde(default)]
    pub admin_keys: Vec<KeyRecord>,
    /// Digests (hex) of keys of any kind removed (deltas only). Revoked keys
    /// are also listed as `key` revocations so a filter that still holds
    /// them refuses them.
    #[serde(default)]
    pub removed_keys: Vec<String>,
    /// Revocations added (a snapshot: all live ones).
    #[serde(default)]
    pub revocations: Vec<Revocation>,
    /// Client IP bans added (a snapshot: all live ones).
    #[serde(default)]
    pub bans: Vec<Ban>,
    /// Credit balances (a snapshot: every account; a delta: those that
    /// changed). Omitted when empty, so filters that predate credits keep
    /// parsing responses without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credits: Vec<crate::credits::CreditState>,
    /// Snapshots in pages (asked for with `limit`): the cursor of the next
    /// page (`after=<next>`), absent on the last page. The snapshot's
    /// version is the first page's; later pages may hold newer rows, which
    /// the deltas that follow repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// First page of a snapshot: how many keys the whole snapshot holds
    /// (lets the filter size its tables before the rest arrives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_keys: Option<u64>,
    /// First page of a snapshot: how many revocations it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_revocations: Option<u64>,
}

/// Snapshot or delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    /// The complete state at `version`.
    #[default]
    Snapshot,
    /// Changes from `since` to `version`.
    Delta,
}

/// A verification key the control plane signs (or will sign) with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    /// The issuer (`iss`) whose tokens it verifies; must match a configured
    /// issuer of the filter, whose audiences and options then apply.
    pub issuer: String,
    /// The key, with `kid` and `alg`. HS256 secrets appear only here, never
    /// in JWKS.
    pub jwk: Jwk,
}

/// A revocation, with the time until which it matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// What is revoked.
    pub kind: RevocationKind,
    /// `jti`, `sid`, subject (`sub`), or key id.
    pub id: String,
    /// Unix seconds after which the entry can be dropped.
    pub until: u64,
    /// For `user`: tokens issued (`iat`) before this are revoked.
    #[serde(default)]
    pub not_before: Option<u64>,
}

/// Where a revocation sits in a snapshot: FNV-1a over the kind's
/// [`RevocationKind::code`] and the id, finished with a 64-bit mixer (FNV
/// alone spreads short ids poorly). The control plane sends a paged
/// snapshot's revocations in this order and the filter shards them by its
/// top bits, so consecutive pages fill consecutive shards and each shard is
/// written about once per snapshot, whatever the number of revocations.
pub fn revocation_hash(kind_code: u8, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&kind_code).chain(id.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Kinds of revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One access token, by `jti`.
    Token,
    /// Every token of a session, by `sid`.
    Session,
    /// Every token of a user issued before `not_before`, by `sub`.
    User,
    /// An API, service or admin key, by id.
    Key,
}

impl RevocationKind {
    /// The byte that stands for the kind in [`revocation_hash`] and in the
    /// filter's binary records.
    pub fn code(self) -> u8 {
        match self {
            Self::Token => 0,
            Self::Session => 1,
            Self::User => 2,
            Self::Key => 3,
        }
    }
}

/// A banned client IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    /// The IP (IPv6 as a /64 prefix is allowed: `2001:db8:1:2::/64`).
    pub ip: String,
    /// Unix seconds when the ban ends.
    pub until: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed values: the control plane's `bucket` column, bench/scale.py's
    /// bulk loader and every filter version must agree on them.
    #[test]
    fn revocation_hash_is_stable() {
        assert_eq!(revocation_hash(RevocationKind::Token.code(), "scale-jti-7"), 0xbcc3_9e5c_3d16_d87a);
        assert_eq!(revocation_hash(RevocationKind::Key.code(), "key_123"), 0x0dd2_830f_300e_cb4d);
        assert_eq!(revocation_hash(RevocationKind::Session.code(), ""), 0x34e9_f27a_2a0e_313f);
    }
}
