//! Anti-spoofing: identity headers sent by the client never reach the upstream; only values
//! from a verified credential do.

use serde_json::json;

use crate::common::*;

const SPOOFED: [(&str, &str); 8] = [
    ("x-user-id", "attacker"),
    ("X-User-Roles", "admin"),
    ("x-user-scopes", "reports:write"),
    ("X-APP-ID", "billing"),
    ("x-auth-method", "admin"),
    ("x-key-id", "adm-1"),
    ("x-session-id", "stolen"),
    ("x-guest-id", "guest-1"),
];

fn spoof(path: &str, extra: &[(&str, &str)]) -> meshgate_tests::ScenarioResult {
    let mut headers: Vec<(&str, &str)> = SPOOFED.to_vec();
    headers.extend_from_slice(extra);
    get(path, &headers)
}

#[test]
fn anonymous_public_request_loses_every_spoofed_header() {
    let r = spoof("/health", &[]);
    let h = r.allowed();
    for (name, _) in SPOOFED {
        assert!(!h.contains(name), "{name} survived: {h:?}");
    }
}

#[test]
fn spoofed_values_are_replaced_not_appended() {
    let t = token_with(json!({"app_id": null, "sid": null}));
    let r = spoof("/api/x", &[("authorization", &format!("Bearer {t}"))]);
    let h = r.allowed();
    assert_eq!(h.get_all("x-user-id"), ["user-42"]);
    assert_eq!(h.get_all("x-user-roles"), ["admin,dev"]);
    assert_eq!(h.get_all("x-auth-method"), ["jwt"]);
    // Claims the token lacks must not be filled from the client's copy.
    for name in ["x-app-id", "x-session-id", "x-key-id", "x-guest-id"] {
        assert!(!h.contains(name), "{name} survived: {h:?}");
    }
}

/// A request with many ordinary headers: the filter edits it one header at a time (cheaper
/// there than rewriting the whole map) and must still leave one value of each header it
/// sets, whatever the client sent.
#[test]
fn spoofed_copies_are_replaced_when_headers_are_edited_one_by_one() {
    let t = token_with(json!({"app_id": null, "sid": null}));
    let bearer = format!("Bearer {t}");
    let ordinary: Vec<String> = (0..20).map(|i| format!("x-ordinary-{i}")).collect();
    let mut headers = vec![
        ("authorization", bearer.as_str()),
        ("x-user-id", "attacker"),
        ("X-User-Id", "attacker-2"),
        ("x-user-roles", "admin"),
        ("x-session-id", "stolen"),
    ];
    headers.extend(ordinary.iter().map(|n| (n.as_str(), "v")));
    meshgate_tests::host_calls();
    let r = get("/api/x", &headers);
    let calls = meshgate_tests::host_calls();
    assert_eq!(calls.get("proxy_set_header_map_pairs"), None, "{calls:?}");
    let h = r.allowed();
    assert_eq!(h.get_all("x-user-id"), ["user-42"]);
    assert_eq!(h.get_all("x-user-roles"), ["admin,dev"]);
    assert_eq!(h.get_all("x-auth-method"), ["jwt"]);
    assert!(!h.contains("x-session-id"), "{h:?}");
    assert_eq!(h.get_all("x-ordinary-19"), ["v"]);
}

/// A header edit the host refuses leaves the request half edited (a spoofed header not yet
/// removed, part of the identity set): the filter answers 503 even when failing open, rather
/// than forward it. Both ways of editing: one call per header (a request with many headers)
/// and the whole map (a small request with many edits).
#[test]
fn a_refused_header_edit_answers_503_even_when_failing_open() {
    let t = token_with(json!({"app_id": null, "sid": null}));
    let bearer = format!("Bearer {t}");
    let ordinary: Vec<String> = (0..20).map(|i| format!("x-ordinary-{i}")).collect();
    let cases = [
        ("proxy_replace_header_map_value", 20),
        ("proxy_remove_header_map_value", 20),
        ("proxy_set_header_map_pairs", 0),
    ];
    for (refused, ordinary_count) in cases {
        let mut headers: Vec<(String, String)> = SPOOFED.iter().map(|&(n, v)| (n.to_owned(), v.to_owned())).collect();
        headers.push(("authorization".to_owned(), bearer.clone()));
        headers.extend(ordinary.iter().take(ordinary_count).map(|n| (n.clone(), "v".to_owned())));
        meshgate_tests::refuse_host_calls(&[refused], meshgate_tests::abi::Status::InternalFailure);
        let r = scenario_on(config_with(json!({"failure_mode": "open"})))
            .request(move |mut req| {
                req = req.path("/api/x");
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                req
            })
            .run();
        meshgate_tests::refuse_host_calls(&[], meshgate_tests::abi::Status::Ok);
        let calls = meshgate_tests::host_calls();
        assert!(calls.contains_key(refused), "{refused} was not the way this request was edited: {calls:?}");
        assert_denied(&r, 503, "unavailable");
    }
}

