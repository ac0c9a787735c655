//! Credits tables: config errors, the budget across workers, the report
//! life cycle (retry, acknowledge, reflect) and settlement.

use super::flush::{acknowledge, next_report, pending};
use super::records::{self, Account};
use super::*;
use crate::ratelimit::table::MemoryStore;
use meshgate_wire::config::CredentialKind;
use meshgate_wire::credits::CreditState;

fn cfg(json: serde_json::Value) -> CreditsConfig {
    serde_json::from_value(json).unwrap_or_default()
}

fn credits(json: serde_json::Value) -> CompiledCredits {
    compile(&cfg(json), &["llm", "free"], true).unwrap_or_else(|e| panic!("{e}"))
}

fn user(sub: &str, key: Option<&str>, app: Option<&str>) -> Identity {
    Identity {
        method: if key.is_some() { CredentialKind::ApiKey } else { CredentialKind::Jwt },
        subject: sub.into(),
        roles: vec![],
        scopes: vec![],
        app_id: app.map(Into::into),
        key_id: key.map(Into::into),
        session_id: None,
        guest_id: None,
        key_limit: None,
    }
}

fn push(store: &MemoryStore, version: u64, accounts: &[(AccountKind, &str, i64)]) {
    let states: Vec<CreditState> = accounts
        .iter()
        .map(|(kind, id, balance)| CreditState { kind: *kind, id: (*id).into(), balance: *balance })
        .collect();
    records::publish(store, &states, version).unwrap();
}

fn acct(kind: AccountKind, id: &str) -> Account {
    Account { kind, id: id.into() }
}

#[test]
fn config_errors_name_their_field() {
    let cases = [
        (serde_json::json!({"routes": {"nope": 1}}), "credits.routes.nope"),
        (serde_json::json!({"exhausted_status": 403}), "credits.exhausted_status"),
        (serde_json::json!({"flush_interval_ms": 10}), "credits.flush_interval_ms"),
        (serde_json::json!({"report_path": "x"}), "credits.report_path"),
        (serde_json::json!({"charge": ["uses"]}), "credits.charge"),
        (serde_json::json!({"cost_header": "a b"}), "credits.cost_header"),
    ];
    for (json, field) in cases {
        let err = compile(&cfg(json.clone()), &["llm"], true).err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some(field), "{json}");
    }
    assert_eq!(compile(&cfg(serde_json::json!({})), &[], false).err().map(|e| e.field).as_deref(), Some("credits"));
    let ok = credits(serde_json::json!({"routes": {"llm": 5}, "exhausted_status": 429}));
    assert_eq!((ok.exhausted_status, ok.cost_header.as_str(), ok.flush_interval_ms), (429, "x-credits-used", 1000));
}

#[test]
fn two_workers_share_one_budget_exactly() {
    // One store = one Envoy process; the workers interleave requests.
    let store = MemoryStore::default();
    let c = credits(serde_json::json!({"routes": {"llm": 1}}));
    push(&store, 3, &[(AccountKind::User, "u1", 10)]);
    let id = user("u1", None, None);
    let admitted = (0..25).filter(|_| c.admit(&store, 3, "llm", Some(&id)).is_ok()).count();
    assert_eq!(admitted, 10, "stops at exactly the balance: no overspend within a process");
    assert_eq!(c.admit(&store, 3, "llm", Some(&id)), Err(Refusal::Credits));
    // Unmetered routes pass; unknown identities are refused by default.
    assert!(c.admit(&store, 3, "free", Some(&id)).is_ok());
    assert_eq!(c.admit(&store, 3, "llm", Some(&user("nobody", None, None))), Err(Refusal::Credits));
    assert_eq!(c.admit(&store, 3, "llm", None), Err(Refusal::Credits));
    let open = credits(serde_json::json!({"routes": {"llm": 1}, "unmetered": "allow"}));
    assert_eq!(open.admit(&store, 3, "llm", None), Ok(Reservation::default()));
}

#[test]
fn cost_needs_headroom_and_charge_order_picks_the_first_account() {
    let store = MemoryStore::default();
    let c = credits(serde_json::json!({"routes": {"llm": 4}}));
    push(&store, 1, &[(AccountKind::App, "shop", 10), (AccountKind::Key, "k1", 5)]);
    // Key first: 5 credits hold one request of 4, not two.
    let id = user("u1", Some("k1"), Some("shop"));
    assert!(c.admit(&store, 1, "llm", Some(&id)).is_ok());
    assert_eq!(c.admit(&store, 1, "llm", Some(&id)), Err(Refusal::Credits));
    // A JWT of the same app pays from the app (no user account).
    let jwt = user("u1", None, Some("shop"));
    assert_eq!(
        c.admit(&store, 1, "llm", Some(&jwt)).map(|r| r.credits.map(|(a, n)| (a.kind, n))),
        Ok(Some((AccountKind::App, 4)))
    );
}

