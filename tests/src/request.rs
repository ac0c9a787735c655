//! What a test sends through a VM: a request builder, and the outcome of one exchange.

use std::collections::HashMap;

use crate::state::{Headers, LocalResponse, Stream};

/// Default downstream peer for requests.
pub const DEFAULT_SOURCE: &str = "10.0.0.7:45678";

/// An incoming HTTP request, as Envoy would hand it to the filter.
#[derive(Clone, Debug)]
pub struct Request {
    pseudo: Vec<(String, Vec<u8>)>,
    headers: Headers,
    body: Option<Vec<u8>>,
    properties: HashMap<String, Vec<u8>>,
}

impl Default for Request {
    fn default() -> Self {
        Request::new()
    }
}

impl Request {
    /// `GET /` for host `api.example.com` over https from [`DEFAULT_SOURCE`].
    pub fn new() -> Request {
        let pseudo = [(":authority", "api.example.com"), (":path", "/"), (":method", "GET"), (":scheme", "https")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        Request { pseudo, headers: Headers::default(), body: None, properties: HashMap::new() }.source(DEFAULT_SOURCE)
    }

    /// `GET path`.
    pub fn get(path: &str) -> Request {
        Request::new().path(path)
    }

    /// `method path`.
    pub fn with(method: &str, path: &str) -> Request {
        Request::new().method(method).path(path)
    }

    fn set_pseudo(mut self, name: &str, value: &[u8]) -> Request {
        match self.pseudo.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value.to_vec(),
            None => self.pseudo.push((name.to_string(), value.to_vec())),
        }
        self
    }

    /// Sets `:method`.
    pub fn method(self, method: &str) -> Request {
        self.set_pseudo(":method", method.as_bytes())
    }

    /// Sets `:path` (sent verbatim, no normalization).
    pub fn path(self, path: &str) -> Request {
        self.set_pseudo(":path", path.as_bytes())
    }

    /// Sets `:path` to raw bytes (for invalid UTF-8 tests).
    pub fn path_bytes(self, path: &[u8]) -> Request {
        self.set_pseudo(":path", path)
    }

    /// Sets `:authority`.
    pub fn host(self, host: &str) -> Request {
        self.set_pseudo(":authority", host.as_bytes())
    }

    /// Drops a pseudo-header (e.g. a request without `:path`).
    pub fn without(mut self, pseudo: &str) -> Request {
        self.pseudo.retain(|(k, _)| k != pseudo);
        self
    }

    /// Adds a header (repeatable).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.add(name, value.as_bytes());
        self
    }

    /// Adds a header with a raw byte value.
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Request {
        self.headers.add(name, value);
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Request body; the filter sees it through `proxy_on_request_body`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// Downstream peer `ip:port` (the `source.address` / `source.port` properties).
    pub fn source(mut self, address: &str) -> Request {
        self.properties.insert("source.address".into(), address.as_bytes().to_vec());
        let port = address.rsplit_once(':').and_then(|(_, p)| p.parse::<i64>().ok());
        match port {
            Some(p) => self.properties.insert("source.port".into(), p.to_le_bytes().to_vec()),
            None => self.properties.remove("source.port"),
        };
        self
    }

    /// Any other request property (path segments joined with `.`), raw bytes.
    pub fn property(mut self, path: &str, value: &[u8]) -> Request {
        self.properties.insert(path.to_string(), value.to_vec());
        self
    }

    /// The header map the filter receives: pseudo-headers first.
    pub fn header_map(&self) -> Headers {
        let mut all = Headers(self.pseudo.clone());
        all.0.extend(self.headers.0.iter().cloned());
        all
    }

    pub(crate) fn request_body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    pub(crate) fn properties(&self) -> HashMap<String, Vec<u8>> {
        self.properties.clone()
    }
}

/// How one request ended, as far as the filter decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent on upstream (possibly after a pause and a resume).
    Continued,
    /// Held by the filter (waiting for an HTTP call, a body, …).
    Paused,
    /// Answered by the filter itself.
    Responded(LocalResponse),
    /// Reset by the filter.
    Reset,
}

impl Outcome {
    /// Derives the outcome from a stream's state.
    pub fn of(stream: &Stream) -> Outcome {
        use crate::state::Flow;
        if let Some(r) = &stream.local_response {
            return Outcome::Responded(r.clone());
        }
        match stream.request_flow {
            Flow::Closed => Outcome::Reset,
            Flow::Continued => Outcome::Continued,
            Flow::Paused | Flow::NotStarted => Outcome::Paused,
        }
    }
}
