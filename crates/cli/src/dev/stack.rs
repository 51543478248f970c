//! `dev up`, `restart`, `down`, `status` and `logs`.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use shardfeed_server::config::PostgresSettings;
use shardfeed_server::Settings;
use shardfeed_testkit::{
    kept_data_dir, log_tail, PgServer, ProcState, RedisCluster, ServingStatus, StateDir,
};
use tonic::transport::Channel;

use super::Stack;
use crate::client::TlsFlags;

/// The services, in start order, with the binary each runs.
const SERVICES: [(&str, &str); 2] = [
    ("ingest", "shardfeed-ingest"),
    ("aggregator", "shardfeed-aggregator"),
];

const POSTGRES: &str = "postgres";

fn log(message: impl std::fmt::Display) {
    println!("==> {message}");
}

pub async fn up(stack: &Stack, stores_only: bool) -> anyhow::Result<()> {
    let state = stack.state();
    state.create()?;
    let binaries = if stores_only {
        Vec::new()
    } else {
        SERVICES
            .iter()
            .map(|&(name, binary)| Ok((name, service_binary(binary)?)))
            .collect::<anyhow::Result<Vec<_>>>()?
    };

    start_postgres(stack, &state).await?;
    start_redis(stack, &state).await?;
    if stores_only {
        print_summary(stack, true);
        return Ok(());
    }

    let settings = Settings::load_from(None, stack.client_env())
        .context("the stack's settings do not load")?;
    let applied = shardfeed_server::postgres::run_migrations(&settings.postgres).await?;
    log(format_args!("migrations: {} applied", applied.len()));

    for (name, binary) in binaries {
        let addr = service_addr(stack, name);
        if let Some(record) = state.live(name)? {
            log(format_args!(
                "{name}: already running (pid {}, port {})",
                record.process.pid, record.port
            ));
            continue;
        }
        let mut cmd = Command::new(&binary);
        cmd.envs(service_env(stack, |name| std::env::var_os(name).is_some()));
        let record = state.start(name, cmd, addr.port())?;
        log(format_args!(
            "{name}: started pid {} on {addr}",
            record.process.pid
        ));
    }
    for (name, _) in SERVICES {
        wait_serving(stack, &state, name).await?;
    }
    print_summary(stack, false);
    Ok(())
}

/// What `up` adds to a service's environment: the stack's settings, no migrations (`up` has
/// just applied them), plain logs at `info` unless `is_set` says the caller chose otherwise.
pub(super) fn service_env(stack: &Stack, is_set: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let mut env = stack.client_env();
    env.push(("SHARDFEED_INGEST__RUN_MIGRATIONS".into(), "false".into()));
    env.push(("NO_COLOR".into(), "1".into()));
    for (knob, default) in [
        ("SHARDFEED_TELEMETRY__LOG_FORMAT", "plain"),
        ("SHARDFEED_TELEMETRY__LOG_FILTER", "info"),
    ] {
        if !is_set(knob) {
            env.push((knob.into(), default.into()));
        }
    }
    env
}

/// `dev restart`: stops both services and starts them again from the binaries next to this
/// one (after a rebuild: `just watch`), the stores left as they are (started if missing) and
/// new migrations applied.
pub async fn restart(stack: &Stack) -> anyhow::Result<()> {
    // Before anything stops: a missing binary leaves the running services alone.
    for (_, binary) in SERVICES {
        service_binary(binary)?;
    }
    let state = stack.state();
    for (name, _) in SERVICES {
        if let Some(record) = state.stop(name, Duration::from_secs(15))? {
            log(format_args!("{name}: stopped pid {}", record.process.pid));
        }
    }
    up(stack, false).await
}

/// A service binary next to this one (the release build puts all three in one dir).
fn service_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the shardfeed binary")?;
    let binary = exe.with_file_name(name);
    if !binary.is_file() {
        bail!(
            "{} is missing: build it (cargo build --release -p {name}), or start only the \
             stores with `shardfeed dev up --stores-only`",
            binary.display()
        );
    }
    Ok(binary)
}

fn service_addr(stack: &Stack, name: &str) -> SocketAddr {
    if name == "ingest" {
        stack.ingest_addr
    } else {
        stack.aggregator_addr
    }
}

