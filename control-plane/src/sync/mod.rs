//! The sync feed: `GET /api/v1/sync?since=<u64>&wait=<secs>[&snapshot=true]`,
//! pushing signing keys, API keys and revocations to filters (wire contract:
//! `meshgate_wire::sync`).
//!
//! - **Who**: an API key with the `sync` scope, or an admin. No credential:
//!   401; any other credential: 403.
//! - **What**: a snapshot when `since` is absent or 0, `snapshot=true`, or
//!   `since` is below the delta floor or above the current version; a delta
//!   (rows stamped after `since`) otherwise.
//! - **When**: if nothing is newer than `since`, the request is held up to
//!   `wait` seconds (default 30, capped at 60, `0` answers at once) and
//!   answered as soon as a change commits ([`notify`]); when the wait runs
//!   out, or the server shuts down, the answer is an empty delta with
//!   `version == since`.
//!
//! Submodules: [`feed`] (building responses), [`direct`] (SQLite snapshot
//! pages without sqlx), `rows` (one key or revocation in a body),
//! [`notify`] (wake-ups), [`cache`] (one build per answer when many polls
//! wake together).

pub mod cache;
pub mod direct;
pub mod feed;
pub mod notify;
mod rows;

use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use meshgate_wire::sync::SyncKind;
use tokio::time::Instant;

use crate::auth::principal::{Credential, Principal};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
pub use cache::Cache;
pub use feed::Built;
pub use notify::Notifier;

/// The API key scope that grants the feed.
pub const SYNC_SCOPE: &str = "sync";
/// Default long-poll wait, seconds.
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// Longest long-poll wait, seconds (larger values are capped).
pub const MAX_WAIT_SECS: u64 = 60;

/// Sync feed routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/sync", get(sync))
}

/// Parsed query of a feed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncQuery {
    /// The version the filter holds (absent or 0: none).
    pub since: Option<u64>,
    /// How long to hold the request when nothing is newer.
    pub wait: Duration,
    /// Ask for a snapshot whatever `since` is.
    pub snapshot: bool,
    /// Snapshots only: at most this many keys and revocations per answer,
    /// the rest in further pages (`next` in the answer → `after`).
    pub limit: Option<u32>,
    /// Snapshots only: continue after this cursor (from `next`).
    pub after: Option<feed::Cursor>,
}

impl SyncQuery {
    /// Parses the raw query string; anything malformed, unknown or repeated
    /// is a 400 `invalid-query` problem.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let (mut since, mut wait, mut snapshot, mut limit, mut after) = (None, None, None, None, None);
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |what: &str| ApiError::InvalidQuery(format!("{name}: {what}"));
            let number = || value.parse::<u64>().map_err(|_| bad("expected a non-negative integer"));
            let slot_taken = match name {
                "since" => since.replace(number()?).is_some(),
                "wait" => wait.replace(number()?).is_some(),
                "limit" => {
                    let n = number()?;
                    let n = u32::try_from(n).ok().filter(|n| (1..=feed::MAX_PAGE).contains(n));
                    limit.replace(n.ok_or_else(|| bad(&format!("expected 1 to {}", feed::MAX_PAGE)))?).is_some()
                }
                "after" => {
                    after.replace(feed::Cursor::parse(value).ok_or_else(|| bad("not a cursor from next"))?).is_some()
                }
                "snapshot" => match value {
                    "true" | "1" => snapshot.replace(true).is_some(),
                    "false" | "0" => snapshot.replace(false).is_some(),
                    _ => return Err(bad("expected true or false")),
                },
                _ => return Err(ApiError::InvalidQuery(format!("unknown parameter {name}"))),
            };
            if slot_taken {
                return Err(bad("given more than once"));
            }
        }
        Ok(Self {
            since: since.filter(|&s| s > 0),
            wait: Duration::from_secs(wait.unwrap_or(DEFAULT_WAIT_SECS).min(MAX_WAIT_SECS)),
            snapshot: snapshot.unwrap_or(false) || after.is_some(),
            limit,
            after,
        })
    }
}

/// A caller allowed to read the feed: a `sync`-scoped API key, or an admin.
#[derive(Debug, Clone)]
pub struct FeedReader(pub Principal);

