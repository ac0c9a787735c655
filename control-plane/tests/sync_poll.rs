//! The sync feed's long-poll: woken by commits (in-process, and across
//! replicas through PostgreSQL LISTEN/NOTIFY), timing out with an empty
//! delta, and ended promptly by a graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::feed::{self, sync_key};
use common::{Kind, TestApp, notice, on_each_backend};
use meshgate_wire::sync::{RevocationKind, SyncKind, SyncResponse};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a poll on `app` in the background; resolves to the answer and the
/// instant it arrived.
fn hold(app: &TestApp, query: String, cred: &str) -> tokio::task::JoinHandle<(SyncResponse, Instant)> {
    let router = app.router.clone();
    let cred = cred.to_string();
    tokio::spawn(async move {
        let (s, body) = feed::get_raw(&router, &query, Some(&cred)).await;
        let at = Instant::now();
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        (serde_json::from_slice(&body).expect("SyncResponse"), at)
    })
}

async fn revoke_token(app: &TestApp, admin: &str, jti: &str) {
    let body = json!({"kind": "token", "value": jti});
    let (s, v) = app.call(Method::POST, "/api/v1/revocations", Some(admin), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Holds a poll on `reader`, revokes through `writer`, returns the time from
/// the revocation's commit (its API answer) to the poll's answer.
async fn wake_latency(reader: &TestApp, writer: &TestApp, admin: &str, filter: &str, jti: &str) -> Duration {
    let since = feed::version(reader).await;
    let poll = hold(reader, format!("since={since}&wait=30"), filter);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!poll.is_finished(), "the poll must be held while nothing changes");
    revoke_token(writer, admin, jti).await;
    let committed = Instant::now();
    let (d, answered) = tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woken").expect("task");
    assert_eq!((d.kind, d.since), (SyncKind::Delta, Some(since)));
    assert!(d.version > since);
    assert!(d.revocations.iter().any(|r| r.kind == RevocationKind::Token && r.id == jti), "{d:?}");
    answered.saturating_duration_since(committed)
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("n={} p50={:?} p99={:?} max={:?}", v.len(), pick(0.5), pick(0.99), v[v.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_commit() {
    on_each_backend("long_poll_wakes_on_commit", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        let mut latencies = Vec::new();
        for i in 0..20 {
            latencies.push(wake_latency(&app, &app, &admin, &filter, &format!("jti-{i}")).await);
        }
        let max = *latencies.iter().max().unwrap();
        notice(&format!("sync wake latency ({:?}, same process): {}", app.kind, summary(latencies)));
        assert!(max < Duration::from_secs(1), "woken after {max:?}");
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_held_polls_wake_together() {
    on_each_backend("many_held_polls_wake_together", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        let since = feed::version(&app).await;
        let polls: Vec<_> = (0..50).map(|_| hold(&app, format!("since={since}&wait=30"), &filter)).collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(polls.iter().all(|p| !p.is_finished()));
        revoke_token(&app, &admin, "fan-out").await;
        let committed = Instant::now();
        let mut answers = Vec::new();
        for poll in polls {
            answers.push(tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woken").expect("task"));
        }
        let last = answers.iter().map(|(_, at)| at.saturating_duration_since(committed)).max().unwrap();
        notice(&format!("sync: 50 held polls ({:?}) all answered {last:?} after the commit", app.kind));
        assert!(last < Duration::from_secs(1));
        assert!(answers.iter().all(|(d, _)| d == &answers[0].0 && d.revocations.len() == 1));
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_runs_out_with_an_empty_delta() {
    on_each_backend("wait_runs_out_with_an_empty_delta", |app| async move {
        let admin = app.admin_token().await;
        let filter = sync_key(&app, &admin).await;
        let since = feed::version(&app).await;
        let started = Instant::now();
        let d = feed::get(&app, &format!("since={since}&wait=1"), &filter).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(2500), "{took:?}");
        assert_eq!((d.kind, d.version, d.since), (SyncKind::Delta, since, Some(since)));
        assert_eq!(d, meshgate::sync::feed::unchanged(since));
        // A change before the poll: answered at once, whatever `wait` is
        // (held for its 60 s, the poll would run into this 30 s guard).
        revoke_token(&app, &admin, "early").await;
        let query = format!("since={since}&wait=60");
        let poll = feed::get(&app, &query, &filter);
        let d = tokio::time::timeout(Duration::from_secs(30), poll).await.expect("answered without waiting");
        assert_eq!(d.revocations.len(), 1);
        app
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_replica_wakes_polls_on_another() {
    if !common::pg_reachable().await {
        notice("SKIP a_commit_on_one_replica_wakes_polls_on_another: PostgreSQL not reachable");
        assert!(std::env::var("MESHGATE_TEST_REQUIRE_PG").as_deref() != Ok("1"), "PostgreSQL required");
        return;
    }
    let a = TestApp::new(Kind::Postgres).await;
    let b = a.replica().await;
    let admin = a.admin_token().await;
    let filter = sync_key(&a, &admin).await;
    let mut latencies = Vec::new();
    for i in 0..20 {
        // Revoked through A, long-poll held by B (B's process never sees the
        // write: only PostgreSQL NOTIFY can wake it), and the other way.
        latencies.push(wake_latency(&b, &a, &admin, &filter, &format!("ab-{i}")).await);
        latencies.push(wake_latency(&a, &b, &admin, &filter, &format!("ba-{i}")).await);
    }
    let max = *latencies.iter().max().unwrap();
    notice(&format!("sync wake latency (PostgreSQL, across replicas): {}", summary(latencies)));
    assert!(max < Duration::from_secs(1), "woken after {max:?}");
    b.cleanup().await;
    a.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_held_polls() {
    let app = TestApp::new(Kind::Sqlite).await;
    let admin = app.admin_token().await;
    let filter = sync_key(&app, &admin).await;
    let since = feed::version(&app).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(meshgate::run(listener, app.state.clone(), async move {
        let _ = stopped.await;
    }));
    let poll = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /api/v1/sync?since={since}&wait=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {filter}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8_lossy(&raw).to_string()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished());
    let started = Instant::now();
    let _ = stop.send(());
    let answer = tokio::time::timeout(Duration::from_secs(2), poll).await.expect("poll ended").expect("task");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("\"version\":{since}")), "{answer}");
    tokio::time::timeout(Duration::from_secs(2), server).await.expect("server stopped").expect("task").expect("io");
    notice(&format!("graceful shutdown with a held poll took {:?}", started.elapsed()));
    app.cleanup().await;
}
