//! The scenario builder: given a plugin config, a clock and shared data, when this request
//! arrives, what did the filter do.
//!
//! ```no_run
//! use meshgate_tests::Scenario;
//! let r = Scenario::new()
//!     .config(serde_json::json!({"routes": []}))
//!     .now(1_700_000_000)
//!     .request(|r| r.method("GET").path("/api").header("authorization", "Bearer x"))
//!     .run();
//! assert_eq!(r.status(), Some(401));
//! ```

use crate::error::HostError;
use crate::request::{Outcome, Request};
use crate::shared::Host;
use crate::state::{Flow, Headers, LocalResponse, LogLine, Stream};
use crate::vm::{Vm, VmOptions};

/// A step run on the configured VM before the request (ticks, HTTP call answers, …).
type Setup = std::sync::Arc<dyn Fn(&mut Vm) -> Result<(), HostError> + Send + Sync>;

/// A single-request scenario against the built filter. See the module docs.
#[derive(Clone)]
pub struct Scenario {
    options: VmOptions,
    now: Option<u64>,
    shared: Vec<(String, Vec<u8>)>,
    request: Request,
    response: Option<Headers>,
    setup: Vec<Setup>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("options", &self.options)
            .field("now", &self.now)
            .field("request", &self.request)
            .field("setup_steps", &self.setup.len())
            .finish_non_exhaustive()
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::new()
    }
}

impl Scenario {
    /// Empty configuration, default clock, `GET /`.
    pub fn new() -> Scenario {
        Scenario {
            options: VmOptions::default(),
            now: None,
            shared: Vec::new(),
            request: Request::new(),
            response: None,
            setup: Vec::new(),
        }
    }

    /// Runs `step` on the configured VM before the request: tick it, answer its HTTP calls
    /// (e.g. a sync poll), send earlier requests. Steps run in the order given.
    pub fn before(mut self, step: impl Fn(&mut Vm) -> Result<(), HostError> + Send + Sync + 'static) -> Scenario {
        self.setup.push(std::sync::Arc::new(step));
        self
    }

    /// Plugin configuration as JSON.
    pub fn config(mut self, config: serde_json::Value) -> Scenario {
        self.options.plugin_config = config.to_string().into_bytes();
        self
    }

    /// Plugin configuration as raw bytes (for malformed-config tests).
    pub fn config_raw(mut self, config: impl Into<Vec<u8>>) -> Scenario {
        self.options.plugin_config = config.into();
        self
    }

    /// All VM options at once.
    pub fn options(mut self, options: VmOptions) -> Scenario {
        self.options = options;
        self
    }

    /// Wall clock, seconds since the Unix epoch.
    pub fn now(mut self, secs: u64) -> Scenario {
        self.now = Some(secs);
        self
    }

    /// A shared-data entry present before the VM starts.
    pub fn shared_data(mut self, key: &str, value: impl Into<Vec<u8>>) -> Scenario {
        self.shared.push((key.to_string(), value.into()));
        self
    }

    /// Shapes the request: `.request(|r| r.method("POST").path("/x"))`.
    pub fn request(mut self, build: impl FnOnce(Request) -> Request) -> Scenario {
        self.request = build(self.request);
        self
    }

    /// Also deliver these upstream response headers when the request is let through.
    pub fn upstream_response(mut self, headers: &[(&str, &str)]) -> Scenario {
        let mut map = Headers::default();
        for (k, v) in headers {
            map.add(k, v.as_bytes());
        }
        self.response = Some(map);
        self
    }

    fn host(&self) -> Host {
        let host = Host::new();
        if let Some(now) = self.now {
            host.set_now(now);
        }
        for (k, v) in &self.shared {
            // A fresh host has no entries, so an unconditional write cannot fail.
            let _ = host.set_shared_data(k, v, 0);
        }
        host
    }

    /// Starts and configures the VM only; `Err(ConfigureRejected { logs })` when the filter
    /// rejects the configuration.
    pub fn configure(&self) -> Result<Vm, HostError> {
        Vm::filter(&self.host(), self.options.clone())
    }

