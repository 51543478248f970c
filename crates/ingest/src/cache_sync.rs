//! Keeping the Redis Cluster in step with PostgreSQL: the fast path (right after commit) and
//! the relay (whatever the fast path left in the outbox).
//!
//! The fast path applies a committed change at once: requests (and a group commit, for all
//! the posts of its statement as one unit) hand their changes to one warming task, which
//! applies whatever has queued up as one batch (scripts pipelined per node,
//! then one `WAIT` per node for the whole batch) and answers each request. Delivered outbox rows
//! go to a task that deletes them in batches (one small transaction per batch, not one per
//! request). If Redis does not take the change, or the process dies first, the row stays and
//! the relay re-drives it. Every change is idempotent and versioned (see
//! `shardfeed_server::cache`), so delivering one twice, or two out of order, is harmless.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use fred::interfaces::ClientLike;
use shardfeed_cache::{CacheChange, CacheWriter};
use shardfeed_server::{config::OutboxSettings, error::redis_error_is_transient};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{field::Empty, Instrument, Span};

use crate::{metrics::OutboxMetrics, store::outbox};

/// Changes waiting for the warming task; past this the fast path leaves them to the relay.
const WARM_QUEUE: usize = 8192;

/// Committed changes on their way to Redis (one request's, or one group commit's), and who
/// waits for them.
struct Warm {
    items: Vec<(i64, CacheChange)>,
    done: oneshot::Sender<Vec<Result<(), String>>>,
    /// The span of the request that waits: the batch's span continues its trace.
    span: Span,
}

/// Applies committed changes right away; shared by every handler.
#[derive(Clone)]
pub struct CacheSync {
    writer: CacheWriter,
    fast_path: bool,
    /// How long a request waits for its own warm before leaving it to the relay.
    budget: Duration,
    warm: mpsc::Sender<Warm>,
}

/// The queue of the fast path, drained by the warming task of [`spawn_tasks`].
pub struct WarmQueue(mpsc::Receiver<Warm>);

impl CacheSync {
    /// The fast path, and the queue that [`spawn_tasks`] drains.
    pub fn new(writer: CacheWriter, settings: &OutboxSettings) -> (Self, WarmQueue) {
        let (warm, queue) = mpsc::channel(WARM_QUEUE);
        (
            Self {
                writer,
                fast_path: settings.fast_path_enabled,
                budget: settings.fast_path_budget(),
                warm,
            },
            WarmQueue(queue),
        )
    }

    /// Applies the change of a committed write. Never fails the request: PostgreSQL already
    /// holds the truth and the outbox row guarantees delivery.
    pub async fn after_commit(&self, pending: Option<(i64, CacheChange)>) {
        if let Some(pending) = pending {
            self.after_commit_all(vec![pending]).await;
        }
    }

    /// Applies the changes of committed writes (outbox id, change) as one unit: they go to
    /// Redis in the same batch. Returns once they are delivered, or once the relay has them to
    /// deliver (Redis not connected, the warming task saturated, an error, or no answer within
    /// `outbox.fast_path_budget_ms`).
    pub async fn after_commit_all(&self, items: Vec<(i64, CacheChange)>) {
        if items.is_empty() || !self.fast_path || !self.writer.client().is_connected() {
            return;
        }
        let ids: Vec<i64> = items.iter().map(|(id, _)| *id).collect();
        let (done, answer) = oneshot::channel();
        let span = Span::current();
        if self.warm.try_send(Warm { items, done, span }).is_err() {
            return; // the warming task is saturated: the relay will deliver these
        }
        // A node in trouble must not slow acknowledged writes down by more than this.
        let outcomes = match tokio::time::timeout(self.budget, answer).await {
            Ok(Ok(results)) => results,
            Ok(Err(_)) => vec![Err("the warming task stopped".to_owned()); ids.len()],
            Err(_) => vec![Err(format!("no answer within {:?}", self.budget)); ids.len()],
        };
        for (outbox_id, outcome) in ids.into_iter().zip(outcomes) {
            if let Err(error) = outcome {
                tracing::warn!(
                    outbox_id,
                    error,
                    "cache warm failed; the outbox relay will retry"
                );
            }
        }
    }
}

