//! The report of `shardfeed sim`: the side-by-side table printed after the two measured runs
//! (mitigation off, mitigation on), the markdown page with its SVG chart of the load on every
//! Redis master, and the check of the simulation's targets.
//!
//! Numbers follow one convention everywhere: rates with no decimals and thousands separators
//! (`12,345`), milliseconds with one decimal, ratios with two, percentages with one. A figure
//! that was not measured (a `None`, or a value that is not finite) prints as `-`.
//!
//! Masters are matched across the two runs by address; the busiest master of a run (most
//! commands/s) is marked with `*`.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::figures::{NodeFigures, RunFigures, Workload};

/// The files [`write`] creates in its directory.
const MARKDOWN_FILE: &str = "hotspot-report.md";
const SVG_FILE: &str = "hotspot-nodes.svg";

const OFF_HEADING: &str = "mitigation off";
const ON_HEADING: &str = "mitigation on";
/// What a figure that was not measured prints as.
const MISSING: &str = "-";
const BUSIEST_NOTE: &str = "busiest master of the run (most commands/s)";
const CHART_TITLE: &str = "Commands/s per Redis master: mitigation off vs on";

/// The simulation's targets (see [`targets`]).
const TARGET_SKEW_OFF_MIN: f64 = 2.0;
const TARGET_SKEW_ON_MAX: f64 = 1.3;
const TARGET_FEEDS_SPEEDUP: f64 = 2.0;
const TARGET_LAG_P99_MS: f64 = 1000.0;

/// Hot-author ranks listed per master before the rest are only counted.
const MAX_HOT_AUTHORS_SHOWN: usize = 8;

/// The side-by-side plain-text table printed to stdout: one column per run, one row per figure
/// (the rows of the markdown "Result" table), then the per-master block: commands/s and CPU %
/// of each master in both runs, the busiest master of each run marked with `*`, and the
/// hot authors (popularity ranks) whose slots the master owns.
pub fn table(off: &RunFigures, on: &RunFigures) -> String {
    let figures: Vec<Vec<String>> = rows(off, on)
        .into_iter()
        .map(|row| vec![row.label.to_owned(), row.off, row.on])
        .collect();
    let mut out = render_text(
        &["", OFF_HEADING, ON_HEADING],
        &figures,
        &[Align::Left, Align::Right, Align::Right],
    );
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
    let lines: Vec<Vec<String>> = masters
        .iter()
        .map(|m| {
            vec![
                m.addr.to_owned(),
                mark(
                    node_figure(m.off, |n| rate(n.commands_per_s)),
                    m.off_busiest,
                ),
                mark(node_figure(m.on, |n| rate(n.commands_per_s)), m.on_busiest),
                node_figure(m.off, |n| grouped(n.cpu_percent, 1)),
                node_figure(m.on, |n| grouped(n.cpu_percent, 1)),
                hot_authors(m.off, m.on),
            ]
        })
        .collect();
    out.push_str(&render_text(
        &[
            "master",
            "commands/s off",
            "commands/s on",
            "CPU % off",
            "CPU % on",
            "hot authors (rank)",
        ],
        &lines,
        &[
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Left,
        ],
    ));
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
    fs::write(dir.join(SVG_FILE), svg(off, on))?;
    let path = dir.join(MARKDOWN_FILE);
    fs::write(&path, markdown(workload, off, on, SVG_FILE))?;
    Ok(path)
}

