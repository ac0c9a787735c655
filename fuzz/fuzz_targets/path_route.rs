//! Path normalization and route matching.
//!
//! Input: a flags byte, then `method \n authority \n path` (raw bytes).
//! flags bit 0: allow `;` parameters; bit 1: case-insensitive route table;
//! bit 2: send a valid admin JWT.
//!
//! Properties: no panic; a normalized path starts with `/`, has no empty,
//! `.` or `..` segment even once percent-decoded, and is a fixed point
//! (normalizing it again changes nothing); an allowed request replayed with
//! its canonical path matches the same route without a further rewrite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate_core::engine::{Decision, Request};
use meshgate_core::path::{PathLimits, normalize};
use meshgate_core::ratelimit::table::MemoryStore;
use meshgate_fuzz::*;

fn percent_decode(segment: &str) -> Vec<u8> {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn check_normalized(raw: &[u8], limits: PathLimits) {
    let Ok(n) = normalize(raw, limits) else { return };
    assert!(n.path.starts_with('/'), "{n:?}");
    let inner = n.path.strip_prefix('/').unwrap_or_default();
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            let decoded = percent_decode(segment);
            assert!(!decoded.is_empty() && decoded != b"." && decoded != b"..", "segment {segment:?} in {n:?}");
            assert!(!decoded.contains(&b'/') && !decoded.contains(&b'\\') && !decoded.contains(&0), "{n:?}");
        }
    }
    let target = n.target();
    let again = match normalize(target.as_bytes(), limits) {
        Ok(a) => a,
        Err(e) => panic!("canonical form {target:?} of {raw:?} is refused: {e}"),
    };
    assert_eq!(again.path, n.path, "not a fixed point");
    assert_eq!(again.query, n.query);
    assert!(!again.changed, "canonical form reported as changed: {n:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (method, rest) = split(rest, b'\n');
    let (authority, path) = split(rest, b'\n');
    let limits = PathLimits { max_bytes: 8192, allow_parameters: flags & 1 != 0 };
    check_normalized(path, limits);

    let Ok(method) = std::str::from_utf8(method) else { return };
    let authority = String::from_utf8_lossy(authority);
    let engine = engine(flags & 2 != 0);
    let bearer;
    let mut headers = vec![("x-user-roles", b"admin".as_slice())];
    if flags & 4 != 0 {
        let payload = format!(
            r#"{{"iss":"{ISS}","aud":"api","sub":"root","exp":{},"roles":["admin","ops"],"scope":"reports:read"}}"#,
            NOW + 600
        );
        let token = hs_sign(br#"{"alg":"HS256","kid":"hs1"}"#, payload.as_bytes());
        bearer = format!("Bearer {token}");
        headers.push(("authorization", bearer.as_bytes()));
    }
    let req = Request { method, path, authority: &authority, headers: &headers, peer: Some("10.0.0.1") };
    let first = decide_checked(&engine, &req);
    let Decision::Allow(allow) = engine.decide(&req, NOW_US, &MemoryStore::default()) else { return };
    let replaced = allow.set().any(|(n, _)| n == "x-user-roles");
    assert!(allow.remove.contains(&"x-user-roles") || replaced, "spoofed x-user-roles kept: {allow:?}");
    if let Some(canonical) = &allow.rewrite_path {
        let replay = Request { path: canonical.as_bytes(), ..req };
        match engine.decide(&replay, NOW_US, &MemoryStore::default()) {
            Decision::Allow(again) => {
                assert_eq!(Some(again.route.to_owned()), first, "canonical path {canonical:?} routes elsewhere");
                assert_eq!(again.rewrite_path, None, "canonical path {canonical:?} rewritten again");
            }
            Decision::Deny(d) => panic!("canonical path {canonical:?} denied ({:?}) after raw path allowed", d.reason),
        }
    }
});
