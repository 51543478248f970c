//! The simulation's driver: load the population through the ingest API, run the mixed workload
//! with mitigations off and on, measure, check, report.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fred::clients::Client as RedisClient;
use fred::interfaces::ClusterInterface;
use fred::types::InfoKind;
use fred::util::redis_keyslot;
use futures::{stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardfeed_cache::CacheLayout;
use shardfeed_proto::v1::{
    feed_service_client::FeedServiceClient, graph_service_client::GraphServiceClient,
    hotspot_service_client::HotspotServiceClient, post_service_client::PostServiceClient,
    user_service_client::UserServiceClient, CreatePostRequest, CreateUserRequest, FollowRequest,
    GetHomeFeedRequest, GetHotAuthorsRequest, GetHotAuthorsResponse, GetUserTimelineRequest,
};
use shardfeed_server::Settings;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::figures::{Latency, NodeFigures, RunFigures, Workload};
use super::report;
use super::workload::{follow_graph, Zipf};
use crate::bench::feed::{info_field, is_housekeeping, masters_info, parse_commandstats};
use crate::bench::ingest::{connect_channels, connect_postgres, postgres_config};
use crate::bench::load::OP_TIMEOUT;
use crate::bench::stats::{round, OpError, Record, Summary};

/// Requests in flight while the population is loaded.
const LOAD_CONCURRENCY: usize = 48;
/// Page size of every feed and profile view, as an app would ask.
const PAGE: i32 = 20;
/// The authors whose new posts the visibility probe watches: the most popular ones.
const PROBED_AUTHORS: usize = 3;

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// The ingest service (the population is loaded through its API).
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "SHARDFEED_DEMO_INGEST"
    )]
    pub ingest: String,
    /// Users in the simulated network (every user is also an author).
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Zipf exponent of author popularity for follows and posts: the author of rank r is
    /// followed (and posts) in proportion to 1 / r^s.
    #[arg(long, default_value_t = 1.0)]
    pub follow_zipf: f64,
    /// Zipf exponent of profile views: a celebrity's page is opened far more often than the
    /// follower counts alone suggest (views concentrate more than follows: the default gives
    /// the top author five views in six, a celebrity whose post went viral).
    #[arg(long, default_value_t = 3.0)]
    pub view_zipf: f64,
    /// Mean followees per user.
    #[arg(long, default_value_t = 20)]
    pub followees: usize,
    /// Posts each author has before the runs start.
    #[arg(long, default_value_t = 5)]
    pub posts: usize,
    /// Concurrent clients during each run.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Measured seconds of each run (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Unmeasured warm-up seconds before each run.
    #[arg(long, default_value_t = 4.0)]
    pub warmup: f64,
    /// Percent of requests that are home feeds (GetHomeFeed of a random user).
    #[arg(long, default_value_t = 2.0)]
    pub feed_share: f64,
    /// Percent that are profile views (GetUserTimeline of an author drawn by popularity).
    #[arg(long, default_value_t = 96.0)]
    pub view_share: f64,
    /// Percent that are posts (CreatePost by an author drawn by popularity).
    #[arg(long, default_value_t = 2.0)]
    pub post_share: f64,
    /// Home feeds compared with PostgreSQL after each run.
    #[arg(long, default_value_t = 50)]
    pub check_feeds: usize,
    /// Where the report (markdown and SVG) is written.
    #[arg(long, default_value = ".local/sim")]
    pub report_dir: PathBuf,
    /// Seed of every random choice (graph, workload).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// PostgreSQL URL for the checks (default: postgres.url of the settings).
    #[arg(long)]
    pub postgres_url: Option<String>,
}

