//! Credits glue: the per-request admission and settlement (the core's
//! [`CompiledCredits`] over shared data), and the [`Flusher`] that sends
//! usage reports to the control plane on the root context's tick.
//!
//! One VM per Envoy process flushes (a lease in shared data, like the sync
//! poller's); the report in flight, its id and its items live in shared
//! data, so whichever VM holds the lease resends the same report until the
//! control plane acknowledges it.

use crate::store::SharedData;
use meshgate_core::config::CompiledSync;
use meshgate_core::credits::{CompiledCredits, Refusal, Reservation, flush};
use meshgate_core::engine::Allow;
use meshgate_core::{Engine, LocalResponse, Reason};
use meshgate_wire::config::FailureMode;
use meshgate_wire::credits::UsageAck;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::time::Duration;

const LEASE_KEY: &str = "mg:cr:v1:lease";
const VM_SEQ_KEY: &str = "mg:cr:v1:vmseq";
const LEASE_MS: u64 = 2_000;
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest acknowledgement body read.
const MAX_ACK_BYTES: usize = 4096;

/// What a request's admission decided.
pub enum Admission {
    /// Forward; settle the reservation when the response arrives.
    Pass(Option<Reservation>),
    /// Answer with this (the reason is for metrics).
    Refuse(Reason, LocalResponse),
}

/// Admits an allowed request against its credits (a no-op without a
/// `credits` section).
pub fn admit(engine: &Engine, allow: &Allow<'_>) -> Admission {
    let Some(credits) = &engine.config.credits else { return Admission::Pass(None) };
    let config = &engine.config;
    match credits.admit(&SharedData, engine.sync_version, allow.route, allow.identity.as_deref()) {
        Ok(reservation) => Admission::Pass(Some(reservation)),
        Err(Refusal::Store(_)) if config.failure_mode == FailureMode::Open => Admission::Pass(None),
        // Before the feed's first answer no balance is known: say "not yet"
        // (503, Retry-After) rather than "exhausted".
        Err(Refusal::Credits) if engine.awaiting_first_sync() => {
            let mut response =
                meshgate_core::Denial::new(Reason::Unavailable).render(&config.realm, config.problem_details);
            response.headers.push(("retry-after".to_owned(), "1".to_owned()));
            Admission::Refuse(Reason::Unavailable, response)
        }
        Err(refusal) => Admission::Refuse(
            refusal.reason(),
            credits.render(refusal, allow.route, &config.realm, config.problem_details),
        ),
    }
}

/// On the upstream's response headers: removes the cost header (the client
/// never sees it) and settles the reservation with the reported cost.
/// Returns false when a host call failed.
pub fn on_response(credits: &CompiledCredits, reservation: Option<&Reservation>) -> bool {
    let reported = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, &credits.cost_header).ok().flatten();
    let mut ok = true;
    if reported.is_some() {
        ok &= hostcalls::remove_map_value(MapType::HttpResponseHeaders, &credits.cost_header).is_ok();
    }
    if let Some(r) = reservation {
        ok &= credits.settle(&SharedData, r, reported.as_deref()).is_ok();
    }
    ok
}

fn words(bytes: &[u8]) -> (u64, u64) {
    let word = |i: usize| bytes.get(i..i + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_le_bytes);
    (word(0), word(8))
}

