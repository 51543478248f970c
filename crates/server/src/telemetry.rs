//! Logging and tracing: `tracing` with an env filter, plain or JSON lines on stderr; spans
//! exported over OTLP/gRPC when an endpoint is configured. (Metrics are Prometheus'
//! business: [`crate::metrics`].)
//!
//! Spans follow the OpenTelemetry environment first, then the settings (docs/architecture.md,
//! Tracing): `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, then
//! `telemetry.otlp_endpoint` (export is on when any is set, and off with
//! `OTEL_SDK_DISABLED=true`); `OTEL_SERVICE_NAME` or a `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES`, then `telemetry.service_name`, then the binary's name;
//! `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, then `telemetry.sampler`/`sampler_arg`.
//! The SDK reads the `OTEL_*` variables itself (and the others it knows, e.g. `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_HEADERS`); a setting is handed to it only where no variable speaks.
//! The W3C trace context (`traceparent`, `tracestate`) is the propagator.
//!
//! The log filter (`telemetry.log_filter`, `RUST_LOG`) decides what is logged; exported spans
//! have a filter of their own: every span of the shardfeed crates down to `debug` (the store
//! calls' spans are `debug`, so that they cost nothing while neither logs nor an exporter want
//! them), `info` for other crates.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    resource::{EnvResourceDetector, ResourceDetector},
    trace::{Sampler, SdkTracerProvider},
    Resource,
};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{
    filter::Targets, layer::SubscriberExt, registry::LookupSpan, util::SubscriberInitExt,
    EnvFilter, Layer,
};

use crate::config::{LogFormat, TelemetrySettings, TraceSampler};

/// Keeps the exporter alive; flushes buffered spans when dropped at shutdown.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("telemetry: flushing spans failed: {err}");
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
    }
    .with_filter(filter);

    let traces = TraceExport::configure(service_name, settings)?;
    let (otel_layer, provider) = match &traces {
        Some(traces) => (Some(traces.layer()), Some(traces.provider.clone())),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()?;
    if let Some(traces) = &traces {
        traces.log();
    }
    Ok(TelemetryGuard { provider })
}

/// For a command-line tool that logs nothing: its spans alone, exported as for a service, when
/// an endpoint is configured (`None`, and no subscriber, otherwise). The same rules as
/// [`init`]: the `OTEL_*` environment first, then `settings`.
pub fn init_traces(
    service_name: &'static str,
    settings: &TelemetrySettings,
) -> anyhow::Result<Option<TelemetryGuard>> {
    let Some(traces) = TraceExport::configure(service_name, settings)? else {
        return Ok(None);
    };
    tracing_subscriber::registry()
        .with(traces.layer())
        .try_init()?;
    Ok(Some(TelemetryGuard {
        provider: Some(traces.provider),
    }))
}

/// The variables the OTLP exporter reads for its traces' endpoint, the specific one first.
const ENDPOINT_VARS: [&str; 2] = [
    opentelemetry_otlp::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    opentelemetry_otlp::OTEL_EXPORTER_OTLP_ENDPOINT,
];

