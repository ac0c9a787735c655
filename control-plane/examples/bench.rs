//! Throughput of `POST /api/v1/apikeys/verify` and `POST /api/v1/auth/refresh`
//! on a fresh SQLite database, driven in-process through the router (no
//! network stack), with concurrent clients.
//!
//! `cargo run --release -p meshgate --example bench -- [seconds] [clients]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn post(router: &Router, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut req = Request::builder().method(Method::POST).uri(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = router.clone().oneshot(req.body(Body::from(body.to_string())).expect("request")).await.expect("call");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Runs `clients` tasks from `make(i, stop)` until `stop` is raised after
/// `secs` seconds; each task answers how many requests it completed.
async fn run<F, Fut>(name: &str, secs: u64, clients: usize, make: F)
where
    F: Fn(usize, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients).map(|i| tokio::spawn(make(i, Arc::clone(&stop)))).collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{name}: {total} requests in {elapsed:.1} s with {clients} clients = {:.0} req/s (limit {secs} s)",
        total as f64 / elapsed
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8);
    let dir = tempfile::tempdir()?;
    let mut config = meshgate::config::Config::defaults();
    config.database_url = Some(format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display()));
    config.data_dir = dir.path().to_path_buf();
    config.admin_password = Some("bench-admin-password".into());
    config.master_key = Some(meshgate::crypto::hex(&meshgate::crypto::random_bytes::<32>()));
    let (state, _) = meshgate::prepare(config).await?;
    let router = meshgate::app(state);

    let (_, login) =
        post(&router, "/api/v1/auth/login", None, json!({"username": "admin", "password": "bench-admin-password"}))
            .await;
    let admin = login["access_token"].as_str().unwrap_or_default().to_string();
    let (s, created) =
        post(&router, "/api/v1/apikeys", Some(&admin), json!({"name": "bench", "expires_in_days": 30})).await;
    anyhow::ensure!(s == StatusCode::CREATED, "key creation failed: {created}");
    let key = created["key"].as_str().unwrap_or_default().to_string();

    let r = router.clone();
    run("POST /api/v1/apikeys/verify", secs, clients, move |_, stop| {
        let (r, key) = (r.clone(), key.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (s, _) = post(&r, "/api/v1/apikeys/verify", None, json!({"key": key})).await;
                assert_eq!(s, StatusCode::OK);
                n += 1;
            }
            n
        }
    })
    .await;

    // One session per client (logins are argon2-bound and not measured).
    let mut chains = Vec::new();
    for _ in 0..clients {
        let (_, l) =
            post(&router, "/api/v1/auth/login", None, json!({"username": "admin", "password": "bench-admin-password"}))
                .await;
        chains.push(l["refresh_token"].as_str().unwrap_or_default().to_string());
    }
    let r = router.clone();
    run("POST /api/v1/auth/refresh", secs, clients, move |i, stop| {
        let (r, mut token) = (r.clone(), chains[i].clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (s, v) = post(&r, "/api/v1/auth/refresh", None, json!({"refresh_token": token})).await;
                assert_eq!(s, StatusCode::OK, "{v}");
                token = v["refresh_token"].as_str().unwrap_or_default().to_string();
                n += 1;
            }
            n
        }
    })
    .await;
    Ok(())
}
