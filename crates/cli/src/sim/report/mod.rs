//! The report of `shardfeed sim`: the side-by-side table printed after the two measured runs
//! (mitigation off, mitigation on), the markdown page with its SVG chart of the load on every
//! Redis master, and the check of the simulation's targets. Numbers follow one convention
//! everywhere (see [`format`]).
//!
//! Masters are matched across the two runs by address; the busiest master of a run (most
//! commands/s) is marked with `*`.

mod chart;
mod format;
mod markdown;
mod targets;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use comfy_table::CellAlignment::{Left, Right};

use self::format::{grouped, grouped_count, millis, opt, percent, rate, ratio, MISSING};
pub use self::targets::targets;
use super::figures::{NodeFigures, RunFigures, Workload};
use crate::measure::table::{render, table as text_table, LABELS_LEFT};

/// The files [`write`] creates in its directory.
const MARKDOWN_FILE: &str = "hotspot-report.md";
const SVG_FILE: &str = "hotspot-nodes.svg";

const OFF_HEADING: &str = "mitigation off";
const ON_HEADING: &str = "mitigation on";
const BUSIEST_NOTE: &str = "busiest master of the run (most commands/s)";
const CHART_TITLE: &str = "Commands/s per Redis master: mitigation off vs on";

/// Hot-author ranks listed per master before the rest are only counted.
const MAX_HOT_AUTHORS_SHOWN: usize = 8;

/// The side-by-side plain-text table printed to stdout: one column per run, one row per figure
/// (the rows of the markdown "Result" table), then the per-master block: commands/s and CPU %
/// of each master in both runs, the busiest master of each run marked with `*`, and the
/// hot authors (popularity ranks) whose slots the master owns.
pub fn table(off: &RunFigures, on: &RunFigures) -> String {
    let mut figures = text_table(["", OFF_HEADING, ON_HEADING]);
    for row in rows(off, on) {
        figures.add_row([row.label.to_owned(), row.off, row.on]);
    }
    let mut out = render(figures, LABELS_LEFT);
    out.push('\n');

    let masters = master_rows(off, on);
    if masters.is_empty() {
        out.push_str("no Redis master figures\n");
        return out;
    }
    // Unmarked figures are padded as wide as the marker, so that the digits stay aligned.
    let mark = |text: String, busiest: bool| {
        if busiest {
            format!("{text} *")
        } else {
            format!("{text}  ")
        }
    };
    let mut lines = text_table([
        "master",
        "commands/s off",
        "commands/s on",
        "CPU % off",
        "CPU % on",
        "hot authors (rank)",
    ]);
    for m in &masters {
        lines.add_row([
            m.addr.to_owned(),
            mark(
                node_figure(m.off, |n| rate(n.commands_per_s)),
                m.off_busiest,
            ),
            mark(node_figure(m.on, |n| rate(n.commands_per_s)), m.on_busiest),
            node_figure(m.off, |n| grouped(n.cpu_percent, 1)),
            node_figure(m.on, |n| grouped(n.cpu_percent, 1)),
            hot_authors(m.off, m.on),
        ]);
    }
    out.push_str(&render(lines, &[Left, Right, Right, Right, Right, Left]));
    let _ = writeln!(out, "* {BUSIEST_NOTE}");
    out
}

/// Writes `<dir>/hotspot-report.md` and the chart it links to, `<dir>/hotspot-nodes.svg`,
/// creating `dir` if needed; returns the path of the markdown file.
pub fn write(
    dir: &Path,
    workload: &Workload,
    off: &RunFigures,
    on: &RunFigures,
) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    fs::write(
        dir.join(SVG_FILE),
        chart::svg(off, on).map_err(io::Error::other)?,
    )?;
    let path = dir.join(MARKDOWN_FILE);
    fs::write(&path, markdown::markdown(workload, off, on, SVG_FILE))?;
    Ok(path)
}

/// The chart beside the report that [`write`] returned.
pub fn chart_path(report: &Path) -> PathBuf {
    report.with_file_name(SVG_FILE)
}

