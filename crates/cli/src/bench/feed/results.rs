//! What one run of the feed bench measured, and the JSON summary made of it: the last line of
//! stdout.

use serde::Serialize;

use super::auth_cost;
use super::figures::{round_ratio, CommandFigures, MemoryFigures, Rss};
use super::{FeedBenchArgs, PAGE_SIZE, TARGET_NAIVE_P50_RATIO, TARGET_RSS_MIB, TARGET_VS_SQL};
use crate::measure::{round, PhaseJson, Summary};

/// Everything the report shows.
pub struct Results {
    pub seed_postgres_s: f64,
    pub seed_cache_s: f64,
    pub posts: usize,
    pub follows: usize,
    pub cold: Summary,
    pub warm: Summary,
    pub sql: Summary,
    pub naive: Summary,
    /// One request at a time: what a user waits when nothing queues (shardfeed, naive), the
    /// round with the median ratio.
    pub unloaded: Option<(Summary, Summary)>,
    /// Every unloaded round, in order.
    pub unloaded_rounds: Vec<(Summary, Summary)>,
    /// Every authentication-cost round (auth on, auth off), in order.
    pub auth_rounds: Vec<(Summary, Summary)>,
    pub warm_commands: Result<CommandFigures, String>,
    pub naive_commands: Result<CommandFigures, String>,
    pub memory: Result<MemoryFigures, String>,
    pub rss: Result<Rss, String>,
    pub plan: Option<String>,
}

impl Results {
    /// Shardfeed warm feeds/s ÷ SQL feeds/s.
    pub fn ratio_vs_sql(&self) -> Option<f64> {
        (self.sql.ops_per_s > 0.0).then(|| self.warm.ops_per_s / self.sql.ops_per_s)
    }

    /// Naive p50 ÷ shardfeed warm p50, both under load.
    pub fn naive_p50_ratio(&self) -> Option<f64> {
        (self.warm.p50_ms > 0.0 && self.naive.ops_per_s > 0.0)
            .then(|| self.naive.p50_ms / self.warm.p50_ms)
    }

    /// The authentication-cost round with the median on/off ratio.
    pub fn auth_median(&self) -> Option<&(Summary, Summary)> {
        crate::measure::summary::median_by(&self.auth_rounds, |r| {
            auth_cost::ratio(r).unwrap_or(0.0)
        })
    }

    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.rss
            .as_ref()
            .ok()
            .map(|rss| rss.peak_kib as f64 / 1024.0)
    }
}

serde_with::with_prefix!(cold_phase "cold_");
serde_with::with_prefix!(sql_phase "sql_");
serde_with::with_prefix!(naive_phase "naive_");

/// The last line of stdout. The unprefixed figures are shardfeed warm's.
#[derive(Serialize)]
pub struct JsonSummary<'a> {
    pub bench: &'static str,
    pub feeds_per_s: f64,
    #[serde(flatten)]
    pub warm: PhaseJson,
    pub cold_feeds_per_s: f64,
    #[serde(flatten, with = "cold_phase")]
    pub cold: PhaseJson,
    pub sql_feeds_per_s: f64,
    #[serde(flatten, with = "sql_phase")]
    pub sql: PhaseJson,
    pub naive_feeds_per_s: f64,
    #[serde(flatten, with = "naive_phase")]
    pub naive: PhaseJson,
    pub ratio_vs_sql: Option<f64>,
    pub naive_p50_ratio: Option<f64>,
    /// One request at a time (no queueing): shardfeed's p50/p99, naive's p50, their ratio.
    pub unloaded_p50_ms: Option<f64>,
    pub unloaded_p99_ms: Option<f64>,
    pub naive_unloaded_p50_ms: Option<f64>,
    pub unloaded_naive_p50_ratio: Option<f64>,
    pub unloaded_round_ratios: Vec<f64>,
    pub unloaded_naive_p50_met: Option<bool>,
    /// Authentication cost, the round with the median ratio: feeds/s of an in-process
    /// aggregator with and without it, and their ratio.
    pub auth_on_feeds_per_s: Option<f64>,
    pub auth_off_feeds_per_s: Option<f64>,
    pub auth_on_off_ratio: Option<f64>,
    pub auth_round_ratios: Vec<f64>,
    pub redis_cmds_per_feed: Option<f64>,
    pub naive_redis_cmds_per_feed: Option<f64>,
    pub aggregator_peak_rss_mib: Option<f64>,
    pub aggregator_rss_mib: Option<f64>,
    pub redis_used_memory_per_1000_authors_bytes: Option<f64>,
    pub seed_postgres_s: f64,
    pub seed_cache_s: f64,
    pub target_vs_sql: f64,
    pub target_naive_p50_ratio: f64,
    pub target_rss_mib: f64,
    pub vs_sql_met: Option<bool>,
    pub naive_p50_met: Option<bool>,
    pub rss_met: Option<bool>,
    /// The run's shape: users, followees, posts_per_author, zipf, concurrency, channels, …
    #[serde(flatten)]
    pub args: &'a FeedBenchArgs,
    pub page_size: usize,
    pub naive_concurrency: u32,
}

