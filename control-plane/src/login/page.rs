//! The sign-in page: `GET /signin?app_id=…&return_to=…` lists the configured
//! providers and offers the password and email-code forms. Plain HTML forms
//! posted back here (`/signin/password`, `/signin/otp/send`,
//! `/signin/otp/verify`), no JavaScript at all, one stylesheet; errors are
//! re-rendered in the page; posts from another site are refused (login
//! CSRF). On success the browser goes to `return_to` with
//! the tokens in the fragment, as after a provider login. The page carries
//! no secret: tokens only ever travel in that final redirect.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::oauth::deliver;
use super::{LoginTokens, otp, return_urls};
use crate::auth::{self, LoginRequest};
use crate::error::ApiError;
use crate::extract::{Body, ClientIp, Form, Query};
use crate::state::AppState;

/// The stylesheet (served, never inlined, so the CSP needs no exceptions).
const STYLE: &str = include_str!("signin.css");

/// Where the page was opened for (query, and hidden fields of every form).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Target {
    /// App to sign in to.
    #[serde(default)]
    pub app_id: String,
    /// Allow-listed URL to return to.
    #[serde(default)]
    pub return_to: String,
}

/// The password form.
#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    /// Username or email.
    pub username: String,
    /// Password.
    pub password: String,
    /// Target.
    #[serde(flatten)]
    pub target: Target,
}

/// The email-code forms (send: no code; verify: with code).
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    /// Address.
    pub email: String,
    /// The six digits (verify only).
    pub code: Option<String>,
    /// Target.
    #[serde(flatten)]
    pub target: Target,
}

/// Sign-in page routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signin", get(show))
        .route("/signin/style.css", get(style))
        .route("/signin/password", post(password))
        .route("/signin/otp/send", post(send_code))
        .route("/signin/otp/verify", post(verify_code))
}

/// HTML-escapes text for element content and quoted attributes.
fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// What to show besides the forms.
#[derive(Debug, Default)]
struct View<'a> {
    error: Option<String>,
    notice: Option<String>,
    /// When set, the code form is shown for this address.
    code_for: Option<&'a str>,
}

fn hidden(t: &Target) -> String {
    format!(
        r#"<input type="hidden" name="app_id" value="{}"><input type="hidden" name="return_to" value="{}">"#,
        esc(&t.app_id),
        esc(&t.return_to)
    )
}

fn render(state: &AppState, t: &Target, view: View<'_>, status: StatusCode) -> Response {
    let query = oauth2::url::form_urlencoded::Serializer::new(String::new())
        .append_pair("app_id", &t.app_id)
        .append_pair("return_to", &t.return_to)
        .finish();
    let providers: String = state
        .login
        .settings
        .providers
        .iter()
        .filter(|p| p.missing().is_none())
        .map(|p| {
            let href = format!("/api/v1/auth/oauth/{}/authorize?{query}", p.id);
            format!(
                r#"<li><a class="provider" href="{}">Continue with {}</a></li>"#,
                esc(&href),
                esc(&p.display_name())
            )
        })
        .collect();
    let providers =
        if providers.is_empty() { String::new() } else { format!(r#"<ul class="providers">{providers}</ul>"#) };
    let error = view.error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(&e))).unwrap_or_default();
    let notice = view.notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(&n))).unwrap_or_default();
    let h = hidden(t);
    let code_form = match view.code_for {
        Some(email) => format!(
            r#"<form method="post" action="/signin/otp/verify" id="code-verify">{h}
<input type="hidden" name="email" value="{e}">
<label>Code sent to {e}<input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{{6}}" maxlength="6" required></label>
<button type="submit">Sign in with code</button></form>"#,
            e = esc(email)
        ),
        None => format!(
            r#"<form method="post" action="/signin/otp/send" id="code-send">{h}
<label>Email<input name="email" type="email" autocomplete="email" required></label>
<button type="submit">Email me a code</button></form>"#
        ),
    };
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · meshgate</title><link rel="stylesheet" href="/signin/style.css"></head>
<body><main>
<h1>Sign in</h1>
{error}{notice}
{providers}
<section><h2>With a password</h2>
<form method="post" action="/signin/password" id="password">{h}
<label>Username or email<input name="username" autocomplete="username" required></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></section>
<section><h2>With an email code</h2>
{code_form}</section>
</main></body></html>"#
    );
    page(status, body)
}

