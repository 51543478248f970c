//! The outbox's metrics: what the relay delivers and parks, and how far behind it is
//! (`docs/operations.md`, Metrics).

use std::time::Duration;

use deadpool_postgres::Pool;
use prometheus_client::metrics::{
    counter::Counter,
    gauge::Gauge,
    histogram::{exponential_buckets, Histogram},
};
use shardfeed_server::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// How often the outbox's depth and age are read from PostgreSQL.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct OutboxMetrics {
    pub relayed: Counter,
    pub dead_lettered: Counter,
    pub batch_duration: Histogram,
    depth: Gauge,
    oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    dead_letters: Gauge,
}

impl OutboxMetrics {
    /// Registers the outbox's instruments in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self::unregistered();
        metrics.register(
            "outbox_relayed",
            "Outbox rows the relay applied to the cache and deleted",
            this.relayed.clone(),
        );
        metrics.register(
            "outbox_dead_lettered",
            "Outbox rows that ran out of attempts and were moved to outbox_dead_letters",
            this.dead_lettered.clone(),
        );
        metrics.register(
            "outbox_relay_batch_duration_seconds",
            "One relay round: claim a batch, apply it to the cache, settle it",
            this.batch_duration.clone(),
        );
        metrics.register(
            "outbox_depth",
            "Rows waiting in the outbox (sampled every 5 s)",
            this.depth.clone(),
        );
        metrics.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest row waiting in the outbox, 0 when empty (sampled every 5 s)",
            this.oldest_age.clone(),
        );
        metrics.register(
            "outbox_dead_letters",
            "Rows parked in outbox_dead_letters (sampled every 5 s)",
            this.dead_letters.clone(),
        );
        this
    }

    /// Instruments in no registry.
    pub fn unregistered() -> Self {
        Self {
            relayed: Counter::default(),
            dead_lettered: Counter::default(),
            // 1 ms .. ~4 s
            batch_duration: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            depth: Gauge::default(),
            oldest_age: Gauge::default(),
            dead_letters: Gauge::default(),
        }
    }

    /// Reads the outbox's depth, oldest age and dead letters once.
    pub async fn sample(&self, pool: &Pool) -> anyhow::Result<()> {
        let client = pool.get().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM outbox),
                        (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(create_time)), 0)::float8
                           FROM outbox),
                        (SELECT count(*) FROM outbox_dead_letters)",
                &[],
            )
            .await?;
        self.depth.set(row.get::<_, i64>(0));
        self.oldest_age.set(row.get::<_, f64>(1).max(0.0));
        self.dead_letters.set(row.get::<_, i64>(2));
        Ok(())
    }

    /// [`Self::sample`] every [`SAMPLE_EVERY`] until `stop`.
    pub async fn sample_until(self, pool: Pool, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(err) = self.sample(&pool).await {
                tracing::debug!(error = format!("{err:#}"), "sampling the outbox failed");
            }
        }
    }
}
