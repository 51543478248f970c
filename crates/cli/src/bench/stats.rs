//! What every `shardfeed bench` shares: per-worker recording of latencies and errors, the summary
//! of one measured phase (rate, percentiles), and plain-text tables.

use std::collections::BTreeMap;
use std::time::Duration;

/// How many failed requests, of all measured ones, a phase may have and still count as a run.
pub const MAX_ERROR_RATE: f64 = 0.01;

/// What one worker saw during the measured window.
#[derive(Debug, Default)]
pub struct Record {
    /// Latency of every successful request, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Failed requests by kind (a gRPC code, a SQLSTATE, ...).
    pub errors: BTreeMap<String, ErrorTally>,
}

/// Failures of one kind: how many, and the first message seen (the rest are usually the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorTally {
    pub count: u64,
    pub first_message: String,
}

/// A failed request: its kind (what errors are counted by) and its message.
#[derive(Debug, Clone)]
pub struct OpError {
    pub kind: String,
    pub message: String,
}

impl OpError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        OpError {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl Record {
    pub fn record(&mut self, result: Result<(), OpError>, latency: Duration) {
        match result {
            Ok(()) => self
                .latencies_ns
                .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX)),
            Err(err) => self.record_error(err),
        }
    }

    pub fn record_error(&mut self, err: OpError) {
        self.errors
            .entry(err.kind)
            .and_modify(|t| t.count += 1)
            .or_insert(ErrorTally {
                count: 1,
                first_message: err.message,
            });
    }

    pub fn merge(&mut self, other: Record) {
        self.latencies_ns.extend(other.latencies_ns);
        for (kind, tally) in other.errors {
            self.errors
                .entry(kind)
                .and_modify(|t| t.count += tally.count)
                .or_insert(tally);
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|t| t.count).sum()
    }
}

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
    pub fn new(label: impl Into<String>, mut record: Record, window: Duration) -> Self {
        record.latencies_ns.sort_unstable();
        let sorted = &record.latencies_ns;
        let ok = sorted.len() as u64;
        let errors = record.error_count();
        let secs = window.as_secs_f64();
        let ms = |q: f64| percentile(sorted, q).map_or(0.0, ns_to_ms);
        Summary {
            label: label.into(),
            requests: ok + errors,
            errors,
            errors_by_kind: record.errors,
            ops_per_s: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: sorted.last().copied().map_or(0.0, ns_to_ms),
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
}

/// The nearest-rank percentile (`q` in 0..=1) of ascending `sorted`; `None` when it is empty.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
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

/// A plain-text table: the first column left-aligned (labels), the others right-aligned.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// The standard row of a phase: requests, errors, ops/s, p50, p90, p99, max, then `extra`.
    pub fn summary_row(&mut self, summary: &Summary, extra: &[String]) -> &mut Self {
        let mut cells = vec![
            summary.label.clone(),
            summary.requests.to_string(),
            summary.errors.to_string(),
            format!("{:.0}", summary.ops_per_s),
            format!("{:.2}", summary.p50_ms),
            format!("{:.2}", summary.p90_ms),
            format!("{:.2}", summary.p99_ms),
            format!("{:.2}", summary.max_ms),
        ];
        cells.extend(extra.iter().cloned());
        self.row(cells)
    }

    /// The headers matching [`Table::summary_row`], then `extra`.
    pub fn summary_headers(first: &str, extra: &[&str]) -> Self {
        let mut headers = vec![
            first, "requests", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
        ];
        headers.extend_from_slice(extra);
        Table::new(headers)
    }

    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let format_line = |line: &[String]| {
            let cells: Vec<String> = (0..columns)
                .map(|i| {
                    let cell = line.get(i).map_or("", String::as_str);
                    if i == 0 {
                        format!("{cell:<w$}", w = widths[i])
                    } else {
                        format!("{cell:>w$}", w = widths[i])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_owned()
        };
        let mut out = format_line(&self.headers);
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("  "));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format_line(row));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), Some(50));
        assert_eq!(percentile(&sorted, 0.90), Some(90));
        assert_eq!(percentile(&sorted, 0.99), Some(99));
        assert_eq!(percentile(&sorted, 1.0), Some(100));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[1, 2, 3], 0.5), Some(2));
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
        assert!((s.p50_ms - 2.0).abs() < 1e-9);
        assert!((s.max_ms - 3.0).abs() < 1e-9);
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
    fn table_aligns_columns() {
        let mut t = Table::new(["what", "n"]);
        t.row(["a", "1"]).row(["longer", "100"]);
        assert_eq!(
            t.render(),
            "what      n\n------  ---\na         1\nlonger  100\n"
        );
    }
}