/// A variable's value, unless unset or empty (the SDK reads an empty one as unset too).
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The span export, as the environment and the settings configure it.
struct TraceExport {
    provider: SdkTracerProvider,
    service_name: &'static str,
    /// Where the spans go, and which setting or variable said so.
    endpoint: (String, &'static str),
    /// The sampler, and which setting or variable said so.
    sampler: (String, &'static str),
}

impl TraceExport {
    /// `None` when no endpoint is configured, or `OTEL_SDK_DISABLED=true`. Installs the W3C
    /// trace-context propagator otherwise.
    fn configure(
        service_name: &'static str,
        settings: &TelemetrySettings,
    ) -> anyhow::Result<Option<TraceExport>> {
        if env_value("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let from_env = ENDPOINT_VARS
            .iter()
            .find_map(|var| env_value(var).map(|endpoint| (endpoint, *var)));
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        // A configured endpoint would win over the variables: hand it over only without them.
        let endpoint = match from_env {
            Some(endpoint) => endpoint,
            None => match settings.otlp_endpoint() {
                Some(endpoint) => {
                    exporter = exporter.with_endpoint(endpoint);
                    (endpoint.to_owned(), "telemetry.otlp_endpoint")
                }
                None => return Ok(None),
            },
        };
        let exporter = exporter
            .build()
            .map_err(|e| anyhow::anyhow!("the OTLP span exporter ({}): {e}", endpoint.1))?;
        // The batch processor reads `OTEL_BSP_*` itself.
        let mut provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service_name, settings));
        // The SDK reads `OTEL_TRACES_SAMPLER` unless it is given a sampler.
        let sampler = match env_value("OTEL_TRACES_SAMPLER") {
            Some(name) => (name, "OTEL_TRACES_SAMPLER"),
            None => {
                provider = provider.with_sampler(sampler(settings));
                (sampler_name(settings), "telemetry.sampler")
            }
        };
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        Ok(Some(TraceExport {
            provider: provider.build(),
            service_name,
            endpoint,
            sampler,
        }))
    }

    /// The layer that turns `tracing` spans into OpenTelemetry spans, with its own filter.
    fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(self.service_name))
            // A runtime worker's name and the module (already `code.module.name`) say nothing.
            .with_threads(false)
            .with_target(false)
            .with_filter(export_filter())
    }

    /// Says where the spans go, once the subscriber is installed; and what of the environment
    /// the SDK fell back from, which it would say before anyone listens.
    fn log(&self) {
        tracing::info!(
            endpoint = self.endpoint.0,
            endpoint_from = self.endpoint.1,
            sampler = self.sampler.0,
            sampler_from = self.sampler.1,
            "exporting spans over OTLP"
        );
        if let Some(problem) = env_sampler_problem() {
            tracing::warn!("{problem}");
        }
    }
}

/// Which spans and events are exported: every span of the shardfeed crates down to `debug`,
/// `info` for the rest, nothing of the crates the export itself runs on (their spans would
/// feed it back into itself).
fn export_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("shardfeed", LevelFilter::DEBUG)
        .with_targets(
            ["opentelemetry", "tonic", "h2", "hyper", "tower"].map(|t| (t, LevelFilter::OFF)),
        )
}

/// The resource of every exported span: what the SDK detects (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, the SDK's own attributes) and, when the environment names no
/// service, `telemetry.service_name` or `default_name`.
fn resource(default_name: &'static str, settings: &TelemetrySettings) -> Resource {
    let builder = Resource::builder();
    let named_by_env = env_value("OTEL_SERVICE_NAME").is_some()
        || EnvResourceDetector::new()
            .detect()
            .get(&Key::from_static_str("service.name"))
            .is_some();
    if named_by_env {
        return builder.build();
    }
    let name = settings.service_name().unwrap_or(default_name).to_owned();
    builder
        .with_attribute(KeyValue::new("service.name", name))
        .build()
}

/// `telemetry.sampler` with `telemetry.sampler_arg` (checked when the settings loaded).
fn sampler(settings: &TelemetrySettings) -> Sampler {
    let ratio = settings.sampler_arg.unwrap_or(1.0);
    let parent_based = |root| Sampler::ParentBased(Box::new(root));
    match settings.sampler {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::Traceidratio => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentbasedAlwaysOn => parent_based(Sampler::AlwaysOn),
        TraceSampler::ParentbasedAlwaysOff => parent_based(Sampler::AlwaysOff),
        TraceSampler::ParentbasedTraceidratio => parent_based(Sampler::TraceIdRatioBased(ratio)),
    }
}

fn sampler_name(settings: &TelemetrySettings) -> String {
    match settings.sampler_arg {
        Some(ratio) => format!("{} {ratio}", settings.sampler.as_str()),
        None => settings.sampler.as_str().to_owned(),
    }
}

