//! meshgate's ES256 and EdDSA paths (`es256.rs`, `ed25519.rs` signatures,
//! `jwt.rs` claims) against the references they replace: p256's
//! `VerifyingKey` and ed25519-compact for every signature, valid or mangled,
//! and jwt-simple's verification (the HS256 path, same issuer) for every
//! claims case and token shape. They must give the same answers.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::scalar::Scalar as EdScalar;
use jwt_simple::JWTError;
use jwt_simple::prelude::*;
use meshgate_core::denial::Reason;
use meshgate_core::ed25519::Ed25519Key;
use meshgate_core::es256::Es256Key;
use meshgate_core::token_cache::Verified;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use support::*;

/// The group order n, big endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn signing_key(seed: u8) -> SigningKey {
    let bytes = jwt_simple::reexports::ct_codecs::Hex::decode_to_vec(
        "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721",
        None,
    )
    .expect("hex");
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&bytes);
    secret[31] ^= seed;
    SigningKey::from_slice(&secret).expect("secret below n")
}

/// `value` with `delta` added to it (big endian, wrapping).
fn add(value: &[u8], delta: u8) -> Vec<u8> {
    let mut out = value.to_vec();
    let mut carry = u16::from(delta);
    for byte in out.iter_mut().rev() {
        let sum = u16::from(*byte) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    out
}

/// `n - s` (a high-s twin of a valid signature's s).
fn negate(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let diff = i16::from(ORDER[i]) - i16::from(s[i]) - borrow;
        out[i] = diff.rem_euclid(256) as u8;
        borrow = i16::from(diff < 0);
    }
    out
}

/// The signature and messages meshgate's check is asked about, each with
/// p256's answer.
fn mangled(signature: &[u8]) -> Vec<Vec<u8>> {
    let (r, s) = signature.split_at(32);
    let mut cases = vec![
        signature.to_vec(),
        [r, &negate(s)].concat(),
        [&[0u8; 32][..], s].concat(),
        [r, &[0u8; 32][..]].concat(),
        [&ORDER[..], s].concat(),
        [r, &ORDER[..]].concat(),
        [&add(&ORDER, 1)[..], s].concat(),
        [r, &add(&ORDER, 7)[..]].concat(),
        [&[0xff; 32][..], s].concat(),
        [s, r].concat(),
        signature[..63].to_vec(),
        [signature, &[0][..]].concat(),
        Vec::new(),
    ];
    for bit in (0..512).step_by(37) {
        let mut flipped = signature.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        cases.push(flipped);
    }
    cases
}

fn reference(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|sig| key.verify(message, &sig).is_ok())
}

#[test]
fn signatures_are_judged_as_p256_judges_them() {
    let mut accepted = 0;
    let mut checked = 0;
    for seed in 0..6u8 {
        let signer = signing_key(seed);
        let verifying = *signer.verifying_key();
        let sec1 = verifying.to_sec1_point(false);
        let ours = Es256Key::from_sec1(sec1.as_bytes()).expect("a valid key");
        let other = Es256Key::from_sec1(signing_key(seed + 100).verifying_key().to_sec1_point(false).as_bytes())
            .expect("a valid key");
        for len in [0usize, 1, 31, 32, 33, 64, 200, 1000] {
            let message: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed.wrapping_add(3))).collect();
            let signature: Signature = signer.sign(&message);
            let signature = signature.to_bytes().to_vec();
            for candidate in mangled(&signature) {
                let expected = reference(&verifying, &message, &candidate);
                assert_eq!(
                    ours.verify(&message, &candidate),
                    expected,
                    "key {seed}, {len}-byte message, {candidate:02x?}"
                );
                accepted += usize::from(expected);
                checked += 1;
            }
            let mut other_message = message.clone();
            other_message.push(1);
            assert!(!ours.verify(&other_message, &signature), "another message");
            assert!(!other.verify(&message, &signature), "another key");
        }
    }
    // The original and its high-s twin verify (p256 does not normalise s);
    // nothing else does.
    assert_eq!(accepted, 6 * 8 * 2, "of {checked}");
}

