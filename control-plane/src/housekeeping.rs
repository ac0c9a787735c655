//! Periodic purge of rows that can no longer matter, so tables stay bounded:
//! revocations past `until`, ended sessions and their refresh tokens, and
//! retired signing keys whose tokens have all expired. Filters drop expired
//! revocations by `until` on their own, so deleting them loses nothing;
//! deleting signing keys raises the sync feed's delta floor.

use std::time::Duration;

use crate::db::Db;

/// How long ended sessions are kept for inspection, in seconds.
const KEEP_ENDED_SECS: i64 = 86_400;

/// Deletes what has expired at `now`; returns the number of rows removed.
pub async fn purge(db: &Db, now: i64) -> Result<u64, sqlx::Error> {
    let old = now - KEEP_ENDED_SECS;
    let mut tx = db.begin().await?;
    let mut removed = 0;
    let statements: [(&str, i64); 6] = [
        ("DELETE FROM oauth_states WHERE expires_at < $1", now),
        ("DELETE FROM email_otps WHERE expires_at < $1", now),
        ("DELETE FROM revocations WHERE until < $1", now),
        (
            "DELETE FROM refresh_tokens WHERE session_id IN \
             (SELECT id FROM sessions WHERE expires_at < $1 OR revoked_at < $1)",
            old,
        ),
        ("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1", old),
        ("DELETE FROM signing_keys WHERE status = 'retired' AND retire_after < $1", old),
    ];
    let mut keys_removed = 0;
    for (sql, bound) in statements {
        keys_removed = sqlx::query(sql).bind(bound).execute(&mut *tx).await?.rows_affected();
        removed += keys_removed;
    }
    if keys_removed > 0 {
        // A delta cannot say "this signing key row is gone": filters older
        // than now get a snapshot (the last statement deletes signing keys).
        crate::db::raise_sync_floor(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// Runs [`purge`] every `every` until the process ends.
pub async fn run_periodically(state: crate::state::AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match purge(&state.db, state.now()).await {
            Ok(n) if n > 0 => {
                state.sync.changed();
                tracing::info!(removed = n, "housekeeping purged expired rows");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
    }
}
