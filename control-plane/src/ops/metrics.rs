//! Prometheus text metrics: named counters bumped by the domain code and a
//! per-route request counter fed by a middleware.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// Counters keyed by their full series name (`name{labels}`).
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Adds one to `series`.
    pub fn inc(&self, series: &str) {
        if let Ok(mut map) = self.counters.lock() {
            *map.entry(series.to_string()).or_insert(0) += 1;
        }
    }

    /// Renders the exposition format.
    pub fn render(&self, extra: &[(&str, i64)]) -> String {
        let mut out = String::new();
        let mut last_name = "";
        let map = self.counters.lock().map(|m| m.clone()).unwrap_or_default();
        for (series, value) in &map {
            let name = series.split('{').next().unwrap_or(series);
            if name != last_name {
                out.push_str(&format!("# TYPE {name} counter\n"));
            }
            out.push_str(&format!("{series} {value}\n"));
            last_name = name;
        }
        for (name, value) in extra {
            out.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
        }
        out
    }
}

/// Counts every request by method, matched route and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    // Route templates only: ids and query strings (which may carry
    // identifiers) stay out of the log.
    tracing::debug!(%method, %route, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    let series = format!(
        "meshgate_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{}\"}}",
        response.status().as_u16()
    );
    state.metrics.inc(&series);
    response
}
