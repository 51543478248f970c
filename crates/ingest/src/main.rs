//! `shardfeed-ingest`: loads settings, starts telemetry, serves until SIGINT/SIGTERM.

use shardfeed_server::{shutdown, telemetry, Settings};

/// mimalloc: glibc's allocator spent a fifth of the aggregator's CPU under load, much of it
/// waiting on arena locks between the runtime's threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use shardfeed_ingest::Application;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shardfeed_server::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let _telemetry = telemetry::init("shardfeed-ingest", &settings.telemetry)?;
    let app = Application::build(settings).await.inspect_err(|err| {
        tracing::error!(error = format!("{err:#}"), "start-up failed");
    })?;
    app.run_until_stopped(shutdown::signal()).await
}
