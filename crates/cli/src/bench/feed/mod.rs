//! `shardfeed bench feed`: the read path. Measures `FeedService.GetHomeFeed` (first page, 20
//! posts) over gRPC, cold and warm, and in the same run, on the same data, the alternatives a
//! user would pick instead: the best single SQL query straight against PostgreSQL (a LATERAL
//! top-k over the follow list) and the naive one-request-per-key read of the same Redis cache.
//!
//! The data is seeded in bulk, not through the API: users with one `INSERT … SELECT`, follows
//! and posts with binary `COPY`, then (after the cold phase) the cache with the write path's own
//! [`CacheWriter`] scripts. Every answer of every phase is checked against the page computed
//! from the seeded data.

mod args;
mod auth_cost;
mod dataset;
mod figures;
mod ops;
mod report;
mod results;
mod seed;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use shardfeed_cache::{CacheLayout, CacheWriter};
use shardfeed_server::Settings;

pub use self::args::FeedBenchArgs;
use self::figures::{
    aggregator_rss, command_calls, explain, median_unloaded, used_memory, CommandFigures,
    MemoryFigures,
};
use self::ops::{grpc_ops, naive_ops, probe_aggregator, sql_ops};
use self::report::{report, report_curve};
use self::results::Results;
use self::seed::{clean_up, delete_user_keys, seed_cache, seed_postgres, Created, Stores};
use crate::client::{connect_postgres, connect_redis, describe_postgres, Channels};
use crate::measure::{closed_loop, Timing};

/// The page every phase reads: GetHomeFeed's `page_size`, the SQL `LIMIT`, the naive top-k.
pub const PAGE_SIZE: usize = 20;

/// The targets.
pub const TARGET_VS_SQL: f64 = 1.5;
pub const TARGET_NAIVE_P50_RATIO: f64 = 10.0;
pub const TARGET_RSS_MIB: f64 = 256.0;

const WARM_LABEL: &str = "shardfeed warm";
const COLD_LABEL: &str = "shardfeed cold";
const SQL_LABEL: &str = "SQL LATERAL";
const NAIVE_LABEL: &str = "naive Redis";
const UNLOADED_LABEL: &str = "shardfeed, 1 at a time";
const NAIVE_UNLOADED_LABEL: &str = "naive, 1 at a time";

/// The best single SQL query for a first page, as a user would write it: per followee the
/// newest 20 live posts from `posts_author_recent_idx`, then the newest 20 of those.
pub const FEED_SQL: &str = "SELECT p.post_id, p.author_id, p.body, p.create_time \
     FROM follows f CROSS JOIN LATERAL (\
       SELECT post_id, author_id, body, create_time FROM posts \
       WHERE posts.author_id = f.followee_id AND delete_time IS NULL \
       ORDER BY post_id DESC LIMIT 20) p \
     WHERE f.follower_id = $1 ORDER BY p.post_id DESC LIMIT 20";

pub async fn run(args: FeedBenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    let mut curve = Vec::new();
    for &followees in &args.followees_curve {
        let run_args = FeedBenchArgs {
            followees,
            ..args.clone()
        };
        let results = run_once(&run_args).await?;
        report(&run_args, &results)?;
        curve.push((followees, results));
    }
    if curve.len() > 1 {
        report_curve(&args, &curve)?;
    }
    Ok(())
}

