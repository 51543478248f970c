//! The feed bench's figures beside the request rates: Redis commands per feed and memory from
//! the masters' own `INFO`, the aggregator's resident set, the SQL plan, and the unloaded
//! round it reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fred::clients::Client as RedisClient;
use fred::types::InfoKind;

use super::FEED_SQL;
use crate::measure::{median_by, Summary};
use crate::redis_info::{info_field, is_housekeeping, masters_info, parse_commandstats};

/// naive p50 / shardfeed p50 of an unloaded round.
pub fn round_ratio((ours, naive): &(Summary, Summary)) -> Option<f64> {
    (ours.p50_ms > 0.0).then(|| naive.p50_ms / ours.p50_ms)
}

/// The unloaded round with the median ratio (the lower middle one of an even count).
pub fn median_unloaded(rounds: &[(Summary, Summary)]) -> Option<&(Summary, Summary)> {
    median_by(rounds, |r| round_ratio(r).unwrap_or(0.0))
}

/// `EXPLAIN` of the feed query for one user: the plan's top line (returned), and on stderr the
/// first line that scans `posts_author_recent_idx` (on a partitioned table the plan names the
/// partitions' indexes, so those are looked up first).
pub async fn explain(admin: &tokio_postgres::Client, user_id: i64) -> Option<String> {
    let sql = format!("EXPLAIN {}", FEED_SQL.replace("$1", &user_id.to_string()));
    let lines: Vec<String> = match admin.query(&sql, &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(err) => {
            eprintln!("warning: EXPLAIN of the feed query failed: {err:#}");
            return None;
        }
    };
    let top = lines.first()?.trim().to_owned();
    eprintln!("bench feed: SQL plan: {top}");
    let mut names = vec!["posts_author_recent_idx".to_owned()];
    match admin
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'posts_author_recent_idx'::regclass",
            &[],
        )
        .await
    {
        Ok(rows) => names.extend(rows.iter().map(|r| r.get::<_, String>(0))),
        Err(err) => {
            eprintln!("warning: could not list the partitions of posts_author_recent_idx: {err:#}")
        }
    }
    let uses_index = |line: &&String| {
        names
            .iter()
            .any(|name| line.contains(&format!("using {name} ")))
    };
    let scans = lines.iter().filter(uses_index).count();
    match lines.iter().find(uses_index) {
        Some(line) => eprintln!(
            "  {} ({scans} such scan(s) in the plan: posts_author_recent_idx)",
            line.trim()
        ),
        None => eprintln!(
            "  the plan does NOT use posts_author_recent_idx:\n{}",
            lines.join("\n")
        ),
    }
    Some(top)
}

/// Calls by node and command.
pub type CommandCalls = BTreeMap<String, BTreeMap<String, u64>>;

pub async fn command_calls(redis: &RedisClient) -> Result<CommandCalls, String> {
    masters_info(redis, InfoKind::CommandStats)
        .await
        .map(|by_node| {
            by_node
                .into_iter()
                .map(|(node, info)| (node, parse_commandstats(&info)))
                .collect()
        })
        .map_err(|e| format!("{e:#}"))
}

/// Calls made between two snapshots, summed over the masters, by command, housekeeping left
/// out. A node that is not in both snapshots (a failover in between) makes the figure void.
fn commands_between(
    before: &CommandCalls,
    after: &CommandCalls,
) -> Result<BTreeMap<String, u64>, String> {
    if before.keys().ne(after.keys()) {
        return Err(format!(
            "the masters changed during the phase ({} before, {} after)",
            before.keys().cloned().collect::<Vec<_>>().join(","),
            after.keys().cloned().collect::<Vec<_>>().join(",")
        ));
    }
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (node, calls) in after {
        for (command, &n) in calls {
            if is_housekeeping(command) {
                continue;
            }
            let was = before[node].get(command).copied().unwrap_or(0);
            let delta = n.saturating_sub(was);
            if delta > 0 {
                *out.entry(command.clone()).or_default() += delta;
            }
        }
    }
    Ok(out)
}

/// Redis commands per feed served in one phase.
pub struct CommandFigures {
    feeds: u64,
    by_command: BTreeMap<String, u64>,
}

impl CommandFigures {
    pub fn new(
        before: Result<CommandCalls, String>,
        after: Result<CommandCalls, String>,
        feeds: u64,
    ) -> Result<Self, String> {
        let by_command = commands_between(&before?, &after?)?;
        if feeds == 0 {
            return Err("no feed was served".to_owned());
        }
        Ok(CommandFigures { feeds, by_command })
    }

    pub fn per_feed(&self) -> f64 {
        self.by_command.values().sum::<u64>() as f64 / self.feeds as f64
    }