#[test]
fn keys_that_are_not_points_are_refused() {
    let good = signing_key(1).verifying_key().to_sec1_point(false).as_bytes().to_vec();
    assert!(Es256Key::from_sec1(&good).is_some());
    let compressed = signing_key(1).verifying_key().to_sec1_point(true).as_bytes().to_vec();
    assert!(Es256Key::from_sec1(&compressed).is_some(), "compressed SEC1 is a valid encoding");
    let mut off_curve = good.clone();
    off_curve[64] ^= 1;
    for bad in [&off_curve[..], &good[..64], &[0u8][..], &[][..], &[4u8; 65][..]] {
        assert!(Es256Key::from_sec1(bad).is_none(), "{bad:02x?}");
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The algorithms with meshgate's own path, and the fixture key of each.
const OWN: [(&str, &str); 2] = [("ES256", "es1"), ("EdDSA", "ed1")];

/// `header` (plus `alg` and `kid`) and `payload`, signed with the fixture
/// key for `alg` (HS256, ES256 or EdDSA).
fn signed(alg: &str, kid: &str, header: &Value, payload: &Value) -> String {
    let mut header = header.clone();
    header["alg"] = json!(alg);
    header["kid"] = json!(kid);
    if alg == "HS256" {
        return hs_raw(&header, payload, HS_SECRET);
    }
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
    let signature = match alg {
        "ES256" => {
            let signer = SigningKey::from_slice(&keys().es.to_bytes()).expect("fixture key");
            let signature: Signature = signer.sign(signing_input.as_bytes());
            signature.to_bytes().to_vec()
        }
        _ => {
            let pair = ed25519_compact::KeyPair::from_slice(&keys().ed.to_bytes()).expect("fixture key");
            pair.sk.sign(signing_input.as_bytes(), None).to_vec()
        }
    };
    format!("{signing_input}.{}", b64(&signature))
}

fn verify(token: &str) -> Result<Verified, Reason> {
    let engine = engine();
    engine.keyring.verify(token, &engine.revocations, NOW)
}

#[test]
fn claims_are_judged_as_jwt_simple_judges_them() {
    let skew = 30;
    let base = valid_payload();
    let with = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut p = base.clone();
        if let Some(map) = p.as_object_mut() {
            edit(map);
        }
        p
    };
    let payloads = vec![
        ("valid", base.clone()),
        ("expired past the skew", with(&|m| drop(m.insert("exp".into(), json!(NOW - skew - 1))))),
        ("expired within the skew", with(&|m| drop(m.insert("exp".into(), json!(NOW - skew))))),
        ("fractional exp at the edge", with(&|m| drop(m.insert("exp".into(), json!((NOW - skew) as f64 - 0.5))))),
        ("no exp", with(&|m| drop(m.remove("exp")))),
        ("nbf ahead past the skew", with(&|m| drop(m.insert("nbf".into(), json!(NOW + skew + 1))))),
        ("nbf ahead within the skew", with(&|m| drop(m.insert("nbf".into(), json!(NOW + skew))))),
        ("fractional nbf past the edge", with(&|m| drop(m.insert("nbf".into(), json!((NOW + skew) as f64 + 0.5))))),
        ("iat ahead past the skew", with(&|m| drop(m.insert("iat".into(), json!(NOW + skew + 1))))),
        ("iat ahead within the skew", with(&|m| drop(m.insert("iat".into(), json!(NOW + skew))))),
        ("no iat", with(&|m| drop(m.remove("iat")))),
        ("another issuer", with(&|m| drop(m.insert("iss".into(), json!("https://evil.test"))))),
        ("issuer with a trailing slash", with(&|m| drop(m.insert("iss".into(), json!(format!("{ISS}/")))))),
        ("no issuer", with(&|m| drop(m.remove("iss")))),
        ("issuer not a string", with(&|m| drop(m.insert("iss".into(), json!(7))))),
        ("another audience", with(&|m| drop(m.insert("aud".into(), json!("web"))))),
        ("audience list with ours", with(&|m| drop(m.insert("aud".into(), json!(["web", "api"]))))),
        ("audience list without ours", with(&|m| drop(m.insert("aud".into(), json!(["web"]))))),
        ("empty audience list", with(&|m| drop(m.insert("aud".into(), json!([]))))),
        ("no audience", with(&|m| drop(m.remove("aud")))),
        ("exp a string", with(&|m| drop(m.insert("exp".into(), json!("soon"))))),
        ("negative exp", with(&|m| drop(m.insert("exp".into(), json!(-1))))),
        ("roles not a list", with(&|m| drop(m.insert("roles".into(), json!("admin"))))),
        ("unsafe subject", with(&|m| drop(m.insert("sub".into(), json!("a\nb"))))),
        ("payload not an object", json!([1, 2])),
        ("payload a string", json!("x")),
    ];
    let headers = vec![
        ("no typ", json!({})),
        ("typ JWT", json!({"typ": "JWT"})),
        ("typ jwt", json!({"typ": "jwt"})),
        ("typ at+jwt", json!({"typ": "at+jwt"})),
        ("typ dpop", json!({"typ": "dpop+jwt-not"})),
        ("cty", json!({"cty": "JWT"})),
    ];
    let mut allowed = 0;
    for (header_name, header) in &headers {
        for (payload_name, payload) in &payloads {
            let expected = verify(&signed("HS256", "hs1", header, payload));
            for (alg, kid) in OWN {
                let ours = verify(&signed(alg, kid, header, payload));
                assert_eq!(ours, expected, "{alg}: {header_name}, {payload_name}");
                allowed += usize::from(ours.is_ok());
            }
        }
    }
    assert!(allowed >= 20, "the table must hold tokens that verify, not only refusals ({allowed})");
}

/// A change made to a signed token.
type Edit = Box<dyn Fn(&str) -> String>;

/// The token's signature segment replaced by `f(signature)`.
fn resign(token: &str, f: impl Fn(&str) -> String) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap_or_default();
    format!("{input}.{}", f(signature))
}