/// The sentence that closes the simulation (and the demo): where the report and its chart are
/// and what they show, e.g. `report: …/hotspot-report.md, chart: …/hotspot-nodes.svg — the
/// commands/s of each of the 3 Redis masters with the mitigations off and on: skew (busiest
/// master ÷ mean) 2.25 → 1.01, feeds/s 144 → 305, 0 wrong feeds of 100 checked.`
pub fn closing_line(report: &Path, off: &RunFigures, on: &RunFigures) -> String {
    format!(
        "report: {}, chart: {} — the commands/s of each of the {} Redis masters with the \
         mitigations off and on: skew (busiest master ÷ mean) {} → {}, feeds/s {} → {}, {} wrong \
         feeds of {} checked.",
        report.display(),
        chart_path(report).display(),
        off.nodes.len().max(on.nodes.len()),
        ratio(off.skew),
        ratio(on.skew),
        rate(off.feeds.per_s),
        rate(on.feeds.per_s),
        grouped_count(off.feeds_wrong + on.feeds_wrong),
        grouped_count(off.feeds_checked + on.feeds_checked),
    )
}

/// One figure of both runs, as text: a row of [`table`] and of the markdown "Result" table.
struct Row {
    label: &'static str,
    off: String,
    on: String,
}

/// The figures of [`table`] and of the markdown "Result" table, in order.
fn rows(off: &RunFigures, on: &RunFigures) -> Vec<Row> {
    let row = |label: &'static str, figure: fn(&RunFigures) -> String| Row {
        label,
        off: figure(off),
        on: figure(on),
    };
    vec![
        row("duration", |r| format!("{} s", grouped(r.duration_s, 1))),
        row("feeds/s", |r| rate(r.feeds.per_s)),
        row("feed p50 ms", |r| millis(r.feeds.p50_ms)),
        row("feed p99 ms", |r| millis(r.feeds.p99_ms)),
        row("timeline views/s", |r| rate(r.timelines.per_s)),
        row("view p50 ms", |r| millis(r.timelines.p50_ms)),
        row("view p99 ms", |r| millis(r.timelines.p99_ms)),
        row("posts/s", |r| rate(r.posts.per_s)),
        row("post p50 ms", |r| millis(r.posts.p50_ms)),
        row("post p99 ms", |r| millis(r.posts.p99_ms)),
        row("errors (feeds, views, posts)", |r| {
            format!(
                "{}, {}, {}",
                grouped_count(r.feeds.errors),
                grouped_count(r.timelines.errors),
                grouped_count(r.posts.errors)
            )
        }),
        row("skew (commands/s)", |r| ratio(r.skew)),
        row("CPU skew", |r| ratio(r.cpu_skew)),
        row("near-cache hit rate", |r| {
            opt(r.near_cache_hit.map(|hit| hit * 100.0), percent)
        }),
        row("visibility lag p50 ms", |r| opt(r.lag_p50_ms, millis)),
        row("visibility lag p99 ms", |r| opt(r.lag_p99_ms, millis)),
        row("feeds checked", |r| grouped_count(r.feeds_checked)),
        row("feeds wrong", |r| grouped_count(r.feeds_wrong)),
    ]
}

/// One master in the per-master block: its figures in each run (`None` when the run did not
/// see it) and whether it was that run's busiest.
struct MasterRow<'a> {
    addr: &'a str,
    off: Option<&'a NodeFigures>,
    on: Option<&'a NodeFigures>,
    off_busiest: bool,
    on_busiest: bool,
}

/// Every master of either run, matched by address: the off run's order, then the masters only
/// the on run saw.
fn master_rows<'a>(off: &'a RunFigures, on: &'a RunFigures) -> Vec<MasterRow<'a>> {
    let mut addrs: Vec<&str> = Vec::new();
    for node in off.nodes.iter().chain(&on.nodes) {
        if !addrs.contains(&node.addr.as_str()) {
            addrs.push(&node.addr);
        }
    }
    let (busiest_off, busiest_on) = (busiest(off), busiest(on));
    addrs
        .into_iter()
        .map(|addr| MasterRow {
            addr,
            off: off.nodes.iter().find(|n| n.addr == addr),
            on: on.nodes.iter().find(|n| n.addr == addr),
            off_busiest: busiest_off == Some(addr),
            on_busiest: busiest_on == Some(addr),
        })
        .collect()
}

