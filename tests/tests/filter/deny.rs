//! Every denial reason: status, `WWW-Authenticate` (RFC 6750) and problem+json `type`.

use meshgate_tests::tokens;
use serde_json::json;

use crate::common::*;

#[test]
fn missing_credentials_is_401_with_a_bare_challenge() {
    let mut r = get("/api/x", &[]);
    let body = assert_denied(&r, 401, "missing-credentials");
    assert_eq!(challenge(&r), "Bearer realm=\"meshgate\"");
    assert_eq!(body["route"], "api");
    assert_eq!(r.denial().header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.metric("meshgate.denied.missing-credentials"), Some(1));
}

#[test]
fn tampered_signature_is_invalid_token() {
    let r = get_with_token("/api/x", &tokens::tamper_signature(&token()));
    assert_denied(&r, 401, "invalid-signature");
    assert!(challenge(&r).contains("error=\"invalid_token\""), "{}", challenge(&r));
}

#[test]
fn token_signed_with_another_secret_is_invalid_signature() {
    let t = tokens::hs256("k1", &claims(), SECRET2);
    assert_denied(&get_with_token("/api/x", &t), 401, "invalid-signature");
}

#[test]
fn swapped_claims_fail_the_signature() {
    let forged = tokens::swap_claims(&token(), &claims_with(json!({"roles": ["superuser"]})));
    assert_denied(&get_with_token("/api/x", &forged), 401, "invalid-signature");
}

#[test]
fn expired_token() {
    let r = get_with_token("/api/x", &token_with(json!({"exp": NOW - 3600})));
    assert_denied(&r, 401, "token-expired");
    assert!(challenge(&r).contains("invalid_token"));
}

#[test]
fn token_not_yet_valid() {
    let r = get_with_token("/api/x", &token_with(json!({"nbf": NOW + 3600})));
    assert_denied(&r, 401, "token-not-yet-valid");
}

#[test]
fn wrong_issuer_and_audience() {
    let r = get_with_token("/api/x", &token_with(json!({"iss": "https://evil.test"})));
    assert_denied(&r, 401, "invalid-issuer");
    let r = get_with_token("/api/x", &token_with(json!({"aud": "other-service"})));
    assert_denied(&r, 401, "invalid-audience");
}

#[test]
fn alg_none_is_refused() {
    let r = get_with_token("/api/x", &tokens::unsigned("k1", &claims()));
    assert_denied(&r, 401, "unsupported-algorithm");
}

#[test]
fn unknown_kid() {
    let t = tokens::hs256("nope", &claims(), SECRET);
    assert_denied(&get_with_token("/api/x", &t), 401, "unknown-key");
}

#[test]
fn algorithm_not_matching_the_pinned_key() {
    // The issuer allows EdDSA too, but k1 is an HS256 key: the token's alg must not win.
    let mut issuers = config()["issuers"].clone();
    issuers[0]["algorithms"] = json!(["HS256", "EdDSA"]);
    let t = tokens::sign_raw(&json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}), &claims(), SECRET);
    let r = scenario_on(config_with(json!({"issuers": issuers}))).request(|r| r.path("/api/x").bearer(&t)).run();
    assert_denied(&r, 401, "algorithm-mismatch");
}

#[test]
fn malformed_token() {
    assert_denied(&get_with_token("/api/x", "not.a.jwt"), 401, "malformed-token");
    assert_denied(&get_with_token("/api/x", "abc"), 401, "malformed-token");
}

#[test]
fn oversized_token() {
    let mut issuers = config()["issuers"].clone();
    issuers[0]["max_token_bytes"] = json!(512);
    let t = token_with(json!({"pad": "x".repeat(600)}));
    let r = scenario_on(config_with(json!({"issuers": issuers}))).request(|r| r.path("/api/x").bearer(&t)).run();
    assert_denied(&r, 401, "token-too-large");
}

#[test]
fn token_type_not_accepted() {
    let t = tokens::sign_raw(&json!({"alg": "HS256", "typ": "refresh+jwt", "kid": "k1"}), &claims(), SECRET);
    assert_denied(&get_with_token("/api/x", &t), 401, "invalid-token-type");
}

#[test]
fn missing_required_claim() {
    let r = get_with_token("/api/x", &token_with(json!({"sub": null})));
    assert_denied(&r, 401, "missing-claim");
    let r = get_with_token("/api/x", &token_with(json!({"exp": null})));
    assert_denied(&r, 401, "missing-claim");
}

#[test]
fn claim_that_would_smuggle_a_header_value() {
    let r = get_with_token("/api/x", &token_with(json!({"roles": ["admin,superuser"]})));
    assert_denied(&r, 401, "invalid-claim");
    let r = get_with_token("/api/x", &token_with(json!({"sub": "user\r\nx-user-roles: admin"})));
    assert_denied(&r, 401, "invalid-claim");
}

#[test]
fn api_key_failures() {
    let r = get("/api/x", &[("x-api-key", "mg_notavalidkey")]);
    assert_denied(&r, 401, "malformed-api-key");
    let r = get("/api/x", &[("x-api-key", &unknown_api_key())]);
    assert_denied(&r, 401, "unknown-api-key");
    assert!(challenge(&r).contains("invalid_token"));
    let r = get("/api/x", &[("x-api-key", &expired_api_key())]);
    assert_denied(&r, 401, "api-key-expired");
}

