//! Following the control plane's sync feed.
//!
//! One VM per Envoy process polls: the VMs elect a leader through a lease in
//! shared data (compare-and-swap), so there is one long-poll per process
//! whichever VMs Envoy creates. The leader applies each response, and
//! publishes the whole resulting state plus a small *head* (version and
//! time of last contact) in shared data. Every VM reads the head once per
//! request and, when the version moved, loads the published state and
//! rebuilds its engine before deciding — so a revocation is in force on
//! every worker by its next request. Nothing in a VM blocks on the feed.

use meshgate_core::CompiledConfig;
use meshgate_core::config::CompiledSync;
use meshgate_core::engine::Engine;
use meshgate_core::sync::{SyncError, SyncedState};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use std::sync::Arc;
use std::time::Duration;

// The format version is part of every key: a module loaded into the same
// process (same `vm_id`) with another layout must not read these.
const LEASE_KEY: &str = "mg:sync:v1:lease";
const HEAD_KEY: &str = "mg:sync:v1:head";
const STATE_KEY: &str = "mg:sync:v1:state";
const VM_SEQ_KEY: &str = "mg:sync:v1:vmseq";
/// How long a leader's lease lasts without renewal (renewed every tick).
const LEASE_MS: u64 = 2_000;
const MAX_BACKOFF_MS: u64 = 30_000;

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

/// Loads the published state (stored as an 8-byte version, then a
/// snapshot), if it is newer than `have`.
pub fn load_published(have: u64, now_secs: u64) -> Option<SyncedState> {
    let Ok((Some(bytes), _)) = hostcalls::get_shared_data(STATE_KEY) else { return None };
    let (version, _) = words(&bytes);
    if version <= have {
        return None;
    }
    let state = SyncedState::default().apply_bytes(bytes.get(8..)?, now_secs).ok()?;
    (state.version > have).then_some(state)
}

/// What the poller asks of its root context after an event.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A new state was applied; the root should adopt this engine.
    pub engine: Option<Engine>,
    /// Bytes received.
    pub bytes: usize,
    /// The response was an error (status, size, or content).
    pub error: Option<String>,
    /// Poll again now rather than on the next tick: the response brought
    /// something (more may be queued behind it) or was out of order. An
    /// answer with nothing new waits for the tick, so a control plane that
    /// answers at once cannot drive a hot loop.
    pub poll_now: bool,
}

/// The per-VM poller.
#[derive(Debug)]
pub struct Poller {
    cfg: CompiledSync,
    vm_id: u64,
    outstanding: Option<u32>,
    next_poll_ms: u64,
    failures: u32,
    /// State this VM has applied.
    pub state: SyncedState,
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
        Self {
            cfg,
            vm_id: next_vm_id(),
            outstanding: None,
            next_poll_ms: 0,
            failures: 0,
            state: SyncedState::default(),
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
        if !self.lead(now_ms) || self.outstanding.is_some() || now_ms < self.next_poll_ms {
            return Ok(());
        }
        let path = format!("{}?since={}&wait={}", self.cfg.path, self.state.version, self.cfg.wait_secs);
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", self.cfg.authority.as_str()),
            ("authorization", self.cfg.authorization.as_str()),
            ("accept", "application/json"),
        ];
        let timeout = Duration::from_secs(u64::from(self.cfg.wait_secs) + 10);
        match hostcalls::dispatch_http_call(&self.cfg.cluster, headers, None, Vec::new(), timeout) {
            Ok(token) => {
                self.outstanding = Some(token);
                Ok(())
            }
            Err(status) => {
                self.fail(now_ms);
                Err(status)
            }
        }
    }

    fn fail(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        let base = (500u64 << self.failures.min(6)).min(MAX_BACKOFF_MS);
        self.next_poll_ms = now_ms + base / 2 + jitter(self.vm_id ^ u64::from(self.failures) ^ now_ms, base / 2 + 1);
    }

    /// Handles the response to call `token`.
    pub fn on_response(&mut self, token: u32, body_size: usize, config: &Arc<CompiledConfig>, now_ms: u64) -> Outcome {
        if self.outstanding != Some(token) {
            return Outcome::default();
        }
        self.outstanding = None;
        let mut outcome = Outcome { bytes: body_size, ..Outcome::default() };
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten();
        if status.as_deref() != Some("200") {
            self.fail(now_ms);
            outcome.error = Some(format!("feed answered status {}", status.as_deref().unwrap_or("none")));
            return outcome;
        }
        if body_size > self.cfg.max_body_bytes {
            self.fail(now_ms);
            outcome.error = Some(format!("feed response of {body_size} bytes exceeds max_body_bytes"));
            return outcome;
        }
        let body =
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        let now_secs = now_ms / 1000;
        let applied =
            self.state.apply_bytes(&body, now_secs).and_then(|s| s.engine(Arc::clone(config)).map(|e| (s, e)));
        match applied {
            Ok((state, engine)) => {
                self.state = state;
                self.publish(now_ms);
                outcome.engine = Some(engine);
                outcome.poll_now = true;
            }
            // Nothing new (long-poll timeout, duplicate): still a contact.
            Err(SyncError::Stale { .. }) => self.publish(now_ms),
            // Out of order: ask again from what we hold, at once.
            Err(SyncError::BaseMismatch { .. }) => outcome.poll_now = true,
            Err(e) => {
                self.fail(now_ms);
                outcome.error = Some(e.to_string());
                return outcome;
            }
        }
        self.failures = 0;
        self.next_poll_ms = now_ms;
        outcome
    }

    /// Publishes this VM's state if it is newer than the published one,
    /// then the head. Both are written with compare-and-swap and only ever
    /// move forward, so two VMs that briefly both lead cannot roll back.
    fn publish(&self, now_ms: u64) {
        let mut published = 0;
        for _ in 0..8 {
            let Ok((value, cas)) = hostcalls::get_shared_data(STATE_KEY) else { return };
            published = words(&value.unwrap_or_default()).0;
            if published >= self.state.version {
                break;
            }
            let json = self.state.snapshot_bytes();
            let mut bytes = Vec::with_capacity(json.len() + 8);
            bytes.extend_from_slice(&self.state.version.to_le_bytes());
            bytes.extend_from_slice(&json);
            match hostcalls::set_shared_data(STATE_KEY, Some(&bytes), cas) {
                Ok(()) => {
                    published = self.state.version;
                    break;
                }
                Err(Status::CasMismatch) => continue,
                Err(_) => return,
            }
        }
        for _ in 0..8 {
            let Ok((value, cas)) = hostcalls::get_shared_data(HEAD_KEY) else { return };
            let (head_version, _) = words(&value.unwrap_or_default());
            let head = pack(head_version.max(published), now_ms);
            match hostcalls::set_shared_data(HEAD_KEY, Some(&head), cas) {
                Err(Status::CasMismatch) => continue,
                _ => return,
            }
        }
    }

    /// Adopts a state another VM published (so a later lead continues from it).
    pub fn adopt(&mut self, state: SyncedState) {
        if state.version > self.state.version {
            self.state = state;
        }
    }
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
