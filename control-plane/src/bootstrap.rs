//! First start: the control plane's own app (`meshgate`) with its `admin`
//! role, an admin user, and the first signing keys.

use crate::audit::{self, Event};
use crate::auth::password;
use crate::auth::principal::{ADMIN_APP, ADMIN_ROLE};
use crate::crypto;
use crate::db::{self, Counter};
use crate::signing::keyring;
use crate::state::AppState;
use crate::users;

/// Creates what an empty database needs. Returns the generated admin password
/// when one was generated (the caller prints it once).
pub async fn run(state: &AppState) -> anyhow::Result<Option<String>> {
    let now = state.now();
    keyring::ensure_keys(&state.db, &state.master, state.config.signing_alg, now).await?;
    let mut tx = state.db.begin().await?;
    // The counter's row lock serialises replicas starting together.
    db::bump(&mut tx, Counter::Audit).await?;
    sqlx::query("INSERT INTO apps (id, name, description, created_at) VALUES ($1, $1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(ADMIN_APP)
        .bind("the meshgate control plane")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO roles (id, app_id, name, description, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
        .bind("meshgate-admin")
        .bind(ADMIN_APP)
        .bind(ADMIN_ROLE)
        .bind("full control-plane access")
        .bind("admin")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let has_users = sqlx::query("SELECT 1 FROM users LIMIT 1").fetch_optional(&mut *tx).await?.is_some();
    if has_users {
        tx.commit().await?;
        return Ok(None);
    }
    let username =
        users::check_username(&state.config.admin_user).map_err(|e| anyhow::anyhow!("MESHGATE_ADMIN_USER: {e}"))?;
    let (password, generated) = match &state.config.admin_password {
        Some(p) => (p.clone(), false),
        None => (crypto::new_secret(), true),
    };
    password::check_policy(&password).map_err(|e| anyhow::anyhow!("MESHGATE_ADMIN_PASSWORD: {e}"))?;
    let hash = password::hash(password.clone(), users::cost(state)).await?;
    let id = users::insert(&mut tx, &username, None, &hash, now).await?;
    sqlx::query("INSERT INTO role_assignments (user_id, role_id, app_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind("meshgate-admin")
        .bind(ADMIN_APP)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let event = Event { action: "bootstrap.admin", target: Some(&id), outcome: "success", ..Default::default() };
    audit::record(&mut tx, now, event).await?;
    tx.commit().await?;
    Ok(generated.then_some(password))
}