/// The chart of the report, a self-contained SVG 1.1 document (760 × 420, generic
/// `sans-serif` font, no scripts): a grouped bar chart of commands/s, one group per master
/// labelled with its address and, below it, the CPU % of both runs; a dashed line per run at
/// that run's mean commands/s over its masters; a y axis with 4 or 5 round ticks; a legend.
///
/// It draws exactly `3 + bars` `<rect` elements: the background, the two legend swatches, then
/// one bar per master and run that measured it (so `2 × masters` bars when both runs saw the
/// same masters; a master missing from a run has no bar for that run).
pub fn svg(off: &RunFigures, on: &RunFigures) -> String {
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 420.0;
    const LEFT: f64 = 78.0;
    const RIGHT: f64 = 740.0;
    const TOP: f64 = 72.0;
    const BOTTOM: f64 = 330.0;

    let masters = master_rows(off, on);
    let means = [
        (OFF_HEADING, Run::Off.colour(), mean_commands(off)),
        (ON_HEADING, Run::On.colour(), mean_commands(on)),
    ];
    let highest = masters
        .iter()
        .flat_map(|m| [m.off, m.on])
        .flatten()
        .map(|n| n.commands_per_s)
        .chain(means.iter().filter_map(|(_, _, mean)| *mean))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let axis = Axis::for_highest(highest);
    // Not finite or negative values sit on the baseline; values above the axis top at the top.
    let y_of = |value: f64| BOTTOM - (value.max(0.0) / axis.top).min(1.0) * (BOTTOM - TOP);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, "<title>{}</title>", xml_escape(CHART_TITLE));
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="26" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        xml_escape(CHART_TITLE)
    );

    // Legend: a swatch per run, then a dashed line per run's mean.
    let mut x = LEFT;
    let legend_y = 50.0;
    for run in [Run::Off, Run::On] {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
            legend_y - 10.0,
            run.colour()
        );
        let label = run.heading();
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
            x + 17.0,
            xml_escape(label)
        );
        x += 17.0 + text_width(label, 12.0) + 22.0;
    }
    for (run, (_, colour, mean)) in [Run::Off, Run::On].into_iter().zip(&means) {
        let label = format!("mean {}: {}", run.short(), opt(*mean, rate));
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="6 4"/>"#,
            legend_y - 4.0,
            x + 24.0,
            legend_y - 4.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
            x + 29.0,
            xml_escape(&label)
        );
        x += 29.0 + text_width(&label, 12.0) + 22.0;
    }

    // Y axis: grid lines and labels at round values, the axis title, then both axes.
    for i in 0..=axis.intervals {
        let value = axis.step * i as f64;
        let y = y_of(value);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#e3e3e3" stroke-width="1"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"#,
            LEFT - 8.0,
            y + 4.0,
            xml_escape(&axis.label(value))
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="18" y="{0:.1}" text-anchor="middle" font-size="11" transform="rotate(-90 18 {0:.1})">commands/s</text>"#,
        (TOP + BOTTOM) / 2.0
    );
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BOTTOM}" stroke="#555555" stroke-width="1"/>"##
    );
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" stroke="#555555" stroke-width="1"/>"##
    );

    // One group per master: two bars, the address and the CPU % below. The values over the bars
    // are drawn at the end, over the mean lines.
    if masters.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#777777">no Redis master figures</text>"##,
            (LEFT + RIGHT) / 2.0,
            (TOP + BOTTOM) / 2.0
        );
    }
    let group_width = (RIGHT - LEFT) / masters.len().max(1) as f64;
    let bar_width = (group_width * 0.32).min(56.0);
    let gap = (group_width * 0.04).min(6.0);
    let mut values = String::new();
    for (i, master) in masters.iter().enumerate() {
        let centre = LEFT + group_width * (i as f64 + 0.5);
        for (run, node, bar_x) in [
            (Run::Off, master.off, centre - gap / 2.0 - bar_width),
            (Run::On, master.on, centre + gap / 2.0),
        ] {
            let Some(node) = node else { continue };
            let top = y_of(node.commands_per_s);
            let value = rate(node.commands_per_s);
            let tooltip = format!(
                "{}, {}: {value} commands/s, CPU {}%",
                master.addr,
                run.heading(),
                grouped(node.cpu_percent, 1)
            );
            let _ = writeln!(
                out,
                r#"<rect x="{bar_x:.1}" y="{top:.1}" width="{bar_width:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                BOTTOM - top,
                run.colour(),
                xml_escape(&tooltip)
            );
            // A white outline under the figure keeps it legible over a mean line.
            for paint in [
                r##"stroke="#ffffff" stroke-width="3""##,
                r##"fill="#333333""##,
            ] {
                let _ = writeln!(
                    values,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" {paint}>{}</text>"#,
                    bar_x + bar_width / 2.0,
                    top - 4.0,
                    xml_escape(&value)
                );
            }
        }
        let (addr, size) = fit_label(master.addr, group_width - 6.0);
        let _ = writeln!(
            out,
            r#"<text x="{centre:.1}" y="{:.1}" text-anchor="middle" font-size="{size:.1}">{}</text>"#,
            BOTTOM + 16.0,
            xml_escape(&addr)
        );
        for (run, node, dy) in [(Run::Off, master.off, 31.0), (Run::On, master.on, 44.0)] {
            let cpu = node_figure(node, |n| format!("{}%", grouped(n.cpu_percent, 1)));
            let _ = writeln!(
                out,
                r#"<text x="{centre:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="{}">{}</text>"#,
                BOTTOM + dy,
                run.colour(),
                xml_escape(&format!("CPU {}: {cpu}", run.short()))
            );
        }
    }

    // The mean lines go over the bars, the figures over both.
    for (heading, colour, mean) in &means {
        let Some(mean) = mean.filter(|m| m.is_finite()) else {
            continue;
        };
        let y = y_of(mean);
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"><title>{}</title></line>"#,
            xml_escape(&format!("mean, {heading}: {} commands/s", rate(mean)))
        );
    }
    out.push_str(&values);

    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="404" text-anchor="middle" font-size="11" fill="#555555">Redis master (below: CPU, percent of one core)</text>"##,
        (LEFT + RIGHT) / 2.0
    );
    out.push_str("</svg>\n");
    out
}

