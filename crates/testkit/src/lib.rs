//! Real stores for shardfeed's integration tests and its local stack: PostgreSQL servers, Redis
//! Clusters, migrated per-test databases, per-test key namespaces, and waiting for health.
//!
//! Tests never mock the stores. Every test server runs as a child process on a free port under
//! `$TMPDIR/shardfeed-testkit/`, and none outlives the test process, even one that panics,
//! aborts or is SIGKILLed: each is forked from a single long-lived thread with
//! `PR_SET_PDEATHSIG` set, so the kernel signals it when the test process ends. The directories
//! of dead test processes are removed by the next one.
//!
//! A service binary under test can run the same way, as a [`ServiceProcess`] (for what is global
//! to a process, such as the tracing subscriber): it dies with the test process too.
//!
//! The same supervisors run the local stack (`shardfeed dev`) in their kept mode
//! ([`PgServer::start_kept`], [`RedisCluster::start_kept`]): fixed ports, data kept, processes
//! in a session of their own that outlive the command, each recorded in a [`StateDir`] (pid,
//! start time, port, data dir) so that later commands find, pause and stop exactly them.
//!
//! The stores are authenticated as in production: PostgreSQL with scram-sha-256 and a password
//! for its superuser (in every URL handed out), the Redis nodes with an ACL user alone
//! ([`RedisCredentials`]; [`RedisCluster::settings_env`] gives a service's settings). A test's
//! server or cluster gets a random password; a kept one (the local stack) the caller's. For TLS
//! tests, [`PgServer::start_tls`], [`RedisCluster::start_tls`] and [`TestCertificates`].
//!
//! Needs `redis-server` and `redis-cli` (7.x) on `PATH` and PostgreSQL's binaries in
//! `/usr/lib/postgresql/15/bin` (or `$SFDEV_PG_BINDIR`). As root, PostgreSQL runs as the
//! `postgres` OS user, since it refuses to run as root.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let db = shardfeed_testkit::TestDb::new().await?; // fresh, migrated, on the shared server
//! let redis = &shardfeed_testkit::shared().redis; // shared cluster: prefix your keys
//! let ns = shardfeed_testkit::unique_namespace();
//! # let _ = (db.url(), redis.seed_nodes(), ns);
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod dirs;
mod poll;
mod ports;
mod postgres;
mod process;
mod redis;
pub mod reflection;
mod resp;
mod scrape;
mod server;
mod service;
mod shared;
mod spawner;
mod state;
mod sys;
mod testdb;
pub mod tls;

pub use dirs::{base_dir, log_tail, remove_stale_dirs};
pub use poll::{eventually, health, wait_for_health, ServingStatus};
pub use postgres::{kept_data_dir, PgServer, BINDIR_VAR};
pub use process::{ProcState, ProcessId};
pub use redis::{RedisCluster, RedisCredentials, RedisNode};
pub use scrape::{scrape, Exposition, Format};
pub use server::{endpoint, InProcessServer, Shutdown};
pub use service::ServiceProcess;
pub use shared::{shared, unique_namespace, SharedStores};
pub use state::{Record, StateDir};
pub use testdb::TestDb;
pub use tls::TestCertificates;
