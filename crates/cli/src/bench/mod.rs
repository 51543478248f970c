//! `shardfeed bench ...`: benchmarks of a running stack. Each prints its figures side by side
//! with the floor a user would compare against (measured in the same run), a table, and as the
//! last line of stdout a one-line JSON summary for scripts. Progress goes to stderr.

pub mod ingest;
pub mod load;
pub mod stats;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The write path: CreatePost over gRPC against a bare single-row INSERT transaction on the
    /// same PostgreSQL, same concurrency and duration.
    Ingest(ingest::IngestBenchArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest::run(args).await,
    }
}
