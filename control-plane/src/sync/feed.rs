//! Building one feed response from one consistent read of the database
//! (a read transaction: `REPEATABLE READ` on PostgreSQL, a WAL snapshot on
//! SQLite), so the version and the rows always agree.
//!
//! Rows are updated in place and stamped with the change version of their
//! last write, so "what changed since N" is `version > N` on three tables.
//! Deleted rows cannot be expressed that way; the housekeeping that deletes
//! signing keys raises the `sync_floor` counter, and a `since` below it gets
//! a snapshot. (Expired revocations are also deleted, but filters drop those
//! by `until` on their own.)
//!
//! API keys and revocations are streamed from the database straight into the
//! JSON body (the field names of `meshgate_wire::sync::SyncResponse`; the
//! tests parse every answer with that type), so a snapshot of 10^6 keys
//! never holds 10^6 rows or records at once — only the encoded bytes.
//!
//! Snapshots can be paged (`limit`): keys in digest order, then revocations
//! in the order of `revocation_hash` (the `bucket` column), each page
//! continuing after the last row of the previous one ([`Cursor`]). Both are
//! the orders in which the filter shards what it receives, so each page
//! fills a run of consecutive shards. Each page is its own read: rows that change
//! while a filter pages are repeated by the deltas it asks for next (from
//! the first page's version), so the result converges on the same state.
//! On a SQLite file, a page's keys and revocations are read by
//! [`super::direct`], after this transaction read the version and by the
//! same argument: the rows are at least as new as the version they ship with.

use std::collections::HashMap;

use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::TryStreamExt;
use meshgate_wire::config::Jwk;
use meshgate_wire::sync::{RevocationKind, SigningKey, SyncKind, SyncResponse};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::{self, KeyOut, RevocationOut, item, revocation_kind, unix};
use crate::db::{self, Backend, Tx};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest page a filter may ask for.
pub const MAX_PAGE: u32 = 100_000;

/// Where a snapshot page continues: after a key digest, or after a
/// revocation (bucket, kind, value). Printed as `k.<digest>` or
/// `r.<bucket>.<kind>.<hex of value>` (query-safe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// After the key with this digest.
    Key(String),
    /// After this revocation: bucket, kind column, value.
    Revocation(i64, String, String),
}

impl Cursor {
    /// Parses a cursor printed by [`Cursor::print`].
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(digest) = text.strip_prefix("k.") {
            let ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            return ok.then(|| Self::Key(digest.to_ascii_lowercase()));
        }
        let (bucket, rest) = text.strip_prefix("r.")?.split_once('.')?;
        let bucket: i64 = bucket.parse().ok()?;
        let (kind, hex) = rest.split_once('.')?;
        revocation_kind(kind)?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()?;
        Some(Self::Revocation(bucket, kind.to_owned(), String::from_utf8(bytes).ok()?))
    }

    /// The printed form.
    pub fn print(&self) -> String {
        match self {
            Self::Key(digest) => format!("k.{digest}"),
            Self::Revocation(bucket, kind, value) => {
                let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
                format!("r.{bucket}.{kind}.{hex}")
            }
        }
    }
}

/// Paging of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Most keys + revocations in this answer (`None`: everything).
    pub limit: Option<u32>,
    /// Continue after this row.
    pub after: Option<Cursor>,
}

/// An encoded answer.
#[derive(Debug, Clone)]
pub struct Built {
    /// The version it brings a filter to.
    pub version: u64,
    /// Snapshot or delta.
    pub kind: SyncKind,
    /// The JSON body (a `SyncResponse`).
    pub body: Bytes,
}

/// The empty delta a long-poll answers when nothing changed.
pub fn unchanged(since: u64) -> SyncResponse {
    SyncResponse { version: since, kind: SyncKind::Delta, since: Some(since), ..SyncResponse::default() }
}

/// Encodes a whole response (small ones: the unchanged answer).
pub fn encode(response: &SyncResponse) -> ApiResult<Built> {
    let body = serde_json::to_vec(response).map_err(|e| ApiError::Internal(format!("encode: {e}")))?;
    Ok(Built { version: response.version, kind: response.kind, body: body.into() })
}

