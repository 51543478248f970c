//! The figures of one measured phase (rate, percentiles, errors), the part of a bench's JSON
//! summary they make, and how a repeated bench picks the round it reports.

use std::collections::BTreeMap;
use std::time::Duration;

use super::record::{ErrorTally, Record};

/// How many failed requests, of all measured ones, a phase may have and still count as a run.
pub const MAX_ERROR_RATE: f64 = 0.01;

/// The figures of one measured phase.
#[derive(Debug, Clone)]
pub struct Summary {
    pub label: String,
    /// Requests that completed inside the window, successful or not.
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, ErrorTally>,
    /// Successful requests per second of the window.
    pub ops_per_s: f64,
    /// Latency percentiles of the successful requests, in milliseconds (0 when there were none).
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn new(label: impl Into<String>, record: Record, window: Duration) -> Self {
        let latencies = &record.latencies_ns;
        let ok = latencies.len();
        let errors = record.error_count();
        let secs = window.as_secs_f64();
        let ms = |q: f64| {
            if ok == 0 {
                0.0
            } else {
                ns_to_ms(latencies.value_at_quantile(q))
            }
        };
        Summary {
            label: label.into(),
            requests: ok + errors,
            errors,
            ops_per_s: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: if ok == 0 {
                0.0
            } else {
                ns_to_ms(latencies.max())
            },
            errors_by_kind: record.errors,
        }
    }

    /// Failed requests as a fraction of all measured ones (1 when nothing was measured).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// Why this phase does not count as a run, if it doesn't.
    pub fn failure(&self) -> Option<String> {
        if self.requests == 0 {
            return Some(format!("{}: no request completed", self.label));
        }
        if self.error_rate() > MAX_ERROR_RATE {
            return Some(format!(
                "{}: {} of {} requests failed ({:.2}%, more than the {:.0}% allowed)",
                self.label,
                self.errors,
                self.requests,
                self.error_rate() * 100.0,
                MAX_ERROR_RATE * 100.0
            ));
        }
        None
    }

    /// One line per kind of error, for the report under the table.
    pub fn error_lines(&self) -> Vec<String> {
        self.errors_by_kind
            .iter()
            .map(|(kind, tally)| {
                let first = if tally.first_message.is_empty() {
                    "no message"
                } else {
                    &tally.first_message
                };
                format!("{}: {} x {kind} (first: {first})", self.label, tally.count)
            })
            .collect()
    }

    /// Failures by kind, for the JSON summary.
    pub fn errors_by_code(&self) -> BTreeMap<String, u64> {
        self.errors_by_kind
            .iter()
            .map(|(kind, tally)| (kind.clone(), tally.count))
            .collect()
    }
}

/// A phase in a bench's JSON summary, beside the rate the bench names itself (`feeds_per_s`,
/// `posts_per_s`, …): latencies rounded to the microsecond, counts, errors by code. Every field
/// is `null` for a phase that did not run. A bench flattens one per phase into its summary,
/// each under its own key prefix (`cold_p50_ms`, `bare_p50_ms`, …).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PhaseJson {
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub requests: Option<u64>,
    pub errors: Option<u64>,
    pub errors_by_code: Option<BTreeMap<String, u64>>,
}

impl PhaseJson {
    pub fn of(summary: Option<&Summary>) -> Self {
        let Some(s) = summary else {
            return PhaseJson::default();
        };
        PhaseJson {
            p50_ms: Some(round(s.p50_ms, 3)),
            p90_ms: Some(round(s.p90_ms, 3)),
            p99_ms: Some(round(s.p99_ms, 3)),
            max_ms: Some(round(s.max_ms, 3)),
            requests: Some(s.requests),
            errors: Some(s.errors),
            errors_by_code: Some(s.errors_by_code()),
        }
    }
}

/// The item with the median `key` — the lower middle one of an even count, so one lucky round
/// cannot tip it; `None` when there are none. For picking the round a repeated bench reports.
pub fn median_by<T>(items: &[T], key: impl Fn(&T) -> f64) -> Option<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

pub fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Rounds for the JSON summary: figures, not float noise.
pub fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use super::super::record::OpError;
    use super::*;

    /// Within the histogram's precision (3 significant digits).
    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want * 1e-3
    }

    #[test]
    fn percentiles_are_nearest_rank_within_three_digits() {
        let mut r = Record::default();
        for ms in 1..=100 {
            r.record(Ok(()), Duration::from_millis(ms));
        }
        let s = Summary::new("x", r, Duration::from_secs(1));
        assert!(close(s.p50_ms, 50.0), "{}", s.p50_ms);
        assert!(close(s.p90_ms, 90.0), "{}", s.p90_ms);
        assert!(close(s.p99_ms, 99.0), "{}", s.p99_ms);
        assert!(close(s.max_ms, 100.0), "{}", s.max_ms);
        let empty = Summary::new("none", Record::default(), Duration::from_secs(1));
        assert_eq!((empty.p50_ms, empty.max_ms), (0.0, 0.0));
    }

    #[test]
    fn summary_counts_errors_apart_from_latencies() {
        let mut a = Record::default();
        a.record(Ok(()), Duration::from_millis(1));
        a.record(Ok(()), Duration::from_millis(3));
        a.record(Err(OpError::new("Unavailable", "down")), Duration::ZERO);
        let mut b = Record::default();
        b.record(Ok(()), Duration::from_millis(2));
        b.record(
            Err(OpError::new("Unavailable", "still down")),
            Duration::ZERO,
        );
        a.merge(b);
        let s = Summary::new("x", a, Duration::from_secs(2));
        assert_eq!(s.requests, 5);
        assert_eq!(s.errors, 2);
        assert_eq!(s.errors_by_kind["Unavailable"].count, 2);
        assert_eq!(s.errors_by_kind["Unavailable"].first_message, "down");
        assert!((s.ops_per_s - 1.5).abs() < 1e-9);
        assert!(close(s.p50_ms, 2.0), "{}", s.p50_ms);
        assert!(close(s.max_ms, 3.0), "{}", s.max_ms);
        assert!(s.failure().is_some());
    }

    #[test]
    fn error_budget_is_one_percent() {
        let mut r = Record::default();
        for _ in 0..99 {
            r.record(Ok(()), Duration::from_millis(1));
        }
        r.record(Err(OpError::new("Internal", "x")), Duration::ZERO);
        assert!(Summary::new("ok", r, Duration::from_secs(1))
            .failure()
            .is_none());
        let empty = Summary::new("empty", Record::default(), Duration::from_secs(1));
        assert!(empty.failure().is_some());
    }

    #[test]
    fn a_phase_serializes_rounded_and_a_missing_one_as_nulls() {
        let mut r = Record::default();
        r.record(Ok(()), Duration::from_micros(2_345));
        r.record(Err(OpError::new("Internal", "x")), Duration::ZERO);
        let s = Summary::new("x", r, Duration::from_secs(1));
        let json = serde_json::to_value(PhaseJson::of(Some(&s))).unwrap();
        assert_eq!(json["requests"], 2);
        assert_eq!(json["errors_by_code"]["Internal"], 1);
        let p50 = json["p50_ms"].as_f64().unwrap();
        assert!(close(p50, 2.345) && p50 == round(p50, 3), "{p50}");
        let none = serde_json::to_value(PhaseJson::of(None)).unwrap();
        let keys: Vec<&str> = none
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 7);
        assert!(none.as_object().unwrap().values().all(|v| v.is_null()));
    }
}
