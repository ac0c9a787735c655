//! Counters, defined once per VM at configure time and shared by every HTTP
//! context of that VM. Envoy exposes them under `wasmcustom.` (e.g.
//! `wasmcustom.meshgate.denied.token-expired`).
//!
//! Request counters (allowed, denied, per reason, per method, per rate-limit
//! rule) are summed in the VM and handed to Envoy on the root context's tick
//! ([`Metrics::flush`], at least once a second) and when the VM ends: each
//! `increment_metric` is a crossing of the Wasm boundary costing about a
//! microsecond in V8, and a request touched three of them. Envoy's stats
//! are read every few seconds, so they lag by at most one tick. Sync
//! metrics are rare and stay immediate.

use meshgate_core::Reason;
use meshgate_core::config::CompiledConfig;
use meshgate_core::ratelimit::{RuleEvent, RuleId};
use meshgate_wire::config::CredentialKind;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;
use std::collections::HashMap;

/// Metric ids by outcome. A metric whose definition failed is simply
/// absent: counting must never stop a request.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    by_reason: HashMap<Reason, u32>,
    /// Per credential kind, in [`METHODS`] order (an array: a request
    /// should not hash a string to count itself).
    by_method: [Option<u32>; 5],
    anonymous: Option<u32>,
    failures: Option<u32>,
    sync_version: Option<u32>,
    sync_staleness: Option<u32>,
    sync_errors: Option<u32>,
    sync_bytes: Option<u32>,
    sync_apply_us: Option<u32>,
    /// Per configured rule: allowed, limited, shadow-limited.
    rules: Vec<[Option<u32>; 3]>,
    /// The same for keys' own limits and the abuse limit.
    key_limit: [Option<u32>; 3],
    abuse: [Option<u32>; 3],
    /// Request counts not yet handed to Envoy: (metric id, count), a few
    /// distinct ids at most.
    pending: RefCell<Vec<(u32, u64)>>,
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn gauge(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Gauge, name).ok()
}

fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        // A failed increment loses one count, nothing else.
        let _ = hostcalls::increment_metric(id, 1);
    }
}

const METHODS: [CredentialKind; 5] = [
    CredentialKind::Jwt,
    CredentialKind::ApiKey,
    CredentialKind::Service,
    CredentialKind::Admin,
    CredentialKind::Guest,
];

impl Metrics {
    /// Defines every counter.
    pub fn define(config: &CompiledConfig) -> Self {
        let mut m = Self {
            allowed: counter("meshgate.allowed"),
            denied: counter("meshgate.denied"),
            anonymous: counter("meshgate.allowed.anonymous"),
            failures: counter("meshgate.host_failures"),
            sync_version: gauge("meshgate.sync.version"),
            sync_staleness: gauge("meshgate.sync.staleness_ms"),
            sync_errors: counter("meshgate.sync.errors"),
            sync_bytes: counter("meshgate.sync.bytes"),
            sync_apply_us: counter("meshgate.sync.apply_us"),
            ..Self::default()
        };
        for reason in Reason::ALL {
            if let Some(id) = counter(&format!("meshgate.denied.{}", reason.slug())) {
                m.by_reason.insert(reason, id);
            }
        }
        m.by_method =
            METHODS.map(|kind| counter(&format!("meshgate.allowed.{}", meshgate_core::identity::method_name(kind))));
        let rule = |name: &str| {
            ["allowed", "limited", "shadow_limited"].map(|e| counter(&format!("meshgate.ratelimit.{name}.{e}")))
        };
        let limits = &config.rate_limits;
        m.rules = limits.rules.iter().map(|r| rule(&r.name)).collect();
        m.key_limit = rule("api_key_limit");
        if limits.abuse.is_some() {
            m.abuse = rule("abuse");
        }
        m
    }

    /// Adds one to a request counter (handed to Envoy by [`Metrics::flush`]).
    fn count(&self, id: Option<u32>) {
        let Some(id) = id else { return };
        let Ok(mut pending) = self.pending.try_borrow_mut() else { return };
        match pending.iter_mut().find(|(i, _)| *i == id) {
            Some((_, n)) => *n += 1,
            None => pending.push((id, 1)),
        }
    }

    /// Hands the summed request counts to Envoy.
    pub fn flush(&self) {
        let Ok(mut pending) = self.pending.try_borrow_mut() else { return };
        for (id, n) in pending.drain(..) {
            if let Ok(n) = i64::try_from(n) {
                // A failed increment loses these counts, nothing else.
                let _ = hostcalls::increment_metric(id, n);
            }
        }
    }

    /// Counts what each rate-limit rule did.
    pub fn limits(&self, events: &[(RuleId, RuleEvent)]) {
        for (rule, event) in events {
            let ids = match rule {
                RuleId::Rule(i) => self.rules.get(*i),
                RuleId::KeyLimit => Some(&self.key_limit),
                RuleId::Abuse => Some(&self.abuse),
            };
            let slot = match event {
                RuleEvent::Allowed => 0,
                RuleEvent::Limited => 1,
                RuleEvent::ShadowLimited => 2,
            };
            self.count(ids.and_then(|ids| ids.get(slot).copied().flatten()));
        }
    }

    /// Counts an allowed request.
    pub fn allowed(&self, method: Option<CredentialKind>) {
        self.count(self.allowed);
        match method {
            Some(kind) => self
                .count(METHODS.iter().position(|k| *k == kind).and_then(|i| self.by_method.get(i).copied().flatten())),
            None => self.count(self.anonymous),
        }
    }

    /// Counts a denied request.
    pub fn denied(&self, reason: Reason) {
        self.count(self.denied);
        self.count(self.by_reason.get(&reason).copied());
    }

    /// Records the applied sync version.
    pub fn sync_version(&self, version: u64) {
        record(self.sync_version, version);
    }

    /// Records the time since the last successful feed contact.
    pub fn sync_staleness(&self, ms: u64) {
        record(self.sync_staleness, ms);
    }

    /// Counts a failed feed call or refused response.
    pub fn sync_error(&self) {
        bump(self.sync_errors);
    }

    /// Counts feed response bytes.
    pub fn sync_bytes(&self, bytes: usize) {
        if let (Some(id), Ok(n)) = (self.sync_bytes, i64::try_from(bytes)) {
            let _ = hostcalls::increment_metric(id, n);
        }
    }

    /// Counts time spent taking in feed responses (parse, validate, write
    /// shards), in microseconds: with `sync.bytes`, how much of a full
    /// sync is this VM's work and how much is waiting for the feed.
    pub fn sync_apply_us(&self, us: u64) {
        if let (Some(id), Ok(n)) = (self.sync_apply_us, i64::try_from(us)) {
            let _ = hostcalls::increment_metric(id, n);
        }
    }

    /// Counts a host call failure.
    pub fn host_failure(&self) {
        bump(self.failures);
    }
}