/// Reads the state at the current version: a delta from `since` when it can
/// be expressed, else (no `since`, 0, below the floor, or ahead of the
/// counter) a snapshot.
pub async fn build(state: &AppState, since: Option<u64>, page: &Page) -> ApiResult<Built> {
    let mut tx = match state.db.backend {
        Backend::Sqlite => state.db.pool.begin().await?,
        Backend::Postgres => state.db.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?,
    };
    let version: i64 =
        sqlx::query("SELECT value FROM counters WHERE name = 'change'").fetch_one(&mut *tx).await?.try_get(0)?;
    let version = u64::try_from(version).unwrap_or(0);
    let floor = u64::try_from(db::sync_floor(&mut tx).await?).unwrap_or(0);
    let mut since = since.filter(|&s| s > 0 && s >= floor && s <= version);
    // A paging filter gets a paged snapshot rather than a delta larger than
    // a page (a bulk import, a filter that was away long): deltas are never
    // paged, and one that big would not fit the filter's body limit.
    if let (Some(s), Some(limit)) = (since, page.limit)
        && changed_rows(&mut tx, s).await? > i64::from(limit)
    {
        since = None;
    }
    let kind = if since.is_some() { SyncKind::Delta } else { SyncKind::Snapshot };
    let now = state.now();
    // Rows stamped after `after` (-1: every row, for a snapshot).
    let after = since.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));

    let mut out = Vec::with_capacity(4096);
    let head = match since {
        Some(s) => format!("{{\"version\":{version},\"kind\":\"delta\",\"since\":{s}"),
        None => format!("{{\"version\":{version},\"kind\":\"snapshot\""),
    };
    out.extend_from_slice(head.as_bytes());
    // Deltas are never paged.
    let page = if kind == SyncKind::Snapshot { page.clone() } else { Page::default() };
    if page.after.is_none() {
        let (keys, removed_kids) = signing_keys(state, &mut tx, after, now).await?;
        field(&mut out, "signing_keys", &keys)?;
        if kind == SyncKind::Delta {
            field(&mut out, "removed_signing_keys", &removed_kids)?;
        }
        // Credit balances ride on the first page (written only when there
        // are some: filters that predate credits refuse unknown fields).
        let credits = crate::credits::store::changed_since(&mut tx, after).await?;
        if !credits.is_empty() {
            field(&mut out, "credits", &credits)?;
        }
    }
    if page.limit.is_some() && page.after.is_none() {
        let keys: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM api_keys k JOIN users u ON u.id = k.owner_id WHERE {LIVE_KEYS}"
        ))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let revs: i64 = sqlx::query("SELECT COUNT(*) FROM revocations WHERE until >= $1")
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        out.extend_from_slice(format!(",\"total_keys\":{keys},\"total_revocations\":{revs}").as_bytes());
    }
    let mut budget = page.limit.map(i64::from);
    let mut next = None;
    let keys_done = matches!(page.after, Some(Cursor::Revocation(..)));
    // Snapshot pages on a SQLite file read their rows off the statement
    // (`direct`); the rest goes through this transaction.
    let direct = state.db.direct.as_ref().filter(|_| kind == SyncKind::Snapshot);
    let removed = if keys_done {
        out.extend_from_slice(b",\"api_keys\":[]");
        HashMap::new()
    } else {
        let after_digest = match &page.after {
            Some(Cursor::Key(d)) => Some(d.as_str()),
            _ => None,
        };
        let (removed, last) = match (direct, budget) {
            (Some(direct), Some(limit)) => {
                let rows = direct.keys(now, after_digest.map(str::to_owned), limit).await?;
                array(&mut out, "api_keys", &rows.json);
                (HashMap::new(), Some((rows.count, rows.last.unwrap_or_default())))
            }
            _ => api_keys(&mut tx, after, now, kind, after_digest, budget, &mut out).await?,
        };
        if let (Some(b), Some((n, last))) = (budget.as_mut(), last) {
            *b -= n;
            if *b <= 0 {
                next = Some(Cursor::Key(last));
            }
        }
        removed
    };
    if kind == SyncKind::Delta {
        let digests: Vec<&str> = removed.values().map(|r| r.digest.as_str()).collect();
        field(&mut out, "removed_keys", &digests)?;
    }
    if next.is_some() {
        out.extend_from_slice(b",\"revocations\":[]");
    } else {
        let after_rev = match &page.after {
            Some(Cursor::Revocation(b, k, v)) => Some((*b, k.as_str(), v.as_str())),
            _ => None,
        };
        next = match (direct, budget) {
            (Some(direct), Some(limit)) => {
                let after_rev = after_rev.map(|(b, k, v)| (b, k.to_owned(), v.to_owned()));
                let rows = direct.revocations(now, after_rev, limit.max(0)).await?;
                array(&mut out, "revocations", &rows.json);
                rows.last.map(|(b, k, v)| Cursor::Revocation(b, k, v))
            }
            _ => revocations(&mut tx, after, now, removed, after_rev, budget, &mut out).await?,
        };
    }
    out.extend_from_slice(b",\"bans\":[]");
    if let Some(next) = next {
        out.extend_from_slice(b",\"next\":");
        item(&mut out, &next.print())?;
    }
    out.push(b'}');
    tx.commit().await?;
    Ok(Built { version, kind, body: out.into() })
}

