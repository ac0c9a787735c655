//! ES256 (ECDSA over P-256 with SHA-256) verification with a per-key table.
//!
//! Checking a signature computes `u1·G + u2·Q` (G the curve's generator, Q
//! the issuer's key). The generic path (p256's `VerifyingKey`) builds a small
//! table for Q on every call and walks ~256 point doublings. An issuer's key
//! lives for hours, so this keeps a fixed-base table for Q, built on the key's
//! first use, and one for G shared by all keys: row i holds the multiples
//! `1..=32` of `2^(6i)·P`, in affine form so each addition is a cheaper mixed
//! one. A scalar recoded into 43 signed 6-bit digits then picks one entry per
//! row, so both products are one sum of ~85 table entries and no doublings
//! (p256's generic path: ~256 doublings and ~100 additions). A table is
//! 99 KiB and costs about ten verifications to build. Everything here is
//! public data (keys, messages, signatures), so variable-time arithmetic is
//! fine.
//!
//! Acceptance is exactly p256's (differentially tested against it in
//! `tests/signatures.rs`): r and s in `[1, n)`, high s accepted (JWS does not
//! normalise s), `x(u1·G + u2·Q) mod n == r`.

use p256::elliptic_curve::group::Curve as _;
use p256::elliptic_curve::group::Group;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::sec1::{FromSec1Point, Sec1Point};
use p256::elliptic_curve::{Field, PrimeField};
use p256::{AffinePoint, FieldBytes, NistP256, ProjectivePoint, Scalar};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// Bits per signed digit of a recoded scalar.
const WINDOW: usize = 6;
/// Digits of a recoded scalar, one table row each: 256 bits plus the carry.
const ROWS: usize = 257usize.div_ceil(WINDOW);
/// Entries per row: digits run over `[-32, 31]`, and a negative one reads
/// the entry of its absolute value, negated.
const ENTRIES: usize = 1 << (WINDOW - 1);

/// An ES256 public key, ready to verify signatures.
#[derive(Clone)]
pub struct Es256Key {
    point: ProjectivePoint,
    /// Built on the first verification (99 KiB, ~25 signatures' worth of
    /// work), so a key that never signs a token costs nothing; shared by the
    /// key's clones (a config's keyring is cloned into its engine).
    table: Arc<OnceLock<Table>>,
}

impl std::fmt::Debug for Es256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Es256Key").field("table_built", &self.table.get().is_some()).finish_non_exhaustive()
    }
}

impl Es256Key {
    /// A key from its SEC1 encoding (uncompressed `04 || x || y`, or
    /// compressed); `None` when the bytes are not a point on P-256 or encode
    /// the point at infinity.
    pub fn from_sec1(bytes: &[u8]) -> Option<Self> {
        let encoded = Sec1Point::<NistP256>::from_bytes(bytes).ok()?;
        let affine = Option::<AffinePoint>::from(AffinePoint::from_sec1_point(&encoded))?;
        let point = ProjectivePoint::from(affine);
        if bool::from(point.is_identity()) {
            return None;
        }
        Some(Self { point, table: Arc::default() })
    }

    /// Whether `signature` (JWS form: `r || s`, 32 bytes each, big endian)
    /// signs `message` under this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some((r, s)) = split_signature(signature) else { return false };
        let digest: [u8; 32] = Sha256::digest(message).into();
        let z = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(digest));
        let Some(w) = Option::<Scalar>::from(s.invert_vartime()) else { return false };
        let u1 = z * w;
        let u2 = r * w;
        let key_table = self.table.get_or_init(|| Table::new(self.point));
        let sum = Table::sum(&[(generator_table(), &u1), (key_table, &u2)]);
        // The point at infinity has x = 0 here, which never equals r ≠ 0.
        <Scalar as Reduce<FieldBytes>>::reduce(&sum.to_affine().x()) == r
    }
}

/// r and s, each in `[1, n)`.
fn split_signature(signature: &[u8]) -> Option<(Scalar, Scalar)> {
    let (r, s) = signature.split_at_checked(32)?;
    if s.len() != 32 {
        return None;
    }
    let scalar = |bytes: &[u8]| -> Option<Scalar> {
        let repr = FieldBytes::try_from(bytes).ok()?;
        Option::<Scalar>::from(Scalar::from_repr(repr)).filter(|v| !bool::from(v.is_zero()))
    };
    Some((scalar(r)?, scalar(s)?))
}