#[test]
fn reports_are_resent_unchanged_until_acknowledged_then_reflected_once() {
    let store = MemoryStore::default();
    let c = credits(serde_json::json!({"routes": {"llm": 1}}));
    let u1 = acct(AccountKind::User, "u1");
    push(&store, 5, &[(AccountKind::User, "u1", 10)]);
    let id = user("u1", None, None);
    for _ in 0..3 {
        assert!(c.admit(&store, 5, "llm", Some(&id)).is_ok());
    }
    let report = next_report(&store, 5, "n1").unwrap().unwrap();
    assert_eq!((report.id.as_str(), report.usage.len(), report.usage[0].amount), ("n1-1", 1, 3));
    // Counted while in flight, and more usage meanwhile goes to the next report.
    assert!(c.admit(&store, 5, "llm", Some(&id)).is_ok());
    assert_eq!(remaining(&store, &u1, 5).unwrap(), Some(6));
    // Timeout / outage: the same report again, nothing added to it.
    for _ in 0..3 {
        assert_eq!(next_report(&store, 5, "n1").unwrap().as_ref(), Some(&report));
    }
    assert!(!acknowledge(&store, "n1-9", 7).unwrap(), "a stranger's ack is ignored");
    assert!(acknowledge(&store, "n1-1", 7).unwrap());
    assert!(!acknowledge(&store, "n1-1", 7).unwrap(), "a duplicate answer changes nothing");
    // Acknowledged at 7 but the synced state is still 5: keep subtracting.
    assert_eq!(next_report(&store, 5, "n1").unwrap(), None);
    assert_eq!(remaining(&store, &u1, 5).unwrap(), Some(6));
    // The control plane pushes 7 (balance 10 - 3): written before the meta
    // moves, a reader still at 6 double-subtracts (pessimistic, briefly)...
    push(&store, 7, &[(AccountKind::User, "u1", 7)]);
    assert_eq!(remaining(&store, &u1, 6).unwrap(), Some(3));
    // ...and at 7 the in-flight 3 is no longer subtracted: exactly once.
    assert_eq!(remaining(&store, &u1, 7).unwrap(), Some(6));
    assert_eq!(pending(&store, std::slice::from_ref(&u1), 7).unwrap(), 1);
    let next = next_report(&store, 7, "n1").unwrap().unwrap();
    assert_eq!((next.id.as_str(), next.usage[0].amount), ("n1-2", 1));
    assert_eq!(remaining(&store, &u1, 7).unwrap(), Some(6));
    // An older balance never overwrites a newer one.
    push(&store, 6, &[(AccountKind::User, "u1", 100)]);
    assert_eq!(records::read_balance(&store, &u1).unwrap().map(|b| b.balance), Some(7));
}

#[test]
fn response_cost_replaces_the_reservation_and_refunds() {
    let store = MemoryStore::default();
    let c = credits(serde_json::json!({"routes": {"llm": 2}}));
    let u1 = acct(AccountKind::User, "u1");
    push(&store, 1, &[(AccountKind::User, "u1", 100)]);
    let id = user("u1", None, None);
    let table: [(Option<&[u8]>, u64, i64); 6] = [
        (None, 2, 98),
        (Some(b"10"), 10, 88),
        (Some(b"0"), 0, 88),
        (Some(b" 1 "), 1, 87),
        (Some(b"-5"), 2, 85),
        (Some(b"99999999999"), 2, 83),
    ];
    for (header, charged, left) in table {
        let r = c.admit(&store, 1, "llm", Some(&id)).unwrap();
        assert_eq!(c.settle(&store, &r, header).unwrap(), charged, "{header:?}");
        assert_eq!(remaining(&store, &u1, 1).unwrap(), Some(left), "{header:?}");
    }
}

#[test]
fn remaining_uses_stop_at_n_and_are_refunded_when_credits_refuse() {
    let store = MemoryStore::default();
    let c = credits(serde_json::json!({"routes": {"llm": 1}}));
    push(&store, 1, &[(AccountKind::Uses, "k1", 3), (AccountKind::Key, "k2", 0), (AccountKind::Uses, "k2", 5)]);
    let k1 = user("u1", Some("k1"), None);
    let results: Vec<_> = (0..5).map(|_| c.admit(&store, 1, "free", Some(&k1)).map(|_| ())).collect();
    assert_eq!(results, vec![Ok(()), Ok(()), Ok(()), Err(Refusal::Uses), Err(Refusal::Uses)]);
    let k2 = user("u2", Some("k2"), None);
    assert_eq!(c.admit(&store, 1, "llm", Some(&k2)), Err(Refusal::Credits));
    assert_eq!(remaining(&store, &acct(AccountKind::Uses, "k2"), 1).unwrap(), Some(5), "use refunded");
}

#[test]
fn refusals_render_with_the_configured_status() {
    for (status, refusal, slug) in
        [(402, Refusal::Credits, "credits-exhausted"), (429, Refusal::Uses, "key-uses-exhausted")]
    {
        let c = credits(serde_json::json!({"exhausted_status": status}));
        let r = c.render(refusal, "llm", "m", ProblemDetails::Full);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!((r.status, body["status"].as_u64()), (status, Some(u64::from(status))));
        assert_eq!(body["type"], format!("urn:meshgate:problem:{slug}"));
        assert!(r.headers.iter().any(|(n, v)| n == "content-type" && v == "application/problem+json"));
    }
}

#[test]
fn cost_header_values() {
    let table: [(&[u8], Option<u64>); 7] = [
        (b"0", Some(0)),
        (b"42", Some(42)),
        (b"1000000000", Some(1_000_000_000)),
        (b"1000000001", None),
        (b"", None),
        (b"1.5", None),
        (b"\xff", None),
    ];
    for (value, want) in table {
        assert_eq!(parse_cost(value), want, "{value:?}");
    }
}