/// The markdown page of the report: the workload, the side-by-side figures, the chart (linked
/// by the relative name `svg_file_name`), the per-master figures and the targets, each with
/// its measured value and whether it is met. The workload's notes are copied as bullet points
/// as they are (markdown in them is kept).
pub fn markdown(
    workload: &Workload,
    off: &RunFigures,
    on: &RunFigures,
    svg_file_name: &str,
) -> String {
    let mut out = String::from("# shardfeed hot-partition simulation\n\n## Workload\n\n");
    let workload_lines = [
        ("users", grouped_count(workload.users)),
        (
            "Zipf exponent of follows and posts",
            grouped(workload.zipf_exponent, 2),
        ),
        ("mean followees", grouped(workload.mean_followees, 1)),
        ("posts per author", grouped_count(workload.posts_per_author)),
        ("concurrency", grouped_count(workload.concurrency)),
        ("seconds per run", grouped(workload.seconds_per_run, 1)),
        (
            "mix",
            format!(
                "{}% home feeds, {}% profile views (`GetUserTimeline`), {}% posts",
                grouped(workload.feed_share, 1),
                grouped(workload.view_share, 1),
                grouped(workload.post_share, 1)
            ),
        ),
    ];
    for (what, value) in workload_lines {
        let _ = writeln!(out, "- {what}: {value}");
    }
    if !workload.notes.is_empty() {
        out.push_str("\nNotes:\n\n");
        for note in &workload.notes {
            let _ = writeln!(out, "- {}", one_line(note));
        }
    }

    out.push_str("\n## Result\n\n");
    let _ = writeln!(out, "| | {OFF_HEADING} | {ON_HEADING} |\n|---|---:|---:|");
    for row in rows(off, on) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            md_escape(row.label),
            md_escape(&row.off),
            md_escape(&row.on)
        );
    }
    let target = if svg_file_name.contains([' ', '(', ')', '<', '>']) {
        format!(
            "<{}>",
            svg_file_name.replace('<', "%3C").replace('>', "%3E")
        )
    } else {
        svg_file_name.to_owned()
    };
    let _ = writeln!(out, "\n![{}]({target})", md_escape(CHART_TITLE));

    out.push_str("\n## Per master\n\n");
    let masters = master_rows(off, on);
    if masters.is_empty() {
        out.push_str("No Redis master figures.\n");
    } else {
        out.push_str(
            "| master | commands/s off | commands/s on | CPU % off | CPU % on | hot authors (rank) |\n\
             |---|---:|---:|---:|---:|---|\n",
        );
        let mark = |text: String, busiest: bool| {
            if busiest {
                format!("{} \\*", md_escape(&text))
            } else {
                md_escape(&text)
            }
        };
        for m in &masters {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                md_escape(m.addr),
                mark(
                    node_figure(m.off, |n| rate(n.commands_per_s)),
                    m.off_busiest
                ),
                mark(node_figure(m.on, |n| rate(n.commands_per_s)), m.on_busiest),
                md_escape(&node_figure(m.off, |n| grouped(n.cpu_percent, 1))),
                md_escape(&node_figure(m.on, |n| grouped(n.cpu_percent, 1))),
                md_escape(&hot_authors(m.off, m.on))
            );
        }
        let _ = writeln!(out, "\n\\* {BUSIEST_NOTE}.");
    }

    out.push_str("\n## Targets\n\n| target | measured | result |\n|---|---|---|\n");
    let checks = targets(off, on);
    for (description, measured, met) in &checks {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            md_escape(description),
            md_escape(measured),
            if *met { "met" } else { "**NOT met**" }
        );
    }
    let met = checks.iter().filter(|(_, _, met)| *met).count();
    let _ = writeln!(out, "\n{met} of {} targets met.", checks.len());
    out
}

