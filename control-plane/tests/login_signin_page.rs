//! The sign-in page in headless Chromium (JavaScript disabled): a
//! screenshot, a wrong password shown as a plain error, the right one
//! redirecting to `return_to` with tokens in the fragment. Plus the page's
//! refusals and headers, checked without a browser. Needs `make
//! login-harness` (node modules and Debian's chromium).

mod common;

use std::process::Command;

use axum::http::StatusCode;
use common::login::{LoginEnv, RETURN_TO, enc, fragment, harness_dir, require_harness};
use common::{Kind, backends};
use serde_json::{Value, json};

fn chromium() -> String {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "chromium not found at {path}: run `make login-harness` (installs Debian's chromium)"
    );
    path
}

fn config(_base: &str) -> Value {
    json!({"providers": [
        {"id": "corp", "kind": "oidc", "name": "Corp SSO", "issuer": "http://127.0.0.1:9", "client_id": "x", "client_secret": "y"},
        {"id": "half", "kind": "github", "client_id": "x", "client_secret_env": "MESHGATE_TEST_UNSET_SECRET"}
    ]})
}

#[tokio::test(flavor = "multi_thread")]
async fn signin_page_in_headless_chromium() {
    require_harness();
    let chromium = chromium();
    let env = LoginEnv::start(Kind::Sqlite, config, &[]).await;
    let return_to = format!("{}/health", env.base);
    let admin = env.app.admin_token().await;
    let (s, _) = env
        .app
        .call(
            axum::http::Method::PUT,
            "/api/v1/apps/shop/return-urls",
            Some(&admin),
            Some(json!({"urls": [RETURN_TO, return_to]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    env.app.create_user(&admin, "carol", "carol-password").await;
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("signin.png");
    let url = format!("{}/signin?app_id=shop&return_to={}", env.base, enc(&return_to));
    let started = std::time::Instant::now();
    let output = {
        let (url, return_to, shot) = (url.clone(), return_to.clone(), shot.clone());
        tokio::task::spawn_blocking(move || {
            Command::new("node")
                .arg("signin.mjs")
                .current_dir(harness_dir())
                .env("SIGNIN_URL", url)
                .env("RETURN_TO", return_to)
                .env("USERNAME", "carol")
                .env("PASSWORD", "carol-password")
                .env("SHOT", shot)
                .env("CHROMIUM", chromium)
                .output()
                .expect("node must be installed (make login-harness)")
        })
        .await
        .unwrap()
    };
    assert!(output.status.success(), "signin.mjs failed: {}", String::from_utf8_lossy(&output.stderr));
    common::notice(&format!("chromium sign-in walk took {:?}; screenshot at {}", started.elapsed(), shot.display()));
    let seen: Value = serde_json::from_slice(&output.stdout).expect("json from signin.mjs");
    assert_eq!(seen["title"], "Sign in · meshgate");
    assert_eq!(seen["providers"], json!(["Continue with Corp SSO"]));
    assert_eq!(seen["error"], "Wrong username or password.");
    let f = fragment(seen["final"].as_str().unwrap());
    let (s, me) = env.app.call(axum::http::Method::GET, "/api/v1/auth/me", Some(&f["access_token"]), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((me["user"]["username"].as_str(), me["app_id"].as_str()), (Some("carol"), Some("shop")));
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "screenshot is not a real PNG");
    if let Ok(dest) = std::env::var("MESHGATE_SIGNIN_SCREENSHOT") {
        std::fs::copy(&shot, dest).expect("copy screenshot");
    }
    env.finish().await.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signin_page_refusals_and_headers() {
    for kind in backends("signin_page_refusals_and_headers").await {
        let env = LoginEnv::start(kind, config, &[]).await;
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let ok =
            client.get(format!("{}/signin?app_id=shop&return_to={}", env.base, enc(RETURN_TO))).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let csp = ok.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"), "{csp}");
        let html = ok.text().await.unwrap();
        assert!(!html.contains("<script") && !html.contains("style=\""), "no scripts or inline styles");
        // A return_to not on the list: no forms at all.
        for bad in [format!("{RETURN_TO}/"), "https://evil.test/".to_string()] {
            let resp =
                client.get(format!("{}/signin?app_id=shop&return_to={}", env.base, enc(&bad))).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert!(!resp.text().await.unwrap().contains("<form"));
        }
        // A forged form post with another return_to is refused the same way.
        let body = common::login::form(&[
            ("username", "admin"),
            ("password", common::ADMIN_PASSWORD),
            ("app_id", "shop"),
            ("return_to", "https://evil.test/"),
        ]);
        let resp = client
            .post(format!("{}/signin/password", env.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // A post from another site (login CSRF) is refused.
        let body = common::login::form(&[
            ("username", "admin"),
            ("password", common::ADMIN_PASSWORD),
            ("app_id", "shop"),
            ("return_to", RETURN_TO),
        ]);
        for (name, value) in [("origin", "https://evil.test"), ("sec-fetch-site", "cross-site")] {
            let resp = client
                .post(format!("{}/signin/password", env.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .header(name, value)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}");
        }
        let resp = client
            .post(format!("{}/signin/password", env.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", env.base.clone())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        // Markup in input is escaped.
        let body = common::login::form(&[
            ("username", "<script>x</script>"),
            ("password", "nope-nope"),
            ("app_id", "shop"),
            ("return_to", RETURN_TO),
        ]);
        let resp = client
            .post(format!("{}/signin/password", env.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(!resp.text().await.unwrap().contains("<script>"));
        // The email-code forms end in the same fragment redirect.
        let body = common::login::form(&[("email", "page@example.test"), ("app_id", "shop"), ("return_to", RETURN_TO)]);
        let resp = client
            .post(format!("{}/signin/otp/send", env.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.text().await.unwrap().contains("id=\"code-verify\""));
        let dir = env.app.state.config.mail_dir();
        let mail = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let text = std::fs::read_to_string(mail).unwrap();
        let code = &text[text.find("code is ").unwrap() + 8..][..6];
        let body = common::login::form(&[
            ("email", "page@example.test"),
            ("code", code),
            ("app_id", "shop"),
            ("return_to", RETURN_TO),
        ]);
        let resp = client
            .post(format!("{}/signin/otp/verify", env.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let f = fragment(resp.headers()["location"].to_str().unwrap());
        assert_eq!(f["is_new_user"], "true");
        env.finish().await.cleanup().await;
    }
}
