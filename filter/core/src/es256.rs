//! ES256 (ECDSA over P-256 with SHA-256) verification with a per-key table.
//!
//! Checking a signature computes `u1·G + u2·Q` (G the curve's generator, Q
//! the issuer's key). The generic path (p256's `VerifyingKey`) builds a small
//! table for Q on every call and walks ~256 point doublings. An issuer's key
//! lives for hours, so this keeps a fixed-base table for Q, built on the key's
//! first use (`TABLE_WINDOWS` rows of the multiples 1..=8 of `256^i·Q`, in
//! affine form so each addition is a cheaper mixed one), and one such table for
//! G shared by all keys: both products become one sum of ~130 table entries and
//! four doublings. Everything here is public data (keys, messages,
//! signatures), so variable-time arithmetic is fine.
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
use primeorder::{Radix16Decomposition, Radix16Digits};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// Rows of the fixed-base table: one per byte of a scalar, plus one for the
/// carry of the signed radix-16 recoding.
const TABLE_WINDOWS: usize = 33;

/// An ES256 public key, ready to verify signatures.
#[derive(Clone)]
pub struct Es256Key {
    point: ProjectivePoint,
    /// Built on the first verification (about one signature's worth of work,
    /// 17 KiB), so a key that never signs a token costs nothing; shared by
    /// the key's clones (a config's keyring is cloned into its engine).
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

/// Row i holds 1..=8 times `256^i · P`, in affine form.
struct Table {
    rows: Box<[[AffinePoint; 8]]>,
}

impl Table {
    fn new(point: ProjectivePoint) -> Self {
        let mut multiples = Vec::with_capacity(TABLE_WINDOWS * 8);
        let mut base = point;
        for _ in 0..TABLE_WINDOWS {
            let mut multiple = base;
            for _ in 0..8 {
                multiples.push(multiple);
                multiple += base;
            }
            for _ in 0..8 {
                base = base.double();
            }
        }
        // One field inversion for the whole table (Montgomery's trick).
        let mut affine = vec![AffinePoint::IDENTITY; multiples.len()];
        ProjectivePoint::batch_normalize(&multiples, &mut affine);
        let rows = affine.chunks_exact(8).map(|row| std::array::from_fn(|j| row[j])).collect();
        Self { rows }
    }

    /// `Σ k · P` over the pairs, from their tables. A scalar's signed
    /// radix-16 digits d_j (in `[-8, 8]`) weigh `16^j`: even j = 2i read row
    /// i directly; odd j = 2i + 1 read row i into a second sum that is
    /// multiplied by 16 (four doublings) once at the end.
    fn sum(pairs: &[(&Table, &Scalar)]) -> ProjectivePoint {
        let mut even = ProjectivePoint::IDENTITY;
        let mut odd = ProjectivePoint::IDENTITY;
        for (table, k) in pairs {
            let digits = Radix16Decomposition::<Radix16Digits<NistP256>>::new(*k);
            for (i, row) in table.rows.iter().enumerate() {
                add_digit(&mut even, row, digits[2 * i]);
                if 2 * i + 1 < 2 * TABLE_WINDOWS - 1 {
                    add_digit(&mut odd, row, digits[2 * i + 1]);
                }
            }
        }
        for _ in 0..4 {
            odd = odd.double();
        }
        even + odd
    }
}

/// `acc += d · row[0]` for a digit d in `[-8, 8]`.
fn add_digit(acc: &mut ProjectivePoint, row: &[AffinePoint; 8], d: i8) {
    let Some(entry) = row.get(usize::from(d.unsigned_abs()).wrapping_sub(1)) else { return };
    if d < 0 {
        *acc += &-entry;
    } else {
        *acc += entry;
    }
}
