//! `shardfeed`: the operator's command line.

#![forbid(unsafe_code)]

mod bench;
mod client;
mod demo;
mod dev;
mod measure;
mod popularity;
mod progress;
mod redis_info;
mod sim;
mod token;

use clap::{Parser, Subcommand};
use tracing::Instrument;

/// The same allocator as the services (the simulation runs an aggregator in-process).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shardfeed",
    version,
    about = "shardfeed: feed aggregation over a sharded cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending PostgreSQL migrations (settings from SHARDFEED_* and SHARDFEED_CONFIG).
    Migrate,
    /// A scripted tour through the API of a running stack, printing every call and its result.
    Demo(demo::DemoArgs),
    /// The hot-partition simulation: a Zipf-shaped network loaded through the ingest API, then
    /// the same mixed load with mitigations off and on, measured on the Redis masters; prints a
    /// table, writes a report and ends with a one-line JSON summary.
    Sim(sim::SimArgs),
    /// Benchmarks of a running stack, each against the floor a user would compare it with.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Mint a bearer token (printed on the last line of stdout) with the configured HS256 key,
    /// e.g. `grpcurl -H "authorization: Bearer $(shardfeed token --user 1)" …`.
    Token(token::TokenArgs),
    /// The local stack: PostgreSQL, a 6-node Redis Cluster and both services, kept running
    /// between commands (up, down, status, logs, chaos, env).
    Dev(dev::DevArgs),
}

impl Command {
    /// The name of the command's span, the root of its trace.
    fn span_name(&self) -> &'static str {
        match self {
            Command::Migrate => "shardfeed migrate",
            Command::Demo(_) => "shardfeed demo",
            Command::Sim(_) => "shardfeed sim",
            Command::Bench { .. } => "shardfeed bench",
            Command::Token(_) => "shardfeed token",
            Command::Dev(_) => "shardfeed dev",
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = telemetry();
    // One trace per command: every call it makes carries its context (`traceparent`).
    let span = tracing::info_span!("command", otel.name = cli.command.span_name());
    let result = run(cli).instrument(span).await;
    // Flushes the spans still buffered.
    drop(telemetry);
    shardfeed_server::exit_code(result)
}

/// The command's spans, exported over OTLP when an endpoint is configured as for the services
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `telemetry.otlp_endpoint`, docs/architecture.md, Tracing);
/// nothing is logged. Settings that do not load leave the environment alone to say: the
/// command itself reports them.
fn telemetry() -> Option<shardfeed_server::telemetry::TelemetryGuard> {
    use shardfeed_server::Settings;
    let settings = Settings::load()
        .or_else(|_| Settings::load_from(None, Vec::new()))
        .ok()?;
    shardfeed_server::telemetry::init_traces("shardfeed-cli", &settings.telemetry).unwrap_or_else(
        |err| {
            eprintln!("warning: not exporting spans: {err:#}");
            None
        },
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate => {
            let settings = dev::cli_settings()?;
            let applied = shardfeed_server::postgres::run_migrations(&settings.postgres).await?;
            if applied.is_empty() {
                println!("migrations: schema already up to date");
            } else {
                for migration in applied {
                    println!("migrations: applied {migration}");
                }
            }
            Ok(())
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Sim(args) => sim::run(args).await,
        Command::Bench { command } => bench::run(command).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Token(args) => token::run(args),
    }
}
