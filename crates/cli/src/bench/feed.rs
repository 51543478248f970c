//! `shardfeed bench feed`: the read path. Measures `FeedService.GetHomeFeed` (first page, 20
//! posts) over gRPC, cold and warm, and in the same run, on the same data, the alternatives a
//! user would pick instead: the best single SQL query straight against PostgreSQL (a LATERAL
//! top-k over the follow list) and the naive one-request-per-key read of the same Redis cache.
//!
//! The data is seeded in bulk, not through the API: users with one `INSERT … SELECT`, follows
//! and posts with binary `COPY`, then (after the cold phase) the cache with the write path's own
//! [`CacheWriter`] scripts. Every answer of every phase is checked against the page computed
//! from the seeded data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use fred::clients::Client as RedisClient;
use fred::interfaces::{
    ClientLike, ClusterInterface, HashesInterface, KeysInterface, SortedSetsInterface,
};
use fred::types::{InfoKind, Value};
use futures::{stream, StreamExt};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardfeed_cache::{CacheChange, CacheLayout, CacheWriter};
use shardfeed_proto::v1::{feed_service_client::FeedServiceClient, GetHomeFeedRequest, Post};
use shardfeed_server::Settings;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::Statement;
use tonic::{transport::Channel, Code};

use super::ingest::{connect_postgres, describe_postgres, pg_error, postgres_config};
use super::load::{closed_loop, Op, Timing, OP_TIMEOUT};
use super::stats::{median_by, round, OpError, Summary, Table};

/// Post ids (migrations/V2): `((time_ms - EPOCH) << 22) | (seq mod 2^22)`.
const POST_ID_EPOCH_MS: i64 = 1_577_836_800_000;
const POST_ID_SEQ_BITS: u32 = 22;
const POST_ID_SEQ_MASK: i64 = (1 << POST_ID_SEQ_BITS) - 1;
/// Seeded posts are spread over this window before now...
const SPREAD_MS: i64 = 30 * 24 * 3600 * 1000;
/// ...and are at least this old, so that none is in the future of a skewed clock.
const MIN_AGE_MS: i64 = 60 * 1000;

/// The page every phase reads: GetHomeFeed's `page_size`, the SQL `LIMIT`, the naive top-k.
const PAGE_SIZE: usize = 20;
/// Cache changes per `CacheWriter::apply_all` batch, and batches in flight at once.
const CACHE_BATCH: usize = 5_000;
const CACHE_BATCHES_IN_FLIGHT: usize = 4;
/// A batch's failed changes are applied again (the scripts are idempotent) this many times.
const CACHE_ATTEMPTS: usize = 3;
/// Concurrent `COPY … posts` streams (each its own connection), beside the one for follows.
const POST_COPY_STREAMS: usize = 2;
/// No more seeded posts than this in one run (they are held in memory to check every answer).
const MAX_POSTS: u64 = 50_000_000;

/// Targets set in the issue.
const TARGET_VS_SQL: f64 = 1.5;
const TARGET_NAIVE_P50_RATIO: f64 = 10.0;
const TARGET_RSS_MIB: f64 = 256.0;

const WARM_LABEL: &str = "shardfeed warm";
const COLD_LABEL: &str = "shardfeed cold";
const SQL_LABEL: &str = "SQL LATERAL";
const NAIVE_LABEL: &str = "naive Redis";
const UNLOADED_LABEL: &str = "shardfeed, 1 at a time";
const NAIVE_UNLOADED_LABEL: &str = "naive, 1 at a time";

/// The best single SQL query for a first page, as a user would write it: per followee the
/// newest 20 live posts from `posts_author_recent_idx`, then the newest 20 of those.
const FEED_SQL: &str = "SELECT p.post_id, p.author_id, p.body, p.create_time \
     FROM follows f CROSS JOIN LATERAL (\
       SELECT post_id, author_id, body, create_time FROM posts \
       WHERE posts.author_id = f.followee_id AND delete_time IS NULL \
       ORDER BY post_id DESC LIMIT 20) p \
     WHERE f.follower_id = $1 ORDER BY p.post_id DESC LIMIT 20";

/// Commands that are not the read path: monitoring (ours included), replication, cluster upkeep
/// and client health probes. They are left out of the commands-per-feed figures.
const HOUSEKEEPING_COMMANDS: &[&str] = &[
    "info", "replconf", "ping", "cluster", "client", "hello", "command", "readonly", "role",
    "config", "slowlog", "latency", "memory", "select", "psync", "sync",
];

#[derive(clap::Args, Debug, Clone)]
pub struct FeedBenchArgs {
    /// The aggregator service.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50052",
        env = "SHARDFEED_DEMO_AGGREGATOR"
    )]
    aggregator: String,
    /// The PostgreSQL the aggregator reads [default: postgres.url of the settings, i.e.
    /// SHARDFEED_POSTGRES__URL or postgres://shardfeed@127.0.0.1:54329/shardfeed].
    #[arg(long)]
    postgres_url: Option<String>,
    /// Bench users to seed; every one is an author and a reader.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    users: u32,
    /// Followees per reader (fewer than --users). A comma-separated list runs the bench once
    /// per value on a data set of its own and ends with the cost curve side by side
    /// (`--followees 10,100,1000,5000`).
    #[arg(
        long = "followees",
        default_value = "100",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u32).range(0..=100_000)
    )]
    followees_curve: Vec<u32>,
    /// Followees of this run: one value of `followees_curve`.
    #[arg(skip)]
    followees: u32,
    /// Users that follow others and read feeds: the first N [default: every user]. The rest are
    /// authors only, so that many followees need no follow graph of users × followees.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    readers: Option<u32>,
    /// Posts per author, spread over the last 30 days.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    posts_per_author: u32,
    /// Zipf exponent of followee popularity: user i is picked with weight 1/(i+1)^s; 0 picks
    /// followees uniformly at random.
    #[arg(long, default_value_t = 0.0)]
    zipf: f64,
    /// Seconds of load before measuring the warm, SQL and naive phases (not recorded; the cold
    /// phase has none).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_secs: u64,
    /// Seconds measured, per phase.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_secs: u64,
    /// Concurrent workers (closed loop) of the gRPC and SQL phases.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Concurrent workers of the naive Redis phase [default: --concurrency].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    naive_concurrency: Option<u32>,
    /// HTTP/2 connections to the aggregator, shared round-robin by the workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    channels: u32,
    /// Length of each post body in bytes (ASCII).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
    body_bytes: u32,
    /// The aggregator's process id, for its memory [default: read from .local/run/aggregator.pid
    /// of the local stack].
    #[arg(long)]
    aggregator_pid: Option<u32>,
    /// Seed of the random data (follow graph, post times) [default: a fresh one per run].
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of each unloaded latency phase (one request at a time, shardfeed and naive);
    /// 0 skips them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    latency_secs: u64,
    /// Rounds of the two unloaded latency phases, alternating (shardfeed, naive, shardfeed, …);
    /// the round with the median ratio is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    latency_rounds: u32,
}

impl FeedBenchArgs {
    fn naive_concurrency(&self) -> u32 {
        self.naive_concurrency.unwrap_or(self.concurrency)
    }

    fn readers(&self) -> u32 {
        self.readers.unwrap_or(self.users).min(self.users)
    }