/// The simulation's targets, checked against the two runs: `(description, measured value as
/// text, met)` for, in this order,
///
/// 1. skew off ≥ 2: the workload does make a hot node;
/// 2. skew on ≤ 1.3;
/// 3. feeds/s on ≥ 2× off (not met when the off run served no feeds);
/// 4. visibility lag p99 ≤ 1000 ms, in every run that measured it, and the on run must have;
/// 5. feeds wrong = 0 in both runs, with at least one feed checked.
///
/// A figure that is not finite never meets its target.
pub fn targets(off: &RunFigures, on: &RunFigures) -> Vec<(String, String, bool)> {
    let speedup_known = off.feeds.per_s > 0.0 && on.feeds.per_s.is_finite();
    let speedup = if speedup_known {
        format!("{}×", ratio(on.feeds.per_s / off.feeds.per_s))
    } else {
        MISSING.to_owned()
    };
    let speedup_text = format!(
        "{speedup} ({} → {} feeds/s)",
        rate(off.feeds.per_s),
        rate(on.feeds.per_s)
    );

    let lag_met = on.lag_p99_ms.is_some()
        && [off.lag_p99_ms, on.lag_p99_ms]
            .into_iter()
            .flatten()
            .all(|lag| lag <= TARGET_LAG_P99_MS);
    let lag_text = |lag: Option<f64>| match lag {
        Some(lag) if lag.is_finite() => format!("{} ms", millis(lag)),
        _ => MISSING.to_owned(),
    };

    let wrong_met =
        off.feeds_wrong == 0 && on.feeds_wrong == 0 && off.feeds_checked + on.feeds_checked > 0;
    let wrong_text = |run: &RunFigures| {
        format!(
            "{} wrong of {}",
            grouped_count(run.feeds_wrong),
            grouped_count(run.feeds_checked)
        )
    };

    vec![
        (
            format!("skew off ≥ {TARGET_SKEW_OFF_MIN} (the workload makes a hot node)"),
            ratio(off.skew),
            off.skew >= TARGET_SKEW_OFF_MIN,
        ),
        (
            format!("skew on ≤ {TARGET_SKEW_ON_MAX}"),
            ratio(on.skew),
            on.skew <= TARGET_SKEW_ON_MAX,
        ),
        (
            format!("feeds/s on ≥ {TARGET_FEEDS_SPEEDUP}× off"),
            speedup_text,
            speedup_known && on.feeds.per_s >= TARGET_FEEDS_SPEEDUP * off.feeds.per_s,
        ),
        (
            format!("visibility lag p99 ≤ {TARGET_LAG_P99_MS} ms"),
            format!(
                "off {}, on {}",
                lag_text(off.lag_p99_ms),
                lag_text(on.lag_p99_ms)
            ),
            lag_met,
        ),
        (
            "feeds wrong = 0".to_owned(),
            format!("off {}, on {}", wrong_text(off), wrong_text(on)),
            wrong_met,
        ),
    ]
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

/// One of the two measured runs, as the chart draws it.
#[derive(Clone, Copy)]
enum Run {
    Off,
    On,
}

impl Run {
    fn heading(self) -> &'static str {
        match self {
            Run::Off => OFF_HEADING,
            Run::On => ON_HEADING,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Run::Off => "off",
            Run::On => "on",
        }
    }

    /// Colour-blind-safe pair (ColorBrewer "Dark2").
    fn colour(self) -> &'static str {
        match self {
            Run::Off => "#d95f02",
            Run::On => "#1b9e77",
        }
    }
}

