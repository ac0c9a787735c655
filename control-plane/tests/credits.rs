//! Credits: grants and deductions applied once per request id, filter usage
//! reports applied once per report id (also across a control-plane restart
//! and under concurrent retries), the ledger's keyset paging, remaining-uses
//! keys, and the balances the sync feed pushes (parsed with the wire types).
//! Every test runs on SQLite and, when reachable, PostgreSQL.

mod common;

use axum::http::{Method, StatusCode};
use common::feed::{self, create_key, sync_key};
use common::{TestApp, on_each_backend};
use meshgate_wire::credits::{AccountKind, CreditState};
use serde_json::{Value, json};

async fn balance(app: &TestApp, admin: &str, kind: &str, id: &str) -> i64 {
    let (s, v) = app.call(Method::GET, &format!("/api/v1/credits?kind={kind}&id={id}"), Some(admin), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v[0]["balance"].as_i64().unwrap_or_else(|| panic!("no account {kind}:{id}: {v}"))
}

async fn grant(app: &TestApp, admin: &str, request_id: &str, id: &str, amount: i64) -> (StatusCode, Value) {
    let body = json!({"request_id": request_id, "kind": "user", "id": id, "amount": amount});
    app.call(Method::POST, "/api/v1/credits/grant", Some(admin), Some(body)).await
}

async fn report(app: &TestApp, cred: &str, id: &str, usage: Value) -> (StatusCode, Value) {
    app.call(Method::POST, "/api/v1/credits/report", Some(cred), Some(json!({"id": id, "usage": usage}))).await
}

/// The credit states a delta from `since` carries.
async fn pushed(app: &TestApp, cred: &str, since: u64) -> Vec<CreditState> {
    feed::get(app, &format!("since={since}&wait=0"), cred).await.credits
}

#[tokio::test]
async fn grants_deductions_and_reports_apply_exactly_once() {
    on_each_backend("credits exactly once", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        let (backend, _) = create_key(&app, &admin, &["credits:deduct"], json!({})).await;
        let (plain, _) = create_key(&app, &admin, &["orders:read"], json!({})).await;

        let (s, first) = grant(&app, &admin, "g-1", "u1", 100).await;
        assert_eq!((s, first["duplicate"].as_bool()), (StatusCode::OK, Some(false)), "{first}");
        let (s, again) = grant(&app, &admin, "g-1", "u1", 100).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!((again["entry"].clone(), again["duplicate"].as_bool()), (first["entry"].clone(), Some(true)));
        assert_eq!(balance(&app, &admin, "user", "u1").await, 100, "a retried grant changes nothing");
        let (s, v) = grant(&app, &admin, "g-1", "u1", 5).await;
        assert_eq!(s, StatusCode::CONFLICT, "same id, other request: {v}");

        // Backends deduct with a credits:deduct key; others may not.
        let deduct = |amount: i64, rid: &str| json!({"request_id": rid, "kind": "user", "id": "u1", "amount": amount});
        let (s, d) = app.call(Method::POST, "/api/v1/credits/deduct", Some(&backend), Some(deduct(30, "d-1"))).await;
        assert_eq!((s, d["entry"]["balance_after"].as_i64()), (StatusCode::OK, Some(70)), "{d}");
        let (s, d2) = app.call(Method::POST, "/api/v1/credits/deduct", Some(&backend), Some(deduct(30, "d-1"))).await;
        assert_eq!(
            (s, d2["entry"].clone(), d2["duplicate"].as_bool()),
            (StatusCode::OK, d["entry"].clone(), Some(true))
        );
        let (s, _, p) =
            app.raw(Method::POST, "/api/v1/credits/deduct", Some(&backend), Some(deduct(71, "d-2").to_string())).await;
        assert_eq!(
            (s, p["type"].as_str()),
            (StatusCode::PAYMENT_REQUIRED, Some("urn:meshgate:problem:insufficient-credits"))
        );
        let (s, _) = app.call(Method::POST, "/api/v1/credits/deduct", Some(&plain), Some(deduct(1, "d-3"))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(balance(&app, &admin, "user", "u1").await, 70);

        // A filter report (merged per account), then its retry.
        let before = feed::version(&app).await;
        let usage = json!([{"kind": "user", "id": "u1", "amount": 5}, {"kind": "user", "id": "u1", "amount": 2},
                           {"kind": "app", "id": "shop", "amount": 3}]);
        let (s, ack) = report(&app, &filter, "proc-a-1", usage.clone()).await;
        assert_eq!((s, ack["duplicate"].as_bool()), (StatusCode::OK, Some(false)), "{ack}");
        let version = ack["version"].as_u64().expect("version");
        assert!(version > before);
        let (_, retry) = report(&app, &filter, "proc-a-1", usage).await;
        assert_eq!((retry["version"].as_u64(), retry["duplicate"].as_bool()), (Some(version), Some(true)));
        assert_eq!(balance(&app, &admin, "user", "u1").await, 63, "reported once");
        assert_eq!(balance(&app, &admin, "app", "shop").await, -3, "usage opens an account below zero");
        let (s, _) = report(&app, &plain, "proc-a-2", json!([])).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "reports need the filter credential");

        // The feed pushes the new balances, at the acknowledged version.
        let delta = feed::get(&app, &format!("since={before}&wait=0"), &filter).await;
        assert_eq!(delta.version, version);
        let u1 = delta.credits.iter().find(|c| c.kind == AccountKind::User && c.id == "u1");
        assert_eq!(u1.map(|c| c.balance), Some(63));
        assert!(pushed(&app, &filter, version).await.is_empty(), "nothing changed since");

        // The ledger, newest first, two at a time.
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!("/api/v1/credits/usage?kind=user&id=u1&limit=2{cursor}");
            let (s, page) = app.call(Method::GET, &path, Some(&admin), None).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            seen.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_before"].as_str() {
                Some(next) => cursor = format!("&before={next}"),
                None => break,
            }
        }
        let amounts: Vec<i64> = seen.iter().filter_map(|e| e["amount"].as_i64()).collect();
        assert_eq!(amounts, vec![-7, -30, 100], "usage, deduction, grant: each once");
        app
    })
    .await;
}