/// What the SDK does not like about `OTEL_TRACES_SAMPLER`/`_ARG`: it then falls back to
/// `parentbased_always_on`, or a ratio of 1, and says so only through its own log.
fn env_sampler_problem() -> Option<String> {
    sampler_problem(
        env_value("OTEL_TRACES_SAMPLER")?,
        env_value("OTEL_TRACES_SAMPLER_ARG"),
    )
}

/// [`env_sampler_problem`] of these values.
fn sampler_problem(name: String, arg: Option<String>) -> Option<String> {
    let ratio = arg.and_then(|arg| arg.parse::<f64>().ok());
    match name.as_str() {
        "always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off" => None,
        "traceidratio" | "parentbased_traceidratio" => match ratio {
            Some(ratio) if (0.0..=1.0).contains(&ratio) => None,
            Some(ratio) => Some(format!(
                "OTEL_TRACES_SAMPLER_ARG={ratio} is not a ratio from 0 to 1: \
                 {name} samples every trace, or none"
            )),
            None => Some(format!(
                "OTEL_TRACES_SAMPLER={name} without a ratio in OTEL_TRACES_SAMPLER_ARG: \
                 every trace is sampled"
            )),
        },
        _ => Some(format!(
            "OTEL_TRACES_SAMPLER={name} is not a sampler this build has: \
             parentbased_always_on is used"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_takes_the_store_spans_and_not_its_own_crates() {
        let filter = export_filter();
        assert!(filter.would_enable("shardfeed_server::spans", &tracing::Level::DEBUG));
        assert!(filter.would_enable("shardfeed_aggregator::read", &tracing::Level::INFO));
        assert!(!filter.would_enable("shardfeed_ingest::store", &tracing::Level::TRACE));
        assert!(!filter.would_enable("fred::router", &tracing::Level::DEBUG));
        assert!(filter.would_enable("fred::router", &tracing::Level::INFO));
        for own in [
            "h2::codec",
            "hyper::client",
            "tonic::transport",
            "opentelemetry_sdk",
        ] {
            assert!(!filter.would_enable(own, &tracing::Level::ERROR), "{own}");
        }
    }

    #[test]
    fn samplers_the_sdk_would_replace_are_named() {
        let problem = |name: &str, arg: Option<&str>| {
            sampler_problem(name.to_owned(), arg.map(str::to_owned))
        };
        assert_eq!(problem("parentbased_always_off", None), None);
        assert_eq!(problem("traceidratio", Some("0.1")), None);
        let missing = problem("parentbased_traceidratio", Some("a tenth")).unwrap();
        assert!(missing.contains("every trace is sampled"), "{missing}");
        let outside = problem("traceidratio", Some("2")).unwrap();
        assert!(outside.contains("not a ratio from 0 to 1"), "{outside}");
        let unknown = problem("xray", None).unwrap();
        assert!(
            unknown.contains("parentbased_always_on is used"),
            "{unknown}"
        );
    }

    #[test]
    fn the_settings_sampler_is_the_sdks_of_that_name() {
        let settings = |sampler, sampler_arg| TelemetrySettings {
            log_filter: "info".into(),
            log_format: LogFormat::Plain,
            otlp_endpoint: None,
            service_name: None,
            sampler,
            sampler_arg,
        };
        let cases = [
            (TraceSampler::AlwaysOff, None, "AlwaysOff"),
            (
                TraceSampler::Traceidratio,
                Some(0.5),
                "TraceIdRatioBased(0.5)",
            ),
            (
                TraceSampler::ParentbasedTraceidratio,
                Some(0.25),
                "ParentBased(TraceIdRatioBased(0.25))",
            ),
            (
                TraceSampler::ParentbasedAlwaysOn,
                None,
                "ParentBased(AlwaysOn)",
            ),
        ];
        for (sampler, arg, sdk) in cases {
            let settings = settings(sampler, arg);
            assert_eq!(format!("{:?}", super::sampler(&settings)), sdk);
            assert!(sampler_name(&settings).starts_with(sampler.as_str()));
        }
    }
}
