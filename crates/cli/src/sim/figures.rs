//! What one `shardfeed sim` run measured: the figures the table, the report and the JSON
//! summary are made of.

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
