//! Attack regressions found by the real-Envoy attack corpus (envoy/e2e/attacks.py) and the
//! fuzz targets (fuzz). Each names the SECURITY.md row it backs. The `#[ignore]`d
//! ones are weaknesses not fixed yet: they fail today and must pass once the fix lands
//! (`cargo test -p meshgate-core --test attacks -- --ignored`).

mod support;

use meshgate_core::Reason;
use meshgate_core::engine::Decision;
use meshgate_core::ratelimit::table::MemoryStore;
use support::*;

fn outcome(req: &Req) -> Result<(String, Vec<(String, String)>), Reason> {
    let engine = engine();
    match engine.decide(&req.view(), NOW_US, &MemoryStore::default()) {
        Decision::Allow(a) => Ok((a.route.to_owned(), a.set().map(|(n, v)| (n.to_owned(), v.to_string())).collect())),
        Decision::Deny(d) => Err(d.reason),
    }
}

/// A query keeps the client's bytes (UTF-8 checked, controls refused); the
/// canonical target the upstream receives is a fixed point of normalization.
/// (fuzz `path_route`: non-ASCII in the query of a rewritten target.)
#[test]
fn a_rewritten_target_keeps_a_utf8_query_and_is_a_fixed_point() {
    use meshgate_core::path::{PathLimits, normalize};
    let limits = PathLimits { max_bytes: 8192, allow_parameters: false };
    let raw = "/ublia/../admin/x?y..ѐ..../ic/../admin/".as_bytes();
    let n = normalize(raw, limits).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n.path, "/admin/x");
    assert_eq!(n.query, Some("y..ѐ..../ic/../admin/"));
    let target = n.target();
    let again = normalize(target.as_bytes(), limits).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((&*again.path, again.changed), ("/admin/x", false));
    assert_eq!(normalize(b"/a?x\x7f", limits), Err(meshgate_core::path::PathError::InvalidEncoding));
}

/// Envoy joins two `Host` lines into `a,b`; the filter must not route on
/// that (no host rule matches it, so host-less rules would apply while the
/// upstream may pick either name). SECURITY.md "not yet covered": the fix
/// belongs in `Engine::decide` (refuse an authority that is not one
/// `host[:port]`, 400 invalid-path).
#[test]
fn a_joined_authority_is_refused() {
    let req = Req::get("/public/x").host("www.example.com,admin.example.com");
    assert_eq!(outcome(&req).map(|o| o.0), Err(Reason::InvalidPath));
}

/// `X_User_ID` reaches the upstream, where CGI/WSGI/PHP read it as
/// `X-User-ID`. The demo bootstrap makes Envoy refuse such names; the
/// filter itself should strip them too (SECURITY.md "not yet covered":
/// `Engine::decide`'s removal list compares names exactly).
#[test]
fn underscore_variants_of_identity_headers_are_stripped() {
    let engine = engine();
    let req = Req::get("/public/x").header("X_User_ID", "mallory");
    match engine.decide(&req.view(), NOW_US, &MemoryStore::default()) {
        Decision::Allow(a) => assert!(a.remove.iter().any(|n| n.eq_ignore_ascii_case("x_user_id")), "{a:?}"),
        Decision::Deny(d) => panic!("public route denied: {:?}", d.reason),
    }
}
