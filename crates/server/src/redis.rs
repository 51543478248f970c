//! The Redis Cluster client (fred): one multiplexed connection per cluster node, with cluster
//! topology discovery, reconnection with backoff and bounded command timeouts.

use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use fred::types::config::{ClusterDiscoveryPolicy, Server, ServerConfig, UnresponsiveConfig};

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

/// Waits up to `timeout` for `client`'s first connection.
async fn first_connection(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, client.wait_for_connect())
        .await
        .context("timed out connecting to the Redis Cluster")?
        .context("connecting to the Redis Cluster")
}

/// A client of one node only (no cluster routing), configured like the cluster client, and
/// connecting in the background. For reads that must not wait on the other nodes: fred's
/// cluster client drives every node from one task, and while it reconnects after a node died
/// (until the failover completes), the commands for the healthy nodes wait too.
pub fn connect_node(settings: &RedisSettings, node: Server) -> anyhow::Result<Client> {
    let config = Config {
        server: ServerConfig::Centralized { server: node },
        ..Default::default()
    };
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
    let config = Config {
        server: ServerConfig::Clustered {
            hosts,
            policy: ClusterDiscoveryPolicy::ConfigEndpoint,
        },
        ..Default::default()
    };
    Ok(configured(Builder::from_config(config), settings))
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
