//! `shardfeed bench ingest`: the write path. Measures `PostService.CreatePost` over gRPC as a
//! real client calls it (a fresh idempotency key per call, a few shared HTTP/2 connections), and
//! in the same run the floor: the bare single-row INSERT transaction straight against the same
//! PostgreSQL, at the same concurrency and for the same duration.
//!
//! The two phases alternate for `--rounds` rounds (gRPC, bare, gRPC, bare, …), so a machine
//! whose speed drifts during the run shifts both sides alike; each round gives a ratio, and the
//! figures reported are those of the round with the median ratio.

mod ops;
mod report;
mod setup;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use rand::rngs::StdRng;
use rand::SeedableRng;
use shardfeed_proto::v1::post_service_client::PostServiceClient;

use self::ops::{BareInsert, CreatePost};
use self::report::report;
use self::setup::{clean_up, create_bare_table, create_users, first_create_post, Created};
use crate::client::{
    connect_postgres, describe_postgres, Channels, IngestFlag, PostgresFlag, TlsFlags,
};
use crate::measure::{closed_loop, median_by, Summary, Timing};

/// The floor's table: created by the bench, dropped at the end.
pub const BARE_TABLE: &str = "bench_bare_posts";
/// The target: CreatePost at no less than this fraction of the bare-insert rate.
pub const TARGET_RATIO: f64 = 0.70;
const GRPC_LABEL: &str = "shardfeed CreatePost over gRPC";
const BARE_LABEL: &str = "bare INSERT transaction";

