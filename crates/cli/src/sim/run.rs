//! The simulation's driver: load the population through the ingest API, run the mixed workload
//! with mitigations off and on against an aggregator started in-process, report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fred::clients::Client as RedisClient;
use rand::rngs::StdRng;
use rand::SeedableRng;
use shardfeed_proto::v1::{feed_service_client::FeedServiceClient, GetUserTimelineRequest};
use shardfeed_server::Settings;

use super::drive::drive;
use super::figures::{RunFigures, RunJson, Workload};
use super::population::{load_population, settle};
use super::report;
use super::workload::{describe, follow_graph};
use crate::client::{
    connect_postgres, connect_redis, Channels, IngestFlag, PostgresFlag, TlsFlags,
};
use crate::popularity::Popularity;

/// Page size of every feed and profile view, as an app would ask.
pub const PAGE: i32 = 20;
/// HTTP/2 connections to each service.
const CHANNELS: usize = 4;

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// The ingest service: the population is loaded through its API.
    #[command(flatten)]
    pub ingest: IngestFlag,
    /// TLS to the ingest service, and to the simulation's own aggregator when the settings
    /// (`grpc.tls_*`) have it serve TLS.
    #[command(flatten)]
    pub tls: TlsFlags,
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
    /// PostgreSQL, for the checks.
    #[command(flatten)]
    pub postgres: PostgresFlag,
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
pub struct World {
    pub settings: Settings,
    pub redis: RedisClient,
    pub pg: tokio_postgres::Client,
    pub ingest: Channels,
    /// The credentials of every call (the simulation's aggregators get them too).
    pub bearer: shardfeed_proto::auth::Bearer,
    /// User ids by popularity rank (rank 0: the most followed author).
    pub users: Arc<Vec<i64>>,
    pub views: Arc<Popularity>,
    pub posters: Arc<Popularity>,
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    args.validate()?;
    let settings = crate::dev::cli_settings()?;
    let bearer = crate::client::bearer(&settings)?;
    let ingest = Channels::connect(
        &args.ingest.url,
        &args.tls,
        CHANNELS,
        "ingest service",
        &bearer,
    )
    .await?;
    let pg = connect_postgres(&args.postgres.config(&settings)?).await?;
    let redis = connect_redis(&settings).await?;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let follow_law = Popularity::new(args.users, args.follow_zipf)?;
    eprintln!(
        "sim: {} users, follows ~ Zipf({}) with {} followees on average, profile views ~ Zipf({})",
        args.users, args.follow_zipf, args.followees, args.view_zipf
    );
    let graph = follow_graph(args.followees, &follow_law, &mut rng);
    let users = load_population(&args, &ingest, &graph).await?;
    settle(&pg).await?;

    let world = World {
        bearer,
        settings,
        redis,
        pg,
        ingest,
        users: Arc::new(users),
        views: Arc::new(Popularity::new(args.users, args.view_zipf)?),
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
    println!("{}", report::closing_line(&path, &off, &on));
    let summary = serde_json::json!({
        "sim": "hotspot",
        "off": RunJson::from(&off),
        "on": RunJson::from(&on),
        "report": path.display().to_string(),
        "chart": report::chart_path(&path).display().to_string(),
    });
    println!("{summary}");
    Ok(())
}

/// Starts an aggregator with the stack's settings and mitigations `on` or off, runs the mixed
/// workload against it and measures.
async fn measure(args: &SimArgs, world: &World, on: bool) -> anyhow::Result<RunFigures> {
    let label = if on { "on" } else { "off" };
    let mut settings = world.settings.clone();
    settings.aggregator.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    // Beside the stack's aggregator, which holds the default metrics port.
    settings.aggregator.metrics_addr = SocketAddr::from(([127, 0, 0, 1], 0));
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
    // It serves as the settings say: TLS when grpc.tls_* is set.
    let scheme = if world.settings.grpc.tls_identity_files().is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}");
    let channels =
        Channels::connect(&url, &args.tls, CHANNELS, "aggregator", &world.bearer).await?;
    wait_ready(&channels, world.users[0]).await?;

    eprintln!(
        "sim: run with mitigations {label}: {} clients, {:.0} s warm-up + {:.0} s measured",
        args.concurrency, args.warmup, args.seconds
    );
    let result = drive(args, world, &channels, label).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    result
}

async fn wait_ready(channels: &Channels, author: i64) -> anyhow::Result<()> {
    let mut client = FeedServiceClient::new(channels.get(0));
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
