//! What the feed bench prints: the table of every phase, the figures beside it, the targets,
//! the JSON summary; with several followee counts, the cost curve after them.

use anyhow::{bail, Context};
use serde::Serialize;

use super::auth_cost;
use super::figures::{round_ratio, CommandFigures};
use super::results::{JsonSummary, Results};
use super::{FeedBenchArgs, PAGE_SIZE, TARGET_NAIVE_P50_RATIO, TARGET_RSS_MIB, TARGET_VS_SQL};
use crate::measure::table::{render, summary_cells, summary_table, table, LABELS_LEFT};
use crate::measure::{round, Summary};

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

fn or_dash(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), format)
}

pub fn report(args: &FeedBenchArgs, r: &Results) -> anyhow::Result<()> {
    println!();
    println!(
        "shardfeed bench feed: {} users, {} followees for each of {} readers ({}), {} posts per \
         author ({} posts, {} follows), page {PAGE_SIZE}; concurrency {} (naive {}), {} HTTP/2 \
         channel(s), warm-up {} s (none for cold), measured {} s per phase",
        args.users,
        args.followees,
        args.readers(),
        args.popularity(),
        args.posts_per_author,
        r.posts,
        r.follows,
        args.concurrency,
        args.naive_concurrency(),
        args.channels,
        args.warmup_secs,
        args.duration_secs
    );
    println!(
        "seeding: PostgreSQL {:.1} s, cache {:.1} s",
        r.seed_postgres_s, r.seed_cache_s
    );
    println!();
    let vs_sql = |s: &Summary| {
        if r.sql.ops_per_s > 0.0 {
            format!("{:.2}x", s.ops_per_s / r.sql.ops_per_s)
        } else {
            "-".to_owned()
        }
    };
    let mut phases = summary_table("", "feeds/s", &["vs SQL"]);
    for summary in [&r.warm, &r.cold, &r.sql, &r.naive] {
        phases.add_row(summary_cells(summary, &[vs_sql(summary)]));
    }
    if let Some((ours, naive)) = &r.unloaded {
        for summary in [ours, naive] {
            phases.add_row(summary_cells(summary, &["-".to_owned()]));
        }
    }
    if let Some((on, off)) = r.auth_median() {
        for summary in [on, off] {
            phases.add_row(summary_cells(summary, &["-".to_owned()]));
        }
    }
    print!("{}", render(phases, LABELS_LEFT));
    println!();

    let commands = |figures: &Result<CommandFigures, String>| match figures {
        Ok(f) => format!("{:.1} ({})", f.per_feed(), f.breakdown()),
        Err(e) => format!("unavailable: {e}"),
    };
    println!(
        "Redis commands per feed: shardfeed warm {}",
        commands(&r.warm_commands)
    );
    println!(
        "                         naive          {}",
        commands(&r.naive_commands)
    );
    match &r.rss {
        Ok(rss) => println!(
            "aggregator memory: peak RSS (VmHWM) {:.1} MiB, now {:.1} MiB (pid {} from {})",
            rss.peak_kib as f64 / 1024.0,
            rss.current_kib as f64 / 1024.0,
            rss.pid,
            rss.source
        ),
        Err(e) => println!("aggregator memory: unavailable ({e})"),
    }
    match &r.memory {
        Ok(m) => println!(
            "Redis used_memory over the masters: {:.1} MiB before seeding, {:.1} MiB after: \
             {:.0} bytes per 1,000 cached authors ({} posts each)",
            m.before as f64 / 1048576.0,
            m.after as f64 / 1048576.0,
            m.per_1000_authors(),
            args.posts_per_author
        ),
        Err(e) => println!("Redis used_memory: unavailable ({e})"),
    }
    if let Some(plan) = &r.plan {
        println!("SQL plan (top line): {plan}");
    }
    println!();

    let json = JsonSummary::new(args, r);
    let each: Vec<String> = json
        .unloaded_round_ratios
        .iter()
        .map(|x| format!("{x:.1}x"))
        .collect();
    println!(
        "target: shardfeed warm feeds/s >= {TARGET_VS_SQL}x SQL: {} ({})",
        or_dash(r.ratio_vs_sql(), |x| format!("{x:.2}x")),
        verdict(json.vs_sql_met)
    );
    println!(
        "target: naive p50 >= {TARGET_NAIVE_P50_RATIO}x shardfeed warm p50: at concurrency {}: {} \
         ({}); one request at a time: {} ({}; median of {} round(s): {})",
        args.concurrency,
        or_dash(r.naive_p50_ratio(), |x| format!("{x:.1}x")),
        verdict(json.naive_p50_met),
        or_dash(r.unloaded.as_ref().and_then(round_ratio), |x| format!(
            "{x:.1}x"
        )),
        verdict(json.unloaded_naive_p50_met),
        each.len(),
        each.join(", ")
    );
    if let Some(median) = r.auth_median() {
        let (on, off) = median;
        let ratios: Vec<String> = json
            .auth_round_ratios
            .iter()
            .map(|x| format!("{x:.3}"))
            .collect();
        // Closed loop at a fixed concurrency: the extra time per feed is the difference of
        // the per-feed service times, 1/rate each.
        let extra_us = (on.ops_per_s > 0.0 && off.ops_per_s > 0.0)
            .then(|| (1.0 / on.ops_per_s - 1.0 / off.ops_per_s) * 1e6);
        println!(
            "authentication: {:.0} feeds/s with, {:.0} without ({} of it; {} of machine time per feed; median of {} round(s): {})",
            on.ops_per_s,
            off.ops_per_s,
            or_dash(auth_cost::ratio(median), |x| format!("{:.1}%", x * 100.0)),
            or_dash(extra_us, |x| format!("{x:+.1} µs")),
            ratios.len(),
            ratios.join(", ")
        );
    }
    println!(
        "target: aggregator peak RSS <= {TARGET_RSS_MIB} MiB: {} ({})",
        or_dash(r.peak_rss_mib(), |x| format!("{x:.1} MiB")),
        verdict(json.rss_met)
    );
    let mut measured = vec![&r.warm, &r.cold, &r.sql, &r.naive];
    for (ours, naive) in &r.unloaded_rounds {
        measured.extend([ours, naive]);
    }
    for (on, off) in &r.auth_rounds {
        measured.extend([on, off]);
    }
    let error_lines: Vec<String> = measured.iter().flat_map(|s| s.error_lines()).collect();
    if !error_lines.is_empty() {
        println!("errors:");
        for line in &error_lines {
            println!("  {line}");
        }
    }
    let summary = serde_json::to_string(&json).context("encoding the JSON summary")?;
    println!("{summary}");

    let failures: Vec<String> = measured.iter().filter_map(|s| s.failure()).collect();
    if !failures.is_empty() {
        bail!("the run does not count: {}", failures.join("; "));
    }
    Ok(())
}

