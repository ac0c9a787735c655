//! The API key format shared by the control plane (which mints keys) and the
//! filter (which checks them).
//!
//! A key reads `<prefix>_<base58(random32 ‖ checksum4)>`:
//!
//! * the **prefix** (2–16 chars of `[a-z0-9]`) makes a leaked key
//!   recognisable by secret scanners and lets `Authorization: Bearer mg_…`
//!   be told apart from a JWT without parsing it;
//! * the **checksum** (first 4 bytes of SHA-256 over a domain tag, the prefix
//!   and the random bytes) catches typos and truncation before any lookup, so
//!   garbage never costs a table probe;
//! * only the SHA-256 **digest** of the whole key string is stored anywhere.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Number of random bytes in a key.
pub const RANDOM_LEN: usize = 32;
/// Number of checksum bytes appended to the random bytes before encoding.
pub const CHECKSUM_LEN: usize = 4;
/// Longest key string accepted: prefix (16) + `_` + base58 of 36 bytes (≤ 50).
pub const MAX_KEY_LEN: usize = 16 + 1 + 50;
const DOMAIN_TAG: &[u8] = b"meshgate-apikey:";

/// Why a string is not a well-formed meshgate API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyFormatError {
    /// Longer than [`MAX_KEY_LEN`]; rejected before any decoding.
    #[error("API key is too long")]
    TooLong,
    /// No `_` separating prefix and body.
    #[error("API key has no prefix separator")]
    MissingSeparator,
    /// Prefix is not 2–16 characters of `[a-z0-9]`.
    #[error("API key prefix is invalid")]
    InvalidPrefix,
    /// Body is not base58 or does not decode to 36 bytes.
    #[error("API key body is not valid base58 of the right length")]
    InvalidBody,
    /// Checksum does not match: a typo or a truncated key.
    #[error("API key checksum mismatch")]
    ChecksumMismatch,
}

/// A syntactically valid key, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The prefix before `_`, e.g. `mg`.
    pub prefix: &'a str,
}

/// SHA-256 of a whole key string: the only form in which a key is stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeyDigest([u8; 32]);

impl ApiKeyDigest {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as stored and shipped in config and sync records.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        crate::hex::decode_32(text).map(Self)
    }

    /// Constant-time equality, for the final comparison after a map lookup.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for ApiKeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A digest is not secret, but a short form keeps logs readable.
        write!(f, "ApiKeyDigest({}…)", &self.to_hex()[..12])
    }
}

/// Whether `prefix` is a valid key prefix (2–16 chars of `[a-z0-9]`).
pub fn is_valid_prefix(prefix: &str) -> bool {
    (2..=16).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn checksum(prefix: &str, random: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN_TAG);
    hasher.update(prefix.as_bytes());
    hasher.update(b"_");
    hasher.update(random);
    let full = hasher.finalize();
    [full[0], full[1], full[2], full[3]]
}

/// Builds a key from a prefix and 32 random bytes supplied by the caller
/// (the core has no randomness source of its own).
pub fn generate(prefix: &str, random: &[u8; RANDOM_LEN]) -> Result<String, ApiKeyFormatError> {
    if !is_valid_prefix(prefix) {
        return Err(ApiKeyFormatError::InvalidPrefix);
    }
    let mut raw = [0u8; RANDOM_LEN + CHECKSUM_LEN];
    raw[..RANDOM_LEN].copy_from_slice(random);
    raw[RANDOM_LEN..].copy_from_slice(&checksum(prefix, random));
    Ok(format!("{prefix}_{}", bs58::encode(raw).into_string()))
}

/// Checks a key's shape and checksum without any lookup.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, ApiKeyFormatError> {
    if key.len() > MAX_KEY_LEN {
        return Err(ApiKeyFormatError::TooLong);
    }
    let (prefix, body) = key.split_once('_').ok_or(ApiKeyFormatError::MissingSeparator)?;
    if !is_valid_prefix(prefix) {
        return Err(ApiKeyFormatError::InvalidPrefix);
    }
    let mut raw = [0u8; RANDOM_LEN + CHECKSUM_LEN];
    let decoded = bs58::decode(body).onto(&mut raw[..]).map_err(|_| ApiKeyFormatError::InvalidBody)?;
    if decoded != raw.len() {
        return Err(ApiKeyFormatError::InvalidBody);
    }
    let expected = checksum(prefix, &raw[..RANDOM_LEN]);
    if !bool::from(expected.ct_eq(&raw[RANDOM_LEN..])) {
        return Err(ApiKeyFormatError::ChecksumMismatch);
    }
    Ok(ParsedKey { prefix })
}

/// The stored digest of a key: SHA-256 over the whole key string.
pub fn digest(key: &str) -> ApiKeyDigest {
    ApiKeyDigest(Sha256::digest(key.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDOM: [u8; 32] = [7u8; 32];
    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn generated_keys_parse_and_digest_round_trips() -> TestResult {
        let key = generate("mg", &RANDOM)?;
        assert!(key.starts_with("mg_"));
        assert_eq!(parse(&key)?.prefix, "mg");
        let d = digest(&key);
        assert_eq!(ApiKeyDigest::from_hex(&d.to_hex()), Some(d));
        assert!(d.ct_eq(&digest(&key)));
        assert!(!d.ct_eq(&digest("mg_other")));
        Ok(())
    }

    #[test]
    fn typos_and_truncation_fail_the_checksum_or_body() -> TestResult {
        let key = generate("live", &RANDOM)?;
        // Change one base58 character in the body.
        let mut typo: Vec<char> = key.chars().collect();
        let i = key.len() - 3;
        typo[i] = if typo[i] == 'a' { 'b' } else { 'a' };
        let typo: String = typo.into_iter().collect();
        assert!(matches!(parse(&typo), Err(ApiKeyFormatError::ChecksumMismatch | ApiKeyFormatError::InvalidBody)));
        assert_eq!(parse(&key[..key.len() - 1]), Err(ApiKeyFormatError::InvalidBody));
        // The same body under another prefix fails the checksum.
        let (_, body) = key.split_once('_').ok_or("no separator")?;
        assert_eq!(parse(&format!("test_{body}")), Err(ApiKeyFormatError::ChecksumMismatch));
        Ok(())
    }

    #[test]
    fn malformed_keys_are_rejected_with_a_reason() {
        assert_eq!(parse("nounderscore"), Err(ApiKeyFormatError::MissingSeparator));
        assert_eq!(parse("M_abc"), Err(ApiKeyFormatError::InvalidPrefix));
        assert_eq!(parse("mg_0OIl"), Err(ApiKeyFormatError::InvalidBody));
        assert_eq!(parse(&"a".repeat(100)), Err(ApiKeyFormatError::TooLong));
        assert_eq!(generate("BAD", &RANDOM), Err(ApiKeyFormatError::InvalidPrefix));
    }
}