    /// Runs the scenario; any [`HostError`] (trap, rejected config) is returned.
    pub fn try_run(self) -> Result<ScenarioResult, HostError> {
        let mut vm = self.configure()?;
        for step in &self.setup {
            step(&mut vm)?;
        }
        let exchange = vm.send(&self.request)?;
        let id = exchange.id;
        if let (Some(headers), Outcome::Continued) = (&self.response, &exchange.outcome) {
            vm.response_headers(id, headers.clone(), true)?;
        }
        // A finished request is closed (done, log, delete) like Envoy does; a paused one is
        // left open so the test can deliver what it waits for.
        let closed = match exchange.outcome {
            Outcome::Paused => None,
            _ => Some(vm.close(id)?),
        };
        Ok(ScenarioResult { host: vm.host().clone(), vm, id, outcome: exchange.outcome, closed })
    }

    /// Runs the scenario and panics with the module's logs on any [`HostError`] — a trap is
    /// always a test failure ("no trap").
    pub fn run(self) -> ScenarioResult {
        match self.try_run() {
            Ok(r) => r,
            Err(e) => panic!("scenario failed: {e}"),
        }
    }
}

/// What the filter did with the scenario's request.
#[derive(Debug)]
pub struct ScenarioResult {
    /// The VM, still usable for follow-up requests.
    pub vm: Vm,
    /// The host the VM runs in.
    pub host: Host,
    /// The stream's context id.
    pub id: u32,
    /// The filter's decision.
    pub outcome: Outcome,
    closed: Option<Stream>,
}

impl ScenarioResult {
    /// Final (or, when paused, current) stream state.
    pub fn stream(&self) -> &Stream {
        match &self.closed {
            Some(s) => s,
            None => self.vm.stream(self.id).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// Status of the filter's local response; `None` when it did not answer.
    pub fn status(&self) -> Option<u32> {
        self.local_response().map(|r| r.status)
    }

    /// The filter's local response, if any.
    pub fn local_response(&self) -> Option<&LocalResponse> {
        self.stream().local_response.as_ref()
    }

    /// The local response; panics (with logs) when the filter let the request through.
    pub fn denial(&self) -> &LocalResponse {
        match self.local_response() {
            Some(r) => r,
            None => panic!("expected a local response, got {:?}; logs:\n{}", self.outcome, self.log_text()),
        }
    }

    /// Request headers as the upstream would receive them (after the filter ran).
    pub fn upstream_headers(&self) -> &Headers {
        &self.stream().request_headers
    }

    /// Upstream headers, asserting the request was let through.
    pub fn allowed(&self) -> &Headers {
        assert!(
            self.continued(),
            "expected the request to continue, got {}; logs:\n{}",
            describe(&self.outcome),
            self.log_text()
        );
        self.upstream_headers()
    }

    /// Whether the request was let through.
    pub fn continued(&self) -> bool {
        self.outcome == Outcome::Continued && self.stream().request_flow == Flow::Continued
    }

    /// Whether the request is held by the filter.
    pub fn paused(&self) -> bool {
        self.outcome == Outcome::Paused
    }

    /// The module's log lines.
    pub fn logs(&self) -> &[LogLine] {
        self.vm.logs()
    }

    /// Log messages joined by newlines.
    pub fn log_text(&self) -> String {
        self.logs().iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n")
    }

    /// A metric's value by name (`None` when the module never defined it), after a tick:
    /// the filter sums request counters and hands them to Envoy on its tick, as Envoy's
    /// stats show them within a second.
    pub fn metric(&mut self, name: &str) -> Option<i64> {
        if let Err(e) = self.vm.tick() {
            panic!("tick before reading metrics: {e}");
        }
        self.host.metric(name).map(|m| m.value)
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Responded(r) => format!("local response {} {}", r.status, r.body_text()),
        other => format!("{other:?}"),
    }
}
