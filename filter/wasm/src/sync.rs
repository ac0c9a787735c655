//! Following the control plane's sync feed.
//!
//! One VM per Envoy process polls: the VMs elect a leader through a lease in
//! shared data (compare-and-swap), so there is one long-poll per process
//! whichever VMs Envoy creates. The leader applies each response straight
//! into shared data (the core's [`Publisher`]: a meta record plus sharded
//! binary records, one copy per process), then moves a small *head*
//! (version and time of last contact). Every VM reads the head once per
//! request and, when the version moved, reads the meta (signing keys,
//! bans, where the shards are) and swaps in a new engine before deciding;
//! keys and revocations are looked up in the shards per request, so a
//! revocation is in force on every worker by its next request. Nothing in
//! a VM blocks on the feed. Large snapshots arrive in pages.

use crate::store::{SharedData, call_status};
use meshgate_core::config::CompiledSync;
use meshgate_core::sync::layout::Meta;
use meshgate_core::sync::{Applied, Ask, Publisher, SyncError};
use meshgate_wire::sync::SyncKind;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, Status};
use std::time::Duration;

// The format version is part of every key: a module loaded into the same
// process (same `vm_id`) with another layout must not read these.
const LEASE_KEY: &str = "mg:sync:v2:lease";
const HEAD_KEY: &str = "mg:sync:v2:head";
const VM_SEQ_KEY: &str = "mg:sync:v2:vmseq";
/// How long a leader's lease lasts without renewal (renewed every tick).
const LEASE_MS: u64 = 2_000;
const MAX_BACKOFF_MS: u64 = 30_000;
/// Records per snapshot page (≈ 6 MB of JSON): bounds what one response
/// costs in Envoy's and the VM's memory, whatever the number of keys.
pub const PAGE_RECORDS: u32 = 20_000;

/// The published head: version and last successful contact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// Version of the published state.
    pub version: u64,
    /// Milliseconds since the epoch of the last successful feed response.
    pub contact_ms: u64,
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

/// Reads the published head (zeros when nothing is published).
pub fn read_head() -> Head {
    match hostcalls::get_shared_data(HEAD_KEY) {
        Ok((Some(bytes), _)) => {
            let (version, contact_ms) = words(&bytes);
            Head { version, contact_ms }
        }
        _ => Head::default(),
    }
}

/// What the poller asks of its root context after an event.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A new version is published: the root should follow it.
    pub published: Option<u64>,
    /// Bytes received.
    pub bytes: usize,
    /// The response was an error (status, size, or content).
    pub error: Option<String>,
    /// Poll again now rather than on the next tick: the response brought
    /// something (more may be queued behind it, or the next snapshot page)
    /// or was out of order. An answer with nothing new waits for the tick,
    /// so a control plane that answers at once cannot drive a hot loop.
    pub poll_now: bool,
}

/// The per-VM poller.
#[derive(Debug)]
pub struct Poller {
    cfg: CompiledSync,
    vm_id: u64,
    outstanding: Option<u32>,
    /// Whether the call in flight asks for the next page of a snapshot.
    asked_page: bool,
    /// Whether this VM held the lease at its last tick.
    leading: bool,
    next_poll_ms: u64,
    failures: u32,
    /// Applies responses to shared data (holds only a snapshot in progress).
    publisher: Publisher,
    /// When the VM started (staleness before the first contact).
    pub started_ms: u64,
}

fn jitter(seed: u64, bound: u64) -> u64 {
    // xorshift: cheap, deterministic per VM and attempt; spreads retries.
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if bound == 0 { 0 } else { x % bound }
}

impl Poller {
    /// A poller for this VM; takes a unique VM id from shared data.
    pub fn new(cfg: CompiledSync, now_ms: u64) -> Self {
        let vm_id = next_vm_id();
        Self {
            cfg,
            vm_id,
            outstanding: None,
            asked_page: false,
            leading: false,
            next_poll_ms: 0,
            failures: 0,
            publisher: Publisher::new(vm_id),
            started_ms: now_ms,
        }
    }

    /// The feed settings.
    pub fn config(&self) -> &CompiledSync {
        &self.cfg
    }

    /// Whether the last contact is older than the staleness limit.
    pub fn is_stale(&self, head: Head, now_ms: u64) -> bool {
        let since = if head.contact_ms == 0 { self.started_ms } else { head.contact_ms };
        now_ms.saturating_sub(since) > u64::from(self.cfg.max_staleness_secs) * 1000
    }

    /// Takes or renews the lease; true when this VM is the leader.
    fn lead(&self, now_ms: u64) -> bool {
        let (value, cas) = match hostcalls::get_shared_data(LEASE_KEY) {
            Ok((value, cas)) => (value.unwrap_or_default(), cas),
            Err(_) => return false,
        };
        let (owner, expires) = words(&value);
        if owner != self.vm_id && expires > now_ms {
            return false;
        }
        let lease = pack(self.vm_id, now_ms + LEASE_MS);
        hostcalls::set_shared_data(LEASE_KEY, Some(&lease), cas).is_ok()
    }

