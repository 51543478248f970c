//! The closed-loop load driver of every `shardfeed bench`: N workers, each issuing one request
//! after the other, a warm-up that is not recorded, then a measured window.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::record::{OpError, Record};
use super::summary::Summary;

/// No request may take longer than this; one that does counts as a `Timeout` error.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker's request: each worker owns its own `Op` (its connection, its random source).
pub trait Op: Send + 'static {
    fn call(&mut self) -> impl Future<Output = Result<(), OpError>> + Send;
}

/// Timing of a phase.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
}

#[derive(Default)]
struct Progress {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// Runs one `Op` per worker, all at once: `timing.warmup` unrecorded, then `timing.duration`
/// measured. A request counts when it completes inside the measured window; its latency is
/// taken with `Instant` around the call. Progress goes to stderr.
pub async fn closed_loop<O: Op>(
    label: &str,
    ops: Vec<O>,
    timing: Timing,
) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let measure_start = start + timing.warmup;
    let end = measure_start + timing.duration;
    let progress = Arc::new(Progress::default());

    // Dropping the set (an interrupted run) aborts every worker.
    let mut workers = JoinSet::new();
    for op in ops {
        workers.spawn(worker(op, measure_start, end, progress.clone()));
    }
    let done = CancellationToken::new();
    let reporter = tokio::spawn(done.clone().run_until_cancelled_owned(report_progress(
        label.to_owned(),
        timing,
        measure_start,
        progress.clone(),
    )));

    let mut total = Record::default();
    while let Some(record) = workers.join_next().await {
        total.merge(record.context("a bench worker panicked")?);
    }
    done.cancel();
    let _ = reporter.await;
    Ok(Summary::new(label, total, timing.duration))
}

/// `call`, bounded by [`OP_TIMEOUT`]: an answer that does not come in time is a `Timeout`.
pub async fn within_timeout(
    call: impl Future<Output = Result<(), OpError>>,
) -> Result<(), OpError> {
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(OpError::new(
            "Timeout",
            format!("no answer within {} s", OP_TIMEOUT.as_secs()),
        )),
    }
}

async fn worker<O: Op>(
    mut op: O,
    measure_start: Instant,
    end: Instant,
    progress: Arc<Progress>,
) -> Record {
    let mut record = Record::default();
    loop {
        let t0 = Instant::now();
        let result = within_timeout(op.call()).await;
        let t1 = Instant::now();
        if t1 >= end {
            break;
        }
        if t1 >= measure_start {
            let counter = if result.is_ok() {
                &progress.ok
            } else {
                &progress.errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
            record.record(result, t1 - t0);
        }
    }
    record
}

async fn report_progress(
    label: String,
    timing: Timing,
    measure_start: Instant,
    progress: Arc<Progress>,
) {
    if !timing.warmup.is_zero() {
        eprintln!(
            "  {label}: warming up for {:.1} s",
            timing.warmup.as_secs_f64()
        );
    }
    tokio::time::sleep_until(measure_start.into()).await;
    eprintln!(
        "  {label}: measuring for {:.1} s",
        timing.duration.as_secs_f64()
    );
    let mut ticker = tokio::time::interval_at(
        (measure_start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut last_ok = 0;
    loop {
        ticker.tick().await;
        let ok = progress.ok.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        eprintln!(
            "  {label}: {:>4.0} s  {:>7} ok/s  {errors} errors so far",
            measure_start.elapsed().as_secs_f64(),
            ok - last_ok
        );
        last_ok = ok;
    }
}
