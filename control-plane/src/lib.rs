//! meshgate control plane: the authority that issues every credential the
//! meshgate filter checks — users and login, access and refresh tokens, apps
//! and roles, API keys, signing keys and JWKS, revocations, audit.
//!
//! An axum + tokio service over SQLite (default, WAL) or PostgreSQL, the same
//! SQL on both through sqlx's `Any` driver. One module per domain, each with
//! its own `router()`:
//!
//! | module | what |
//! |---|---|
//! | [`config`] | settings: flags with environment fallbacks |
//! | [`db`] | pool, migrations, the change counter |
//! | [`error`] | the one error type → `application/problem+json` |
//! | [`extract`] | body/query/path extractors with problem rejections, client IP |
//! | [`crypto`] | randomness, digests, master key (encryption at rest) |
//! | [`state`] | shared state, clock, signing key cache |
//! | [`bootstrap`] | first-start admin, admin app, first keys |
//! | [`auth`] | login, refresh rotation, logout, me; caller extractors |
//! | [`login`] | provider logins (OIDC, GitHub, Apple), email codes, token exchange, sign-in page |
//! | [`tokens`] | access token minting and verification |
//! | [`users`] | user list, create, get, patch |
//! | [`apps`] | apps, roles, role assignments |
//! | [`apikeys`] | API keys: create, list, revoke, verify |
//! | [`signing`] | signing keys: rotation, JWKS, OpenID discovery |
//! | [`revocations`] | revocation records |
//! | [`credits`] | credit balances, grants, deductions, usage reports from filters |
//! | [`sync`] | the sync feed to filters: snapshots, deltas, long-poll |
//! | [`forward_auth`] | central verification for ext_authz / auth_request / forwardAuth |
//! | [`housekeeping`] | periodic purge of expired rows |
//! | [`audit`] | audit log and its query API |
//! | [`ops`] | health, metrics, OpenAPI |
//!
//! Entry points: [`app`] builds the router (tests drive it with `oneshot`),
//! [`run`] serves it on a listener until a shutdown future resolves,
//! [`serve`] does everything the binary needs.

pub mod apikeys;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod credits;
pub mod crypto;
pub mod db;
pub mod error;
pub mod extract;
pub mod forward_auth;
pub mod housekeeping;
pub mod login;
pub mod ops;
pub mod revocations;
pub mod signing;
pub mod state;
pub mod sync;
pub mod tokens;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::crypto::MasterKey;
use crate::db::Db;
use crate::error::ApiError;
use crate::state::AppState;

/// The whole HTTP API over `state`.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .merge(ops::router())
        .merge(auth::router())
        .merge(login::router())
        .merge(users::router())
        .merge(apps::router())
        .merge(apikeys::router())
        .merge(revocations::router())
        .merge(credits::router())
        .merge(signing::router())
        .merge(audit::router())
        .merge(sync::router())
        .merge(forward_auth::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), ops::metrics::track))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Opens the database, loads the master key and bootstraps an empty
/// database. Returns the state and, when one was generated, the bootstrap
/// admin password (for the caller to show once).
pub async fn prepare(config: Config) -> anyhow::Result<(AppState, Option<String>)> {
    config.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let db = Db::connect(&config.database_url(), config.db_pool_size).await?;
    let master = MasterKey::load_or_generate(config.master_key.as_deref(), &config.data_dir)?;
    let login = login::Login::load(&config)?;
    let state = AppState::new(config, db, master, login);
    if state.db.backend == db::Backend::Postgres {
        // Changes committed through other replicas wake this one's polls.
        state.sync.listen_postgres(state.config.database_url()).await;
    }
    let password = bootstrap::run(&state).await?;
    Ok((state, password))
}

/// Serves the API on `listener` until `shutdown` resolves, then drains
/// in-flight requests (held sync polls answer at once).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let notifier = state.clone();
    let shutdown = async move {
        shutdown.await;
        notifier.sync.shutdown();
    };
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown).await
}

/// Everything `meshgate serve` does: prepare, bind, serve until Ctrl-C or
/// SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let admin_user = config.admin_user.clone();
    let (state, generated) = prepare(config).await?;
    if let Some(password) = generated {
        // Printed once, to the terminal, never to the log.
        println!("meshgate: created admin user '{admin_user}' with password: {password}");
        println!("meshgate: this password is shown only once; set MESHGATE_ADMIN_PASSWORD to choose it");
    }
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, backend = ?state.db.backend, "meshgate control plane listening");
    let purger = tokio::spawn(housekeeping::run_periodically(state.clone(), std::time::Duration::from_secs(600)));
    run(listener, state.clone(), shutdown_signal()).await?;
    purger.abort();
    state.db.pool.close().await;
    tracing::info!("meshgate control plane stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
