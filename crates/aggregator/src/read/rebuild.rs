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
use shardfeed_server::spans;
use tokio::sync::Semaphore;
use tracing::{field::Empty, Instrument, Span};

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

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Timeline => "timeline",
            Target::Following => "following",
        }
    }
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
        // A child of the read that asked for it, which it may outlive.
        let span = tracing::info_span!(
            "rebuild",
            otel.name = "cache.rebuild",
            shardfeed.rebuild.target = target.as_str(),
            shardfeed.user.id = user_id,
            shardfeed.rebuild.outcome = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let rebuild = async move {
            let rebuilt = this.rebuild(target, user_id).await;
            match &rebuilt {
                Ok(true) => this.metrics.rebuilt(true),
                Ok(false) => {}
                Err(_) => this.metrics.rebuilt(false),
            }
            if let Err(err) = rebuilt {
                let span = Span::current();
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", format!("{err:#}"));
                tracing::warn!(
                    ?target,
                    user_id,
                    error = format!("{err:#}"),
                    "cache rebuild failed"
                );
            }
            this.in_flight.lock().remove(&(target, user_id));
            drop(slot);
        };
        tokio::spawn(rebuild.instrument(span));
    }

    /// Whether this call rebuilt the keys (not: another aggregator holds the lease, or there
    /// is no such user).
    async fn rebuild(&self, target: Target, user_id: i64) -> anyhow::Result<bool> {
        let token = uuid::Uuid::new_v4().to_string();
        let lease = match target {
            Target::Timeline => self.writer.layout().rebuild_lease(user_id, "tl"),
            Target::Following => self.writer.layout().rebuild_lease(user_id, "fol"),
        };
        let outcome = |outcome: &str| {
            Span::current().record("shardfeed.rebuild.outcome", outcome);
        };
        let leased = self.writer.try_lease(lease, &token, LEASE_MS);
        if !spans::redis("SET rebuild.lease", None, 1, leased).await? {
            outcome("leased_elsewhere");
            return Ok(false); // another aggregator is on it
        }
        // Each rebuild in two halves around its snapshot (see `CacheWriter::prepare_author`).
        match target {
            Target::Timeline => {
                let prepared = self.writer.prepare_author(user_id);
                spans::redis("EVALSHA rebuild.prepare", None, 1, prepared).await?;
                let Some(snapshot) =
                    postgres::author_snapshot(&self.pool, user_id, self.timeline_len).await?
                else {
                    outcome("no_user");
                    return Ok(false); // no such user: nothing to cache
                };
                let merged = self.writer.rebuild_author(user_id, &snapshot, &token);
                spans::redis("EVALSHA rebuild.merge", None, 1, merged).await?;
            }
            Target::Following => {
                let prepared = self.writer.prepare_following(user_id, &token);
                spans::redis("EVALSHA rebuild.prepare", None, 1, prepared).await?;
                let (followees, since) = postgres::followees_snapshot(&self.pool, user_id).await?;
                let merged = self
                    .writer
                    .rebuild_following(user_id, &followees, since, &token);
                spans::redis("EVALSHA rebuild.merge", None, 1, merged).await?;
            }
        }
        outcome("rebuilt");
        Ok(true)
    }

    /// Rebuilds now and waits (for tests and tools).
    pub async fn rebuild_now(&self, target: Target, user_id: i64) -> anyhow::Result<()> {
        self.rebuild(target, user_id).await.map(|_| ())
    }
}
