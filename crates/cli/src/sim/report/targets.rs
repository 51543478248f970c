//! The simulation's targets, checked against the two runs.

use super::format::{grouped_count, millis, rate, ratio, MISSING};
use crate::sim::figures::RunFigures;

const TARGET_SKEW_OFF_MIN: f64 = 2.0;
const TARGET_SKEW_ON_MAX: f64 = 1.3;
const TARGET_FEEDS_SPEEDUP: f64 = 2.0;
const TARGET_LAG_P99_MS: f64 = 1000.0;

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{hot, mitigated};
    use super::*;

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
}