/// Rows a delta from `since` would carry (keys and revocations).
async fn changed_rows(tx: &mut Tx, since: u64) -> ApiResult<i64> {
    let since = i64::try_from(since).unwrap_or(i64::MAX);
    let mut total = 0i64;
    for table in ["api_keys", "revocations"] {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table} WHERE version > $1"))
            .bind(since)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        total += n;
    }
    Ok(total)
}

fn field<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) -> ApiResult<()> {
    out.extend_from_slice(format!(",\"{name}\":").as_bytes());
    item(out, value)
}

/// Appends `,"name":[elements]`.
fn array(out: &mut Vec<u8>, name: &str, elements: &[u8]) {
    out.extend_from_slice(format!(",\"{name}\":[").as_bytes());
    out.extend_from_slice(elements);
    out.push(b']');
}

/// Live signing keys (all of them, or the changed ones) and, for a delta,
/// the kids of changed keys that no longer verify.
async fn signing_keys(
    state: &AppState,
    tx: &mut Tx,
    after: i64,
    now: i64,
) -> ApiResult<(Vec<SigningKey>, Vec<String>)> {
    let rows = sqlx::query(
        "SELECT kid, alg, status, private_enc, public_jwk, retire_after FROM signing_keys \
         WHERE version > $1 ORDER BY created_at, kid",
    )
    .bind(after)
    .fetch_all(&mut **tx)
    .await?;
    let (mut live, mut gone) = (Vec::new(), Vec::new());
    for row in rows {
        let kid: String = row.try_get("kid")?;
        let status: String = row.try_get("status")?;
        let retire_after: Option<i64> = row.try_get("retire_after")?;
        if status == "retired" && retire_after.is_none_or(|t| t <= now) {
            gone.push(kid);
            continue;
        }
        let jwk = match row.try_get::<Option<String>, _>("public_jwk")? {
            Some(public) => serde_json::from_str::<Jwk>(&public)
                .map_err(|e| ApiError::Internal(format!("signing key {kid}: public JWK: {e}")))?,
            None => hs256_jwk(state, &row, &kid)?,
        };
        live.push(SigningKey { issuer: state.config.issuer.clone(), jwk });
    }
    Ok((live, gone))
}

/// An HS256 key as an `oct` JWK: the shared secret, which leaves the control
/// plane only here (never in JWKS).
fn hs256_jwk(state: &AppState, row: &AnyRow, kid: &str) -> ApiResult<Jwk> {
    let alg: String = row.try_get("alg")?;
    if alg != "HS256" {
        return Err(ApiError::Internal(format!("signing key {kid}: no public JWK for {alg}")));
    }
    let sealed: String = row.try_get("private_enc")?;
    let secret = state.master.open(kid, &sealed).map_err(|e| ApiError::Internal(format!("signing key {kid}: {e}")))?;
    Ok(Jwk {
        kty: "oct".into(),
        kid: Some(kid.to_string()),
        alg: Some("HS256".into()),
        crv: None,
        k: Some(URL_SAFE_NO_PAD.encode(secret)),
        x: None,
        y: None,
        n: None,
        e: None,
        use_: Some("sig".into()),
    })
}

/// A key a delta removes.
struct Removed {
    digest: String,
    /// `Some(until)` when it is revoked (not merely expired): it is also
    /// listed as a `key` revocation.
    revoked_until: Option<u64>,
}

/// The keys a snapshot holds (`$1`: now).
pub(super) const LIVE_KEYS: &str = "k.revoked_at IS NULL AND k.expires_at > $1 AND u.disabled = 0";

