//! The sync feed through the compiled filter: one poller per host (process),
//! state shared with the other VM through shared data, versions that never
//! go backwards, bad responses refused with the last good state kept, and
//! the staleness policy when the control plane is unreachable.

use meshgate_tests::{Host, HttpResponse, Outcome, Request, Vm, VmOptions, tokens};
use serde_json::{Value, json};
use std::time::Duration;

use crate::common::*;

const CP_ISSUER: &str = "https://cp.meshgate.test";
const CP_SECRET: &[u8] = b"control-plane-hs256-secret-0123456789";

fn feed_key() -> String {
    tokens::api_key("mg", &[42u8; 32])
}

fn synced_config(extra: Value) -> Value {
    let mut cfg = config();
    if let Some(issuers) = cfg["issuers"].as_array_mut() {
        issuers.push(json!({"issuer": CP_ISSUER, "audiences": [AUDIENCE]}));
    }
    let mut sync =
        json!({"cluster": "control_plane", "api_key": feed_key(), "wait_secs": 30, "max_staleness_secs": 10});
    if let (Some(s), Some(e)) = (sync.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    cfg["sync"] = sync;
    cfg
}

fn workers(extra: Value) -> (Host, Vm, Vm) {
    let host = Host::new();
    host.set_now(NOW);
    let options = VmOptions::with_config(synced_config(extra).to_string());
    let a = Vm::filter(&host, options.clone()).unwrap();
    let b = Vm::filter(&host, options).unwrap();
    (host, a, b)
}

fn cp_token(jti: &str, sid: &str) -> String {
    let claims = json!({"iss": CP_ISSUER, "aud": AUDIENCE, "sub": "u-1", "exp": NOW + 3600, "iat": NOW - 10,
                        "jti": jti, "sid": sid, "roles": ["admin"]});
    tokens::sign_raw(&json!({"alg": "HS256", "kid": "cp-1", "typ": "at+jwt"}), &claims, CP_SECRET)
}

fn snapshot(version: u64) -> Value {
    json!({"version": version, "kind": "snapshot",
           "signing_keys": [{"issuer": CP_ISSUER, "jwk": {"kty": "oct", "kid": "cp-1", "k": tokens::b64url(CP_SECRET)}}],
           "revocations": [{"kind": "token", "id": "jti-revoked", "until": NOW + 3600}]})
}

fn delta(version: u64, since: u64, changes: Value) -> Value {
    let mut d = json!({"version": version, "kind": "delta", "since": since});
    if let (Some(d), Some(c)) = (d.as_object_mut(), changes.as_object()) {
        d.extend(c.clone());
    }
    d
}

/// Ticks both VMs and returns the one holding the feed call.
fn poll<'a>(a: &'a mut Vm, b: &'a mut Vm) -> &'a mut Vm {
    a.tick().unwrap();
    b.tick().unwrap();
    let calls = a.pending_http_calls().len() + b.pending_http_calls().len();
    assert_eq!(calls, 1, "exactly one poller per process");
    if a.pending_http_calls().is_empty() { b } else { a }
}

fn answer(vm: &mut Vm, response: HttpResponse) {
    assert_eq!(vm.answer_http_calls(|_| Some(response.clone())).unwrap(), 1);
}

fn status(vm: &mut Vm, request: &Request) -> u32 {
    match vm.roundtrip(request).unwrap().0 {
        Outcome::Continued => 200,
        Outcome::Responded(r) => r.status,
        other => panic!("{other:?}"),
    }
}

fn type_of(vm: &mut Vm, request: &Request) -> String {
    match vm.roundtrip(request).unwrap().0 {
        Outcome::Responded(r) => r.body_json()["type"].as_str().unwrap_or_default().to_owned(),
        other => format!("{other:?}"),
    }
}

#[test]
fn one_poller_asks_the_configured_cluster_with_the_filter_credential() {
    let (_host, mut a, mut b) = workers(json!({}));
    assert!(a.tick_period().is_some(), "sync sets a tick");
    let leader = poll(&mut a, &mut b);
    let call = leader.pending_http_calls()[0].clone();
    assert_eq!(call.upstream, "control_plane");
    assert_eq!(call.headers.get(":path").as_deref(), Some("/api/v1/sync?since=0&wait=30&limit=20000"));
    assert_eq!(call.headers.get(":authority").as_deref(), Some("meshgate-control-plane"));
    assert_eq!(call.headers.get("authorization"), Some(format!("Bearer {}", feed_key())));
    assert!(call.timeout_ms >= 30_000);
    // More ticks while the long-poll is outstanding start no second call.
    for _ in 0..5 {
        a.advance_and_tick().unwrap();
        b.advance_and_tick().unwrap();
    }
    assert_eq!(a.pending_http_calls().len() + b.pending_http_calls().len(), 1);
}

#[test]
fn what_one_vm_applies_the_other_enforces_on_its_next_request() {
    let (host, mut a, mut b) = workers(json!({}));
    let token = cp_token("jti-1", "sid-1");
    // Nothing synced yet: 503 with Retry-After, not a 401.
    assert_eq!(type_of(&mut b, &Request::get("/api/x").bearer(&token)), "urn:meshgate:problem:unavailable");
    let leader = poll(&mut a, &mut b);
    answer(leader, HttpResponse::json(200, &snapshot(5)));
    // The leader asks again at once (more may be queued), not on its next tick.
    assert_eq!(a.pending_http_calls().len() + b.pending_http_calls().len(), 1, "re-armed without a tick");
    // Both VMs now accept the control plane's tokens and know its revocations, without a tick.
    for vm in [&mut a, &mut b] {
        assert_eq!(status(vm, &Request::get("/api/x").bearer(&token)), 200);
        let revoked = cp_token("jti-revoked", "sid-1");
        assert_eq!(type_of(vm, &Request::get("/api/x").bearer(&revoked)), "urn:meshgate:problem:revoked");
    }
    assert_eq!(host.metric("meshgate.sync.version").map(|m| m.value), Some(5));
    // The next poll continues from version 5; a delta revoking the session reaches both.
    let leader = poll(&mut a, &mut b);
    assert_eq!(
        leader.pending_http_calls()[0].headers.get(":path").as_deref(),
        Some("/api/v1/sync?since=5&wait=30&limit=20000")
    );
    let revoke = json!({"revocations": [{"kind": "session", "id": "sid-1", "until": NOW + 3600}]});
    answer(leader, HttpResponse::json(200, &delta(6, 5, revoke)));
    for vm in [&mut a, &mut b] {
        assert_eq!(type_of(vm, &Request::get("/api/x").bearer(&token)), "urn:meshgate:problem:revoked");
    }
}

#[test]
fn out_of_order_duplicate_and_bad_responses_keep_the_last_good_state() {
    let (host, mut a, mut b) = workers(json!({"max_body_bytes": 4096}));
    let token = cp_token("jti-1", "sid-1");
    let leader = poll(&mut a, &mut b);
    answer(leader, HttpResponse::json(200, &snapshot(5)));
    let huge = json!({"version": 9, "kind": "snapshot", "revocations":
        (0..200).map(|i| json!({"kind": "token", "id": format!("jti-{i:04}-padding-padding"), "until": NOW + 60})).collect::<Vec<_>>()});
    let bad: Vec<HttpResponse> = vec![
        HttpResponse::json(200, &snapshot(3)), // older
        HttpResponse::json(200, &snapshot(5)), // duplicate
        HttpResponse::json(200, &delta(9, 4, json!({"removed_signing_keys": ["cp-1"]}))), // wrong base
        HttpResponse::new(200, "not json"),
        HttpResponse::new(200, &snapshot(9).to_string().as_bytes()[..50]), // truncated
        HttpResponse::json(
            200,
            &json!({"version": 9, "kind": "snapshot", "signing_keys":
            [{"issuer": CP_ISSUER, "jwk": {"kty": "oct", "kid": "cp-1", "k": "c2hvcnQ"}}]}),
        ), // weak key
        HttpResponse::json(200, &huge),                                    // over max_body_bytes
        HttpResponse::new(500, "{}"),
        HttpResponse::new(401, "{}"),
    ];
    for response in bad {
        for _ in 0..100 {
            a.advance_and_tick().unwrap();
            b.advance_and_tick().unwrap();
            if a.pending_http_calls().len() + b.pending_http_calls().len() == 1 {
                break;
            }
        }
        let leader = if a.pending_http_calls().is_empty() { &mut b } else { &mut a };
        answer(leader, response);
        for vm in [&mut a, &mut b] {
            assert_eq!(status(vm, &Request::get("/api/x").bearer(&token)), 200, "last good state kept");
        }
    }
    assert_eq!(host.metric("meshgate.sync.version").map(|m| m.value), Some(5));
    assert!(host.metric("meshgate.sync.errors").map_or(0, |m| m.value) >= 5, "errors are counted");
}

#[test]
fn unreachable_control_plane_keeps_serving_or_fails_closed_after_max_staleness() {
    for (policy, want) in [("serve", 200), ("fail_closed", 503)] {
        let (host, mut a, mut b) = workers(json!({"on_stale": policy}));
        let token = cp_token("jti-1", "sid-1");
        let leader = poll(&mut a, &mut b);
        answer(leader, HttpResponse::json(200, &snapshot(5)));
        // The control plane goes away: every call fails, with backoff between attempts.
        let mut attempts = 0;
        for _ in 0..60 {
            host.advance(Duration::from_millis(200));
            a.tick().unwrap();
            b.tick().unwrap();
            for vm in [&mut a, &mut b] {
                let tokens: Vec<u32> = vm.pending_http_calls().iter().map(|c| c.token).collect();
                for t in tokens {
                    vm.fail_http_call(t).unwrap();
                    attempts += 1;
                }
            }
        }
        assert!((2..30).contains(&attempts), "backoff spaces retries: {attempts} attempts in 12 s");
        assert_eq!(status(&mut b, &Request::get("/api/x").bearer(&token)), want, "policy {policy}");
        assert!(host.metric("meshgate.sync.staleness_ms").map_or(0, |m| m.value) > 10_000);
    }
}

#[test]
fn another_vm_takes_over_when_the_leader_stops() {
    let (host, mut a, mut b) = workers(json!({}));
    a.tick().unwrap();
    assert_eq!(a.pending_http_calls().len(), 1, "first to tick leads");
    b.tick().unwrap();
    assert!(b.pending_http_calls().is_empty());
    // `a` stops ticking (its worker is gone); its lease runs out.
    host.advance(Duration::from_secs(3));
    b.tick().unwrap();
    assert_eq!(b.pending_http_calls().len(), 1, "b takes over the lease");
}

/// Non-empty shards of the sync state in shared data.
fn live_shards(host: &Host) -> usize {
    host.shared_data_keys()
        .iter()
        .filter(|k| k.starts_with("mg:sync:v2:k:") || k.starts_with("mg:sync:v2:r:"))
        .filter(|k| host.shared_data(k).is_some_and(|(v, _)| !v.is_empty()))
        .count()
}

#[test]
fn a_leader_that_loses_its_lease_mid_snapshot_blanks_its_pages_and_ignores_the_late_answer() {
    let (host, mut a, mut b) = workers(json!({}));
    a.tick().unwrap();
    assert_eq!(a.pending_http_calls().len(), 1, "first to tick leads");
    let mut first = snapshot(5);
    first["api_keys"] = json!([{"id": "k1", "digest": "ab".repeat(32), "subject": "u-1"}]);
    first["total_keys"] = json!(2);
    first["total_revocations"] = json!(1);
    first["next"] = json!("k.cursor");
    answer(&mut a, HttpResponse::json(200, &first));
    let page = a.pending_http_calls();
    assert_eq!(page.len(), 1, "asks for the next page at once");
    assert!(page[0].headers.get(":path").unwrap_or_default().contains("after=k.cursor"));
    assert!(live_shards(&host) > 0, "the first page is stored");
    // `a` stalls past its lease; `b` takes over and starts from scratch.
    host.advance(Duration::from_secs(3));
    b.tick().unwrap();
    assert_eq!(b.pending_http_calls().len(), 1, "b leads");
    a.tick().unwrap();
    assert_eq!(live_shards(&host), 0, "a blanked the pages it had stored");
    // The page `a` asked for arrives after all: ignored, nothing published.
    let mut second = json!({"version": 5, "kind": "snapshot",
                            "api_keys": [{"id": "k2", "digest": "cd".repeat(32), "subject": "u-2"}]});
    second["revocations"] = json!([]);
    answer(&mut a, HttpResponse::json(200, &second));
    assert_eq!(live_shards(&host), 0);
    assert!(a.pending_http_calls().is_empty());
    // b's snapshot is what gets published.
    answer(&mut b, HttpResponse::json(200, &snapshot(6)));
    assert_eq!(host.metric("meshgate.sync.version").map(|m| m.value), Some(6));
}