/// The chart's y axis: `intervals + 1` ticks at multiples of a round `step` (1, 2, 2.5 or 5
/// times a power of ten), from 0 to `top`, the first such value at or above the highest one.
#[derive(Debug, Clone, Copy)]
struct Axis {
    step: f64,
    top: f64,
    intervals: usize,
}

impl Axis {
    /// An axis with 4 or 5 ticks covering `0..=highest` (0 to 4 when there is nothing to show).
    fn for_highest(highest: f64) -> Self {
        let highest = if highest.is_finite() && highest > 0.0 {
            highest
        } else {
            4.0
        };
        let raw = highest / 4.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|step| *step >= raw * (1.0 - 1e-9))
            .unwrap_or(10.0 * magnitude);
        // step >= highest / 4 and step < highest / 2: 3 or 4 intervals.
        let intervals = ((highest / step) - 1e-9).ceil().clamp(3.0, 4.0);
        Axis {
            step,
            top: step * intervals,
            intervals: intervals as usize,
        }
    }

    /// A tick label: as many decimals as the step needs, thousands separated.
    fn label(&self, value: f64) -> String {
        let decimals = (0..6)
            .find(|d| {
                let scaled = self.step * 10f64.powi(*d);
                (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
            })
            .unwrap_or(6);
        grouped(value, decimals as usize)
    }
}

/// A rate: no decimals, thousands separated (`12,345`).
fn rate(value: f64) -> String {
    grouped(value, 0)
}

/// Milliseconds: one decimal.
fn millis(value: f64) -> String {
    grouped(value, 1)
}

/// A ratio: two decimals.
fn ratio(value: f64) -> String {
    grouped(value, 2)
}

/// A percentage (already × 100): one decimal and `%`.
fn percent(value: f64) -> String {
    if value.is_finite() {
        format!("{}%", grouped(value, 1))
    } else {
        MISSING.to_owned()
    }
}

/// `format(value)`, or `-` when it was not measured.
fn opt(value: Option<f64>, format: fn(f64) -> String) -> String {
    value.map_or_else(|| MISSING.to_owned(), format)
}

/// A count, thousands separated.
fn grouped_count(count: impl std::fmt::Display) -> String {
    group_digits(&count.to_string())
}

/// `value` with `decimals` decimals and commas between thousands (`12,345.6`), `-` when it is
/// not finite. A value that rounds to zero has no minus sign.
fn grouped(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return MISSING.to_owned();
    }
    let text = format!("{value:.decimals$}");
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (rest.bytes().any(|b| b.is_ascii_digit() && b != b'0'), rest),
        None => (false, text.as_str()),
    };
    let (int, fraction) = unsigned.split_at(unsigned.find('.').unwrap_or(unsigned.len()));
    let mut out = String::with_capacity(text.len() + int.len() / 3 + 1);
    if negative {
        out.push('-');
    }
    out.push_str(&group_digits(int));
    out.push_str(fraction);
    out
}