fn pack(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// A process-unique id for this VM (a shared counter, CAS-incremented).
fn next_vm_id(now_ms: u64) -> u64 {
    for _ in 0..64 {
        let Ok((value, cas)) = hostcalls::get_shared_data(VM_SEQ_KEY) else { break };
        let (n, _) = words(&value.unwrap_or_default());
        if hostcalls::set_shared_data(VM_SEQ_KEY, Some(&pack(n + 1, 0)), cas).is_ok() {
            return n + 1;
        }
    }
    now_ms
}

/// The outcome of a report call, for the root context's log and metrics.
#[derive(Debug, Default)]
pub struct ReportOutcome {
    /// The report was acknowledged (applied, or applied before).
    pub acknowledged: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// The per-VM flusher.
#[derive(Debug)]
pub struct Flusher {
    vm_id: u64,
    interval_ms: u64,
    next_ms: u64,
    outstanding: Option<(u32, String)>,
    cluster: String,
    authority: String,
    authorization: String,
    path: String,
}

impl Flusher {
    /// A flusher reporting to the sync feed's cluster with its credential.
    pub fn new(sync: &CompiledSync, credits: &CompiledCredits, now_ms: u64) -> Self {
        Self {
            vm_id: next_vm_id(now_ms),
            interval_ms: credits.flush_interval_ms,
            next_ms: now_ms + credits.flush_interval_ms,
            outstanding: None,
            cluster: sync.cluster.clone(),
            authority: sync.authority.clone(),
            authorization: sync.authorization.clone(),
            path: credits.report_path.clone(),
        }
    }

    /// Takes or renews the lease; true when this VM flushes.
    fn lead(&self, now_ms: u64) -> bool {
        let Ok((value, cas)) = hostcalls::get_shared_data(LEASE_KEY) else { return false };
        let (owner, expires) = words(&value.unwrap_or_default());
        if owner != self.vm_id && expires > now_ms {
            return false;
        }
        hostcalls::set_shared_data(LEASE_KEY, Some(&pack(self.vm_id, now_ms + LEASE_MS)), cas).is_ok()
    }

    /// The process's report-id nonce (created by the first flush).
    fn nonce(&self, now_ms: u64) -> String {
        if let Ok((Some(v), _)) = hostcalls::get_shared_data(flush_nonce_key())
            && let Ok(text) = String::from_utf8(v)
            && !text.is_empty()
        {
            return text;
        }
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ms, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // Random (WASI random_get) and the clock: report ids must never repeat
        // across Envoy processes or restarts, or a report would be taken for
        // a retry of another and dropped.
        let mut random = [0u8; 8];
        let random = getrandom::fill(&mut random).map_or(0, |()| u64::from_le_bytes(random));
        let nonce = format!("{:x}{nanos:x}{:x}", random, self.vm_id);
        let _ = hostcalls::set_shared_data(flush_nonce_key(), Some(nonce.as_bytes()), None);
        nonce
    }

    /// On every tick: when due and leading, sends the report in flight (or
    /// the next). `synced` is the published feed version.
    pub fn tick(&mut self, now_ms: u64, synced: u64) -> Result<(), String> {
        if !self.lead(now_ms) || self.outstanding.is_some() || now_ms < self.next_ms {
            return Ok(());
        }
        self.next_ms = now_ms + self.interval_ms;
        let report = match flush::next_report(&SharedData, synced, &self.nonce(now_ms)) {
            Ok(Some(report)) => report,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("cannot build a usage report: {e}")),
        };
        let body = flush::encode(&report).map_err(|e| format!("cannot encode a usage report: {e}"))?;
        let headers = vec![
            (":method", "POST"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            ("authorization", self.authorization.as_str()),
            ("content-type", "application/json"),
        ];
        match hostcalls::dispatch_http_call(&self.cluster, headers, Some(&body), Vec::new(), REPORT_TIMEOUT) {
            Ok(token) => {
                self.outstanding = Some((token, report.id));
                Ok(())
            }
            Err(status) => Err(format!("cannot call the control plane: {status:?}")),
        }
    }

    /// Handles the answer to call `token`; `None` when it is not ours.
    pub fn on_response(&mut self, token: u32, headers: usize, body_size: usize) -> Option<ReportOutcome> {
        if self.outstanding.as_ref().map(|(t, _)| *t) != Some(token) {
            return None;
        }
        let (_, id) = self.outstanding.take()?;
        let status = crate::store::call_status(headers);
        if status.as_deref() != Some("200") {
            let error = format!("usage report {id}: status {}", status.as_deref().unwrap_or("none (timeout?)"));
            return Some(ReportOutcome { acknowledged: false, error: Some(error) });
        }
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(MAX_ACK_BYTES))
            .ok()
            .flatten()
            .unwrap_or_default();
        let ack: UsageAck = match flush::decode_ack(&body) {
            Ok(ack) => ack,
            Err(e) => {
                return Some(ReportOutcome { acknowledged: false, error: Some(format!("usage report {id}: {e}")) });
            }
        };
        if ack.id != id {
            return Some(ReportOutcome {
                acknowledged: false,
                error: Some(format!("usage report {id}: ack for {}", ack.id)),
            });
        }
        match flush::acknowledge(&SharedData, &id, ack.version) {
            Ok(acknowledged) => Some(ReportOutcome { acknowledged, error: None }),
            Err(e) => Some(ReportOutcome { acknowledged: false, error: Some(format!("usage report {id}: {e}")) }),
        }
    }
}

fn flush_nonce_key() -> &'static str {
    meshgate_core::credits::records::NONCE_KEY
}
