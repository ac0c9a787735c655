//! Helpers for the login-flow tests: the control plane on a real socket with
//! a login configuration, the `oidc-provider` harness (node), a cookie-keeping
//! HTTP "browser" that walks redirects and the provider's forms.
#![allow(dead_code)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{Kind, TestApp};

/// The npm harness directory (`make login-harness` installs it).
pub fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/harness")
}

/// Fails loudly when the Makefile's install step was skipped.
pub fn require_harness() {
    let dir = harness_dir();
    assert!(
        dir.join("node_modules/oidc-provider").is_dir() && dir.join("node_modules/playwright-core").is_dir(),
        "the login test harness is not installed: run `make login-harness` (npm ci in {})",
        dir.display()
    );
}

/// A running `oidc-provider`, killed on drop.
pub struct Op {
    child: Child,
    /// Its issuer URL.
    pub issuer: String,
}

impl Op {
    /// Starts the provider with these clients (see `op.mjs`).
    pub fn start(clients: Value) -> Self {
        require_harness();
        let mut child = Command::new("node")
            .arg("op.mjs")
            .current_dir(harness_dir())
            .env("OP_CLIENTS", clients.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed to run the OpenID provider harness");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("op output");
        // Keep draining: a closed pipe would kill the provider on its next write.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("op did not start: {line:?}"));
        Self { child, issuer: info["issuer"].as_str().expect("issuer").to_string() }
    }

    /// Stops it now (the "provider down" tests).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The control plane on a real socket with a login configuration.
pub struct LoginEnv {
    pub app: TestApp,
    pub base: String,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _config_dir: tempfile::TempDir,
}

/// The return URL registered for the test app `shop`.
pub const RETURN_TO: &str = "http://127.0.0.1:9/app/callback";

impl LoginEnv {
    /// Binds a port, then builds the app with `login_config(base)` as its
    /// login configuration, serves it, and registers app `shop` with
    /// [`RETURN_TO`] (plus `extra_return` URLs).
    pub async fn start(kind: Kind, login_config: impl FnOnce(&str) -> Value, extra_return: &[String]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("login.json");
        std::fs::write(&path, login_config(&base).to_string()).expect("write login config");
        let app = TestApp::with(kind, |c| {
            c.public_url = Some(base.clone());
            c.login_config = Some(path.clone());
        })
        .await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(meshgate::run(listener, app.state.clone(), async move {
            let _ = rx.await;
        }));
        let admin = app.admin_token().await;
        let (s, v) = app
            .call(axum::http::Method::POST, "/api/v1/apps", Some(&admin), Some(json!({"id": "shop", "name": "Shop"})))
            .await;
        assert_eq!(s, 201, "{v}");
        let mut urls = vec![RETURN_TO.to_string()];
        urls.extend_from_slice(extra_return);
        let (s, v) = app
            .call(axum::http::Method::PUT, "/api/v1/apps/shop/return-urls", Some(&admin), Some(json!({ "urls": urls })))
            .await;
        assert_eq!(s, 200, "{v}");
        Self { app, base, addr, stop: Some(tx), _config_dir: dir }
    }

    pub fn authorize_url(&self, provider: &str, return_to: &str) -> String {
        let q = form(&[("app_id", "shop"), ("return_to", return_to)]);
        format!("{}/api/v1/auth/oauth/{provider}/authorize?{q}", self.base)
    }

    /// Row counts that a failed login must leave unchanged.
    pub async fn footprint(&self) -> (i64, i64, i64) {
        let count = |table: &'static str| async move {
            let row: (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&self.app.state.db.pool)
                .await
                .expect("count");
            row.0
        };
        (count("users").await, count("identities").await, count("sessions").await)
    }

    pub async fn finish(mut self) -> TestApp {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.app
    }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(&format!("{}={}", enc(k), enc(v)));
    }
    s
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A cookie-keeping client that never follows redirects on its own.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// Follows `url` through the provider (logging in as `login` and granting
/// consent on its forms) until the provider redirects to `stop_at`;
/// returns that URL without requesting it.
pub async fn walk(browser: &reqwest::Client, url: &str, stop_at: &str, login: &str) -> String {
    let mut url = url.to_string();
    for _ in 0..20 {
        if url.starts_with(stop_at) {
            return url;
        }
        let resp = browser.get(&url).send().await.expect("get");
        let next = if resp.status().is_redirection() {
            location(&resp)
        } else {
            let origin = origin(&url);
            let html = resp.text().await.expect("html");
            let action = html.split("action=\"").nth(1).and_then(|s| s.split('"').next()).expect("a form");
            let body = if html.contains("name=\"login\"") {
                form(&[("prompt", "login"), ("login", login), ("password", "anything")])
            } else {
                form(&[("prompt", "consent")])
            };
            let target = if action.starts_with("http") { action.to_string() } else { format!("{origin}{action}") };
            let resp = browser
                .post(target)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .expect("post");
            assert!(resp.status().is_redirection(), "form post: {}", resp.status());
            location(&resp)
        };
        url = if next.starts_with('/') { format!("{}{next}", origin(&url)) } else { next };
    }
    panic!("too many redirects walking the provider");
}

fn origin(url: &str) -> String {
    let rest = url.split_once("://").map(|(s, r)| (s, r.split('/').next().unwrap_or(""))).expect("absolute url");
    format!("{}://{}", rest.0, rest.1)
}

/// The tokens in a redirect's fragment.
pub fn fragment(location: &str) -> std::collections::HashMap<String, String> {
    let (before, frag) = location.split_once('#').expect("a fragment");
    assert!(!before.contains("access_token") && !before.contains("refresh_token"), "tokens in the query: {before}");
    frag.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%2E", ".").replace("%2e", ".")))
        .collect()
}
