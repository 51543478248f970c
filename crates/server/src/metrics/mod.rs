//! Prometheus metrics: one registry per service, served as text at `/metrics` on the metrics
//! address ([`endpoint`]), in the OpenMetrics format when the scraper asks for it and in the
//! Prometheus text format (0.0.4) otherwise.
//!
//! Every name starts with `shardfeed_`; counters end in `_total`, durations in `_seconds`, and
//! every label takes a bounded set of values (a method of the contract, a gRPC code, a Redis
//! node of the cluster, a reason from a fixed list). What both services have lives here: the RPC
//! latencies ([`rpc`]), the per-node Redis round trips ([`RedisMetrics`]), the rate-limit
//! refusals and the build. Each service registers its own beside them
//! (`docs/operations.md`, Metrics, lists them all).

pub mod endpoint;
pub mod rpc;

use std::{sync::Arc, time::Duration};

use fred::types::config::Server;
use parking_lot::Mutex;
use prometheus_client::{
    collector::Collector,
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};

/// Round trips to a Redis node: from 100 µs to 1 s.
const REDIS_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A histogram family whose histograms share one bucket layout.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A service's metrics: the registry, and the instruments every service has. Cloning shares
/// them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Written while the service assembles itself, read at every scrape.
    registry: Mutex<Registry>,
    rpc: rpc::RpcMetrics,
    redis: RedisMetrics,
    rate_limited: Family<ClassLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

impl Metrics {
    /// A registry with the instruments every service has.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shardfeed");
        let rpc = rpc::RpcMetrics::register(&mut registry);
        let redis = RedisMetrics::register(&mut registry);
        let rate_limited = Family::<ClassLabels, Counter>::default();
        // Every quota's series from the start, at 0.
        for class in crate::auth::limits::QUOTAS {
            let _ = rate_limited.get_or_create(&ClassLabels { class });
        }
        registry.register(
            "rate_limited",
            "Calls refused with RESOURCE_EXHAUSTED by the per-caller rate limits, by quota class",
            rate_limited.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running build (always 1)", build);
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                rpc,
                redis,
                rate_limited,
            }),
        }
    }

    /// Adds `metric` as `shardfeed_<name>` (counters get `_total`). A name carries its unit
    /// (`_seconds`, `_bytes`) itself: no `# UNIT` line, which some parsers refuse on histograms.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.inner.registry.lock().register(name, help, metric);
    }

    /// Adds metrics read from their owner at every scrape.
    pub fn register_collector(&self, collector: impl Collector) {
        self.inner
            .registry
            .lock()
            .register_collector(Box::new(collector));
    }

    pub fn rpc(&self) -> &rpc::RpcMetrics {
        &self.inner.rpc
    }

    /// The per-node Redis instruments, for every component that sends a pipeline.
    pub fn redis(&self) -> &RedisMetrics {
        &self.inner.redis
    }

    /// Counts a call refused by the rate limit of `class`.
    pub fn rate_limited(&self, class: &'static str) {
        self.inner
            .rate_limited
            .get_or_create(&ClassLabels { class })
            .inc();
    }

    /// The exposition in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry.lock())
            .expect("writing to a String cannot fail");
        out
    }

    /// The exposition in the Prometheus text format, version 0.0.4.
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry.lock())
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// How one pipeline to a Redis node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The node answered with an error, or the connection failed.
    Error,
    /// No answer within the caller's bound.
    Timeout,
}

impl Outcome {
    /// How a pipeline that answered went, by its replies (one per command): failed as a whole
    /// (`Error`) when every reply is an error, else `Ok` (an error reply is the node's answer).
    pub fn of_replies<T, E>(replies: &[Result<T, E>]) -> Outcome {
        if !replies.is_empty() && replies.iter().all(Result::is_err) {
            Outcome::Error
        } else {
            Outcome::Ok
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeErrorLabels {
    node: String,
    kind: &'static str,
}

/// Per Redis node: the round-trip time of each pipeline (a timed-out one counts its bound), the
/// commands sent, the failures.
/// The node is `host:port` of the master that owns the keys by the slot map, or `unrouted`
/// before a slot map is known.
#[derive(Clone)]
pub struct RedisMetrics {
    duration: HistogramFamily<NodeLabels>,
    commands: Family<NodeLabels, Counter>,
    errors: Family<NodeErrorLabels, Counter>,
}

impl Default for RedisMetrics {
    /// Instruments in no registry: for a component nobody scrapes.
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(|| Histogram::new(REDIS_BUCKETS)),
            commands: Family::default(),
            errors: Family::default(),
        }
    }
}

impl RedisMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "redis_node_duration_seconds",
            "Round trip of one pipeline to a Redis node, by node",
            metrics.duration.clone(),
        );
        registry.register(
            "redis_node_commands",
            "Commands sent to a Redis node in pipelines, by node",
            metrics.commands.clone(),
        );
        registry.register(
            "redis_node_errors",
            "Pipelines to a Redis node that failed, by node and kind (error, timeout)",
            metrics.errors.clone(),
        );
        metrics
    }

    /// Records one pipeline of `commands` commands to `node` that took `elapsed`.
    pub fn record(
        &self,
        node: Option<&Server>,
        commands: usize,
        elapsed: Duration,
        outcome: Outcome,
    ) {
        let node = node_label(node);
        self.commands
            .get_or_create(&NodeLabels { node: node.clone() })
            .inc_by(commands as u64);
        let kind = match outcome {
            Outcome::Ok => None,
            Outcome::Error => Some("error"),
            Outcome::Timeout => Some("timeout"),
        };
        if let Some(kind) = kind {
            self.errors
                .get_or_create(&NodeErrorLabels {
                    node: node.clone(),
                    kind,
                })
                .inc();
        }
        self.duration
            .get_or_create(&NodeLabels { node })
            .observe(elapsed.as_secs_f64());
    }
}

/// `host:port`, or `unrouted`.
pub fn node_label(node: Option<&Server>) -> String {
    match node {
        Some(server) => format!("{}:{}", server.host, server.port),
        None => "unrouted".to_owned(),
    }
}
