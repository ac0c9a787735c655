//! The binary form of synced key and revocation records, as they sit in the
//! published shards (see [`super::layout`]).
//!
//! A shard is a plain concatenation of records, each prefixed with its
//! length so a reader can step over records it does not want without
//! decoding them. All integers are little-endian; strings are a `u16`
//! length and UTF-8 bytes. Nothing here trusts its input: a truncated or
//! garbled shard decodes to "no more records", never to a panic.
//!
//! Key record (≈ 60 bytes + strings; JSON on the wire is ≈ 280):
//! `len u16 · digest [32] · kind u8 · expires_at u64 (0: none) · limit u32 ·
//! window u32 (0: none) · id · subject · app_id ("" : none) · n u8 · roles ·
//! n u8 · scopes`.
//!
//! Revocation record (≈ 20 bytes + id): `len u16 · kind u8 · until u64 ·
//! not_before u64 (0: none) · id`.

use crate::apikey::ApiKeyDigest;
use crate::keystore::{KeyEntry, KeyKindTag};
use meshgate_wire::config::KeyRecord;
use meshgate_wire::sync::RevocationKind;

/// Longest string a record holds (ids, subjects, roles, scopes).
pub const MAX_STRING: usize = u16::MAX as usize;
/// Most roles or scopes a key record holds.
pub const MAX_LIST: usize = u8::MAX as usize;

/// Why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TooLarge(pub &'static str);

struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) -> Result<(), TooLarge> {
        let len = u16::try_from(s.len()).map_err(|_| TooLarge("a string of a synced record exceeds 65535 bytes"))?;
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn list(&mut self, items: &[String]) -> Result<(), TooLarge> {
        let n = u8::try_from(items.len()).map_err(|_| TooLarge("a synced key has more than 255 roles or scopes"))?;
        self.u8(n);
        items.iter().try_for_each(|s| self.str(s))
    }
}

/// Appends one length-prefixed record written by `body`.
fn framed(out: &mut Vec<u8>, body: impl FnOnce(&mut Out<'_>) -> Result<(), TooLarge>) -> Result<(), TooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    let len = body(&mut Out(out)).and_then(|()| {
        u16::try_from(out.len() - start - 2).map_err(|_| TooLarge("a synced record exceeds 65535 bytes"))
    });
    match len {
        Ok(len) => {
            out[start..start + 2].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

fn kind_byte(kind: KeyKindTag) -> u8 {
    match kind {
        KeyKindTag::Api => 0,
        KeyKindTag::Service => 1,
        KeyKindTag::Admin => 2,
    }
}

fn kind_of(byte: u8) -> Option<KeyKindTag> {
    Some(match byte {
        0 => KeyKindTag::Api,
        1 => KeyKindTag::Service,
        2 => KeyKindTag::Admin,
        _ => return None,
    })
}

/// The byte a revocation kind is stored as.
pub fn revocation_byte(kind: RevocationKind) -> u8 {
    kind.code()
}

/// Appends a key record from a compiled entry (the tests' round trips;
/// the feed encodes from the wire record: [`write_key_record`]).
#[cfg(test)]
pub fn write_key(out: &mut Vec<u8>, kind: KeyKindTag, entry: &KeyEntry) -> Result<(), TooLarge> {
    let fields = KeyFields {
        digest: &entry.digest,
        expires_at: entry.expires_at,
        rate_limit: entry.rate_limit,
        id: &entry.id,
        subject: &entry.subject,
        app_id: entry.app_id.as_deref(),
        roles: &entry.roles,
        scopes: &entry.scopes,
    };
    write_key_fields(out, kind, &fields)
}

/// Appends the record of a feed key that [`KeyEntry::validate`] accepted,
/// straight from the wire record (no [`KeyEntry`] copy in between).
pub fn write_key_record(
    out: &mut Vec<u8>,
    kind: KeyKindTag,
    digest: &ApiKeyDigest,
    rate_limit: Option<(u32, u32)>,
    record: &KeyRecord,
) -> Result<(), TooLarge> {
    let fields = KeyFields {
        digest,
        expires_at: record.expires_at,
        rate_limit,
        id: &record.id,
        subject: &record.subject,
        app_id: record.app_id.as_deref(),
        roles: &record.roles,
        scopes: &record.scopes,
    };
    write_key_fields(out, kind, &fields)
}

/// What a key record holds, borrowed.
struct KeyFields<'a> {
    digest: &'a ApiKeyDigest,
    expires_at: Option<u64>,
    rate_limit: Option<(u32, u32)>,
    id: &'a str,
    subject: &'a str,
    app_id: Option<&'a str>,
    roles: &'a [String],
    scopes: &'a [String],
}

fn write_key_fields(out: &mut Vec<u8>, kind: KeyKindTag, k: &KeyFields<'_>) -> Result<(), TooLarge> {
    framed(out, |o| {
        o.0.extend_from_slice(k.digest.as_bytes());
        o.u8(kind_byte(kind));
        o.u64(k.expires_at.unwrap_or(0));
        let (limit, window) = k.rate_limit.unwrap_or((0, 0));
        o.u32(limit);
        o.u32(window);
        o.str(k.id)?;
        o.str(k.subject)?;
        o.str(k.app_id.unwrap_or(""))?;
        o.list(k.roles)?;
        o.list(k.scopes)
    })
}

/// A revocation as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRevocation<'a> {
    /// Kind byte ([`revocation_byte`]).
    pub kind: u8,
    /// Unix seconds after which the entry can be dropped.
    pub until: u64,
    /// For subjects: tokens issued before this are revoked (0: none).
    pub not_before: u64,
    /// The revoked id.
    pub id: &'a str,
}