#[tokio::test]
async fn a_report_retried_after_a_restart_is_not_applied_again() {
    on_each_backend("credits restart", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        grant(&app, &admin, "g", "u1", 50).await;
        let usage = json!([{"kind": "user", "id": "u1", "amount": 9}]);
        let (_, ack) = report(&app, &filter, "proc-b-7", usage.clone()).await;
        // The filter never saw the answer; the control plane restarts (a new
        // process over the same database) and the filter retries.
        app.state.db.pool.close().await;
        let restarted = app.replica().await;
        let (s, retry) = report(&restarted, &filter, "proc-b-7", usage).await;
        assert_eq!(s, StatusCode::OK, "{retry}");
        assert_eq!((retry["version"].clone(), retry["duplicate"].as_bool()), (ack["version"].clone(), Some(true)));
        let admin = restarted.admin_token().await;
        assert_eq!(balance(&restarted, &admin, "user", "u1").await, 41);
        restarted.cleanup().await;
        app
    })
    .await;
}

#[tokio::test]
async fn concurrent_retries_of_one_report_apply_it_once() {
    on_each_backend("credits concurrent retries", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        grant(&app, &admin, "g", "u1", 1000).await;
        let usage = json!([{"kind": "user", "id": "u1", "amount": 4}]);
        let calls = (0..8).map(|_| report(&app, &filter, "proc-c-1", usage.clone()));
        let answers = futures_util::future::join_all(calls).await;
        let fresh = answers.iter().filter(|(s, a)| *s == StatusCode::OK && a["duplicate"] == false).count();
        let versions: std::collections::HashSet<_> = answers.iter().map(|(_, a)| a["version"].clone()).collect();
        assert_eq!((fresh, versions.len()), (1, 1), "{answers:?}");
        assert_eq!(balance(&app, &admin, "user", "u1").await, 996);
        app
    })
    .await;
}

#[tokio::test]
async fn remaining_uses_keys_carry_their_count_to_the_feed() {
    on_each_backend("credits max_uses", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        let (_, meta) = create_key(&app, &admin, &[], json!({"max_uses": 3})).await;
        let key_id = meta["id"].as_str().expect("id").to_string();
        assert_eq!(balance(&app, &admin, "uses", &key_id).await, 3);
        let snap = feed::get(&app, "", &filter).await;
        let uses = snap.credits.iter().find(|c| c.kind == AccountKind::Uses && c.id == key_id);
        assert_eq!(uses.map(|c| c.balance), Some(3));
        let (s, _) = app
            .call(
                Method::POST,
                "/api/v1/apikeys",
                Some(&admin),
                Some(json!({"name": "x", "expires_in_days": 1, "max_uses": 0})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        // Refill: a grant to the uses account.
        let body = json!({"request_id": "more", "kind": "uses", "id": key_id, "amount": 2});
        assert_eq!(app.call(Method::POST, "/api/v1/credits/grant", Some(&admin), Some(body)).await.0, StatusCode::OK);
        assert_eq!(balance(&app, &admin, "uses", &key_id).await, 5);
        app
    })
    .await;
}
