//! shardfeed-aggregator: the read path. Home feeds and author timelines are built from the
//! Redis Cluster (PostgreSQL on a miss), and hot authors are detected and taken off their node.
//!
//! It never runs migrations: the schema belongs to the write path.

#![forbid(unsafe_code)]

pub mod api;
pub mod hot;
pub mod read;

use std::{future::Future, net::SocketAddr};

use shardfeed_cache::{CacheLayout, CacheWriter};
use shardfeed_proto::v1::{
    feed_service_server::FeedServiceServer, hotspot_service_server::HotspotServiceServer,
};
use shardfeed_server::{grpc::GrpcServer, paging::PageTokens, postgres, redis, Settings};

/// The aggregator service, bound and ready to run.
pub struct Application {
    server: GrpcServer,
    /// Hot-set refresh and change subscriber: stopped with the server.
    /// Background tasks, stopped when the service stops.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Connects to the Redis Cluster in the background (the service reports NOT_SERVING until
    /// it answers), builds the PostgreSQL pool for read-through and binds
    /// `aggregator.listen_addr`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let redis = redis::connect(&settings.redis)?;
        // Feed reads go to a client per node while the cluster client reconnects (see
        // `read::nodes`).
        let nodes = read::nodes::NodeClients::new(settings.redis.clone(), redis.clone());
        let topology_task = nodes.follow_topology();
        let pool = postgres::pool(&settings.postgres)?;
        let layout = CacheLayout::new(settings.redis.namespace.clone());
        let rebuilder = read::rebuild::Rebuilder::new(
            CacheWriter::new(redis.clone(), layout.clone(), &settings.cache),
            pool.clone(),
            settings.cache.timeline_len,
            settings.aggregator.max_concurrent_rebuilds,
        );
        let aggregator = &settings.aggregator;
        let hot = hot::Hotspots::new(
            redis.clone(),
            layout.clone(),
            settings.hotspot.clone(),
            hot::Remembered {
                newest_bytes: if aggregator.meta_cache_enabled {
                    aggregator.meta_cache_bytes
                } else {
                    0
                },
                newest_ttl: std::time::Duration::from_millis(aggregator.meta_cache_ttl_ms),
                following_bytes: aggregator.followee_cache_bytes,
                following_ttl: std::time::Duration::from_millis(aggregator.followee_cache_ttl_ms),
            },
        );
        let mut tasks = hot.spawn();
        tasks.push(topology_task);
        let mut server =
            GrpcServer::bind(settings.aggregator.listen_addr, settings.grpc.clone()).await?;
        let limit = server.max_message_bytes();
        server
            .add_service(
                FeedServiceServer::new(api::feed::Feeds::new(
                    read::author::AuthorReader::new(
                        nodes.clone(),
                        layout.clone(),
                        rebuilder.clone(),
                    ),
                    read::home::HomeReader::new(
                        nodes.clone(),
                        layout,
                        pool.clone(),
                        settings.aggregator.node_timeout(),
                        rebuilder,
                        hot.clone(),
                        read::home::HomeReader::body_cache(aggregator.body_cache_bytes),
                    ),
                    pool,
                    PageTokens::new(&settings.paging.token_secret),
                    settings.grpc.request_timeout(),
                    hot.clone(),
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
        Ok(Self { server, tasks })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let result = self.server.run(shutdown).await;
        for task in self.tasks {
            task.abort();
        }
        result
    }
}
