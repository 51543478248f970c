//! `shardfeed bench ...`: benchmarks of a running stack. Each prints its figures side by side
//! with the floor a user would compare against (measured in the same run), a table, and as the
//! last line of stdout a one-line JSON summary for scripts. Progress goes to stderr.

mod body;
pub mod feed;
pub mod ingest;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The write path: CreatePost over gRPC against a bare single-row INSERT transaction on the
    /// same PostgreSQL, same concurrency and duration.
    Ingest(ingest::IngestBenchArgs),
    /// The read path: GetHomeFeed over gRPC (cold, then warm) against the best single SQL query
    /// and a naive one-command-at-a-time Redis read, on the same seeded data.
    Feed(feed::FeedBenchArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Feed(args) => feed::run(args).await,
    }
}
