//! The Redis Cluster client (fred): one multiplexed connection per cluster node, with cluster
//! topology discovery, reconnection with backoff and bounded command timeouts.

use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use fred::types::config::{
    ClusterDiscoveryPolicy, Server, ServerConfig, TlsConfig, TlsConnector, TlsHostMapping,
    UnresponsiveConfig,
};

use crate::config::RedisSettings;

/// Builds the cluster client and starts connecting in the background. It does not wait for the
/// cluster: a service starts (not ready) while Redis is down and becomes ready when it answers.
pub fn connect(settings: &RedisSettings) -> anyhow::Result<Client> {
    let client = builder(settings)?
        .build()
        .context("building the Redis client")?;
    client.connect();
    Ok(client)
}

/// Like [`connect`], then gives the first connection up to `redis.connect_timeout_ms` before
/// returning either way. For a service that works without Redis but should not start by
/// handing its first requests' cache work to a slower path just because it has not connected
/// yet.
pub async fn connect_briefly_waiting(settings: &RedisSettings) -> anyhow::Result<Client> {
    let client = connect(settings)?;
    if let Err(error) = first_connection(&client, settings.connect_timeout()).await {
        // Wrong credentials do not fix themselves: refuse to start.
        if is_auth_error(&error) {
            return Err(error);
        }
        tracing::warn!(
            error = format!("{error:#}"),
            "starting without the Redis Cluster"
        );
    }
    Ok(client)
}

/// Like [`connect`], then waits up to `timeout` for the first connection.
pub async fn connect_and_wait(
    settings: &RedisSettings,
    timeout: Duration,
) -> anyhow::Result<Client> {
    let client = connect(settings)?;
    first_connection(&client, timeout).await?;
    Ok(client)
}

/// Waits up to `timeout` for `client`'s first connection. A refused `AUTH` (NOAUTH,
/// WRONGPASS) says which settings to check.
async fn first_connection(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let connected = tokio::time::timeout(timeout, client.wait_for_connect())
        .await
        .context("timed out connecting to the Redis Cluster")?;
    match connected {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == &fred::error::ErrorKind::Auth || auth_refusal(err.details()) => {
            Err(anyhow::Error::new(err).context(
                "the Redis Cluster refused the credentials: check redis.username and \
                 redis.password (or redis.password_file)",
            ))
        }
        Err(err) => Err(anyhow::Error::new(err).context("connecting to the Redis Cluster")),
    }
}

/// The replies of a server that wants other credentials.
fn auth_refusal(details: &str) -> bool {
    ["NOAUTH", "WRONGPASS", "NOPERM"]
        .iter()
        .any(|code| details.contains(code))
}

/// Whether [`connect_and_wait`] (or [`connect_briefly_waiting`]) failed on the credentials.
pub fn is_auth_error(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<fred::error::Error>())
        .any(|err| err.kind() == &fred::error::ErrorKind::Auth || auth_refusal(err.details()))
}

/// A client of one node only (no cluster routing), configured like the cluster client, and
/// connecting in the background. For reads that must not wait on the other nodes: fred's
/// cluster client drives every node from one task, and while it reconnects after a node died
/// (until the failover completes), the commands for the healthy nodes wait too.
pub fn connect_node(settings: &RedisSettings, node: Server) -> anyhow::Result<Client> {
    let config = base_config(settings, ServerConfig::Centralized { server: node })?;
    let client = configured(Builder::from_config(config), settings)
        .build()
        .context("building a Redis node client")?;
    client.connect();
    Ok(client)
}