fn generator_table() -> &'static Table {
    static GENERATOR: OnceLock<Table> = OnceLock::new();
    GENERATOR.get_or_init(|| Table::new(ProjectivePoint::GENERATOR))
}

/// Row i holds 1..=32 times `2^(6i) · P`, in affine form.
struct Table {
    rows: Box<[[AffinePoint; ENTRIES]]>,
}

impl Table {
    fn new(point: ProjectivePoint) -> Self {
        let mut multiples = Vec::with_capacity(ROWS * ENTRIES);
        let mut base = point;
        for _ in 0..ROWS {
            let mut multiple = base;
            for _ in 0..ENTRIES {
                multiples.push(multiple);
                multiple += base;
            }
            for _ in 0..WINDOW {
                base = base.double();
            }
        }
        // One field inversion for the whole table (Montgomery's trick).
        let mut affine = vec![AffinePoint::IDENTITY; multiples.len()];
        ProjectivePoint::batch_normalize(&multiples, &mut affine);
        let rows = affine.chunks_exact(ENTRIES).map(|row| std::array::from_fn(|j| row[j])).collect();
        Self { rows }
    }

    /// `Σ k · P` over the pairs, from their tables: digit i of k weighs
    /// `2^(6i)`, which row i already carries.
    fn sum(pairs: &[(&Table, &Scalar)]) -> ProjectivePoint {
        let mut sum = ProjectivePoint::IDENTITY;
        for (table, k) in pairs {
            for (row, digit) in table.rows.iter().zip(signed_digits(k)) {
                let Some(entry) = row.get(usize::from(digit.unsigned_abs()).wrapping_sub(1)) else { continue };
                if digit < 0 {
                    sum += &-entry;
                } else {
                    sum += entry;
                }
            }
        }
        sum
    }
}

/// k as `Σ d_i · 2^(6i)` with every d_i in `[-32, 31]`: 6-bit chunks from
/// the least significant end, a chunk of 32 or more borrowing 64 from the
/// next one. k < 2^256, so the last of the 43 digits (4 bits plus a carry)
/// never carries out.
fn signed_digits(k: &Scalar) -> [i8; ROWS] {
    let big_endian = k.to_repr();
    let bit = |i: usize| -> i16 { if i >= 256 { 0 } else { i16::from((big_endian[31 - i / 8] >> (i % 8)) & 1) } };
    let mut digits = [0i8; ROWS];
    let mut carry = 0i16;
    for (row, digit) in digits.iter_mut().enumerate() {
        let chunk = (0..WINDOW).fold(0i16, |acc, b| acc | (bit(row * WINDOW + b) << b));
        let value = chunk + carry;
        let half = ENTRIES as i16;
        carry = i16::from(value >= half);
        // In [-32, 31] by construction, so the narrowing is exact.
        *digit = (value - carry * 2 * half) as i8;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ d_i · 2^(6i)` back as a scalar.
    fn recombine(digits: &[i8]) -> Scalar {
        let step = Scalar::from(1u64 << WINDOW);
        digits.iter().rev().fold(Scalar::ZERO, |acc, d| {
            let magnitude = Scalar::from(u64::from(d.unsigned_abs()));
            acc * step + if *d < 0 { -magnitude } else { magnitude }
        })
    }

    #[test]
    fn signed_digits_recombine_to_the_scalar_and_stay_in_range() {
        let mut scalars = vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, Scalar::from(31u64), Scalar::from(32u64)];
        scalars.push(Scalar::from(u64::MAX));
        let mut x = Scalar::from(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..500 {
            x = x * x + Scalar::from(0x2545_f491u64);
            scalars.push(x);
            scalars.push(-x);
        }
        for k in scalars {
            let digits = signed_digits(&k);
            assert!(digits.iter().all(|d| (-32..=31).contains(d)), "{digits:?}");
            assert_eq!(recombine(&digits), k);
        }
    }

    #[test]
    fn a_table_sum_is_a_scalar_multiplication() {
        let g = ProjectivePoint::GENERATOR;
        let q = g * Scalar::from(0x1234_5678u64);
        let (tg, tq) = (Table::new(g), Table::new(q));
        for (a, b) in [(3u64, 5u64), (0, 7), (u64::MAX, 1), (0, 0)] {
            let (a, b) = (-Scalar::from(a), Scalar::from(b));
            assert_eq!(Table::sum(&[(&tg, &a), (&tq, &b)]), g * a + q * b);
        }
    }
}