    /// Called on every tick: lead if possible, and start a poll when due.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), Status> {
        let leading = self.lead(now_ms);
        if !leading {
            if self.leading {
                // Another VM took over (this one stalled past its lease): it
                // starts its own snapshot, so ours is blanked now rather than
                // left in shared data, and the answer to our call, if it
                // still comes, is ignored.
                self.stop();
            }
            self.leading = false;
            return Ok(());
        }
        if !self.leading {
            // A previous leader may have left a generation to blank.
            self.publisher.recheck_retired();
            self.leading = true;
        }
        // The leader blanks a replaced generation once nobody reads it, also
        // while a long-poll is outstanding.
        let _ = self.publisher.sweep(&SharedData, now_ms);
        if self.outstanding.is_some() || now_ms < self.next_poll_ms {
            return Ok(());
        }
        let published = Meta::read(&SharedData).map(|(m, _)| m).unwrap_or_default();
        let ask = self.publisher.ask(&published);
        self.call(&ask).inspect_err(|_| self.fail(now_ms))
    }

    /// Starts the call for `ask`.
    fn call(&mut self, ask: &Ask) -> Result<(), Status> {
        let path = match ask {
            Ask::Since(version) => {
                format!("{}?since={version}&wait={}&limit={PAGE_RECORDS}", self.cfg.path, self.cfg.wait_secs)
            }
            Ask::Page(cursor) => {
                format!("{}?snapshot=true&wait=0&limit={PAGE_RECORDS}&after={}", self.cfg.path, query_escape(cursor))
            }
        };
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", self.cfg.authority.as_str()),
            ("authorization", self.cfg.authorization.as_str()),
            ("accept", "application/json"),
        ];
        let timeout = Duration::from_secs(u64::from(self.cfg.wait_secs) + 10);
        let token = hostcalls::dispatch_http_call(&self.cfg.cluster, headers, None, Vec::new(), timeout)?;
        self.outstanding = Some(token);
        self.asked_page = matches!(ask, Ask::Page(_));
        Ok(())
    }

    /// Drops the call in flight and any snapshot in progress (its shards
    /// are blanked): on losing the lease, and when the VM goes away.
    pub fn stop(&mut self) {
        self.outstanding = None;
        self.publisher.abandon(&SharedData);
    }

    fn fail(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        let base = (500u64 << self.failures.min(6)).min(MAX_BACKOFF_MS);
        self.next_poll_ms = now_ms + base / 2 + jitter(self.vm_id ^ u64::from(self.failures) ^ now_ms, base / 2 + 1);
    }

    /// Handles the response to call `token`.
    pub fn on_response(&mut self, token: u32, headers: usize, body_size: usize, now_ms: u64) -> Outcome {
        if self.outstanding != Some(token) {
            return Outcome::default();
        }
        self.outstanding = None;
        let mut outcome = Outcome { bytes: body_size, ..Outcome::default() };
        if std::mem::take(&mut self.asked_page) && !self.publisher.receiving() {
            // The snapshot this page belongs to was abandoned: a page taken
            // for a whole snapshot would publish a fraction of the state.
            outcome.poll_now = true;
            return outcome;
        }
        let status = call_status(headers);
        let problem = if status.as_deref() != Some("200") {
            Some(format!("feed answered status {}", status.as_deref().unwrap_or("none")))
        } else if body_size > self.cfg.max_body_bytes {
            Some(format!("feed response of {body_size} bytes exceeds max_body_bytes"))
        } else {
            None
        };
        if let Some(problem) = problem {
            // A snapshot in progress cannot continue from a failed page.
            self.publisher.abandon(&SharedData);
            self.fail(now_ms);
            outcome.error = Some(problem);
            return outcome;
        }
        let body =
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        let applied = Publisher::parse(&body).and_then(|response| {
            drop(body);
            // Ask for the next page before storing this one: the control
            // plane builds it while this VM writes shards.
            if let (SyncKind::Snapshot, Some(next)) = (response.kind, &response.next)
                && self.call(&Ask::Page(next.clone())).is_err()
            {
                self.outstanding = None;
            }
            self.publisher.apply(&SharedData, response, now_ms)
        });
        if !matches!(applied, Ok(Applied::Page)) {
            // Not a page after all (stale, refused): the early call is moot.
            self.outstanding = None;
            self.asked_page = false;
        }
        match applied {
            Ok(Applied::Published(version)) => {
                write_head(version, now_ms);
                outcome.published = Some(version);
                outcome.poll_now = true;
            }
            // The next page is already asked for (or, if that call could
            // not start, is asked for now).
            Ok(Applied::Page) => outcome.poll_now = self.outstanding.is_none(),
            // Nothing new (long-poll timeout, duplicate): still a contact.
            Err(SyncError::Stale { have, .. }) => write_head(have, now_ms),
            // Out of order, or another VM wrote first: ask again from what
            // is published, at once.
            Err(SyncError::BaseMismatch { .. } | SyncError::Store(_)) => outcome.poll_now = true,
            Err(e @ SyncError::Invalid(_)) => {
                self.fail(now_ms);
                outcome.error = Some(e.to_string());
                return outcome;
            }
        }
        self.failures = 0;
        self.next_poll_ms = now_ms;
        outcome
    }
}

/// Moves the head to `version` (never back) with `now_ms` as the last
/// contact, with compare-and-swap.
fn write_head(version: u64, now_ms: u64) {
    for _ in 0..8 {
        let Ok((value, cas)) = hostcalls::get_shared_data(HEAD_KEY) else { return };
        let (head_version, _) = words(&value.unwrap_or_default());
        let head = pack(head_version.max(version), now_ms);
        match hostcalls::set_shared_data(HEAD_KEY, Some(&head), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return,
        }
    }
}

/// Percent-encodes a cursor for a query string (cursors are opaque).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A process-unique id for this VM (a shared counter, CAS-incremented).
fn next_vm_id() -> u64 {
    for _ in 0..64 {
        let Ok((value, cas)) = hostcalls::get_shared_data(VM_SEQ_KEY) else { break };
        let (n, _) = words(&value.unwrap_or_default());
        if hostcalls::set_shared_data(VM_SEQ_KEY, Some(&pack(n + 1, 0)), cas).is_ok() {
            return n + 1;
        }
    }
    // Contention beyond reason: fall back to the clock (still unique enough
    // to take turns on the lease).
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(u64::MAX, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
