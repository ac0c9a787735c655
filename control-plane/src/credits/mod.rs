//! Credits: balances per user, app, API key (and remaining uses of keys
//! created with `max_uses`), pushed to filters through the sync feed, and
//! the usage filters and backends report back.
//!
//! | route | who |
//! |---|---|
//! | `GET /api/v1/credits?kind=&id=` | admin: balances |
//! | `POST /api/v1/credits/grant` | admin: add credits (refill), idempotent by `request_id` |
//! | `GET /api/v1/credits/usage` | admin: the ledger, newest first, keyset paging |
//! | `POST /api/v1/credits/deduct` | backends: an API key with scope `credits:deduct` (or admin) |
//! | `POST /api/v1/credits/report` | filters: a usage report (the sync credential, scope `sync`) |
//!
//! Exactly once: every change carries an id that becomes the ledger row's
//! primary key (`grant:<request_id>`, `deduct:<request_id>`,
//! `usage:<report id>:<kind>:<id>`) and every report id a `credit_reports`
//! row; a retry finds the row and gets the first answer back, and two
//! concurrent retries are serialised by the constraint.

pub mod store;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use meshgate_wire::credits::{AccountKind, MAX_REPORT_ITEMS, UsageAck, UsageReport};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

use crate::audit::{self, Event};
use crate::auth::principal::{Admin, Credential, Principal};
use crate::db::{self, Counter, Tx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Query};
use crate::state::AppState;
use crate::sync::FeedReader;
use store::{Change, Entry};

/// The API key scope that grants `POST /api/v1/credits/deduct`.
pub const DEDUCT_SCOPE: &str = "credits:deduct";
/// Largest single amount.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// Credit routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/credits", get(list))
        .route("/api/v1/credits/grant", post(grant))
        .route("/api/v1/credits/deduct", post(deduct))
        .route("/api/v1/credits/usage", get(usage))
        .route("/api/v1/credits/report", post(report))
}

/// A caller allowed to deduct: an API key with [`DEDUCT_SCOPE`], or an admin.
#[derive(Debug, Clone)]
pub struct Deducter(pub Principal);

impl FromRequestParts<AppState> for Deducter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        let scoped = matches!(p.credential, Credential::ApiKey { .. }) && p.scopes.iter().any(|s| s == DEDUCT_SCOPE);
        if scoped || p.is_admin() { Ok(Self(p)) } else { Err(ApiError::Forbidden) }
    }
}

fn check_id(field: &str, id: &str, max: usize) -> ApiResult<()> {
    if id.is_empty() || id.len() > max || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(format!("{field} must be 1 to {max} printable ASCII characters")));
    }
    Ok(())
}

/// One account's balance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Account {
    /// `user`, `app`, `key` or `uses`.
    pub kind: String,
    /// User, app or key id.
    pub id: String,
    /// Credits (or uses) left.
    pub balance: i64,
    /// `balance <= 0`: filters refuse metered requests.
    pub exhausted: bool,
    /// Change version of the last write.
    pub version: i64,
    /// Unix time of the last write.
    pub updated_at: i64,
}

/// Filter of `GET /api/v1/credits`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this account id.
    pub id: Option<String>,
}

/// Lists balances (at most 1000, by kind and id).
#[utoipa::path(get, path = "/api/v1/credits", params(ListQuery), responses((status = 200, body = [Account])))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Account>>> {
    let rows = sqlx::query(
        "SELECT kind, subject, balance, version, updated_at FROM credit_accounts \
         WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR subject = $2) ORDER BY kind, subject LIMIT 1000",
    )
    .bind(q.kind.unwrap_or_default())
    .bind(q.id.unwrap_or_default())
    .fetch_all(&state.db.pool)
    .await?;
    let accounts = rows
        .iter()
        .map(|r| {
            let balance: i64 = r.try_get("balance")?;
            Ok(Account {
                kind: r.try_get("kind")?,
                id: r.try_get("subject")?,
                balance,
                exhausted: balance <= 0,
                version: r.try_get("version")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(accounts))
}

/// Body of `POST /api/v1/credits/grant` and `/deduct`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditRequest {
    /// Idempotency key (1–128 printable characters): a retry with the same
    /// id is answered with the first result and changes nothing.
    pub request_id: String,
    /// `user`, `app`, `key` or `uses`.
    #[schema(value_type = String)]
    pub kind: AccountKind,
    /// User, app or key id.
    pub id: String,
    /// Credits to add (grant) or take (deduct), 1 to 10^12.
    pub amount: i64,
    /// Deduct only: go below zero rather than refuse with 402.
    #[serde(default)]
    pub allow_negative: bool,
}

/// The result of a grant or deduction.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Applied {
    /// The request's idempotency key.
    pub request_id: String,
    /// The ledger entry.
    pub entry: Entry,
    /// True when this answers a retry (nothing changed).
    pub duplicate: bool,
}