/// The address of the master with the most commands/s in `run` (the first one on a tie), if
/// any master did any work.
fn busiest(run: &RunFigures) -> Option<&str> {
    run.nodes
        .iter()
        .filter(|n| n.commands_per_s.is_finite() && n.commands_per_s > 0.0)
        .fold(None, |best: Option<&NodeFigures>, n| match best {
            Some(b) if b.commands_per_s >= n.commands_per_s => Some(b),
            _ => Some(n),
        })
        .map(|n| n.addr.as_str())
}

/// The mean commands/s over the masters of `run`, if it has any.
fn mean_commands(run: &RunFigures) -> Option<f64> {
    if run.nodes.is_empty() {
        return None;
    }
    let total: f64 = run.nodes.iter().map(|n| n.commands_per_s).sum();
    Some(total / run.nodes.len() as f64)
}

/// `figure` of a master in one run, or `-` when the run did not see it.
fn node_figure(node: Option<&NodeFigures>, figure: impl Fn(&NodeFigures) -> String) -> String {
    node.map_or_else(|| MISSING.to_owned(), figure)
}

/// The hot authors whose slots a master owns, by popularity rank: one list when both runs
/// agree (or only one run saw the master), both lists when they differ.
fn hot_authors(off: Option<&NodeFigures>, on: Option<&NodeFigures>) -> String {
    let list = |ranks: &[i64]| {
        if ranks.is_empty() {
            return MISSING.to_owned();
        }
        let mut text = ranks
            .iter()
            .take(MAX_HOT_AUTHORS_SHOWN)
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if ranks.len() > MAX_HOT_AUTHORS_SHOWN {
            let _ = write!(text, " (+{})", ranks.len() - MAX_HOT_AUTHORS_SHOWN);
        }
        text
    };
    match (off, on) {
        (Some(a), Some(b)) if a.hot_authors != b.hot_authors => {
            format!(
                "off: {}; on: {}",
                list(&a.hot_authors),
                list(&b.hot_authors)
            )
        }
        (Some(n), _) | (None, Some(n)) => list(&n.hot_authors),
        (None, None) => MISSING.to_owned(),
    }
}

#[cfg(test)]
mod fixtures {
    use crate::sim::figures::{Latency, NodeFigures, RunFigures};

    pub fn node(addr: &str, commands_per_s: f64, cpu_percent: f64) -> NodeFigures {
        NodeFigures {
            addr: addr.to_owned(),
            commands_per_s,
            cpu_percent,
            hot_authors: Vec::new(),
        }
    }

    pub fn latency(per_s: f64) -> Latency {
        Latency {
            count: (per_s * 30.0) as u64,
            errors: 0,
            per_s,
            p50_ms: 2.25,
            p99_ms: 14.0,
        }
    }

    /// A run whose targets are all met when used as (off, on) = (hot(), mitigated()).
    pub fn hot() -> RunFigures {
        RunFigures {
            label: "off".to_owned(),
            duration_s: 30.0,
            nodes: vec![
                node("10.0.0.1:7000", 4_000.0, 30.0),
                node("10.0.0.2:7001", 20_000.0, 97.5),
                node("10.0.0.3:7002", 6_000.0, 40.0),
            ],
            skew: 2.0,
            cpu_skew: 1.7,
            feeds: latency(1_000.0),
            timelines: latency(300.0),
            posts: latency(50.0),
            near_cache_hit: None,
            lag_p50_ms: Some(3.0),
            lag_p99_ms: Some(12.0),
            feeds_checked: 500,
            feeds_wrong: 0,
        }
    }

