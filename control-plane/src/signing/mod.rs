//! Signing keys over HTTP: `GET /.well-known/jwks.json`,
//! `GET /.well-known/openid-configuration`, `POST /api/v1/signing-keys/rotate`.
//! The key life cycle itself is in [`keyring`].

pub mod keyring;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::{self, Event};
use crate::auth::principal::Admin;
use crate::error::ApiResult;
use crate::extract::Query;
use crate::state::AppState;

/// Query of a rotation.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RotateQuery {
    /// Rotate even if the next key was published only moments ago (key
    /// compromise): filters may briefly see tokens from a key they lack.
    #[serde(default)]
    pub force: bool,
}

/// Answer of a rotation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rotated {
    /// The kid that signs from now on.
    pub active_kid: String,
}

/// Signing key routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(openid_configuration))
        .route("/api/v1/signing-keys/rotate", post(rotate))
}

/// Public keys of every published asymmetric key (next, active, retired
/// until its tokens expire). HS256 secrets never appear here.
#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, description = "JWK set")))]
pub async fn jwks(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let now = state.now();
    let keys: Vec<Value> =
        state.keyring().await?.iter().filter(|k| k.is_live(now)).filter_map(|k| k.public_jwk.clone()).collect();
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(json!({ "keys": keys }))))
}

/// OpenID Provider metadata (the parts that apply).
#[utoipa::path(get, path = "/.well-known/openid-configuration", responses((status = 200, description = "discovery document")))]
pub async fn openid_configuration(State(state): State<AppState>) -> Json<Value> {
    let iss = state.config.issuer.trim_end_matches('/');
    Json(json!({
        "issuer": state.config.issuer,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "token_endpoint": format!("{iss}/api/v1/auth/login"),
        "userinfo_endpoint": format!("{iss}/api/v1/auth/me"),
        "revocation_endpoint": format!("{iss}/api/v1/revocations"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [state.config.signing_alg.as_str()],
        "token_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["iss", "aud", "sub", "app_id", "roles", "scope", "sid", "jti", "iat", "exp"],
    }))
}

/// Promotes the published next key to active and publishes a new next key.
#[utoipa::path(post, path = "/api/v1/signing-keys/rotate", params(RotateQuery),
    responses((status = 200, body = Rotated), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn rotate(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(q): Query<RotateQuery>,
) -> ApiResult<Json<Rotated>> {
    let now = state.now();
    // Old tokens stay verifiable for their whole lifetime plus skew.
    let retire_delay = state.config.access_ttl_secs + 60;
    let min_published = (!q.force).then_some(state.config.key_publish_secs);
    let active_kid =
        keyring::rotate(&state.db, &state.master, state.config.signing_alg, now, retire_delay, min_published).await?;
    state.sync.changed();
    let detail = serde_json::json!({"force": q.force});
    let event = Event {
        action: "signing_key.rotate",
        actor: Some(&admin.user_id),
        target: Some(&active_kid),
        ip: Some(&admin.ip),
        outcome: "success",
        detail: Some(detail),
    };
    audit::record_alone(&state.db, now, event).await?;
    state.reload_keyring().await?;
    Ok(Json(Rotated { active_kid }))
}