fn validate(req: &CreditRequest) -> ApiResult<()> {
    check_id("request_id", &req.request_id, 128)?;
    check_id("id", &req.id, 256)?;
    if !(1..=MAX_AMOUNT).contains(&req.amount) {
        return Err(ApiError::invalid("amount must be 1 to 1000000000000"));
    }
    Ok(())
}

/// Applies `change` once. With `floor`, refuses (402) a change that would
/// take the balance below zero, and 404 for an unknown account.
async fn apply_once(
    state: &AppState,
    change: &Change<'_>,
    floor: bool,
    event: Option<Event<'_>>,
) -> ApiResult<(Entry, bool)> {
    let now = state.now();
    for attempt in 0..2 {
        let mut tx = state.db.begin().await?;
        if let Some(entry) = store::entry(&mut tx, change.id).await? {
            let same =
                entry.kind == change.kind.as_str() && entry.subject == change.subject && entry.amount == change.amount;
            if !same {
                return Err(ApiError::Conflict("request_id was used for another request".into()));
            }
            return Ok((entry, true));
        }
        if floor {
            let balance = store::balance(&mut tx, change.kind, change.subject).await?.ok_or(ApiError::NotFound)?;
            if balance.saturating_add(change.amount) < 0 {
                return Err(ApiError::InsufficientCredits);
            }
        }
        let version = db::bump(&mut tx, Counter::Change).await?;
        match store::apply(&mut tx, change, version, now).await {
            Ok(entry) => {
                if let Some(event) = event.clone() {
                    audit::record(&mut tx, now, event).await?;
                }
                tx.commit().await?;
                state.sync.changed();
                return Ok((entry, false));
            }
            // A concurrent request with the same id committed first: answer
            // from its row.
            Err(e) if store::is_duplicate(&e) && attempt == 0 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal("credit change raced twice".into()))
}

/// Adds credits to an account (created when absent).
#[utoipa::path(post, path = "/api/v1/credits/grant", request_body = CreditRequest,
    responses((status = 200, body = Applied), (status = 409, body = crate::error::Problem)))]
pub async fn grant(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Body(req): Body<CreditRequest>,
) -> ApiResult<Json<Applied>> {
    validate(&req)?;
    let id = format!("grant:{}", req.request_id);
    let change = Change {
        id: &id,
        kind: req.kind,
        subject: &req.id,
        amount: req.amount,
        reason: "grant",
        report_id: None,
        actor: Some(&admin.user_id),
    };
    let target = format!("{}:{}", req.kind.as_str(), req.id);
    let event = Event {
        action: "credits.grant",
        actor: Some(&admin.user_id),
        target: Some(&target),
        ip: Some(&admin.ip),
        outcome: "success",
        detail: Some(serde_json::json!({"amount": req.amount, "request_id": req.request_id})),
    };
    let (entry, duplicate) = apply_once(&state, &change, false, Some(event)).await?;
    Ok(Json(Applied { request_id: req.request_id, entry, duplicate }))
}

/// Takes credits from an account: for backends that compute a cost
/// themselves. 402 `insufficient-credits` when the balance would go below
/// zero (unless `allow_negative`).
#[utoipa::path(post, path = "/api/v1/credits/deduct", request_body = CreditRequest,
    responses((status = 200, body = Applied), (status = 402, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem)))]
pub async fn deduct(
    State(state): State<AppState>,
    Deducter(caller): Deducter,
    Body(req): Body<CreditRequest>,
) -> ApiResult<Json<Applied>> {
    validate(&req)?;
    let id = format!("deduct:{}", req.request_id);
    let change = Change {
        id: &id,
        kind: req.kind,
        subject: &req.id,
        amount: -req.amount,
        reason: "deduct",
        report_id: None,
        actor: Some(&caller.user_id),
    };
    let (entry, duplicate) = apply_once(&state, &change, !req.allow_negative, None).await?;
    Ok(Json(Applied { request_id: req.request_id, entry, duplicate }))
}

/// Applies a filter's usage report once; a retry gets the same version.
#[utoipa::path(post, path = "/api/v1/credits/report",
    responses((status = 200, description = "meshgate_wire::credits::UsageAck"), (status = 403, body = crate::error::Problem)))]