/// Starts the background tasks of [`CacheSync`] on `tasks`: the warming of the fast path's
/// queue (it ends once every [`CacheSync`] is gone and its batches are done), the batch deleter
/// (on `stop` it flushes the deletions that arrived, then ends) and, when
/// `settings.relay_enabled`, the relay (it ends on `stop`).
pub fn spawn_tasks(
    tasks: &TaskTracker,
    stop: &CancellationToken,
    pool: Pool,
    writer: CacheWriter,
    settings: &OutboxSettings,
    queue: WarmQueue,
    metrics: OutboxMetrics,
) {
    let (delivered, delivered_rx) = mpsc::unbounded_channel();
    tasks.spawn(warm_batches(
        writer.clone(),
        queue.0,
        delivered,
        settings.fast_path_batches,
        tasks.clone(),
    ));
    tasks.spawn(delete_delivered(pool.clone(), delivered_rx, stop.clone()));
    tasks.spawn(metrics.clone().sample_until(pool.clone(), stop.clone()));
    if settings.relay_enabled {
        tasks.spawn(relay(pool, writer, settings.clone(), metrics, stop.clone()));
    }
}

/// Applies queued changes in batches, up to `in_flight` batches at once: whatever queued while
/// the batches in flight were out goes together, so under load one `WAIT` per node confirms
/// many writes, and a batch waiting for its replicas does not hold the next one back. Batches
/// may overlap and finish in any order: every change is idempotent and versioned, so their
/// order does not matter (the relay runs beside the fast path for the same reason). Ends when
/// every [`CacheSync`] is gone.
async fn warm_batches(
    writer: CacheWriter,
    mut queue: mpsc::Receiver<Warm>,
    delivered: mpsc::UnboundedSender<i64>,
    in_flight: usize,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut units = Vec::with_capacity(64);
        if queue.recv_many(&mut units, 64).await == 0 {
            return;
        }
        let writer = writer.clone();
        let delivered = delivered.clone();
        // One span per batch: a child of its first request's span, linked to the others'.
        let span = tracing::info_span!(
            parent: &units[0].span,
            "warm",
            otel.name = "cache.warm",
            shardfeed.cache.changes = Empty,
            shardfeed.cache.requests = units.len(),
        );
        for unit in &units[1..] {
            span.follows_from(&unit.span);
        }
        let batch = async move {
            let changes: Vec<CacheChange> = units
                .iter()
                .flat_map(|unit| unit.items.iter().map(|(_, change)| change.clone()))
                .collect();
            Span::current().record("shardfeed.cache.changes", changes.len());
            let mut results = writer.apply_durably(&changes).await;
            // Announced before any request is answered: a reader that hears of it drops its
            // copy. A change whose announcement fails counts as undelivered (the relay applies
            // and announces it again).
            writer.announce_delivered(&changes, &mut results).await;
            let mut results = results.into_iter();
            for unit in units {
                let outcomes: Vec<Result<(), String>> = unit
                    .items
                    .iter()
                    .zip(results.by_ref())
                    .map(|((outbox_id, _), result)| {
                        if result.is_ok() {
                            let _ = delivered.send(*outbox_id);
                        }
                        result.map_err(|e| e.to_string())
                    })
                    .collect();
                let _ = unit.done.send(outcomes);
            }
            drop(slot);
        };
        tasks.spawn(batch.instrument(span));
    }
}

