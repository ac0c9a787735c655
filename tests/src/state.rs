//! Per-VM host state, kept in the wasmtime `Store` data: the HTTP streams (one per HTTP
//! context), buffers, captured logs and output, pending HTTP calls.

use std::collections::HashMap;
use std::fmt;

use wasmtime::{Memory, TypedFunc};

use crate::abi::LogLevel;
use crate::shared::Host;

/// An ordered header map with Envoy's rules: names are stored lower-case and compared
/// case-insensitively, a name may repeat, values are bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))).finish()
    }
}

impl Headers {
    /// First value of `name` as text (lossy), if present.
    pub fn get(&self, name: &str) -> Option<String> {
        self.get_bytes(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// First value of `name`, if present.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| &v[..])
    }

    /// Every value of `name`, as text (lossy).
    pub fn get_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.0.iter().filter(|(k, _)| *k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Appends a value (keeps existing ones).
    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.0.push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Replaces every value of `name` by one value, at the first occurrence's position.
    pub fn replace(&mut self, name: &str, value: &[u8]) {
        let lower = name.to_ascii_lowercase();
        match self.0.iter().position(|(k, _)| *k == lower) {
            Some(i) => {
                self.0[i].1 = value.to_vec();
                let mut seen = 0;
                self.0.retain(|(k, _)| {
                    let keep = *k != lower || seen == 0;
                    if *k == lower {
                        seen += 1;
                    }
                    keep
                });
            }
            None => self.add(name, value),
        }
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        let lower = name.to_ascii_lowercase();
        self.0.retain(|(k, _)| *k != lower);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where one direction of a stream stands after the module's last say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// The host has not delivered this direction yet.
    NotStarted,
    /// The module let the data through.
    Continued,
    /// The module returned `Pause` and has not resumed yet.
    Paused,
    /// The module reset the stream (`proxy_close_stream`).
    Closed,
}

/// A response the module sent with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// Response code details (Envoy's `response_code_details`).
    pub details: String,
    /// Headers as sent.
    pub headers: Headers,
    /// Body bytes.
    pub body: Vec<u8>,
    /// gRPC status, -1 for a plain HTTP response.
    pub grpc_status: i32,
}

impl LocalResponse {
    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("local response body is not JSON ({e}): {}", self.body_text()))
    }

    /// First value of a response header, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name)
    }
}

/// One HTTP context's data as the host holds it.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Request headers, including pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`).
    pub request_headers: Headers,
    /// Request body received so far.
    pub request_body: Vec<u8>,
    /// Request trailers.
    pub request_trailers: Headers,
    /// Response headers (from the upstream, as modified by the module).
    pub response_headers: Headers,
    /// Response body.
    pub response_body: Vec<u8>,
    /// Response trailers.
    pub response_trailers: Headers,
    /// Request-scoped properties (e.g. `source.address`), key path joined with `.`.
    pub properties: HashMap<String, Vec<u8>>,
    /// Set when the module answered locally.
    pub local_response: Option<LocalResponse>,
    /// Request direction state.
    pub request_flow: Flow,
    /// Response direction state.
    pub response_flow: Flow,
}

impl Stream {
    pub(crate) fn new(headers: Headers, properties: HashMap<String, Vec<u8>>) -> Stream {
        Stream {
            request_headers: headers,
            request_body: Vec::new(),
            request_trailers: Headers::default(),
            response_headers: Headers::default(),
            response_body: Vec::new(),
            response_trailers: Headers::default(),
            properties,
            local_response: None,
            request_flow: Flow::NotStarted,
            response_flow: Flow::NotStarted,
        }
    }
}

/// One `proxy_log` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Level the module logged at.
    pub level: LogLevel,
    /// Context that was current when it logged.
    pub context_id: u32,
    /// The message.
    pub message: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?} ctx={}] {}", self.level, self.context_id, self.message)
    }
}

/// An HTTP call the module dispatched with `proxy_http_call`.
#[derive(Clone, Debug)]
pub struct HttpCall {
    /// Token the host returned; used to deliver the response.
    pub token: u32,
    /// Context that dispatched the call (gets `proxy_on_http_call_response`).
    pub context_id: u32,
    /// Upstream cluster name.
    pub upstream: String,
    /// Request headers, including `:method`, `:path`, `:authority`.
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Headers,
    /// Timeout the module asked for.
    pub timeout_ms: u32,
}

/// The response to an [`HttpCall`], as a test scripts it.
#[derive(Clone, Debug, Default)]
pub struct HttpResponse {
    /// Headers; `:status` is added from `status` when missing.
    pub headers: Headers,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: Headers,
}

impl HttpResponse {
    /// A response with a status and a body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> HttpResponse {
        let mut headers = Headers::default();
        headers.add(":status", status.to_string().as_bytes());
        HttpResponse { headers, body: body.into(), trailers: Headers::default() }
    }

    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
        let mut r = HttpResponse::new(status, value.to_string());
        r.headers.add("content-type", b"application/json");
        r
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers.add(name, value.as_bytes());
        self
    }
}

/// Exports the host calls need to call back into the module.
#[derive(Clone)]
pub(crate) struct Exports {
    pub(crate) memory: Memory,
    pub(crate) alloc: TypedFunc<u32, u32>,
}

/// Everything the store of one VM carries.
pub struct VmState {
    pub(crate) host: Host,
    /// Host-assigned number of this VM (queue notifications are addressed by it).
    pub(crate) vm_number: u64,
    pub(crate) exports: Option<Exports>,
    pub(crate) root_context_id: u32,
    /// Context the module currently acts for (changed by `proxy_set_effective_context`).
    pub(crate) effective_context: u32,
    pub(crate) streams: HashMap<u32, Stream>,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) vm_config: Vec<u8>,
    /// VM-scoped properties (`plugin_name`, `plugin_root_id`, `plugin_vm_id`, …).
    pub(crate) properties: HashMap<String, Vec<u8>>,
    pub(crate) vm_id: String,
    pub(crate) log_level: LogLevel,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) tick_period_ms: u32,
    pub(crate) next_token: u32,
    pub(crate) pending_calls: Vec<HttpCall>,
    /// HTTP call response being delivered (only during `proxy_on_http_call_response`).
    pub(crate) call_response: Option<HttpResponse>,
    /// Set by a trapping stub so the error names the unimplemented call.
    pub(crate) unimplemented: Option<String>,
    /// Set by `proc_exit` so a clean exit is told apart from a crash.
    pub(crate) exit_code: Option<u32>,
    pub(crate) rng: u64,
}

impl VmState {
    pub(crate) fn new(host: Host, vm_number: u64) -> VmState {
        VmState {
            host,
            vm_number,
            exports: None,
            root_context_id: 0,
            effective_context: 0,
            streams: HashMap::new(),
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            properties: HashMap::new(),
            vm_id: String::new(),
            log_level: LogLevel::Trace,
            logs: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            tick_period_ms: 0,
            next_token: 1,
            pending_calls: Vec::new(),
            call_response: None,
            unimplemented: None,
            exit_code: None,
            rng: 0x9e37_79b9_7f4a_7c15 ^ vm_number,
        }
    }

    /// The stream of the effective context, if that context is an HTTP context.
    pub(crate) fn stream_mut(&mut self) -> Option<&mut Stream> {
        self.streams.get_mut(&self.effective_context)
    }

    /// Same as [`Self::stream_mut`], read-only.
    pub(crate) fn stream(&self) -> Option<&Stream> {
        self.streams.get(&self.effective_context)
    }
}
