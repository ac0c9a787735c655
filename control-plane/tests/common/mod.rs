//! Test harness: one [`TestApp`] per backend (a temporary SQLite file, and a
//! throwaway PostgreSQL database when one is reachable), driven with
//! `oneshot`.
#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::io::Write as _;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use meshgate::config::Config;
use meshgate::crypto;
use meshgate::db::Db;
use meshgate::state::AppState;
use serde_json::{Value, json};
use sqlx::Connection;
use tower::ServiceExt;

pub mod feed;
pub mod login;

pub const ADMIN_PASSWORD: &str = "correct-horse-battery";

/// Where PostgreSQL is expected (override with MESHGATE_TEST_PG).
fn pg_admin_url() -> String {
    std::env::var("MESHGATE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub kind: Kind,
    pg_db: Option<String>,
    _dir: tempfile::TempDir,
}

/// Writes straight to stderr, past the test harness's capture, so a skip is
/// visible in normal `cargo test` output.
pub fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

pub async fn pg_reachable() -> bool {
    sqlx::any::install_default_drivers();
    let connect = sqlx::AnyConnection::connect(&pg_admin_url());
    matches!(tokio::time::timeout(std::time::Duration::from_secs(3), connect).await, Ok(Ok(_)))
}

pub fn test_config(dir: &std::path::Path, url: String) -> Config {
    let mut c = Config::defaults();
    c.database_url = Some(url);
    c.data_dir = dir.to_path_buf();
    c.admin_user = "admin".into();
    c.admin_password = Some(ADMIN_PASSWORD.into());
    c.master_key = Some(crypto::hex(&crypto::random_bytes::<32>()));
    c.argon2_memory_kib = 1024;
    c.argon2_iterations = 1;
    c.db_pool_size = 4;
    c
}

impl TestApp {
    pub async fn new(kind: Kind) -> Self {
        Self::with(kind, |_| {}).await
    }

    pub async fn with(kind: Kind, tweak: impl FnOnce(&mut Config)) -> Self {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("meshgate=debug").try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, pg_db) = match kind {
            Kind::Sqlite => (format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()), None),
            Kind::Postgres => {
                let name = format!("meshgate_test_{}", crypto::hex(&crypto::random_bytes::<6>()));
                let mut conn = sqlx::AnyConnection::connect(&pg_admin_url()).await.expect("pg connect");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create db");
                let base = pg_admin_url();
                let url = format!("{}/{name}", base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base));
                (url, Some(name))
            }
        };
        let mut config = test_config(dir.path(), url);
        tweak(&mut config);
        let (state, _) = meshgate::prepare(config).await.expect("prepare");
        let router = meshgate::app(state.clone());
        Self { state, router, kind, pg_db, _dir: dir }
    }

    /// A second replica on the same database (same config and master key),
    /// with its own state, notifier and — on PostgreSQL — its own listener.
    /// Its cleanup leaves the database to the original.
    pub async fn replica(&self) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = self.state.config.clone();
        config.data_dir = dir.path().to_path_buf();
        let (state, _) = meshgate::prepare(config).await.expect("prepare replica");
        let router = meshgate::app(state.clone());
        Self { state, router, kind: self.kind, pg_db: None, _dir: dir }
    }

    pub async fn cleanup(self) {
        self.state.db.pool.close().await;
        if let Some(name) = self.pg_db
            && let Ok(mut conn) = sqlx::AnyConnection::connect(&pg_admin_url()).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
        }
    }

    pub async fn db(&self) -> &Db {
        &self.state.db
    }

    /// Sends a request; `body` is JSON text sent as-is with a JSON content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .expect("request");
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = self.router.clone().oneshot(req).await.expect("oneshot");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, value)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self.raw(method, path, token, body.map(|b| b.to_string())).await;
        (s, v)
    }

    pub async fn login(&self, user: &str, password: &str, app: Option<&str>) -> (StatusCode, Value) {
        let mut body = json!({"username": user, "password": password});
        if let Some(a) = app {
            body["app_id"] = json!(a);
        }
        self.call(Method::POST, "/api/v1/auth/login", None, Some(body)).await
    }

    /// An admin access token.
    pub async fn admin_token(&self) -> String {
        let (s, v) = self.login("admin", ADMIN_PASSWORD, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"].as_str().expect("token").to_string()
    }

    /// Creates a user and returns its id.
    pub async fn create_user(&self, admin: &str, name: &str, password: &str) -> String {
        let (s, v) = self
            .call(Method::POST, "/api/v1/users", Some(admin), Some(json!({"username": name, "password": password})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().expect("id").to_string()
    }
}

/// Asserts a problem+json answer with `status` and problem slug.
pub fn assert_problem(headers: &HeaderMap, body: &Value, status: StatusCode, got: StatusCode, slug: &str) {
    assert_eq!(got, status, "body: {body}");
    assert_eq!(headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")), Some("application/problem+json"));
    assert_eq!(body["type"], format!("urn:meshgate:problem:{slug}"), "body: {body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string());
}

/// Runs `test` on SQLite, then on PostgreSQL when reachable (skipping with a
/// visible notice otherwise; MESHGATE_TEST_REQUIRE_PG=1 turns the skip into a
/// failure).
pub async fn on_each_backend<F, Fut>(name: &str, test: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = TestApp>,
{
    let app = TestApp::new(Kind::Sqlite).await;
    test(app).await.cleanup().await;
    if pg_reachable().await {
        let app = TestApp::new(Kind::Postgres).await;
        test(app).await.cleanup().await;
    } else if std::env::var("MESHGATE_TEST_REQUIRE_PG").is_ok_and(|v| v == "1") {
        panic!("PostgreSQL required but unreachable at {}", pg_admin_url());
    } else {
        notice(&format!("SKIP {name} on PostgreSQL: not reachable at {}", pg_admin_url()));
    }
}

/// The backends a test loops over itself (when it needs to configure the
/// app before it exists): SQLite, then PostgreSQL when reachable (with the
/// same skip/require rules as [`on_each_backend`]).
pub async fn backends(name: &str) -> Vec<Kind> {
    let mut kinds = vec![Kind::Sqlite];
    if pg_reachable().await {
        kinds.push(Kind::Postgres);
    } else if std::env::var("MESHGATE_TEST_REQUIRE_PG").is_ok_and(|v| v == "1") {
        panic!("PostgreSQL required but unreachable at {}", pg_admin_url());
    } else {
        notice(&format!("SKIP {name} on PostgreSQL: not reachable at {}", pg_admin_url()));
    }
    kinds
}