impl<'a> JsonSummary<'a> {
    pub fn new(args: &'a FeedBenchArgs, r: &Results) -> Self {
        let unloaded_ratio = r.unloaded.as_ref().and_then(round_ratio);
        let auth = r.auth_median();
        let per_feed =
            |f: &Result<CommandFigures, String>| f.as_ref().ok().map(|f| round(f.per_feed(), 2));
        JsonSummary {
            bench: "feed",
            feeds_per_s: round(r.warm.ops_per_s, 1),
            warm: PhaseJson::of(Some(&r.warm)),
            cold_feeds_per_s: round(r.cold.ops_per_s, 1),
            cold: PhaseJson::of(Some(&r.cold)),
            sql_feeds_per_s: round(r.sql.ops_per_s, 1),
            sql: PhaseJson::of(Some(&r.sql)),
            naive_feeds_per_s: round(r.naive.ops_per_s, 1),
            naive: PhaseJson::of(Some(&r.naive)),
            ratio_vs_sql: r.ratio_vs_sql().map(|x| round(x, 3)),
            naive_p50_ratio: r.naive_p50_ratio().map(|x| round(x, 2)),
            unloaded_p50_ms: r.unloaded.as_ref().map(|(ours, _)| round(ours.p50_ms, 3)),
            unloaded_p99_ms: r.unloaded.as_ref().map(|(ours, _)| round(ours.p99_ms, 3)),
            naive_unloaded_p50_ms: r.unloaded.as_ref().map(|(_, naive)| round(naive.p50_ms, 3)),
            unloaded_naive_p50_ratio: unloaded_ratio.map(|x| round(x, 2)),
            unloaded_round_ratios: r
                .unloaded_rounds
                .iter()
                .filter_map(round_ratio)
                .map(|x| round(x, 2))
                .collect(),
            unloaded_naive_p50_met: unloaded_ratio.map(|x| x >= TARGET_NAIVE_P50_RATIO),
            auth_on_feeds_per_s: auth.map(|(on, _)| round(on.ops_per_s, 1)),
            auth_off_feeds_per_s: auth.map(|(_, off)| round(off.ops_per_s, 1)),
            auth_on_off_ratio: auth.and_then(auth_cost::ratio).map(|x| round(x, 3)),
            auth_round_ratios: r
                .auth_rounds
                .iter()
                .filter_map(auth_cost::ratio)
                .map(|x| round(x, 3))
                .collect(),
            redis_cmds_per_feed: per_feed(&r.warm_commands),
            naive_redis_cmds_per_feed: per_feed(&r.naive_commands),
            aggregator_peak_rss_mib: r.peak_rss_mib().map(|x| round(x, 1)),
            aggregator_rss_mib: r
                .rss
                .as_ref()
                .ok()
                .map(|rss| round(rss.current_kib as f64 / 1024.0, 1)),
            redis_used_memory_per_1000_authors_bytes: r
                .memory
                .as_ref()
                .ok()
                .map(|m| m.per_1000_authors().round()),
            seed_postgres_s: round(r.seed_postgres_s, 1),
            seed_cache_s: round(r.seed_cache_s, 1),
            target_vs_sql: TARGET_VS_SQL,
            target_naive_p50_ratio: TARGET_NAIVE_P50_RATIO,
            target_rss_mib: TARGET_RSS_MIB,
            vs_sql_met: r.ratio_vs_sql().map(|x| x >= TARGET_VS_SQL),
            naive_p50_met: r.naive_p50_ratio().map(|x| x >= TARGET_NAIVE_P50_RATIO),
            rss_met: r.peak_rss_mib().map(|mib| mib <= TARGET_RSS_MIB),
            args,
            page_size: PAGE_SIZE,
            naive_concurrency: args.naive_concurrency(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;

    use super::*;

    fn phase(label: &str, ops_per_s: f64, p50_ms: f64) -> Summary {
        Summary {
            label: label.to_owned(),
            requests: 10,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            ops_per_s,
            p50_ms,
            p90_ms: p50_ms,
            p99_ms: p50_ms,
            max_ms: p50_ms,
        }
    }

    #[test]
    fn the_summary_keeps_the_flat_keys_scripts_read() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: FeedBenchArgs,
        }
        let mut args = Cli::try_parse_from(["bench", "--users", "500", "--concurrency", "8"])
            .unwrap()
            .args;
        args.followees = 100;
        let results = Results {
            seed_postgres_s: 1.04,
            seed_cache_s: 2.0,
            posts: 1,
            follows: 1,
            cold: phase("cold", 100.0, 9.0),
            warm: phase("warm", 3000.0, 1.2345),
            sql: phase("sql", 1000.0, 4.0),
            naive: phase("naive", 500.0, 12.0),
            unloaded: None,
            unloaded_rounds: Vec::new(),
            auth_rounds: vec![
                (phase("on", 2900.0, 1.3), phase("off", 3000.0, 1.2)),
                (phase("on", 1000.0, 1.3), phase("off", 2000.0, 1.2)),
                (phase("on", 2970.0, 1.3), phase("off", 3000.0, 1.2)),
            ],
            warm_commands: Err("not measured".to_owned()),
            naive_commands: Err("not measured".to_owned()),
            memory: Err("not measured".to_owned()),
            rss: Err("not measured".to_owned()),
            plan: None,
        };
        let json = serde_json::to_value(JsonSummary::new(&args, &results)).unwrap();
        assert_eq!(json["bench"], "feed");
        assert_eq!(json["feeds_per_s"], 3000.0);
        assert_eq!(json["p50_ms"], 1.235);
        assert_eq!(json["cold_feeds_per_s"], 100.0);
        assert_eq!(json["cold_p50_ms"], 9.0);
        assert_eq!(json["cold_errors_by_code"], serde_json::json!({}));
        assert_eq!(json["sql_requests"], 10);
        assert_eq!(json["naive_p99_ms"], 12.0);
        assert_eq!(json["ratio_vs_sql"], 3.0);
        assert_eq!(json["naive_p50_ratio"], 9.72);
        assert_eq!(json["vs_sql_met"], true);
        assert_eq!(json["naive_p50_met"], false);
        assert!(json["rss_met"].is_null() && json["redis_cmds_per_feed"].is_null());
        assert_eq!(json["seed_postgres_s"], 1.0);
        // The median of the rounds' on/off ratios (0.5, 0.967, 0.99) is the first round's.
        assert_eq!(json["auth_on_off_ratio"], 0.967);
        assert_eq!(json["auth_on_feeds_per_s"], 2900.0);
        assert_eq!(json["auth_off_feeds_per_s"], 3000.0);
        for (key, value) in [
            ("users", 500.0),
            ("followees", 100.0),
            ("posts_per_author", 100.0),
            ("zipf", 0.0),
            ("page_size", 20.0),
            ("concurrency", 8.0),
            ("naive_concurrency", 8.0),
            ("channels", 4.0),
            ("body_bytes", 100.0),
            ("duration_s", 10.0),
            ("warmup_s", 2.0),
        ] {
            assert_eq!(json[key].as_f64(), Some(value), "{key}");
        }
        for gone in [
            "aggregator",
            "postgres_url",
            "seed",
            "readers",
            "latency_secs",
        ] {
            assert!(json.get(gone).is_none(), "{gone}");
        }
    }
}