    fn validate(&self) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------------------
// The data set: pure generation, so that every answer can be checked

/// The post id of a post created at `time_ms` with sequence value `seq` (migrations/V2).
fn post_id(time_ms: i64, seq: i64) -> i64 {
    ((time_ms - POST_ID_EPOCH_MS) << POST_ID_SEQ_BITS) | (seq & POST_ID_SEQ_MASK)
}

/// The creation time (ms since the Unix epoch) a post id carries.
fn post_time_ms(post_id: i64) -> i64 {
    (post_id >> POST_ID_SEQ_BITS) + POST_ID_EPOCH_MS
}

fn system_time(time_ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(time_ms).unwrap_or(0))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// splitmix64: a tiny deterministic generator, so a post's body follows from its id alone.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The body of post `post_id`: `len` bytes of ASCII words, the same every time it is asked
/// for, so 1M bodies need not be held in memory between the PostgreSQL and the cache seeding.
fn body_of(post_id: i64, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = post_id as u64;
    (0..len)
        .map(|i| {
            if i % 8 == 7 && i + 1 < len {
                ' '
            } else {
                char::from(ALPHABET[(splitmix64(&mut state) % ALPHABET.len() as u64) as usize])
            }
        })
        .collect()
}

/// Who gets followed: user `i` with weight `1/(i+1)^s` (Zipf), or uniformly when `s` is 0.
struct Popularity {
    /// Cumulative weights; `None` for uniform.
    cdf: Option<Vec<f64>>,
    users: usize,
}

impl Popularity {
    fn new(users: usize, exponent: f64) -> Self {
        let cdf = (exponent > 0.0).then(|| {
            let mut total = 0.0;
            (0..users)
                .map(|i| {
                    total += ((i + 1) as f64).powf(-exponent);
                    total
                })
                .collect()
        });
        Popularity { cdf, users }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        match &self.cdf {
            None => rng.gen_range(0..self.users),
            Some(cdf) => {
                let x = rng.gen::<f64>() * cdf[cdf.len() - 1];
                cdf.partition_point(|&c| c <= x).min(self.users - 1)
            }
        }
    }
}

/// `count` distinct followees of `user`, never `user` itself (`count` < number of users).
fn pick_followees(
    rng: &mut impl Rng,
    popularity: &Popularity,
    user: usize,
    count: usize,
) -> Vec<u32> {
    let mut chosen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    let mut draws = 0usize;
    while out.len() < count {
        // A steep Zipf head runs out of distinct users: finish uniformly.
        let candidate = if draws < count * 50 {
            popularity.sample(rng)
        } else {
            rng.gen_range(0..popularity.users)
        };
        draws += 1;
        if candidate != user && chosen.insert(candidate) {
            out.push(candidate as u32);
        }
    }
    out
}

/// Keeps the `k` items with the highest ids, newest (highest id) first.
fn keep_newest<T>(items: &mut Vec<T>, k: usize, id: impl Fn(&T) -> i64) {
    if k == 0 {
        items.clear();
        return;
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, |a, b| id(b).cmp(&id(a)));
        items.truncate(k);
    }
    items.sort_unstable_by_key(|item| std::cmp::Reverse(id(item)));
}

/// The bench users, whom they follow, what they posted, and the page each one must get.
struct Dataset {
    /// User index → user id.
    user_ids: Vec<i64>,
    /// User index → followee indexes.
    follows: Vec<Vec<u32>>,
    /// Author index → post ids, newest first.
    posts: Vec<Vec<i64>>,
    /// User index → the post ids of the first page of the home feed, newest first.
    expected: Vec<Vec<i64>>,
    body_bytes: usize,
}

impl Dataset {
    fn users(&self) -> usize {
        self.user_ids.len()
    }

    /// The users that follow others (the first ones): those whose feeds are read.
    fn readers(&self) -> usize {
        self.follows
            .iter()
            .take_while(|f| !f.is_empty())
            .count()
            .max(1)
    }

    fn post_count(&self) -> usize {
        self.posts.iter().map(Vec::len).sum()
    }

    fn follow_count(&self) -> usize {
        self.follows.iter().map(Vec::len).sum()
    }
}

/// What each user follows and posts.
#[derive(Debug, Clone, Copy)]
struct Shape {
    followees: usize,
    /// Users that follow (the first ones); the others only post.
    readers: usize,
    posts_per_author: usize,
    /// Zipf exponent of followee popularity (0: uniform).
    zipf: f64,
    body_bytes: usize,
}

/// The follow graph and the posts (ids from `seqs`, one per post, and random times in the last
/// 30 days before `now_ms`), then each user's expected first page.
fn generate(
    rng: &mut impl Rng,
    user_ids: Vec<i64>,
    shape: Shape,
    seqs: &[i64],
    now_ms: i64,
) -> Dataset {
    let Shape {
        followees,
        readers,
        posts_per_author,
        zipf,
        body_bytes,
    } = shape;
    let users = user_ids.len();
    let popularity = Popularity::new(users, zipf);
    let follows: Vec<Vec<u32>> = (0..users)
        .map(|u| {
            if u < readers {
                pick_followees(rng, &popularity, u, followees)
            } else {
                Vec::new()
            }
        })
        .collect();
    let posts: Vec<Vec<i64>> = (0..users)
        .map(|a| {
            let mut ids: Vec<i64> = (0..posts_per_author)
                .map(|i| {
                    let time_ms = now_ms - rng.gen_range(MIN_AGE_MS..SPREAD_MS);
                    post_id(time_ms, seqs[a * posts_per_author + i])
                })
                .collect();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids
        })
        .collect();
    let expected = follows
        .iter()
        .map(|followed| {
            let mut page: Vec<i64> = followed
                .iter()
                .flat_map(|&f| posts[f as usize].iter().take(PAGE_SIZE).copied())
                .collect();
            keep_newest(&mut page, PAGE_SIZE, |id| *id);
            page
        })
        .collect();
    Dataset {
        user_ids,
        follows,
        posts,
        expected,
        body_bytes,
    }
}

/// An answer counts only if it is exactly the expected page.
fn check_page(user_id: i64, got: &[i64], expected: &[i64]) -> Result<(), OpError> {
    if got == expected {
        return Ok(());
    }
    let detail = match got.iter().zip(expected).position(|(g, e)| g != e) {
        Some(i) => format!("post #{i} is {} instead of {}", got[i], expected[i]),
        None => format!("{} posts instead of {}", got.len(), expected.len()),
    };
    Err(OpError::new(
        "WrongPage",
        format!("user {user_id}: {detail}"),
    ))
}

// ---------------------------------------------------------------------------------------------
// The run

/// What the bench created and must remove, whatever happens.
#[derive(Default)]
struct Created {
    user_ids: Vec<i64>,
}

struct Stores {
    pg_config: tokio_postgres::Config,
    admin: tokio_postgres::Client,
    redis: RedisClient,
    layout: CacheLayout,
    writer: CacheWriter,
}

/// Everything the report shows.
struct Results {
    seed_postgres_s: f64,
    seed_cache_s: f64,
    posts: usize,
    follows: usize,
    cold: Summary,
    warm: Summary,
    sql: Summary,
    naive: Summary,
    /// One request at a time: what a user waits when nothing queues (shardfeed, naive), the
    /// round with the median ratio.
    unloaded: Option<(Summary, Summary)>,
    /// Every unloaded round, in order.
    unloaded_rounds: Vec<(Summary, Summary)>,
    warm_commands: Result<CommandFigures, String>,
    naive_commands: Result<CommandFigures, String>,
    memory: Result<MemoryFigures, String>,
    rss: Result<Rss, String>,
    plan: Option<String>,
}

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
    let settings = Settings::load()?;

    // Reach everything before creating anything.
    eprintln!(
        "bench feed: connecting {} HTTP/2 channel(s) to {}",
        args.channels, args.aggregator
    );
    let channels = connect_channels(&args.aggregator, args.channels as usize).await?;
    probe_aggregator(&channels[0], &args.aggregator).await?;
    let url = match &args.postgres_url {
        Some(url) => url.clone(),
        None => settings.postgres.url().to_owned(),
    };
    let pg_config = postgres_config(&url)?;
    eprintln!("bench feed: PostgreSQL {}", describe_postgres(&pg_config));
    let admin = connect_postgres(&pg_config).await?;
    eprintln!(
        "bench feed: Redis Cluster {} (key namespace {:?}, as the aggregator reads it)",
        settings.redis.nodes.join(","),
        settings.redis.namespace
    );
    let redis = shardfeed_server::redis::connect_and_wait(&settings.redis, Duration::from_secs(10))
        .await
        .context("cannot reach the Redis Cluster; is the stack up (deploy/local/up.sh)?")?;
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
        outcome = run_phases(args, &channels, &stores, &mut created) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    clean_up(&stores, &created).await;
    outcome
}

