//! What every shardfeed gRPC server has: health (`grpc.health.v1`) driven by store probes,
//! reflection v1 and v1alpha, authentication and rate limits ([`crate::auth`]), message size
//! limits, caller deadlines, per-connection concurrency limits, RPC metrics and the `/metrics`
//! listener ([`crate::metrics`]), TLS or mutual TLS when
//! `grpc.tls_*` asks for it ([`crate::tls`]) and a graceful shutdown with a bounded drain.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{server::TcpIncoming, Server, ServerTlsConfig},
};
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{
    auth::AuthLayer,
    config::GrpcSettings,
    deadline::DeadlineLayer,
    metrics::{endpoint::MetricsEndpoint, Metrics},
    tls::ClientAuth,
};

/// The health entry for liveness probes: SERVING from the start of serving until the drain,
/// whatever the stores say (a store outage is the readiness probe's business, and restarting
/// the process would not end it).
pub const LIVENESS: &str = "liveness";

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A readiness check of one backing store: `Ok` while it answers.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// A gRPC server being assembled: bound, with services and readiness probes added, then run.
pub struct GrpcServer {
    listener: TcpListener,
    settings: GrpcSettings,
    auth: AuthLayer,
    /// `None`: plaintext h2c.
    tls: Option<ServerTlsConfig>,
    routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    probes: Vec<(&'static str, Probe)>,
    metrics: Metrics,
    /// `None` until [`GrpcServer::serve_metrics`].
    metrics_endpoint: Option<MetricsEndpoint>,
}

impl GrpcServer {
    /// Binds now, so that the caller learns the port (`127.0.0.1:0` in tests) before serving.
    /// Every call but health and reflection goes through `auth`. Reads the TLS files of
    /// `grpc.tls_*` now too: a bad one stops start-up here.
    pub async fn bind(
        addr: SocketAddr,
        settings: GrpcSettings,
        auth: AuthLayer,
    ) -> anyhow::Result<Self> {
        let tls = crate::tls::server_tls_config(&settings)?
            // A peer that opens a connection and never finishes its handshake is dropped.
            .map(|tls| tls.timeout(TLS_HANDSHAKE_TIMEOUT));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the gRPC listener to {addr}"))?;
        Ok(Self {
            listener,
            settings,
            auth,
            tls,
            routes: RoutesBuilder::default(),
            service_names: Vec::new(),
            probes: Vec::new(),
            metrics: Metrics::new(),
            metrics_endpoint: None,
        })
    }

    /// The server's metrics, which the service adds its own to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves `metrics` (a registry the service made before it bound the server) instead of
    /// the server's own.
    pub fn use_metrics(&mut self, metrics: Metrics) -> &mut Self {
        self.metrics = metrics;
        self
    }

    /// Binds the metrics listener (`GET /metrics`) to `addr` now; it serves while the server
    /// runs, through the drain. Returns the bound address.
    pub async fn serve_metrics(&mut self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let endpoint = MetricsEndpoint::bind(addr).await?;
        let bound = endpoint.local_addr();
        self.metrics_endpoint = Some(endpoint);
        Ok(bound)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The configured message size limit, for the generated servers'
    /// `max_{de,en}coding_message_size`.
    pub fn max_message_bytes(&self) -> usize {
        self.settings.max_message_bytes
    }

    /// Adds a generated service; its health status follows the probes.
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Adds a readiness probe: the server reports SERVING only while every probe passes.
    pub fn add_probe(&mut self, store: &'static str, probe: Probe) -> &mut Self {
        self.probes.push((store, probe));
        self
    }

    /// Serves until `shutdown` completes, then reports NOT_SERVING, stops accepting, and lets
    /// in-flight requests finish for at most `grpc.shutdown_grace_ms`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let GrpcServer {
            listener,
            settings,
            auth,
            tls,
            mut routes,
            service_names,
            probes,
            metrics,
            metrics_endpoint,
        } = self;
        let addr = listener.local_addr()?;
        let transport = match (&tls, settings.tls_client_auth) {
            (None, _) => "h2c (plaintext)",
            (Some(_), ClientAuth::None) => "TLS",
            (Some(_), ClientAuth::Optional) => "TLS, client certificates optional",
            (Some(_), ClientAuth::Required) => "mutual TLS (client certificates required)",
        };
        let builder = match tls {
            Some(tls) => Server::builder()
                .tls_config(tls)
                .context("configuring TLS (grpc.tls_*)")?,
            None => Server::builder(),
        };

        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_status(&reporter, &service_names, ServingStatus::NotServing).await;
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        routes.add_service(health_service);

