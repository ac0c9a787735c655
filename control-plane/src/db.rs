//! Storage: one sqlx `Any` pool over SQLite (WAL, the default) or PostgreSQL,
//! the same SQL for both (`$n` placeholders work on each), embedded migrations,
//! and the change counter the sync feed reads.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Connection, Row};

/// An open transaction.
pub type Tx = sqlx::Transaction<'static, Any>;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (single node).
    Sqlite,
    /// PostgreSQL (several replicas).
    Postgres,
}

/// The connection pool and what it talks to.
#[derive(Debug, Clone)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// The backend kind.
    pub backend: Backend,
    /// SQLite file only: reads snapshot pages without sqlx.
    pub direct: Option<Arc<crate::sync::direct::Direct>>,
}

/// Counters kept in the `counters` table.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// Versions of rows the sync feed ships.
    Change,
    /// Audit log sequence numbers.
    Audit,
}

impl Db {
    /// Connects and runs pending migrations. For SQLite the parent directory
    /// is created; sqlx's SQLite defaults give WAL, `foreign_keys=ON` and a
    /// 5 s busy timeout.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite: or postgres://");
        };
        let file = sqlite_file(url).filter(|_| backend == Backend::Sqlite);
        if let Some(dir) = file.as_deref().and_then(std::path::Path::parent).filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_secs(10))
            // A connection whose COMMIT failed (SQLITE_FULL) and whose
            // ROLLBACK then found no transaction keeps sqlx's transaction
            // depth at 1, and every later `BEGIN` on it fails: close it
            // instead of lending it out again.
            .before_acquire(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Explicit, although sqlx defaults to WAL: readers never
                        // block the writer.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        // Reads through a memory map (shared by every
                        // connection via the page cache) instead of a read
                        // call per 4 KiB page: a snapshot page walks 20 000
                        // keys in digest order, i.e. all over the table
                        // (that query alone: 0.08-0.11 s -> 0.035 s at
                        // 10^6 keys; the whole snapshot ~5 %, in the
                        // noise). Writes still go through the WAL.
                        sqlx::query("PRAGMA mmap_size = 268435456").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        if backend == Backend::Sqlite {
            snapshot_key_index(&pool).await?;
        }
        crate::revocations::backfill_buckets(&pool).await?;
        // The file exists now (the pool created it): a path sqlx read
        // differently from `sqlite_file` (percent-escapes, say) falls back
        // to sqlx rather than reading another file.
        let direct = file.filter(|f| f.is_file()).map(|f| Arc::new(crate::sync::direct::Direct::new(f)));
        Ok(Self { pool, backend, direct })
    }

    /// Starts a write transaction. On SQLite it is `BEGIN IMMEDIATE`: a
    /// deferred transaction that reads and then writes fails with
    /// `SQLITE_BUSY_SNAPSHOT` when another writer committed in between, while
    /// an immediate one waits for the write lock (busy timeout) up front.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }
}

/// SQLite only: an index holding every column a snapshot page reads from
/// `api_keys`, in digest order (the order pages are sent in). Without it a
/// 20 000-key page is 20 000 table lookups scattered over the whole table
/// (~40-70 ms at 10^6 keys); with it, one range read (~8 ms), the
/// `users (id, disabled)` join included. It costs about as much space as
/// the keys' rows themselves.
///
/// Not a migration because the same index cannot be built on PostgreSQL: a
/// b-tree entry there is capped at ~2.7 kB, and a key's `scopes` may be
/// 4 kB (64 scopes of 64 characters). PostgreSQL reads the rows from the
/// heap. `IF NOT EXISTS`: built once, on the first start that lacks it
/// (~4 s at 10^6 keys).
async fn snapshot_key_index(pool: &AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE INDEX IF NOT EXISTS api_keys_snapshot ON api_keys \
         (digest, revoked_at, expires_at, version, owner_id, id, app_id, scopes, rate_limit)",
    )
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX IF NOT EXISTS users_disabled ON users (id, disabled)").execute(pool).await?;
    Ok(())
}

/// Increments a counter inside `tx` and returns the new value. The row lock
/// held until commit serialises writers, so versions become visible in order.
pub async fn bump(tx: &mut Tx, counter: Counter) -> Result<i64, sqlx::Error> {
    let name = match counter {
        Counter::Change => "change",
        Counter::Audit => "audit",
    };
    let row = sqlx::query("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
        .bind(name)
        .fetch_one(&mut **tx)
        .await?;
    let value = row.try_get::<i64, _>(0)?;
    if matches!(counter, Counter::Change) && tx.backend_name() == "PostgreSQL" {
        // Transactional: PostgreSQL delivers it to every replica's listener
        // only if and when this transaction commits (see `sync::notify`).
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::sync::notify::CHANNEL)
            .bind(value.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(value)
}

/// The version below which the sync feed cannot build deltas.
pub async fn sync_floor(tx: &mut Tx) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT value FROM counters WHERE name = 'sync_floor'").fetch_one(&mut **tx).await?;
    row.try_get::<i64, _>(0)
}

/// Raises the sync floor to the current change version, inside `tx`: filters
/// older than that get a snapshot (after deletions deltas cannot express).
pub async fn raise_sync_floor(tx: &mut Tx) -> Result<(), sqlx::Error> {
    bump(tx, Counter::Change).await?;
    sqlx::query(
        "UPDATE counters SET value = (SELECT value FROM counters WHERE name = 'change') WHERE name = 'sync_floor'",
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The current change version (what the sync feed compares `since` with).
pub async fn change_version(db: &Db) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT value FROM counters WHERE name = 'change'").fetch_one(&db.pool).await?;
    row.try_get::<i64, _>(0)
}

/// The file a `sqlite://path?…` URL names (`None`: in memory).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return None;
    }
    Some(path.into())
}
