//! Key replication of hot authors (mitigation 4): ingest follows the shared hot set that the
//! aggregators publish (`hot` sorted set) and keeps one copy of each hot author's timeline on
//! every other master, under another hash tag, so that reads of one author spread over all
//! masters.
//!
//! - An author that turns hot is mirrored: every later change is applied to the copies too,
//!   then the copies are filled from the original.
//! - Every [`REPAIR_EVERY`] rounds the copies are merged from the original again, which repairs
//!   one that missed a write (its master failed over before the write reached its replica).
//! - An author that cools down has its copies deleted before mirroring stops, so a reader never
//!   finds a copy that lacks a write; readers that find no copy read the original.

use std::collections::BTreeSet;
use std::time::Duration;

use shardfeed_cache::{hot_set, CacheWriter};
use tokio_util::sync::CancellationToken;

/// Copies are re-merged from the original every this many rounds.
const REPAIR_EVERY: u64 = 10;

/// Follows the hot set every `interval` until `stop`.
pub async fn run(writer: CacheWriter, interval: Duration, stop: CancellationToken) {
    let mut round = 0u64;
    loop {
        round += 1;
        if let Err(error) = sync_once(&writer, round.is_multiple_of(REPAIR_EVERY)).await {
            tracing::debug!(%error, "key replication round failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One round: mirror the authors that turned hot, drop those that cooled down, and with
/// `repair` re-merge every copy.
pub async fn sync_once(writer: &CacheWriter, repair: bool) -> anyhow::Result<()> {
    let hot: BTreeSet<i64> = hot_set::current(writer.client(), writer.layout())
        .await?
        .into_iter()
        .collect();
    let mirrored: BTreeSet<i64> = writer.mirrored().into_iter().collect();
    for author in hot.difference(&mirrored) {
        let copies = writer.start_mirroring(*author).await?;
        tracing::info!(
            author,
            ?copies,
            "hot author: timeline copied to the other masters"
        );
    }
    for author in mirrored.difference(&hot) {
        writer.stop_mirroring(*author).await?;
        tracing::info!(author, "author cooled down: timeline copies deleted");
    }
    if repair {
        for author in hot.intersection(&mirrored) {
            writer.sync_copies(*author).await?;
        }
    }
    Ok(())
}
