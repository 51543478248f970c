//! What one `shardfeed sim` run measured: the figures the table, the report and the JSON
//! summary are made of.

use crate::measure::round;

/// One Redis master during a measured run, from its own `INFO` deltas.
#[derive(Debug, Clone, Default)]
pub struct NodeFigures {
    /// `host:port` of the master.
    pub addr: String,
    /// Commands per second it executed (`INFO commandstats` delta ÷ duration).
    pub commands_per_s: f64,
    /// Its CPU use, percent of one core (`used_cpu_user + used_cpu_sys` delta ÷ duration).
    pub cpu_percent: f64,
    /// The hot authors (by rank in the workload's popularity order) whose slots it owns.
    pub hot_authors: Vec<i64>,
}

/// Client-side latency summary of one kind of request.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub count: u64,
    pub errors: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One measured run (mitigations off, or on).
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    /// "off" or "on".
    pub label: String,
    pub duration_s: f64,
    /// Every master, in a stable order (by address).
    pub nodes: Vec<NodeFigures>,
    /// Busiest master's commands/s ÷ the mean over masters.
    pub skew: f64,
    /// Busiest master's CPU ÷ the mean over masters.
    pub cpu_skew: f64,
    pub feeds: Latency,
    pub timelines: Latency,
    pub posts: Latency,
    /// Near-cache hits ÷ lookups in the aggregator during the run; `None` when it is off.
    pub near_cache_hit: Option<f64>,
    /// Time from a hot author's `CreatePost` acknowledgement until the post shows in a
    /// `GetUserTimeline` of that author, milliseconds.
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    /// Home feeds compared with the PostgreSQL ground truth after the run, and how many differed.
    pub feeds_checked: usize,
    pub feeds_wrong: usize,
}

/// What the simulated workload was, for the report's first section.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub users: usize,
    pub zipf_exponent: f64,
    pub mean_followees: f64,
    pub posts_per_author: usize,
    pub concurrency: usize,
    pub seconds_per_run: f64,
    /// Shares of the mix, in percent: home feeds, profile views (`GetUserTimeline`), posts.
    pub feed_share: f64,
    pub view_share: f64,
    pub post_share: f64,
    /// Plain-language description lines (what concentrates load on one node, and why).
    pub notes: Vec<String>,
}

/// One run in the JSON summary: the headline figures, rounded.
#[derive(Debug, serde::Serialize)]
pub struct RunJson<'a> {
    pub mitigations: &'a str,
    pub skew: f64,
    pub cpu_skew: f64,
    pub feeds: u64,
    pub feeds_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub views_per_s: f64,
    pub view_p99_ms: f64,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub near_cache_hit: Option<f64>,
    pub feeds_checked: usize,
    pub feeds_wrong: usize,
}

impl<'a> From<&'a RunFigures> for RunJson<'a> {
    fn from(run: &'a RunFigures) -> Self {
        RunJson {
            mitigations: &run.label,
            skew: round(run.skew, 2),
            cpu_skew: round(run.cpu_skew, 2),
            feeds: run.feeds.count,
            feeds_per_s: round(run.feeds.per_s, 1),
            p50_ms: round(run.feeds.p50_ms, 2),
            p99_ms: round(run.feeds.p99_ms, 2),
            views_per_s: round(run.timelines.per_s, 1),
            view_p99_ms: round(run.timelines.p99_ms, 2),
            lag_p50_ms: run.lag_p50_ms.map(|v| round(v, 1)),
            lag_p99_ms: run.lag_p99_ms.map(|v| round(v, 1)),
            near_cache_hit: run.near_cache_hit.map(|v| round(v, 4)),
            feeds_checked: run.feeds_checked,
            feeds_wrong: run.feeds_wrong,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_serializes_rounded_under_its_keys() {
        let run = RunFigures {
            label: "on".to_owned(),
            skew: 1.23456,
            feeds: Latency {
                count: 7,
                per_s: 12.345,
                p99_ms: 4.56789,
                ..Latency::default()
            },
            lag_p99_ms: Some(12.36),
            ..RunFigures::default()
        };
        let json = serde_json::to_value(RunJson::from(&run)).unwrap();
        assert_eq!(json["mitigations"], "on");
        assert_eq!(json["skew"], 1.23);
        assert_eq!(json["feeds"], 7);
        assert_eq!(json["feeds_per_s"], 12.3);
        assert_eq!(json["p99_ms"], 4.57);
        assert_eq!(json["lag_p99_ms"], 12.4);
        assert!(json["lag_p50_ms"].is_null() && json["near_cache_hit"].is_null());
        assert_eq!(json.as_object().unwrap().len(), 14);
    }
}
