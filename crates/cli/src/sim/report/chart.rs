//! The chart of the report, an SVG document drawn with `plotters`: a grouped bar chart of
//! commands/s, one group per master labelled with its address and, below it, the CPU % of both
//! runs; a dashed line per run at that run's mean commands/s over its masters; a legend.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::format::{grouped, opt, rate};
use super::{master_rows, mean_commands, node_figure, CHART_TITLE, OFF_HEADING, ON_HEADING};
use crate::sim::figures::RunFigures;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 420;
/// Room above the highest bar, for its figure and the legend.
const HEADROOM: f64 = 1.4;
/// Each bar's share of its master's group, and where the pair starts in the group.
const BAR_WIDTH: f64 = 0.34;
const PAIR_START: f64 = 0.15;

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
    fn colour(self) -> RGBColor {
        match self {
            Run::Off => RGBColor(0xd9, 0x5f, 0x02),
            Run::On => RGBColor(0x1b, 0x9e, 0x77),
        }
    }
}

/// The chart as an SVG document: one bar per master and run that measured it (a master missing
/// from a run has no bar for that run).
pub fn svg(off: &RunFigures, on: &RunFigures) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, off, on)?;
        root.present()?;
    }
    Ok(out)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    off: &RunFigures,
    on: &RunFigures,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let masters = master_rows(off, on);
    let means = [(Run::Off, mean_commands(off)), (Run::On, mean_commands(on))];
    let highest = masters
        .iter()
        .flat_map(|m| [m.off, m.on])
        .flatten()
        .map(|n| n.commands_per_s)
        .chain(means.iter().filter_map(|(_, mean)| *mean))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let top = if highest > 0.0 {
        highest * HEADROOM
    } else {
        4.0
    };
    let groups = masters.len().max(1) as f64;

    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(root)
        .caption(
            CHART_TITLE,
            ("sans-serif", 16).into_font().style(FontStyle::Bold),
        )
        .margin(12)
        .x_label_area_size(62)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..groups, 0f64..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("Redis master (below: CPU, percent of one core)")
        .y_desc("commands/s")
        .y_labels(5)
        .y_label_formatter(&|v| rate(*v))
        .light_line_style(RGBColor(0xf3, 0xf3, 0xf3))
        .bold_line_style(RGBColor(0xe3, 0xe3, 0xe3))
        .draw()
        .map_err(plot_error)?;

    // Not finite or negative values sit on the baseline; values above the axis top at the top.
    let height = |value: f64| {
        if value.is_finite() {
            value.clamp(0.0, top)
        } else {
            0.0
        }
    };
    let label_font = ("sans-serif", 10).into_font();
    let mut all_bars = Vec::new();
    for (slot, run) in [Run::Off, Run::On].into_iter().enumerate() {
        let bars: Vec<(f64, f64)> = masters
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let node = if slot == 0 { m.off } else { m.on }?;
                let x = i as f64 + PAIR_START + slot as f64 * (BAR_WIDTH + 0.02);
                Some((x, node.commands_per_s))
            })
            .collect();
        let colour = run.colour();
        chart
            .draw_series(bars.iter().map(|&(x, value)| {
                Rectangle::new([(x, 0.0), (x + BAR_WIDTH, height(value))], colour.filled())
            }))
            .map_err(plot_error)?
            .label(run.heading())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        all_bars.extend(bars);
    }
    for (run, mean) in means {
        let Some(mean) = mean.filter(|m| m.is_finite()) else {
            continue;
        };
        let style = run.colour().stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, height(mean)), (groups, height(mean))],
                6,
                4,
                style,
            ))
            .map_err(plot_error)?
            .label(format!("mean {}: {}", run.short(), opt(Some(mean), rate)))
            .legend(move |(x, y)| DashedPathElement::new([(x, y), (x + 24, y)], 6, 4, style));
    }
    // The figures over the bars go over the mean lines.
    chart
        .draw_series(all_bars.iter().map(|&(x, value)| {
            EmptyElement::at((x + BAR_WIDTH / 2.0, height(value)))
                + Text::new(
                    rate(value),
                    (0, -3),
                    label_font
                        .clone()
                        .color(&RGBColor(0x33, 0x33, 0x33))
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
        }))
        .map_err(plot_error)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(0xaa, 0xaa, 0xaa))
        .draw()
        .map_err(plot_error)?;

    // Under each group: the master's address, then the CPU % of each run in its colour.
    let group_px = {
        let (x0, _) = chart.backend_coord(&(0.0, 0.0));
        let (x1, _) = chart.backend_coord(&(1.0, 0.0));
        f64::from(x1 - x0)
    };
    for (i, master) in masters.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let centre = Pos::new(HPos::Center, VPos::Top);
        let (addr, size) = fit_label(master.addr, group_px - 6.0);
        root.draw(&Text::new(
            addr,
            (x, y + 6),
            ("sans-serif", size).into_font().color(&BLACK).pos(centre),
        ))
        .map_err(plot_error)?;
        for (run, node, dy) in [(Run::Off, master.off, 20), (Run::On, master.on, 33)] {
            let cpu = node_figure(node, |n| format!("{}%", grouped(n.cpu_percent, 1)));
            root.draw(&Text::new(
                format!("CPU {}: {cpu}", run.short()),
                (x, y + dy),
                label_font.clone().color(&run.colour()).pos(centre),
            ))
            .map_err(plot_error)?;
        }
    }
    if masters.is_empty() {
        let (x, y) = chart.backend_coord(&(groups / 2.0, top / 2.0));
        root.draw(&Text::new(
            "no Redis master figures",
            (x, y),
            ("sans-serif", 12)
                .into_font()
                .color(&RGBColor(0x77, 0x77, 0x77))
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(plot_error)?;
    }
    Ok(())
}

fn plot_error<E: std::error::Error + Send + Sync + 'static>(
    err: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {err}")
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{hot, mitigated};
    use super::*;

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
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
                "raw & in {text:?}"
            );
        }
    }

    /// Bars (and the legend swatch) drawn in `run`'s colour.
    fn filled(chart: &str, run: Run) -> usize {
        let RGBColor(r, g, b) = run.colour();
        chart
            .matches(&format!(
                r##"fill="#{r:02X}{g:02X}{b:02X}" stroke="none"/>"##
            ))
            .count()
    }

    #[test]
    fn svg_draws_two_bars_per_master_and_escapes_text() {
        let mut off = hot();
        off.nodes[0].addr = "<evil & \"co\">:1".to_owned();
        let mut on = mitigated();
        on.nodes[1].addr = off.nodes[0].addr.clone();
        let chart = svg(&off, &on).unwrap();
        assert!(chart.starts_with("<svg"));
        assert!(chart.trim_end().ends_with("</svg>"));
        assert_well_formed(&chart);
        // A bar per master and run, and the legend's swatch.
        assert_eq!(filled(&chart, Run::Off), 3 + 1);
        assert_eq!(filled(&chart, Run::On), 3 + 1);
        assert!(chart.contains("&lt;evil &amp; &quot;co&quot;&gt;:1"));
        assert!(!chart.contains("<evil"));
        assert!(chart.contains(CHART_TITLE));
        assert!(chart.contains("mean off: 10,000") && chart.contains("mean on: 11,115"));
        assert!(
            chart.contains("20,000") && chart.contains("12,345"),
            "bar figures"
        );
        assert!(chart.contains("CPU off: 97.5%") && chart.contains("CPU on: 50.0%"));
    }

    #[test]
    fn svg_leaves_out_the_bar_of_a_master_a_run_did_not_see() {
        let mut on = mitigated();
        on.nodes.pop();
        let chart = svg(&hot(), &on).unwrap();
        assert_well_formed(&chart);
        assert_eq!(filled(&chart, Run::Off), 3 + 1);
        assert_eq!(filled(&chart, Run::On), 2 + 1);
        assert!(chart.contains("CPU on: -"));

        let empty = svg(&RunFigures::default(), &RunFigures::default()).unwrap();
        assert_well_formed(&empty);
        assert_eq!(filled(&empty, Run::Off) + filled(&empty, Run::On), 2);
        assert!(empty.contains("no Redis master figures"));
        assert!(!empty.contains("mean off"));
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
}