async fn run_phases(
    args: &FeedBenchArgs,
    channels: &[Channel],
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
    let mut ops = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = connect_postgres(&stores.pg_config).await?;
        let statement = client
            .prepare(FEED_SQL)
            .await
            .context("preparing the feed query")?;
        ops.push(SqlFeed {
            client,
            statement,
            data: data.clone(),
            rng: StdRng::from_entropy(),
        });
    }
    let sql = closed_loop(SQL_LABEL, ops, timing).await?;

    // 2d. Naive Redis.
    let naive_concurrency = args.naive_concurrency() as usize;
    eprintln!("bench feed: {NAIVE_LABEL}: {naive_concurrency} workers, one command at a time each");
    let served = Arc::new(AtomicU64::new(0));
    let ops: Vec<NaiveFeed> = (0..naive_concurrency)
        .map(|_| NaiveFeed {
            redis: stores.redis.clone(),
            layout: stores.layout.clone(),
            data: data.clone(),
            rng: StdRng::from_entropy(),
            served: served.clone(),
        })
        .collect();
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
                grpc_ops(&channels[..1], &data, 1, &Arc::new(AtomicU64::new(0))),
                timing,
            )
            .await?;
            let naive = closed_loop(
                NAIVE_UNLOADED_LABEL,
                vec![NaiveFeed {
                    redis: stores.redis.clone(),
                    layout: stores.layout.clone(),
                    data: data.clone(),
                    rng: StdRng::from_entropy(),
                    served: Arc::new(AtomicU64::new(0)),
                }],
                timing,
            )
            .await?;
            unloaded_rounds.push((ours, naive));
        }
    }
    let unloaded = median_unloaded(&unloaded_rounds).cloned();

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
        rss: aggregator_rss(args.aggregator_pid),
        plan,
    })
}

/// naive p50 / shardfeed p50 of an unloaded round.
fn round_ratio((ours, naive): &(Summary, Summary)) -> Option<f64> {
    (ours.p50_ms > 0.0).then(|| naive.p50_ms / ours.p50_ms)
}

/// The unloaded round with the median ratio (the lower middle one of an even count).
fn median_unloaded(rounds: &[(Summary, Summary)]) -> Option<&(Summary, Summary)> {
    median_by(rounds, |r| round_ratio(r).unwrap_or(0.0))
}

// ---------------------------------------------------------------------------------------------
// The four requests measured

fn grpc_ops(
    channels: &[Channel],
    data: &Arc<Dataset>,
    concurrency: usize,
    served: &Arc<AtomicU64>,
) -> Vec<GrpcFeed> {
    (0..concurrency)
        .map(|i| GrpcFeed {
            client: FeedServiceClient::new(channels[i % channels.len()].clone()),
            data: data.clone(),
            rng: StdRng::from_entropy(),
            served: served.clone(),
        })
        .collect()
}

struct GrpcFeed {
    client: FeedServiceClient<Channel>,
    data: Arc<Dataset>,
    rng: StdRng,
    /// Every answered call, measured or not: the denominator of commands per feed.
    served: Arc<AtomicU64>,
}

impl Op for GrpcFeed {
    async fn call(&mut self) -> Result<(), OpError> {
        let user = self.rng.gen_range(0..self.data.readers());
        let user_id = self.data.user_ids[user];
        let request = GetHomeFeedRequest {
            user_id,
            page_size: PAGE_SIZE as i32,
            page_token: String::new(),
        };
        let response = self.client.get_home_feed(request).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        let response = response
            .map_err(|status| OpError::new(format!("{:?}", status.code()), status.message()))?
            .into_inner();
        if response.degraded {
            return Err(OpError::new(
                "Degraded",
                format!(
                    "user {user_id}: degraded page, {} author(s) omitted",
                    response.authors_omitted
                ),
            ));
        }
        let got: Vec<i64> = response.posts.iter().map(|p| p.post_id).collect();
        check_page(user_id, &got, &self.data.expected[user])
    }
}

struct SqlFeed {
    client: tokio_postgres::Client,
    statement: Statement,
    data: Arc<Dataset>,
    rng: StdRng,
}

impl Op for SqlFeed {
    async fn call(&mut self) -> Result<(), OpError> {
        let user = self.rng.gen_range(0..self.data.readers());
        let user_id = self.data.user_ids[user];
        let rows = self
            .client
            .query(&self.statement, &[&user_id])
            .await
            .map_err(pg_error)?;
        // Decoded as a client would, into the wire message.
        let posts: Vec<Post> = rows
            .iter()
            .map(|row| {
                let time: SystemTime = row.get(3);
                let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
                Post {
                    post_id: row.get(0),
                    author_id: row.get(1),
                    body: row.get(2),
                    create_time: Some(timestamp(since)),
                }
            })
            .collect();
        let got: Vec<i64> = posts.iter().map(|p| p.post_id).collect();
        check_page(user_id, &got, &self.data.expected[user])
    }
}

fn timestamp(since_epoch: Duration) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanos: since_epoch.subsec_nanos() as i32,
    }
}

/// What a user would write by hand against the same cache: one command at a time.
struct NaiveFeed {
    redis: RedisClient,
    layout: CacheLayout,
    data: Arc<Dataset>,
    rng: StdRng,
    served: Arc<AtomicU64>,
}

impl Op for NaiveFeed {
    async fn call(&mut self) -> Result<(), OpError> {
        let user = self.rng.gen_range(0..self.data.readers());
        let user_id = self.data.user_ids[user];
        let result = naive_page(&self.redis, &self.layout, user_id).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        let posts = result.map_err(redis_error)?;
        let got: Vec<i64> = posts.iter().map(|p| p.post_id).collect();
        check_page(user_id, &got, &self.data.expected[user])
    }
}

/// `HGETALL {u:U}:fol`, then per followee `ZREVRANGE {u:A}:tl 0 19`, merge, then per post of
/// the page `HGET {u:A}:posts <id>`: each awaited before the next is sent.
async fn naive_page(
    redis: &RedisClient,
    layout: &CacheLayout,
    user_id: i64,
) -> Result<Vec<Post>, fred::error::Error> {
    let following: HashMap<String, String> = redis.hgetall(layout.following(user_id)).await?;
    let followees = naive_followees(&following);
    let mut candidates: Vec<(i64, i64)> = Vec::with_capacity(followees.len() * PAGE_SIZE);
    for author in followees {
        let ids: Vec<String> = redis
            .zrevrange(layout.timeline(author), 0, PAGE_SIZE as i64 - 1, false)
            .await?;
        candidates.extend(
            ids.iter()
                .filter_map(|id| id.parse().ok())
                .map(|id| (id, author)),
        );
    }
    keep_newest(&mut candidates, PAGE_SIZE, |(id, _)| *id);
    let mut posts = Vec::with_capacity(candidates.len());
    for (post_id, author) in candidates {
        let value: Value = redis
            .hget(layout.posts(author), post_id.to_string())
            .await?;
        let bytes = match value {
            Value::Bytes(b) => b,
            Value::String(s) => s.into_inner(),
            _ => continue,
        };
        if let Ok(post) = Post::decode(bytes.as_ref()) {
            posts.push(post);
        }
    }
    Ok(posts)
}

