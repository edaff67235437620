//! Prometheus text exposition (version 0.0.4) of requests, errors and latencies by endpoint. The
//! format is small enough to write directly; no PHI, no query, no role name goes into a label.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latency histogram bounds, seconds.
const BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
struct Series {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<String, Series>>,
}

impl Metrics {
    pub fn observe(&self, endpoint: String, status: u16, seconds: f64) {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry(endpoint).or_default();
        *s.by_status.entry(status).or_default() += 1;
        for (i, &b) in BUCKETS.iter().enumerate() {
            if seconds <= b {
                s.buckets[i] += 1;
            }
        }
        s.count += 1;
        s.sum += seconds;
    }

    pub fn render(&self) -> String {
        let map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP biomedclip_api_requests_total Requests by endpoint and HTTP status.\n# TYPE biomedclip_api_requests_total counter\n");
        for (endpoint, s) in map.iter() {
            for (status, n) in &s.by_status {
                let _ = writeln!(out, "biomedclip_api_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}");
            }
        }
        out.push_str("# HELP biomedclip_api_errors_total Requests answered with a 4xx or 5xx status, by endpoint.\n# TYPE biomedclip_api_errors_total counter\n");
        for (endpoint, s) in map.iter() {
            let n: u64 = s.by_status.iter().filter(|(st, _)| **st >= 400).map(|(_, n)| n).sum();
            let _ = writeln!(out, "biomedclip_api_errors_total{{endpoint=\"{endpoint}\"}} {n}");
        }
        out.push_str("# HELP biomedclip_api_request_duration_seconds Request latency by endpoint.\n# TYPE biomedclip_api_request_duration_seconds histogram\n");
        for (endpoint, s) in map.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "biomedclip_api_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{b}\"}} {}", s.buckets[i]);
            }
            let _ = writeln!(out, "biomedclip_api_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "biomedclip_api_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}", s.sum);
            let _ = writeln!(out, "biomedclip_api_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}", s.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_and_counts() {
        let m = Metrics::default();
        m.observe("search".into(), 200, 0.003);
        m.observe("search".into(), 401, 0.0005);
        let text = m.render();
        assert!(text.contains("biomedclip_api_requests_total{endpoint=\"search\",status=\"200\"} 1"));
        assert!(text.contains("biomedclip_api_errors_total{endpoint=\"search\"} 1"));
        assert!(text.contains("le=\"0.001\"} 1"));
        assert!(text.contains("le=\"0.005\"} 2"));
        assert!(text.contains("_count{endpoint=\"search\"} 2"));
    }
}
