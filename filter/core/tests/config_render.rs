//! Config rejection (every error names its field), denial rendering
//! (status, `WWW-Authenticate`, problem+json) and the header edits of an
//! allowed request.

mod support;

use meshgate_core::engine::Decision;
use meshgate_core::ratelimit::table::MemoryStore;
use meshgate_core::{Denial, Reason, compile};
use meshgate_wire::config::ProblemDetails;
use serde_json::{Value, json};
use support::*;

fn field_of(config: Value) -> String {
    match compile(config.to_string().as_bytes()) {
        Ok(_) => panic!("config was accepted: {config}"),
        Err(e) => e.field,
    }
}

fn issuer(keys: Value) -> Value {
    json!([{"issuer": ISS, "audiences": ["api"], "keys": keys}])
}

#[test]
fn bad_configs_name_the_field() {
    let hs = json!({"kty": "oct", "kid": "a", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"});
    let table: Vec<(Value, &str)> = vec![
        (json!({"routes": [{"path": {"prefix": "/"}, "policy": {"acces": "public"}}]}), "routes[0].policy.acces"),
        (json!({"routez": []}), "routez"),
        (json!({"routes": [{"path": {"prefix": "nope"}, "policy": {}}]}), "routes[0].path"),
        (
            json!({"routes": [{"path": {"exact": "/"}, "policy": {}}, {"path": {"template": "/a/{*}/b"}, "policy": {}}]}),
            "routes[1].path",
        ),
        (json!({"routes": [{"path": {"exact": "/"}, "methods": ["get"], "policy": {}}]}), "routes[0].methods[0]"),
        (json!({"routes": [{"path": {"exact": "/"}, "host": "bad host", "policy": {}}]}), "routes[0].host"),
        (
            json!({"routes": [{"path": {"exact": "/"}, "policy": {"roles_any": ["a,b"]}}]}),
            "routes[0].policy.roles_any[0]",
        ),
        (
            json!({"routes": [{"path": {"exact": "/"}, "policy": {"credentials": ["guest"]}}]}),
            "routes[0].policy.credentials",
        ),
        (json!({"routes": [{"path": {"exact": "/"}, "policy": {"access": "sometimes"}}]}), "routes[0].policy.access"),
        (json!({"issuers": [{"issuer": ISS, "audiences": [], "keys": [hs]}]}), "issuers[0].audiences"),
        (json!({"issuers": [{"issuer": ISS, "audiences": ["api"], "keys": []}]}), "issuers[0].keys"),
        (json!({"issuers": issuer(json!([{"kty": "oct", "kid": "a", "k": "c2hvcnQ"}]))}), "issuers[0].keys[0]"),
        (json!({"issuers": issuer(json!([{"kty": "oct", "k": hs["k"]}]))}), "issuers[0].keys[0].kid"),
        (json!({"issuers": issuer(json!([hs, hs]))}), "issuers[0].keys[1].kid"),
        (
            json!({"issuers": issuer(json!([{"kty": "oct", "kid": "a", "alg": "RS256", "k": hs["k"]}]))}),
            "issuers[0].keys[0]",
        ),
        (
            json!({"issuers": issuer(json!([{"kty": "OKP", "crv": "X25519", "kid": "a", "x": "AAAA"}]))}),
            "issuers[0].keys[0]",
        ),
        (
            json!({"issuers": issuer(json!([{"kty": "EC", "crv": "P-256", "kid": "a", "x": "AAAA", "y": "AAAA"}]))}),
            "issuers[0].keys[0]",
        ),
        (
            json!({"issuers": issuer(json!([{"kty": "oct", "kid": "a", "use": "enc", "k": hs["k"]}]))}),
            "issuers[0].keys[0]",
        ),
        (
            json!({"issuers": [{"issuer": ISS, "audiences": ["api"], "keys": [hs], "algorithms": ["none"]}]}),
            "issuers[0].algorithms[0]",
        ),
        (
            json!({"issuers": [{"issuer": ISS, "audiences": ["api"], "keys": [hs], "required_claims": ["foo"]}]}),
            "issuers[0].required_claims",
        ),
        (json!({"keys": {"api_keys": [{"id": "k", "digest": "zz", "subject": "u"}]}}), "keys.api_keys[0].digest"),
        (json!({"keys": {"api_key_prefixes": ["Bad_"]}}), "keys.api_key_prefixes[0]"),
        (json!({"headers": {"user_id": "bad name"}}), "headers.user_id"),
        (json!({"headers": {"user_id": "authorization"}}), "headers.user_id"),
        (json!({"headers": {"user_id": "x-app-id"}}), "headers"),
        (json!({"failure_mode": "sideways"}), "failure_mode"),
        (json!({"security_headers": {"hsts": "max-age=1\r\nx: y"}}), "security_headers.hsts"),
        (json!({"paths": {"max_path_bytes": 1}}), "paths.max_path_bytes"),
        (json!({"realm": "a\"b"}), "realm"),
    ];
    for (config, field) in table {
        assert_eq!(field_of(config.clone()), field, "config {config}");
    }
    assert_eq!(compile(b"not json").map_err(|e| e.field).err(), Some("$".to_owned()));
    assert_eq!(compile(b" []").map_err(|e| e.field).err(), Some("$".to_owned()), "arrays are not configs");
    assert_eq!(compile(b"").map_err(|e| e.field).err(), Some("$".to_owned()));
    assert!(compile(&vec![b' '; 5 * 1024 * 1024]).is_err());
    assert!(compile(b"{}").is_ok(), "an empty config is valid (and denies everything)");
}

#[test]
fn denial_rendering_follows_rfc_6750_and_9457() {
    let missing = Denial::new(Reason::MissingCredentials).render("meshgate", ProblemDetails::Full);
    assert_eq!(missing.status, 401);
    let www = |r: &meshgate_core::LocalResponse| {
        r.headers.iter().find(|(n, _)| n == "www-authenticate").map(|(_, v)| v.clone())
    };
    assert_eq!(www(&missing).as_deref(), Some("Bearer realm=\"meshgate\""));
    let expired = Denial::new(Reason::TokenExpired).render("edge", ProblemDetails::Full);
    assert_eq!(
        www(&expired).as_deref(),
        Some("Bearer realm=\"edge\", error=\"invalid_token\", error_description=\"Token expired\"")
    );
    let body: Value = serde_json::from_str(&expired.body).unwrap_or_default();
    assert_eq!(body["type"], "urn:meshgate:problem:token-expired");
    assert_eq!(body["status"], 401);
    assert!(expired.headers.contains(&("content-type".into(), "application/problem+json".into())));

    let scope = Denial {
        reason: Reason::InsufficientScope,
        route: Some("reports".into()),
        required_scopes: vec!["reports:read".into()],
        headers: Vec::new(),
        limit_events: Vec::new(),
    };
    let full = scope.render("meshgate", ProblemDetails::Full);
    assert_eq!(full.status, 403);
    assert_eq!(
        www(&full).as_deref(),
        Some("Bearer realm=\"meshgate\", error=\"insufficient_scope\", scope=\"reports:read\"")
    );
    let body: Value = serde_json::from_str(&full.body).unwrap_or_default();
    assert_eq!(body["route"], "reports");
    let minimal: Value =
        serde_json::from_str(&scope.render("meshgate", ProblemDetails::Minimal).body).unwrap_or_default();
    assert_eq!(minimal.as_object().map(|o| o.len()), Some(3), "minimal body: {minimal}");

    let bad = Denial::new(Reason::ConflictingCredentials).render("meshgate", ProblemDetails::Full);
    assert_eq!(bad.status, 400);
    assert!(www(&bad).is_some_and(|v| v.contains("error=\"invalid_request\"")));
    let denied = Denial::new(Reason::RouteDenied).render("meshgate", ProblemDetails::Full);
    assert_eq!((denied.status, www(&denied)), (403, None));
    assert_eq!(Denial::new(Reason::Unavailable).render("m", ProblemDetails::Full).status, 503);
    for reason in Reason::ALL {
        assert!(reason.slug().bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{reason:?}");
    }
}

#[test]
fn allowed_requests_strip_spoofed_headers_and_hide_keys() {
    let engine = engine();
    let token = hs(claims(|_| {}));
    let req = Req::get("//api/./orders?page=2")
        .bearer(&token)
        .header("x-user-id", "admin")
        .header("X-User-Roles", "admin")
        .header("x-auth-method", "admin");
    let Decision::Allow(allow) = engine.decide(&req.view(), NOW_US, &MemoryStore::default()) else { panic!("denied") };
    assert_eq!(allow.rewrite_path.as_deref(), Some("/api/orders?page=2"));
    let set: Vec<&str> = allow.set().map(|(n, _)| n).collect();
    assert!(set.contains(&"x-user-id") && set.contains(&"x-user-roles") && set.contains(&"x-auth-method"));
    assert!(allow.remove.is_empty(), "owned headers being set are replaced, not removed: {:?}", allow.remove);
    assert_eq!(allow.set().find(|(n, _)| *n == "x-user-id").map(|(_, v)| v.to_string()).as_deref(), Some("user-1"));

    // A spoofed header the identity does not set is removed outright.
    let req = Req::get("/api/x").header("x-api-key", &api_key(1)).header("x-session-id", "stolen");
    let Decision::Allow(allow) = engine.decide(&req.view(), NOW_US, &MemoryStore::default()) else { panic!("denied") };
    assert!(allow.remove.contains(&"x-session-id"));
    assert!(allow.remove.contains(&"x-api-key"), "API key hidden from upstream");

    let req = Req::get("/api/x").bearer(&api_key(1));
    let Decision::Allow(allow) = engine.decide(&req.view(), NOW_US, &MemoryStore::default()) else { panic!("denied") };
    assert!(allow.remove.contains(&"authorization"), "bearer API key hidden from upstream");

    // Anonymous on a public route: every spoofed identity header goes.
    let req = Req::get("/public/x").header("x-user-id", "admin").header("x-guest-id", "g");
    let Decision::Allow(allow) = engine.decide(&req.view(), NOW_US, &MemoryStore::default()) else { panic!("denied") };
    assert_eq!(allow.set().count(), 0);
    assert!(allow.remove.contains(&"x-user-id") && allow.remove.contains(&"x-guest-id"));
    assert_eq!(allow.rewrite_path, None);
}

#[test]
fn case_insensitive_paths_when_configured() {
    let mut cfg = config();
    cfg["paths"] = json!({"case_insensitive": true});
    let engine = meshgate_core::Engine::new(compile(cfg.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}")));
    let no_admin = hs(claims(|c| c.custom.roles = Some(vec!["user".into()])));
    let Decision::Deny(d) =
        engine.decide(&Req::get("/ADMIN/x").bearer(&no_admin).view(), NOW_US, &MemoryStore::default())
    else {
        panic!("allowed")
    };
    assert_eq!(d.reason, Reason::InsufficientRole);
}
