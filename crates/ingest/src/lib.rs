//! shardfeed-ingest: the write path. Users, the follow graph and posts land in PostgreSQL (the
//! source of truth) and are then pushed into the Redis Cluster caches.
//!
//! - [`api`]: the gRPC handlers — request validation and the mapping to and from the wire.
//! - [`domain`]: validated values; an invalid handle or body cannot exist past the edge.
//! - [`store`]: SQL against PostgreSQL: users, follows, posts, idempotency keys, the outbox.
//! - [`group_commit`]: concurrent CreatePosts written with one statement and one commit.
//! - [`cache_sync`]: the fast path that warms Redis after each commit, and the outbox relay.
//! - [`hot_copies`]: copies of hot authors' timelines on every master (key replication).

#![forbid(unsafe_code)]

pub mod api;
pub mod cache_sync;
pub mod domain;
pub mod group_commit;
pub mod hot_copies;
pub mod metrics;
pub mod store;

use std::{future::Future, net::SocketAddr};

use shardfeed_cache::{CacheLayout, CacheWriter};
use shardfeed_proto::v1::{
    graph_service_server::GraphServiceServer, post_service_server::PostServiceServer,
    user_service_server::UserServiceServer,
};
use shardfeed_server::{
    config::OutboxSettings, grpc::GrpcServer, metrics::Metrics, paging::PageTokens, postgres,
    redis, shutdown, Settings,
};

use cache_sync::{CacheSync, WarmQueue};
use group_commit::{GroupCommit, PostWriter};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The `shardfeed-ingest` binary's whole life: the settings (`SHARDFEED_*`,
/// `SHARDFEED_CONFIG`), telemetry as `shardfeed-ingest`, then serving until SIGINT or
/// SIGTERM. The end-to-end tests (crates/e2e) run it too.
pub async fn serve_from_env() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let _telemetry = shardfeed_server::telemetry::init("shardfeed-ingest", &settings.telemetry)?;
    let app = Application::build(settings).await.inspect_err(|err| {
        tracing::error!(error = format!("{err:#}"), "start-up failed");
    })?;
    app.run_until_stopped(shutdown::signal()).await
}

/// The ingest service, bound and ready to run.
pub struct Application {
    server: GrpcServer,
    metrics_addr: SocketAddr,
    outbox_metrics: metrics::OutboxMetrics,
    pool: deadpool_postgres::Pool,
    writer: CacheWriter,
    outbox: OutboxSettings,
    warm_queue: WarmQueue,
    hotspot: shardfeed_server::config::HotspotSettings,
    ingest: shardfeed_server::config::IngestSettings,
    purge: std::sync::Arc<tokio::sync::Notify>,
}

impl Application {
    /// Applies migrations (unless `ingest.run_migrations` is off), builds the pool, connects
    /// to the Redis Cluster (waiting at most `redis.connect_timeout_ms`: writes succeed while it
    /// is down, and the outbox catches the cache up) and binds `ingest.listen_addr`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Refused before anything starts: the built-in development secrets outside
        // development mode, keys that do not load.
        settings.refuse_development_secrets()?;
        let auth = shardfeed_server::auth::AuthLayer::from_settings(&settings)?;
        if settings.ingest.run_migrations {
            let applied = postgres::run_migrations(&settings.postgres).await?;
            tracing::info!(?applied, "migrations up to date");
        }
        let pool = postgres::pool(&settings.postgres)?;
        // Writes do not need Redis, but the fast path skips a client that has not connected:
        // give it a moment, so the first writes after a start are warmed at once.
        let redis = redis::connect_briefly_waiting(&settings.redis).await?;
        let metrics = Metrics::new();
        let writer = CacheWriter::new(
            redis,
            CacheLayout::new(settings.redis.namespace.clone()),
            &settings.cache,
        )
        .with_metrics(metrics.redis());
        let outbox_metrics = metrics::OutboxMetrics::register(&metrics);
        let (cache, warm_queue) = CacheSync::new(writer.clone(), &settings.outbox);
        let tokens = PageTokens::new(&settings.paging.token_secret);
        let purge = std::sync::Arc::new(tokio::sync::Notify::new());

        let mut server =
            GrpcServer::bind(settings.ingest.listen_addr, settings.grpc.clone(), auth).await?;
        server.use_metrics(metrics);
        let metrics_addr = server.serve_metrics(settings.ingest.metrics_addr).await?;
        let limit = server.max_message_bytes();
        let timeout = settings.grpc.request_timeout();
        server
            .add_service(
                UserServiceServer::new(api::users::Users::new(
                    pool.clone(),
                    cache.clone(),
                    timeout,
                    purge.clone(),
                ))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            )
            .add_service(
                GraphServiceServer::new(api::graph::Graph::new(
                    pool.clone(),
                    cache.clone(),
                    tokens,
                    timeout,
                    settings.ingest.max_followees,
                ))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            )
            .add_service(
                PostServiceServer::new(api::posts::Posts::new(
                    pool.clone(),
                    PostWriter::new(
                        pool.clone(),
                        cache.clone(),
                        GroupCommit {
                            enabled: settings.ingest.group_commit_enabled,
                            max_batch: settings.ingest.group_commit_max_batch,
                            statements: settings.ingest.group_commit_statements,
                        },
                    ),
                    cache,
                    timeout,
                ))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            )
            // Ready means PostgreSQL answers: writes do not need Redis.
            .add_probe(
                "PostgreSQL",
                shardfeed_server::grpc::postgres_probe(pool.clone()),
            );
        Ok(Self {
            server,
            metrics_addr,
            outbox_metrics,
            pool,
            writer,
            outbox: settings.outbox,
            warm_queue,
            hotspot: settings.hotspot,
            ingest: settings.ingest,
            purge,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `GET /metrics` answers.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Serves until `shutdown` completes, then drains, then stops the background tasks (the
    /// relay, the purges, key replication) and waits for each, at most 5 s in all.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        if self.hotspot.key_replicas_enabled {
            tasks.spawn(hot_copies::run(
                self.writer.clone(),
                self.hotspot.refresh(),
                stop.clone(),
            ));
        }
        tasks.spawn(store::idempotency::purge_loop(
            self.pool.clone(),
            self.ingest.idempotency_key_ttl(),
            self.ingest.idempotency_purge_interval(),
            stop.clone(),
        ));
        // Woken by every DeleteUser; the interval (the same housekeeping interval as the keys')
        // only matters for a purge a stopped replica left unfinished.
        tasks.spawn(store::users::purge_deleted_loop(
            self.pool.clone(),
            self.ingest.idempotency_purge_interval(),
            self.purge,
            stop.clone(),
        ));
        cache_sync::spawn_tasks(
            &tasks,
            &stop,
            self.pool,
            self.writer,
            &self.outbox,
            self.warm_queue,
            self.outbox_metrics,
        );
        let served = self.server.run(shutdown).await;
        shutdown::stop_tasks(&stop, &tasks, shutdown::TASKS_GRACE).await;
        served
    }
}
