//! Real-socket tests: the service on port 0, spoken to over TCP with plain
//! HTTP/1.1, then shut down gracefully.

mod common;

use std::net::SocketAddr;

use common::{ADMIN_PASSWORD, TestApp, on_each_backend};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request on a fresh connection; returns (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

async fn serve(
    app: &TestApp,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = app.state.clone();
    let handle = tokio::spawn(meshgate::run(listener, state, async move {
        let _ = rx.await;
    }));
    (addr, tx, handle)
}

#[tokio::test]
async fn over_a_real_socket() {
    on_each_backend("over_a_real_socket", |app| async move {
        let (addr, stop, handle) = serve(&app).await;
        let (s, body) = http(addr, "GET", "/health", None, None).await;
        assert_eq!(s, 200, "{body}");
        let login = json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string();
        let (s, body) = http(addr, "POST", "/api/v1/auth/login", None, Some(&login)).await;
        assert_eq!(s, 200, "{body}");
        let tokens: Value = serde_json::from_str(&body).unwrap();
        let at = tokens["access_token"].as_str().unwrap();
        let (s, body) = http(addr, "GET", "/api/v1/auth/me", Some(at), None).await;
        assert_eq!(s, 200, "{body}");
        // The peer address reaches the audit log.
        let (s, body) = http(addr, "GET", "/api/v1/audit?action=login.success", Some(at), None).await;
        assert_eq!(s, 200, "{body}");
        let audit: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(audit["items"][0]["source_ip"], "127.0.0.1");
        let (s, body) = http(addr, "POST", "/api/v1/auth/login", None, Some("{oops")).await;
        assert_eq!(s, 400, "{body}");
        assert!(body.contains("urn:meshgate:problem:malformed-json"));

        // Graceful shutdown: the server stops accepting and the task ends.
        stop.send(()).unwrap();
        let finished = tokio::time::timeout(std::time::Duration::from_secs(10), handle).await;
        assert!(matches!(finished, Ok(Ok(Ok(())))));
        assert!(TcpStream::connect(addr).await.is_err());
        app
    })
    .await;
}

#[tokio::test]
async fn concurrent_refresh_of_one_token_keeps_the_session() {
    on_each_backend("concurrent_refresh_of_one_token_keeps_the_session", |app| async move {
        let (addr, stop, handle) = serve(&app).await;
        let (_, tokens) = app.login("admin", ADMIN_PASSWORD, None).await;
        let body = json!({"refresh_token": tokens["refresh_token"]}).to_string();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let body = body.clone();
                tokio::spawn(async move { http(addr, "POST", "/api/v1/auth/refresh", None, Some(&body)).await })
            })
            .collect();
        let mut successors = Vec::new();
        for t in tasks {
            let (s, b) = t.await.unwrap();
            assert_eq!(s, 200, "{b}");
            let v: Value = serde_json::from_str(&b).unwrap();
            successors.push(v["refresh_token"].as_str().unwrap().to_string());
        }
        successors.dedup();
        assert_eq!(successors.len(), 1, "a retry inside the grace window gets the same successor");
        stop.send(()).unwrap();
        let _ = handle.await;
        app
    })
    .await;
}