async fn start_postgres(stack: &Stack, state: &StateDir) -> anyhow::Result<()> {
    let data = kept_data_dir(&stack.root.join("pg"))?;
    let (state_for_start, port) = (state.clone(), stack.pg_port);
    let was_running = state.live(POSTGRES)?.is_some();
    let pg = tokio::task::spawn_blocking(move || {
        PgServer::start_kept(&state_for_start, &data, port, super::DEV_PG_PASSWORD)
    })
    .await??;
    if pg.port() != stack.pg_port {
        bail!(
            "postgres already runs on port {} (not {}): `shardfeed dev down` first to move it",
            pg.port(),
            stack.pg_port
        );
    }
    let what = if was_running {
        "already running"
    } else {
        "started"
    };
    log(format_args!(
        "postgres: {what} (pid {}, port {}, data {})",
        pg.pid().unwrap_or_default(),
        pg.port(),
        pg.dir().display()
    ));

    let client = connect_admin(stack).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = 'shardfeed'", &[])
        .await?
        .is_some();
    if !exists {
        log("postgres: creating database shardfeed");
        client.batch_execute("CREATE DATABASE shardfeed").await?;
    }
    Ok(())
}

/// A connection to the stack's `postgres` database as its superuser.
async fn connect_admin(stack: &Stack) -> anyhow::Result<tokio_postgres::Client> {
    let settings = PostgresSettings::from_url(stack.pg_url_of("postgres"));
    crate::client::connect_postgres(&crate::client::postgres_target(&settings, None)?).await
}

async fn start_redis(stack: &Stack, state: &StateDir) -> anyhow::Result<()> {
    let (state, dir, base) = (state.clone(), stack.redis_dir(), stack.redis_base_port);
    let credentials = stack.redis_credentials();
    let cluster = tokio::task::spawn_blocking(move || {
        RedisCluster::start_kept(&state, &dir, base, &credentials)
    })
    .await??;
    log(format_args!(
        "redis cluster: healthy, masters {}",
        cluster.masters()?.join(" ")
    ));
    Ok(())
}

