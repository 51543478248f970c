//! Shutdown: SIGINT or SIGTERM starts a graceful one ([`signal`]); a service's background
//! tasks run on one `TaskTracker` and stop on one `CancellationToken` ([`stop_tasks`]).

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long a service waits for its background tasks once asked to stop.
pub const TASKS_GRACE: Duration = Duration::from_secs(5);

/// Cancels `stop` and waits for every task of `tasks`, at most `grace`; says so when some
/// did not end in time.
pub async fn stop_tasks(stop: &CancellationToken, tasks: &TaskTracker, grace: Duration) {
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            left = tasks.len(),
            grace_ms = grace.as_millis() as u64,
            "background tasks did not stop in time"
        );
    }
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM and says which one came.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}
