//! meshgate's ES256 path (`es256.rs` signatures, `jwt.rs` claims) against
//! the references it replaces: p256's `VerifyingKey` for every signature,
//! valid or mangled, and jwt-simple's verification (the HS256 path, same
//! issuer) for every claims case. The two must give the same answer.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use meshgate_core::denial::Reason;
use meshgate_core::es256::Es256Key;
use meshgate_core::token_cache::Verified;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};
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

/// The same header and payload, signed ES256 with the fixture key.
fn es_raw(header: &Value, payload: &Value) -> String {
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
    let signer = SigningKey::from_slice(&keys().es.to_bytes()).expect("fixture key");
    let signature: Signature = signer.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&signature.to_bytes()))
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
            let mut hs_header = header.clone();
            hs_header["alg"] = json!("HS256");
            hs_header["kid"] = json!("hs1");
            let mut es_header = header.clone();
            es_header["alg"] = json!("ES256");
            es_header["kid"] = json!("es1");
            let expected = verify(&hs_raw(&hs_header, payload, HS_SECRET));
            let ours = verify(&es_raw(&es_header, payload));
            assert_eq!(ours, expected, "{header_name}, {payload_name}");
            allowed += usize::from(ours.is_ok());
        }
    }
    assert!(allowed >= 10, "the table must hold tokens that verify, not only refusals ({allowed})");
}

/// A change made to a signed token.
type Edit = Box<dyn Fn(&str) -> String>;

#[test]
fn token_shapes_are_judged_as_jwt_simple_judges_them() {
    let header = |alg: &str, kid: &str| json!({"alg": alg, "kid": kid});
    let payload = valid_payload();
    let hs = hs_raw(&header("HS256", "hs1"), &payload, HS_SECRET);
    let es = es_raw(&header("ES256", "es1"), &payload);
    assert!(verify(&es).is_ok() && verify(&hs).is_ok(), "both tokens verify as signed");
    let edits: Vec<(&str, Edit)> = vec![
        ("as signed", Box::new(|t: &str| t.to_owned())),
        ("signature padded", Box::new(|t: &str| format!("{t}=="))),
        ("signature in standard base64", Box::new(|t: &str| t.replace('-', "+").replace('_', "/"))),
        ("signature cut short", Box::new(|t: &str| t[..t.len() - 4].to_owned())),
        ("signature emptied", Box::new(|t: &str| format!("{}.", &t[..t.rfind('.').unwrap_or(0)]))),
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
    for (name, edit) in &edits {
        let expected = verify(&edit(&hs));
        let ours = verify(&edit(&es));
        assert_eq!(ours, expected, "{name}");
    }
    let padded = |alg: &str, kid: &str| json!({"alg": alg, "kid": kid, "pad": "x".repeat(7000)});
    let expected = verify(&hs_raw(&padded("HS256", "hs1"), &payload, HS_SECRET));
    assert!(expected.is_err(), "a header over 8 KiB is refused");
    assert_eq!(verify(&es_raw(&padded("ES256", "es1"), &payload)), expected, "header too large");
}