/// Appends a revocation record.
pub fn write_revocation(out: &mut Vec<u8>, r: &StoredRevocation<'_>) -> Result<(), TooLarge> {
    framed(out, |o| {
        o.u8(r.kind);
        o.u64(r.until);
        o.u64(r.not_before);
        o.str(r.id)
    })
}

/// A cursor over bytes that fails soft.
struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).and_then(|b| b.try_into().ok()).map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).ok()
    }
    fn list(&mut self) -> Option<Vec<String>> {
        let n = self.u8()?;
        (0..n).map(|_| self.str().map(str::to_owned)).collect()
    }
}

/// The records of a shard, each as its raw bytes (without the length).
pub fn records(shard: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = In(shard);
    std::iter::from_fn(move || {
        let len = usize::from(rest.u16()?);
        rest.take(len)
    })
}

/// The digest a key record is stored under (cheap: no decoding).
pub fn key_digest(record: &[u8]) -> Option<ApiKeyDigest> {
    record.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(ApiKeyDigest::from_bytes)
}

/// Decodes a key record.
pub fn read_key(record: &[u8]) -> Option<(KeyKindTag, KeyEntry)> {
    let digest = key_digest(record)?;
    let mut r = In(record.get(32..)?);
    let kind = kind_of(r.u8()?)?;
    let expires_at = Some(r.u64()?).filter(|&e| e != 0);
    let (limit, window) = (r.u32()?, r.u32()?);
    let id = r.str()?.to_owned();
    let subject = r.str()?.to_owned();
    let app_id = Some(r.str()?).filter(|a| !a.is_empty()).map(str::to_owned);
    let roles = r.list()?;
    let scopes = r.list()?;
    let entry = KeyEntry {
        digest,
        id,
        subject,
        app_id,
        roles,
        scopes,
        expires_at,
        rate_limit: (window != 0).then_some((limit, window)),
        identity: None,
    };
    Some((kind, entry))
}

/// Decodes a revocation record.
pub fn read_revocation(record: &[u8]) -> Option<StoredRevocation<'_>> {
    let mut r = In(record);
    let kind = r.u8()?;
    let until = r.u64()?;
    let not_before = r.u64()?;
    let id = r.str()?;
    Some(StoredRevocation { kind, until, not_before, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> KeyEntry {
        KeyEntry {
            digest: ApiKeyDigest::from_bytes([7; 32]),
            id: "key_1".into(),
            subject: "user-1".into(),
            app_id: Some("shop".into()),
            roles: vec!["admin".into()],
            scopes: vec!["read".into(), "write".into()],
            expires_at: Some(1_900_000_000),
            rate_limit: Some((10, 60)),
            identity: None,
        }
    }

    #[test]
    fn records_round_trip_and_garbage_ends_the_walk() -> Result<(), TooLarge> {
        let mut shard = Vec::new();
        write_key(&mut shard, KeyKindTag::Service, &entry())?;
        let mut bare = entry();
        (bare.app_id, bare.expires_at, bare.rate_limit, bare.roles, bare.scopes) = (None, None, None, vec![], vec![]);
        write_key(&mut shard, KeyKindTag::Api, &bare)?;
        let decoded: Vec<_> = records(&shard).filter_map(read_key).collect();
        assert_eq!(decoded, vec![(KeyKindTag::Service, entry()), (KeyKindTag::Api, bare)]);

        let mut revs = Vec::new();
        let r = StoredRevocation { kind: 2, until: 9, not_before: 5, id: "u-1" };
        write_revocation(&mut revs, &r)?;
        assert_eq!(records(&revs).filter_map(read_revocation).collect::<Vec<_>>(), vec![r]);

        // Every truncation decodes to fewer records, never a panic.
        for cut in 0..shard.len() {
            assert!(records(&shard[..cut]).filter_map(read_key).count() < 2);
        }
        let mut huge = entry();
        huge.id = "x".repeat(70_000);
        let before = shard.len();
        assert!(write_key(&mut shard, KeyKindTag::Api, &huge).is_err());
        assert_eq!(shard.len(), before, "a refused record leaves nothing behind");
        Ok(())
    }
}