/// Commas between the thousands of a string of digits.
fn group_digits(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// How a column of [`render_text`] is aligned.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// A plain-text table: the headers, a rule of dashes under each, then the lines; columns two
/// spaces apart, no trailing blanks.
fn render_text(headers: &[&str], lines: &[Vec<String>], aligns: &[Align]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for line in lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format_line = |cells: &mut dyn Iterator<Item = &str>| {
        let text = cells
            .zip(&widths)
            .zip(aligns.iter().chain(std::iter::repeat(&Align::Right)))
            .map(|((cell, &width), align)| match align {
                Align::Left => format!("{cell:<width$}"),
                Align::Right => format!("{cell:>width$}"),
            })
            .collect::<Vec<_>>()
            .join("  ");
        format!("{}\n", text.trim_end())
    };
    let mut out = format_line(&mut headers.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format_line(&mut rule.iter().map(String::as_str)));
    for line in lines {
        out.push_str(&format_line(&mut line.iter().map(String::as_str)));
    }
    out
}

/// Roughly how wide `text` is drawn in a sans-serif font of `size` pixels, for the legend.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.56
}

/// `text` and a font size (11 down to 8 pixels) that fit it in `width`; when even the smallest
/// size is too wide, its start is cut and replaced by `…` (the end of an address, its port,
/// is what tells masters apart).
fn fit_label(text: &str, width: f64) -> (String, f64) {
    const LARGEST: f64 = 11.0;
    const SMALLEST: f64 = 8.0;
    let size = (width / text_width(text, 1.0)).clamp(SMALLEST, LARGEST);
    if text_width(text, size) <= width {
        return (text.to_owned(), size);
    }
    let keep = ((width / text_width("x", size)) as usize).saturating_sub(1);
    let chars: Vec<char> = text.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(keep)..].iter().collect();
    (format!("…{tail}"), size)
}

