//! Usage reports, from the process-wide counters to the control plane.
//!
//! One report is in flight per Envoy process (the flushing VM holds a
//! lease). Its life:
//!
//! 1. **Build** — take accounts off the dirty list; for each, move `unsent`
//!    to `inflight` tagged with the report's sequence number (one CAS per
//!    account, so requests counting at the same time lose nothing); store
//!    the items and the status `(seq, acked = 0)`.
//! 2. **Send**, and resend on every flush until acknowledged — always the
//!    same id and items, so a retry after a timeout or an outage is applied
//!    once (the control plane keys reports by id).
//! 3. **Acknowledge** — the answer carries the change version `Va` the
//!    report was applied at; the status becomes `(seq, Va)`. Requests keep
//!    subtracting the in-flight usage until the synced version reaches
//!    `Va`, then stop: the pushed balance includes it.
//! 4. **Finish** — once synced ≥ `Va`, zero each account's `inflight` and
//!    build the next report.
//!
//! Nothing is lost while the control plane is down: usage accumulates in
//! `unsent` (and keeps counting against the budget) until a report goes
//! through.

use super::records::{self, Account, Status, Usage};
use crate::ratelimit::table::{CounterStore, MAX_CAS_ATTEMPTS, StoreError};
use meshgate_wire::credits::{MAX_REPORT_ITEMS, UsageItem, UsageReport};
use serde::{Deserialize, Serialize};

/// The stored report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Batch {
    seq: u64,
    report: UsageReport,
}

fn read_batch(store: &dyn CounterStore) -> Result<Option<Batch>, StoreError> {
    let (bytes, _) = store.get(records::BATCH_KEY)?;
    Ok(bytes.filter(|b| !b.is_empty()).and_then(|b| serde_json::from_slice(&b).ok()))
}

fn write_batch(store: &dyn CounterStore, batch: Option<&Batch>) -> Result<(), StoreError> {
    let bytes = match batch {
        Some(b) => serde_json::to_vec(b).map_err(|_| StoreError::Unavailable)?,
        None => Vec::new(),
    };
    store.set(records::BATCH_KEY, &bytes, 0)
}

/// What the flusher should send now, if anything: the unacknowledged
/// report again, or a new one once the previous is reflected in the synced
/// state (`synced`: the published feed version). `nonce` makes report ids
/// unique to this process.
pub fn next_report(store: &dyn CounterStore, synced: u64, nonce: &str) -> Result<Option<UsageReport>, StoreError> {
    let (status, cas) = records::read_status_cas(store)?;
    if let Some(batch) = read_batch(store)? {
        if batch.seq > status.seq {
            // Built, but the status write did not land: publish it now.
            records::write_status(store, Status { seq: batch.seq, acked: 0 }, cas)?;
            return Ok(Some(batch.report));
        }
        if batch.seq == status.seq {
            if status.acked == 0 {
                return Ok(Some(batch.report));
            }
            if status.acked > synced {
                return Ok(None);
            }
            finish(store, &batch)?;
            write_batch(store, None)?;
        }
    }
    build(store, status, cas, nonce)
}

/// Zeroes the in-flight usage of a reflected report.
fn finish(store: &dyn CounterStore, batch: &Batch) -> Result<(), StoreError> {
    for item in &batch.report.usage {
        let account = Account { kind: item.kind, id: item.id.clone() };
        update(store, &account, |u| {
            if u.batch == batch.seq {
                u.inflight = 0;
            }
        })?;
    }
    Ok(())
}

fn update(store: &dyn CounterStore, account: &Account, edit: impl Fn(&mut Usage)) -> Result<Usage, StoreError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (mut usage, cas) = records::read_usage(store, account)?;
        if cas == 0 {
            return Ok(usage);
        }
        let before = usage;
        edit(&mut usage);
        match records::write_usage(store, account, &usage, cas) {
            Ok(()) => return Ok(before),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contention)
}

fn build(store: &dyn CounterStore, status: Status, cas: u32, nonce: &str) -> Result<Option<UsageReport>, StoreError> {
    let seq = status.seq + 1;
    let accounts = records::take_dirty(store, MAX_REPORT_ITEMS)?;
    let mut usage = Vec::with_capacity(accounts.len());
    for (i, account) in accounts.iter().enumerate() {
        let moved = update(store, account, |u| {
            u.listed = false;
            if u.unsent != 0 {
                // Any older in-flight amount belongs to a finished report.
                u.inflight = u.unsent;
                u.unsent = 0;
                u.batch = seq;
            }
        });
        match moved {
            Ok(before) if before.unsent != 0 => {
                usage.push(UsageItem { kind: account.kind, id: account.id.clone(), amount: before.unsent })
            }
            Ok(_) => {}
            Err(e) => {
                // Put the accounts not moved back on the list; what was
                // moved is sent below.
                for later in accounts.iter().skip(i) {
                    let _ = records::mark_dirty(store, later);
                }
                if usage.is_empty() {
                    return Err(e);
                }
                break;
            }
        }
    }
    if usage.is_empty() {
        return Ok(None);
    }
    let batch = Batch { seq, report: UsageReport { id: format!("{nonce}-{seq}"), usage } };
    write_batch(store, Some(&batch))?;
    records::write_status(store, Status { seq, acked: 0 }, cas)?;
    Ok(Some(batch.report))
}

/// Records the control plane's acknowledgement of report `id`, applied at
/// change `version`. Returns false when it is not the report in flight (a
/// late answer to an older call).
pub fn acknowledge(store: &dyn CounterStore, id: &str, version: u64) -> Result<bool, StoreError> {
    let (status, cas) = records::read_status_cas(store)?;
    let Some(batch) = read_batch(store)? else { return Ok(false) };
    if batch.report.id != id || batch.seq != status.seq || status.acked != 0 {
        return Ok(false);
    }
    records::write_status(store, Status { seq: status.seq, acked: version.max(1) }, cas)?;
    Ok(true)
}

/// Usage counted in this process and not yet reflected in the synced state
/// (unsent plus in flight), per account in `accounts`: for metrics and tests.
pub fn pending(store: &dyn CounterStore, accounts: &[Account], synced: u64) -> Result<i64, StoreError> {
    let status = records::read_status(store)?;
    let mut total = 0i64;
    for account in accounts {
        let (u, _) = records::read_usage(store, account)?;
        let inflight = if status.reflects(u.batch, synced) { 0 } else { u.inflight };
        total = total.saturating_add(u.unsent).saturating_add(inflight);
    }
    Ok(total)
}

/// A report's JSON body.
pub fn encode(report: &UsageReport) -> Result<Vec<u8>, String> {
    serde_json::to_vec(report).map_err(|e| e.to_string())
}

/// The control plane's acknowledgement, from its JSON body.
pub fn decode_ack(body: &[u8]) -> Result<meshgate_wire::credits::UsageAck, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}
