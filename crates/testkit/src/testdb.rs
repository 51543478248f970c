//! One fresh, migrated database per test, copied from a template migrated once per server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use anyhow::Context;
use rand::Rng;
use shardfeed_server::config::PostgresSettings;
use tokio_postgres::Client;

use crate::postgres::PgServer;
use crate::shared::try_shared;

/// Migrated once per server; every [`TestDb`] is a copy of it.
const TEMPLATE: &str = "shardfeed_template";

/// An isolated database with the project's schema: `CREATE DATABASE <unique> TEMPLATE
/// shardfeed_template`, where the template was migrated once by
/// `shardfeed_server::postgres::run_migrations`.
///
/// Dropping it drops the database (`WITH (FORCE)`, ending sessions still connected), so disk use
/// stays bounded however many tests run; errors there are ignored, e.g. when the test stopped
/// its server.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDb {
    /// A database on the process-wide [`crate::shared`] server. Needs a tokio runtime.
    pub async fn new() -> anyhow::Result<TestDb> {
        // Starting the shared stores blocks for seconds: keep it off the async worker.
        let stores = tokio::task::spawn_blocking(try_shared)
            .await
            .context("starting the shared stores")??;
        TestDb::on(&stores.pg).await
    }

    /// A database on `pg`, for tests that stop or restart their own server. Needs a tokio
    /// runtime.
    pub async fn on(pg: &PgServer) -> anyhow::Result<TestDb> {
        // Racing callers wait here for the one that migrates.
        pg.template
            .get_or_try_init(|| create_template(pg))
            .await
            .context("preparing the migrated template database")?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "test_{}_{:06x}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::thread_rng().gen_range(0..0x100_0000u32)
        );
        let admin_url = pg.url("postgres");
        {
            // Two copies of one template at once fail with "source database is being accessed".
            let _copying = pg.copy_lock.lock().await;
            let admin = connect(&admin_url).await?;
            admin
                .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
                .await
                .with_context(|| format!("creating database {name} from {TEMPLATE}"))?;
        }
        Ok(TestDb {
            url: pg.url(&name),
            name,
            admin_url,
        })
    }

    /// `postgres://shardfeed:{password}@127.0.0.1:{port}/{name}`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's settings (`postgres.url`, the rest as the defaults say), for connecting
    /// as the services do ([`shardfeed_server::postgres::connect`]).
    pub fn settings(&self) -> PostgresSettings {
        PostgresSettings::from_url(self.url.clone())
    }

    /// One connection to the database, as the services make them.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        connect(&self.url).await
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // A runtime of its own on a thread of its own: Drop cannot await, and may run inside
        // (or outside) the test's runtime.
        let dropped = thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                connect(&admin_url).await?.batch_execute(&statement).await?;
                Ok(())
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            tracing::debug!(database = %self.name, error = %err, "could not drop a test database");
        }
    }
}

/// Creates and migrates the template, unless a previous run on this server completed it (it is
/// marked a template only at the very end).
async fn create_template(pg: &PgServer) -> anyhow::Result<()> {
    let admin = connect(&pg.url("postgres")).await?;
    let existing = admin
        .query_opt(
            "SELECT datistemplate FROM pg_database WHERE datname = $1",
            &[&TEMPLATE],
        )
        .await?;
    match existing.map(|row| row.get::<_, bool>(0)) {
        Some(true) => return Ok(()),
        // Half-made by a failed or cancelled attempt: start over.
        Some(false) => {
            admin
                .batch_execute(&format!("DROP DATABASE {TEMPLATE} WITH (FORCE)"))
                .await?
        }
        None => {}
    }
    admin
        .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
        .await
        .context("creating the template database")?;
    shardfeed_server::postgres::run_migrations(&PostgresSettings::from_url(pg.url(TEMPLATE)))
        .await
        .context("migrating the template database")?;
    // CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template: refuse new
    // sessions and end any the migration left behind.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {TEMPLATE} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"
        ))
        .await?;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&TEMPLATE],
        )
        .await?;
    Ok(())
}

/// Connects with a bounded timeout; the connection is driven by a task on the current runtime.
/// Errors name the database, not the URL (it holds the password).
async fn connect(url: &str) -> anyhow::Result<Client> {
    let mut settings = PostgresSettings::from_url(url);
    settings.connect_timeout_ms = 10_000;
    let config = shardfeed_server::postgres::client_config(&settings)?;
    let database = config.get_dbname().unwrap_or_default().to_owned();
    shardfeed_server::postgres::connect_with(&config, &settings)
        .await
        .with_context(|| format!("connecting to database {database}"))
}
