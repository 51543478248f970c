//! What one worker saw during the measured window: a latency histogram of its successful
//! requests and its failures by kind.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds from 1 µs to 1 min (well past the request timeout),
/// to 3 significant digits (the figures are printed to the microsecond); longer ones count as
/// the longest. About 145 KB per worker.
const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 60 * 1_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// What one worker saw during the measured window.
#[derive(Debug)]
pub struct Record {
    /// Latency of every successful request, in nanoseconds.
    pub latencies_ns: Histogram<u64>,
    /// Failed requests by kind (a gRPC code, a SQLSTATE, ...).
    pub errors: BTreeMap<String, ErrorTally>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            latencies_ns: latency_histogram(),
            errors: BTreeMap::new(),
        }
    }
}

/// An empty histogram of latencies in nanoseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)
        .expect("valid histogram bounds")
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
                .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX)),
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
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latencies_ns.add(&other.latencies_ns);
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