#[test]
fn token_shapes_are_judged_as_jwt_simple_judges_them() {
    let payload = valid_payload();
    let hs = signed("HS256", "hs1", &json!({}), &payload);
    let edits: Vec<(&str, Edit)> = vec![
        ("as signed", Box::new(|t: &str| t.to_owned())),
        ("signature padded", Box::new(|t: &str| format!("{t}=="))),
        ("signature with a '+'", Box::new(|t: &str| resign(t, |s| format!("+{}", &s[1..])))),
        ("signature cut by one character", Box::new(|t: &str| t[..t.len() - 1].to_owned())),
        ("signature cut by four characters", Box::new(|t: &str| t[..t.len() - 4].to_owned())),
        (
            "signature cut by three bytes",
            Box::new(|t: &str| {
                resign(t, |s| {
                    let bytes = URL_SAFE_NO_PAD.decode(s).unwrap_or_default();
                    b64(&bytes[..bytes.len() - 3])
                })
            }),
        ),
        ("signature doubled", Box::new(|t: &str| resign(t, |s| format!("{s}{s}")))),
        ("signature emptied", Box::new(|t: &str| resign(t, |_| String::new()))),
        ("signature of zeros", Box::new(|t: &str| resign(t, |s| b64(&vec![0u8; s.len() * 3 / 4])))),
        (
            "payload byte changed",
            Box::new(|t: &str| {
                let dot = t.find('.').unwrap_or(0);
                let mut b = t.as_bytes().to_vec();
                b[dot + 3] = if b[dot + 3] == b'A' { b'B' } else { b'A' };
                String::from_utf8(b).unwrap_or_default()
            }),
        ),
    ];
    for (alg, kid) in OWN {
        let ours_signed = signed(alg, kid, &json!({}), &payload);
        assert!(verify(&ours_signed).is_ok() && verify(&hs).is_ok(), "{alg}: both tokens verify as signed");
        for (name, edit) in &edits {
            let ours = verify(&edit(&ours_signed));
            // meshgate reads the claims before the signature (revocation
            // first, for every algorithm), so a payload that no longer
            // parses is malformed there, a bad signature in jwt-simple.
            if !name.starts_with("payload") {
                assert_eq!(ours.clone().map(drop), jwt_simple_verdict(alg, &edit(&ours_signed)), "{alg}: {name}");
            }
            // A signature of another length is the one place the algorithms
            // differ in jwt-simple (EdDSA: malformed; ES256: bad signature;
            // HMAC: either, by length), so it is held to jwt-simple alone.
            if !["cut", "doubled", "emptied"].iter().any(|w| name.contains(w)) {
                assert_eq!(ours, verify(&edit(&hs)), "{alg}: {name}, as HS256");
            }
        }
        let padded = json!({"pad": "x".repeat(7000)});
        let expected = verify(&signed("HS256", "hs1", &padded, &payload));
        assert!(expected.is_err(), "a header over 8 KiB is refused");
        assert_eq!(verify(&signed(alg, kid, &padded, &payload)), expected, "{alg}: header too large");
    }
}

