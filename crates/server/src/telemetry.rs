//! Logging, tracing and metrics: `tracing` with an env filter, plain or JSON lines on stderr;
//! spans and metrics (the global `opentelemetry` meter, read every 10 s) exported over
//! OTLP/gRPC when an endpoint is configured.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{metrics::SdkMeterProvider, trace::SdkTracerProvider, Resource};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySettings};

/// Keeps the exporter alive; flushes buffered spans when dropped at shutdown.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("telemetry: flushing spans failed: {err}");
            }
        }
        if let Some(meters) = self.meters.take() {
            if let Err(err) = meters.shutdown() {
                eprintln!("telemetry: flushing metrics failed: {err}");
            }
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `settings.log_filter`.
/// Must be called once per process, from within a Tokio runtime when OTLP export is on.
pub fn init(
    service_name: &'static str,
    settings: &TelemetrySettings,
) -> anyhow::Result<TelemetryGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(&settings.log_filter)
            .map_err(|e| anyhow::anyhow!("telemetry.log_filter: {e}"))?,
    };

    // Colour only on a terminal: log files and collectors get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt_layer = match settings.log_format {
        LogFormat::Plain => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let endpoint = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty());
    let (otel_layer, provider) = match endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    let meters = match endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            let meters = SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            opentelemetry::global::set_meter_provider(meters.clone());
            Some(meters)
        }
        None => None,
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()?;
    if let Some(endpoint) = endpoint {
        tracing::info!(endpoint, "exporting spans and metrics over OTLP");
    }
    Ok(TelemetryGuard { provider, meters })
}
