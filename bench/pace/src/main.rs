//! `meshgate-pace`: latency at a fixed request rate (open loop).
//!
//! ```text
//! meshgate-pace --rate 4000 --duration 5 --connections 8 \
//!     [-H 'authorization: Bearer …']… [--tokens FILE] http://127.0.0.1:PORT/path
//! ```
//!
//! Request `n` (from 0) is due at `start + n / rate` and goes out on connection
//! `n % connections` (HTTP/1.1 keep-alive, one thread per connection). Its
//! latency runs from when it was due to the last byte of the answer, so a
//! request held back by a slow answer before it on the same connection, or by
//! the generator itself, counts that wait: the numbers are what a client
//! sending at this rate would see. The thread sleeps until a request is due
//! with the timer slack set to 1 ns where `/proc` allows it; how late requests
//! actually went out is printed (`lag_*`) so the generator's own error is in
//! view. Prints one JSON object: counts, percentiles of latency in µs, the rate
//! achieved.
//!
//! `--tokens FILE` sends `authorization: Bearer <line>` from the file, a
//! different line each request (for never-seen tokens).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod http;
mod stats;

/// What the command line asked for.
#[derive(Debug)]
struct Plan {
    rate: f64,
    duration: Duration,
    connections: usize,
    host: String,
    path: String,
    headers: Vec<String>,
    tokens: Option<Arc<Vec<String>>>,
}

/// What one connection's thread saw.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u32>,
    lags_us: Vec<u32>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
}

fn usage() -> String {
    "usage: meshgate-pace --rate R --duration SECS [--connections N] [-H 'name: value']… \
     [--tokens FILE] http://HOST:PORT/PATH"
        .to_owned()
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Plan, String> {
    let (mut rate, mut duration, mut connections) = (None, None, 8usize);
    let (mut headers, mut tokens, mut url) = (Vec::new(), None, None);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} wants a value\n{}", usage()));
        match arg.as_str() {
            "--rate" => rate = Some(value("--rate")?.parse::<f64>().map_err(|e| format!("--rate: {e}"))?),
            "--duration" => {
                duration = Some(value("--duration")?.parse::<f64>().map_err(|e| format!("--duration: {e}"))?);
            }
            "--connections" => {
                connections = value("--connections")?.parse().map_err(|e| format!("--connections: {e}"))?;
            }
            "-H" => headers.push(value("-H")?),
            "--tokens" => {
                let path = value("--tokens")?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("--tokens {path}: {e}"))?;
                let lines: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
                if lines.is_empty() {
                    return Err(format!("--tokens {path}: no tokens"));
                }
                tokens = Some(Arc::new(lines));
            }
            "-h" | "--help" => return Err(usage()),
            _ if url.is_none() && !arg.starts_with('-') => url = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}\n{}", usage())),
        }
    }
    let rate = rate.filter(|r| r.is_finite() && *r > 0.0).ok_or_else(|| format!("--rate R > 0\n{}", usage()))?;
    let secs = duration.filter(|d| d.is_finite() && *d > 0.0).ok_or_else(|| format!("--duration > 0\n{}", usage()))?;
    if connections == 0 {
        return Err("--connections must be at least 1".to_owned());
    }
    let url = url.ok_or_else(usage)?;
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let path = if path.is_empty() { "/" } else { path };
    Ok(Plan {
        rate,
        duration: Duration::from_secs_f64(secs),
        connections,
        host: host.to_owned(),
        path: path.to_owned(),
        headers,
        tokens,
    })
}

/// New threads inherit the creating thread's timer slack: at the default
/// 50 µs a sleep may overrun by that much, which would count as latency.
fn tighten_timer_slack() -> bool {
    std::fs::write("/proc/thread-self/timerslack_ns", "1").is_ok()
}

