//! `shardfeed-aggregator`: loads settings, starts telemetry, serves until SIGINT/SIGTERM.

/// mimalloc: glibc's allocator spent a fifth of the aggregator's CPU under load, much of it
/// waiting on arena locks between the runtime's threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shardfeed_server::exit_code(shardfeed_aggregator::serve_from_env().await)
}
