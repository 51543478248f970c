//! How the simulation's report writes numbers and text: rates with no decimals and thousands
//! separators (`12,345`), milliseconds with one decimal, ratios with two, percentages with
//! one; a figure that was not measured (a `None`, or a value that is not finite) as `-`; text
//! made literal in markdown.

/// What a figure that was not measured prints as.
pub const MISSING: &str = "-";

/// A rate: no decimals, thousands separated (`12,345`).
pub fn rate(value: f64) -> String {
    grouped(value, 0)
}

/// Milliseconds: one decimal.
pub fn millis(value: f64) -> String {
    grouped(value, 1)
}

/// A ratio: two decimals.
pub fn ratio(value: f64) -> String {
    grouped(value, 2)
}

/// A percentage (already × 100): one decimal and `%`.
pub fn percent(value: f64) -> String {
    if value.is_finite() {
        format!("{}%", grouped(value, 1))
    } else {
        MISSING.to_owned()
    }
}

/// `format(value)`, or `-` when it was not measured.
pub fn opt(value: Option<f64>, format: fn(f64) -> String) -> String {
    value.map_or_else(|| MISSING.to_owned(), format)
}

/// A count, thousands separated.
pub fn grouped_count(count: impl std::fmt::Display) -> String {
    group_digits(&count.to_string())
}

/// `value` with `decimals` decimals and commas between thousands (`12,345.6`), `-` when it is
/// not finite. A value that rounds to zero has no minus sign.
pub fn grouped(value: f64, decimals: usize) -> String {
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

/// `text` made literal inside a markdown table cell: markdown punctuation backslash-escaped,
/// line breaks turned into spaces.
pub fn md_escape(text: &str) -> String {
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
pub fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn markdown_punctuation_is_escaped_and_lines_joined() {
        assert_eq!(md_escape("a|b *c*\nd"), "a\\|b \\*c\\* d");
        assert_eq!(one_line("one\r\ntwo\n"), "one two");
    }
}