        // Advertise only what this server serves: the descriptor set holds every shardfeed
        // service, but the aggregator does not serve UserService and vice versa.
        let reflection = || {
            service_names.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(shardfeed_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    // google.rpc.BadRequest & co, so clients can decode error details.
                    .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                    .with_service_name("grpc.health.v1.Health"),
                |builder, name| builder.with_service_name(*name),
            )
        };
        routes.add_service(reflection().build_v1().context("building reflection v1")?);
        routes.add_service(
            reflection()
                .build_v1alpha()
                .context("building reflection v1alpha")?,
        );

        auth.count_in(&metrics);
        let rpc_metrics = metrics.rpc().layer();

        let stopping = CancellationToken::new();
        let readiness = TaskTracker::new();
        readiness.spawn(readiness_loop(
            reporter.clone(),
            service_names.clone(),
            probes,
            settings.health_probe_interval(),
            stopping.clone(),
        ));
        // The metrics listener serves through the drain: it stops after the gRPC server.
        let scraped = CancellationToken::new();
        let scraping = TaskTracker::new();
        if let Some(endpoint) = metrics_endpoint {
            scraping.spawn({
                let scraped = scraped.clone();
                let metrics = metrics.clone();
                async move {
                    if let Err(err) = endpoint.run(metrics, scraped.cancelled_owned()).await {
                        tracing::error!(error = format!("{err:#}"), "metrics listener stopped");
                    }
                }
            });
        }
        readiness.close();
        scraping.close();

        let signal = {
            let reporter = reporter.clone();
            let names = service_names.clone();
            let stopping = stopping.clone();
            let readiness = readiness.clone();
            async move {
                shutdown.await;
                // The probe loop ends first, so that no late probe result overwrites the
                // NOT_SERVING below.
                stopping.cancel();
                readiness.wait().await;
                set_status(&reporter, &names, ServingStatus::NotServing).await;
                reporter
                    .set_service_status(LIVENESS, ServingStatus::NotServing)
                    .await;
                tracing::info!(%addr, "stopped accepting; draining in-flight requests");
            }
        };

        tracing::info!(%addr, services = ?service_names, transport, "gRPC server listening");
        // With our own listener tonic ignores `Server::tcp_nodelay`: set it on the incoming
        // stream, or every response waits ~40 ms for the peer's delayed ACK. With TLS, tonic
        // wraps each accepted stream: health and reflection are served over it too.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = builder
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .concurrency_limit_per_connection(settings.concurrency_limit_per_connection)
            .layer(rpc_metrics)
            .layer(DeadlineLayer::new(settings.request_timeout()))
            .layer(auth)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(serve);

        let grace = settings.shutdown_grace();
        let outcome = tokio::select! {
            result = &mut serve => result.context("gRPC server failed"),
            _ = async {
                stopping.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(%addr, grace_ms = grace.as_millis() as u64,
                    "drain grace period passed; stopping with requests still in flight");
                Ok(())
            }
        };
        // A server that failed on its own leaves the probe loop running: end it too.
        stopping.cancel();
        readiness.wait().await;
        scraped.cancel();
        scraping.wait().await;
        if outcome.is_ok() {
            tracing::info!(%addr, "gRPC server stopped");
        }
        outcome
    }
}

async fn set_status(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// Probes the stores every `interval` and mirrors the result into the health service, logging
/// only transitions. Ends as soon as `stopping` is cancelled, even mid-probe.
async fn readiness_loop(
    reporter: HealthReporter,
    names: Vec<&'static str>,
    probes: Vec<(&'static str, Probe)>,
    interval: Duration,
    stopping: CancellationToken,
) {
    let mut last: Option<bool> = None;
    loop {
        let mut ready = true;
        for (store, probe) in &probes {
            let probed = tokio::select! {
                _ = stopping.cancelled() => return,
                probed = tokio::time::timeout(interval.max(Duration::from_millis(500)), probe()) => probed,
            };
            match probed {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    ready = false;
                    if last != Some(false) {
                        tracing::warn!(store, error = format!("{err:#}"), "store not ready");
                    }
                }
                Err(_) => {
                    ready = false;
                    if last != Some(false) {
                        tracing::warn!(store, "store readiness probe timed out");
                    }
                }
            }
        }
        if stopping.is_cancelled() {
            return;
        }
        if last != Some(ready) {
            let status = if ready {
                tracing::info!("all stores answer: SERVING");
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_status(&reporter, &names, status).await;
            last = Some(ready);
        }
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// A probe that runs `SELECT 1` on a pooled PostgreSQL connection.
pub fn postgres_probe(pool: deadpool_postgres::Pool) -> Probe {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let client = pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
    })
}

/// A probe that PINGs every primary of the Redis Cluster.
pub fn redis_probe(client: fred::clients::Client) -> Probe {
    use fred::interfaces::ClientLike;
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            if !client.is_connected() {
                anyhow::bail!("not connected to the Redis Cluster");
            }
            let _: () = client.ping(None).await?;
            Ok(())
        })
    })
}
