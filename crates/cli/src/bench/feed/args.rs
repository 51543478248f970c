//! The flags of `shardfeed bench feed` and their checks.

use anyhow::bail;

use crate::client::{AggregatorFlag, PostgresFlag, TlsFlags};

/// No more seeded posts than this in one run (they are held in memory to check every answer).
const MAX_POSTS: u64 = 50_000_000;

/// The flags; serialized, the shape of the run for the JSON summary.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct FeedBenchArgs {
    #[command(flatten)]
    #[serde(skip)]
    pub aggregator: AggregatorFlag,
    #[command(flatten)]
    #[serde(skip)]
    pub tls: TlsFlags,
    #[command(flatten)]
    #[serde(skip)]
    pub postgres: PostgresFlag,
    /// Bench users to seed; every one is an author and a reader.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    pub users: u32,
    /// Followees per reader (fewer than --users). A comma-separated list runs the bench once
    /// per value on a data set of its own and ends with the cost curve side by side
    /// (`--followees 10,100,1000,5000`).
    #[arg(
        long = "followees",
        default_value = "100",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u32).range(0..=100_000)
    )]
    #[serde(skip)]
    pub followees_curve: Vec<u32>,
    /// Followees of this run: one value of `followees_curve`.
    #[arg(skip)]
    pub followees: u32,
    /// Users that follow others and read feeds: the first N [default: every user]. The rest are
    /// authors only, so that many followees need no follow graph of users × followees.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    #[serde(skip)]
    pub readers: Option<u32>,
    /// Posts per author, spread over the last 30 days.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub posts_per_author: u32,
    /// Zipf exponent of followee popularity: user i is picked with weight 1/(i+1)^s; 0 picks
    /// followees uniformly at random.
    #[arg(long, default_value_t = 0.0)]
    pub zipf: f64,
    /// Seconds of load before measuring the warm, SQL and naive phases (not recorded; the cold
    /// phase has none).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    #[serde(rename = "warmup_s")]
    pub warmup_secs: u64,
    /// Seconds measured, per phase.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    #[serde(rename = "duration_s")]
    pub duration_secs: u64,
    /// Concurrent workers (closed loop) of the gRPC and SQL phases.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Concurrent workers of the naive Redis phase [default: --concurrency].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    #[serde(skip)]
    pub naive_concurrency: Option<u32>,
    /// HTTP/2 connections to the aggregator, shared round-robin by the workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub channels: u32,
    /// Length of each post body in bytes (ASCII).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub body_bytes: u32,
    /// The aggregator's process id, for its memory [default: read from .local/run/aggregator.pid
    /// of the local stack].
    #[arg(long)]
    #[serde(skip)]
    pub aggregator_pid: Option<u32>,
    /// Seed of the random data (follow graph, post times) [default: a fresh one per run].
    #[arg(long)]
    #[serde(skip)]
    pub seed: Option<u64>,
    /// Seconds of each unloaded latency phase (one request at a time, shardfeed and naive);
    /// 0 skips them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    #[serde(skip)]
    pub latency_secs: u64,
    /// Rounds of the two unloaded latency phases, alternating (shardfeed, naive, shardfeed, …);
    /// the round with the median ratio is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    #[serde(skip)]
    pub latency_rounds: u32,
    /// Seconds of each authentication-cost phase (two aggregators in this process, auth on
    /// and off, `--latency-rounds` alternating rounds); 0 skips them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    #[serde(skip)]
    pub auth_secs: u64,
}

impl FeedBenchArgs {
    pub fn naive_concurrency(&self) -> u32 {
        self.naive_concurrency.unwrap_or(self.concurrency)
    }

    /// `Zipf s` or `uniform`.
    pub fn popularity(&self) -> String {
        if self.zipf > 0.0 {
            format!("Zipf {}", self.zipf)
        } else {
            "uniform".to_owned()
        }
    }

    pub fn readers(&self) -> u32 {
        self.readers.unwrap_or(self.users).min(self.users)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(&most) = self.followees_curve.iter().max() {
            if most >= self.users {
                bail!(
                    "--followees ({most}) must be less than --users ({}): nobody follows themselves",
                    self.users
                );
            }
        }
        if !self.zipf.is_finite() || self.zipf < 0.0 {
            bail!("--zipf must be a number >= 0, got {}", self.zipf);
        }
        let posts = u64::from(self.users) * u64::from(self.posts_per_author);
        if posts > MAX_POSTS {
            bail!("--users x --posts-per-author is {posts} posts; at most {MAX_POSTS} per run");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: FeedBenchArgs,
        }
        let parse = |line: &[&str]| {
            Cli::try_parse_from(std::iter::once("bench").chain(line.iter().copied()))
                .map(|c| c.args)
        };
        let defaults = parse(&[]).unwrap();
        assert_eq!(
            (
                defaults.users,
                defaults.followees_curve.clone(),
                defaults.posts_per_author
            ),
            (10_000, vec![100], 100)
        );
        assert_eq!(defaults.readers(), 10_000, "every user reads by default");
        let curve = parse(&[
            "--users",
            "6000",
            "--readers",
            "50",
            "--followees",
            "10,100,5000",
        ])
        .unwrap();
        assert_eq!(curve.followees_curve, vec![10, 100, 5000]);
        assert_eq!(curve.readers(), 50);
        assert!(curve.validate().is_ok());
        assert!(parse(&["--users", "6000", "--followees", "10,6000"])
            .unwrap()
            .validate()
            .is_err());
        assert_eq!(defaults.naive_concurrency(), 16);
        assert!(defaults.validate().is_ok());
        let small = parse(&[
            "--users",
            "500",
            "--followees",
            "20",
            "--posts-per-author",
            "20",
            "--duration-secs",
            "3",
            "--naive-concurrency",
            "4",
        ])
        .unwrap();
        assert!(small.validate().is_ok());
        assert_eq!(small.naive_concurrency(), 4);
        assert!(parse(&["--users", "10", "--followees", "10"])
            .unwrap()
            .validate()
            .is_err());
        assert!(parse(&["--zipf=-1"]).unwrap().validate().is_err());
    }
}
