//! Keeping the Redis Cluster in step with PostgreSQL: the fast path (right after commit) and
//! the relay (whatever the fast path left in the outbox).
//!
//! The fast path applies a committed change at once and hands its outbox row to a background
//! task that deletes delivered rows in batches (one small transaction per batch, not one per
//! request). If Redis does not take the change, or the process dies first, the row stays and
//! the relay re-drives it. Every change is idempotent and versioned (see
//! `shardfeed_core::cache`), so delivering one twice, or two out of order, is harmless.

use std::time::Duration;

use deadpool_postgres::Pool;
use fred::interfaces::ClientLike;
use shardfeed_core::{
    cache::{CacheChange, CacheWriter},
    config::OutboxSettings,
};
use tokio::sync::{mpsc, watch};

use crate::store::outbox;

/// How long a request waits for its own cache warm before leaving it to the relay.
const FAST_PATH_BUDGET: Duration = Duration::from_millis(250);

/// Applies committed changes right away; shared by every handler.
#[derive(Clone)]
pub struct CacheSync {
    writer: CacheWriter,
    fast_path: bool,
    delivered: mpsc::UnboundedSender<i64>,
}

/// The background tasks of [`CacheSync`]: the batch deleter and the relay.
pub struct CacheSyncTasks {
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

/// Delivered outbox ids on their way from the fast path to the batch deleter.
pub struct Delivered(mpsc::UnboundedReceiver<i64>);

impl CacheSync {
    /// The fast path, and the receiving end that [`CacheSyncTasks::spawn`] drains.
    pub fn new(writer: CacheWriter, settings: &OutboxSettings) -> (Self, Delivered) {
        let (delivered, receiver) = mpsc::unbounded_channel();
        (
            Self {
                writer,
                fast_path: settings.fast_path_enabled,
                delivered,
            },
            Delivered(receiver),
        )
    }

    /// Applies the change of a committed write. Never fails the request: PostgreSQL already
    /// holds the truth and the outbox row guarantees delivery.
    pub async fn after_commit(&self, pending: Option<(i64, CacheChange)>) {
        let Some((outbox_id, change)) = pending else {
            return;
        };
        if !self.fast_path || !self.writer.client().is_connected() {
            return;
        }
        // A node in trouble must not slow acknowledged writes down by more than this.
        let durable = self.writer.apply_durably(std::slice::from_ref(&change));
        let outcome = match tokio::time::timeout(FAST_PATH_BUDGET, durable).await {
            Ok(mut results) => results
                .pop()
                .expect("one result per change")
                .map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {FAST_PATH_BUDGET:?}")),
        };
        match outcome {
            Ok(()) => {
                let _ = self.delivered.send(outbox_id);
            }
            Err(error) => {
                tracing::warn!(
                    outbox_id,
                    error,
                    "cache warm failed; the outbox relay will retry"
                );
            }
        }
    }
}

impl CacheSyncTasks {
    /// Starts the batch deleter and, when `settings.relay_enabled`, the relay.
    pub fn spawn(
        pool: Pool,
        writer: CacheWriter,
        settings: &OutboxSettings,
        delivered: Delivered,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut handles = vec![tokio::spawn(delete_delivered(
            pool.clone(),
            delivered.0,
            stopped.clone(),
        ))];
        if settings.relay_enabled {
            handles.push(tokio::spawn(relay(pool, writer, settings.clone(), stopped)));
        }
        Self { stop, handles }
    }

    /// Stops the relay and flushes the pending deletions.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            if tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .is_err()
            {
                tracing::warn!("a cache sync task did not stop within 5 s");
            }
        }
    }
}

/// Deletes delivered outbox rows in batches.
async fn delete_delivered(
    pool: Pool,
    mut delivered: mpsc::UnboundedReceiver<i64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(4096);
    loop {
        let received = tokio::select! {
            n = delivered.recv_many(&mut batch, 4096) => n,
            // Stopping: flush what already arrived, then end.
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                while let Ok(id) = delivered.try_recv() {
                    batch.push(id);
                }
                if !batch.is_empty() {
                    let _ = outbox::remove(&pool, &batch).await;
                }
                return;
            }
        };
        if received == 0 {
            return;
        }
        // Let a burst accumulate: one DELETE for many requests.
        tokio::time::sleep(Duration::from_millis(5)).await;
        while batch.len() < 4096 {
            match delivered.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        if let Err(err) = outbox::remove(&pool, &batch).await {
            // The rows stay; the relay will re-apply them (idempotently) and delete them.
            tracing::warn!(rows = batch.len(), error = %err, "deleting delivered outbox rows failed");
        }
        batch.clear();
    }
}

/// Re-drives outbox rows older than the grace period until Redis takes them. Several ingest
/// replicas can run it at once: rows are claimed with `FOR UPDATE SKIP LOCKED`. It keeps no
/// position, so a row that commits late (with a lower id than rows already relayed) is still
/// found.
async fn relay(
    pool: Pool,
    writer: CacheWriter,
    settings: OutboxSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = settings.relay_interval();
    loop {
        let outcome = relay_once(&pool, &writer, &settings).await;
        let pause = match outcome {
            Ok(claimed) if claimed == settings.batch_size => Duration::ZERO,
            Ok(_) => {
                backoff = settings.relay_interval();
                settings.relay_interval()
            }
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "outbox relay round failed");
                backoff = (backoff * 2).min(Duration::from_secs(10));
                backoff
            }
        };
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One relay round: claim a batch, apply it, settle it. Returns how many rows it claimed.
pub async fn relay_once(
    pool: &Pool,
    writer: &CacheWriter,
    settings: &OutboxSettings,
) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let pending = outbox::claim(&tx, settings.batch_size as i64, settings.grace_ms as i64).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(pending.len());
    let mut changes = Vec::with_capacity(pending.len());
    let mut failed = Vec::new();
    for row in &pending {
        match &row.change {
            Ok(change) => {
                ids.push(row.id);
                changes.push(change.clone());
            }
            // A row this version cannot read: keep it for an operator, don't block the rest.
            Err(err) => failed.push((row.id, format!("undecodable change: {err}"))),
        }
    }
    let results = writer.apply_durably(&changes).await;
    let mut delivered = Vec::with_capacity(ids.len());
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(()) => delivered.push(id),
            Err(err) => failed.push((id, err.to_string())),
        }
    }
    outbox::settle(&tx, &delivered, &failed).await?;
    tx.commit().await?;
    if !delivered.is_empty() {
        tracing::info!(
            delivered = delivered.len(),
            failed = failed.len(),
            "outbox relay delivered changes"
        );
    } else if !failed.is_empty() {
        tracing::warn!(
            failed = failed.len(),
            "outbox relay could not deliver; will retry"
        );
    }
    Ok(pending.len())
}