#[test]
fn credential_kind_not_accepted_on_route() {
    let r = get("/me", &[("x-api-key", &api_key())]);
    assert_denied(&r, 401, "credential-not-accepted");
}

#[test]
fn duplicate_and_conflicting_credentials_are_400() {
    let r =
        scenario().request(|r| r.path("/api/x").header("x-api-key", &api_key()).header("X-Api-Key", &api_key())).run();
    assert_denied(&r, 400, "duplicate-credential");
    assert!(challenge(&r).contains("error=\"invalid_request\""), "{}", challenge(&r));
    let r = scenario().request(|r| r.path("/api/x").bearer(&token()).header("x-api-key", &api_key())).run();
    assert_denied(&r, 400, "conflicting-credentials");
    // Two Authorization lines: an intermediary could pick either, so neither is trusted.
    let r = scenario().request(|r| r.path("/api/x").bearer(&token()).bearer(&token())).run();
    assert_denied(&r, 400, "duplicate-credential");
}

#[test]
fn malformed_credential_headers_are_400() {
    assert_denied(&get("/api/x", &[("authorization", "Bearer")]), 400, "malformed-credential");
    assert_denied(&get("/api/x", &[("authorization", "Bearer a b")]), 400, "malformed-credential");
    let r = scenario().request(|r| r.path("/api/x").header_bytes("x-api-key", b"mg_\xff\xfe")).run();
    assert_denied(&r, 400, "malformed-credential");
    assert_denied(&get("/catalog/x", &[("x-guest-id", "bad id!")]), 400, "malformed-credential");
}

#[test]
fn non_bearer_authorization_is_not_a_credential() {
    let r = get("/api/x", &[("authorization", "Basic dXNlcjpwYXNz")]);
    assert_denied(&r, 401, "missing-credentials");
}

#[test]
fn deny_route_and_default_deny_are_403_without_challenge() {
    let r = get_with_token("/internal/metrics", &token());
    let body = assert_denied(&r, 403, "route-denied");
    assert_eq!(body["route"], "internal");
    assert!(r.denial().header("www-authenticate").is_none());
    let r = get_with_token("/unrouted", &token());
    let body = assert_denied(&r, 403, "route-denied");
    assert_eq!(body["route"], "default");
}

#[test]
fn insufficient_role() {
    let t = token_with(json!({"roles": ["dev"]}));
    let r = get_with_token("/admin/users", &t);
    assert_denied(&r, 403, "insufficient-role");
    assert!(challenge(&r).contains("error=\"insufficient_scope\""));
    // roles_all needs both admin and oncall.
    assert_denied(&get_with_token("/ops/page", &token()), 403, "insufficient-role");
    get_with_token("/ops/page", &token_with(json!({"roles": ["admin", "oncall"]}))).allowed();
}

#[test]
fn insufficient_scope_advertises_the_required_scope() {
    let r = get_with_token("/exports/all", &token());
    let body = assert_denied(&r, 403, "insufficient-scope");
    assert_eq!(challenge(&r), "Bearer realm=\"meshgate\", error=\"insufficient_scope\", scope=\"reports:write\"");
    assert_eq!(body["required_scopes"], json!(["reports:write"]));
}

#[test]
fn wrong_app() {
    let r = get("/billing/x", &[("x-api-key", &api_key())]);
    assert_denied(&r, 403, "wrong-app");
}

#[test]
fn guest_may_not_write() {
    let r = scenario().request(|r| r.method("POST").path("/catalog/shoes").header("x-guest-id", "guest-123")).run();
    assert_denied(&r, 403, "guest-read-only");
}

#[test]
fn guest_header_is_not_a_credential_on_other_routes() {
    let r = get("/api/x", &[("x-guest-id", "guest-123")]);
    assert_denied(&r, 401, "missing-credentials");
}

#[test]
fn minimal_problem_details_and_custom_realm() {
    let r = scenario_on(config_with(json!({"problem_details": "minimal", "realm": "acme"})))
        .request(|r| r.path("/exports/x").bearer(&token()))
        .run();
    let body = assert_denied(&r, 403, "insufficient-scope");
    assert!(body.get("route").is_none() && body.get("required_scopes").is_none(), "{body}");
    assert!(challenge(&r).starts_with("Bearer realm=\"acme\""));
}

#[test]
fn unusable_configuration_fails_closed_with_503() {
    // Envoy would refuse the config; if requests still arrive, the filter must not let
    // them through.
    let host = meshgate_tests::Host::new();
    let mut vm = meshgate_tests::Vm::new(
        &host,
        meshgate_tests::Program::filter(),
        meshgate_tests::VmOptions::with_config("{not json"),
    )
    .unwrap();
    assert!(vm.configure().is_err());
    let (outcome, _) = vm.roundtrip(&meshgate_tests::Request::get("/api/x").bearer(&token())).unwrap();
    let meshgate_tests::Outcome::Responded(resp) = outcome else { panic!("{outcome:?}") };
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body_json()["type"], "urn:meshgate:problem:unavailable");
}

#[test]
fn denials_are_counted_by_reason() {
    let mut r = get_with_token("/api/x", &token_with(json!({"exp": NOW - 3600})));
    assert_eq!(r.metric("meshgate.denied"), Some(1));
    assert_eq!(r.metric("meshgate.denied.token-expired"), Some(1));
    assert_eq!(r.metric("meshgate.allowed"), Some(0));
}
