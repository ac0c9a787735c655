//! Credentials for tests: HS256 JWTs minted with `hmac`/`sha2`, unsigned and tampered tokens,
//! and SHA-256 digests of API keys.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Base64url without padding, as JWTs use it.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// HMAC-SHA256 of `data` under `secret`.
pub fn hmac_sha256(secret: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data`, raw bytes.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// A JWT with this exact header and claims, signed HS256 with `secret` (the header's `alg` is
/// taken as given, so alg-confusion tokens can be minted too).
pub fn sign_raw(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let sig = hmac_sha256(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&sig))
}

/// An HS256 JWT with `kid` and `claims`.
pub fn hs256(kid: &str, claims: &Value, secret: &[u8]) -> String {
    sign_raw(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}), claims, secret)
}

/// An `alg: none` token with an empty signature.
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!("{}.{}.", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// The same token with one character of its signature changed.
pub fn tamper_signature(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    // The second-to-last character carries full signature bits in base64url; flip it.
    let at = chars.len().saturating_sub(2);
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// The same token with its claims replaced (signature kept: must fail verification).
pub fn swap_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64url(claims.to_string().as_bytes()), parts.get(2).unwrap_or(&""))
}

/// A meshgate API key `<prefix>_<base58(random32 ‖ checksum4)>`, where the checksum is the first
/// four bytes of SHA-256 over `"meshgate-apikey:" ‖ prefix ‖ "_" ‖ random` — written from the
/// format's documentation, independently of the filter's code, so the two cross-check.
pub fn api_key(prefix: &str, random: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"meshgate-apikey:");
    h.update(prefix.as_bytes());
    h.update(b"_");
    h.update(random);
    let sum = h.finalize();
    let mut raw = random.to_vec();
    raw.extend_from_slice(&sum[..4]);
    format!("{prefix}_{}", bs58::encode(raw).into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs256_matches_rfc7515_shape() {
        let t = hs256("k1", &json!({"sub": "u"}), b"secret");
        assert_eq!(t.split('.').count(), 3);
        assert_ne!(tamper_signature(&t), t);
        assert_eq!(sha256_hex(b"abc").len(), 64);
    }
}
