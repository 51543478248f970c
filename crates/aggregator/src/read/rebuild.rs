//! Read-through: a user whose cache is not loaded is served from PostgreSQL, and its keys are
//! rebuilt in the background so the next read hits the cache.
//!
//! Never a stampede: one rebuild per key at a time in this process (single flight), one across
//! aggregator replicas (a short lease in Redis), and at most `aggregator.max_concurrent_rebuilds`
//! at once — a miss that finds no free slot is simply served from PostgreSQL and tried again on
//! a later read.

use std::{collections::HashSet, sync::Arc};

use deadpool_postgres::Pool;
use parking_lot::Mutex;
use shardfeed_cache::CacheWriter;
use tokio::sync::Semaphore;

use super::postgres;
use crate::metrics::ReadMetrics;

/// How long a rebuild lease lives if its holder dies before releasing it.
const LEASE_MS: i64 = 5_000;

/// What is rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// An author's timeline, bodies and meta.
    Timeline,
    /// A user's followee set.
    Following,
}

#[derive(Clone)]
pub struct Rebuilder {
    writer: CacheWriter,
    pool: Pool,
    timeline_len: i64,
    in_flight: Arc<Mutex<HashSet<(Target, i64)>>>,
    slots: Arc<Semaphore>,
    metrics: ReadMetrics,
}

impl Rebuilder {
    pub fn new(
        writer: CacheWriter,
        pool: Pool,
        timeline_len: usize,
        max_concurrent: usize,
    ) -> Self {
        Self {
            writer,
            pool,
            timeline_len: timeline_len as i64,
            in_flight: Arc::default(),
            slots: Arc::new(Semaphore::new(max_concurrent)),
            metrics: ReadMetrics::unregistered(),
        }
    }

    /// Counts the rebuilds in `metrics`.
    pub fn with_metrics(mut self, metrics: &ReadMetrics) -> Self {
        self.metrics = metrics.clone();
        self
    }

    /// Starts rebuilding `target` of `user_id` in the background, unless it is already being
    /// rebuilt here or every rebuild slot is busy.
    pub fn request(&self, target: Target, user_id: i64) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        if !self.in_flight.lock().insert((target, user_id)) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.rebuild(target, user_id).await {
                Ok(true) => this.metrics.rebuilt(true),
                Ok(false) => {}
                Err(err) => {
                    this.metrics.rebuilt(false);
                    tracing::warn!(
                        ?target,
                        user_id,
                        error = format!("{err:#}"),
                        "cache rebuild failed"
                    );
                }
            }
            this.in_flight.lock().remove(&(target, user_id));
            drop(slot);
        });
    }

    /// Whether this call rebuilt the keys (not: another aggregator holds the lease, or there
    /// is no such user).
    async fn rebuild(&self, target: Target, user_id: i64) -> anyhow::Result<bool> {
        let token = uuid::Uuid::new_v4().to_string();
        let lease = match target {
            Target::Timeline => self.writer.layout().rebuild_lease(user_id, "tl"),
            Target::Following => self.writer.layout().rebuild_lease(user_id, "fol"),
        };
        if !self.writer.try_lease(lease, &token, LEASE_MS).await? {
            return Ok(false); // another aggregator is on it
        }
        // Each rebuild in two halves around its snapshot (see `CacheWriter::prepare_author`).
        match target {
            Target::Timeline => {
                self.writer.prepare_author(user_id).await?;
                let Some(snapshot) =
                    postgres::author_snapshot(&self.pool, user_id, self.timeline_len).await?
                else {
                    return Ok(false); // no such user: nothing to cache
                };
                self.writer
                    .rebuild_author(user_id, &snapshot, &token)
                    .await?;
            }
            Target::Following => {
                self.writer.prepare_following(user_id, &token).await?;
                let (followees, since) = postgres::followees_snapshot(&self.pool, user_id).await?;
                self.writer
                    .rebuild_following(user_id, &followees, since, &token)
                    .await?;
            }
        }
        Ok(true)
    }

    /// Rebuilds now and waits (for tests and tools).
    pub async fn rebuild_now(&self, target: Target, user_id: i64) -> anyhow::Result<()> {
        self.rebuild(target, user_id).await.map(|_| ())
    }
}
