//! The HTTP context: one request's trip through the core.
//!
//! `on_http_request_headers` reads the headers once (one buffer, parsed in
//! place: see [`crate::host_map`]), asks the engine, and either edits the
//! request and continues, or sends the rendered denial. Host failures,
//! a header map that does not parse among them, follow the configured
//! failure mode, except a refused header edit, which always answers 503
//! (the request would go on half edited).

use crate::host_map;
use crate::metrics::Metrics;
use crate::store::SharedData;
use meshgate_core::engine::{Allow, Decision, Request};
use meshgate_core::header_map::{self, HeaderPair, Value};
use meshgate_core::{Denial, Engine, LocalResponse, Reason};
use meshgate_wire::config::{FailureMode, ProblemDetails};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// State of one HTTP stream.
pub struct Http {
    engine: Option<Rc<Engine>>,
    metrics: Rc<Metrics>,
    /// Set when we answered locally: response hooks then have nothing to add.
    answered: bool,
    /// Headers to add to the upstream's response (rate-limit fields).
    response_headers: Vec<(String, String)>,
    /// The synced state is stale and the policy says fail closed.
    stale: bool,
    /// Credits reserved for this request, settled on the response.
    reservation: Option<meshgate_core::credits::Reservation>,
}

fn pseudo<'a>(headers: &[HeaderPair<'a>], name: &str) -> Option<&'a str> {
    headers.iter().find(|&&(n, _)| n == name).and_then(|&(_, v)| std::str::from_utf8(v).ok())
}

impl Http {
    /// A context over the VM's engine (`None` when configuration failed).
    pub fn new(engine: Option<Rc<Engine>>, metrics: Rc<Metrics>, stale: bool) -> Self {
        Self { engine, metrics, answered: false, response_headers: Vec::new(), stale, reservation: None }
    }

    /// Refuses with 503: the synced state is too old to trust, or an edit of
    /// the request's headers failed part-way (whatever the failure mode:
    /// forwarding would pass on a spoofed identity header not yet removed, or
    /// half of the real identity).
    fn refuse_unavailable(&mut self, engine: &Engine) -> Action {
        self.metrics.denied(Reason::Unavailable);
        let response = Denial::new(Reason::Unavailable).render(&engine.config.realm, engine.config.problem_details);
        self.send(&response, &engine.config.security_headers)
    }

    fn send(&mut self, response: &LocalResponse, extra: &[(String, String)]) -> Action {
        let headers: Vec<(&str, &str)> =
            response.headers.iter().chain(extra).map(|(n, v)| (n.as_str(), v.as_str())).collect();
        self.answered = true;
        if hostcalls::send_http_response(u32::from(response.status), headers, Some(response.body.as_bytes())).is_err() {
            self.metrics.host_failure();
        }
        Action::Pause
    }

    /// What to do when the host failed us or no engine exists. Failing open
    /// forwards the request without identity: every header the filter owns
    /// is removed by name first (the map may not have been read, so only
    /// the configured spellings), and if even that fails, it answers 503.
    fn fail(&mut self) -> Action {
        self.metrics.host_failure();
        let mut mode = self.engine.as_ref().map_or(FailureMode::Closed, |e| e.config.failure_mode);
        if mode == FailureMode::Open
            && let Some(e) = &self.engine
            && !e.config.headers.owned().iter().all(|name| host_map::remove(MapType::HttpRequestHeaders, name).is_ok())
        {
            mode = FailureMode::Closed;
        }
        let (realm, details, extra) = match &self.engine {
            Some(e) => (e.config.realm.clone(), e.config.problem_details, e.config.security_headers.clone()),
            None => ("meshgate".to_owned(), ProblemDetails::Full, Vec::new()),
        };
        match mode {
            FailureMode::Open => Action::Continue,
            FailureMode::Closed => {
                self.metrics.denied(Reason::Unavailable);
                let response = Denial::new(Reason::Unavailable).render(&realm, details);
                self.send(&response, &extra)
            }
        }
    }