/// `text` made safe inside SVG text and attribute values.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` made literal inside a markdown table cell: markdown punctuation backslash-escaped,
/// line breaks turned into spaces.
fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in one_line(text).chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '|' | '<' | '>' | '[' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` on one line: line breaks become spaces.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::super::figures::Latency;
    use super::*;

    fn node(addr: &str, commands_per_s: f64, cpu_percent: f64) -> NodeFigures {
        NodeFigures {
            addr: addr.to_owned(),
            commands_per_s,
            cpu_percent,
            hot_authors: Vec::new(),
        }
    }

    fn latency(per_s: f64) -> Latency {
        Latency {
            count: (per_s * 30.0) as u64,
            errors: 0,
            per_s,
            p50_ms: 2.25,
            p99_ms: 14.0,
        }
    }

    /// A run whose targets are all met when used as (off, on) = (hot(), mitigated()).
    fn hot() -> RunFigures {
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

    fn mitigated() -> RunFigures {
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

    fn line_of<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in\n{text}"))
    }

    /// Every tag is closed in order, and no text or attribute holds a raw `<` or `&`.
    fn assert_well_formed(xml: &str) {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = xml;
        while let Some(start) = rest.find('<') {
            assert_entities(&rest[..start]);
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "raw < inside tag {tag:?}");
            assert_entities(tag);
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name.trim()), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().expect("empty tag"));
            }
            rest = &rest[end + 1..];
        }
        assert_entities(rest);
        assert!(open.is_empty(), "unclosed elements {open:?}");
    }

    fn assert_entities(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&entity),
                "raw & in {text:?}"
            );
        }
    }

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(rate(12_345.4), "12,345");
        assert_eq!(rate(999.5), "1,000");
        assert_eq!(rate(-1_234_567.0), "-1,234,567");
        assert_eq!(rate(-0.2), "0");
        assert_eq!(millis(999.96), "1,000.0");
        assert_eq!(ratio(2.0), "2.00");
        assert_eq!(percent(87.26), "87.3%");
        assert_eq!(rate(f64::NAN), "-");
        assert_eq!(grouped_count(1_000_000u32), "1,000,000");
        assert_eq!(grouped_count(0u32), "0");
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
    fn svg_draws_two_bars_per_master_and_escapes_text() {
        let mut off = hot();
        off.nodes[0].addr = "<evil & \"co\">:1".to_owned();
        let mut on = mitigated();
        on.nodes[1].addr = off.nodes[0].addr.clone();
        let chart = svg(&off, &on);
        assert!(chart.starts_with("<svg"));
        assert!(chart.trim_end().ends_with("</svg>"));
        assert_well_formed(&chart);
        // Background + two legend swatches + 2 bars × 3 masters.
        assert_eq!(chart.matches("<rect").count(), 3 + 2 * 3);
        assert!(chart.contains("&lt;evil &amp; &quot;co&quot;&gt;:1"));
        assert!(!chart.contains("<evil"));
        assert!(chart.contains(CHART_TITLE));
        assert_eq!(
            chart.matches("stroke-dasharray").count(),
            4,
            "2 legend + 2 mean lines"
        );
        assert!(chart.contains("CPU off: 97.5%") && chart.contains("CPU on: 50.0%"));
    }

    #[test]
    fn svg_leaves_out_the_bar_of_a_master_a_run_did_not_see() {
        let mut on = mitigated();
        on.nodes.pop();
        let chart = svg(&hot(), &on);
        assert_well_formed(&chart);
        assert_eq!(chart.matches("<rect").count(), 3 + 5);
        assert!(chart.contains("CPU on: -"));

        let empty = svg(&RunFigures::default(), &RunFigures::default());
        assert_well_formed(&empty);
        assert_eq!(empty.matches("<rect").count(), 3);
    }

    #[test]
    fn long_addresses_are_shrunk_then_cut_from_the_start() {
        assert_eq!(
            fit_label("127.0.0.1:7000", 200.0),
            ("127.0.0.1:7000".to_owned(), 11.0)
        );
        let (label, size) = fit_label("127.0.0.1:7000", 70.0);
        assert_eq!(label, "127.0.0.1:7000");
        assert!((8.0..11.0).contains(&size) && text_width(&label, size) <= 70.0);
        let (label, size) = fit_label("redis-node-5.cache.internal:7005", 70.0);
        assert_eq!(size, 8.0);
        assert!(
            label.starts_with('…') && label.ends_with(":7005"),
            "{label}"
        );
        assert!(text_width(&label, size) <= 70.0, "{label}");
    }

    #[test]
    fn axis_has_four_or_five_round_ticks_covering_the_highest_value() {
        for highest in [
            0.0, 0.3, 1.0, 5.0, 9.99, 10.0, 1_234.0, 20_000.0, 99_999.0, 2.5e7,
        ] {
            let axis = Axis::for_highest(highest);
            assert!((3..=4).contains(&axis.intervals), "{highest}: {axis:?}");
            assert!(axis.top >= highest * (1.0 - 1e-9), "{highest}: {axis:?}");
            let mantissa = axis.step / 10f64.powf(axis.step.log10().floor());
            assert!(
                [1.0, 2.0, 2.5, 5.0]
                    .iter()
                    .any(|m| (m - mantissa).abs() < 1e-9),
                "{highest}: {axis:?}"
            );
        }
        let axis = Axis::for_highest(20_000.0);
        assert_eq!((axis.step, axis.top), (5_000.0, 20_000.0));
        assert_eq!(axis.label(15_000.0), "15,000");
        assert_eq!(Axis::for_highest(9.0).label(7.5), "7.5");
    }

    #[test]
    fn targets_met() {
        let checks = targets(&hot(), &mitigated());
        assert_eq!(checks.len(), 5);
        assert!(checks.iter().all(|(_, _, met)| *met), "{checks:?}");
        assert_eq!(checks[0].1, "2.00");
        assert_eq!(checks[1].1, "1.10");
        assert_eq!(checks[2].1, "2.00× (1,000 → 2,000 feeds/s)");
        assert_eq!(checks[3].1, "off 12.0 ms, on 1,000.0 ms");
        assert_eq!(checks[4].1, "off 0 wrong of 500, on 0 wrong of 500");
    }

    #[test]
    fn targets_not_met() {
        let mut off = hot();
        off.skew = 1.9;
        let mut on = mitigated();
        on.skew = 1.31;
        on.feeds.per_s = 1_999.0;
        on.lag_p99_ms = Some(1_000.1);
        on.feeds_wrong = 3;
        let checks = targets(&off, &on);
        assert!(checks.iter().all(|(_, _, met)| !*met), "{checks:?}");
        assert_eq!(checks[4].1, "off 0 wrong of 500, on 3 wrong of 500");

        // Not measured is not met: no lag in the on run, no feed checked, no feed served.
        let mut off = hot();
        off.feeds.per_s = 0.0;
        off.feeds_checked = 0;
        let mut on = mitigated();
        on.lag_p99_ms = None;
        on.feeds_checked = 0;
        let checks = targets(&off, &on);
        assert_eq!(
            checks.iter().map(|(_, _, met)| *met).collect::<Vec<_>>(),
            [true, true, false, false, false]
        );
        assert_eq!(checks[2].1, "- (0 → 2,000 feeds/s)");
        assert_eq!(checks[3].1, "off 12.0 ms, on -");
    }

    #[test]
    fn markdown_has_every_section() {
        let workload = Workload {
            users: 100_000,
            zipf_exponent: 1.1,
            notes: vec!["The top 10 authors all hash to one master.".to_owned()],
            ..Workload::default()
        };
        let mut on = mitigated();
        on.skew = 1.5;
        let page = markdown(&workload, &hot(), &on, "chart.svg");
        assert!(page.starts_with("# shardfeed hot-partition simulation\n"));
        for heading in ["## Workload", "## Result", "## Per master", "## Targets"] {
            assert!(page.contains(&format!("\n{heading}\n")), "{heading}");
        }
        assert!(page.contains("- users: 100,000\n- Zipf exponent of follows and posts: 1.10\n"));
        assert!(page.contains("\nNotes:\n\n- The top 10 authors all hash to one master.\n"));
        assert!(page.contains("| feeds/s | 1,000 | 2,000 |"));
        assert!(page.contains("](chart.svg)"));
        assert!(page.contains("| 10.0.0.2:7001 | 20,000 \\* | 10,000 |"));
        assert!(page.contains("| skew on ≤ 1.3 | 1.50 | **NOT met** |"));
        assert!(page.contains("\n4 of 5 targets met.\n"));
    }

    /// A fresh directory under the system's temp dir, removed (with its content) on drop.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new() -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            ScratchDir(std::env::temp_dir().join(format!(
                "shardfeed-report-test-{}-{nanos}",
                std::process::id()
            )))
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn write_creates_both_files() {
        let scratch = ScratchDir::new();
        // A directory that does not exist yet, two levels down.
        let dir = scratch.0.join("report");
        let path = write(&dir, &Workload::default(), &hot(), &mitigated()).expect("write");
        assert_eq!(path, dir.join("hotspot-report.md"));
        let page = fs::read_to_string(&path).expect("markdown written");
        assert!(page.contains("](hotspot-nodes.svg)"));
        let chart = fs::read_to_string(dir.join("hotspot-nodes.svg")).expect("svg written");
        assert!(chart.starts_with("<svg"));
        assert_well_formed(&chart);
    }
}
