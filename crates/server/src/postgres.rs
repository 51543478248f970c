//! PostgreSQL: the connection pool, single connections and the schema migrations (refinery,
//! `migrations/`), all with the TLS that `postgres.tls` asks for.

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PostgresSettings, PostgresTls};
use crate::store_tls as tls;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Arbitrary but fixed key of the advisory lock that serializes migrations across replicas.
const MIGRATION_LOCK_KEY: i64 = 0x5348_4152_4446_4545; // "SHARDFEE"

/// What every connection to PostgreSQL is made with: rustls, used as `postgres.tls` says.
pub type Tls = MakeRustlsConnect;

/// `postgres.url` parsed, with `sslmode` as `postgres.tls` says and `postgres.connect_timeout_ms`.
pub fn client_config(settings: &PostgresSettings) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = settings
        .url()
        .parse()
        .context("postgres.url is not a valid PostgreSQL URL")?;
    config.connect_timeout(settings.connect_timeout());
    config.ssl_mode(match settings.tls {
        PostgresTls::Disable => SslMode::Disable,
        PostgresTls::Require | PostgresTls::VerifyFull => SslMode::Require,
    });
    Ok(config)
}

/// The TLS connector of `postgres.tls`: none is used with `disable` (sslmode=disable); with
/// `require` any certificate is accepted; with `verify-full` it must chain to
/// `postgres.tls_ca_file` (else the platform's roots) and name the URL's host.
pub fn tls(settings: &PostgresSettings) -> anyhow::Result<Tls> {
    let config = match settings.tls {
        PostgresTls::Disable => tls::trusting_nothing()?,
        PostgresTls::Require => tls::unverified()?,
        PostgresTls::VerifyFull => {
            tls::verifying(settings.tls_ca_file.as_deref(), "postgres.tls_ca_file")?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// One connection per `config` (a [`client_config`], maybe adjusted), with the TLS of
/// `settings`; a task on the current runtime drives it until the client is dropped.
pub async fn connect_with(
    config: &tokio_postgres::Config,
    settings: &PostgresSettings,
) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = config.connect(tls(settings)?).await.map_err(explain)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "a PostgreSQL connection closed with an error");
        }
    });
    Ok(client)
}

/// [`connect_with`] the settings' own [`client_config`].
pub async fn connect(settings: &PostgresSettings) -> anyhow::Result<tokio_postgres::Client> {
    connect_with(&client_config(settings)?, settings).await
}

/// A refused login says so, and where the credentials come from.
fn explain(err: tokio_postgres::Error) -> anyhow::Error {
    let refused = err.code().is_some_and(|code| {
        *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    });
    let err = anyhow::Error::new(err);
    if refused {
        err.context(
            "PostgreSQL authentication failed: check the user and password in postgres.url \
             (or postgres.url_file)",
        )
    } else {
        err.context("connecting to PostgreSQL")
    }
}

/// Builds the pool. Connections are made lazily, so this succeeds while PostgreSQL is down;
/// requests then fail with `UNAVAILABLE` until it is back.
pub fn pool(settings: &PostgresSettings) -> anyhow::Result<Pool> {
    let mut config = client_config(settings)?;
    config.options(format!(
        "-c statement_timeout={}",
        settings.statement_timeout_ms
    ));
    if config.get_application_name().is_none() {
        config.application_name("shardfeed");
    }
    crate::spans::set_postgres_server(&config);
    let manager = Manager::from_config(
        config,
        tls(settings)?,
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
pub async fn run_migrations(settings: &PostgresSettings) -> anyhow::Result<Vec<String>> {
    let mut client = connect(settings)
        .await
        .context("connecting to PostgreSQL to migrate")?;
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
    let applied = report?
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    Ok(applied)
}