pub async fn report(
    State(state): State<AppState>,
    _reader: FeedReader,
    Body(req): Body<UsageReport>,
) -> ApiResult<Json<UsageAck>> {
    check_id("id", &req.id, 128)?;
    if req.usage.len() > MAX_REPORT_ITEMS {
        return Err(ApiError::invalid(format!("at most {MAX_REPORT_ITEMS} usage items")));
    }
    let mut merged: BTreeMap<(AccountKind, &str), i64> = BTreeMap::new();
    for item in &req.usage {
        check_id("usage[].id", &item.id, 256)?;
        if !(-MAX_AMOUNT..=MAX_AMOUNT).contains(&item.amount) {
            return Err(ApiError::invalid("usage[].amount out of range"));
        }
        let sum = merged.entry((item.kind, item.id.as_str())).or_default();
        *sum = sum.saturating_add(item.amount);
    }
    let now = state.now();
    for attempt in 0..2 {
        let mut tx = state.db.begin().await?;
        if let Some(version) = store::report_version(&mut tx, &req.id).await? {
            return Ok(Json(ack(&req.id, version, true)));
        }
        let version = db::bump(&mut tx, Counter::Change).await?;
        match apply_report(&mut tx, &req.id, &merged, version, now).await {
            Ok(()) => {
                tx.commit().await?;
                state.sync.changed();
                return Ok(Json(ack(&req.id, version, false)));
            }
            Err(e) if store::is_duplicate(&e) && attempt == 0 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal("usage report raced twice".into()))
}

fn ack(id: &str, version: i64, duplicate: bool) -> UsageAck {
    UsageAck { id: id.to_owned(), version: u64::try_from(version).unwrap_or(0), duplicate }
}

async fn apply_report(
    tx: &mut Tx,
    report_id: &str,
    merged: &BTreeMap<(AccountKind, &str), i64>,
    version: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut items = 0;
    for ((kind, subject), amount) in merged {
        if *amount == 0 {
            continue;
        }
        let id = format!("usage:{report_id}:{}:{subject}", kind.as_str());
        let change = Change {
            id: &id,
            kind: *kind,
            subject,
            amount: -amount,
            reason: "usage",
            report_id: Some(report_id),
            actor: None,
        };
        store::apply(tx, &change, version, now).await?;
        items += 1;
    }
    store::record_report(tx, report_id, version, items, now).await
}

/// Filters of `GET /api/v1/credits/usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Account kind.
    pub kind: Option<String>,
    /// Account id.
    pub id: Option<String>,
    /// `grant`, `deduct` or `usage`.
    pub reason: Option<String>,
    /// A filter report id.
    pub report_id: Option<String>,
    /// Page cursor (from `next_before`).
    pub before: Option<String>,
    /// Page size, 1–500, default 100.
    pub limit: Option<i64>,
}

/// A page of ledger entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsagePage {
    /// Entries, newest first.
    pub items: Vec<Entry>,
    /// Cursor of the next (older) page, absent on the last page.
    pub next_before: Option<String>,
}

/// The ledger, newest first, with keyset paging on (version, id).
#[utoipa::path(get, path = "/api/v1/credits/usage", params(UsageQuery), responses((status = 200, body = UsagePage)))]
pub async fn usage(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<UsagePage>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let mut sql = format!("SELECT {} FROM credit_ledger WHERE 1 = 1", store::ENTRY_COLUMNS);
    let mut texts: Vec<String> = Vec::new();
    for (col, value) in [("kind", &q.kind), ("subject", &q.id), ("reason", &q.reason), ("report_id", &q.report_id)] {
        if let Some(v) = value {
            texts.push(v.clone());
            sql.push_str(&format!(" AND {col} = ${}", texts.len()));
        }
    }
    let cursor = match &q.before {
        Some(c) => {
            let (v, id) =
                c.split_once('.').ok_or_else(|| ApiError::invalid("before: not a cursor from next_before"))?;
            Some((
                v.parse::<i64>().map_err(|_| ApiError::invalid("before: not a cursor from next_before"))?,
                id.to_owned(),
            ))
        }
        None => None,
    };
    if cursor.is_some() {
        let (a, b) = (texts.len() + 1, texts.len() + 2);
        sql.push_str(&format!(" AND (version < ${a} OR (version = ${a} AND id < ${b}))"));
    }
    sql.push_str(&format!(" ORDER BY version DESC, id DESC LIMIT {}", limit + 1));
    let mut query = sqlx::query(&sql);
    for t in &texts {
        query = query.bind(t);
    }
    if let Some((v, id)) = &cursor {
        query = query.bind(*v).bind(id);
    }
    let rows = query.fetch_all(&state.db.pool).await?;
    let mut items = rows.iter().map(store::entry_from_row).collect::<Result<Vec<_>, _>>()?;
    let next_before = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|e| format!("{}.{}", e.version, e.id))
    } else {
        None
    };
    Ok(Json(UsagePage { items, next_before }))
}

/// Opens the remaining-uses account of a key created with `max_uses`
/// (inside the creating transaction, at its change `version`).
pub async fn open_uses(
    tx: &mut Tx,
    key_id: &str,
    uses: i64,
    actor: &str,
    version: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let id = format!("grant:max_uses:{key_id}");
    let change = Change {
        id: &id,
        kind: AccountKind::Uses,
        subject: key_id,
        amount: uses,
        reason: "grant",
        report_id: None,
        actor: Some(actor),
    };
    store::apply(tx, &change, version, now).await.map(|_| ())
}
