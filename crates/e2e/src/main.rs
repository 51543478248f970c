//! `shardfeed-e2e-service ingest|aggregator`: either service, run exactly as its own binary
//! runs it (settings from the environment, telemetry, serving until SIGINT/SIGTERM), for the
//! end-to-end tests of this package, which need both as processes of their own and may start
//! only their own package's binaries.

#![forbid(unsafe_code)]

/// The services' allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match std::env::args().nth(1).as_deref() {
        Some("ingest") => shardfeed_ingest::serve_from_env().await,
        Some("aggregator") => shardfeed_aggregator::serve_from_env().await,
        _ => Err(anyhow::anyhow!(
            "usage: shardfeed-e2e-service ingest|aggregator"
        )),
    };
    shardfeed_server::exit_code(result)
}