/// Deletes delivered outbox rows in batches.
async fn delete_delivered(
    pool: Pool,
    mut delivered: mpsc::UnboundedReceiver<i64>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(4096);
    loop {
        let received = tokio::select! {
            n = delivered.recv_many(&mut batch, 4096) => n,
            // Stopping: flush what already arrived, then end.
            _ = stop.cancelled() => {
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
/// found. A row that fails waits for its own next attempt (exponential backoff) while the rows
/// behind it go on; a round that delivered nothing pauses likewise.
async fn relay(
    pool: Pool,
    writer: CacheWriter,
    settings: OutboxSettings,
    metrics: OutboxMetrics,
    stop: CancellationToken,
) {
    let mut idle_rounds = 0u32;
    loop {
        let started = std::time::Instant::now();
        let outcome = relay_once(&pool, &writer, &settings).await;
        let pause = match outcome {
            Ok(round) => {
                if round.claimed > 0 {
                    metrics
                        .batch_duration
                        .observe(started.elapsed().as_secs_f64());
                }
                metrics.relayed.inc_by(round.delivered as u64);
                metrics.dead_lettered.inc_by(round.parked as u64);
                if round.claimed > 0 && round.delivered == 0 {
                    idle_rounds += 1;
                } else {
                    idle_rounds = 0;
                }
                if round.claimed == settings.batch_size && round.delivered > 0 {
                    Duration::ZERO
                } else {
                    backoff(&settings, idle_rounds)
                }
            }
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "outbox relay round failed");
                idle_rounds += 1;
                backoff(&settings, idle_rounds)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// The pause after `idle` rounds in a row that delivered nothing: the relay interval, doubled
/// for each such round, at most `outbox.retry_max_ms`.
fn backoff(settings: &OutboxSettings, idle: u32) -> Duration {
    let interval = settings.relay_interval();
    if idle <= 1 {
        return interval;
    }
    interval
        .saturating_mul(1 << (idle - 1).min(16))
        .min(Duration::from_millis(settings.retry_max_ms).max(interval))
}

/// What one relay round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub delivered: usize,
    /// Rows moved to the dead letters.
    pub parked: usize,
}

/// One relay round: claim a batch, apply it, settle it.
pub async fn relay_once(
    pool: &Pool,
    writer: &CacheWriter,
    settings: &OutboxSettings,
) -> anyhow::Result<Round> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Outside the round's span, and so not traced: an idle relay claims nothing twice a
    // second, and only a round that claimed rows is a trace.
    let pending = outbox::claim(&tx, settings.batch_size as i64, settings.grace_ms as i64).await?;
    if pending.is_empty() {
        return Ok(Round::default());
    }
    let span = tracing::info_span!(
        "relay",
        otel.name = "outbox.relay",
        shardfeed.outbox.claimed = pending.len(),
        shardfeed.outbox.delivered = Empty,
        shardfeed.outbox.parked = Empty,
    );
    let round = settle_round(tx, pending, writer, settings)
        .instrument(span.clone())
        .await?;
    span.record("shardfeed.outbox.delivered", round.delivered);
    span.record("shardfeed.outbox.parked", round.parked);
    Ok(round)
}

/// The rest of a round that claimed `pending`: apply the rows, settle them in `tx`.
async fn settle_round(
    tx: deadpool_postgres::Transaction<'_>,
    pending: Vec<outbox::Pending>,
    writer: &CacheWriter,
    settings: &OutboxSettings,
) -> anyhow::Result<Round> {
    let mut ids = Vec::with_capacity(pending.len());
    let mut changes = Vec::with_capacity(pending.len());
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for row in &pending {
        match &row.change {
            // Only the request that created the user marks its keys complete: replayed later,
            // after the keys expired or were lost, it would mark an empty timeline complete
            // while PostgreSQL holds posts. Left to the relay, the user is rebuilt on its first
            // read instead.
            Ok(CacheChange::UserCreated { .. }) => skipped.push(row.id),
            Ok(change) => {
                ids.push(row.id);
                changes.push(change.clone());
            }
            // A row this version cannot read: parked for an operator, the rest go on.
            Err(err) => failed.push(outbox::Failure {
                id: row.id,
                error: format!("undecodable change: {err}"),
                permanent: true,
            }),
        }
    }
    let mut results = writer.apply_durably(&changes).await;
    writer.announce_delivered(&changes, &mut results).await;
    let mut delivered = skipped;
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(()) => delivered.push(id),
            Err(err) => failed.push(outbox::Failure {
                id,
                permanent: !redis_error_is_transient(&err),
                error: err.to_string(),
            }),
        }
    }
    let retry = outbox::Retry {
        base_ms: settings.retry_base_ms,
        max_ms: settings.retry_max_ms,
        max_attempts: settings.max_attempts,
    };
    let parked = outbox::settle(&tx, &delivered, &failed, retry).await?;
    tx.commit().await?;
    for failure in failed.iter().filter(|f| parked.contains(&f.id)) {
        tracing::error!(
            outbox_id = failure.id,
            error = failure.error,
            "outbox row failed for good; parked in outbox_dead_letters"
        );
    }
    if !delivered.is_empty() {
        tracing::info!(
            delivered = delivered.len(),
            failed = failed.len(),
            "outbox relay delivered changes"
        );
    } else if !failed.is_empty() {
        tracing::warn!(
            failed = failed.len(),
            error = failed[0].error,
            "outbox relay could not deliver; each row retries on its own schedule"
        );
    }
    Ok(Round {
        claimed: pending.len(),
        delivered: delivered.len(),
        parked: parked.len(),
    })
}