/// What jwt-simple's own verifier for `alg` answers, mapped to reasons as
/// `jwt.rs` maps its errors.
fn jwt_simple_verdict(alg: &str, token: &str) -> Result<(), Reason> {
    let options = VerificationOptions {
        accept_future: false,
        allowed_issuers: Some(std::collections::HashSet::from([ISS.to_owned()])),
        allowed_audiences: Some(std::collections::HashSet::from(["api".to_owned()])),
        time_tolerance: Some(Duration::from_secs(30)),
        artificial_time: Some(Duration::from_secs(NOW)),
        ..VerificationOptions::default()
    };
    let result = match alg {
        "ES256" => keys().es.public_key().verify_token::<Value>(token, Some(options)).map(drop),
        _ => keys().ed.public_key().verify_token::<Value>(token, Some(options)).map(drop),
    };
    result.map_err(|e| match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag) => Reason::InvalidSignature,
        Some(JWTError::TokenHasExpired) => Reason::TokenExpired,
        _ => Reason::MalformedToken,
    })
}

/// Ed25519 signatures made by hand, so the nonce point can carry a torsion
/// component: (R, s) with R = [r]B + T, s = r + k·a, k = H(R || A || M).
struct EdSigner {
    a: EdScalar,
    public: [u8; 32],
}

impl EdSigner {
    fn new(seed: u8) -> Self {
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed.wrapping_add(1); 32]));
        let hashed = Sha512::digest(&pair.sk.seed()[..]);
        let mut scalar = [0u8; 32];
        scalar.copy_from_slice(&hashed[..32]);
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        Self { a: EdScalar::from_bytes_mod_order(scalar), public: *pair.pk }
    }

    fn sign(&self, message: &[u8], nonce: u8, torsion: usize) -> Vec<u8> {
        let r = EdScalar::from_bytes_mod_order([nonce.wrapping_add(1); 32]);
        let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[torsion % 8]).compress().0;
        let k = EdScalar::from_bytes_mod_order_wide(
            &Sha512::new().chain_update(big_r).chain_update(self.public).chain_update(message).finalize().into(),
        );
        [&big_r[..], &(r + k * self.a).to_bytes()[..]].concat()
    }
}