/// Streams `"api_keys":[…]`; returns the removed keys (deltas only) and, for
/// a page (`limit`), how many keys it holds and the last digest.
async fn api_keys(
    tx: &mut Tx,
    after: i64,
    now: i64,
    kind: SyncKind,
    after_digest: Option<&str>,
    limit: Option<i64>,
    out: &mut Vec<u8>,
) -> ApiResult<(HashMap<String, Removed>, Option<(i64, String)>)> {
    let delta = kind == SyncKind::Delta;
    // A snapshot needs only live keys; a delta needs every changed row.
    let filter = if delta { String::new() } else { format!(" AND {}", LIVE_KEYS.replace("$1", "$2")) };
    let paging = match (limit, after_digest) {
        (Some(_), Some(_)) => " AND k.digest > $3 ORDER BY k.digest LIMIT $4",
        (Some(_), None) => " ORDER BY k.digest LIMIT $3",
        (None, _) => "",
    };
    let sql = format!(
        "SELECT k.id, k.digest, k.owner_id, k.app_id, k.scopes, k.rate_limit, k.expires_at, k.revoked_at, u.disabled \
         FROM api_keys k JOIN users u ON u.id = k.owner_id WHERE k.version > $1{filter}{paging}"
    );
    let mut query = sqlx::query(&sql).bind(after);
    if !delta {
        query = query.bind(now);
    }
    if let Some(limit) = limit {
        if let Some(d) = after_digest {
            query = query.bind(d.to_owned());
        }
        query = query.bind(limit);
    }
    let mut count = 0i64;
    let mut last = None;
    let mut rows = query.fetch(&mut **tx);
    let mut removed = HashMap::new();
    let mut first = true;
    out.extend_from_slice(b",\"api_keys\":[");
    while let Some(row) = rows.try_next().await? {
        let id: String = row.try_get("id")?;
        let digest: String = row.try_get("digest")?;
        if limit.is_some() {
            count += 1;
            last = Some(digest.clone());
        }
        let expires_at: i64 = row.try_get("expires_at")?;
        let revoked = row.try_get::<Option<i64>, _>("revoked_at")?.is_some() || row.try_get::<i64, _>("disabled")? != 0;
        if revoked || expires_at <= now {
            // Only deltas get here (a snapshot selects live keys).
            let revoked_until = (expires_at > now).then(|| unix(expires_at));
            removed.insert(id, Removed { digest, revoked_until });
            continue;
        }
        let (owner, app, scopes): (String, Option<String>, String) =
            (row.try_get("owner_id")?, row.try_get("app_id")?, row.try_get("scopes")?);
        let rate_limit = row.try_get("rate_limit")?;
        let key = KeyOut::new(&id, &digest, &owner, app.as_deref(), &scopes, rate_limit, expires_at);
        rows::element(out, &mut first, &key)?;
    }
    out.push(b']');
    Ok((removed, last.map(|l| (count, l))))
}

/// Streams `"revocations":[…]`: the live rows (all, or the changed ones),
/// then a `key` revocation for every revoked key of `removed` the rows did
/// not already cover. With a `limit` (snapshot pages), at most that many
/// rows after `after_rev`, returning the cursor of the next page when the
/// page is full.
async fn revocations(
    tx: &mut Tx,
    after: i64,
    now: i64,
    mut removed: HashMap<String, Removed>,
    after_rev: Option<(i64, &str, &str)>,
    limit: Option<i64>,
    out: &mut Vec<u8>,
) -> ApiResult<Option<Cursor>> {
    // `until + 0`: SQLite would otherwise pick the `until` index, which every
    // live row matches, and scan the table for a one-row delta.
    let base = "SELECT bucket, kind, value, not_before, until FROM revocations WHERE version > $1 AND until + 0 >= $2";
    let sql = match (limit, after_rev) {
        // A row value, so both databases seek the (bucket, kind, value)
        // index to the cursor; the equivalent OR chain made SQLite scan
        // the index from its start on every page (quadratic at 10^6).
        (Some(_), Some(_)) => {
            format!("{base} AND (bucket, kind, value) > ($3, $4, $5) ORDER BY bucket, kind, value LIMIT $6")
        }
        (Some(_), None) => format!("{base} ORDER BY bucket, kind, value LIMIT $3"),
        (None, _) => base.to_owned(),
    };
    let mut query = sqlx::query(&sql).bind(after).bind(now);
    if let Some(limit) = limit {
        if let Some((b, k, v)) = after_rev {
            query = query.bind(b).bind(k.to_owned()).bind(v.to_owned());
        }
        query = query.bind(limit.max(0));
    }
    let mut rows = query.fetch(&mut **tx);
    let (mut count, mut last) = (0i64, None);
    let mut first = true;
    out.extend_from_slice(b",\"revocations\":[");
    while let Some(row) = rows.try_next().await? {
        let column: String = row.try_get("kind")?;
        let id: String = row.try_get("value")?;
        if limit.is_some() {
            count += 1;
            last = Some((row.try_get("bucket")?, column.clone(), id.clone()));
        }
        let Some(kind) = revocation_kind(&column) else { continue };
        if kind == RevocationKind::Key
            && let Some(r) = removed.get_mut(&id)
        {
            r.revoked_until = None;
        }
        let until = unix(row.try_get("until")?);
        let not_before = row.try_get::<Option<i64>, _>("not_before")?.map(unix);
        rows::element(out, &mut first, &RevocationOut { kind, id: &id, until, not_before })?;
    }
    for (id, r) in removed {
        if let Some(until) = r.revoked_until {
            let r = RevocationOut { kind: RevocationKind::Key, id: &id, until, not_before: None };
            rows::element(out, &mut first, &r)?;
        }
    }
    out.push(b']');
    let full = limit.is_some_and(|l| count >= l && l > 0);
    Ok(last.filter(|_| full).map(|(b, k, v)| Cursor::Revocation(b, k, v)))
}