impl SimArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.users < 10 {
            bail!("--users must be at least 10");
        }
        if self.followees == 0 || self.followees >= self.users {
            bail!("--followees must be between 1 and --users - 1");
        }
        if [self.follow_zipf, self.view_zipf]
            .iter()
            .any(|s| s.is_nan() || *s <= 0.0)
        {
            bail!("the Zipf exponents must be positive");
        }
        let shares = [self.feed_share, self.view_share, self.post_share];
        if shares.iter().any(|s| *s < 0.0) || (shares.iter().sum::<f64>() - 100.0).abs() > 0.01 {
            bail!("--feed-share, --view-share and --post-share must be >= 0 and add up to 100");
        }
        if self.concurrency == 0
            || self.seconds.is_nan()
            || self.seconds <= 0.0
            || self.warmup < 0.0
        {
            bail!("--concurrency and --seconds must be positive, --warmup not negative");
        }
        Ok(())
    }

    fn workload(&self) -> Workload {
        Workload {
            users: self.users,
            zipf_exponent: self.follow_zipf,
            mean_followees: self.followees as f64,
            posts_per_author: self.posts,
            concurrency: self.concurrency,
            seconds_per_run: self.seconds,
            feed_share: self.feed_share,
            view_share: self.view_share,
            post_share: self.post_share,
            notes: Vec::new(),
        }
    }
}

/// What the runs share: the stores, the loaded population, the samplers.
struct World {
    settings: Settings,
    redis: RedisClient,
    pg: tokio_postgres::Client,
    ingest: Vec<Channel>,
    /// User ids by popularity rank (rank 0: the most followed author).
    users: Arc<Vec<i64>>,
    views: Arc<Zipf>,
    posters: Arc<Zipf>,
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    args.validate()?;
    let settings = Settings::load()?;
    let ingest = connect_channels(&args.ingest, 4).await?;
    let url = args
        .postgres_url
        .clone()
        .unwrap_or_else(|| settings.postgres.url().to_owned());
    let pg = connect_postgres(&postgres_config(&url)?).await?;
    let redis = shardfeed_server::redis::connect_and_wait(&settings.redis, Duration::from_secs(10))
        .await
        .context("cannot reach the Redis Cluster; is the stack up (deploy/local/up.sh)?")?;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let follow_law = Zipf::new(args.users, args.follow_zipf);
    eprintln!(
        "sim: {} users, follows ~ Zipf({}) with {} followees on average, profile views ~ Zipf({})",
        args.users, args.follow_zipf, args.followees, args.view_zipf
    );
    let graph = follow_graph(args.users, args.followees, &follow_law, &mut rng);
    let users = load_population(&args, &ingest, &graph).await?;
    settle(&pg).await?;

    let world = World {
        settings,
        redis,
        pg,
        ingest,
        users: Arc::new(users),
        views: Arc::new(Zipf::new(args.users, args.view_zipf)),
        posters: Arc::new(follow_law),
    };
    let mut workload = args.workload();
    workload.notes = describe(&args, &world, &graph);
    for note in &workload.notes {
        eprintln!("sim: {note}");
    }

    let off = measure(&args, &world, false).await?;
    let on = measure(&args, &world, true).await?;

    println!();
    println!("{}", report::table(&off, &on));
    let path = report::write(&args.report_dir, &workload, &off, &on)
        .with_context(|| format!("writing the report under {}", args.report_dir.display()))?;
    for (target, value, met) in report::targets(&off, &on) {
        println!(
            "  {} {target}: {value}",
            if met { "met    " } else { "NOT met" }
        );
    }
    println!("report: {}", path.display());
    let summary = serde_json::json!({
        "sim": "hotspot",
        "off": run_json(&off),
        "on": run_json(&on),
        "report": path.display().to_string(),
    });
    println!("{summary}");
    Ok(())
}

fn run_json(run: &RunFigures) -> serde_json::Value {
    serde_json::json!({
        "mitigations": run.label,
        "skew": round(run.skew, 2),
        "cpu_skew": round(run.cpu_skew, 2),
        "feeds": run.feeds.count,
        "feeds_per_s": round(run.feeds.per_s, 1),
        "p50_ms": round(run.feeds.p50_ms, 2),
        "p99_ms": round(run.feeds.p99_ms, 2),
        "views_per_s": round(run.timelines.per_s, 1),
        "view_p99_ms": round(run.timelines.p99_ms, 2),
        "lag_p50_ms": run.lag_p50_ms.map(|v| round(v, 1)),
        "lag_p99_ms": run.lag_p99_ms.map(|v| round(v, 1)),
        "near_cache_hit": run.near_cache_hit.map(|v| round(v, 4)),
        "feeds_checked": run.feeds_checked,
        "feeds_wrong": run.feeds_wrong,
    })
}

