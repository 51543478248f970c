//! A client per Redis node, for the feed read path while the cluster client reconnects.
//!
//! fred's cluster client drives every node from one router task. When a node dies, that task
//! reconnects the whole cluster until the failover has completed, and the commands for the
//! healthy nodes wait meanwhile: one killed master made every node's part of every feed time
//! out for about 8 s (all of it read from PostgreSQL). While the cluster client is not
//! connected, feed reads go instead to a client of the node that owns the slot, per the cluster
//! client's slot map: a dead node holds up only its own reads, which fall back to PostgreSQL
//! after `aggregator.node_timeout_ms` as before. The rest of the time the cluster client
//! serves them: sending a feed's batches through three clients (three router tasks) instead
//! of one cost about a fifth of the throughput and of the unloaded latency.
//!
//! A read that fails (a slot moved by a failover the slot map has not seen, a node gone) asks
//! the cluster client to refresh its slot map, at most once a second: a node client does not
//! follow `MOVED`, and the cluster client may not meet it itself.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use fred::{
    clients::{Client, Pipeline},
    error::Error,
    interfaces::{ClientLike, ClusterInterface, EventInterface},
    types::{config::Server, Value},
    util::redis_keyslot,
};
use parking_lot::Mutex;
use shardfeed_server::{
    config::RedisSettings,
    metrics::{Outcome, RedisMetrics},
    redis,
};
use tokio::sync::broadcast::error::RecvError;

/// How often a failed read may ask for a fresh slot map.
const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct NodeClients {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RedisSettings,
    cluster: Client,
    clients: Mutex<HashMap<Server, Client>>,
    last_resync: Mutex<Option<Instant>>,
}

impl NodeClients {
    /// Node clients next to `cluster`, whose slot map routes them.
    pub fn new(settings: RedisSettings, cluster: Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                cluster,
                clients: Mutex::new(HashMap::new()),
                last_resync: Mutex::new(None),
            }),
        }
    }

    /// The client of `node`, connecting on first use; the cluster client if none can be built.
    fn client(&self, node: &Server) -> Client {
        let mut clients = self.inner.clients.lock();
        if let Some(client) = clients.get(node) {
            return client.clone();
        }
        match redis::connect_node(&self.inner.settings, node.clone()) {
            Ok(client) => {
                clients.insert(node.clone(), client.clone());
                client
            }
            Err(err) => {
                tracing::warn!(node = %node, error = format!("{err:#}"),
                    "no client for the node; reading through the cluster client");
                self.inner.cluster.clone()
            }
        }
    }

    /// Closes the clients of nodes that no longer own slots (a master failed over, removed):
    /// a client of a node that is gone for good would otherwise keep reconnecting forever.
    fn drop_former_masters(&self, clients: &mut HashMap<Server, Client>) {
        let Some(routing) = self.routing() else {
            return;
        };
        let masters = routing.unique_primary_nodes();
        clients.retain(|node, client| {
            if masters.contains(node) {
                return true;
            }
            let client = client.clone();
            tokio::spawn(async move {
                let _ = client.quit().await;
            });
            false
        });
    }

    /// The cluster client's slot map, if it has one yet.
    pub fn routing(&self) -> Option<fred::types::cluster::ClusterRouting> {
        self.inner.cluster.cached_cluster_state()
    }

    /// The cluster client (it follows `MOVED` and reconnects by itself).
    pub fn cluster(&self) -> &Client {
        &self.inner.cluster
    }

    /// The master that owns `key`'s slot, by the cluster client's slot map.
    pub fn owner_of(&self, key: &str) -> Option<Server> {
        self.routing()
            .and_then(|routing| routing.get_server(redis_keyslot(key.as_bytes())).cloned())
    }

    /// The client for a batch of keys owned by `node`: the cluster client while it is
    /// connected (it routes by key itself, as it does for `None`: an owner not known), else
    /// the client of `node`.
    pub fn on(&self, node: Option<&Server>) -> Client {
        match node {
            Some(node) if !self.inner.cluster.is_connected() => self.client(node),
            _ => self.inner.cluster.clone(),
        }
    }

    /// The client for `key`, as [`Self::on`] its owner (looked up only when it matters).
    pub fn for_key(&self, key: &str) -> Client {
        if self.inner.cluster.is_connected() {
            return self.inner.cluster.clone();
        }
        match self.owner_of(key) {
            Some(node) => self.client(&node),
            None => self.inner.cluster.clone(),
        }
    }

    /// Keeps a client connected to every master: once the cluster client has connected, and
    /// again at every change to the cluster it reports. Returns when the cluster client is
    /// gone.
    pub async fn follow_topology(self) {
        let mut changes = self.inner.cluster.cluster_change_rx();
        if self.inner.cluster.wait_for_connect().await.is_err() {
            return;
        }
        loop {
            self.connect_masters();
            match changes.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Connects to every master of the current slot map ahead of the reads that may need
    /// them, and closes the clients of former masters.
    fn connect_masters(&self) {
        if let Some(routing) = self.routing() {
            for node in routing.unique_primary_nodes() {
                self.client(&node);
            }
            self.drop_former_masters(&mut self.inner.clients.lock());
        }
    }

    /// A read failed: the slot map may be stale. Refreshes it in the background, at most once
    /// per `RESYNC_INTERVAL`.
    pub fn read_failed(&self) {
        {
            let mut last = self.inner.last_resync.lock();
            if last.is_some_and(|at| at.elapsed() < RESYNC_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let cluster = self.inner.cluster.clone();
        tokio::spawn(async move {
            if let Err(err) = cluster.sync_cluster().await {
                tracing::debug!(error = %err, "slot map refresh failed");
            }
        });
    }
}

/// A node that did not answer its pipeline in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
pub struct NoAnswer(pub Duration);

/// Sends `pipeline` (`commands` commands for `node`) and waits at most `timeout` for its
/// replies, one per command, in a client span named `summary`; records the round trip in
/// `metrics` ([`Outcome::of_replies`]).
pub async fn send(
    summary: &'static str,
    metrics: &RedisMetrics,
    node: Option<&Server>,
    pipeline: Pipeline<Client>,
    commands: usize,
    timeout: Duration,
) -> Result<Vec<Result<Value, Error>>, NoAnswer> {
    let started = Instant::now();
    let replies = shardfeed_server::spans::redis(
        summary,
        node,
        commands,
        tokio::time::timeout(timeout, pipeline.try_all::<Value>()),
    )
    .await;
    let outcome = match &replies {
        Err(_) => Outcome::Timeout,
        Ok(replies) => Outcome::of_replies(replies),
    };
    metrics.record(node, commands, started.elapsed(), outcome);
    replies.map_err(|_| NoAnswer(timeout))
}
