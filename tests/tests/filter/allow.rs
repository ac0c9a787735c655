//! Requests the filter lets through, and the identity it injects.

use meshgate_tests::tokens;
use serde_json::json;

use crate::common::*;

#[test]
fn valid_jwt_injects_every_identity_header() {
    let r = get_with_token("/api/orders", &token());
    let h = r.allowed();
    assert_eq!(h.get("x-user-id").as_deref(), Some("user-42"));
    assert_eq!(h.get("x-user-roles").as_deref(), Some("admin,dev"));
    assert_eq!(h.get("x-user-scopes").as_deref(), Some("reports:read,profile"));
    assert_eq!(h.get("x-app-id").as_deref(), Some("billing"));
    assert_eq!(h.get("x-auth-method").as_deref(), Some("jwt"));
    assert_eq!(h.get("x-session-id").as_deref(), Some("sess-9"));
    assert!(!h.contains("x-key-id"));
    // A JWT is not hidden from the upstream (only API keys are).
    assert!(h.contains("authorization"));
    assert_eq!(h.get(":path").as_deref(), Some("/api/orders"));
}

#[test]
fn api_key_header_is_verified_and_hidden() {
    let r = get("/reports/q1", &[("x-api-key", &api_key())]);
    let h = r.allowed();
    assert_eq!(h.get("x-user-id").as_deref(), Some("svc-reporting"));
    assert_eq!(h.get("x-auth-method").as_deref(), Some("api_key"));
    assert_eq!(h.get("x-key-id").as_deref(), Some("key-1"));
    assert_eq!(h.get("x-app-id").as_deref(), Some("reports"));
    assert_eq!(h.get("x-user-scopes").as_deref(), Some("reports:read"));
    assert!(!h.contains("x-api-key"), "the key must not reach the upstream: {h:?}");
}

#[test]
fn api_key_as_bearer_is_recognised_by_prefix_and_hidden() {
    let r = get_with_token("/api/x", &api_key());
    let h = r.allowed();
    assert_eq!(h.get("x-auth-method").as_deref(), Some("api_key"));
    assert_eq!(h.get("x-key-id").as_deref(), Some("key-1"));
    assert!(!h.contains("authorization"), "{h:?}");
}

#[test]
fn hide_credentials_false_keeps_the_key_header() {
    let mut keys = config()["keys"].clone();
    keys["hide_credentials"] = json!(false);
    let r = scenario_on(config_with(json!({"keys": keys})))
        .request(|r| r.path("/api/x").header("x-api-key", &api_key()))
        .run();
    assert_eq!(r.allowed().get("x-api-key"), Some(api_key()));
}

#[test]
fn service_and_admin_keys() {
    let r = get("/billing/invoices", &[("x-service-key", &service_key())]);
    let h = r.allowed();
    assert_eq!(h.get("x-auth-method").as_deref(), Some("service"));
    assert_eq!(h.get("x-user-id").as_deref(), Some("svc-billing"));
    assert_eq!(h.get("x-key-id").as_deref(), Some("svc-1"));
    assert!(!h.contains("x-service-key"));

    let r = get("/admin/users", &[("x-admin-key", &admin_key())]);
    let h = r.allowed();
    assert_eq!(h.get("x-auth-method").as_deref(), Some("admin"));
    assert_eq!(h.get("x-user-id").as_deref(), Some("ops"));
    assert!(!h.contains("x-admin-key"));
}

#[test]
fn guest_may_read_a_guest_route() {
    let r = get("/catalog/shoes", &[("x-guest-id", "guest-123")]);
    let h = r.allowed();
    assert_eq!(h.get("x-auth-method").as_deref(), Some("guest"));
    assert_eq!(h.get("x-guest-id").as_deref(), Some("guest-123"));
    assert!(!h.contains("x-user-id"));
}

