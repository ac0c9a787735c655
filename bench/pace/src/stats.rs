//! Percentiles and the JSON line `meshgate-pace` prints.

use std::time::Duration;

/// Whole microseconds, saturating.
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The value at quantile `q` of sorted `values` (nearest rank), 0 when empty.
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Answer counts over the run.
#[derive(Debug)]
pub struct Counts {
    /// 2xx answers.
    pub ok: u64,
    /// Other answers.
    pub non_2xx: u64,
    /// Requests with no answer (connection refused, reset, timeout).
    pub errors: u64,
}

/// The run as one JSON object (latencies and lags in µs; sorts both lists).
pub fn summary(latencies: &mut [u32], lags: &mut [u32], counts: &Counts, secs: f64, rate: f64, slack: bool) -> String {
    latencies.sort_unstable();
    lags.sort_unstable();
    let answered = counts.ok + counts.non_2xx;
    let q = |v: &[u32], x| quantile(v, x);
    format!(
        concat!(
            "{{\"rate\":{:.0},\"achieved\":{:.1},\"requests\":{},\"ok\":{},\"non_2xx\":{},\"errors\":{},",
            "\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},",
            "\"lag_p50_us\":{},\"lag_p99_us\":{},\"timer_slack_1ns\":{}}}"
        ),
        rate,
        answered as f64 / secs.max(1e-9),
        answered + counts.errors,
        counts.ok,
        counts.non_2xx,
        counts.errors,
        q(latencies, 0.5),
        q(latencies, 0.9),
        q(latencies, 0.99),
        q(latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
        q(lags, 0.5),
        q(lags, 0.99),
        slack,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 0.999), 100);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn json_line() {
        let mut lat = vec![30, 10, 20];
        let mut lag = vec![1, 2, 3];
        let counts = Counts { ok: 2, non_2xx: 1, errors: 1 };
        let s = summary(&mut lat, &mut lag, &counts, 1.0, 4.0, true);
        assert!(
            s.starts_with("{\"rate\":4,\"achieved\":3.0,\"requests\":4,\"ok\":2,\"non_2xx\":1,\"errors\":1,"),
            "{s}"
        );
        assert!(
            s.contains("\"p50_us\":20,") && s.contains("\"max_us\":30,") && s.ends_with("\"timer_slack_1ns\":true}"),
            "{s}"
        );
    }
}
