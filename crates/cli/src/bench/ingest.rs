//! `shardfeed bench ingest`: the write path. Measures `PostService.CreatePost` over gRPC as a
//! real client calls it (a fresh idempotency key per call, a few shared HTTP/2 connections), and
//! in the same run the floor: the bare single-row INSERT transaction straight against the same
//! PostgreSQL, at the same concurrency and for the same duration.
//!
//! The two phases alternate for `--rounds` rounds (gRPC, bare, gRPC, bare, …), so a machine
//! whose speed drifts during the run shifts both sides alike; each round gives a ratio, and the
//! figures reported are those of the round with the median ratio.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::{stream, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardfeed_proto::v1::{
    post_service_client::PostServiceClient, user_service_client::UserServiceClient,
    CreatePostRequest, CreateUserRequest, DeleteUserRequest,
};
use shardfeed_server::Settings;
use tokio_postgres::{NoTls, Statement};
use tonic::{transport::Channel, Code};

use super::load::{closed_loop, Op, Timing, OP_TIMEOUT};
use super::stats::{median_by, round, OpError, Summary, Table};

/// The floor's table: created by the bench, dropped at the end.
const BARE_TABLE: &str = "bench_bare_posts";
/// The target: CreatePost at no less than this fraction of the bare-insert rate.
const TARGET_RATIO: f64 = 0.70;
/// How many CreateUser/DeleteUser calls run at once while setting up and cleaning up.
const SETUP_CONCURRENCY: usize = 16;

const GRPC_LABEL: &str = "shardfeed CreatePost over gRPC";
const BARE_LABEL: &str = "bare INSERT transaction";

#[derive(clap::Args, Debug)]
pub struct IngestBenchArgs {
    /// The ingest service.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "SHARDFEED_DEMO_INGEST"
    )]
    ingest: String,
    /// The PostgreSQL the ingest service writes to, for the bare-insert floor [default:
    /// postgres.url of the settings, i.e. SHARDFEED_POSTGRES__URL or
    /// postgres://shardfeed@127.0.0.1:54329/shardfeed].
    #[arg(long)]
    postgres_url: Option<String>,
    /// Bench users to create (CreateUser) and post as; each request picks one at random.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    authors: u32,
    /// Seconds of load before measuring, per phase (not recorded).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_secs: u64,
    /// Seconds measured, per phase and round.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=3600))]
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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
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
    fn name(self) -> &'static str {
        match self {
            Only::Grpc => "grpc",
            Only::Bare => "bare",
            Only::Both => "both",
        }
    }
}

