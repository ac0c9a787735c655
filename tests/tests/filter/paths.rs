//! Path normalization through the binary: routes are matched on the canonical path, the
//! upstream receives that same path, ambiguous forms are refused with 400.

use serde_json::json;

use crate::common::*;

fn upstream_path(r: &meshgate_tests::ScenarioResult) -> String {
    r.allowed().get(":path").unwrap_or_default()
}

#[test]
fn dot_segments_are_resolved_before_matching() {
    // `/api/../admin` is the admin route: a dev token without the admin role is refused.
    let dev = token_with(json!({"roles": ["dev"]}));
    assert_denied(&get_with_token("/api/../admin/users", &dev), 403, "insufficient-role");
    assert_denied(&get_with_token("/api/%2e%2E/admin/users", &dev), 403, "insufficient-role");
    assert_denied(&get_with_token("/api/./../internal/x", &token()), 403, "route-denied");
}

#[test]
fn the_upstream_receives_the_normalized_path() {
    let r = get_with_token("//api///a/./b/../c", &token());
    assert_eq!(upstream_path(&r), "/api/a/c");
    let r = get_with_token("/%61pi/x", &token());
    assert_eq!(upstream_path(&r), "/api/x");
}

#[test]
fn the_query_is_kept_untouched() {
    let r = get_with_token("/api/../api/x?next=%2F..%2Fadmin&a=1", &token());
    assert_eq!(upstream_path(&r), "/api/x?next=%2F..%2Fadmin&a=1");
}

#[test]
fn ambiguous_encodings_are_400() {
    for path in [
        "/api/..%2Fadmin",
        "/api/%2fadmin",
        "/api/%5Cadmin",
        "/api\\admin",
        "/api/%00",
        "/api/%C0%AF",
        "/api/%zz",
        "/api/x#frag",
    ] {
        let r = get_with_token(path, &token());
        let body = assert_denied(&r, 400, "invalid-path");
        assert!(body["title"].is_string(), "{path}");
    }
}

#[test]
fn not_origin_form_is_400() {
    for path in ["*", "http://evil.test/api", "api/x"] {
        assert_denied(&get_with_token(path, &token()), 400, "invalid-path");
    }
}

#[test]
fn raw_non_utf8_path_is_400() {
    let r = scenario().request(|r| r.path_bytes(b"/api/\xff").bearer(&token())).run();
    assert_denied(&r, 400, "invalid-path");
}

#[test]
fn path_parameters_are_refused_unless_enabled() {
    assert_denied(&get_with_token("/public/..;/admin", &token()), 400, "invalid-path");
    let r = scenario_on(config_with(json!({"paths": {"allow_path_parameters": true}})))
        .request(|r| r.path("/api/x;v=1").bearer(&token()))
        .run();
    r.allowed();
}

#[test]
fn overlong_path_is_400() {
    let r = scenario_on(config_with(json!({"paths": {"max_path_bytes": 64}})))
        .request(|r| r.path(&format!("/api/{}", "a".repeat(100))).bearer(&token()))
        .run();
    assert_denied(&r, 400, "invalid-path");
}

#[test]
fn prefix_is_segment_aware_and_case_sensitive_by_default() {
    // `/administrator` is not under `/admin`; `/ADMIN` is not `/admin`: both fall to default deny.
    assert_denied(&get_with_token("/administrator", &token()), 403, "route-denied");
    assert_denied(&get_with_token("/ADMIN/users", &token()), 403, "route-denied");
    let r = scenario_on(config_with(json!({"paths": {"case_insensitive": true}})))
        .request(|r| r.path("/ADMIN/users").bearer(&token_with(json!({"roles": ["dev"]}))))
        .run();
    assert_denied(&r, 403, "insufficient-role");
}