fn builder(settings: &RedisSettings) -> anyhow::Result<Builder> {
    let hosts = settings
        .nodes
        .iter()
        .map(|node| {
            let (host, port) = node
                .rsplit_once(':')
                .with_context(|| format!("redis.nodes: {node:?} is not host:port"))?;
            let port = port
                .parse::<u16>()
                .with_context(|| format!("redis.nodes: bad port in {node:?}"))?;
            Ok(Server::new(host, port))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let server = ServerConfig::Clustered {
        hosts,
        policy: ClusterDiscoveryPolicy::ConfigEndpoint,
    };
    Ok(configured(
        Builder::from_config(base_config(settings, server)?),
        settings,
    ))
}

/// The cluster (or node) config with the credentials and TLS of the settings.
pub fn base_config(settings: &RedisSettings, server: ServerConfig) -> anyhow::Result<Config> {
    let tls = if settings.tls {
        let rustls =
            crate::store_tls::verifying(settings.tls_ca_file.as_deref(), "redis.tls_ca_file")?;
        Some(TlsConfig {
            connector: TlsConnector::from(rustls),
            // Certificates name the addresses that CLUSTER SLOTS reports.
            hostnames: TlsHostMapping::None,
        })
    } else {
        None
    };
    Ok(Config {
        server,
        username: settings.username.clone(),
        password: settings.password().map(str::to_owned),
        tls,
        ..Default::default()
    })
}

/// Timeouts, retries and reconnection, the same for every client.
fn configured(mut builder: Builder, settings: &RedisSettings) -> Builder {
    let command_timeout = settings.command_timeout();
    let connect_timeout = settings.connect_timeout();
    builder
        .with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.internal_command_timeout = command_timeout.max(Duration::from_millis(500));
            // Retry a command across a failover (MOVED/ASK/reconnect) a few times, within the
            // command timeout.
            c.max_command_attempts = 3;
            c.max_redirections = 5;
            // A node that stops answering (paused, partitioned) is treated as dead promptly,
            // instead of leaving its commands queued on a live-looking socket.
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(command_timeout * 2),
                interval: Duration::from_millis(200),
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    fn settings(pairs: &[(&str, &str)]) -> RedisSettings {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(None, env).unwrap().redis
    }

    fn cluster(settings: &RedisSettings) -> anyhow::Result<Config> {
        base_config(
            settings,
            ServerConfig::Clustered {
                hosts: vec![Server::new("127.0.0.1", 7000)],
                policy: ClusterDiscoveryPolicy::ConfigEndpoint,
            },
        )
    }

    #[test]
    fn the_fred_config_gets_credentials_and_tls_from_the_settings() {
        let plain = cluster(&settings(&[])).unwrap();
        assert!(plain.tls.is_none() && plain.username.is_none() && plain.password.is_none());

        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, params.self_signed(&ca_key).unwrap().pem()).unwrap();
        let secured = settings(&[
            ("SHARDFEED_REDIS__USERNAME", "shardfeed"),
            ("SHARDFEED_REDIS__PASSWORD", "redis-hunter2"),
            ("SHARDFEED_REDIS__TLS", "true"),
            ("SHARDFEED_REDIS__TLS_CA_FILE", ca.to_str().unwrap()),
        ]);
        let config = cluster(&secured).unwrap();
        assert_eq!(config.username.as_deref(), Some("shardfeed"));
        assert_eq!(config.password.as_deref(), Some("redis-hunter2"));
        let tls = config.tls.expect("TLS from redis.tls");
        assert!(matches!(tls.connector, TlsConnector::Rustls(_)));
        assert_eq!(tls.hostnames, TlsHostMapping::None);
        // The node clients of the aggregator are configured alike.
        let node = base_config(
            &secured,
            ServerConfig::Centralized {
                server: Server::new("127.0.0.1", 7001),
            },
        )
        .unwrap();
        assert!(node.tls.is_some() && node.password.is_some());

        // A CA file that is missing or holds no certificate names the setting.
        for (content, says) in [(None, "cannot read"), (Some("not a pem"), "no PEM")] {
            let path = dir.path().join("bad.pem");
            let _ = std::fs::remove_file(&path);
            if let Some(content) = content {
                std::fs::write(&path, content).unwrap();
            }
            let mut bad = secured.clone();
            bad.tls_ca_file = Some(path);
            let err = format!("{:#}", cluster(&bad).unwrap_err());
            assert!(
                err.contains("redis.tls_ca_file") && err.contains(says),
                "{err}"
            );
            assert!(!err.contains("redis-hunter2"), "{err}");
        }
    }
}
