//! What every command that talks to a running stack shares: the flags that name the services
//! and PostgreSQL, gRPC channels shared round-robin by workers, PostgreSQL connections, and the
//! `OpError` a failed call is recorded as.

use std::time::Duration;

use anyhow::Context;
use shardfeed_server::config::PostgresSettings;
use shardfeed_server::Settings;
use tonic::transport::Channel;

use crate::measure::driver::OP_TIMEOUT;
use crate::measure::OpError;

/// The env knobs of `--ingest` and `--aggregator`. Not `SHARDFEED_*`: every such variable is a
/// setting, and an unknown one stops the settings from loading. `shardfeed dev env` sets them.
pub const INGEST_URL_VAR: &str = "SFDEV_INGEST_URL";
pub const AGGREGATOR_URL_VAR: &str = "SFDEV_AGGREGATOR_URL";

/// `--ingest`: the ingest service.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestFlag {
    /// The ingest service.
    #[arg(
        id = "ingest",
        long = "ingest",
        value_name = "INGEST",
        default_value = "http://127.0.0.1:50051",
        env = INGEST_URL_VAR
    )]
    pub url: String,
}

/// `--aggregator`: the aggregator service.
#[derive(clap::Args, Debug, Clone)]
pub struct AggregatorFlag {
    /// The aggregator service.
    #[arg(
        id = "aggregator",
        long = "aggregator",
        value_name = "AGGREGATOR",
        default_value = "http://127.0.0.1:50052",
        env = AGGREGATOR_URL_VAR
    )]
    pub url: String,
}

/// `--postgres-url`: the stack's PostgreSQL, for what a command reads or writes beside the API.
#[derive(clap::Args, Debug, Clone)]
pub struct PostgresFlag {
    /// The stack's PostgreSQL [default: postgres.url of the settings, i.e.
    /// SHARDFEED_POSTGRES__URL or the local stack's]. TLS as postgres.tls says.
    #[arg(
        id = "postgres_url",
        long = "postgres-url",
        value_name = "POSTGRES_URL"
    )]
    pub url: Option<String>,
}

impl PostgresFlag {
    /// The flag's URL, else the settings' one; TLS and timeouts from the settings.
    pub fn config(&self, settings: &Settings) -> anyhow::Result<PostgresTarget> {
        postgres_target(&settings.postgres, self.url.as_deref())
    }
}

/// Where and how the CLI connects to PostgreSQL: the parsed URL, and the settings whose TLS
/// it is made with.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub config: tokio_postgres::Config,
    settings: PostgresSettings,
}

/// HTTP/2 connections to one service, handed out round-robin to the workers.
#[derive(Debug, Clone)]
pub struct Channels(Vec<Channel>);

impl Channels {
    /// `count` channels to `endpoint`, each its own HTTP/2 connection; `service` names it in
    /// the error when it cannot be reached.
    pub async fn connect(endpoint: &str, count: usize, service: &str) -> anyhow::Result<Self> {
        let endpoint = Channel::from_shared(endpoint.to_owned())
            .with_context(|| format!("{endpoint} is not a valid endpoint"))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(OP_TIMEOUT)
            .tcp_nodelay(true);
        let mut channels = Vec::with_capacity(count);
        for _ in 0..count {
            // One `connect` per channel: each is its own HTTP/2 connection.
            channels.push(endpoint.connect().await.with_context(|| {
                format!(
                    "cannot reach the {service} at {}; is the stack up (deploy/local/up.sh)?",
                    endpoint.uri()
                )
            })?);
        }
        Ok(Channels(channels))
    }

    /// The channel of worker `i`: the channels in turn.
    pub fn get(&self, i: usize) -> Channel {
        self.0[i % self.0.len()].clone()
    }

