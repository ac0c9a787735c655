//! meshgate-core's per-request work, exported for timing under V8.
//!
//! `setup` builds the core's test fixture (the same config, keys and tokens
//! as `filter/core/tests`); `run(case, n)` repeats one case `n` times and
//! answers how many succeeded, so the driver can refuse a number measured on
//! failures. The cases are listed by `CASES`; `case_name` lets the driver
//! print them without a second copy of the list.

#![allow(unsafe_code)] // the `#[unsafe(no_mangle)]` exports are the module's interface

#[path = "../../../filter/core/tests/support/mod.rs"]
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::ECDSAP256PublicKeyLike;
use meshgate_core::ed25519::Ed25519Key;
use meshgate_core::engine::{Decision, Engine};
use meshgate_core::es256::Es256Key;
use meshgate_core::ratelimit::table::MemoryStore;
use p256::ecdsa::signature::Verifier;
use std::hint::black_box;
use support::{NOW, NOW_US, Req, api_key, claims, ed, engine, es, hs, rs};

/// What one case repeats.
enum Case {
    /// `KeyRing::verify` of one token: the whole first-seen path (header,
    /// key selection, revocation, signature, claims), no cache.
    Verify(&'static str),
    /// `Engine::decide` of one request: after the first, a cached decision.
    Decide(&'static str),
    /// A signature alone: the library jwt-simple calls (p256,
    /// ed25519-compact) or meshgate's per-key tables (`meshgate_core::es256`,
    /// `meshgate_core::ed25519`).
    Signature { alg: &'static str, own: bool },
    /// A new meshgate key per call: its table built, then one signature.
    FirstUse { alg: &'static str },
}

const CASES: [(&str, Case); 15] = [
    ("verify/jwt_hs256", Case::Verify("hs")),
    ("verify/jwt_eddsa", Case::Verify("ed")),
    ("verify/jwt_es256", Case::Verify("es")),
    ("verify/jwt_rs256", Case::Verify("rs")),
    ("decide/jwt_hs256", Case::Decide("hs")),
    ("decide/jwt_es256", Case::Decide("es")),
    ("decide/api_key", Case::Decide("key")),
    ("decide/anonymous_public", Case::Decide("public")),
    ("decide/jwt_eddsa", Case::Decide("ed")),
    ("signature/es256_p256", Case::Signature { alg: "es", own: false }),
    ("signature/es256_meshgate", Case::Signature { alg: "es", own: true }),
    ("signature/eddsa_ed25519_compact", Case::Signature { alg: "ed", own: false }),
    ("signature/eddsa_meshgate", Case::Signature { alg: "ed", own: true }),
    ("key_first_use/es256_meshgate", Case::FirstUse { alg: "es" }),
    ("key_first_use/eddsa_meshgate", Case::FirstUse { alg: "ed" }),
];

struct Fixture {
    engine: Engine,
    store: MemoryStore,
    tokens: Vec<(&'static str, String)>,
    requests: Vec<(&'static str, Req)>,
    /// Signing input and raw signature of the ES256 and EdDSA tokens.
    es256_signed: (Vec<u8>, Vec<u8>),
    eddsa_signed: (Vec<u8>, Vec<u8>),
    es256_sec1: Vec<u8>,
    eddsa_public: Vec<u8>,
}

thread_local! {
    /// Built on first use and kept for the module's life (the engine's
    /// caches are `RefCell`s: one thread, as in the filter).
    static FIXTURE: &'static Fixture = Box::leak(Box::new(build()));
}

fn fixture() -> &'static Fixture {
    FIXTURE.with(|f| *f)
}

fn build() -> Fixture {
    {
        let tokens = vec![
            ("hs", hs(claims(|_| {}))),
            ("ed", ed(claims(|_| {}))),
            ("es", es(claims(|_| {}))),
            ("rs", rs(claims(|_| {}))),
        ];
        let token = |k: &str| tokens.iter().find(|(n, _)| *n == k).map(|(_, t)| t.clone()).unwrap_or_default();
        let requests = vec![
            ("hs", Req::get("/api/x").bearer(&token("hs"))),
            ("es", Req::get("/api/x").bearer(&token("es"))),
            ("ed", Req::get("/api/x").bearer(&token("ed"))),
            ("key", Req::get("/api/x").header("x-api-key", &api_key(1))),
            ("public", Req::get("/public/x")),
        ];
        let split = |token: String| {
            let (input, sig) = token.rsplit_once('.').unwrap_or_default();
            (input.as_bytes().to_vec(), URL_SAFE_NO_PAD.decode(sig).unwrap_or_default())
        };
        let es256_signed = split(token("es"));
        let eddsa_signed = split(token("ed"));
        let es256_sec1 = support::keys().es.public_key().public_key().to_bytes_uncompressed();
        let eddsa_public = support::keys().ed.public_key().to_bytes();
        Fixture {
            engine: engine(),
            store: MemoryStore::default(),
            tokens,
            requests,
            es256_signed,
            eddsa_signed,
            es256_sec1,
            eddsa_public,
        }
    }
}

/// Builds the fixture (keys, tokens, engine) outside any timed run; answers
/// the number of cases.
#[unsafe(no_mangle)]
pub extern "C" fn setup() -> u32 {
    fixture();
    CASES.len() as u32
}

/// Writes case `case`'s name into `buf` (at most `cap` bytes); answers its
/// length, or 0 for an unknown case.
///
/// # Safety
///
/// `buf` must be valid for `cap` bytes of writes (the driver passes a
/// buffer from `alloc(cap)`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn case_name(case: u32, buf: *mut u8, cap: u32) -> u32 {
    let Some((name, _)) = CASES.get(case as usize) else { return 0 };
    let len = name.len().min(cap as usize);
    // SAFETY: the driver passes a buffer it allocated with `alloc(cap)`.
    unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), buf, len) };
    len as u32
}

/// `cap` bytes for the driver to pass to `case_name` (never freed: one
/// small buffer per run).
#[unsafe(no_mangle)]
pub extern "C" fn alloc(cap: u32) -> *mut u8 {
    Box::leak(vec![0u8; cap as usize].into_boxed_slice()).as_mut_ptr()
}

/// Runs case `case` `n` times; answers how many runs succeeded.
#[unsafe(no_mangle)]
pub extern "C" fn run(case: u32, n: u32) -> u32 {
    let f = fixture();
    let Some((_, case)) = CASES.get(case as usize) else { return 0 };
    let mut ok = 0;
    match case {
        Case::Verify(kind) => {
            let Some((_, token)) = f.tokens.iter().find(|(k, _)| k == kind) else { return 0 };
            for _ in 0..n {
                ok +=
                    u32::from(black_box(f.engine.keyring.verify(black_box(token), &f.engine.revocations, NOW)).is_ok());
            }
        }
        Case::Decide(kind) => {
            let Some((_, req)) = f.requests.iter().find(|(k, _)| k == kind) else { return 0 };
            for _ in 0..n {
                let decision = f.engine.decide(black_box(&req.view()), NOW_US, &f.store);
                ok += u32::from(matches!(black_box(decision), Decision::Allow(_)));
            }
        }
        Case::Signature { alg: "es", own } => {
            let (message, signature) = &f.es256_signed;
            if *own {
                let Some(key) = Es256Key::from_sec1(&f.es256_sec1) else { return 0 };
                for _ in 0..n {
                    ok += u32::from(black_box(&key).verify(black_box(message), signature));
                }
            } else {
                let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&f.es256_sec1) else { return 0 };
                let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else { return 0 };
                for _ in 0..n {
                    ok += u32::from(black_box(&key).verify(black_box(message), &signature).is_ok());
                }
            }
        }
        Case::FirstUse { alg: "es" } => {
            let (message, signature) = &f.es256_signed;
            for _ in 0..n {
                let Some(key) = Es256Key::from_sec1(black_box(&f.es256_sec1)) else { return 0 };
                ok += u32::from(key.verify(message, signature));
            }
        }
        Case::FirstUse { .. } => {
            let (message, signature) = &f.eddsa_signed;
            for _ in 0..n {
                let Some(key) = Ed25519Key::from_bytes(black_box(&f.eddsa_public)) else { return 0 };
                ok += u32::from(key.verify(message, signature));
            }
        }
        Case::Signature { own, .. } => {
            let (message, signature) = &f.eddsa_signed;
            if *own {
                let Some(key) = Ed25519Key::from_bytes(&f.eddsa_public) else { return 0 };
                for _ in 0..n {
                    ok += u32::from(black_box(&key).verify(black_box(message), signature));
                }
            } else {
                let Ok(key) = ed25519_compact::PublicKey::from_slice(&f.eddsa_public) else { return 0 };
                let Ok(signature) = ed25519_compact::Signature::from_slice(signature) else { return 0 };
                for _ in 0..n {
                    ok += u32::from(black_box(&key).verify(black_box(message), &signature).is_ok());
                }
            }
        }
    }
    ok
}