impl FromRequestParts<AppState> for FeedReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        let sync_key = matches!(p.credential, Credential::ApiKey { .. }) && p.scopes.iter().any(|s| s == SYNC_SCOPE);
        if sync_key || p.is_admin() { Ok(Self(p)) } else { Err(ApiError::Forbidden) }
    }
}

/// The feed.
#[utoipa::path(get, path = "/api/v1/sync",
    params(
        ("since" = Option<u64>, Query, description = "version the filter holds; absent or 0: snapshot"),
        ("wait" = Option<u64>, Query, description = "seconds to hold the request when nothing is newer (default 30, max 60)"),
        ("snapshot" = Option<bool>, Query, description = "answer a snapshot whatever since is"),
        ("limit" = Option<u32>, Query, description = "snapshots: at most this many keys + revocations per page"),
        ("after" = Option<String>, Query, description = "snapshots: the next page, from the previous page's next"),
    ),
    responses((status = 200, description = "meshgate_wire::sync::SyncResponse"),
              (status = 400, body = crate::error::Problem), (status = 401, body = crate::error::Problem),
              (status = 403, body = crate::error::Problem)))]
pub async fn sync(
    State(state): State<AppState>,
    _reader: FeedReader,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let q = SyncQuery::parse(raw.as_deref())?;
    let built = answer(&state, &q).await?;
    let series = match (built.kind, built.version == q.since.unwrap_or(0)) {
        (SyncKind::Snapshot, _) => "meshgate_sync_responses_total{kind=\"snapshot\"}",
        (_, true) => "meshgate_sync_responses_total{kind=\"unchanged\"}",
        (_, false) => "meshgate_sync_responses_total{kind=\"delta\"}",
    };
    state.metrics.inc(series);
    let headers = [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")];
    Ok((headers, built.body))
}

/// Answers `q`, holding the request while nothing is newer than `since`.
pub async fn answer(state: &AppState, q: &SyncQuery) -> ApiResult<Built> {
    let since = match q.since {
        Some(since) if !q.snapshot => since,
        _ => {
            let page = feed::Page { limit: q.limit, after: q.after.clone() };
            if page.after.is_some() {
                // A later page: one filter asks for it, nothing to share.
                return feed::build(state, None, &page).await;
            }
            let version = u64::try_from(db::change_version(&state.db).await?).unwrap_or(0);
            return cached_build(state, None, version, &page).await;
        }
    };
    let deadline = Instant::now() + q.wait;
    // Subscribe before reading the version: a commit after the read is then
    // always seen by `changed()` (no lost wake-up).
    let mut changes = state.sync.subscribe();
    let mut shutdown = state.sync.shutdown_signal();
    loop {
        let version = u64::try_from(db::change_version(&state.db).await?).unwrap_or(0);
        if version != since {
            let page = feed::Page { limit: q.limit, after: None };
            return cached_build(state, Some(since), version, &page).await;
        }
        if q.wait.is_zero() || state.sync.is_shutting_down() {
            return feed::encode(&feed::unchanged(since));
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return feed::encode(&feed::unchanged(since)) },
            _ = shutdown.wait_for(|down| *down) => return feed::encode(&feed::unchanged(since)),
            () = tokio::time::sleep_until(deadline) => return feed::encode(&feed::unchanged(since)),
        }
    }
}

/// The answer for `since` at `version` from the cache, or built once while
/// concurrent requests for the same answer wait for it.
async fn cached_build(state: &AppState, since: Option<u64>, version: u64, page: &feed::Page) -> ApiResult<Built> {
    let cache = &state.sync_cache;
    if let Some(hit) = cache.get((since, version, page.limit), state.now()) {
        return Ok(hit);
    }
    let _building = match since {
        None => cache.snapshot_build.lock().await,
        Some(_) => cache.delta_build.lock().await,
    };
    if let Some(hit) = cache.get((since, version, page.limit), state.now()) {
        return Ok(hit);
    }
    let built = feed::build(state, since, page).await?;
    // Stored under the version actually read (newer than `version` when
    // something committed in between).
    cache.put((since, built.version, page.limit), built.clone(), state.now());
    Ok(built)
}