#[test]
fn public_route_without_credential_passes_anonymously() {
    let mut r = get("/health", &[]);
    let h = r.allowed();
    assert!(!h.contains("x-auth-method"));
    assert!(!h.contains("x-user-id"));
    assert_eq!(r.metric("meshgate.allowed.anonymous"), Some(1));
}

#[test]
fn public_route_with_valid_token_still_gets_identity() {
    let r = get_with_token("/health", &token());
    assert_eq!(r.allowed().get("x-user-id").as_deref(), Some("user-42"));
}

#[test]
fn public_route_ignores_an_invalid_token() {
    let r = get_with_token("/health", &tokens::tamper_signature(&token()));
    let h = r.allowed();
    assert!(!h.contains("x-user-id"), "{h:?}");
}

#[test]
fn template_route_matches_one_segment_and_methods() {
    let r = scenario().request(|r| r.method("PUT").path("/items/42").bearer(&token())).run();
    r.allowed();
    // Two segments do not match `{id}`: default deny.
    let r = get_with_token("/items/42/extra", &token());
    assert_denied(&r, 403, "route-denied");
    // A method outside the rule's list does not match either.
    let r = scenario().request(|r| r.method("DELETE").path("/items/42").bearer(&token())).run();
    assert_denied(&r, 403, "route-denied");
}

#[test]
fn wildcard_host_route() {
    let r = scenario().request(|r| r.host("acme.tenant.test:8443").path("/anything")).run();
    r.allowed();
    // The bare parent domain is not covered by `*.tenant.test`.
    let r = scenario().request(|r| r.host("tenant.test").path("/anything")).run();
    assert_denied(&r, 403, "route-denied");
}

#[test]
fn token_within_clock_skew_is_accepted() {
    let r = get_with_token("/api/x", &token_with(json!({"exp": NOW - 10})));
    r.allowed();
}

#[test]
fn second_key_of_the_issuer_verifies() {
    let t = tokens::hs256("k2", &claims(), SECRET2);
    get_with_token("/api/x", &t).allowed();
}

#[test]
fn custom_header_names_are_used_for_injection() {
    let r = scenario_on(config_with(json!({"headers": {"user_id": "x-principal", "auth_method": "x-authn"}})))
        .request(|r| r.path("/api/x").bearer(&token()))
        .run();
    let h = r.allowed();
    assert_eq!(h.get("x-principal").as_deref(), Some("user-42"));
    assert_eq!(h.get("x-authn").as_deref(), Some("jwt"));
    assert!(!h.contains("x-user-id"));
}

#[test]
fn allowed_requests_are_counted_by_method() {
    let mut r = get("/reports/q1", &[("x-api-key", &api_key())]);
    r.allowed();
    assert_eq!(r.metric("meshgate.allowed"), Some(1));
    assert_eq!(r.metric("meshgate.allowed.api_key"), Some(1));
    assert_eq!(r.metric("meshgate.denied"), Some(0));
}

#[test]
fn security_headers_are_added_to_upstream_responses() {
    let r = scenario_on(config_with(
        json!({"security_headers": {"hsts": "max-age=63072000", "content_type_options": true}}),
    ))
    .request(|r| r.path("/health"))
    .upstream_response(&[(":status", "200")])
    .run();
    let h = &r.stream().response_headers;
    assert_eq!(h.get("strict-transport-security").as_deref(), Some("max-age=63072000"));
    assert_eq!(h.get("x-content-type-options").as_deref(), Some("nosniff"));
}

#[test]
fn host_and_scheme_matching_is_case_insensitive() {
    let r = scenario().request(|r| r.host("ACME.Tenant.TEST").path("/x")).run();
    r.allowed();
    get("/api/x", &[("authorization", &format!("bEaReR {}", token()))]).allowed();
}

#[test]
fn guests_may_use_head_and_options() {
    for method in ["HEAD", "OPTIONS"] {
        let r = scenario().request(|r| r.method(method).path("/catalog/x").header("x-guest-id", "g-1")).run();
        r.allowed();
    }
}
