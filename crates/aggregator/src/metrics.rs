//! The read path's metrics (`docs/operations.md`, Metrics): how timelines were answered — from
//! the cache, from PostgreSQL and why, or not at all (`degraded`) — the rebuilds, and the hot
//! path's state, read from [`HotReads`] at every scrape.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
    },
};
use shardfeed_server::metrics::{Metrics, RedisMetrics};

use crate::mitigate::HotReads;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Why an author's part of a page came from PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The author's keys are not in the cache (never loaded, expired, evicted).
    NotCached,
    /// The page is older than the cached window of the timeline.
    PastWindow,
    /// The node did not answer within `aggregator.node_timeout_ms`.
    NodeTimeout,
    /// The node answered with an error, or the connection failed.
    NodeError,
}

impl Fallback {
    const ALL: [Fallback; 4] = [
        Fallback::NotCached,
        Fallback::PastWindow,
        Fallback::NodeTimeout,
        Fallback::NodeError,
    ];

    fn label(self) -> &'static str {
        match self {
            Fallback::NotCached => "not_cached",
            Fallback::PastWindow => "past_window",
            Fallback::NodeTimeout => "node_timeout",
            Fallback::NodeError => "node_error",
        }
    }
}

/// The read path's instruments; cheap to clone.
#[derive(Clone)]
pub struct ReadMetrics {
    pub redis: RedisMetrics,
    cache_lookups: Family<OutcomeLabels, Counter>,
    rebuilds: Family<OutcomeLabels, Counter>,
    fallbacks: Family<ReasonLabels, Counter>,
    feeds: Counter,
    degraded: Counter,
}

impl ReadMetrics {
    /// Registers the read path's instruments in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            redis: metrics.redis().clone(),
            ..Self::unregistered()
        };
        metrics.register(
            "cache_lookups",
            "Author timelines looked up in the Redis Cluster, by outcome (hit, miss)",
            this.cache_lookups.clone(),
        );
        metrics.register(
            "cache_rebuilds",
            "Cache keys rebuilt from PostgreSQL after a miss, by outcome (ok, error)",
            this.rebuilds.clone(),
        );
        metrics.register(
            "postgres_fallbacks",
            "Authors of a page read from PostgreSQL instead of the cache, by reason \
             (not_cached, past_window, node_timeout, node_error)",
            this.fallbacks.clone(),
        );
        metrics.register(
            "feeds",
            "Pages answered (home feeds and user timelines)",
            this.feeds.clone(),
        );
        metrics.register(
            "feeds_degraded",
            "Pages answered with degraded = true: some authors left out, neither the cache nor \
             PostgreSQL answered for them",
            this.degraded.clone(),
        );
        // Every series from the start, at 0: a rate over a series that appears later misses
        // its first increase.
        for outcome in ["hit", "miss"] {
            let _ = this.cache_lookups.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["ok", "error"] {
            let _ = this.rebuilds.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in Fallback::ALL {
            let _ = this.fallbacks.get_or_create(&ReasonLabels {
                reason: reason.label(),
            });
        }
        this
    }

    /// Instruments in no registry.
    pub fn unregistered() -> Self {
        Self {
            redis: RedisMetrics::default(),
            cache_lookups: Family::default(),
            rebuilds: Family::default(),
            fallbacks: Family::default(),
            feeds: Counter::default(),
            degraded: Counter::default(),
        }
    }

    pub fn cache_hits(&self, n: u64) {
        if n > 0 {
            self.cache_lookups
                .get_or_create(&OutcomeLabels { outcome: "hit" })
                .inc_by(n);
        }
    }

    pub fn cache_misses(&self, n: u64) {
        if n > 0 {
            self.cache_lookups
                .get_or_create(&OutcomeLabels { outcome: "miss" })
                .inc_by(n);
        }
    }

    pub fn rebuilt(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.rebuilds
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn fell_back(&self, reason: Fallback, authors: u64) {
        if authors > 0 {
            self.fallbacks
                .get_or_create(&ReasonLabels {
                    reason: reason.label(),
                })
                .inc_by(authors);
        }
    }

    /// One page answered; `degraded` when it left authors out.
    pub fn answered(&self, degraded: bool) {
        self.feeds.inc();
        if degraded {
            self.degraded.inc();
        }
    }
}

/// The hot path's state at scrape time: the hot set, the mitigations applied, the near-cache.
pub struct HotCollector {
    hot: HotReads,
}

impl std::fmt::Debug for HotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HotCollector")
    }
}

impl HotCollector {
    pub fn new(hot: HotReads) -> Self {
        Self { hot }
    }
}

impl Collector for HotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.hot.stats();
        let hot_authors = ConstGauge::new(self.hot.hot_set_len() as i64);
        hot_authors.encode(encoder.encode_descriptor(
            "hot_authors",
            "Authors in this aggregator's hot set",
            None,
            hot_authors.metric_type(),
        )?)?;

        let mitigations = [
            ("near_cache_hit", stats.near_cache.hits),
            ("coalesced", stats.coalesced),
            ("replica_read", stats.replica_reads),
            ("key_replica_read", stats.copy_reads),
        ];
        let mut family = encoder.encode_descriptor(
            "hot_mitigations",
            "Reads of hot authors' heads by mitigation: answered from the near-cache, joined to \
             a load in flight, sent to a replica, sent to a key replica",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, count) in mitigations {
            ConstCounter::new(count).encode(family.encode_family(&KindLabels { kind })?)?;
        }

        let mut family = encoder.encode_descriptor(
            "near_cache_lookups",
            "Near-cache lookups of hot authors' heads, by outcome (hit, miss)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (outcome, count) in [
            ("hit", stats.near_cache.hits),
            ("miss", stats.near_cache.misses),
        ] {
            ConstCounter::new(count).encode(family.encode_family(&OutcomeLabels { outcome })?)?;
        }

        let bytes = ConstGauge::new(stats.near_cache.bytes as i64);
        bytes.encode(encoder.encode_descriptor(
            "near_cache_bytes",
            "Bytes the near-cache holds, overhead included",
            None,
            bytes.metric_type(),
        )?)?;
        Ok(())
    }
}