/// The followees in a cached `{u:U}:fol` hash: followee id → edge version, where a negative
/// version is an unfollow and `_loaded` a marker.
fn naive_followees(fields: &HashMap<String, String>) -> Vec<i64> {
    fields
        .iter()
        .filter(|(_, version)| !version.starts_with('-'))
        .filter_map(|(field, _)| field.parse().ok())
        .collect()
}

fn redis_error(err: fred::error::Error) -> OpError {
    OpError::new(format!("Redis {:?}", err.kind()), err.details())
}

// ---------------------------------------------------------------------------------------------
// Seeding

async fn connect_channels(endpoint: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Channel::from_shared(endpoint.to_owned())
        .with_context(|| format!("{endpoint} is not a valid endpoint"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(OP_TIMEOUT)
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        // One `connect` per channel: each is its own HTTP/2 connection.
        channels.push(endpoint.connect().await.with_context(|| {
            format!(
                "cannot reach the aggregator at {}; is the stack up (deploy/local/up.sh)?",
                endpoint.uri()
            )
        })?);
    }
    Ok(channels)
}

/// One GetHomeFeed for a user that does not exist, before seeding anything: an aggregator that
/// cannot serve feeds stops the bench right here.
async fn probe_aggregator(channel: &Channel, aggregator: &str) -> anyhow::Result<()> {
    let mut client = FeedServiceClient::new(channel.clone());
    let request = GetHomeFeedRequest {
        user_id: i64::MAX,
        page_size: PAGE_SIZE as i32,
        page_token: String::new(),
    };
    match client.get_home_feed(request).await {
        Err(status) if status.code() == Code::Unimplemented => bail!(
            "FeedService.GetHomeFeed answers UNIMPLEMENTED at {aggregator}: this \
             shardfeed-aggregator does not serve home feeds yet"
        ),
        Err(status) if status.code() == Code::Unavailable => bail!(
            "the aggregator at {aggregator} is unavailable: {}",
            status.message()
        ),
        // NOT_FOUND (or a page) is the answer of a service that works.
        _ => Ok(()),
    }
}

/// Users, follows and posts straight into PostgreSQL; returns the data set and the graph
/// version the cache's follow edges get.
async fn seed_postgres(
    args: &FeedBenchArgs,
    stores: &Stores,
    created: &mut Created,
) -> anyhow::Result<(Dataset, i64)> {
    let admin = &stores.admin;
    let users = args.users as usize;
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    eprintln!(
        "bench feed: seeding PostgreSQL: {users} users (bf_{run_tag}_<i>), {} followees for each \
         of {} readers{}, {} posts per author",
        args.followees,
        args.readers(),
        if args.zipf > 0.0 {
            format!(" (Zipf {})", args.zipf)
        } else {
            " (uniform)".to_owned()
        },
        args.posts_per_author
    );
    let mut step = Instant::now();
    let mut lap = |what: &str| {
        eprintln!(
            "  postgres: {what} in {:.1} s",
            step.elapsed().as_secs_f64()
        );
        step = Instant::now();
    };
    let rows = admin
        .query(
            "INSERT INTO users (handle, display_name) \
             SELECT 'bf_' || $1::text || '_' || i, 'Bench feed ' || i \
             FROM generate_series(0, $2::int - 1) AS i \
             RETURNING user_id, handle",
            &[&run_tag, &(users as i32)],
        )
        .await
        .context("inserting the bench users")?;
    let mut user_ids = vec![0i64; users];
    for row in &rows {
        let user_id: i64 = row.get(0);
        created.user_ids.push(user_id);
        let handle: &str = row.get(1);
        let index: usize = handle
            .rsplit('_')
            .next()
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("unexpected handle {handle:?}"))?;
        user_ids[index] = user_id;
    }

    lap("users (INSERT … SELECT generate_series)");

    // One post_id_seq value per post, as the ingest service draws them.
    let post_count = users * args.posts_per_author as usize;
    let seqs: Vec<i64> = admin
        .query_one(
            "SELECT coalesce(array_agg(nextval('post_id_seq')), '{}') \
             FROM generate_series(1, $1::bigint)",
            &[&(post_count as i64)],
        )
        .await
        .context("drawing post ids from post_id_seq")?
        .get(0);
    // One graph version for every seeded edge: they are made "at once".
    let version: i64 = admin
        .query_one("SELECT nextval('graph_version_seq')", &[])
        .await
        .context("drawing a graph version")?
        .get(0);

    lap("post ids and a graph version drawn from the sequences");

    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = Shape {
        followees: args.followees as usize,
        readers: args.readers() as usize,
        posts_per_author: args.posts_per_author as usize,
        zipf: args.zipf,
        body_bytes: args.body_bytes as usize,
    };
    let data = generate(&mut rng, user_ids, shape, &seqs, now_ms());
    drop(seqs);
    lap(&format!("data generated (seed {seed})"));

    // Follows on this connection, posts on their own, all at once.
    let mut post_clients = Vec::with_capacity(POST_COPY_STREAMS);
    for _ in 0..POST_COPY_STREAMS {
        post_clients.push(connect_postgres(&stores.pg_config).await?);
    }
    let per_stream = users.div_ceil(POST_COPY_STREAMS);
    let post_copies = post_clients.iter().enumerate().map(|(i, client)| {
        let range = (i * per_stream).min(users)..((i + 1) * per_stream).min(users);
        copy_posts(client, &data, range)
    });
    futures::try_join!(
        copy_follows(admin, &data),
        futures::future::try_join_all(post_copies)
    )?;
    lap(&format!(
        "follows and posts (binary COPY, {} streams)",
        POST_COPY_STREAMS + 1
    ));
    // Fresh statistics, so the planner sees the tables as they now are.
    admin
        .batch_execute("ANALYZE users, follows, posts")
        .await
        .context("ANALYZE after seeding")?;
    lap("ANALYZE");
    Ok((data, version))
}

async fn copy_follows(client: &tokio_postgres::Client, data: &Dataset) -> anyhow::Result<()> {
    let sink = client
        .copy_in("COPY follows (follower_id, followee_id) FROM STDIN (FORMAT binary)")
        .await
        .context("COPY follows")?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT8]));
    for (user, followees) in data.follows.iter().enumerate() {
        let follower_id = data.user_ids[user];
        for &followee in followees {
            let followee_id = data.user_ids[followee as usize];
            writer
                .as_mut()
                .write(&[&follower_id, &followee_id])
                .await
                .context("COPY follows")?;
        }
    }
    writer.finish().await.context("COPY follows")?;
    Ok(())
}

async fn copy_posts(
    client: &tokio_postgres::Client,
    data: &Dataset,
    authors: Range<usize>,
) -> anyhow::Result<()> {
    let sink = client
        .copy_in("COPY posts (author_id, post_id, body, create_time) FROM STDIN (FORMAT binary)")
        .await
        .context("COPY posts")?;
    let mut writer = pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::INT8, Type::INT8, Type::TEXT, Type::TIMESTAMPTZ]
    ));
    for author in authors {
        let author_id = data.user_ids[author];
        for &post_id in &data.posts[author] {
            let body = body_of(post_id, data.body_bytes);
            let time = system_time(post_time_ms(post_id));
            writer
                .as_mut()
                .write(&[&author_id, &post_id, &body, &time])
                .await
                .context("COPY posts")?;
        }
    }
    writer.finish().await.context("COPY posts")?;
    Ok(())
}

