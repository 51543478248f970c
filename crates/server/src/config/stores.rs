//! The stores: PostgreSQL (`postgres`) and the Redis Cluster (`redis`), with their
//! credentials and TLS.

use std::{path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Settings};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user[:password]@host:port/db`; kept secret because it may hold a password.
    pub url: SecretString,
    /// A file whose content (without a trailing newline) replaces `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    pub pool_size: usize,
    /// How long a request may wait for a pooled connection (and for a new one to connect).
    pub connect_timeout_ms: u64,
    /// Server-side `statement_timeout` for every pooled connection.
    pub statement_timeout_ms: u64,
    /// TLS to PostgreSQL: `disable`, `require` (encrypted, the certificate not checked) or
    /// `verify-full` (the certificate must chain to `tls_ca_file`, else to the platform's
    /// roots, and name the host of the URL). Decides alone: an `sslmode` in the URL that says
    /// otherwise is refused.
    #[serde(default)]
    pub tls: PostgresTls,
    /// PEM file of the CA(s) that `verify-full` trusts instead of the platform's roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

impl PostgresSettings {
    /// Only `url` set, everything else as the defaults say: for tools and tests that connect
    /// to one database.
    pub fn from_url(url: impl Into<String>) -> Self {
        let mut settings = Settings::load_from(None, std::iter::empty())
            .expect("the built-in defaults are valid")
            .postgres;
        settings.url = SecretString::from(url.into());
        settings
    }

    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.pool_size == 0 {
            return bad("postgres.pool_size", "must be at least 1");
        }
        // The parser's messages name the option or the position, never the URL's text.
        let url: tokio_postgres::Config = self
            .url()
            .parse()
            .map_err(|e| ConfigError(format!("postgres.url: not a valid PostgreSQL URL: {e}")))?;
        use tokio_postgres::config::SslMode;
        match (url.get_ssl_mode(), self.tls) {
            (SslMode::Require, PostgresTls::Disable) => {
                return bad(
                    "postgres.url",
                    "sets sslmode=require: set postgres.tls (require or verify-full) instead",
                )
            }
            (SslMode::Disable, PostgresTls::Require | PostgresTls::VerifyFull) => {
                return bad(
                    "postgres.url",
                    "sets sslmode=disable, but postgres.tls asks for TLS",
                )
            }
            _ => {}
        }
        if self.tls_ca_file.is_some() && self.tls != PostgresTls::VerifyFull {
            return bad(
                "postgres.tls_ca_file",
                "is only used with postgres.tls = \"verify-full\"",
            );
        }
        Ok(())
    }
}

/// `postgres.tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    #[default]
    Disable,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Seed nodes of the Redis Cluster, `host:port`; the rest is discovered.
    pub nodes: Vec<String>,
    /// Prefix put before every key (outside the hash tag), so several deployments or test runs can
    /// share one cluster without seeing each other's keys. Empty in production.
    pub namespace: String,
    /// Per-command timeout; also bounds how long one node may hold up a read.
    pub command_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// The ACL user to `AUTH` as; without it the password is the `default` user's.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// A file whose content (without a trailing newline) replaces `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS to every node; certificates must chain to `tls_ca_file`, else to the platform's
    /// roots, and name the node's address as the cluster reports it.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA(s) trusted instead of the platform's roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

impl RedisSettings {
    pub fn password(&self) -> Option<&str> {
        self.password.as_ref().map(ExposeSecret::expose_secret)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.nodes.is_empty() {
            return bad("redis.nodes", "needs at least one host:port");
        }
        for node in &self.nodes {
            let valid = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return bad("redis.nodes", &format!("{node:?} is not host:port"));
            }
        }
        if self.command_timeout_ms == 0 {
            return bad("redis.command_timeout_ms", "must be positive");
        }
        if self.username.is_some() && self.password.is_none() {
            return bad(
                "redis.username",
                "needs redis.password (or redis.password_file)",
            );
        }
        if self.tls_ca_file.is_some() && !self.tls {
            return bad("redis.tls_ca_file", "is only used with redis.tls = true");
        }
        Ok(())
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}
