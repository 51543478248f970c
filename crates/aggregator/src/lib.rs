//! shardfeed-aggregator: the read path. Home feeds and author timelines are built from the
//! Redis Cluster (PostgreSQL on a miss), and hot authors are detected and taken off their node.
//!
//! It never runs migrations: the schema belongs to the write path.
//!
//! Modules depend one way, from the bottom up:
//! - [`cursor`], [`slice`]: the keyset position, and what the cache's replies mean;
//! - [`memory`]: what is kept in process of the cache (near-cache, newest-post times, followee
//!   sets) and the change subscription that gates it; [`detect`]: the hot set and the per-node
//!   counters. Neither knows the other;
//! - [`read`]: the readers of timelines, heads and home feeds, using both;
//! - [`mitigate`]: the hot read path, choosing among the ways to read a hot author's head;
//! - [`api`]: the gRPC handlers, composing the readers and the hot path.

#![forbid(unsafe_code)]

pub mod api;
pub mod cursor;
pub mod detect;
pub mod memory;
pub mod metrics;
pub mod mitigate;
pub mod read;
pub mod slice;

use std::{future::Future, net::SocketAddr, time::Duration};

use shardfeed_cache::{CacheLayout, CacheWriter};
use shardfeed_proto::v1::{
    feed_service_server::FeedServiceServer, hotspot_service_server::HotspotServiceServer,
};
use shardfeed_server::{
    grpc::GrpcServer, metrics::Metrics, paging::PageTokens, postgres, redis, shutdown, Settings,
};
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};

/// The `shardfeed-aggregator` binary's whole life: the settings (`SHARDFEED_*`,
/// `SHARDFEED_CONFIG`), telemetry as `shardfeed-aggregator`, then serving until SIGINT or
/// SIGTERM. The end-to-end tests (crates/e2e) run it too.
pub async fn serve_from_env() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let _telemetry =
        shardfeed_server::telemetry::init("shardfeed-aggregator", &settings.telemetry)?;
    let app = Application::build(settings).await.inspect_err(|err| {
        tracing::error!(error = format!("{err:#}"), "start-up failed");
    })?;
    app.run_until_stopped(shutdown::signal()).await
}

/// The aggregator service, bound and ready to run.
pub struct Application {
    server: GrpcServer,
    /// Where `GET /metrics` answers.
    metrics_addr: SocketAddr,
    /// Background tasks: the hot-set refresh, the change subscriber, the topology follower.
    tasks: TaskTracker,
    /// Cancels the background tasks when the service stops (or is dropped unstarted).
    stop: DropGuard,
}

impl Application {
    /// Connects to the Redis Cluster in the background (the service reports NOT_SERVING until
    /// it answers), builds the PostgreSQL pool for read-through and binds
    /// `aggregator.listen_addr`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Refused before anything starts: the built-in development secrets outside
        // development mode, keys that do not load.
        settings.refuse_development_secrets()?;
        let auth = shardfeed_server::auth::AuthLayer::from_settings(&settings)?;
        let redis = redis::connect(&settings.redis)?;
        // Feed reads go to a client per node while the cluster client reconnects (see
        // `read::nodes`).
        let nodes = read::nodes::NodeClients::new(settings.redis.clone(), redis.clone());
        let pool = postgres::pool(&settings.postgres)?;
        let layout = CacheLayout::new(settings.redis.namespace.clone());
        let registry = Metrics::new();
        let metrics = metrics::ReadMetrics::register(&registry);
        let rebuilder = read::rebuild::Rebuilder::new(
            CacheWriter::new(redis.clone(), layout.clone(), &settings.cache)
                .with_metrics(&metrics.redis),
            pool.clone(),
            settings.cache.timeline_len,
            settings.aggregator.max_concurrent_rebuilds,
        )
        .with_metrics(&metrics);
        let aggregator = &settings.aggregator;
        let hotspot = &settings.hotspot;
        let memories = memory::Memories::new(memory::Budgets {
            heads_bytes: if hotspot.near_cache_enabled {
                hotspot.near_cache_bytes
            } else {
                0
            },
            heads_ttl: hotspot.near_cache_ttl(),
            newest_bytes: if aggregator.meta_cache_enabled {
                aggregator.meta_cache_bytes
            } else {
                0
            },
            newest_ttl: Duration::from_millis(aggregator.meta_cache_ttl_ms),
            following_bytes: aggregator.followee_cache_bytes,
            following_ttl: Duration::from_millis(aggregator.followee_cache_ttl_ms),
        });
        let detect = detect::Detector::new(redis.clone(), layout.clone(), hotspot.clone());
        let hot = mitigate::HotReads::new(
            nodes.clone(),
            layout.clone(),
            hotspot.clone(),
            detect.clone(),
            memories.clone(),
        );

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(
            cancel
                .clone()
                .run_until_cancelled_owned(hot.clone().refresh_every_period()),
        );
        if memories.any_enabled() {
            tasks.spawn(memories.clone().follow_changes(
                redis.clone(),
                layout.changes_channel(),
                cancel.clone(),
            ));
        }
        tasks.spawn(
            cancel
                .clone()
                .run_until_cancelled_owned(nodes.clone().follow_topology()),
        );

        registry.register_collector(metrics::HotCollector::new(hot.clone()));
        let mut server =
            GrpcServer::bind(settings.aggregator.listen_addr, settings.grpc.clone(), auth).await?;
        server.use_metrics(registry);
        let metrics_addr = server
            .serve_metrics(settings.aggregator.metrics_addr)
            .await?;
        let limit = server.max_message_bytes();
        let home = read::home::HomeReader::new(
            nodes.clone(),
            layout.clone(),
            pool.clone(),
            aggregator.node_timeout(),
            rebuilder.clone(),
            read::home::HomeParts {
                detect: detect.clone(),
                memories,
                bodies: read::home::HomeReader::body_cache(aggregator.body_cache_bytes),
                metrics: metrics.clone(),
            },
        );
        let author = read::author::AuthorReader::new(
            nodes,
            layout,
            rebuilder,
            detect.clone(),
            metrics.clone(),
        );
        server
            .add_service(
                FeedServiceServer::new(api::feed::Feeds::new(
                    author,
                    home,
                    pool,
                    PageTokens::new(&settings.paging.token_secret),
                    settings.grpc.request_timeout(),
                    detect,
                    hot.clone(),
                    metrics,
                ))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            )
            .add_service(
                HotspotServiceServer::new(api::hotspot::HotspotApi::new(hot))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            )
            .add_probe("Redis Cluster", shardfeed_server::grpc::redis_probe(redis));
        tasks.close();
        Ok(Self {
            server,
            metrics_addr,
            tasks,
            stop: cancel.drop_guard(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `GET /metrics` answers.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Serves until `shutdown` completes, then drains and stops the background tasks (at most
    /// [`shutdown::TASKS_GRACE`]).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            server,
            metrics_addr: _,
            tasks,
            stop,
        } = self;
        let result = server.run(shutdown).await;
        shutdown::stop_tasks(&stop.disarm(), &tasks, shutdown::TASKS_GRACE).await;
        result
    }
}
