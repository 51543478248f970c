//! shardfeed-ingest: the write path. Users, the follow graph and posts land in PostgreSQL (the
//! source of truth) and are then pushed into the Redis Cluster caches.
//!
//! - [`api`]: the gRPC handlers — request validation and the mapping to and from the wire.
//! - [`domain`]: validated values; an invalid handle or name cannot exist past the edge.
//! - [`store`]: SQL against PostgreSQL, including idempotency keys.

#![forbid(unsafe_code)]

pub mod api;
pub mod domain;
pub mod store;

use std::{future::Future, net::SocketAddr};

use shardfeed_core::{postgres, server::GrpcServer, Settings};
use shardfeed_proto::v1::{
    graph_service_server::GraphServiceServer, post_service_server::PostServiceServer,
    user_service_server::UserServiceServer,
};

/// The ingest service, bound and ready to run.
pub struct Application {
    server: GrpcServer,
}

impl Application {
    /// Applies migrations (unless `ingest.run_migrations` is off), builds the pool and binds
    /// `ingest.listen_addr`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.ingest.run_migrations {
            let applied = postgres::run_migrations(settings.postgres.url()).await?;
            tracing::info!(?applied, "migrations up to date");
        }
        let pool = postgres::pool(&settings.postgres)?;
        let mut server =
            GrpcServer::bind(settings.ingest.listen_addr, settings.grpc.clone()).await?;
        let limit = server.max_message_bytes();
        let request_timeout = settings.grpc.request_timeout();

        server
            .add_service(
                UserServiceServer::new(api::users::Users::new(pool.clone(), request_timeout))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            )
            .add_service(
                GraphServiceServer::new(api::graph::Graph::new(pool.clone()))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            )
            .add_service(
                PostServiceServer::new(api::posts::Posts::new(pool.clone()))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            )
            .add_probe("PostgreSQL", shardfeed_core::server::postgres_probe(pool));
        Ok(Self { server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.server.run(shutdown).await
    }
}