    /// The first `n` channels alone.
    pub fn first(&self, n: usize) -> Channels {
        Channels(self.0[..n.min(self.0.len())].to_vec())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A failed gRPC call: kind is its code.
pub fn status_error(status: &tonic::Status) -> OpError {
    OpError::new(format!("{:?}", status.code()), status.message())
}

/// `Code: message`, or the code alone when the message is empty.
pub fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// A failed PostgreSQL call: kind is its SQLSTATE when the server answered.
pub fn pg_error(err: tokio_postgres::Error) -> OpError {
    match err.as_db_error() {
        Some(db) => OpError::new(format!("SQLSTATE {}", db.code().code()), db.message()),
        None if err.is_closed() => OpError::new("ConnectionClosed", err.to_string()),
        None => OpError::new("Postgres", format!("{err:#}")),
    }
}

/// `settings` with `url` instead of theirs (the settings' own when `None`).
pub fn postgres_target(
    settings: &PostgresSettings,
    url: Option<&str>,
) -> anyhow::Result<PostgresTarget> {
    let mut settings = settings.clone();
    if let Some(url) = url {
        settings.url = url.to_owned().into();
    }
    let mut config = shardfeed_server::postgres::client_config(&settings)
        .context("the PostgreSQL URL (--postgres-url or postgres.url) is not valid")?;
    config.connect_timeout(settings.connect_timeout().max(Duration::from_secs(3)));
    config.application_name("shardfeed-cli");
    Ok(PostgresTarget { config, settings })
}

/// host:port/db of the target, without the password.
pub fn describe_postgres(target: &PostgresTarget) -> String {
    let config = &target.config;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => return "(from the given URL)".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

pub async fn connect_postgres(target: &PostgresTarget) -> anyhow::Result<tokio_postgres::Client> {
    shardfeed_server::postgres::connect_with(&target.config, &target.settings)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}; is the stack up (deploy/local/up.sh)?",
                describe_postgres(target)
            )
        })
}

/// The stack's Redis Cluster, as its services see it.
pub async fn connect_redis(settings: &Settings) -> anyhow::Result<fred::clients::Client> {
    shardfeed_server::redis::connect_and_wait(&settings.redis, Duration::from_secs(10))
        .await
        .context("cannot reach the Redis Cluster; is the stack up (deploy/local/up.sh)?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_is_described_without_the_password() {
        let defaults = PostgresSettings::from_url("postgres://shardfeed@127.0.0.1/shardfeed");
        let target = postgres_target(
            &defaults,
            Some("postgres://me:secret@db.example:6543/feeds"),
        )
        .unwrap();
        assert_eq!(describe_postgres(&target), "db.example:6543/feeds");
        assert_eq!(
            target.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert!(!format!("{target:?}").contains("secret"));
        assert!(postgres_target(&defaults, Some("not a url")).is_err());
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        ingest: IngestFlag,
        #[command(flatten)]
        aggregator: AggregatorFlag,
    }

    /// The only test that sets these variables (the environment is shared by the test threads).
    #[test]
    fn the_service_knobs_are_honoured_and_leave_the_settings_loadable() {
        use clap::Parser;
        let defaults = Flags::parse_from(["t"]);
        assert_eq!(defaults.ingest.url, "http://127.0.0.1:50051");
        std::env::set_var(INGEST_URL_VAR, "http://127.0.0.1:50081");
        std::env::set_var(AGGREGATOR_URL_VAR, "http://127.0.0.1:50082");
        let flags = Flags::parse_from(["t"]);
        let settings = Settings::load();
        std::env::remove_var(INGEST_URL_VAR);
        std::env::remove_var(AGGREGATOR_URL_VAR);
        assert_eq!(flags.ingest.url, "http://127.0.0.1:50081");
        assert_eq!(flags.aggregator.url, "http://127.0.0.1:50082");
        settings.expect("the knobs are no settings");
        // A flag still wins over its knob.
        let flags = Flags::parse_from(["t", "--ingest", "http://elsewhere:1"]);
        assert_eq!(flags.ingest.url, "http://elsewhere:1");
    }

    #[test]
    fn statuses_become_errors_by_code() {
        let err = status_error(&tonic::Status::unavailable("down"));
        assert_eq!(
            (err.kind.as_str(), err.message.as_str()),
            ("Unavailable", "down")
        );
        assert_eq!(status_text(&tonic::Status::not_found("")), "NotFound");
        assert_eq!(
            status_text(&tonic::Status::internal("boom")),
            "Internal: boom"
        );
    }
}
