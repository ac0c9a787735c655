//! Answering the module's HTTP callouts: from a script, or by forwarding them to a real
//! server (e.g. a control plane on a loopback port) over plain HTTP/1.1.
//!
//! Envoy resolves the call's upstream *cluster* name to addresses; [`RealUpstream`] does the
//! same with a name → `host:port` map the test provides.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::error::HostError;
use crate::state::{Headers, HttpCall, HttpResponse};
use crate::vm::Vm;

impl Vm {
    /// Offers every pending call to `responder`; a `Some` answer is delivered at once, a
    /// `None` leaves the call pending. Returns how many calls were answered.
    pub fn answer_http_calls(
        &mut self,
        mut responder: impl FnMut(&HttpCall) -> Option<HttpResponse>,
    ) -> Result<usize, HostError> {
        let pending: Vec<HttpCall> = self.pending_http_calls().to_vec();
        let mut answered = 0;
        for call in pending {
            if let Some(response) = responder(&call) {
                self.respond_http_call(call.token, response)?;
                answered += 1;
            }
        }
        Ok(answered)
    }
}

/// Forwards calls to real servers by cluster name.
#[derive(Clone, Debug, Default)]
pub struct RealUpstream {
    clusters: HashMap<String, String>,
    timeout: Option<Duration>,
}

impl RealUpstream {
    /// No clusters yet.
    pub fn new() -> RealUpstream {
        RealUpstream::default()
    }

    /// Routes calls for `cluster` to `address` (`host:port`).
    pub fn cluster(mut self, cluster: &str, address: &str) -> RealUpstream {
        self.clusters.insert(cluster.to_string(), address.to_string());
        self
    }

    /// Overrides the per-call timeout (default: the one the module asked for).
    pub fn timeout(mut self, timeout: Duration) -> RealUpstream {
        self.timeout = Some(timeout);
        self
    }

    /// Performs `call` against its cluster. An unknown cluster, a connection failure or a
    /// timeout is answered like Envoy answers them: a response with no headers (`None` is
    /// never returned, so this fits [`Vm::answer_http_calls`] directly).
    pub fn respond(&self, call: &HttpCall) -> Option<HttpResponse> {
        let Some(address) = self.clusters.get(&call.upstream) else {
            return Some(HttpResponse::default());
        };
        let timeout = self.timeout.unwrap_or(Duration::from_millis(call.timeout_ms.max(1).into()));
        Some(fetch(address, call, timeout).unwrap_or_default())
    }
}

fn fetch(address: &str, call: &HttpCall, timeout: Duration) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let method = call.headers.get(":method").unwrap_or_else(|| "GET".into());
    let path = call.headers.get(":path").unwrap_or_else(|| "/".into());
    let host = call.headers.get(":authority").unwrap_or_else(|| address.to_string());
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in &call.headers.0 {
        if !k.starts_with(':') && k != "host" && k != "connection" && k != "content-length" {
            head.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
        }
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", call.body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&call.body)?;
    read_response(BufReader::new(stream))
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Parses an HTTP/1.1 response: status line, headers, then a body framed by
/// `content-length`, `transfer-encoding: chunked`, or the end of the connection.
fn read_response(mut r: impl BufRead) -> std::io::Result<HttpResponse> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).ok_or_else(|| invalid("no status line"))?.to_string();
    let mut headers = Headers::default();
    headers.add(":status", status.as_bytes());
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| invalid("bad header line"))?;
        headers.add(k.trim(), v.trim().as_bytes());
    }
    let mut body = Vec::new();
    if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| invalid("bad chunk size"))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(HttpResponse { headers, body, trailers: Headers::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn parses_chunked_and_sized_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = read_response(&raw[..]).unwrap();
        assert_eq!((r.headers.get(":status").as_deref(), &r.body[..]), (Some("200"), &b"abcde"[..]));
        let raw = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno";
        assert_eq!(read_response(&raw[..]).unwrap().body, b"no");
    }

    #[test]
    fn forwards_a_call_to_a_loopback_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npong").unwrap();
            request
        });
        let mut headers = Headers::default();
        for (k, v) in [(":method", "GET"), (":path", "/api/v1/sync?since=3"), (":authority", "cp")] {
            headers.add(k, v.as_bytes());
        }
        let call = HttpCall {
            token: 1,
            context_id: 1,
            upstream: "cp".into(),
            headers,
            body: Vec::new(),
            trailers: Headers::default(),
            timeout_ms: 2000,
        };
        let up = RealUpstream::new().cluster("cp", &address);
        let response = up.respond(&call).unwrap();
        assert_eq!(response.body, b"pong");
        assert!(server.join().unwrap().starts_with("GET /api/v1/sync?since=3 HTTP/1.1\r\n"));
        let unknown = RealUpstream::new().respond(&call).unwrap();
        assert!(unknown.headers.is_empty());
    }
}
