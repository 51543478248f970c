//! Plain-text tables of figures, as markdown tables so that the same text reads well in a
//! terminal and pasted into a report.

use comfy_table::{presets::ASCII_MARKDOWN, CellAlignment, Table};

use super::summary::Summary;

/// A table with these headers, in the house style.
pub fn table<S: ToString>(headers: impl IntoIterator<Item = S>) -> Table {
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header(
        headers
            .into_iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>(),
    );
    table
}

/// The headers matching [`summary_cells`]: `first`, requests, errors, `rate` (the unit of the
/// rate: `ops/s`, `feeds/s`, …), p50, p90, p99, max, then `extra`.
pub fn summary_table(first: &str, rate: &str, extra: &[&str]) -> Table {
    let mut headers = vec![
        first, "requests", "errors", rate, "p50 ms", "p90 ms", "p99 ms", "max ms",
    ];
    headers.extend_from_slice(extra);
    table(headers)
}

/// The standard row of a phase: label, requests, errors, ops/s, p50, p90, p99, max, then `extra`.
pub fn summary_cells(summary: &Summary, extra: &[String]) -> Vec<String> {
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
    cells
}

/// The table as text, one line per row and a line break at the end; column `i` aligned
/// `aligns[i]`, right-aligned past the end of `aligns`.
pub fn render(mut table: Table, aligns: &[CellAlignment]) -> String {
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_cell_alignment(aligns.get(i).copied().unwrap_or(CellAlignment::Right));
    }
    format!("{table}\n")
}

/// Labels left, figures right: the alignment of most tables.
pub const LABELS_LEFT: &[CellAlignment] = &[CellAlignment::Left];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_markdown() {
        let mut t = table(["what", "n"]);
        t.add_row(["a", "1"]).add_row(["longer", "100"]);
        assert_eq!(
            render(t, LABELS_LEFT),
            "| what   |   n |\n|--------|-----|\n| a      |   1 |\n| longer | 100 |\n"
        );
    }
}
