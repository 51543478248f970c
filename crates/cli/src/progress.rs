//! Progress of the CLI's long steps (the simulation's loading and runs): a live bar on stderr
//! when stderr is a terminal, else nothing while the step runs and one line when it ends, so
//! that a log or a pipe gets a line per step and never a bar's redraws.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One step of known length: `len` items (or seconds, for a timed run).
#[derive(Clone)]
pub struct Step {
    /// Counts in both modes; drawn only on a terminal.
    bar: ProgressBar,
    what: String,
    unit: String,
    terminal: bool,
}

impl Step {
    /// A step of `len` `unit`s ("users", "s"), drawn as a bar when stderr is a terminal.
    pub fn new(len: u64, what: &str, unit: &str) -> Step {
        Step::with_terminal(len, what, unit, std::io::stderr().is_terminal())
    }

    fn with_terminal(len: u64, what: &str, unit: &str, terminal: bool) -> Step {
        let target = if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        bar.set_style(
            ProgressStyle::with_template(
                "  {msg:<8} [{bar:40}] {pos:>7}/{len:7} {per_sec:>10} eta {eta}",
            )
            .expect("a valid progress template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        Step {
            bar,
            what: what.to_owned(),
            unit: unit.to_owned(),
            terminal,
        }
    }

    pub fn inc(&self, delta: u64) {
        self.bar.inc(delta);
    }

    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
    }

    /// Ends the step: the bar stays on screen as it is; without a terminal, its one line.
    pub fn finish(&self) {
        self.bar.finish();
        if !self.terminal {
            eprintln!("{}", self.line());
        }
    }

    /// What the step did, e.g. `  users    2000/2000 users in 12.3 s (163/s)`.
    fn line(&self) -> String {
        finished_line(
            &self.what,
            self.bar.position(),
            self.bar.length().unwrap_or_default(),
            &self.unit,
            self.bar.elapsed(),
        )
    }
}

fn finished_line(what: &str, done: u64, len: u64, unit: &str, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let mut line = format!("  {what:<8} {done}/{len} {unit} in {seconds:.1} s");
    // A rate says something about items, not about a timed run.
    if unit != "s" && seconds > 0.0 {
        line.push_str(&format!(" ({:.0}/s)", done as f64 / seconds));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_a_step_is_one_line_when_it_ends() {
        let step = Step::with_terminal(3, "users", "users", false);
        assert!(step.bar.is_hidden(), "no bar drawn into a log");
        step.inc(1);
        step.inc(2);
        step.finish();
        let line = step.line();
        assert!(line.starts_with("  users    3/3 users in "), "{line}");
        assert!(line.ends_with("/s)"), "{line}");
    }

    #[test]
    fn the_line_of_a_timed_run_has_no_rate() {
        assert_eq!(
            finished_line("off", 20, 20, "s", Duration::from_millis(20_040)),
            "  off      20/20 s in 20.0 s"
        );
        assert_eq!(
            finished_line("posts", 10, 10, "posts", Duration::from_secs(2)),
            "  posts    10/10 posts in 2.0 s (5/s)"
        );
    }
}
