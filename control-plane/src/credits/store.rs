//! Credit storage: balances in `credit_accounts`, every change in
//! `credit_ledger` under the caller's idempotency id, reports in
//! `credit_reports`. Every write happens in a transaction that bumps the
//! change version, so the sync feed pushes the new balances.

use meshgate_wire::credits::{AccountKind, CreditState};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::Tx;

/// One ledger entry as returned by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// The idempotency id (`grant:…`, `deduct:…`, `usage:<report>:…`).
    pub id: String,
    /// Account kind (`user`, `app`, `key`, `uses`).
    pub kind: String,
    /// Account id.
    pub subject: String,
    /// Credits added (positive) or used (negative).
    pub amount: i64,
    /// `grant`, `deduct` or `usage`.
    pub reason: String,
    /// The filter report it came from, for usage.
    pub report_id: Option<String>,
    /// Who granted or deducted (user id).
    pub actor: Option<String>,
    /// Balance right after this entry.
    pub balance_after: i64,
    /// Change version of the write.
    pub version: i64,
    /// Unix time.
    pub created_at: i64,
}

/// Columns matching [`entry_from_row`].
pub const ENTRY_COLUMNS: &str =
    "id, kind, subject, amount, reason, report_id, actor, balance_after, version, created_at";

/// Decodes a ledger row.
pub fn entry_from_row(r: &AnyRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        subject: r.try_get("subject")?,
        amount: r.try_get("amount")?,
        reason: r.try_get("reason")?,
        report_id: r.try_get("report_id")?,
        actor: r.try_get("actor")?,
        balance_after: r.try_get("balance_after")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The ledger entry with this id, if any.
pub async fn entry(tx: &mut Tx, id: &str) -> Result<Option<Entry>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {ENTRY_COLUMNS} FROM credit_ledger WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(entry_from_row).transpose()
}

/// A balance, if the account exists.
pub async fn balance(tx: &mut Tx, kind: AccountKind, subject: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query("SELECT balance FROM credit_accounts WHERE kind = $1 AND subject = $2")
        .bind(kind.as_str())
        .bind(subject)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| r.try_get::<i64, _>(0)).transpose()
}

/// A change to one account, written under `id`.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// Ledger id (idempotency key).
    pub id: &'a str,
    /// Account kind.
    pub kind: AccountKind,
    /// Account id.
    pub subject: &'a str,
    /// Added to the balance (negative: used).
    pub amount: i64,
    /// `grant`, `deduct` or `usage`.
    pub reason: &'a str,
    /// Source report, for usage.
    pub report_id: Option<&'a str>,
    /// Acting user.
    pub actor: Option<&'a str>,
}

/// Applies `change` at change `version` (the caller bumped it in `tx`):
/// creates the account when absent, moves its balance, records the ledger
/// entry. The ledger's primary key refuses a second entry with the same id.
pub async fn apply(tx: &mut Tx, change: &Change<'_>, version: i64, now: i64) -> Result<Entry, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO credit_accounts (kind, subject, balance, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (kind, subject) DO UPDATE SET balance = credit_accounts.balance + excluded.balance, \
           version = excluded.version, updated_at = excluded.updated_at \
         RETURNING balance",
    )
    .bind(change.kind.as_str())
    .bind(change.subject)
    .bind(change.amount)
    .bind(version)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    let balance_after: i64 = row.try_get(0)?;
    sqlx::query(&format!(
        "INSERT INTO credit_ledger ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(change.id)
    .bind(change.kind.as_str())
    .bind(change.subject)
    .bind(change.amount)
    .bind(change.reason)
    .bind(change.report_id)
    .bind(change.actor)
    .bind(balance_after)
    .bind(version)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(Entry {
        id: change.id.to_owned(),
        kind: change.kind.as_str().to_owned(),
        subject: change.subject.to_owned(),
        amount: change.amount,
        reason: change.reason.to_owned(),
        report_id: change.report_id.map(str::to_owned),
        actor: change.actor.map(str::to_owned),
        balance_after,
        version,
        created_at: now,
    })
}

/// The version a report was applied at, if it was.
pub async fn report_version(tx: &mut Tx, id: &str) -> Result<Option<i64>, sqlx::Error> {
    let row =
        sqlx::query("SELECT version FROM credit_reports WHERE id = $1").bind(id).fetch_optional(&mut **tx).await?;
    row.map(|r| r.try_get::<i64, _>(0)).transpose()
}

/// Records that report `id` was applied at `version`.
pub async fn record_report(tx: &mut Tx, id: &str, version: i64, items: usize, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO credit_reports (id, version, items, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(version)
        .bind(i64::try_from(items).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Accounts stamped after `after` (-1: all), for the sync feed.
pub async fn changed_since(tx: &mut Tx, after: i64) -> Result<Vec<CreditState>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT kind, subject, balance FROM credit_accounts WHERE version > $1 ORDER BY kind, subject")
            .bind(after)
            .fetch_all(&mut **tx)
            .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(kind) = AccountKind::parse(&row.try_get::<String, _>("kind")?) else { continue };
        out.push(CreditState { kind, id: row.try_get("subject")?, balance: row.try_get("balance")? });
    }
    Ok(out)
}

/// Whether an error is a unique-constraint violation (a concurrent retry
/// of the same id won the race).
pub fn is_duplicate(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|d| d.is_unique_violation())
}
