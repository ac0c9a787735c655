//! Snapshot pages on SQLite, read with rusqlite on a blocking thread.
//!
//! Through sqlx, each row crosses from the connection's SQLite worker thread
//! to the async task over a channel (a wake-up per handful of rows) and is
//! converted to an `AnyRow`, every value copied twice. At 10^6 keys that was
//! ~0.1 s of every 20 000-row page against ~10 ms for SQLite to produce the
//! rows (perf of a release build: malloc/free, futex wake-ups and the
//! `AnyRow` conversion on top; SQLite's own `VdbeExec` ~6 %). Here a page's
//! rows are encoded straight off the statement into the body, on one
//! thread.
//!
//! Only paged snapshot rows come here; deltas (small, and they need the
//! removed keys) and PostgreSQL stay on sqlx. A page's rows are one
//! statement on a read-only connection, run after the response's version
//! was read: they are at least as new as that version, and whatever is
//! newer the filter gets again in the delta it asks for next — the same
//! argument that lets every page of a snapshot be its own read (see
//! [`super::feed`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::feed::LIVE_KEYS;
use super::rows::{self, KeyOut, RevocationOut};
use crate::error::{ApiError, ApiResult};

/// Connections kept open between pages (a filter pages one at a time;
/// several filters syncing at once open more, then close the extra).
const IDLE: usize = 2;

/// Reader of one SQLite database file.
pub struct Direct {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The rows of one page: encoded elements (comma-separated, no brackets),
/// how many, and the last row's cursor.
#[derive(Debug, Default)]
pub struct Rows<C> {
    /// JSON array elements.
    pub json: Vec<u8>,
    /// Rows read.
    pub count: i64,
    /// Cursor of the last row read.
    pub last: Option<C>,
}

/// A revocation cursor: bucket, kind column, value.
pub type RevocationCursor = (i64, String, String);

/// Below every row: buckets are `i64`, kinds never empty.
fn before_all() -> RevocationCursor {
    (i64::MIN, String::new(), String::new())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("sqlite snapshot page: {e}"))
}

impl Direct {
    /// A reader for the database at `path` (opened on first use).
    pub fn new(path: PathBuf) -> Self {
        Self { path, idle: Mutex::new(Vec::new()) }
    }

    /// Live keys after digest `after`, in digest order, at most `limit`.
    pub async fn keys(self: &Arc<Self>, now: i64, after: Option<String>, limit: i64) -> ApiResult<Rows<String>> {
        self.run(move |conn| {
            let sql = format!(
                "SELECT k.id, k.digest, k.owner_id, k.app_id, k.scopes, k.rate_limit, k.expires_at \
                 FROM api_keys k JOIN users u ON u.id = k.owner_id \
                 WHERE {LIVE_KEYS} AND k.digest > $2 ORDER BY k.digest LIMIT $3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut found = stmt.query(params![now, after.unwrap_or_default(), limit])?;
            let mut page = Rows::default();
            let mut first = true;
            while let Some(row) = found.next()? {
                let digest = row.get_ref(1)?.as_str()?;
                let key = KeyOut::new(
                    row.get_ref(0)?.as_str()?,
                    digest,
                    row.get_ref(2)?.as_str()?,
                    row.get_ref(3)?.as_str_or_null()?,
                    row.get_ref(4)?.as_str()?,
                    row.get_ref(5)?.as_i64_or_null()?,
                    row.get_ref(6)?.as_i64()?,
                );
                rows::element(&mut page.json, &mut first, &key).map_err(Failed::Api)?;
                page.count += 1;
                if page.count == limit {
                    page.last = Some(digest.to_owned());
                }
            }
            Ok(page)
        })
        .await
    }

    /// Live revocations after `after` in (bucket, kind, value) order, at
    /// most `limit`; rows of unknown kinds count but are not sent.
    pub async fn revocations(
        self: &Arc<Self>,
        now: i64,
        after: Option<RevocationCursor>,
        limit: i64,
    ) -> ApiResult<Rows<RevocationCursor>> {
        self.run(move |conn| {
            let (bucket, kind, value) = after.unwrap_or_else(before_all);
            let mut stmt = conn.prepare_cached(
                "SELECT bucket, kind, value, not_before, until FROM revocations \
                 WHERE until + 0 >= $1 AND (bucket, kind, value) > ($2, $3, $4) \
                 ORDER BY bucket, kind, value LIMIT $5",
            )?;
            let mut found = stmt.query(params![now, bucket, kind, value, limit])?;
            let mut page = Rows::default();
            let mut first = true;
            while let Some(row) = found.next()? {
                let column = row.get_ref(1)?.as_str()?;
                let id = row.get_ref(2)?.as_str()?;
                page.count += 1;
                if page.count == limit {
                    page.last = Some((row.get_ref(0)?.as_i64()?, column.to_owned(), id.to_owned()));
                }
                let Some(kind) = rows::revocation_kind(column) else { continue };
                let r = RevocationOut {
                    kind,
                    id,
                    until: rows::unix(row.get_ref(4)?.as_i64()?),
                    not_before: row.get_ref(3)?.as_i64_or_null()?.map(rows::unix),
                };
                rows::element(&mut page.json, &mut first, &r).map_err(Failed::Api)?;
            }
            Ok(page)
        })
        .await
    }

    /// Runs `read` on an idle connection (or a new one) on the blocking pool.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, Failed> + Send + 'static,
    ) -> ApiResult<T> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = match this.idle.lock().map_err(internal)?.pop() {
                Some(conn) => conn,
                None => this.open()?,
            };
            let result = read(&conn);
            let mut idle = this.idle.lock().map_err(internal)?;
            if idle.len() < IDLE {
                idle.push(conn);
            }
            result.map_err(|e| match e {
                Failed::Sqlite(e) => internal(e),
                Failed::Api(e) => e,
            })
        })
        .await
        .map_err(internal)?
    }

    fn open(&self) -> ApiResult<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(internal)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(internal)?;
        // As the sqlx connections (`db.rs`): reads through a memory map.
        conn.execute_batch("PRAGMA mmap_size = 268435456").map_err(internal)?;
        Ok(conn)
    }
}

/// Why a page read failed: SQLite, or encoding.
enum Failed {
    Sqlite(rusqlite::Error),
    Api(ApiError),
}

impl From<rusqlite::Error> for Failed {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<rusqlite::types::FromSqlError> for Failed {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        Self::Sqlite(e.into())
    }
}
