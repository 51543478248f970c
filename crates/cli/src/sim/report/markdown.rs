//! The markdown page of the simulation's report.

use std::fmt::Write as _;

use super::format::{grouped, grouped_count, md_escape, one_line, rate};
use super::{
    hot_authors, master_rows, node_figure, rows, targets, BUSIEST_NOTE, CHART_TITLE, OFF_HEADING,
    ON_HEADING,
};
use crate::sim::figures::{RunFigures, Workload};

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{hot, mitigated};
    use super::*;

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
}