    /// Edits the request headers: removals, identity headers, the
    /// normalised path. `Err` when the host refused an edit.
    ///
    /// Envoy's whole-map write (`setHeaderMapPairs`) removes every header
    /// and adds each pair back, so it costs in proportion to the request's
    /// headers, ~0.5 µs each in Envoy 1.40, where one header written alone
    /// costs ~0.9 µs (bench/README, "Host calls, priced"). Edits go one call
    /// each unless the map is small next to them: four identity headers on
    /// a browser's fifteen-header request cost less than half as much one by
    /// one.
    fn apply(allow: &Allow<'_>, headers: &[HeaderPair<'_>]) -> Result<(), ()> {
        if allow.identity.is_none() && allow.remove.is_empty() && allow.rewrite_path.is_none() {
            return Ok(());
        }
        let owned = allow.identity_headers();
        let set = || owned.iter().filter_map(|&(name, value)| Some((name, value?)));
        let set_count = set().count();
        // Which headers we set the client sent too (one scan each): edited one
        // by one, those are removed first.
        let sent =
            owned.map(|(name, value)| value.is_some() && headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)));
        let resets = sent.iter().filter(|&&s| s).count();
        let edits = allow.remove.len() + set_count + resets + usize::from(allow.rewrite_path.is_some());
        let written = headers.len().saturating_sub(allow.remove.len()) + set_count;
        let request = MapType::HttpRequestHeaders;
        if written * WHOLE_MAP_PER_HEADER < edits * ONE_EDIT {
            let dropped = |name: &str| {
                allow.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
                    || set().any(|(s, _)| s.eq_ignore_ascii_case(name))
            };
            let mut pairs: Vec<(&str, Value<'_>)> = Vec::with_capacity(written);
            for &(name, value) in headers {
                match &allow.rewrite_path {
                    Some(path) if name == ":path" => pairs.push((":path", Value::Bytes(path.as_bytes()))),
                    _ if dropped(name) => {}
                    _ => pairs.push((name, Value::Bytes(value))),
                }
            }
            pairs.extend(set());
            let map = header_map::serialize(&pairs).ok_or(())?;
            return host_map::set(request, &map).map_err(|_| ());
        }
        for name in &allow.remove {
            host_map::remove(request, name).map_err(|_| ())?;
        }
        let mut joined = Vec::new();
        for (&(name, value), sent) in owned.iter().zip(sent) {
            let Some(value) = value else { continue };
            // A client's copies of a header we set go first: `replace`
            // alone might keep all but one of several.
            if sent {
                host_map::remove(request, name).map_err(|_| ())?;
            }
            let bytes = match value {
                Value::Bytes(bytes) => bytes,
                Value::List(_) => {
                    joined.clear();
                    value.write_to(&mut joined);
                    &joined
                }
            };
            host_map::replace(request, name, bytes).map_err(|_| ())?;
        }
        if let Some(path) = &allow.rewrite_path {
            host_map::replace(request, ":path", path.as_bytes()).map_err(|_| ())?;
        }
        Ok(())
    }
}

/// Relative host cost of one single-header edit (~0.9 µs) and of each
/// header a whole-map write carries (~0.5 µs), in tenths of a microsecond.
const ONE_EDIT: usize = 9;
const WHOLE_MAP_PER_HEADER: usize = 5;

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(engine) = self.engine.clone() else { return self.fail() };
        if self.stale {
            return self.refuse_unavailable(&engine);
        }
        let Ok(buffer) = host_map::get(MapType::HttpRequestHeaders) else { return self.fail() };
        let Ok(headers) = header_map::parse(&buffer) else { return self.fail() };
        let Ok(now) = hostcalls::get_current_time() else { return self.fail() };
        let now_us = now.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let peer = if engine.needs_peer() {
            hostcalls::get_property(vec!["source", "address"]).ok().flatten().and_then(|b| String::from_utf8(b).ok())
        } else {
            None
        };
        let request = Request {
            method: pseudo(&headers, ":method").unwrap_or(""),
            path: pseudo(&headers, ":path").unwrap_or("").as_bytes(),
            authority: pseudo(&headers, ":authority").or_else(|| pseudo(&headers, "host")).unwrap_or(""),
            headers: &headers,
            peer: peer.as_deref(),
        };
        match engine.decide(&request, now_us, &SharedData) {
            Decision::Allow(allow) => {
                // Headers first: a failed edit answers 503 before any credit is reserved.
                if Self::apply(&allow, &headers).is_err() {
                    self.metrics.host_failure();
                    return self.refuse_unavailable(&engine);
                }
                match crate::credits::admit(&engine, &allow) {
                    crate::credits::Admission::Pass(reservation) => self.reservation = reservation,
                    crate::credits::Admission::Refuse(reason, response) => {
                        self.metrics.denied(reason);
                        return self.send(&response, &engine.config.security_headers);
                    }
                }
                self.metrics.allowed(allow.identity.as_ref().map(|i| i.method));
                self.metrics.limits(&allow.limits.events);
                self.response_headers = allow.response_headers;
                Action::Continue
            }
            Decision::Deny(denial) => {
                self.metrics.denied(denial.reason);
                self.metrics.limits(&denial.limit_events);
                let response = denial.render(&engine.config.realm, engine.config.problem_details);
                self.send(&response, &engine.config.security_headers)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.answered {
            return Action::Continue;
        }
        if let Some(engine) = &self.engine {
            if let Some(credits) = &engine.config.credits
                && !crate::credits::on_response(credits, self.reservation.as_ref())
            {
                self.metrics.host_failure();
            }
            for (name, value) in engine.config.security_headers.iter().chain(&self.response_headers) {
                if host_map::replace(MapType::HttpResponseHeaders, name, value.as_bytes()).is_err() {
                    self.metrics.host_failure();
                }
            }
        }
        Action::Continue
    }
}