fn page(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The page for a target that is missing or not allow-listed: no forms.
fn refused(error: &ApiError) -> Response {
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · meshgate</title><link rel="stylesheet" href="/signin/style.css"></head>
<body><main><h1>Sign in</h1><p class="error" role="alert">This sign-in link is not valid: {}.</p></main></body></html>"#,
        esc(match error {
            ApiError::Validation(d) => d.as_str(),
            ApiError::Forbidden => "it was submitted from another site",
            _ => "the app or return URL is unknown",
        })
    );
    page(error.status(), body)
}

/// The message shown for a failed attempt.
fn message(error: &ApiError) -> String {
    match error {
        ApiError::InvalidCredentials => "Wrong username or password.".into(),
        ApiError::InvalidCode => "That code is wrong or has expired.".into(),
        ApiError::TooManyAttempts { retry_after } => {
            format!("Too many failed attempts. Try again in {} minutes.", (retry_after + 59) / 60)
        }
        ApiError::Throttled { retry_after } => format!("A code was sent a moment ago; wait {retry_after} seconds."),
        ApiError::Validation(d) => d.clone(),
        _ => "Sign-in failed. Please try again later.".into(),
    }
}

async fn check(state: &AppState, t: &Target) -> Result<(), Response> {
    return_urls::require(&state.db, &t.app_id, &t.return_to).await.map_err(|e| refused(&e))
}

/// Refuses a form post made from another site (login CSRF: signing a
/// victim's browser into the attacker's account): browsers mark such posts
/// with `Sec-Fetch-Site: cross-site` or an `Origin` other than ours.
fn same_site(state: &AppState, headers: &HeaderMap) -> bool {
    let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site");
    let base = state.config.public_base();
    let ours = base.split('/').take(3).collect::<Vec<_>>().join("/");
    let foreign_origin =
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_some_and(|o| o != "null" && o != ours);
    !(cross_site || foreign_origin)
}

/// `GET /signin`.
pub async fn show(State(state): State<AppState>, Query(t): Query<Target>) -> Response {
    if let Err(r) = check(&state, &t).await {
        return r;
    }
    render(&state, &t, View::default(), StatusCode::OK)
}

/// `GET /signin/style.css`.
pub async fn style() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

fn done(return_to: &str, tokens: LoginTokens) -> Response {
    deliver(return_to, &tokens).unwrap_or_else(IntoResponse::into_response)
}

/// `POST /signin/password`.
pub async fn password(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    if !same_site(&state, &headers) {
        return refused(&ApiError::Forbidden);
    }
    if let Err(r) = check(&state, &f.target).await {
        return r;
    }
    let req = LoginRequest { username: f.username, password: f.password, app_id: Some(f.target.app_id.clone()) };
    match auth::login(State(state.clone()), ip, Body(req)).await {
        Ok(Json(tokens)) => done(&f.target.return_to, LoginTokens { tokens, is_new_user: false }),
        Err(e) => render(&state, &f.target, View { error: Some(message(&e)), ..View::default() }, e.status()),
    }
}

/// `POST /signin/otp/send`.
pub async fn send_code(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<CodeForm>) -> Response {
    if !same_site(&state, &headers) {
        return refused(&ApiError::Forbidden);
    }
    if let Err(r) = check(&state, &f.target).await {
        return r;
    }
    let req = otp::SendRequest { email: f.email.clone(), app_id: Some(f.target.app_id.clone()) };
    let view = match otp::send(State(state.clone()), Body(req)).await {
        Ok(_) => View {
            notice: Some(format!("If {} can receive mail, a code is on its way.", f.email.trim())),
            code_for: Some(f.email.trim()),
            ..View::default()
        },
        Err(e @ ApiError::Throttled { .. }) => {
            View { error: Some(message(&e)), code_for: Some(f.email.trim()), ..View::default() }
        }
        Err(e) => return render(&state, &f.target, View { error: Some(message(&e)), ..View::default() }, e.status()),
    };
    render(&state, &f.target, view, StatusCode::OK)
}

/// `POST /signin/otp/verify`.
pub async fn verify_code(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    if !same_site(&state, &headers) {
        return refused(&ApiError::Forbidden);
    }
    if let Err(r) = check(&state, &f.target).await {
        return r;
    }
    let req = otp::VerifyRequest { email: f.email.clone(), code: f.code.clone().unwrap_or_default() };
    match otp::verify(State(state.clone()), ip, Body(req)).await {
        Ok(Json(tokens)) => done(&f.target.return_to, tokens),
        Err(e) => {
            let view = View { error: Some(message(&e)), code_for: Some(f.email.trim()), ..View::default() };
            render(&state, &f.target, view, e.status())
        }
    }
}