/// Waits until the service reports SERVING through gRPC health, for `stack.start_timeout` at
/// most (`SFDEV_START_TIMEOUT`); fails early if it exits.
pub(super) async fn wait_serving(
    stack: &Stack,
    state: &StateDir,
    name: &str,
) -> anyhow::Result<()> {
    let log_path = state.log_path(name);
    let Some(record) = state.live(name)? else {
        bail!(
            "{name} exited during start-up\n{}",
            log_tail(&log_path, 0, 25)
        );
    };
    let addr = service_addr(stack, name);
    let channel = channel(addr)?;
    let serving = shardfeed_testkit::wait_for_health(
        &channel,
        "",
        ServingStatus::Serving,
        stack.start_timeout,
    );
    let exited = async {
        while record.state() != ProcState::Gone {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        result = serving => result.with_context(|| {
            format!("{name} is not SERVING on {addr}\n{}", log_tail(&log_path, 0, 25))
        })?,
        () = exited => {
            state.remove(name)?;
            bail!("{name} exited during start-up\n{}", log_tail(&log_path, 0, 25));
        }
    }
    log(format_args!("{name}: SERVING (grpc.health.v1) on {addr}"));
    Ok(())
}

/// A channel to a service of the stack: over TLS when `SFDEV_TLS_*` says so (the services
/// serve TLS when `SHARDFEED_GRPC__TLS_*` is exported: `shardfeed dev certs`).
fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(TlsFlags::from_env()
        .endpoint(&format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect_lazy())
}

fn print_summary(stack: &Stack, stores_only: bool) {
    let root = stack.root.display();
    println!();
    println!(
        "shardfeed local stack is up{}",
        if stores_only { " (stores only)" } else { "" }
    );
    println!(
        "  postgres     postgres://{}:***@127.0.0.1:{}/shardfeed",
        super::DEV_PG_USER,
        stack.pg_port
    );
    println!(
        "  redis        {}   (ACL user {})",
        stack.redis_nodes().join(","),
        super::DEV_REDIS_USER
    );
    if !stores_only {
        // The services' metrics addresses are theirs: the default, or the setting passed on.
        let metrics =
            |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
        println!(
            "  ingest       grpc://{}   metrics http://{}/metrics",
            stack.ingest_addr,
            metrics("SHARDFEED_INGEST__METRICS_ADDR", "127.0.0.1:9091")
        );
        println!(
            "  aggregator   grpc://{}   metrics http://{}/metrics",
            stack.aggregator_addr,
            metrics("SHARDFEED_AGGREGATOR__METRICS_ADDR", "127.0.0.1:9092")
        );
    }
    println!(
        "  state        {root}/run/   logs {root}/log/   (shardfeed dev status | logs | down)"
    );
    println!(
        "  environment  eval \"$(shardfeed dev env)\"   points the CLI at it (development \
         passwords included)"
    );
}

/// Services first (they hold connections to the stores), then Redis, then PostgreSQL.
fn stop_order(names: Vec<String>) -> Vec<String> {
    let rank = |name: &str| match name {
        POSTGRES => 2,
        _ if name.starts_with("redis-") => 1,
        _ => 0,
    };
    let mut names = names;
    names.sort_by_key(|name| rank(name));
    names
}

pub fn down(stack: &Stack, purge: bool) -> anyhow::Result<()> {
    let state = stack.state();
    for name in stop_order(state.names()?) {
        let grace = Duration::from_secs(if name == POSTGRES { 60 } else { 15 });
        match state.stop(&name, grace)? {
            Some(record) => log(format_args!("{name}: stopped pid {}", record.process.pid)),
            None => log(format_args!("{name}: was not running (record removed)")),
        }
    }
    if purge {
        let pg = stack.root.join("pg");
        let data = kept_data_dir(&pg)?;
        for dir in [stack.redis_dir(), data.clone(), pg] {
            if dir.exists() {
                log(format_args!("purging {}", dir.display()));
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        // The dir of its own that PostgreSQL's data got outside the repo, once empty.
        if let Some(outside) = data.parent().filter(|dir| !dir.starts_with(&stack.root)) {
            let _ = std::fs::remove_dir(outside);
        }
    }
    log("local stack is down");
    Ok(())
}

pub async fn status(stack: &Stack) -> anyhow::Result<()> {
    let state = stack.state();
    let mut names: Vec<String> = std::iter::once(POSTGRES.to_owned())
        .chain(
            stack
                .redis_nodes()
                .iter()
                .map(|addr| format!("redis-{}", addr.rsplit(':').next().unwrap_or_default())),
        )
        .chain(SERVICES.iter().map(|(name, _)| (*name).to_owned()))
        .collect();
    for name in state.names()? {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut all_up = true;
    for name in &names {
        let record = state.read(name)?;
        let Some(record) = record.filter(|r| r.state() != ProcState::Gone) else {
            all_up = false;
            println!("{name:<14} not running");
            continue;
        };
        let paused = record.state() == ProcState::Paused;
        let check = if paused {
            "paused (SIGSTOP)".to_owned()
        } else {
            check(stack, name, record.port).await
        };
        println!(
            "{name:<14} pid {:<8} 127.0.0.1:{:<6} {check}",
            record.process.pid, record.port
        );
    }
    let cluster = RedisCluster::find_kept(
        &state,
        &stack.redis_dir(),
        stack.redis_base_port,
        &stack.redis_credentials(),
    )?;
    match cluster.health() {
        Ok(()) => println!(
            "redis cluster  healthy, masters {}",
            cluster.masters()?.join(" ")
        ),
        Err(err) => {
            all_up = false;
            println!("redis cluster  not healthy: {err:#}");
        }
    }
    if !all_up {
        println!("(start what is missing with `shardfeed dev up`)");
    }
    Ok(())
}

/// What a running component answers.
async fn check(stack: &Stack, name: &str, port: u16) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let answer = async {
        if name == POSTGRES {
            let client = connect_admin(stack).await?;
            client.simple_query("SELECT 1").await?;
            anyhow::Ok("accepts connections".to_owned())
        } else if name.starts_with("redis-") {
            anyhow::Ok("running".to_owned())
        } else {
            let status = shardfeed_testkit::health(&channel(addr)?, "").await?;
            anyhow::Ok(status.as_str_name().to_owned())
        }
    };
    match tokio::time::timeout(Duration::from_secs(3), answer).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => format!("not answering: {err:#}"),
        Err(_) => "not answering within 3s".to_owned(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    Ingest,
    Aggregator,
    Redis,
    Postgres,
    All,
}

/// `tail` over the chosen logs: it does following and many files well.
pub fn logs(
    stack: &Stack,
    follow: bool,
    lines: u32,
    components: &[Component],
) -> anyhow::Result<()> {
    let state = stack.state();
    let all = components.is_empty() || components.contains(&Component::All);
    let wants = |c: Component| all || components.contains(&c);
    let mut files = Vec::new();
    if wants(Component::Postgres) {
        files.push(state.log_path(POSTGRES));
    }
    if wants(Component::Redis) {
        let mut redis: Vec<PathBuf> = std::fs::read_dir(state.log_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("redis-") && name.ends_with(".log"))
            })
            .collect();
        redis.sort();
        files.extend(redis);
    }
    for (name, component) in [
        ("ingest", Component::Ingest),
        ("aggregator", Component::Aggregator),
    ] {
        if wants(component) {
            files.push(state.log_path(name));
        }
    }
    files.retain(|file| file.is_file());
    if files.is_empty() {
        bail!(
            "no logs yet in {} (start the stack with `shardfeed dev up`)",
            state.log_dir().display()
        );
    }
    let mut tail = Command::new("tail");
    tail.arg("-n").arg(lines.to_string());
    if follow {
        tail.arg("-F");
    }
    let err = tail.args(&files).exec();
    Err(err).context("running tail")
}
