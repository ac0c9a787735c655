//! The sync feed's content: snapshots, deltas after each kind of change,
//! authentication and query errors — on every backend.

mod common;

use axum::http::{Method, StatusCode};
use common::feed::{self, create_key, digest, sync_key};
use common::{TestApp, on_each_backend};
use meshgate_wire::config::KeyRateLimit;
use meshgate_wire::sync::{RevocationKind, SyncKind, revocation_hash};
use serde_json::{Value, json};

async fn revoke(app: &TestApp, admin: &str, kind: &str, value: &str) {
    let body = json!({"kind": kind, "value": value});
    let (s, v) = app.call(Method::POST, "/api/v1/revocations", Some(admin), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

fn user_id(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    serde_json::from_slice::<Value>(&raw).unwrap()["sub"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn snapshot_content() {
    on_each_backend("snapshot_content", |app| async move {
        let admin = app.admin_token().await;
        let admin_id = user_id(&admin);
        let filter = sync_key(&app, &admin).await;
        let (k1, m1) =
            create_key(&app, &admin, &["orders:read"], json!({"rate_limit": 100, "app_id": "meshgate"})).await;
        let (k2, m2) = create_key(&app, &admin, &["orders:write"], json!({})).await;
        let bob = app.create_user(&admin, "bob", "bob-password-123").await;
        revoke(&app, &admin, "token", "jti-1").await;
        revoke(&app, &admin, "session", "sid-1").await;
        revoke(&app, &admin, "user", &bob).await;
        revoke(&app, &admin, "key", m2["id"].as_str().unwrap()).await;

        for query in ["", "since=0", "snapshot=true", &format!("since={}&snapshot=true", feed::version(&app).await)] {
            let snap = feed::get(&app, query, &filter).await;
            assert_eq!(snap.kind, SyncKind::Snapshot, "{query}");
            assert_eq!(snap.since, None);
            assert_eq!(snap.version, feed::version(&app).await);
            // Active and next, both verifying tokens of the configured issuer.
            assert_eq!(snap.signing_keys.len(), 2, "{snap:?}");
            assert!(snap.signing_keys.iter().all(|k| k.issuer == app.state.config.issuer && k.jwk.kid.is_some()));
            assert!(snap.signing_keys.iter().all(|k| k.jwk.kty == "OKP" && k.jwk.x.is_some()));
            // Live keys only: the filter's own, k1; not the revoked k2.
            assert_eq!(snap.api_keys.len(), 2, "{:?}", snap.api_keys);
            let rec = snap.api_keys.iter().find(|r| r.digest == digest(&k1)).expect("k1 shipped");
            assert_eq!(rec.id, m1["id"].as_str().unwrap());
            assert_eq!(rec.subject, admin_id);
            assert_eq!(rec.app_id.as_deref(), Some("meshgate"));
            assert!(rec.roles.is_empty());
            assert_eq!(rec.scopes, vec!["orders:read".to_string()]);
            assert_eq!(rec.expires_at, m1["expires_at"].as_u64());
            assert_eq!(rec.rate_limit, Some(KeyRateLimit { limit: 100, window_secs: 60 }));
            assert!(snap.api_keys.iter().any(|r| r.digest == digest(&filter) && r.scopes == ["sync"]));
            assert!(snap.api_keys.iter().all(|r| r.digest != digest(&k2)));
            assert!(snap.removed_keys.is_empty() && snap.removed_signing_keys.is_empty());
            let find = |kind, id: &str| snap.revocations.iter().find(|r| r.kind == kind && r.id == id).cloned();
            assert!(find(RevocationKind::Token, "jti-1").is_some(), "{:?}", snap.revocations);
            assert!(find(RevocationKind::Session, "sid-1").is_some());
            let user = find(RevocationKind::User, &bob).expect("user revocation");
            assert!(user.not_before.is_some_and(|nb| nb > 0));
            let key = find(RevocationKind::Key, m2["id"].as_str().unwrap()).expect("key revocation");
            assert_eq!(Some(key.until), m2["expires_at"].as_u64());
            assert!(snap.revocations.iter().all(|r| r.until >= app.state.now() as u64));
            assert!(snap.bans.is_empty() && snap.service_keys.is_empty() && snap.admin_keys.is_empty());
        }
        app
    })
    .await;
}

#[tokio::test]
async fn deltas_after_each_kind_of_change() {
    on_each_backend("deltas_after_each_kind_of_change", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        let v0 = feed::get(&app, "", &filter).await.version;
        let now_delta = |v: u64| format!("since={v}&wait=0");

        // Nothing changed: an empty delta at once with wait=0.
        let d = feed::get(&app, &now_delta(v0), &filter).await;
        assert_eq!((d.kind, d.version, d.since), (SyncKind::Delta, v0, Some(v0)));
        assert!(d.api_keys.is_empty() && d.revocations.is_empty() && d.signing_keys.is_empty());

        // A key created.
        let (k1, m1) = create_key(&app, &admin, &["a"], json!({"rate_limit": 5})).await;
        let d = feed::get(&app, &now_delta(v0), &filter).await;
        assert_eq!((d.kind, d.since), (SyncKind::Delta, Some(v0)));
        assert!(d.version > v0);
        assert_eq!(d.api_keys.len(), 1);
        assert_eq!(d.api_keys[0].digest, digest(&k1));
        assert!(d.revocations.is_empty() && d.removed_keys.is_empty() && d.signing_keys.is_empty());
        let v1 = d.version;

        // The key revoked: removed by digest and as a key revocation.
        let path = format!("/api/v1/apikeys/{}", m1["id"].as_str().unwrap());
        let (s, _) = app.call(Method::DELETE, &path, Some(&admin), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let d = feed::get(&app, &now_delta(v1), &filter).await;
        assert!(d.api_keys.is_empty(), "{d:?}");
        assert_eq!(d.removed_keys, vec![digest(&k1)]);
        assert_eq!(d.revocations.len(), 1);
        assert_eq!(
            (d.revocations[0].kind, d.revocations[0].id.as_str()),
            (RevocationKind::Key, m1["id"].as_str().unwrap())
        );
        let v2 = d.version;

        // Created then revoked between two polls: removed, never added.
        let (k2, m2) = create_key(&app, &admin, &["b"], json!({})).await;
        revoke(&app, &admin, "key", m2["id"].as_str().unwrap()).await;
        let d = feed::get(&app, &now_delta(v2), &filter).await;
        assert!(d.api_keys.is_empty(), "{d:?}");
        assert_eq!(d.removed_keys, vec![digest(&k2)]);
        assert!(d.revocations.iter().any(|r| r.kind == RevocationKind::Key && r.id == m2["id"].as_str().unwrap()));
        let v3 = d.version;

        // A token revocation.
        revoke(&app, &admin, "token", "jti-9").await;
        let d = feed::get(&app, &now_delta(v3), &filter).await;
        assert_eq!(d.revocations.len(), 1);
        assert_eq!((d.revocations[0].kind, d.revocations[0].id.as_str()), (RevocationKind::Token, "jti-9"));
        assert!(d.api_keys.is_empty() && d.removed_keys.is_empty());
        let v4 = d.version;

        // A signing key rotation: the retired (still verifying), the new
        // active and the new next key.
        let (s, v) = app.call(Method::POST, "/api/v1/signing-keys/rotate?force=true", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let d = feed::get(&app, &now_delta(v4), &filter).await;
        assert_eq!(d.signing_keys.len(), 3, "{d:?}");
        assert!(d.signing_keys.iter().any(|k| k.jwk.kid.as_deref() == v["active_kid"].as_str()));
        assert!(d.removed_signing_keys.is_empty() && d.revocations.is_empty());
        let v5 = d.version;

        // Logout: a session revocation.
        let bob = app.create_user(&admin, "bob", "bob-password-123").await;
        let (_, login) = app.login("bob", "bob-password-123", None).await;
        let bob_token = login["access_token"].as_str().unwrap().to_string();
        let (s, _) = app.call(Method::POST, "/api/v1/auth/logout", Some(&bob_token), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let d = feed::get(&app, &now_delta(v5), &filter).await;
        assert_eq!(d.revocations.len(), 1, "{d:?}");
        assert_eq!(d.revocations[0].kind, RevocationKind::Session);
        let v6 = d.version;

        // A user disabled: a user revocation, and the user's keys removed.
        let (k3, _) = create_key(&app, &admin, &[], json!({"owner_id": bob})).await;
        let v7 = feed::get(&app, &now_delta(v6), &filter).await.version;
        let body = json!({"disabled": true});
        let (s, v) = app.call(Method::PATCH, &format!("/api/v1/users/{bob}"), Some(&admin), Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let d = feed::get(&app, &now_delta(v7), &filter).await;
        assert_eq!(d.removed_keys, vec![digest(&k3)]);
        let user = d.revocations.iter().find(|r| r.kind == RevocationKind::User).expect("user revocation");
        assert_eq!(user.id, bob);
        assert!(d.revocations.iter().any(|r| r.kind == RevocationKind::Key));

        // Everything since v0 in one delta: the net effect.
        let d = feed::get(&app, &now_delta(v0), &filter).await;
        assert_eq!(d.kind, SyncKind::Delta);
        assert!(d.api_keys.is_empty(), "{:?}", d.api_keys);
        let mut removed = d.removed_keys.clone();
        removed.sort();
        let mut expected = vec![digest(&k1), digest(&k2), digest(&k3)];
        expected.sort();
        assert_eq!(removed, expected);
        assert_eq!(d.signing_keys.len(), 3);

        // A `since` ahead of the counter (another database): a snapshot.
        let d = feed::get(&app, &now_delta(d.version + 1000), &filter).await;
        assert_eq!(d.kind, SyncKind::Snapshot);

        // Housekeeping that deletes signing keys raises the floor: older
        // filters get a snapshot, current ones still get deltas.
        let before = feed::version(&app).await;
        let (s, _) = app.call(Method::POST, "/api/v1/signing-keys/rotate?force=true", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        let far = app.state.now() + 10 * 86_400;
        assert!(meshgate::housekeeping::purge(&app.state.db, far).await.expect("purge") > 0);
        let d = feed::get(&app, &now_delta(before), &filter).await;
        assert_eq!(d.kind, SyncKind::Snapshot);
        let d = feed::get(&app, &now_delta(d.version), &filter).await;
        assert_eq!(d.kind, SyncKind::Delta);
        app
    })
    .await;
}

#[tokio::test]
async fn credentials_and_query_errors() {
    on_each_backend("credentials_and_query_errors", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        let (other_key, _) = create_key(&app, &admin, &["orders:read"], json!({})).await;
        let (admin_key, _) = create_key(&app, &admin, &["admin"], json!({})).await;
        app.create_user(&admin, "carol", "carol-password-123").await;
        let (_, login) = app.login("carol", "carol-password-123", None).await;
        let carol = login["access_token"].as_str().unwrap().to_string();

        let path = "/api/v1/sync?wait=0";
        let (s, h, v) = app.raw(Method::GET, path, None, None).await;
        common::assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "unauthenticated");
        let (s, h, v) = app.raw(Method::GET, path, Some("mg_notakey"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v} {h:?}");
        for cred in [&other_key, &carol] {
            let (s, h, v) = app.raw(Method::GET, path, Some(cred), None).await;
            common::assert_problem(&h, &v, StatusCode::FORBIDDEN, s, "forbidden");
        }
        for cred in [&filter, &admin, &admin_key] {
            let (s, h, v) = app.raw(Method::GET, path, Some(cred), None).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(h.get("content-type").unwrap(), "application/json");
            assert_eq!(h.get("cache-control").unwrap(), "no-store");
        }
        for bad in [
            "since=abc",
            "since=-1",
            "wait=x",
            "wait=-5",
            "since=1&since=2",
            "snapshot=maybe",
            "foo=1",
            "since=99999999999999999999",
        ] {
            let (s, h, v) = app.raw(Method::GET, &format!("/api/v1/sync?{bad}"), Some(&filter), None).await;
            common::assert_problem(&h, &v, StatusCode::BAD_REQUEST, s, "invalid-query");
        }
        let (s, _, _) = app.raw(Method::POST, "/api/v1/sync", Some(&filter), None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        // A revoked sync key stops working.
        let (_, keys) = app.call(Method::GET, "/api/v1/apikeys", Some(&admin), None).await;
        let id = keys.as_array().unwrap().iter().find(|k| k["scopes"] == json!(["sync"])).unwrap()["id"].clone();
        let (s, _) =
            app.call(Method::DELETE, &format!("/api/v1/apikeys/{}", id.as_str().unwrap()), Some(&admin), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, h, v) = app.raw(Method::GET, path, Some(&filter), None).await;
        common::assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-api-key");
        app
    })
    .await;
}

#[test]
fn query_parsing() {
    use meshgate::sync::SyncQuery;
    use std::time::Duration;
    let q = SyncQuery::parse(None).unwrap();
    assert_eq!((q.since, q.wait, q.snapshot), (None, Duration::from_secs(30), false));
    let q = SyncQuery::parse(Some("since=7&wait=1000&snapshot=1")).unwrap();
    assert_eq!((q.since, q.wait, q.snapshot), (Some(7), Duration::from_secs(60), true));
    let q = SyncQuery::parse(Some("since=0&wait=0")).unwrap();
    assert_eq!((q.since, q.wait), (None, Duration::ZERO));
    assert!(SyncQuery::parse(Some("since")).is_err());
    assert!(SyncQuery::parse(Some("wait=1&wait=1")).is_err());
}

#[tokio::test]
async fn paged_snapshots_hold_the_same_records_as_one_snapshot() {
    on_each_backend("paged_snapshots", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        for i in 0..5 {
            create_key(&app, &admin, &["orders:read"], json!({})).await;
            revoke(&app, &admin, "token", &format!("jti-{i}")).await;
        }
        revoke(&app, &admin, "session", "sid/with spaces&odd=chars").await;
        let whole = feed::get(&app, "snapshot=true", &filter).await;
        assert_eq!(whole.next, None);
        assert_eq!(whole.total_keys, None, "totals only on paged snapshots");
        for limit in [1, 2, 3, 7, 100] {
            let mut page = feed::get(&app, &format!("since=0&limit={limit}"), &filter).await;
            assert_eq!(page.kind, SyncKind::Snapshot);
            assert_eq!(page.total_keys, Some(whole.api_keys.len() as u64));
            assert_eq!(page.total_revocations, Some(whole.revocations.len() as u64));
            assert_eq!(page.signing_keys, whole.signing_keys);
            let (mut keys, mut revs) = (Vec::new(), Vec::new());
            let mut pages = 0;
            loop {
                pages += 1;
                assert!(page.api_keys.len() + page.revocations.len() <= limit, "limit {limit}");
                keys.extend(page.api_keys.iter().map(|k| k.digest.clone()));
                revs.extend(page.revocations.iter().map(|r| (r.kind, r.id.clone())));
                let Some(next) = page.next.clone() else { break };
                page = feed::get(&app, &format!("limit={limit}&after={next}"), &filter).await;
                assert!(page.signing_keys.is_empty(), "signing keys come with the first page");
            }
            let total = whole.api_keys.len() + whole.revocations.len();
            assert!(pages >= total.div_ceil(limit), "{pages} pages for {total} records of {limit}");
            let mut want_keys: Vec<_> = whole.api_keys.iter().map(|k| k.digest.clone()).collect();
            want_keys.sort();
            assert_eq!(keys, want_keys, "keys in digest order, each once (limit {limit})");
            let order: Vec<u64> = revs.iter().map(|(k, id)| revocation_hash(k.code(), id)).collect();
            assert!(order.is_sorted(), "revocations in the filter's shard order (limit {limit})");
            let mut want_revs: Vec<_> = whole.revocations.iter().map(|r| (r.kind, r.id.clone())).collect();
            want_revs.sort_by(|a, b| a.1.cmp(&b.1));
            revs.sort_by(|a, b| a.1.cmp(&b.1));
            assert_eq!(revs, want_revs, "limit {limit}");
        }
        // More rows changed since `since` than a page holds: a paged snapshot, not a huge delta.
        let v = feed::version(&app).await;
        let big = feed::get(&app, "since=1&wait=0&limit=2", &filter).await;
        assert_eq!(big.kind, SyncKind::Snapshot);
        assert!(big.next.is_some() && big.total_keys.is_some());
        revoke(&app, &admin, "token", "jti-late").await;
        let small = feed::get(&app, &format!("since={v}&wait=0&limit=2"), &filter).await;
        assert_eq!(small.kind, SyncKind::Delta);
        assert_eq!(small.revocations.len(), 1);
        for bad in [
            "limit=0",
            "limit=100001",
            "limit=x",
            "after=zzz",
            "after=k.12",
            "after=r.nope.00",
            "after=r.jti.00",
            "after=r.1.jti.0g",
            "after=r.x.jti.00",
        ] {
            let (s, body) = feed::get_raw(&app.router, bad, Some(&filter)).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {}", String::from_utf8_lossy(&body));
        }
        app
    })
    .await;
}

/// On a SQLite file, snapshot pages read their rows with rusqlite
/// (`sync::direct`) instead of sqlx: the bodies must be the same bytes.
#[tokio::test]
async fn sqlite_pages_read_directly_match_the_sqlx_reader() {
    use meshgate::sync::feed::{self as build, Cursor, Page};
    let app = TestApp::new(common::Kind::Sqlite).await;
    assert!(app.state.db.direct.is_some(), "a SQLite file gets the direct reader");
    let admin = app.admin_token().await;
    let bob = app.create_user(&admin, "bob", "bob-password-123").await;
    let carol = app.create_user(&admin, "carol", "carol-password-123").await;
    create_key(&app, &admin, &["orders:read", "orders:write"], json!({"rate_limit": 100, "app_id": "meshgate"})).await;
    for _ in 0..5 {
        create_key(&app, &admin, &[], json!({"owner_id": bob})).await;
    }
    create_key(&app, &admin, &["x"], json!({"owner_id": carol})).await;
    let (_, gone) = create_key(&app, &admin, &["y"], json!({})).await;
    let path = format!("/api/v1/apikeys/{}", gone["id"].as_str().unwrap());
    assert_eq!(app.call(Method::DELETE, &path, Some(&admin), None).await.0, StatusCode::NO_CONTENT);
    let path = format!("/api/v1/users/{carol}");
    assert_eq!(app.call(Method::PATCH, &path, Some(&admin), Some(json!({"disabled": true}))).await.0, StatusCode::OK);
    for (kind, value) in [("token", "jti-1"), ("session", "sid \"quoted\" \\ é"), ("user", bob.as_str())] {
        revoke(&app, &admin, kind, value).await;
    }
    // The same database and keys, without the direct reader.
    let config = app.state.config.clone();
    let mut db = app.state.db.clone();
    db.direct = None;
    let master = meshgate::crypto::MasterKey::load_or_generate(config.master_key.as_deref(), &config.data_dir).unwrap();
    let login = meshgate::login::Login::load(&config).unwrap();
    let sqlx_only = meshgate::state::AppState::new(config, db, master, login);
    // Unpaged: always the sqlx reader.
    let whole = build::build(&app.state, None, &Page::default()).await.expect("snapshot").body;
    let whole: meshgate_wire::sync::SyncResponse = serde_json::from_slice(&whole).expect("wire type");
    assert_eq!(whole.api_keys.len(), 6, "carol's key (disabled) and the deleted one are not live");
    assert!(whole.revocations.len() >= 4, "{:?}", whole.revocations);
    for limit in [1, 2, 3, 1000] {
        let (mut after, mut keys, mut revocations) = (None::<Cursor>, Vec::new(), Vec::new());
        loop {
            let page = Page { limit: Some(limit), after: after.clone() };
            let direct = build::build(&app.state, None, &page).await.expect("direct page");
            let reference = build::build(&sqlx_only, None, &page).await.expect("sqlx page");
            let text = String::from_utf8_lossy(&direct.body).into_owned();
            assert_eq!(text, String::from_utf8_lossy(&reference.body), "limit {limit}");
            let parsed: meshgate_wire::sync::SyncResponse = serde_json::from_slice(&direct.body).expect("wire type");
            keys.extend(parsed.api_keys);
            revocations.extend(parsed.revocations);
            match parsed.next {
                Some(next) => after = Some(Cursor::parse(&next).expect("cursor")),
                None => break,
            }
        }
        keys.sort_by(|a, b| a.digest.cmp(&b.digest));
        let mut want = whole.api_keys.clone();
        want.sort_by(|a, b| a.digest.cmp(&b.digest));
        assert_eq!(keys, want, "limit {limit}");
        assert_eq!(revocations.len(), whole.revocations.len(), "limit {limit}");
        assert!(whole.revocations.iter().all(|r| revocations.contains(r)), "limit {limit}");
    }
    app.cleanup().await;
}