/// Little-endian `value + delta`, wrapping.
fn add_le(value: &[u8], delta: u8) -> Vec<u8> {
    let mut out = value.to_vec();
    let mut carry = u16::from(delta);
    for byte in out.iter_mut() {
        let sum = u16::from(*byte) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    out
}

/// ℓ, the order of the Ed25519 base point, little endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Encodings that are not canonical points of large order.
fn bad_points() -> Vec<[u8; 32]> {
    let mut points: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|t| t.compress().0).collect();
    let mut non_canonical_identity = [0xffu8; 32];
    non_canonical_identity[0] = 0xee; // y = p + 1
    non_canonical_identity[31] = 0x7f;
    points.push(non_canonical_identity);
    let mut negative_zero = [0u8; 32];
    negative_zero[0] = 1;
    negative_zero[31] = 0x80; // the identity with the sign bit of x set
    points.push(negative_zero);
    points.push([0xff; 32]);
    points.push([2; 32]);
    points
}

fn ed_reference(public: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = ed25519_compact::PublicKey::from_slice(public) else { return false };
    if key.validate().is_err() {
        return false;
    }
    ed25519_compact::Signature::from_slice(signature).is_ok_and(|sig| key.verify(message, &sig).is_ok())
}

#[test]
fn ed25519_signatures_are_judged_as_ed25519_compact_judges_them() {
    let mut accepted = 0;
    let mut checked = 0;
    for seed in 0..4u8 {
        let signer = EdSigner::new(seed);
        let ours = Ed25519Key::from_bytes(&signer.public).expect("a valid key");
        for (n, len) in [0usize, 1, 32, 64, 200, 1000].into_iter().enumerate() {
            let message: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed.wrapping_add(5))).collect();
            for torsion in 0..8 {
                let signature = signer.sign(&message, n as u8 * 8 + torsion as u8, torsion);
                let (r, s) = signature.split_at(32);
                let mut cases = vec![
                    signature.clone(),
                    [r, &ELL[..]].concat(),
                    [r, &add_le(&ELL, 1)[..]].concat(),
                    [r, &[0xff; 32][..]].concat(),
                    [r, &[0; 32][..]].concat(),
                    [s, r].concat(),
                    signature[..63].to_vec(),
                ];
                // s + ℓ: the same value, not canonical.
                let mut s_plus_ell = [0u8; 32];
                let mut carry = 0u16;
                for i in 0..32 {
                    let sum = u16::from(s[i]) + u16::from(ELL[i]) + carry;
                    s_plus_ell[i] = sum as u8;
                    carry = sum >> 8;
                }
                cases.push([r, &s_plus_ell[..]].concat());
                cases.extend(bad_points().iter().map(|p| [&p[..], s].concat()));
                for bit in (0..512).step_by(41) {
                    let mut flipped = signature.clone();
                    flipped[bit / 8] ^= 1 << (bit % 8);
                    cases.push(flipped);
                }
                for candidate in cases {
                    let expected = ed_reference(&signer.public, &message, &candidate);
                    assert_eq!(
                        ours.verify(&message, &candidate),
                        expected,
                        "key {seed}, {len} bytes, torsion {torsion}, {candidate:02x?}"
                    );
                    accepted += usize::from(expected);
                    checked += 1;
                }
            }
        }
    }
    // Each original verifies, torsion in R or not (both are cofactored),
    // and nothing else does.
    assert_eq!(accepted, 4 * 6 * 8, "of {checked}");
}

#[test]
fn ed25519_keys_are_refused_as_jwt_simple_refuses_them() {
    let good = EdSigner::new(9).public;
    assert!(Ed25519Key::from_bytes(&good).is_some());
    assert!(Ed25519PublicKey::from_bytes(&good).is_ok());
    let mut off_curve = good;
    off_curve[3] ^= 0x10;
    let mut candidates: Vec<Vec<u8>> = bad_points().iter().map(|p| p.to_vec()).collect();
    candidates.extend([off_curve.to_vec(), good[..31].to_vec(), [&good[..], &[0][..]].concat(), Vec::new()]);
    for bytes in candidates {
        let expected = Ed25519PublicKey::from_bytes(&bytes).is_ok();
        assert_eq!(Ed25519Key::from_bytes(&bytes).is_some(), expected, "{bytes:02x?}");
    }
}