/// Failing open when the header map cannot be read: the request goes on without identity,
/// every header the filter owns removed by name; when even that is refused, 503.
#[test]
fn failing_open_on_an_unreadable_header_map_still_strips_identity_headers() {
    let config = config_with(json!({"failure_mode": "open"}));
    let run = |refused: &[&'static str]| {
        meshgate_tests::refuse_host_calls(refused, meshgate_tests::abi::Status::InternalFailure);
        let r = scenario_on(config.clone())
            .request(|r| r.path("/api/x").header("x-user-id", "attacker").header("X-User-Roles", "admin"))
            .run();
        meshgate_tests::refuse_host_calls(&[], meshgate_tests::abi::Status::Ok);
        r
    };
    let r = run(&["proxy_get_header_map_pairs"]);
    let h = r.allowed();
    assert!(!h.contains("x-user-id") && !h.contains("x-user-roles"), "spoofed identity went upstream: {h:?}");
    let r = run(&["proxy_get_header_map_pairs", "proxy_remove_header_map_value"]);
    assert_denied(&r, 503, "unavailable");
}

/// Spellings of the headers the filter owns with `_` (`X_User_ID`, `x_uSer_roles`, …, what
/// CGI-style upstreams read as the real ones): one among 60 ordinary headers (edited one
/// call each) and a flood of 64 on a small request (one whole-map write). Neither way lets a
/// spelling reach the upstream, and the real identity is there once.
#[test]
fn a_flood_of_underscore_spellings_is_stripped_on_both_edit_paths() {
    let t = token_with(json!({"app_id": null, "sid": null}));
    let bearer = format!("Bearer {t}");
    // 16 case spellings of each of four owned names with `_` for `-`: 64 headers.
    let spellings: Vec<String> = ["x_user_id", "x_user_roles", "x_user_scopes", "x_auth_method"]
        .iter()
        .flat_map(|base| {
            (0..16u32).map(move |mask| {
                base.chars()
                    .enumerate()
                    .map(|(j, c)| if mask >> (j % 4) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                    .collect()
            })
        })
        .collect();
    let ordinary: Vec<String> = (0..60).map(|i| format!("x-ordinary-{i}")).collect();
    assert_eq!(spellings.iter().collect::<std::collections::BTreeSet<_>>().len(), 64);
    for (spelled, ordinary_count, one_by_one) in [(1, 60, true), (spellings.len(), 0, false)] {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(spellings.iter().take(spelled).map(|n| (n.as_str(), "mallory")));
        headers.extend(ordinary.iter().take(ordinary_count).map(|n| (n.as_str(), "v")));
        meshgate_tests::host_calls();
        let r = get("/api/x", &headers);
        let calls = meshgate_tests::host_calls();
        assert_eq!(calls.contains_key("proxy_set_header_map_pairs"), !one_by_one, "{calls:?}");
        let h = r.allowed();
        for name in spellings.iter().take(spelled) {
            assert!(!h.contains(name), "{name} survived: {h:?}");
        }
        assert_eq!(h.get_all("x-user-id"), ["user-42"]);
    }
}

#[test]
fn repeated_spoofed_headers_are_all_removed() {
    let r = get("/health", &[("x-user-id", "a"), ("x-user-id", "b"), ("X-User-Id", "c")]);
    assert!(!r.allowed().contains("x-user-id"));
}

#[test]
fn spoofed_headers_do_not_grant_access() {
    // A client claiming admin roles without a credential is still anonymous.
    let r = spoof("/admin/users", &[]);
    assert_denied(&r, 401, "missing-credentials");
}

#[test]
fn custom_identity_header_names_are_stripped_too() {
    let r = scenario_on(config_with(json!({"headers": {"user_id": "x-principal"}})))
        .request(|r| r.path("/health").header("x-principal", "attacker"))
        .run();
    assert!(!r.allowed().contains("x-principal"));
}

#[test]
fn guest_header_on_a_non_guest_public_route_is_stripped() {
    let r = get("/health", &[("x-guest-id", "guest-1")]);
    assert!(!r.allowed().contains("x-guest-id"));
}
