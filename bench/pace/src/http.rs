//! Just enough HTTP/1.1 for a benchmark: render a GET, read an answer's head.

use crate::Plan;
use std::io::{self, BufRead};

/// Longest answer head read (status line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest answer body read (the benchmark's answer a few bytes): a larger
/// `content-length` is an error, not an allocation.
pub const MAX_BODY: usize = 1 << 20;

/// What the generator needs from an answer's head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Body bytes that follow (`content-length`; 0 without one).
    pub content_length: usize,
    /// The server closes the connection after this answer.
    pub close: bool,
}

/// Writes the GET for `plan` into `out` (cleared first), with
/// `authorization: Bearer <token>` when a token is given.
pub fn render(out: &mut Vec<u8>, plan: &Plan, token: Option<&str>) {
    out.clear();
    out.extend_from_slice(format!("GET {} HTTP/1.1\r\nhost: {}\r\n", plan.path, plan.host).as_bytes());
    for header in &plan.headers {
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(token) = token {
        out.extend_from_slice(format!("authorization: Bearer {token}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads a status line and headers up to the blank line. Chunked bodies are
/// not supported (the benchmark's routes answer with a length).
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
    let mut line = String::new();
    let mut read = 0;
    let mut next = |line: &mut String| -> io::Result<()> {
        line.clear();
        let n = reader.read_line(line)?;
        read += n;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if read > MAX_HEAD {
            return Err(invalid("answer head too long"));
        }
        Ok(())
    };
    next(&mut line)?;
    let mut parts = line.split_ascii_whitespace();
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| invalid("no status"))?;
    let mut head = Head { status, content_length: 0, close: version == "HTTP/1.0" };
    loop {
        next(&mut line)?;
        let text = line.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = text.split_once(':') else { return Err(invalid("header without a colon")) };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value
                .parse()
                .ok()
                .filter(|&n| n <= MAX_BODY)
                .ok_or_else(|| invalid("bad or too large content-length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked answers are not supported"));
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let read = |text: &str| read_head(&mut text.as_bytes());
        assert_eq!(
            read("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx: y\r\n\r\nok\n").ok(),
            Some(Head { status: 200, content_length: 3, close: false })
        );
        assert_eq!(
            read("HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n").ok(),
            Some(Head { status: 401, content_length: 0, close: true })
        );
        assert_eq!(read("HTTP/1.0 200 OK\r\n\r\n").ok().map(|h| h.close), Some(true));
        assert!(read("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(read("HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(read("HTTP/1.1 200 OK\r\ncontent-length: 999999999999\r\n\r\n").is_err());
        assert!(read("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n").is_err());
        assert!(read("HTTP/1.1 200 OK\r\n").is_err(), "cut before the blank line");
        assert!(read("garbage").is_err());
        let long = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(read(&long).is_err());
    }
}
