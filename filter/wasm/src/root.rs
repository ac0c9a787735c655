//! The root context: compiles the plugin configuration at `on_configure`,
//! runs the sync poller on ticks, and hands the current engine to every
//! HTTP context by `Rc`, switching engines when a newer synced version is
//! published.

use crate::http::Http;
use crate::metrics::Metrics;
use crate::store::SharedData;
use crate::sync::{self, Poller};
use meshgate_core::sync::engine_for;
use meshgate_core::sync::layout::Meta;
use meshgate_core::{CompiledConfig, Engine, compile};
use meshgate_wire::config::StalePolicy;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// How often the poller looks at its lease and the published head.
const TICK: Duration = Duration::from_millis(200);

/// The tick without a sync feed: request counters reach Envoy this often.
const METRICS_TICK: Duration = Duration::from_secs(1);

/// Per-VM state shared by HTTP contexts.
#[derive(Default)]
pub struct Root {
    config: Option<Arc<CompiledConfig>>,
    engine: RefCell<Option<Rc<Engine>>>,
    poller: RefCell<Option<Poller>>,
    /// Sends usage reports (when `credits` is configured).
    credits: RefCell<Option<crate::credits::Flusher>>,
    metrics: Rc<Metrics>,
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn now_ms() -> u64 {
    now_us() / 1000
}

fn now_us() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Root {
    fn adopt(&self, engine: Engine) {
        self.metrics.sync_version(engine.sync_version);
        *self.engine.borrow_mut() = Some(Rc::new(engine));
    }

    /// Switches to the published state when it is newer than ours: reads
    /// the meta (signing keys, bans, where the shards are) and builds an
    /// engine over it, keeping the warm caches when the keys did not change.
    fn follow_published(&self, head: sync::Head) {
        let (Some(config), Some(current)) = (&self.config, self.engine.borrow().clone()) else { return };
        if head.version <= current.sync_version {
            return;
        }
        let meta = match Meta::read(&SharedData) {
            Ok((meta, _)) if meta.version > current.sync_version => meta,
            _ => return,
        };
        match engine_for(Arc::clone(config), &meta, Some(&current)) {
            Ok(engine) => self.adopt(engine),
            Err(e) => log(LogLevel::Error, &format!("meshgate: published sync state refused: {e}")),
        }
    }
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        // The VM is going away (plugin removed or replaced): its counts go
        // to Envoy now, and a snapshot it was receiving would otherwise stay
        // in shared data unreferenced.
        self.metrics.flush();
        if let Some(poller) = self.poller.borrow_mut().as_mut() {
            poller.stop();
        }
        true
    }

    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _trailers: usize) {
        if self.config.is_none() {
            return;
        }
        let started = now_us();
        let now = started / 1000;
        let report = self.credits.borrow_mut().as_mut().and_then(|f| f.on_response(token, headers, body_size));
        if let Some(report) = report {
            if let Some(error) = report.error {
                log(LogLevel::Warn, &format!("meshgate: credits: {error}"));
            }
            return;
        }
        let outcome = match self.poller.borrow_mut().as_mut() {
            Some(poller) => poller.on_response(token, headers, body_size, now),
            None => return,
        };
        self.metrics.sync_apply_us(now_us().saturating_sub(started));
        self.metrics.sync_bytes(outcome.bytes);
        if let Some(error) = &outcome.error {
            self.metrics.sync_error();
            log(LogLevel::Warn, &format!("meshgate: sync: {error}"));
        }
        if let Some(version) = outcome.published {
            log(LogLevel::Debug, &format!("meshgate: sync: applied version {version}"));
            self.follow_published(sync::read_head());
        }
        if outcome.poll_now
            && let Some(poller) = self.poller.borrow_mut().as_mut()
            && poller.tick(now).is_err()
        {
            self.metrics.sync_error();
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::from(&b"{}"[..]),
            Err(status) => {
                log(LogLevel::Error, &format!("meshgate: cannot read plugin configuration: {status:?}"));
                return false;
            }
        };
        let config = match compile(&bytes) {
            Ok(config) => Arc::new(config),
            Err(err) => {
                log(LogLevel::Error, &format!("meshgate: {err}"));
                return false;
            }
        };
        if let Err(err) = config.rate_limits.init(&SharedData) {
            log(LogLevel::Error, &format!("meshgate: cannot create rate-limit counters: {err}"));
            return false;
        }
        log(
            LogLevel::Info,
            &format!(
                "meshgate: configured {} routes, {} issuers, {} signing keys{}",
                config.routes.len(),
                config.keyring.issuers.len(),
                config.keyring.keys.len(),
                if config.sync.is_some() { ", following the sync feed" } else { "" }
            ),
        );
        self.metrics.flush();
        self.metrics = Rc::new(Metrics::define(&config));
        *self.engine.borrow_mut() = Some(Rc::new(Engine::from_shared(Arc::clone(&config))));
        if let Some(cfg) = &config.sync {
            *self.poller.borrow_mut() = Some(Poller::new(cfg.clone(), now_ms()));
            if hostcalls::set_tick_period(TICK).is_err() {
                log(LogLevel::Error, "meshgate: cannot set a tick period for the sync feed");
                return false;
            }
        } else if hostcalls::set_tick_period(METRICS_TICK).is_err() {
            log(LogLevel::Warn, "meshgate: cannot set a tick period: request counters reach Envoy when the VM ends");
        }
        if let (Some(credits), Some(sync)) = (&config.credits, &config.sync) {
            if let Err(err) = meshgate_core::credits::records::init(&SharedData) {
                log(LogLevel::Error, &format!("meshgate: cannot create credit counters: {err}"));
                return false;
            }
            *self.credits.borrow_mut() = Some(crate::credits::Flusher::new(sync, credits, now_ms()));
        }
        self.config = Some(config);
        self.follow_published(sync::read_head());
        true
    }

    fn on_tick(&mut self) {
        self.metrics.flush();
        if self.config.as_ref().is_none_or(|c| c.sync.is_none()) {
            return;
        }
        let now = now_ms();
        let head = sync::read_head();
        self.follow_published(head);
        if let Some(flusher) = self.credits.borrow_mut().as_mut()
            && let Err(error) = flusher.tick(now, head.version)
        {
            log(LogLevel::Warn, &format!("meshgate: credits: {error}"));
        }
        let mut poller = self.poller.borrow_mut();
        let Some(poller) = poller.as_mut() else { return };
        let since = if head.contact_ms == 0 { poller.started_ms } else { head.contact_ms };
        self.metrics.sync_staleness(now.saturating_sub(since));
        if let Err(status) = poller.tick(now) {
            self.metrics.sync_error();
            log(LogLevel::Warn, &format!("meshgate: sync: cannot call the control plane: {status:?}"));
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let mut stale = false;
        if self.config.as_ref().is_some_and(|c| c.sync.is_some()) {
            let head = sync::read_head();
            self.follow_published(head);
            // The clock is one more host call: only the fail-closed policy needs it here.
            if let Some(poller) = self.poller.borrow().as_ref()
                && poller.config().on_stale == StalePolicy::FailClosed
            {
                stale = poller.is_stale(head, now_ms());
            }
        }
        let engine = self.engine.borrow().clone();
        Some(Box::new(Http::new(engine, Rc::clone(&self.metrics), stale)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