/// The cache as the write path leaves it, with its own scripts: every post, then every follow
/// edge, then each user's `UserCreated` last (it marks the timeline and the followee set
/// loaded, so a reader never trusts a half-seeded user).
async fn seed_cache(writer: &CacheWriter, data: &Dataset, version: i64) -> anyhow::Result<()> {
    let posts = data.posts.iter().enumerate().flat_map(|(author, ids)| {
        let author_id = data.user_ids[author];
        ids.iter().map(move |&post_id| CacheChange::PostCreated {
            author_id,
            post_id,
            time_ms: post_time_ms(post_id),
            body: body_of(post_id, data.body_bytes),
        })
    });
    apply_changes(writer, "PostCreated", posts).await?;
    let follows = data
        .follows
        .iter()
        .enumerate()
        .flat_map(|(user, followees)| {
            let follower_id = data.user_ids[user];
            followees.iter().map(move |&f| CacheChange::Followed {
                follower_id,
                followee_id: data.user_ids[f as usize],
                version,
            })
        });
    apply_changes(writer, "Followed", follows).await?;
    let users = data
        .user_ids
        .iter()
        .map(|&user_id| CacheChange::UserCreated { user_id });
    apply_changes(writer, "UserCreated", users).await
}

/// Applies `changes` in batches of [`CACHE_BATCH`], [`CACHE_BATCHES_IN_FLIGHT`] at once.
async fn apply_changes(
    writer: &CacheWriter,
    kind: &str,
    changes: impl Iterator<Item = CacheChange>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut changes = changes;
    let batches = std::iter::from_fn(|| {
        let batch: Vec<CacheChange> = changes.by_ref().take(CACHE_BATCH).collect();
        (!batch.is_empty()).then_some(batch)
    });
    let mut results = stream::iter(batches)
        .map(|batch| apply_batch(writer, batch))
        .buffer_unordered(CACHE_BATCHES_IN_FLIGHT);
    let mut applied = 0usize;
    while let Some(result) = results.next().await {
        applied += result.with_context(|| format!("seeding the cache ({kind})"))?;
    }
    eprintln!(
        "  cache: {applied} {kind} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One batch; changes that fail are applied again (every script is idempotent).
async fn apply_batch(writer: &CacheWriter, batch: Vec<CacheChange>) -> anyhow::Result<usize> {
    let size = batch.len();
    let mut pending = batch;
    for _ in 0..CACHE_ATTEMPTS {
        let results = writer.apply_all(&pending).await;
        let mut failed = Vec::new();
        let mut first_error = None;
        for (change, result) in pending.into_iter().zip(results) {
            if let Err(err) = result {
                first_error.get_or_insert(err);
                failed.push(change);
            }
        }
        match first_error {
            None => return Ok(size),
            Some(err) if failed.len() == size => {
                // Nothing went through: no point in hammering a node that is down.
                bail!("{size} changes failed: {err}")
            }
            Some(_) => pending = failed,
        }
    }
    bail!(
        "{} of {size} changes still failed after {CACHE_ATTEMPTS} attempts",
        pending.len()
    )
}

/// Every key of these users (timeline, bodies, meta, followee set, rebuild leases): all in one
/// slot per user, so one `DEL` each.
async fn delete_user_keys(
    redis: &RedisClient,
    layout: &CacheLayout,
    user_ids: &[i64],
) -> anyhow::Result<()> {
    for chunk in user_ids.chunks(CACHE_BATCH) {
        let deletes = chunk.iter().map(|&user_id| {
            let keys = vec![
                layout.timeline(user_id),
                layout.posts(user_id),
                layout.meta(user_id),
                layout.following(user_id),
                layout.rebuild_lease(user_id, "tl"),
                layout.rebuild_lease(user_id, "fol"),
            ];
            async move { redis.del::<i64, _>(keys).await }
        });
        for result in futures::future::join_all(deletes).await {
            result.context("DEL")?;
        }
    }
    Ok(())
}

/// `EXPLAIN` of the feed query for one user: the plan's top line (returned), and on stderr the
/// first line that scans `posts_author_recent_idx` (on a partitioned table the plan names the
/// partitions' indexes, so those are looked up first).
async fn explain(admin: &tokio_postgres::Client, user_id: i64) -> Option<String> {
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

// ---------------------------------------------------------------------------------------------
// Redis figures: commands per feed, memory

/// `INFO <section>` of every master (a node whose `INFO replication` says `role:master`), by
/// node address.
pub(crate) async fn masters_info(
    redis: &RedisClient,
    kind: InfoKind,
) -> anyhow::Result<BTreeMap<String, String>> {
    let routing = redis
        .cached_cluster_state()
        .context("the client has no cluster state")?;
    let mut out = BTreeMap::new();
    for server in routing.unique_primary_nodes() {
        let node = redis.with_cluster_node(server.clone());
        let replication: String = node
            .info(Some(InfoKind::Replication))
            .await
            .with_context(|| format!("INFO replication on {server}"))?;
        if info_field(&replication, "role") != Some("master") {
            continue;
        }
        let info: String = node
            .info(Some(kind.clone()))
            .await
            .with_context(|| format!("INFO on {server}"))?;
        out.insert(server.to_string(), info);
    }
    if out.is_empty() {
        bail!("no node says role:master");
    }
    Ok(out)
}

/// A `field:value` line of an `INFO` reply.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// `cmdstat_<name>:calls=<n>,…` lines of `INFO commandstats`: calls by command (subcommands
/// such as `client|setname` keep their full name).
pub(crate) fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim_end().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

pub(crate) fn is_housekeeping(command: &str) -> bool {
    let base = command.split('|').next().unwrap_or(command);
    HOUSEKEEPING_COMMANDS.contains(&base)
}

/// Calls by node and command.
type CommandCalls = BTreeMap<String, BTreeMap<String, u64>>;

async fn command_calls(redis: &RedisClient) -> Result<CommandCalls, String> {
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
struct CommandFigures {
    feeds: u64,
    by_command: BTreeMap<String, u64>,
}

impl CommandFigures {
    fn new(
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

    fn per_feed(&self) -> f64 {
        self.by_command.values().sum::<u64>() as f64 / self.feeds as f64
    }

    /// `hmget 101.2, zrevrangebyscore 100.0, …`, most first.
    fn breakdown(&self) -> String {
        let mut by: Vec<(&String, &u64)> = self.by_command.iter().collect();
        by.sort_by(|a, b| b.1.cmp(a.1));
        by.iter()
            .map(|(command, n)| format!("{command} {:.1}", **n as f64 / self.feeds as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `used_memory` summed over the masters.
async fn used_memory(redis: &RedisClient) -> Result<u64, String> {
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

struct MemoryFigures {
    before: u64,
    after: u64,
    authors: usize,
}

impl MemoryFigures {
    fn per_1000_authors(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / (self.authors as f64 / 1000.0)
    }
}

// ---------------------------------------------------------------------------------------------
// The aggregator's memory

struct Rss {
    pid: u32,
    /// Where the pid came from.
    source: String,
    /// VmHWM: the peak resident set since the process started.
    peak_kib: u64,
    /// VmRSS now.
    current_kib: u64,
}

fn aggregator_rss(pid: Option<u32>) -> Result<Rss, String> {
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

// ---------------------------------------------------------------------------------------------
// Clean-up and report

/// Best effort: every failure is reported on stderr, none hides the figures.
async fn clean_up(stores: &Stores, created: &Created) {
    if created.user_ids.is_empty() {
        return;
    }
    let ids = &created.user_ids;
    eprintln!(
        "bench feed: deleting the {} bench users, their follows and posts (SQL) and their cache \
         keys",
        ids.len()
    );
    let started = Instant::now();
    for (what, sql) in [
        ("posts", "DELETE FROM posts WHERE author_id = ANY($1)"),
        ("follows", "DELETE FROM follows WHERE follower_id = ANY($1)"),
        ("users", "DELETE FROM users WHERE user_id = ANY($1)"),
    ] {
        if let Err(err) = stores.admin.execute(sql, &[ids]).await {
            eprintln!("warning: could not delete the bench {what}: {err:#}");
        }
    }
    if let Err(err) = delete_user_keys(&stores.redis, &stores.layout, ids).await {
        eprintln!(
            "warning: could not delete every cache key of the bench users (they expire after \
             cache.ttl_secs): {err:#}"
        );
    }
    eprintln!(
        "bench feed: cleaned up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The cost of a feed against its followee count: each run's warm phase beside the SQL
/// baseline of the same data, then one JSON line.
fn report_curve(args: &FeedBenchArgs, curve: &[(u32, Results)]) -> anyhow::Result<()> {
    println!();
    println!(
        "shardfeed bench feed, cost by followees: {} users ({} readers), {} posts per author, \
         concurrency {}, measured {} s per phase",
        args.users,
        args.readers(),
        args.posts_per_author,
        args.concurrency,
        args.duration_secs
    );
    println!(
        "{:>9}  {:>9} {:>8} {:>8} {:>10}  {:>9} {:>8} {:>8}  {:>7}",
        "followees",
        "feeds/s",
        "p50 ms",
        "p99 ms",
        "Redis/feed",
        "SQL/s",
        "SQL p50",
        "SQL p99",
        "vs SQL"
    );
    let mut rows = Vec::new();
    for (followees, r) in curve {
        let per_feed = r.warm_commands.as_ref().ok().map(|f| f.per_feed());
        let vs_sql = (r.sql.ops_per_s > 0.0).then(|| r.warm.ops_per_s / r.sql.ops_per_s);
        println!(
            "{:>9}  {:>9.1} {:>8.2} {:>8.2} {:>10}  {:>9.1} {:>8.2} {:>8.2}  {:>7}",
            followees,
            r.warm.ops_per_s,
            r.warm.p50_ms,
            r.warm.p99_ms,
            per_feed.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
            r.sql.ops_per_s,
            r.sql.p50_ms,
            r.sql.p99_ms,
            vs_sql.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
        );
        rows.push(serde_json::json!({
            "followees": followees,
            "feeds_per_s": round(r.warm.ops_per_s, 1),
            "p50_ms": round(r.warm.p50_ms, 3),
            "p99_ms": round(r.warm.p99_ms, 3),
            "redis_cmds_per_feed": per_feed.map(|c| round(c, 2)),
            "sql_feeds_per_s": round(r.sql.ops_per_s, 1),
            "sql_p50_ms": round(r.sql.p50_ms, 3),
            "sql_p99_ms": round(r.sql.p99_ms, 3),
            "wrong_pages": r.warm.errors_by_kind.get("WrongPage").map_or(0, |t| t.count),
        }));
    }
    println!(
        "{}",
        serde_json::json!({"bench": "feed_followees", "curve": rows})
    );
    Ok(())
}

fn report(args: &FeedBenchArgs, r: &Results) -> anyhow::Result<()> {
    let ratio_vs_sql = (r.sql.ops_per_s > 0.0).then(|| r.warm.ops_per_s / r.sql.ops_per_s);
    let naive_p50_ratio =
        (r.warm.p50_ms > 0.0 && r.naive.ops_per_s > 0.0).then(|| r.naive.p50_ms / r.warm.p50_ms);
    let vs_sql = |s: &Summary| {
        if r.sql.ops_per_s > 0.0 {
            format!("{:.2}x", s.ops_per_s / r.sql.ops_per_s)
        } else {
            "-".to_owned()
        }
    };

    println!();
    println!(
        "shardfeed bench feed: {} users, {} followees for each of {} readers ({}), {} posts per \
         author ({} posts, {} follows), page {PAGE_SIZE}; concurrency {} (naive {}), {} HTTP/2 \
         channel(s), warm-up {} s (none for cold), measured {} s per phase",
        args.users,
        args.followees,
        args.readers(),
        if args.zipf > 0.0 {
            format!("Zipf {}", args.zipf)
        } else {
            "uniform".to_owned()
        },
        args.posts_per_author,
        r.posts,
        r.follows,
        args.concurrency,
        args.naive_concurrency(),
        args.channels,
        args.warmup_secs,
        args.duration_secs
    );
    println!(
        "seeding: PostgreSQL {:.1} s, cache {:.1} s",
        r.seed_postgres_s, r.seed_cache_s
    );
    println!();
    let mut table = Table::new([
        "", "requests", "errors", "feeds/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "vs SQL",
    ]);
    for summary in [&r.warm, &r.cold, &r.sql, &r.naive] {
        table.summary_row(summary, &[vs_sql(summary)]);
    }
    if let Some((ours, naive)) = &r.unloaded {
        for summary in [ours, naive] {
            table.summary_row(summary, &["-".to_owned()]);
        }
    }
    print!("{}", table.render());
    println!();

    let commands = |figures: &Result<CommandFigures, String>| match figures {
        Ok(f) => format!("{:.1} ({})", f.per_feed(), f.breakdown()),
        Err(e) => format!("unavailable: {e}"),
    };
    println!(
        "Redis commands per feed: shardfeed warm {}",
        commands(&r.warm_commands)
    );
    println!(
        "                         naive          {}",
        commands(&r.naive_commands)
    );
    match &r.rss {
        Ok(rss) => println!(
            "aggregator memory: peak RSS (VmHWM) {:.1} MiB, now {:.1} MiB (pid {} from {})",
            rss.peak_kib as f64 / 1024.0,
            rss.current_kib as f64 / 1024.0,
            rss.pid,
            rss.source
        ),
        Err(e) => println!("aggregator memory: unavailable ({e})"),
    }
    match &r.memory {
        Ok(m) => println!(
            "Redis used_memory over the masters: {:.1} MiB before seeding, {:.1} MiB after: \
             {:.0} bytes per 1,000 cached authors ({} posts each)",
            m.before as f64 / 1048576.0,
            m.after as f64 / 1048576.0,
            m.per_1000_authors(),
            args.posts_per_author
        ),
        Err(e) => println!("Redis used_memory: unavailable ({e})"),
    }
    if let Some(plan) = &r.plan {
        println!("SQL plan (top line): {plan}");
    }
    println!();

    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    let vs_sql_met = ratio_vs_sql.map(|x| x >= TARGET_VS_SQL);
    let naive_met = naive_p50_ratio.map(|x| x >= TARGET_NAIVE_P50_RATIO);
    let unloaded_ratio = r.unloaded.as_ref().and_then(round_ratio);
    let round_ratios: Vec<f64> = r.unloaded_rounds.iter().filter_map(round_ratio).collect();
    let each: Vec<String> = round_ratios.iter().map(|x| format!("{x:.1}x")).collect();
    let unloaded_met = unloaded_ratio.map(|x| x >= TARGET_NAIVE_P50_RATIO);
    let peak_mib = r.rss.as_ref().ok().map(|rss| rss.peak_kib as f64 / 1024.0);
    let rss_met = peak_mib.map(|mib| mib <= TARGET_RSS_MIB);
    println!(
        "target: shardfeed warm feeds/s >= {TARGET_VS_SQL}x SQL: {} ({})",
        ratio_vs_sql.map_or("-".to_owned(), |x| format!("{x:.2}x")),
        verdict(vs_sql_met)
    );
    println!(
        "target: naive p50 >= {TARGET_NAIVE_P50_RATIO}x shardfeed warm p50: at concurrency {}: {} \
         ({}); one request at a time: {} ({}; median of {} round(s): {})",
        args.concurrency,
        naive_p50_ratio.map_or("-".to_owned(), |x| format!("{x:.1}x")),
        verdict(naive_met),
        unloaded_ratio.map_or("-".to_owned(), |x| format!("{x:.1}x")),
        verdict(unloaded_met),
        round_ratios.len(),
        each.join(", ")
    );
    println!(
        "target: aggregator peak RSS <= {TARGET_RSS_MIB} MiB: {} ({})",
        peak_mib.map_or("-".to_owned(), |x| format!("{x:.1} MiB")),
        verdict(rss_met)
    );
    let mut phases = vec![&r.warm, &r.cold, &r.sql, &r.naive];
    for (ours, naive) in &r.unloaded_rounds {
        phases.extend([ours, naive]);
    }
    let error_lines: Vec<String> = phases.iter().flat_map(|s| s.error_lines()).collect();
    if !error_lines.is_empty() {
        println!("errors:");
        for line in &error_lines {
            println!("  {line}");
        }
    }

    let summary = JsonSummary {
        bench: "feed",
        feeds_per_s: round(r.warm.ops_per_s, 1),
        p50_ms: round(r.warm.p50_ms, 3),
        p90_ms: round(r.warm.p90_ms, 3),
        p99_ms: round(r.warm.p99_ms, 3),
        max_ms: round(r.warm.max_ms, 3),
        requests: r.warm.requests,
        errors: r.warm.errors,
        errors_by_code: errors_by_code(&r.warm),
        cold_feeds_per_s: round(r.cold.ops_per_s, 1),
        cold_p50_ms: round(r.cold.p50_ms, 3),
        cold_p90_ms: round(r.cold.p90_ms, 3),
        cold_p99_ms: round(r.cold.p99_ms, 3),
        cold_max_ms: round(r.cold.max_ms, 3),
        cold_requests: r.cold.requests,
        cold_errors: r.cold.errors,
        cold_errors_by_code: errors_by_code(&r.cold),
        sql_feeds_per_s: round(r.sql.ops_per_s, 1),
        sql_p50_ms: round(r.sql.p50_ms, 3),
        sql_p90_ms: round(r.sql.p90_ms, 3),
        sql_p99_ms: round(r.sql.p99_ms, 3),
        sql_max_ms: round(r.sql.max_ms, 3),
        sql_requests: r.sql.requests,
        sql_errors: r.sql.errors,
        naive_feeds_per_s: round(r.naive.ops_per_s, 1),
        naive_p50_ms: round(r.naive.p50_ms, 3),
        naive_p90_ms: round(r.naive.p90_ms, 3),
        naive_p99_ms: round(r.naive.p99_ms, 3),
        naive_max_ms: round(r.naive.max_ms, 3),
        naive_requests: r.naive.requests,
        naive_errors: r.naive.errors,
        ratio_vs_sql: ratio_vs_sql.map(|x| round(x, 3)),
        naive_p50_ratio: naive_p50_ratio.map(|x| round(x, 2)),
        unloaded_p50_ms: r.unloaded.as_ref().map(|(ours, _)| round(ours.p50_ms, 3)),
        unloaded_p99_ms: r.unloaded.as_ref().map(|(ours, _)| round(ours.p99_ms, 3)),
        naive_unloaded_p50_ms: r.unloaded.as_ref().map(|(_, naive)| round(naive.p50_ms, 3)),
        unloaded_naive_p50_ratio: unloaded_ratio.map(|x| round(x, 2)),
        unloaded_round_ratios: round_ratios.iter().map(|x| round(*x, 2)).collect(),
        unloaded_naive_p50_met: unloaded_met,
        redis_cmds_per_feed: r
            .warm_commands
            .as_ref()
            .ok()
            .map(|f| round(f.per_feed(), 2)),
        naive_redis_cmds_per_feed: r
            .naive_commands
            .as_ref()
            .ok()
            .map(|f| round(f.per_feed(), 2)),
        aggregator_peak_rss_mib: peak_mib.map(|x| round(x, 1)),
        aggregator_rss_mib: r
            .rss
            .as_ref()
            .ok()
            .map(|rss| round(rss.current_kib as f64 / 1024.0, 1)),
        redis_used_memory_per_1000_authors_bytes: r
            .memory
            .as_ref()
            .ok()
            .map(|m| m.per_1000_authors().round()),
        seed_postgres_s: round(r.seed_postgres_s, 1),
        seed_cache_s: round(r.seed_cache_s, 1),
        target_vs_sql: TARGET_VS_SQL,
        target_naive_p50_ratio: TARGET_NAIVE_P50_RATIO,
        target_rss_mib: TARGET_RSS_MIB,
        vs_sql_met,
        naive_p50_met: naive_met,
        rss_met,
        users: args.users,
        followees: args.followees,
        posts_per_author: args.posts_per_author,
        zipf: args.zipf,
        page_size: PAGE_SIZE,
        concurrency: args.concurrency,
        naive_concurrency: args.naive_concurrency(),
        channels: args.channels,
        body_bytes: args.body_bytes,
        duration_s: args.duration_secs,
        warmup_s: args.warmup_secs,
    };
    let summary = serde_json::to_string(&summary).context("encoding the JSON summary")?;
    println!("{summary}");

    let failures: Vec<String> = phases.iter().filter_map(|s| s.failure()).collect();
    if !failures.is_empty() {
        bail!("the run does not count: {}", failures.join("; "));
    }
    Ok(())
}

fn errors_by_code(summary: &Summary) -> BTreeMap<String, u64> {
    summary
        .errors_by_kind
        .iter()
        .map(|(kind, tally)| (kind.clone(), tally.count))
        .collect()
}

/// The last line of stdout. The unprefixed figures are shardfeed warm's.
#[derive(serde::Serialize)]
struct JsonSummary {
    bench: &'static str,
    feeds_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests: u64,
    errors: u64,
    errors_by_code: BTreeMap<String, u64>,
    cold_feeds_per_s: f64,
    cold_p50_ms: f64,
    cold_p90_ms: f64,
    cold_p99_ms: f64,
    cold_max_ms: f64,
    cold_requests: u64,
    cold_errors: u64,
    cold_errors_by_code: BTreeMap<String, u64>,
    sql_feeds_per_s: f64,
    sql_p50_ms: f64,
    sql_p90_ms: f64,
    sql_p99_ms: f64,
    sql_max_ms: f64,
    sql_requests: u64,
    sql_errors: u64,
    naive_feeds_per_s: f64,
    naive_p50_ms: f64,
    naive_p90_ms: f64,
    naive_p99_ms: f64,
    naive_max_ms: f64,
    naive_requests: u64,
    naive_errors: u64,
    ratio_vs_sql: Option<f64>,
    naive_p50_ratio: Option<f64>,
    /// One request at a time (no queueing): shardfeed's p50/p99, naive's p50, their ratio.
    unloaded_p50_ms: Option<f64>,
    unloaded_p99_ms: Option<f64>,
    naive_unloaded_p50_ms: Option<f64>,
    unloaded_naive_p50_ratio: Option<f64>,
    unloaded_round_ratios: Vec<f64>,
    unloaded_naive_p50_met: Option<bool>,
    redis_cmds_per_feed: Option<f64>,
    naive_redis_cmds_per_feed: Option<f64>,
    aggregator_peak_rss_mib: Option<f64>,
    aggregator_rss_mib: Option<f64>,
    redis_used_memory_per_1000_authors_bytes: Option<f64>,
    seed_postgres_s: f64,
    seed_cache_s: f64,
    target_vs_sql: f64,
    target_naive_p50_ratio: f64,
    target_rss_mib: f64,
    vs_sql_met: Option<bool>,
    naive_p50_met: Option<bool>,
    rss_met: Option<bool>,
    users: u32,
    followees: u32,
    posts_per_author: u32,
    zipf: f64,
    page_size: usize,
    concurrency: u32,
    naive_concurrency: u32,
    channels: u32,
    body_bytes: u32,
    duration_s: u64,
    warmup_s: u64,
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
    fn post_ids_follow_the_v2_scheme() {
        // 2020-01-01T00:00:00.001Z, sequence value 5.
        assert_eq!(post_id(POST_ID_EPOCH_MS + 1, 5), (1 << 22) | 5);
        // Only the low 22 bits of the sequence are kept.
        assert_eq!(post_id(POST_ID_EPOCH_MS, (1 << 22) + 7), 7);
        let t = 1_795_000_000_123;
        for seq in [0, 1, 4_194_303, 4_194_304, 123_456_789] {
            let id = post_id(t, seq);
            assert_eq!(post_time_ms(id), t);
            assert_eq!(id & POST_ID_SEQ_MASK, seq % (1 << 22));
        }
        // Later is larger, whatever the sequence says.
        assert!(post_id(t + 1, 0) > post_id(t, POST_ID_SEQ_MASK));
        assert_eq!(
            system_time(t),
            UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)
        );
    }

    #[test]
    fn bodies_are_deterministic_valid_posts() {
        for len in [1, 2, 7, 8, 9, 100, 500] {
            let body = body_of(42, len);
            assert_eq!(body.len(), len);
            assert_eq!(body, body_of(42, len));
            assert!(!body.trim().is_empty());
            assert!(!body.ends_with(' '));
            assert!(body.chars().all(|c| c == ' ' || c.is_ascii_alphanumeric()));
        }
        assert_ne!(body_of(1, 100), body_of(2, 100));
    }

    fn small_dataset(zipf: f64) -> Dataset {
        let mut rng = StdRng::seed_from_u64(7);
        let users = 50;
        let ids: Vec<i64> = (0..users).map(|i| 1000 + i as i64 * 3).collect();
        let seqs: Vec<i64> = (0..users as i64 * 30).map(|s| 900 + s).collect();
        let shape = Shape {
            followees: 12,
            readers: users,
            posts_per_author: 30,
            zipf,
            body_bytes: 100,
        };
        generate(&mut rng, ids, shape, &seqs, 1_795_000_000_000)
    }

    #[test]
    fn only_the_first_readers_follow_and_are_read() {
        let mut rng = StdRng::seed_from_u64(9);
        let ids: Vec<i64> = (0..40).map(|i| 2000 + i).collect();
        let seqs: Vec<i64> = (0..40 * 3).collect();
        let shape = Shape {
            followees: 30,
            readers: 4,
            posts_per_author: 3,
            zipf: 0.0,
            body_bytes: 10,
        };
        let data = generate(&mut rng, ids, shape, &seqs, 1_795_000_000_000);
        assert!(data.follows[..4].iter().all(|f| f.len() == 30));
        assert!(data.follows[4..].iter().all(Vec::is_empty));
        assert_eq!(data.readers(), 4);
        assert_eq!(data.follow_count(), 120);
    }

    #[test]
    fn generated_data_has_the_asked_shape() {
        for zipf in [0.0, 1.2, 3.0] {
            let now = 1_795_000_000_000;
            let data = small_dataset(zipf);
            assert_eq!(data.follow_count(), 50 * 12);
            assert_eq!(data.post_count(), 50 * 30);
            for (user, followees) in data.follows.iter().enumerate() {
                let distinct: HashSet<_> = followees.iter().collect();
                assert_eq!(distinct.len(), 12, "distinct followees");
                assert!(!followees.contains(&(user as u32)), "no self-follow");
            }
            let mut all = HashSet::new();
            for posts in &data.posts {
                assert!(posts.windows(2).all(|w| w[0] > w[1]), "newest first");
                for &id in posts {
                    let age = now - post_time_ms(id);
                    assert!((MIN_AGE_MS..SPREAD_MS).contains(&age), "age {age}");
                    assert!(all.insert(id), "unique ids");
                }
            }
        }
    }

    #[test]
    fn zipf_favours_the_first_users_and_zero_is_uniform() {
        let mut rng = StdRng::seed_from_u64(3);
        let steep = Popularity::new(1000, 1.5);
        let head = (0..10_000).filter(|_| steep.sample(&mut rng) < 10).count();
        assert!(head > 5_000, "{head} of 10000 draws in the top 1%");
        let flat = Popularity::new(1000, 0.0);
        let head = (0..10_000).filter(|_| flat.sample(&mut rng) < 10).count();
        assert!(head < 300, "{head} of 10000 draws in the top 1%");
        // A head too steep to give enough distinct users still ends.
        let very = Popularity::new(30, 8.0);
        let picked = pick_followees(&mut rng, &very, 0, 29);
        assert_eq!(picked.iter().collect::<HashSet<_>>().len(), 29);
    }

    #[test]
    fn expected_page_is_the_newest_of_all_followees() {
        let data = small_dataset(0.0);
        for (user, followees) in data.follows.iter().enumerate() {
            let mut all: Vec<i64> = followees
                .iter()
                .flat_map(|&f| data.posts[f as usize].iter().copied())
                .collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            all.truncate(PAGE_SIZE);
            assert_eq!(data.expected[user], all);
        }
    }

    #[test]
    fn keep_newest_merges_by_id() {
        let mut items = vec![(5, 1), (9, 2), (1, 3), (7, 1), (8, 3), (2, 2)];
        keep_newest(&mut items, 3, |(id, _)| *id);
        assert_eq!(items, vec![(9, 2), (8, 3), (7, 1)]);
        let mut few = vec![3, 1, 2];
        keep_newest(&mut few, 20, |id| *id);
        assert_eq!(few, vec![3, 2, 1]);
        keep_newest(&mut few, 0, |id| *id);
        assert!(few.is_empty());
    }

    #[test]
    fn naive_reads_the_followee_hash_as_the_cache_writes_it() {
        let fields: HashMap<String, String> =
            [("12", "4"), ("_loaded", "1"), ("13", "-9"), ("14", "0")]
                .iter()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect();
        let mut followees = naive_followees(&fields);
        followees.sort_unstable();
        assert_eq!(followees, vec![12, 14]);
    }

    #[test]
    fn pages_are_checked_exactly() {
        assert!(check_page(1, &[3, 2, 1], &[3, 2, 1]).is_ok());
        let err = check_page(1, &[3, 1], &[3, 2, 1]).unwrap_err();
        assert_eq!(err.kind, "WrongPage");
        assert!(
            err.message.contains("post #1 is 1 instead of 2"),
            "{}",
            err.message
        );
        let err = check_page(1, &[3, 2], &[3, 2, 1]).unwrap_err();
        assert!(
            err.message.contains("2 posts instead of 3"),
            "{}",
            err.message
        );
    }

    #[test]
    fn info_replies_are_parsed() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n";
        assert_eq!(info_field(info, "role"), Some("master"));
        assert_eq!(info_field(info, "rol"), None);
        let memory = "# Memory\r\nused_memory:1234\r\nused_memory_human:1.21K\r\n";
        assert_eq!(info_field(memory, "used_memory"), Some("1234"));

        let stats = "# Commandstats\r\n\
            cmdstat_hmget:calls=10,usec=20,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_client|setname:calls=3,usec=1,usec_per_call=0.33,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_info:calls=5,usec=50,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n";
        let calls = parse_commandstats(stats);
        assert_eq!(calls["hmget"], 10);
        assert_eq!(calls["client|setname"], 3);
        assert_eq!(calls.len(), 3);
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