    pub fn mitigated() -> RunFigures {
        RunFigures {
            label: "on".to_owned(),
            // Another order than the off run: masters are matched by address.
            nodes: vec![
                node("10.0.0.3:7002", 11_000.0, 55.0),
                node("10.0.0.1:7000", 12_345.0, 60.0),
                node("10.0.0.2:7001", 10_000.0, 50.0),
            ],
            skew: 1.1,
            cpu_skew: 1.05,
            feeds: latency(2_000.0),
            near_cache_hit: Some(0.873),
            lag_p99_ms: Some(1_000.0),
            ..hot()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{hot, mitigated, node};
    use super::*;

    /// The line of `text` whose first cell is `start`, its cell borders blanked.
    fn line_of(text: &str, start: &str) -> String {
        text.lines()
            .map(|l| l.replace('|', " "))
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in\n{text}"))
    }

    #[test]
    fn table_marks_the_busiest_master_of_each_run() {
        let text = table(&hot(), &mitigated());
        // Off: 10.0.0.2 is busiest; on: 10.0.0.1, despite being second in the on run's order.
        assert_eq!(
            line_of(&text, "10.0.0.2:7001")
                .split_whitespace()
                .collect::<Vec<_>>()[..5],
            ["10.0.0.2:7001", "20,000", "*", "10,000", "97.5"]
        );
        assert_eq!(
            line_of(&text, "10.0.0.1:7000")
                .split_whitespace()
                .collect::<Vec<_>>()[..5],
            ["10.0.0.1:7000", "4,000", "12,345", "*", "30.0"]
        );
        assert!(!line_of(&text, "10.0.0.3:7002").contains('*'));
        assert_eq!(text.matches(" *").count(), 2, "{text}");
    }

    #[test]
    fn table_shows_missing_figures_as_dashes() {
        let mut on = mitigated();
        on.nodes.retain(|n| n.addr != "10.0.0.3:7002");
        on.nodes.push(node("10.0.0.4:7003", 1.0, 1.0));
        on.lag_p50_ms = None;
        let text = table(&hot(), &on);
        assert_eq!(
            line_of(&text, "near-cache hit rate")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["near-cache", "hit", "rate", "-", "87.3%"]
        );
        assert_eq!(
            line_of(&text, "visibility lag p50 ms")
                .split_whitespace()
                .collect::<Vec<_>>()[4..],
            ["3.0", "-"]
        );
        let gone = line_of(&text, "10.0.0.3:7002");
        assert_eq!(gone.split_whitespace().nth(2), Some("-"), "{gone}");
        let new = line_of(&text, "10.0.0.4:7003");
        assert_eq!(new.split_whitespace().nth(1), Some("-"), "{new}");
        assert_eq!(
            line_of(&text, "feeds/s")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["feeds/s", "1,000", "2,000"]
        );
    }

    #[test]
    fn write_creates_both_files() {
        let scratch = tempfile::tempdir().expect("a temp dir");
        // A directory that does not exist yet, two levels down.
        let dir = scratch.path().join("sim").join("report");
        let path = write(&dir, &Workload::default(), &hot(), &mitigated()).expect("write");
        assert_eq!(path, dir.join("hotspot-report.md"));
        let page = fs::read_to_string(&path).expect("markdown written");
        assert!(page.contains("](hotspot-nodes.svg)"));
        let chart = fs::read_to_string(dir.join("hotspot-nodes.svg")).expect("svg written");
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn the_closing_line_says_where_the_files_are_and_what_they_show() {
        let line = closing_line(
            Path::new("/r/.local/sim/hotspot-report.md"),
            &hot(),
            &mitigated(),
        );
        assert!(
            line.starts_with(
                "report: /r/.local/sim/hotspot-report.md, chart: /r/.local/sim/hotspot-nodes.svg — "
            ),
            "{line}"
        );
        assert!(line.contains("of each of the 3 Redis masters"), "{line}");
        assert!(line.contains("feeds/s 1,000 → 2,000"), "{line}");
        assert!(
            !line.contains('\n') && line.ends_with(" checked."),
            "{line}"
        );
    }
}
