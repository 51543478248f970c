//! What the ingest bench prints: every round's phases in one table, the ratio of the median
//! round against the target, and as the last line of stdout the JSON summary of that round.

use anyhow::{bail, Context};
use serde::Serialize;

use super::{median_round, IngestBenchArgs, Round, TARGET_RATIO};
use crate::measure::table::{render, summary_cells, summary_table, LABELS_LEFT};
use crate::measure::{round, PhaseJson, Summary};

serde_with::with_prefix!(bare_phase "bare_");

/// The last line of stdout: the median round. Fields of a phase that did not run are `null`.
#[derive(Serialize)]
struct JsonSummary<'a> {
    bench: &'static str,
    posts_per_s: Option<f64>,
    #[serde(flatten)]
    grpc: PhaseJson,
    bare_insert_per_s: Option<f64>,
    #[serde(flatten, with = "bare_phase")]
    bare: PhaseJson,
    /// The median of `round_ratios`.
    ratio: Option<f64>,
    round_ratios: Vec<f64>,
    target_ratio: f64,
    /// The run's shape: rounds, concurrency, channels, authors, body_bytes, durations, only.
    #[serde(flatten)]
    args: &'a IngestBenchArgs,
}

impl<'a> JsonSummary<'a> {
    fn new(args: &'a IngestBenchArgs, rounds: &[Round], median: &Round) -> Self {
        let rate = |s: Option<&Summary>| s.map(|s| round(s.ops_per_s, 1));
        JsonSummary {
            bench: "ingest",
            posts_per_s: rate(median.grpc.as_ref()),
            grpc: PhaseJson::of(median.grpc.as_ref()),
            bare_insert_per_s: rate(median.bare.as_ref()),
            bare: PhaseJson::of(median.bare.as_ref()),
            ratio: median.ratio().map(|r| round(r, 3)),
            round_ratios: rounds
                .iter()
                .filter_map(Round::ratio)
                .map(|r| round(r, 3))
                .collect(),
            target_ratio: TARGET_RATIO,
            args,
        }
    }
}

pub fn report(args: &IngestBenchArgs, rounds: &[Round]) -> anyhow::Result<()> {
    let median = median_round(rounds).context("no round ran")?;
    let ratio = median.ratio();
    let ratios: Vec<f64> = rounds.iter().filter_map(Round::ratio).collect();

    println!();
    println!(
        "shardfeed bench ingest: concurrency {}, {} HTTP/2 channel(s), {} authors, {}-byte bodies, \
         warm-up {} s, measured {} s per phase, {} round(s)",
        args.concurrency,
        args.channels,
        args.authors,
        args.body_bytes,
        args.warmup_secs,
        args.duration_secs,
        args.rounds
    );
    println!();
    let mut table = summary_table("", "ops/s", &["vs bare"]);
    for (i, round) in rounds.iter().enumerate() {
        let tag = |s: &Summary| {
            let mut s = s.clone();
            if rounds.len() > 1 {
                s.label = format!("{} (round {})", s.label, i + 1);
            }
            s
        };
        if let Some(g) = &round.grpc {
            let vs = round
                .ratio()
                .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
            table.add_row(summary_cells(&tag(g), &[vs]));
        }
        if let Some(b) = &round.bare {
            table.add_row(summary_cells(&tag(b), &["100%".to_owned()]));
        }
    }
    print!("{}", render(table, LABELS_LEFT));
    println!();
    if let Some(r) = ratio {
        let each: Vec<String> = ratios
            .iter()
            .map(|r| format!("{:.1}%", r * 100.0))
            .collect();
        println!(
            "shardfeed / bare: {:.1}% of the bare-insert rate, the median of {} round(s): {} \
             (target >= {:.0}%: {})",
            r * 100.0,
            ratios.len(),
            each.join(", "),
            TARGET_RATIO * 100.0,
            if r >= TARGET_RATIO { "met" } else { "NOT met" }
        );
    }
    // Every round counts for errors, not only the median one.
    let phases = || {
        rounds
            .iter()
            .flat_map(|r| r.grpc.iter().chain(r.bare.iter()))
    };
    let error_lines: Vec<String> = phases().flat_map(Summary::error_lines).collect();
    if !error_lines.is_empty() {
        println!("errors:");
        for line in &error_lines {
            println!("  {line}");
        }
    }

    let summary = JsonSummary::new(args, rounds, median);
    let summary = serde_json::to_string(&summary).context("encoding the JSON summary")?;
    println!("{summary}");

    let failures: Vec<String> = phases().filter_map(Summary::failure).collect();
    if !failures.is_empty() {
        bail!("the run does not count: {}", failures.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn phase(ops_per_s: f64) -> Summary {
        Summary {
            label: String::new(),
            requests: 1,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            ops_per_s,
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms: 1.0,
            max_ms: 1.0,
        }
    }

    fn round_of(grpc: Option<f64>, bare: Option<f64>) -> Round {
        Round {
            grpc: grpc.map(phase),
            bare: bare.map(phase),
        }
    }

    #[test]
    fn the_round_with_the_median_ratio_is_reported() {
        let rounds = [
            round_of(Some(75.0), Some(100.0)),
            round_of(Some(140.0), Some(200.0)),
            round_of(Some(73.0), Some(100.0)),
        ];
        let median = median_round(&rounds).unwrap();
        assert_eq!(median.ratio(), Some(0.73));
        // An even count: the lower middle one, so a lucky round cannot tip it.
        let two = [
            round_of(Some(80.0), Some(100.0)),
            round_of(Some(60.0), Some(100.0)),
        ];
        assert_eq!(median_round(&two).unwrap().ratio(), Some(0.6));
        // One phase alone: the median by its rate.
        let grpc_only = [
            round_of(Some(9.0), None),
            round_of(Some(7.0), None),
            round_of(Some(8.0), None),
        ];
        let median = median_round(&grpc_only).unwrap();
        assert_eq!(median.grpc.as_ref().unwrap().ops_per_s, 8.0);
        assert!(median_round(&[]).is_none());
    }

    #[test]
    fn the_summary_keeps_the_flat_keys_and_nulls_a_phase_not_run() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: IngestBenchArgs,
        }
        let args = Cli::try_parse_from(["bench", "--only", "grpc", "--rounds", "1"])
            .unwrap()
            .args;
        let rounds = [round_of(Some(75.0), None)];
        let json = serde_json::to_value(JsonSummary::new(&args, &rounds, &rounds[0])).unwrap();
        assert_eq!(json["bench"], "ingest");
        assert_eq!(json["posts_per_s"], 75.0);
        assert_eq!(json["p50_ms"], 1.0);
        assert_eq!(json["requests"], 1);
        assert_eq!(json["errors_by_code"], serde_json::json!({}));
        assert!(json["bare_insert_per_s"].is_null());
        assert!(json["bare_p99_ms"].is_null() && json["bare_requests"].is_null());
        assert!(json["ratio"].is_null());
        assert_eq!(json["round_ratios"], serde_json::json!([]));
        assert_eq!(json["only"], "grpc");
        assert_eq!(json["duration_s"], 8);
        assert_eq!(json["warmup_s"], 2);
        assert_eq!(json["concurrency"], 128);
        assert!(json.get("ingest").is_none() && json.get("postgres_url").is_none());
    }
}
