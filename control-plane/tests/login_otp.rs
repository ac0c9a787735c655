//! Email one-time codes: delivery through the file mailer, hashed storage,
//! new-user flag, no address enumeration, resend throttling, expiry, and the
//! attempt limit (the 6th guess is refused even when right).

mod common;

use axum::http::{Method, StatusCode, header};
use common::{TestApp, assert_problem, on_each_backend};
use serde_json::{Value, json};

/// The code in the newest message to `to` written by the file mailer.
fn code_for(app: &TestApp, to: &str) -> String {
    let dir = app.state.config.mail_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("mail dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let text = files
        .iter()
        .rev()
        .map(|p| std::fs::read_to_string(p).expect("mail"))
        .find(|t| t.contains(&format!("To: {to}")))
        .expect("a message to the address");
    let at = text.find("code is ").expect("code line") + 8;
    text[at..at + 6].to_string()
}

async fn send(app: &TestApp, email: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    app.raw(Method::POST, "/api/v1/auth/otp/email/send", None, Some(json!({"email": email}).to_string())).await
}

async fn verify(app: &TestApp, email: &str, code: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    let body = json!({"email": email, "code": code}).to_string();
    app.raw(Method::POST, "/api/v1/auth/otp/email/verify", None, Some(body)).await
}

#[tokio::test]
async fn email_codes() {
    on_each_backend("email_codes", |app| async move {
        let admin = app.admin_token().await;
        // A known address (the admin's) and an unknown one answer the same.
        let uid = app.call(Method::GET, "/api/v1/auth/me", Some(&admin), None).await.1["user"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (s, v) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/users/{uid}"),
                Some(&admin),
                Some(json!({"email": "admin@example.org"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s1, _, known) = send(&app, "Admin@Example.org").await;
        let (s2, _, unknown) = send(&app, "new.person@example.org").await;
        assert_eq!((s1, &known), (s2, &unknown));
        assert_eq!(s1, StatusCode::ACCEPTED);
        assert_eq!(known, json!({"sent": true, "expires_in": 600}));

        // Stored as a keyed hash, never the digits.
        let code = code_for(&app, "new.person@example.org");
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT code_hash FROM email_otps").fetch_all(&app.state.db.pool).await.unwrap();
        assert!(rows.iter().all(|(h,)| h.len() == 64 && !h.contains(&code)));

        // Resend throttling (same for known and unknown), then allowed again.
        for email in ["admin@example.org", "new.person@example.org"] {
            let (s, h, v) = send(&app, email).await;
            assert_problem(&h, &v, StatusCode::TOO_MANY_REQUESTS, s, "throttled");
            assert!(h.get(header::RETRY_AFTER).is_some());
        }

        // A new address becomes a user; a wrong code is refused first.
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let (s, h, v) = verify(&app, "new.person@example.org", wrong).await;
        assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-code");
        let (s, _, v) = verify(&app, "new.person@example.org", &code).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["is_new_user"], true);
        assert_eq!(v["token_type"], "Bearer");
        let (s, me) = app.call(Method::GET, "/api/v1/auth/me", v["access_token"].as_str(), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(me["user"]["email"], "new.person@example.org");
        // Single use.
        let (s, h, v) = verify(&app, "new.person@example.org", &code).await;
        assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-code");

        // The known address signs in to the existing user.
        let code = code_for(&app, "admin@example.org");
        let (s, _, v) = verify(&app, "admin@example.org", &code).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["is_new_user"], false);
        let (_, me) = app.call(Method::GET, "/api/v1/auth/me", v["access_token"].as_str(), None).await;
        assert_eq!(me["user"]["id"], uid);

        // Brute force: five wrong guesses, then even the right code is refused.
        app.state.clock.advance(61);
        let (s, _, _) = send(&app, "victim@example.org").await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let code = code_for(&app, "victim@example.org");
        let wrong = if code == "123456" { "654321" } else { "123456" };
        for _ in 0..5 {
            let (s, h, v) = verify(&app, "victim@example.org", wrong).await;
            assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-code");
        }
        let (s, h, v) = verify(&app, "victim@example.org", &code).await;
        assert_problem(&h, &v, StatusCode::TOO_MANY_REQUESTS, s, "too-many-attempts");
        let users: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE email = 'victim@example.org'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
        assert_eq!(users.0, 0);

        // Expiry: a code is dead after 10 minutes.
        app.state.clock.advance(61);
        send(&app, "late@example.org").await;
        let code = code_for(&app, "late@example.org");
        app.state.clock.advance(601);
        let (s, h, v) = verify(&app, "late@example.org", &code).await;
        assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-code");

        // Malformed input is a problem, never a panic.
        let (s, h, v) = verify(&app, "late@example.org", "12ab56").await;
        assert_problem(&h, &v, StatusCode::UNAUTHORIZED, s, "invalid-code");
        let (s, h, v) = send(&app, "not-an-address").await;
        assert_problem(&h, &v, StatusCode::UNPROCESSABLE_ENTITY, s, "validation");
        app
    })
    .await;
}

/// Account pre-hijacking: a user who sets a victim's address on their own
/// account must not receive the victim's later email-code login. The address
/// is unverified; the proven login creates the victim's own account and takes
/// the address away from the squatter. An address an admin set links.
#[tokio::test]
async fn self_set_email_does_not_capture_a_login() {
    on_each_backend("self_set_email", |app| async move {
        let admin = app.admin_token().await;
        let mallory = app.create_user(&admin, "mallory", "correct horse battery").await;
        let (s, v) = app.login("mallory", "correct horse battery", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let token = v["access_token"].as_str().unwrap().to_string();
        let path = format!("/api/v1/users/{mallory}");
        let (s, v) = app.call(Method::PATCH, &path, Some(&token), Some(json!({"email": "victim@example.org"}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!((v["email"].as_str(), &v["email_verified"]), (Some("victim@example.org"), &json!(false)));

        // The victim proves the address: a new account, not mallory's.
        let (s, _, _) = send(&app, "victim@example.org").await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let (s, _, v) = verify(&app, "victim@example.org", &code_for(&app, "victim@example.org")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["is_new_user"], true);
        let (_, me) = app.call(Method::GET, "/api/v1/auth/me", v["access_token"].as_str(), None).await;
        let victim = me["user"]["id"].as_str().unwrap().to_string();
        assert_ne!(victim, mallory);
        let (_, v) = app.call(Method::GET, &format!("/api/v1/users/{victim}"), Some(&admin), None).await;
        assert_eq!((v["email"].as_str(), &v["email_verified"]), (Some("victim@example.org"), &json!(true)));
        let (_, v) = app.call(Method::GET, &path, Some(&admin), None).await;
        assert_eq!((&v["email"], &v["email_verified"]), (&Value::Null, &json!(false)), "the squatter lost it");
        let (_, v) = app.call(Method::GET, "/api/v1/audit?action=user.email_released", Some(&admin), None).await;
        assert!(v.to_string().contains(&mallory), "released address audited: {v}");

        // Mallory cannot claim it back while the victim holds it (unique).
        let (s, _) = app.call(Method::PATCH, &path, Some(&token), Some(json!({"email": "victim@example.org"}))).await;
        assert_eq!(s, StatusCode::CONFLICT);

        // An address set by an admin is verified and links.
        let carol = app.create_user(&admin, "carol", "correct horse battery").await;
        let path = format!("/api/v1/users/{carol}");
        let (_, v) = app.call(Method::PATCH, &path, Some(&admin), Some(json!({"email": "carol@example.org"}))).await;
        assert_eq!(v["email_verified"], true, "{v}");
        send(&app, "carol@example.org").await;
        let (s, _, v) = verify(&app, "carol@example.org", &code_for(&app, "carol@example.org")).await;
        assert_eq!((s, &v["is_new_user"]), (StatusCode::OK, &json!(false)), "{v}");
        let (_, me) = app.call(Method::GET, "/api/v1/auth/me", v["access_token"].as_str(), None).await;
        assert_eq!(me["user"]["id"].as_str(), Some(carol.as_str()));
        app
    })
    .await;
}
