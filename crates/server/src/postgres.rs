//! PostgreSQL: the connection pool and the schema migrations (refinery, `migrations/`).

use std::str::FromStr;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::PostgresSettings;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Arbitrary but fixed key of the advisory lock that serializes migrations across replicas.
const MIGRATION_LOCK_KEY: i64 = 0x5348_4152_4446_4545; // "SHARDFEE"

/// Builds the pool. Connections are made lazily, so this succeeds while PostgreSQL is down;
/// requests then fail with `UNAVAILABLE` until it is back.
pub fn pool(settings: &PostgresSettings) -> anyhow::Result<Pool> {
    let mut config = tokio_postgres::Config::from_str(settings.url())
        .context("postgres.url is not a valid PostgreSQL URL")?;
    config.connect_timeout(settings.connect_timeout());
    config.options(format!(
        "-c statement_timeout={}",
        settings.statement_timeout_ms
    ));
    if config.get_application_name().is_none() {
        config.application_name("shardfeed");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(settings.connect_timeout()))
        .create_timeout(Some(settings.connect_timeout()))
        .recycle_timeout(Some(settings.connect_timeout()))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the PostgreSQL pool")
}

/// Applies every pending migration of `migrations/`. Safe to run from several processes at
/// once: an advisory lock makes them take turns, and each applies only what is still missing.
pub async fn run_migrations(url: &str) -> anyhow::Result<Vec<String>> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL to migrate")?;
    let conn_task = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "migration connection closed with an error");
        }
    });
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .context("applying migrations");
    // Unlocking also happens when the session ends; do it explicitly to be prompt.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    drop(client);
    let _ = conn_task.await;
    let applied = report?
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    Ok(applied)
}
