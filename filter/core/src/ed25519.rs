//! EdDSA (Ed25519) verification with a per-key table.
//!
//! Checking a signature (R, s) on M under key A computes
//! `[s]B - [k]A - R` with `k = SHA-512(R || A || M) mod ℓ`. ed25519-compact
//! (what jwt-simple calls) does it with ~256 doublings per call. An issuer's
//! key lives for hours, so this keeps a fixed-base table for -A
//! (curve25519-dalek's radix-16 `EdwardsBasepointTable`, built on the key's
//! first use) beside dalek's static table for B: both products become ~64
//! table additions each.
//!
//! Acceptance is exactly ed25519-compact's (differentially tested against it
//! in `tests/signatures.rs`): A and R canonical encodings of curve points of
//! more than small order, s canonical (below ℓ), and the cofactored equation
//! — `[s]B - [k]A - R` of small order.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable as _;
use sha2::{Digest, Sha512};
use std::sync::{Arc, OnceLock};

/// An Ed25519 public key, ready to verify signatures.
#[derive(Clone)]
pub struct Ed25519Key {
    bytes: [u8; 32],
    /// `-A`.
    minus_a: EdwardsPoint,
    /// Built on the first verification (30 KiB), so a key that never signs
    /// a token costs nothing; shared by the key's clones.
    table: Arc<OnceLock<EdwardsBasepointTable>>,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Key").field("table_built", &self.table.get().is_some()).finish_non_exhaustive()
    }
}

/// A point from its canonical 32-byte encoding (y below p, no "negative
/// zero" x), of more than small order.
fn decode(bytes: [u8; 32]) -> Option<EdwardsPoint> {
    let point = CompressedEdwardsY(bytes).decompress()?;
    // dalek reduces a non-canonical y and accepts a sign bit on x = 0; the
    // round trip refuses both, as ed25519-compact does.
    (point.compress().0 == bytes && !point.is_small_order()).then_some(point)
}

impl Ed25519Key {
    /// A key from its 32 bytes; `None` for another length, or bytes that
    /// are no canonically encoded curve point, or a point of small order
    /// (which would verify forgeries; jwt-simple refuses it too).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        let point = decode(bytes)?;
        Some(Self { bytes, minus_a: -point, table: Arc::default() })
    }

    /// Whether `signature` (`R || s`, 64 bytes) signs `message` under this
    /// key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some((r_bytes, s_bytes)) = signature.split_at_checked(32) else { return false };
        let (Ok(r_bytes), Ok(s_bytes)) = (<[u8; 32]>::try_from(r_bytes), <[u8; 32]>::try_from(s_bytes)) else {
            return false;
        };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else { return false };
        let Some(r) = decode(r_bytes) else { return false };
        let mut hash = Sha512::new();
        hash.update(r_bytes);
        hash.update(self.bytes);
        hash.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        let table = self.table.get_or_init(|| EdwardsBasepointTable::create(&self.minus_a));
        let sum = ED25519_BASEPOINT_TABLE.mul_base(&s) + table.mul_base(&k) - r;
        sum.is_small_order()
    }
}
