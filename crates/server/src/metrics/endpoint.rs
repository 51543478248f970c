//! The HTTP listener Prometheus scrapes: `GET /metrics` on the metrics address
//! (`ingest.metrics_addr`, `aggregator.metrics_addr`), and nothing else. It runs beside the gRPC
//! server and stops with it.

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue},
    response::IntoResponse,
    routing::get,
    Router,
};
use tokio::net::TcpListener;

use super::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound metrics listener, not yet serving.
pub struct MetricsEndpoint {
    listener: TcpListener,
}

impl MetricsEndpoint {
    /// Binds now, so that a busy port stops start-up and a test learns the port of `:0`.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener to {addr}"))?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves `metrics` until `shutdown` completes.
    pub async fn run(
        self,
        metrics: Metrics,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(metrics);
        tracing::info!(%addr, "metrics listening at /metrics");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("metrics listener failed")
    }
}

/// The OpenMetrics format for a scraper that accepts it (Prometheus does), else the Prometheus
/// text format (curl, older scrapers).
async fn scrape(State(metrics): State<Metrics>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (OPENMETRICS, metrics.encode_openmetrics())
    } else {
        (PROMETHEUS_TEXT, metrics.encode_prometheus())
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
}
