//! Configuration rejected at `on_configure`, with a log line naming the field — never a trap.

use serde_json::{Value, json};

use crate::common::*;

fn rejected(config: &[u8]) -> String {
    match meshgate_tests::Scenario::new().config_raw(config.to_vec()).configure() {
        Err(e @ meshgate_tests::HostError::ConfigureRejected { .. }) => e.log_text(),
        Err(other) => panic!("expected a clean rejection, got {other}"),
        Ok(_) => panic!("configuration was accepted: {}", String::from_utf8_lossy(config)),
    }
}

fn rejected_json(config: Value) -> String {
    rejected(config.to_string().as_bytes())
}

#[test]
fn the_reference_config_and_an_empty_one_are_accepted() {
    scenario().configure().unwrap();
    meshgate_tests::Scenario::new().config(json!({})).configure().unwrap();
}

#[test]
fn empty_config_denies_by_default() {
    let r = meshgate_tests::Scenario::new().config(json!({})).request(|r| r.path("/x")).run();
    assert_denied(&r, 403, "route-denied");
}

#[test]
fn invalid_json_is_rejected() {
    let logs = rejected(b"{\"routes\": [");
    assert!(logs.contains("invalid plugin configuration"), "{logs}");
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let logs = rejected_json(json!({"routes": [{"path": {"prefix": "/"}, "policy": {"acess": "public"}}]}));
    assert!(logs.contains("routes[0].policy"), "{logs}");
}

#[test]
fn weak_hs256_secret_is_rejected() {
    let mut c = config();
    c["issuers"][0]["keys"][0]["k"] = json!(meshgate_tests::tokens::b64url(b"short"));
    let logs = rejected_json(c);
    assert!(logs.contains("issuers[0].keys[0]"), "{logs}");
}

#[test]
fn issuer_without_audience_is_rejected() {
    let mut c = config();
    c["issuers"][0]["audiences"] = json!([]);
    assert!(rejected_json(c).contains("issuers[0].audiences"));
}

#[test]
fn duplicate_kid_is_rejected() {
    let mut c = config();
    c["issuers"][0]["keys"][1]["kid"] = json!("k1");
    assert!(rejected_json(c).contains("kid"));
}

#[test]
fn reserved_or_invalid_header_names_are_rejected() {
    let logs = rejected_json(config_with(json!({"headers": {"user_id": "authorization"}})));
    assert!(logs.contains("headers.user_id"), "{logs}");
    let logs = rejected_json(config_with(json!({"headers": {"app_id": "x app"}})));
    assert!(logs.contains("headers.app_id"), "{logs}");
}

#[test]
fn guest_credential_without_guest_flag_is_rejected() {
    let c = config_with(json!({"routes": [
        {"path": {"prefix": "/"}, "policy": {"credentials": ["guest"]}}
    ]}));
    assert!(rejected_json(c).contains("routes[0].policy.credentials"));
}

#[test]
fn bad_key_digest_is_rejected() {
    let mut c = config();
    c["keys"]["api_keys"][0]["digest"] = json!("not-hex");
    assert!(rejected_json(c).contains("keys.api_keys[0]"));
}

#[test]
fn invalid_realm_is_rejected() {
    assert!(rejected_json(config_with(json!({"realm": "a\"b"}))).contains("realm"));
}

#[test]
fn a_rejected_reconfigure_is_reported() {
    let mut vm = scenario().configure().unwrap();
    let err = vm.reconfigure(b"{\"routes\": 5}".to_vec()).unwrap_err();
    assert!(matches!(err, meshgate_tests::HostError::ConfigureRejected { .. }), "{err}");
}

#[test]
fn a_json_array_is_not_a_configuration() {
    // serde accepts a sequence for a struct whose fields all have defaults, so `[]` would
    // silently configure an empty (default-deny) filter. A config that is not an object is
    // a mistake the operator must hear about.
    let logs = rejected(b"[]");
    assert!(logs.contains("invalid plugin configuration"), "{logs}");
}