/// One run of every phase for one followee count.
async fn run_once(args: &FeedBenchArgs) -> anyhow::Result<Results> {
    let settings = crate::dev::cli_settings()?;

    // Reach everything before creating anything.
    let aggregator = &args.aggregator.url;
    eprintln!(
        "bench feed: connecting {} HTTP/2 channel(s) to {aggregator}",
        args.channels
    );
    let bearer = crate::client::bearer(&settings)?;
    let channels = Channels::connect(
        aggregator,
        &args.tls,
        args.channels as usize,
        "aggregator",
        &bearer,
    )
    .await?;
    probe_aggregator(channels.get(0), aggregator).await?;
    let pg_config = args.postgres.config(&settings)?;
    eprintln!("bench feed: PostgreSQL {}", describe_postgres(&pg_config));
    let admin = connect_postgres(&pg_config).await?;
    eprintln!(
        "bench feed: Redis Cluster {} (key namespace {:?}, as the aggregator reads it)",
        settings.redis.nodes.join(","),
        settings.redis.namespace
    );
    let redis = connect_redis(&settings).await?;
    let layout = CacheLayout::new(settings.redis.namespace.clone());
    let writer = CacheWriter::new(redis.clone(), layout.clone(), &settings.cache);
    let stores = Stores {
        pg_config,
        admin,
        redis,
        layout,
        writer,
    };

    let mut created = Created::default();
    let outcome = tokio::select! {
        outcome = run_phases(args, &settings, &bearer, &channels, &stores, &mut created) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    clean_up(&stores, &created).await;
    outcome
}

async fn run_phases(
    args: &FeedBenchArgs,
    settings: &Settings,
    bearer: &shardfeed_proto::auth::Bearer,
    channels: &Channels,
    stores: &Stores,
    created: &mut Created,
) -> anyhow::Result<Results> {
    let timing = Timing {
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
    };
    let concurrency = args.concurrency as usize;

    // 1. PostgreSQL only; the bench users' cache stays empty for the cold phase.
    let started = Instant::now();
    let (data, version) = seed_postgres(args, stores, created).await?;
    let seed_postgres_s = started.elapsed().as_secs_f64();
    eprintln!(
        "bench feed: PostgreSQL seeded in {seed_postgres_s:.1} s ({} users, {} follows, {} posts)",
        data.users(),
        data.follow_count(),
        data.post_count()
    );
    let data = Arc::new(data);
    delete_user_keys(&stores.redis, &stores.layout, &data.user_ids)
        .await
        .context("emptying the bench users' cache keys before the cold phase")?;
    let memory_before = used_memory(&stores.redis).await;

    // 2a. Cold: no warm-up, the first seconds are the ones that count.
    eprintln!(
        "bench feed: {COLD_LABEL}: {concurrency} workers over {} channel(s), cache of the bench \
         users empty, no warm-up",
        channels.len()
    );
    let served = Arc::new(AtomicU64::new(0));
    let cold_timing = Timing {
        warmup: Duration::ZERO,
        duration: timing.duration,
    };
    let cold = closed_loop(
        COLD_LABEL,
        grpc_ops(channels, &data, concurrency, &served),
        cold_timing,
    )
    .await?;

    // 1'. The cache, as the write path would have left it.
    let started = Instant::now();
    seed_cache(&stores.writer, &data, version).await?;
    let seed_cache_s = started.elapsed().as_secs_f64();
    eprintln!("bench feed: cache seeded in {seed_cache_s:.1} s");
    let memory_after = used_memory(&stores.redis).await;
    let memory = match (memory_before, memory_after) {
        (Ok(before), Ok(after)) => Ok(MemoryFigures {
            before,
            after,
            authors: data.users(),
        }),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };

    // 2b. Warm.
    eprintln!(
        "bench feed: {WARM_LABEL}: {concurrency} workers over {} channel(s)",
        channels.len()
    );
    let served = Arc::new(AtomicU64::new(0));
    let before = command_calls(&stores.redis).await;
    let warm = closed_loop(
        WARM_LABEL,
        grpc_ops(channels, &data, concurrency, &served),
        timing,
    )
    .await?;
    let after = command_calls(&stores.redis).await;
    let warm_commands = CommandFigures::new(before, after, served.load(Ordering::Relaxed));

    // 2c. The best single SQL query.
    let plan = explain(&stores.admin, data.user_ids[0]).await;
    eprintln!("bench feed: {SQL_LABEL}: {concurrency} workers, one PostgreSQL connection each");
    let ops = sql_ops(&stores.pg_config, &data, concurrency).await?;
    let sql = closed_loop(SQL_LABEL, ops, timing).await?;

    // 2d. Naive Redis.
    let naive_concurrency = args.naive_concurrency() as usize;
    eprintln!("bench feed: {NAIVE_LABEL}: {naive_concurrency} workers, one command at a time each");
    let served = Arc::new(AtomicU64::new(0));
    let ops = naive_ops(
        &stores.redis,
        &stores.layout,
        &data,
        naive_concurrency,
        &served,
    );
    let before = command_calls(&stores.redis).await;
    let naive = closed_loop(NAIVE_LABEL, ops, timing).await?;
    let after = command_calls(&stores.redis).await;
    let naive_commands = CommandFigures::new(before, after, served.load(Ordering::Relaxed));

    // 2e. Latency unloaded: one worker each, so nothing queues behind anything; the two
    //     alternate for a few rounds, so a drift of the machine's speed does not favour one.
    let mut unloaded_rounds = Vec::new();
    if args.latency_secs > 0 {
        let timing = Timing {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(args.latency_secs),
        };
        for round in 1..=args.latency_rounds {
            eprintln!(
                "bench feed: unloaded latency, round {round}/{}: one request at a time, \
                 shardfeed then naive",
                args.latency_rounds
            );
            let ours = closed_loop(
                UNLOADED_LABEL,
                grpc_ops(&channels.first(1), &data, 1, &Arc::new(AtomicU64::new(0))),
                timing,
            )
            .await?;
            let naive = closed_loop(
                NAIVE_UNLOADED_LABEL,
                naive_ops(
                    &stores.redis,
                    &stores.layout,
                    &data,
                    1,
                    &Arc::new(AtomicU64::new(0)),
                ),
                timing,
            )
            .await?;
            unloaded_rounds.push((ours, naive));
        }
    }
    let unloaded = median_unloaded(&unloaded_rounds).cloned();

    // 2f. What authentication costs: the same warm load on two aggregators of this process
    //     that differ in `auth.enabled` alone.
    let auth_rounds = if args.auth_secs > 0 {
        let timing = Timing {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(args.auth_secs),
        };
        auth_cost::measure(args, settings, bearer, &data, timing).await?
    } else {
        Vec::new()
    };

    Ok(Results {
        seed_postgres_s,
        seed_cache_s,
        posts: data.post_count(),
        follows: data.follow_count(),
        cold,
        warm,
        sql,
        naive,
        unloaded,
        warm_commands,
        naive_commands,
        memory,
        unloaded_rounds,
        auth_rounds,
        rss: aggregator_rss(args.aggregator_pid),
        plan,
    })
}