    /// `hmget 101.2, zrevrangebyscore 100.0, …`, most first.
    pub fn breakdown(&self) -> String {
        let mut by: Vec<(&String, &u64)> = self.by_command.iter().collect();
        by.sort_by(|a, b| b.1.cmp(a.1));
        by.iter()
            .map(|(command, n)| format!("{command} {:.1}", **n as f64 / self.feeds as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `used_memory` summed over the masters.
pub async fn used_memory(redis: &RedisClient) -> Result<u64, String> {
    let by_node = masters_info(redis, InfoKind::Memory)
        .await
        .map_err(|e| format!("{e:#}"))?;
    by_node
        .values()
        .map(|info| {
            info_field(info, "used_memory")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| "INFO memory without used_memory".to_owned())
        })
        .sum()
}

pub struct MemoryFigures {
    pub before: u64,
    pub after: u64,
    pub authors: usize,
}

impl MemoryFigures {
    pub fn per_1000_authors(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / (self.authors as f64 / 1000.0)
    }
}

pub struct Rss {
    pub pid: u32,
    /// Where the pid came from.
    pub source: String,
    /// VmHWM: the peak resident set since the process started.
    pub peak_kib: u64,
    /// VmRSS now.
    pub current_kib: u64,
}

pub fn aggregator_rss(pid: Option<u32>) -> Result<Rss, String> {
    let (pid, source) = match pid {
        Some(pid) => (pid, "--aggregator-pid".to_owned()),
        None => {
            let file = pid_file().ok_or_else(|| {
                "no .local/run/aggregator.pid found (pass --aggregator-pid)".to_owned()
            })?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            let pid = text
                .trim()
                .parse()
                .map_err(|_| format!("{} does not hold a pid", file.display()))?;
            (pid, file.display().to_string())
        }
    };
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path)
        .map_err(|e| format!("reading {status_path} (pid from {source}): {e}"))?;
    let (peak_kib, current_kib) =
        parse_status_memory(&status).ok_or_else(|| format!("{status_path} has no VmHWM/VmRSS"))?;
    Ok(Rss {
        pid,
        source,
        peak_kib,
        current_kib,
    })
}

/// The local stack's pid file: under the working directory or one of its parents, else under
/// the repository this binary was built from.
fn pid_file() -> Option<PathBuf> {
    let relative = Path::new(".local/run/aggregator.pid");
    let from_cwd = std::env::current_dir().ok().and_then(|cwd| {
        cwd.ancestors()
            .map(|dir| dir.join(relative))
            .find(|p| p.is_file())
    });
    from_cwd.or_else(|| {
        let built = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative);
        built.is_file().then_some(built)
    })
}

/// (VmHWM, VmRSS) in KiB from `/proc/<pid>/status`.
fn parse_status_memory(status: &str) -> Option<(u64, u64)> {
    let kib = |field: &str| {
        status.lines().find_map(|line| {
            line.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some((kib("VmHWM")?, kib("VmRSS")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(p50_ms: f64) -> Summary {
        Summary {
            label: String::new(),
            requests: 1,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            ops_per_s: 1.0,
            p50_ms,
            p90_ms: p50_ms,
            p99_ms: p50_ms,
            max_ms: p50_ms,
        }
    }

    #[test]
    fn the_unloaded_round_with_the_median_ratio_is_reported() {
        let rounds = vec![
            (latency(1.0), latency(12.0)),
            (latency(1.0), latency(9.0)),
            (latency(2.0), latency(21.0)),
        ];
        let median = median_unloaded(&rounds).unwrap();
        assert_eq!(round_ratio(median), Some(10.5));
        assert!(median_unloaded(&[]).is_none());
        assert_eq!(round_ratio(&(latency(0.0), latency(5.0))), None);
    }

    #[test]
    fn commands_are_summed_over_masters_without_housekeeping() {
        let snapshot = |a: u64, b: u64| -> CommandCalls {
            let node = |n: u64| {
                BTreeMap::from([
                    ("hmget".to_owned(), n),
                    ("info".to_owned(), n * 7),
                    ("client|setname".to_owned(), n),
                ])
            };
            BTreeMap::from([("n1".to_owned(), node(a)), ("n2".to_owned(), node(b))])
        };
        let delta = commands_between(&snapshot(10, 20), &snapshot(110, 70)).unwrap();
        assert_eq!(delta, BTreeMap::from([("hmget".to_owned(), 150)]));
        let figures = CommandFigures::new(Ok(snapshot(10, 20)), Ok(snapshot(110, 70)), 50).unwrap();
        assert!((figures.per_feed() - 3.0).abs() < 1e-9);
        assert_eq!(figures.breakdown(), "hmget 3.0");

        let mut failed_over = snapshot(110, 70);
        failed_over.insert("n3".to_owned(), BTreeMap::new());
        assert!(commands_between(&snapshot(10, 20), &failed_over).is_err());
        assert!(CommandFigures::new(Ok(snapshot(1, 1)), Ok(snapshot(1, 1)), 0).is_err());
    }

    #[test]
    fn proc_status_memory_is_parsed() {
        let status =
            "Name:\tshardfeed-aggre\nVmPeak:\t 1000 kB\nVmHWM:\t   52340 kB\nVmRSS:\t   48000 kB\n";
        assert_eq!(parse_status_memory(status), Some((52_340, 48_000)));
        assert_eq!(parse_status_memory("Name:\tx\n"), None);
    }

    #[test]
    fn memory_per_thousand_authors() {
        let m = MemoryFigures {
            before: 1_000_000,
            after: 21_000_000,
            authors: 10_000,
        };
        assert!((m.per_1000_authors() - 2_000_000.0).abs() < 1e-6);
    }
}
