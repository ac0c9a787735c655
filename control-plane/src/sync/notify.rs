//! Wake-ups for held long-polls.
//!
//! Every write path that bumps the change counter calls
//! [`Notifier::changed`] right after its commit (in-process, both backends).
//! On PostgreSQL, [`crate::db::bump`] also issues `pg_notify` inside the
//! writing transaction — delivered by PostgreSQL only when it commits — and
//! each replica's [`Notifier::listen_postgres`] task feeds those into the same
//! watch, so a change committed through replica A wakes polls held by
//! replica B. A woken poll re-reads the counter; spurious wake-ups are cheap
//! and harmless. Nothing polls the database in a loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The PostgreSQL channel carrying change versions.
pub const CHANNEL: &str = "meshgate_changes";

/// Change and shutdown signals shared by every held poll of one process.
#[derive(Debug)]
pub struct Notifier {
    /// Counts wake-ups (not versions).
    changes: Arc<watch::Sender<u64>>,
    /// Set once when the server starts shutting down.
    shutdown: watch::Sender<bool>,
    /// The PostgreSQL listener task, aborted when the notifier drops.
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self { changes: Arc::new(watch::channel(0).0), shutdown: watch::channel(false).0, listener: Mutex::new(None) }
    }
}

impl Notifier {
    /// Signals that a change committed: every held poll re-checks.
    pub fn changed(&self) {
        wake(&self.changes);
    }

    /// A receiver that sees every [`changed`](Self::changed) after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// How many wake-ups so far: a cache loaded at generation `g` is current
    /// while this still returns `g` (see `forward_auth::cache`).
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Makes every held poll answer now (graceful shutdown).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver of the shutdown flag.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Starts the `LISTEN` task on `url` and waits (up to 5 s) until it
    /// listens. It reconnects by itself, and wakes every poll after a
    /// reconnection (notifications sent while disconnected are lost).
    pub async fn listen_postgres(&self, url: String) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(listen(url, self.changes.clone(), ready_tx));
        if let Ok(mut guard) = self.listener.lock()
            && let Some(old) = guard.replace(task)
        {
            old.abort();
        }
        if tokio::time::timeout(Duration::from_secs(5), ready_rx).await.is_err() {
            tracing::warn!("sync: PostgreSQL LISTEN not ready after 5 s; cross-replica wake-ups may lag");
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.listener.lock()
            && let Some(task) = guard.take()
        {
            task.abort();
        }
    }
}

fn wake(changes: &watch::Sender<u64>) {
    changes.send_modify(|n| *n = n.wrapping_add(1));
}

async fn listen(url: String, changes: Arc<watch::Sender<u64>>, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    loop {
        match connect(&url).await {
            Ok(mut listener) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                // Anything committed while we were not listening is missed:
                // let held polls re-check.
                wake(&changes);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake(&changes),
                        // Connection lost; the next try_recv reconnects and re-listens.
                        Ok(None) => wake(&changes),
                        Err(e) => {
                            tracing::warn!(error = %e, "sync: PostgreSQL listener failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sync: PostgreSQL LISTEN failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