/// One followee count of the cost curve.
#[derive(Serialize)]
struct CurvePoint {
    followees: u32,
    feeds_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    redis_cmds_per_feed: Option<f64>,
    sql_feeds_per_s: f64,
    sql_p50_ms: f64,
    sql_p99_ms: f64,
    wrong_pages: u64,
}

/// The cost of a feed against its followee count: each run's warm phase beside the SQL
/// baseline of the same data, then one JSON line.
pub fn report_curve(args: &FeedBenchArgs, curve: &[(u32, Results)]) -> anyhow::Result<()> {
    println!();
    println!(
        "shardfeed bench feed, cost by followees: {} users ({} readers), {} posts per author, \
         concurrency {}, measured {} s per phase",
        args.users,
        args.readers(),
        args.posts_per_author,
        args.concurrency,
        args.duration_secs
    );
    let mut text = table([
        "followees",
        "feeds/s",
        "p50 ms",
        "p99 ms",
        "Redis/feed",
        "SQL/s",
        "SQL p50",
        "SQL p99",
        "vs SQL",
    ]);
    let mut points = Vec::new();
    for (followees, r) in curve {
        let per_feed = r.warm_commands.as_ref().ok().map(|f| f.per_feed());
        text.add_row([
            followees.to_string(),
            format!("{:.1}", r.warm.ops_per_s),
            format!("{:.2}", r.warm.p50_ms),
            format!("{:.2}", r.warm.p99_ms),
            or_dash(per_feed, |c| format!("{c:.1}")),
            format!("{:.1}", r.sql.ops_per_s),
            format!("{:.2}", r.sql.p50_ms),
            format!("{:.2}", r.sql.p99_ms),
            or_dash(r.ratio_vs_sql(), |x| format!("{x:.2}x")),
        ]);
        points.push(CurvePoint {
            followees: *followees,
            feeds_per_s: round(r.warm.ops_per_s, 1),
            p50_ms: round(r.warm.p50_ms, 3),
            p99_ms: round(r.warm.p99_ms, 3),
            redis_cmds_per_feed: per_feed.map(|c| round(c, 2)),
            sql_feeds_per_s: round(r.sql.ops_per_s, 1),
            sql_p50_ms: round(r.sql.p50_ms, 3),
            sql_p99_ms: round(r.sql.p99_ms, 3),
            wrong_pages: r
                .warm
                .errors_by_kind
                .get("WrongPage")
                .map_or(0, |t| t.count),
        });
    }
    print!("{}", render(text, &[]));
    println!(
        "{}",
        serde_json::json!({"bench": "feed_followees", "curve": points})
    );
    Ok(())
}