/// One connection: every `connections`-th request from `first`, until `end`.
fn drive(plan: &Plan, first: u64, start: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let interval = 1.0 / plan.rate;
    let step = plan.connections as u64;
    // Connected before the first request is due, so no latency counts a handshake.
    let mut conn = connect(plan).ok();
    let mut request = Vec::with_capacity(1024);
    let mut n = first;
    loop {
        let due = start + Duration::from_secs_f64(n as f64 * interval);
        if due >= end {
            return tally;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let sent = Instant::now();
        tally.lags_us.push(stats::micros(sent.saturating_duration_since(due)));
        let token = plan.tokens.as_ref().map(|t| t[(n as usize) % t.len()].as_str());
        http::render(&mut request, plan, token);
        match exchange(&mut conn, plan, &request) {
            Ok(status) => {
                tally.latencies_us.push(stats::micros(Instant::now().saturating_duration_since(due)));
                if (200..300).contains(&status) {
                    tally.ok += 1;
                } else {
                    tally.non_2xx += 1;
                }
            }
            Err(_) => {
                tally.errors += 1;
                conn = None;
            }
        }
        n += step;
    }
}

fn connect(plan: &Plan) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(&plan.host)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(BufReader::new(stream))
}

/// Sends `request` on the connection (opening one if needed) and reads the
/// answer; returns its status. A connection the server will close is dropped.
fn exchange(conn: &mut Option<BufReader<TcpStream>>, plan: &Plan, request: &[u8]) -> std::io::Result<u16> {
    let reader = match conn {
        Some(reader) => reader,
        None => conn.insert(connect(plan)?),
    };
    reader.get_mut().write_all(request)?;
    let head = http::read_head(reader)?;
    let mut body = vec![0u8; head.content_length];
    reader.read_exact(&mut body)?;
    if head.close {
        *conn = None;
    }
    Ok(head.status)
}

fn main() -> ExitCode {
    let plan = match parse_args(std::env::args().skip(1)) {
        Ok(plan) => Arc::new(plan),
        Err(e) => {
            eprintln!("meshgate-pace: {e}");
            return ExitCode::from(2);
        }
    };
    let slack = tighten_timer_slack();
    // A short lead so every thread is up before the first request is due.
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + plan.duration;
    let threads: Vec<_> = (0..plan.connections as u64)
        .map(|i| {
            let plan = Arc::clone(&plan);
            std::thread::spawn(move || drive(&plan, i, start, end))
        })
        .collect();
    let mut all = Tally::default();
    for t in threads {
        let Ok(tally) = t.join() else {
            eprintln!("meshgate-pace: a connection thread failed");
            return ExitCode::FAILURE;
        };
        all.latencies_us.extend(tally.latencies_us);
        all.lags_us.extend(tally.lags_us);
        all.ok += tally.ok;
        all.non_2xx += tally.non_2xx;
        all.errors += tally.errors;
    }
    let elapsed = Instant::now().saturating_duration_since(start).as_secs_f64();
    let counts = stats::Counts { ok: all.ok, non_2xx: all.non_2xx, errors: all.errors };
    println!("{}", stats::summary(&mut all.latencies_us, &mut all.lags_us, &counts, elapsed, plan.rate, slack));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Plan, String> {
        parse_args(args.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn command_lines() {
        let plan = parse("--rate 4000 --duration 2.5 --connections 4 -H x-api-key:k http://127.0.0.1:8080/api/x")
            .expect("valid");
        assert_eq!((plan.rate, plan.duration, plan.connections), (4000.0, Duration::from_millis(2500), 4));
        assert_eq!((plan.host.as_str(), plan.path.as_str()), ("127.0.0.1:8080", "/api/x"));
        assert_eq!(plan.headers, ["x-api-key:k"]);
        assert_eq!(parse("--rate 1 --duration 1 http://h:1").map(|p| p.path).as_deref(), Ok("/"));
        for bad in [
            "--rate 0 --duration 1 http://h:1/",
            "--rate -5 --duration 1 http://h:1/",
            "--rate NaN --duration 1 http://h:1/",
            "--rate 1 --duration 0 http://h:1/",
            "--rate 1 --duration 1 --connections 0 http://h:1/",
            "--rate 1 --duration 1 https://h:1/",
            "--rate 1 --duration 1 http:///x",
            "--rate 1 --duration 1",
            "--rate 1 --duration 1 http://h:1/ http://h:2/",
            "--rate",
            "--rate 1 --duration 1 --tokens /nonexistent/tokens http://h:1/",
            "--bogus",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