/// The flags; serialized, the shape of the run for the JSON summary.
#[derive(clap::Args, Debug, serde::Serialize)]
pub struct IngestBenchArgs {
    #[command(flatten)]
    #[serde(skip)]
    ingest: IngestFlag,
    #[command(flatten)]
    #[serde(skip)]
    tls: TlsFlags,
    #[command(flatten)]
    #[serde(skip)]
    postgres: PostgresFlag,
    /// Bench users to create (CreateUser) and post as; each request picks one at random.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    authors: u32,
    /// Seconds of load before measuring, per phase (not recorded).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    #[serde(rename = "warmup_s")]
    warmup_secs: u64,
    /// Seconds measured, per phase and round.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=3600))]
    #[serde(rename = "duration_s")]
    duration_secs: u64,
    /// Rounds of the two phases, one after the other; the round with the median ratio is
    /// reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    rounds: u32,
    /// Concurrent workers, each issuing one request after the other (closed loop). The bare
    /// floor opens one PostgreSQL connection per worker.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// HTTP/2 connections to the ingest service, shared round-robin by the workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    channels: u32,
    /// Length of each post body in bytes (ASCII), for both phases.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
    body_bytes: u32,
    /// Which phases to run: the gRPC write path, the bare-insert floor, or both (one after the
    /// other, so they do not compete for the machine).
    #[arg(long, value_enum, default_value_t = Only::Both)]
    only: Only,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Only {
    Grpc,
    Bare,
    Both,
}

impl Only {
    fn grpc(self) -> bool {
        self != Only::Bare
    }
    fn bare(self) -> bool {
        self != Only::Grpc
    }
}

pub async fn run(args: IngestBenchArgs) -> anyhow::Result<()> {
    let timing = Timing {
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
    };

    // Reach everything before creating anything.
    let channels = if args.only.grpc() {
        eprintln!(
            "bench ingest: connecting {} HTTP/2 channel(s) to {}",
            args.channels, args.ingest.url
        );
        let bearer = crate::client::bearer(&crate::dev::cli_settings()?)?;
        Some(
            Channels::connect(
                &args.ingest.url,
                &args.tls,
                args.channels as usize,
                "ingest service",
                &bearer,
            )
            .await?,
        )
    } else {
        None
    };
    let postgres = if args.only.bare() {
        let config = args.postgres.config(&crate::dev::cli_settings()?)?;
        eprintln!("bench ingest: PostgreSQL {}", describe_postgres(&config));
        // Connected now, so an unreachable PostgreSQL stops the bench before anything is made.
        let admin = connect_postgres(&config).await?;
        Some((config, admin))
    } else {
        None
    };

    let mut created = Created::default();
    let outcome = tokio::select! {
        outcome = run_phases(&args, timing, channels.as_ref(), postgres, &mut created) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    clean_up(channels.as_ref(), created).await;
    report(&args, &outcome?)
}

/// One round: each phase's figures (`None` for a phase not run).
struct Round {
    grpc: Option<Summary>,
    bare: Option<Summary>,
}

impl Round {
    fn ratio(&self) -> Option<f64> {
        match (&self.grpc, &self.bare) {
            (Some(g), Some(b)) if b.ops_per_s > 0.0 => Some(g.ops_per_s / b.ops_per_s),
            _ => None,
        }
    }
}

async fn run_phases(
    args: &IngestBenchArgs,
    timing: Timing,
    channels: Option<&Channels>,
    postgres: Option<(crate::client::PostgresTarget, tokio_postgres::Client)>,
    created: &mut Created,
) -> anyhow::Result<Vec<Round>> {
    let concurrency = args.concurrency as usize;
    let body_bytes = args.body_bytes as usize;

    let authors: Arc<[i64]> = if let Some(channels) = channels {
        create_users(channels, args.authors as usize, created).await?;
        Arc::from(created.users.clone())
    } else {
        // The floor alone needs no real users: its table has no foreign key.
        (1..=i64::from(args.authors)).collect()
    };
    if let Some(channels) = channels {
        first_create_post(channels, &args.ingest.url, authors[0], body_bytes).await?;
    }
    let bare_floor = match postgres {
        Some((config, admin)) => {
            let next_post_id = Arc::new(AtomicI64::new(create_bare_table(admin, created).await?));
            Some((config, next_post_id))
        }
        None => None,
    };

    let mut rounds = Vec::with_capacity(args.rounds as usize);
    for round in 1..=args.rounds {
        let mut grpc = None;
        if let Some(channels) = channels {
            eprintln!(
                "bench ingest: round {round}/{}: {GRPC_LABEL}: {concurrency} workers over {} \
                 channel(s)",
                args.rounds,
                channels.len()
            );
            let ops: Vec<CreatePost> = (0..concurrency)
                .map(|i| CreatePost {
                    client: PostServiceClient::new(channels.get(i)),
                    authors: authors.clone(),
                    rng: StdRng::from_entropy(),
                    body_bytes,
                })
                .collect();
            grpc = Some(closed_loop(GRPC_LABEL, ops, timing).await?);
        }
        let mut bare = None;
        if let Some((config, next_post_id)) = &bare_floor {
            eprintln!(
                "bench ingest: round {round}/{}: {BARE_LABEL}: {concurrency} workers, one \
                 PostgreSQL connection each",
                args.rounds
            );
            let mut ops = Vec::with_capacity(concurrency);
            for _ in 0..concurrency {
                let client = connect_postgres(config).await?;
                let insert = client
                    .prepare(&format!(
                        "INSERT INTO {BARE_TABLE} (author_id, post_id, body, create_time) \
                         VALUES ($1, $2, $3, now())"
                    ))
                    .await
                    .context("preparing the bare INSERT")?;
                ops.push(BareInsert {
                    client,
                    insert,
                    authors: authors.clone(),
                    next_post_id: next_post_id.clone(),
                    rng: StdRng::from_entropy(),
                    body_bytes,
                });
            }
            bare = Some(closed_loop(BARE_LABEL, ops, timing).await?);
        }
        let round = Round { grpc, bare };
        if let Some(ratio) = round.ratio() {
            eprintln!(
                "bench ingest: round ratio {:.1}% of the bare-insert rate",
                ratio * 100.0
            );
        }
        rounds.push(round);
    }
    Ok(rounds)
}

/// The round with the median ratio (the lower middle one of an even count), or the median
/// round by posts/s when only one phase ran.
fn median_round(rounds: &[Round]) -> Option<&Round> {
    median_by(rounds, |r| {
        r.ratio()
            .or_else(|| r.grpc.as_ref().map(|s| s.ops_per_s))
            .or_else(|| r.bare.as_ref().map(|s| s.ops_per_s))
            .unwrap_or(0.0)
    })
}