/// What the bench created and must remove, whatever happens.
#[derive(Default)]
struct Created {
    users: Vec<i64>,
    /// The connection that created the floor's table, kept to drop it.
    table: Option<tokio_postgres::Client>,
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
            args.channels, args.ingest
        );
        connect_channels(&args.ingest, args.channels as usize).await?
    } else {
        Vec::new()
    };
    let postgres = if args.only.bare() {
        let url = match &args.postgres_url {
            Some(url) => url.clone(),
            None => Settings::load()?.postgres.url().to_owned(),
        };
        let config = postgres_config(&url)?;
        eprintln!("bench ingest: PostgreSQL {}", describe_postgres(&config));
        // Connected now, so an unreachable PostgreSQL stops the bench before anything is made.
        let admin = connect_postgres(&config).await?;
        Some((config, admin))
    } else {
        None
    };

    let mut created = Created::default();
    let outcome = tokio::select! {
        outcome = run_phases(&args, timing, &channels, postgres, &mut created) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    clean_up(&channels, created).await;
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
    channels: &[Channel],
    postgres: Option<(tokio_postgres::Config, tokio_postgres::Client)>,
    created: &mut Created,
) -> anyhow::Result<Vec<Round>> {
    let concurrency = args.concurrency as usize;
    let body_bytes = args.body_bytes as usize;

    let authors: Arc<[i64]> = if args.only.grpc() {
        create_users(channels, args.authors as usize, created).await?;
        Arc::from(created.users.clone())
    } else {
        // The floor alone needs no real users: its table has no foreign key.
        (1..=i64::from(args.authors)).collect()
    };
    if args.only.grpc() {
        first_create_post(channels, &args.ingest, authors[0], body_bytes).await?;
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
        if args.only.grpc() {
            eprintln!(
                "bench ingest: round {round}/{}: {GRPC_LABEL}: {concurrency} workers over {} \
                 channel(s)",
                args.rounds,
                channels.len()
            );
            let ops: Vec<CreatePost> = (0..concurrency)
                .map(|i| CreatePost {
                    client: PostServiceClient::new(channels[i % channels.len()].clone()),
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

// ---------------------------------------------------------------------------------------------
// The two requests measured

struct CreatePost {
    client: PostServiceClient<Channel>,
    authors: Arc<[i64]>,
    rng: StdRng,
    body_bytes: usize,
}

impl Op for CreatePost {
    async fn call(&mut self) -> Result<(), OpError> {
        let author_id = self.authors[self.rng.gen_range(0..self.authors.len())];
        let request = CreatePostRequest {
            author_id,
            body: make_body(&mut self.rng, self.body_bytes),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        match self.client.create_post(request).await {
            Ok(response) => check_post(response.into_inner().post.as_ref(), author_id),
            Err(status) => Err(OpError::new(
                format!("{:?}", status.code()),
                status.message(),
            )),
        }
    }
}

/// A success must carry the post it created.
fn check_post(post: Option<&shardfeed_proto::v1::Post>, author_id: i64) -> Result<(), OpError> {
    match post {
        Some(post) if post.author_id == author_id && post.post_id > 0 => Ok(()),
        Some(post) => Err(OpError::new(
            "BadResponse",
            format!(
                "post_id={} author_id={} for a post by author {author_id}",
                post.post_id, post.author_id
            ),
        )),
        None => Err(OpError::new(
            "BadResponse",
            "CreatePostResponse without a post",
        )),
    }
}

struct BareInsert {
    client: tokio_postgres::Client,
    insert: Statement,
    authors: Arc<[i64]>,
    next_post_id: Arc<AtomicI64>,
    rng: StdRng,
    body_bytes: usize,
}

impl Op for BareInsert {
    async fn call(&mut self) -> Result<(), OpError> {
        let author_id = self.authors[self.rng.gen_range(0..self.authors.len())];
        let post_id = self.next_post_id.fetch_add(1, Ordering::Relaxed);
        let body = make_body(&mut self.rng, self.body_bytes);
        // BEGIN; INSERT ...; COMMIT; — three round trips, as a transaction of one insert.
        let tx = self.client.transaction().await.map_err(pg_error)?;
        tx.execute(&self.insert, &[&author_id, &post_id, &body])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }
}

/// `Code: message`, or the code alone when the message is empty.
fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

pub(super) fn pg_error(err: tokio_postgres::Error) -> OpError {
    match err.as_db_error() {
        Some(db) => OpError::new(format!("SQLSTATE {}", db.code().code()), db.message()),
        None if err.is_closed() => OpError::new("ConnectionClosed", err.to_string()),
        None => OpError::new("Postgres", format!("{err:#}")),
    }
}

/// `len` bytes of ASCII text: words of letters and digits.
fn make_body(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|i| {
            if i % 8 == 7 && i + 1 < len {
                ' '
            } else {
                char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Setup

pub(crate) async fn connect_channels(endpoint: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
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
                "cannot reach the ingest service at {}; is the stack up (deploy/local/up.sh)?",
                endpoint.uri()
            )
        })?);
    }
    Ok(channels)
}

async fn create_users(
    channels: &[Channel],
    count: usize,
    created: &mut Created,
) -> anyhow::Result<()> {
    let run_tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    eprintln!("bench ingest: creating {count} bench users (bench_{run_tag}_<i>)");
    let client = UserServiceClient::new(channels[0].clone());
    let mut results = stream::iter(0..count)
        .map(|i| {
            let mut client = client.clone();
            let request = CreateUserRequest {
                handle: format!("bench_{run_tag}_{i}"),
                display_name: format!("Bench author {i}"),
                request_id: uuid::Uuid::new_v4().to_string(),
            };
            async move { client.create_user(request).await }
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    let mut failures = Vec::new();
    while let Some(result) = results.next().await {
        match result {
            Ok(response) => match response.into_inner().user {
                Some(user) => created.users.push(user.user_id),
                None => failures.push("CreateUserResponse without a user".to_owned()),
            },
            Err(status) => failures.push(status_text(&status)),
        }
    }
    if let Some(first) = failures.first() {
        bail!(
            "creating the bench users: {} of {count} CreateUser calls failed (first: {first})",
            failures.len()
        );
    }
    Ok(())
}

/// One CreatePost before the load: a service that cannot take it stops the bench right here.
async fn first_create_post(
    channels: &[Channel],
    ingest: &str,
    author_id: i64,
    body_bytes: usize,
) -> anyhow::Result<()> {
    let mut client = PostServiceClient::new(channels[0].clone());
    let request = CreatePostRequest {
        author_id,
        body: make_body(&mut StdRng::from_entropy(), body_bytes),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    match client.create_post(request).await {
        Ok(response) => check_post(response.into_inner().post.as_ref(), author_id).map_err(|e| {
            anyhow!(
                "the first CreatePost answered OK but wrongly ({}): {}",
                e.kind,
                e.message
            )
        }),
        Err(status) if status.code() == Code::Unimplemented => bail!(
            "PostService.CreatePost answers UNIMPLEMENTED at {ingest}: this shardfeed-ingest does \
             not implement the write path yet, so there is nothing to measure over gRPC \
             (`shardfeed bench ingest --only bare` measures the bare-insert floor alone)"
        ),
        Err(status) => bail!(
            "the first CreatePost failed at {ingest}: {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

pub(crate) fn postgres_config(url: &str) -> anyhow::Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url)
        .context("the PostgreSQL URL (--postgres-url or postgres.url) is not valid")?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(3));
    }
    config.application_name("shardfeed-bench");
    Ok(config)
}

/// host:port/db of the configuration, without the password.
pub(super) fn describe_postgres(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => return "(from the given URL)".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

pub(crate) async fn connect_postgres(
    config: &tokio_postgres::Config,
) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("cannot connect to PostgreSQL; is the stack up (deploy/local/up.sh)?")?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error here shows up in the requests too.
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates the floor's table; returns the first free post id (rows left by an interrupted run
/// stay out of the way).
async fn create_bare_table(
    client: tokio_postgres::Client,
    created: &mut Created,
) -> anyhow::Result<i64> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {BARE_TABLE} (\
               author_id bigint NOT NULL, post_id bigint NOT NULL, body text NOT NULL, \
               create_time timestamptz NOT NULL, PRIMARY KEY (author_id, post_id))"
        ))
        .await
        .with_context(|| format!("creating {BARE_TABLE}"))?;
    let next: i64 = client
        .query_one(
            &format!("SELECT coalesce(max(post_id), 0) + 1 FROM {BARE_TABLE}"),
            &[],
        )
        .await
        .with_context(|| format!("reading {BARE_TABLE}"))?
        .get(0);
    created.table = Some(client);
    Ok(next)
}

// ---------------------------------------------------------------------------------------------
// Clean-up and report

/// Best effort: every failure is reported on stderr, none hides the figures.
async fn clean_up(channels: &[Channel], created: Created) {
    if !created.users.is_empty() {
        eprintln!(
            "bench ingest: deleting the {} bench users",
            created.users.len()
        );
        let client = UserServiceClient::new(channels[0].clone());
        let failures: Vec<String> = stream::iter(created.users.iter().copied())
            .map(|user_id| {
                let mut client = client.clone();
                async move {
                    client
                        .delete_user(DeleteUserRequest { user_id })
                        .await
                        .map_err(|s| format!("user {user_id}: {}", status_text(&s)))
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .filter_map(|result| async move { result.err() })
            .collect()
            .await;
        if let Some(first) = failures.first() {
            eprintln!(
                "warning: {} of {} bench users could not be deleted (first: {first})",
                failures.len(),
                created.users.len()
            );
        }
    }
    if let Some(client) = created.table {
        eprintln!("bench ingest: dropping {BARE_TABLE}");
        let dropped = client
            .batch_execute(&format!(
                "SET lock_timeout = '10s'; DROP TABLE IF EXISTS {BARE_TABLE}"
            ))
            .await;
        if let Err(err) = dropped {
            eprintln!("warning: could not drop {BARE_TABLE}: {err:#}");
        }
    }
}

fn report(args: &IngestBenchArgs, rounds: &[Round]) -> anyhow::Result<()> {
    let median = median_round(rounds).context("no round ran")?;
    let (grpc, bare) = (median.grpc.as_ref(), median.bare.as_ref());
    let ratio = median.ratio();
    let ratios: Vec<f64> = rounds.iter().filter_map(Round::ratio).collect();

    println!();
    println!(
        "shardfeed bench ingest: concurrency {}, {} HTTP/2 channel(s), {} authors, {}-byte bodies, \
         warm-up {} s, measured {} s per phase, {} round(s)",
        args.concurrency,
        args.channels,
        args.authors,
        args.body_bytes,
        args.warmup_secs,
        args.duration_secs,
        args.rounds
    );
    println!();
    let mut table = Table::summary_headers("", &["vs bare"]);
    for (i, round) in rounds.iter().enumerate() {
        let tag = |s: &Summary| {
            let mut s = s.clone();
            if rounds.len() > 1 {
                s.label = format!("{} (round {})", s.label, i + 1);
            }
            s
        };
        if let Some(g) = &round.grpc {
            let vs = round
                .ratio()
                .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
            table.summary_row(&tag(g), &[vs]);
        }
        if let Some(b) = &round.bare {
            table.summary_row(&tag(b), &["100%".to_owned()]);
        }
    }
    print!("{}", table.render());
    println!();
    if let Some(r) = ratio {
        let each: Vec<String> = ratios
            .iter()
            .map(|r| format!("{:.1}%", r * 100.0))
            .collect();
        println!(
            "shardfeed / bare: {:.1}% of the bare-insert rate, the median of {} round(s): {} \
             (target >= {:.0}%: {})",
            r * 100.0,
            ratios.len(),
            each.join(", "),
            TARGET_RATIO * 100.0,
            if r >= TARGET_RATIO { "met" } else { "NOT met" }
        );
    }
    // Every round counts for errors, not only the median one.
    let phases = || {
        rounds
            .iter()
            .flat_map(|r| r.grpc.iter().chain(r.bare.iter()))
    };
    let error_lines: Vec<String> = phases().flat_map(Summary::error_lines).collect();
    if !error_lines.is_empty() {
        println!("errors:");
        for line in &error_lines {
            println!("  {line}");
        }
    }

    let figure =
        |s: Option<&Summary>, f: fn(&Summary) -> f64, decimals| s.map(|s| round(f(s), decimals));
    let summary = JsonSummary {
        bench: "ingest",
        posts_per_s: figure(grpc, |s| s.ops_per_s, 1),
        p50_ms: figure(grpc, |s| s.p50_ms, 3),
        p90_ms: figure(grpc, |s| s.p90_ms, 3),
        p99_ms: figure(grpc, |s| s.p99_ms, 3),
        max_ms: figure(grpc, |s| s.max_ms, 3),
        requests: grpc.map(|s| s.requests),
        errors: grpc.map(|s| s.errors),
        errors_by_code: grpc.map(|s| {
            s.errors_by_kind
                .iter()
                .map(|(kind, tally)| (kind.clone(), tally.count))
                .collect()
        }),
        bare_insert_per_s: figure(bare, |s| s.ops_per_s, 1),
        bare_p50_ms: figure(bare, |s| s.p50_ms, 3),
        bare_p90_ms: figure(bare, |s| s.p90_ms, 3),
        bare_p99_ms: figure(bare, |s| s.p99_ms, 3),
        bare_max_ms: figure(bare, |s| s.max_ms, 3),
        bare_requests: bare.map(|s| s.requests),
        bare_errors: bare.map(|s| s.errors),
        ratio: ratio.map(|r| round(r, 3)),
        round_ratios: ratios.iter().map(|r| round(*r, 3)).collect(),
        target_ratio: TARGET_RATIO,
        rounds: args.rounds,
        concurrency: args.concurrency,
        channels: args.channels,
        authors: args.authors,
        body_bytes: args.body_bytes,
        duration_s: args.duration_secs,
        warmup_s: args.warmup_secs,
        only: args.only.name(),
    };
    let summary = serde_json::to_string(&summary).context("encoding the JSON summary")?;
    println!("{summary}");

    let failures: Vec<String> = phases().filter_map(Summary::failure).collect();
    if !failures.is_empty() {
        bail!("the run does not count: {}", failures.join("; "));
    }
    Ok(())
}

/// The last line of stdout. Fields of a phase that did not run are `null`.
#[derive(serde::Serialize)]
struct JsonSummary {
    bench: &'static str,
    posts_per_s: Option<f64>,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    requests: Option<u64>,
    errors: Option<u64>,
    errors_by_code: Option<BTreeMap<String, u64>>,
    bare_insert_per_s: Option<f64>,
    bare_p50_ms: Option<f64>,
    bare_p90_ms: Option<f64>,
    bare_p99_ms: Option<f64>,
    bare_max_ms: Option<f64>,
    bare_requests: Option<u64>,
    bare_errors: Option<u64>,
    /// The median of `round_ratios`.
    ratio: Option<f64>,
    round_ratios: Vec<f64>,
    target_ratio: f64,
    rounds: u32,
    concurrency: u32,
    channels: u32,
    authors: u32,
    body_bytes: u32,
    duration_s: u64,
    warmup_s: u64,
    only: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardfeed_proto::v1::{
        post_service_server::{PostService, PostServiceServer},
        CreatePostResponse, DeletePostRequest, DeletePostResponse, GetPostRequest, GetPostResponse,
        Post,
    };
    use tonic::{Request, Response, Status};

    /// A PostService whose CreatePost answers what the test asks for.
    struct Stub(fn(&CreatePostRequest) -> Result<CreatePostResponse, Status>);

    #[tonic::async_trait]
    impl PostService for Stub {
        async fn create_post(
            &self,
            request: Request<CreatePostRequest>,
        ) -> Result<Response<CreatePostResponse>, Status> {
            (self.0)(request.get_ref()).map(Response::new)
        }
        async fn get_post(
            &self,
            _: Request<GetPostRequest>,
        ) -> Result<Response<GetPostResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn delete_post(
            &self,
            _: Request<DeletePostRequest>,
        ) -> Result<Response<DeletePostResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    async fn serve(stub: Stub) -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(socket, _)| socket);
            Some((accepted, listener))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PostServiceServer::new(stub))
                .serve_with_incoming(incoming),
        );
        connect_channels(&format!("http://{addr}"), 1)
            .await
            .unwrap()
            .remove(0)
    }

    async fn first_call_error(stub: Stub) -> Option<String> {
        let channel = serve(stub).await;
        first_create_post(&[channel], "the stub", 7, 100)
            .await
            .err()
            .map(|e| format!("{e:#}"))
    }

    #[tokio::test]
    async fn stops_at_once_when_create_post_is_unimplemented() {
        let err = first_call_error(Stub(|_| Err(Status::unimplemented("not yet"))))
            .await
            .expect("must fail");
        assert!(err.contains("UNIMPLEMENTED"), "{err}");
        assert!(err.contains("--only bare"), "{err}");
    }

    #[tokio::test]
    async fn stops_at_once_on_any_other_error_or_a_wrong_answer() {
        let err = first_call_error(Stub(|_| Err(Status::unavailable("postgres down"))))
            .await
            .expect("must fail");
        assert!(err.contains("Unavailable: postgres down"), "{err}");

        let err = first_call_error(Stub(|_| Ok(CreatePostResponse { post: None })))
            .await
            .expect("must fail");
        assert!(err.contains("without a post"), "{err}");

        let ok = first_call_error(Stub(|request| {
            assert_eq!(request.body.len(), 100);
            assert!(uuid::Uuid::parse_str(&request.request_id).is_ok());
            Ok(CreatePostResponse {
                post: Some(Post {
                    post_id: 1,
                    author_id: request.author_id,
                    body: request.body.clone(),
                    create_time: None,
                }),
            })
        }))
        .await;
        assert_eq!(ok, None);
    }

    fn phase(ops_per_s: f64) -> Summary {
        Summary {
            label: String::new(),
            requests: 1,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            ops_per_s,
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms: 1.0,
            max_ms: 1.0,
        }
    }

    fn round_of(grpc: Option<f64>, bare: Option<f64>) -> Round {
        Round {
            grpc: grpc.map(phase),
            bare: bare.map(phase),
        }
    }

    #[test]
    fn the_round_with_the_median_ratio_is_reported() {
        let rounds = [
            round_of(Some(75.0), Some(100.0)),
            round_of(Some(140.0), Some(200.0)),
            round_of(Some(73.0), Some(100.0)),
        ];
        let median = median_round(&rounds).unwrap();
        assert_eq!(median.ratio(), Some(0.73));
        // An even count: the lower middle one, so a lucky round cannot tip it.
        let two = [
            round_of(Some(80.0), Some(100.0)),
            round_of(Some(60.0), Some(100.0)),
        ];
        assert_eq!(median_round(&two).unwrap().ratio(), Some(0.6));
        // One phase alone: the median by its rate.
        let grpc_only = [
            round_of(Some(9.0), None),
            round_of(Some(7.0), None),
            round_of(Some(8.0), None),
        ];
        let median = median_round(&grpc_only).unwrap();
        assert_eq!(median.grpc.as_ref().unwrap().ops_per_s, 8.0);
        assert!(median_round(&[]).is_none());
    }

    #[test]
    fn bodies_have_the_asked_length_and_are_valid_posts() {
        let mut rng = StdRng::seed_from_u64(1);
        for len in [1, 2, 7, 8, 9, 100, 500] {
            let body = make_body(&mut rng, len);
            assert_eq!(body.len(), len);
            assert!(!body.trim().is_empty());
            assert!(!body.ends_with(' '));
        }
    }
}