// ---------------------------------------------------------------------------------------------
// Loading the population through the ingest API

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "  {msg:<8} [{bar:40}] {pos:>7}/{len:7} {per_sec:>10} eta {eta}",
        )
        .expect("a valid progress template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Creates the users, their follows and their first posts; returns user ids by rank.
async fn load_population(
    args: &SimArgs,
    ingest: &[Channel],
    graph: &[Vec<usize>],
) -> anyhow::Result<Vec<i64>> {
    // Fresh handles on every invocation: the seed fixes the shape, not the names.
    let run_tag: u32 = rand::random();
    let started = Instant::now();
    eprintln!(
        "sim: loading the network through the ingest API ({})",
        args.ingest
    );

    let progress = bar(graph.len(), "users");
    let users: Vec<i64> = stream::iter(0..graph.len())
        .map(|rank| {
            let mut client = UserServiceClient::new(ingest[rank % ingest.len()].clone());
            let progress = progress.clone();
            async move {
                let user = client
                    .create_user(CreateUserRequest {
                        handle: format!("sim{run_tag:08x}_{rank}"),
                        display_name: format!("Author #{}", rank + 1),
                        request_id: uuid::Uuid::new_v4().to_string(),
                    })
                    .await
                    .with_context(|| format!("CreateUser for rank {rank}"))?
                    .into_inner()
                    .user
                    .context("CreateUser answered without a user")?;
                progress.inc(1);
                anyhow::Ok(user.user_id)
            }
        })
        .buffered(LOAD_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    progress.finish();

    let edges: Vec<(i64, i64)> = graph
        .iter()
        .enumerate()
        .flat_map(|(user, followees)| followees.iter().map(move |f| (user, *f)))
        .map(|(user, followee)| (users[user], users[followee]))
        .collect();
    for_each_with_progress("follows", edges, |i, (follower_id, followee_id)| {
        let mut client = GraphServiceClient::new(ingest[i % ingest.len()].clone());
        async move {
            client
                .follow(FollowRequest {
                    follower_id,
                    followee_id,
                })
                .await
                .with_context(|| format!("Follow {follower_id} -> {followee_id}"))?;
            Ok(())
        }
    })
    .await?;

    let posts: Vec<(usize, i64)> = (0..args.posts)
        .flat_map(|n| users.iter().map(move |u| (n, *u)))
        .collect();
    for_each_with_progress("posts", posts, |i, (n, author_id)| {
        let mut client = PostServiceClient::new(ingest[i % ingest.len()].clone());
        async move {
            client
                .create_post(CreatePostRequest {
                    author_id,
                    body: format!("post {n} of author {author_id}"),
                    request_id: uuid::Uuid::new_v4().to_string(),
                })
                .await
                .with_context(|| format!("CreatePost for {author_id}"))?;
            Ok(())
        }
    })
    .await?;
    eprintln!(
        "sim: network loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(users)
}

/// Runs `call` for every item, [`LOAD_CONCURRENCY`] at a time, with a progress bar; stops at
/// the first error.
async fn for_each_with_progress<T, F, Fut>(what: &str, items: Vec<T>, call: F) -> anyhow::Result<()>
where
    F: Fn(usize, T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let progress = bar(items.len(), what);
    let mut results = stream::iter(items.into_iter().enumerate())
        .map(|(i, item)| call(i, item))
        .buffer_unordered(LOAD_CONCURRENCY);
    while let Some(result) = results.next().await {
        result?;
        progress.inc(1);
    }
    progress.finish();
    Ok(())
}

/// Waits until every committed change has reached the cache (the outbox is empty).
async fn settle(pg: &tokio_postgres::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let depth: i64 = pg
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .context("counting the outbox")?
            .get(0);
        if depth == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{depth} outbox rows still undelivered after 120 s: is the cache reachable?");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plain-language lines on what the workload does and where the popular authors live.
fn describe(args: &SimArgs, world: &World, graph: &[Vec<usize>]) -> Vec<String> {
    let mut followers = vec![0usize; graph.len()];
    for followees in graph {
        for f in followees {
            followers[*f] += 1;
        }
    }
    let layout = CacheLayout::new(world.settings.redis.namespace.clone());
    let routing = world.redis.cached_cluster_state();
    let mut notes = vec![
        format!(
            "{:.0}% of requests are profile views (GetUserTimeline, page {PAGE}) of an author drawn by Zipf({}): \
             the most popular author's page gets {:.0}% of all views, the top three {:.0}%. Every view reads \
             one author's keys, so views of one author all land on the one master that owns its slot.",
            args.view_share,
            args.view_zipf,
            world.views.share(0) * 100.0,
            (0..3).map(|r| world.views.share(r)).sum::<f64>() * 100.0,
        ),
        format!(
            "{:.0}% are home feeds (GetHomeFeed, page {PAGE}) of a uniformly random user: each followee costs \
             one read on its own master, so feeds spread over every master and no author dominates through \
             feeds alone.",
            args.feed_share
        ),
        format!(
            "{:.0}% are posts (CreatePost) by an author drawn by follower popularity (Zipf({})): hot authors \
             post most, so their cached timelines keep changing.",
            args.post_share, args.follow_zipf
        ),
    ];
    for (rank, id) in world.users.iter().take(3).enumerate() {
        let slot = redis_keyslot(layout.meta(*id).as_bytes());
        let node = routing
            .as_ref()
            .and_then(|r| r.get_server(slot))
            .map_or_else(|| "?".to_owned(), |s| s.to_string());
        notes.push(format!(
            "Popularity rank {}: user {id}, {} followers, {:.1}% of views, slot {slot} on master {node}.",
            rank + 1,
            followers[rank],
            world.views.share(rank) * 100.0
        ));
    }
    notes.push(
        "Both runs use an aggregator that the simulation starts in-process with the stack's settings: \
         the first with every mitigation off, the second with all four on (near-cache, coalescing, replica reads, key replicas; the stack's ingest keeps the copies)."
            .to_owned(),
    );
    notes
}

// ---------------------------------------------------------------------------------------------
// One run

/// Starts an aggregator with the stack's settings and mitigations `on` or off, runs the mixed
/// workload against it and measures.
async fn measure(args: &SimArgs, world: &World, on: bool) -> anyhow::Result<RunFigures> {
    let label = if on { "on" } else { "off" };
    let mut settings = world.settings.clone();
    settings.aggregator.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.hotspot.near_cache_enabled = on;
    settings.hotspot.coalescing_enabled = on;
    settings.hotspot.replica_reads_enabled = on;
    settings.hotspot.key_replicas_enabled = on;
    let app = shardfeed_aggregator::Application::build(settings)
        .await
        .context("starting the simulation's aggregator")?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channels = connect_channels(&format!("http://{addr}"), 4).await?;
    wait_ready(&channels[0], world.users[0]).await?;

    eprintln!(
        "sim: run with mitigations {label}: {} clients, {:.0} s warm-up + {:.0} s measured",
        args.concurrency, args.warmup, args.seconds
    );
    let result = drive(args, world, &channels, label).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    result
}

async fn wait_ready(channel: &Channel, author: i64) -> anyhow::Result<()> {
    let mut client = FeedServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client
            .get_user_timeline(GetUserTimelineRequest {
                user_id: author,
                page_size: 1,
                page_token: String::new(),
            })
            .await;
        match answer {
            Ok(_) => return Ok(()),
            Err(status) if Instant::now() > deadline => {
                bail!("the simulation's aggregator did not answer within 20 s: {status}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What each kind of request recorded in the measured window.
#[derive(Default)]
struct Records {
    feeds: Record,
    views: Record,
    posts: Record,
}

async fn drive(
    args: &SimArgs,
    world: &World,
    channels: &[Channel],
    label: &str,
) -> anyhow::Result<RunFigures> {
    let start = Instant::now();
    let measure_start = start + Duration::from_secs_f64(args.warmup);
    let end = measure_start + Duration::from_secs_f64(args.seconds);

    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let mix = Mix {
            feeds: FeedServiceClient::new(channels[worker % channels.len()].clone()),
            posts: PostServiceClient::new(world.ingest[worker % world.ingest.len()].clone()),
            rng: StdRng::seed_from_u64(args.seed ^ ((worker as u64 + 1) * 0x9E37_79B9)),
            users: world.users.clone(),
            views: world.views.clone(),
            posters: world.posters.clone(),
            feed_share: args.feed_share,
            view_share: args.view_share,
        };
        workers.spawn(mix.run(measure_start, end));
    }
    let probe = tokio::spawn(probe_visibility(
        FeedServiceClient::new(channels[0].clone()),
        PostServiceClient::new(world.ingest[0].clone()),
        world.users.iter().take(PROBED_AUTHORS).copied().collect(),
        measure_start,
        end,
    ));
    let mut hotspot = HotspotServiceClient::new(channels[0].clone());

    tokio::time::sleep_until(measure_start.into()).await;
    let before = NodeSnapshot::take(&world.redis).await?;
    let hot_before = hot_stats(&mut hotspot).await?;
    let progress = bar(args.seconds.round() as usize, label);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        progress.set_position(measure_start.elapsed().as_secs_f64().round() as u64);
    }
    let after = NodeSnapshot::take(&world.redis).await?;
    let hot_after = hot_stats(&mut hotspot).await?;
    progress.finish();

    let mut records = Records::default();
    while let Some(worker) = workers.join_next().await {
        let worker = worker.context("a simulation worker panicked")?;
        records.feeds.merge(worker.feeds);
        records.views.merge(worker.views);
        records.posts.merge(worker.posts);
    }
    let lags = probe.await.context("the visibility probe panicked")?;
    let window = Duration::from_secs_f64(args.seconds);
    let latency = |label: &str, record: Record| {
        let summary = Summary::new(label, record, window);
        Latency {
            count: summary.requests - summary.errors,
            errors: summary.errors,
            per_s: summary.ops_per_s,
            p50_ms: summary.p50_ms,
            p99_ms: summary.p99_ms,
        }
    };

    let hot_authors: Vec<i64> = hot_after.authors.iter().map(|a| a.author_id).collect();
    let ranks: BTreeMap<i64, i64> = world
        .users
        .iter()
        .enumerate()
        .map(|(rank, id)| (*id, rank as i64 + 1))
        .collect();
    let mut nodes = before.delta(&after, window)?;
    for node in &mut nodes {
        node.hot_authors = hot_after
            .authors
            .iter()
            .filter(|a| a.owning_node == node.addr)
            .filter_map(|a| ranks.get(&a.author_id).copied())
            .collect();
    }
    let cpu_skew = skew(nodes.iter().map(|n| n.cpu_percent));
    let skew = skew(nodes.iter().map(|n| n.commands_per_s));
    let near_cache_hit = if label == "on" {
        let (b, a) = (
            hot_before.near_cache.unwrap_or_default(),
            hot_after.near_cache.unwrap_or_default(),
        );
        let hits = (a.hits - b.hits) as f64;
        let lookups = hits + (a.misses - b.misses) as f64;
        Some(if lookups > 0.0 { hits / lookups } else { 0.0 })
    } else {
        None
    };
    eprintln!(
        "sim: run {label}: hot authors detected (popularity rank): {:?}",
        hot_authors
            .iter()
            .filter_map(|a| ranks.get(a))
            .collect::<Vec<_>>()
    );

    // Correctness: once everything written is delivered (and any near-cache entry has
    // expired), feeds must equal PostgreSQL's.
    settle(&world.pg).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (feeds_checked, feeds_wrong) =
        check_feeds(world, channels, args.check_feeds, args.seed).await?;

    let mut sorted_lags = lags;
    sorted_lags.sort_unstable_by(f64::total_cmp);
    let pick = |q: f64| {
        (!sorted_lags.is_empty()).then(|| {
            let i = ((sorted_lags.len() as f64 * q).ceil() as usize).clamp(1, sorted_lags.len());
            sorted_lags[i - 1]
        })
    };
    Ok(RunFigures {
        label: label.to_owned(),
        duration_s: args.seconds,
        nodes,
        skew,
        cpu_skew,
        feeds: latency("feeds", records.feeds),
        timelines: latency("views", records.views),
        posts: latency("posts", records.posts),
        near_cache_hit,
        lag_p50_ms: pick(0.50),
        lag_p99_ms: pick(0.99),
        feeds_checked,
        feeds_wrong,
    })
}

async fn hot_stats(
    client: &mut HotspotServiceClient<Channel>,
) -> anyhow::Result<GetHotAuthorsResponse> {
    Ok(client
        .get_hot_authors(GetHotAuthorsRequest { limit: 100 })
        .await
        .context("GetHotAuthors")?
        .into_inner())
}

/// Busiest ÷ mean.
fn skew(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let max = values.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 {
        max / mean
    } else {
        0.0
    }
}

/// One client's share of the mixed workload.
struct Mix {
    feeds: FeedServiceClient<Channel>,
    posts: PostServiceClient<Channel>,
    rng: StdRng,
    users: Arc<Vec<i64>>,
    views: Arc<Zipf>,
    posters: Arc<Zipf>,
    feed_share: f64,
    view_share: f64,
}

impl Mix {
    async fn run(mut self, measure_start: Instant, end: Instant) -> Records {
        let mut records = Records::default();
        let mut n = 0u64;
        loop {
            let pick: f64 = self.rng.gen_range(0.0..100.0);
            let t0 = Instant::now();
            let (result, kind) = if pick < self.feed_share {
                let user_id = self.users[self.rng.gen_range(0..self.users.len())];
                let call = self.feeds.get_home_feed(GetHomeFeedRequest {
                    user_id,
                    page_size: PAGE,
                    page_token: String::new(),
                });
                (timed(call).await, 0)
            } else if pick < self.feed_share + self.view_share {
                let user_id = self.users[self.views.sample(&mut self.rng)];
                let call = self.feeds.get_user_timeline(GetUserTimelineRequest {
                    user_id,
                    page_size: PAGE,
                    page_token: String::new(),
                });
                (timed(call).await, 1)
            } else {
                let author_id = self.users[self.posters.sample(&mut self.rng)];
                n += 1;
                let call = self.posts.create_post(CreatePostRequest {
                    author_id,
                    body: format!("simulated post {n}"),
                    request_id: uuid::Uuid::new_v4().to_string(),
                });
                (timed(call).await, 2)
            };
            let t1 = Instant::now();
            if t1 >= end {
                return records;
            }
            if t1 >= measure_start {
                let record = match kind {
                    0 => &mut records.feeds,
                    1 => &mut records.views,
                    _ => &mut records.posts,
                };
                record.record(result, t1 - t0);
            }
        }
    }
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<(), OpError> {
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(OpError::new(
            format!("{:?}", status.code()),
            status.message().to_owned(),
        )),
        Err(_) => Err(OpError::new("Timeout", "no answer in time")),
    }
}

/// Posts as the most popular authors, one after the other, and measures how long each new
/// post takes to show at the top of the author's timeline as the aggregator serves it.
async fn probe_visibility(
    mut feeds: FeedServiceClient<Channel>,
    mut posts: PostServiceClient<Channel>,
    authors: Vec<i64>,
    measure_start: Instant,
    end: Instant,
) -> Vec<f64> {
    const GIVE_UP: Duration = Duration::from_secs(5);
    tokio::time::sleep_until(measure_start.into()).await;
    let mut lags = Vec::new();
    let mut n = 0usize;
    while Instant::now() + GIVE_UP < end {
        let author_id = authors[n % authors.len()];
        n += 1;
        let Ok(created) = posts
            .create_post(CreatePostRequest {
                author_id,
                body: format!("visibility probe {n}"),
                request_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
        else {
            continue;
        };
        let acked = Instant::now();
        let Some(post) = created.into_inner().post else {
            continue;
        };
        loop {
            let top = feeds
                .get_user_timeline(GetUserTimelineRequest {
                    user_id: author_id,
                    page_size: 1,
                    page_token: String::new(),
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().posts.first().map(|p| p.post_id));
            // A newer post by the same author also proves this one visible.
            if top.is_some_and(|id| id >= post.post_id) || acked.elapsed() > GIVE_UP {
                lags.push(acked.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lags
}

/// The first page of `count` random users' home feeds from the aggregator against the same
/// page computed by PostgreSQL. Returns (checked, wrong).
async fn check_feeds(
    world: &World,
    channels: &[Channel],
    count: usize,
    seed: u64,
) -> anyhow::Result<(usize, usize)> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(99));
    let mut client = FeedServiceClient::new(channels[0].clone());
    let statement = world
        .pg
        .prepare(
            "SELECT p.post_id FROM follows f CROSS JOIN LATERAL ( \
               SELECT post_id FROM posts WHERE posts.author_id = f.followee_id \
               AND delete_time IS NULL ORDER BY post_id DESC LIMIT $2) p \
             WHERE f.follower_id = $1 ORDER BY p.post_id DESC LIMIT $2",
        )
        .await
        .context("preparing the ground-truth query")?;
    // The most popular authors' followers first: their feeds are the ones mitigations touch.
    let mut picked: HashSet<i64> = HashSet::new();
    let mut wrong = 0;
    while picked.len() < count.min(world.users.len()) {
        let user = world.users[rng.gen_range(0..world.users.len())];
        if !picked.insert(user) {
            continue;
        }
        let served: Vec<i64> = client
            .get_home_feed(GetHomeFeedRequest {
                user_id: user,
                page_size: PAGE,
                page_token: String::new(),
            })
            .await
            .with_context(|| format!("GetHomeFeed of user {user}"))?
            .into_inner()
            .posts
            .iter()
            .map(|p| p.post_id)
            .collect();
        let truth: Vec<i64> = world
            .pg
            .query(&statement, &[&user, &i64::from(PAGE)])
            .await
            .context("the ground-truth query")?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if served != truth {
            wrong += 1;
            eprintln!(
                "sim: home feed of user {user} differs from PostgreSQL: served {served:?}, expected {truth:?}"
            );
        }
    }
    Ok((picked.len(), wrong))
}

// ---------------------------------------------------------------------------------------------
// What the masters say

/// Commands and CPU seconds of every master at one instant.
struct NodeSnapshot {
    at: Instant,
    /// node → (commands, cpu seconds)
    nodes: BTreeMap<String, (u64, f64)>,
}

impl NodeSnapshot {
    async fn take(redis: &RedisClient) -> anyhow::Result<Self> {
        let at = Instant::now();
        let commands = masters_info(redis, InfoKind::CommandStats).await?;
        let cpu = masters_info(redis, InfoKind::Cpu).await?;
        let mut nodes = BTreeMap::new();
        for (node, info) in commands {
            let calls: u64 = parse_commandstats(&info)
                .into_iter()
                .filter(|(command, _)| !is_housekeeping(command))
                .map(|(_, calls)| calls)
                .sum();
            let seconds = cpu.get(&node).map_or(0.0, |info| {
                ["used_cpu_sys", "used_cpu_user"]
                    .iter()
                    .filter_map(|f| info_field(info, f)?.trim().parse::<f64>().ok())
                    .sum()
            });
            nodes.insert(node, (calls, seconds));
        }
        Ok(Self { at, nodes })
    }

    fn delta(&self, after: &NodeSnapshot, window: Duration) -> anyhow::Result<Vec<NodeFigures>> {
        if self.nodes.keys().ne(after.nodes.keys()) {
            bail!("the masters changed during the run (a failover?): the figures would be void");
        }
        let secs = (after.at - self.at)
            .as_secs_f64()
            .max(window.as_secs_f64() / 2.0);
        Ok(self
            .nodes
            .iter()
            .map(|(node, (calls, cpu))| {
                let (calls_after, cpu_after) = after.nodes[node];
                NodeFigures {
                    addr: node.clone(),
                    commands_per_s: calls_after.saturating_sub(*calls) as f64 / secs,
                    cpu_percent: (cpu_after - cpu).max(0.0) / secs * 100.0,
                    hot_authors: Vec::new(),
                }
            })
            .collect())
    }
}
