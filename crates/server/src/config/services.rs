//! The gRPC frame (`grpc`), both services (`ingest`, `aggregator`), the cache layout
//! (`cache`), the outbox relay (`outbox`), hot-spot handling (`hotspot`) and telemetry.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// The shape of what is cached per author (see `cache::layout`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Newest posts kept per author timeline; older ones are read from PostgreSQL.
    pub timeline_len: usize,
    /// Every key of an author expires this long after the author's last write or rebuild.
    pub ttl_secs: u64,
    /// A write counts as delivered once this many replicas of its node have it (`WAIT`), so a
    /// failover right after cannot lose it. 0 trusts the master alone.
    pub min_replica_acks: i64,
    /// How long to wait for those replicas before leaving the change to the outbox relay.
    pub replica_ack_timeout_ms: i64,
}

/// The transactional outbox relay of the ingest service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// Turns the background relay on. Off only in tests that drive it by hand.
    pub relay_enabled: bool,
    /// Apply each change right after its commit. Off simulates a crash between commit and
    /// warm: every change then reaches Redis through the relay only.
    pub fast_path_enabled: bool,
    /// How long a request waits for its own cache warm (including the replica `WAIT`) before
    /// answering anyway and leaving the change to the relay.
    pub fast_path_budget_ms: u64,
    /// Fast-path batches (scripts, replica `WAIT`, announcement) in flight at once.
    pub fast_path_batches: usize,
    /// How often the relay looks for rows the fast path left behind.
    pub relay_interval_ms: u64,
    /// Rows claimed per relay round.
    pub batch_size: usize,
    /// A row younger than this is left to the fast path of the request that wrote it.
    pub grace_ms: u64,
    /// A row that failed is retried after this long, doubled at each further failure…
    pub retry_base_ms: u64,
    /// …up to this long. A round that delivered nothing pauses the same way.
    pub retry_max_ms: u64,
    /// A row that failed for good (undecodable, rejected by Redis) this often is parked in
    /// `outbox_dead_letters`. Rows that wait for Redis (a node down, too few replicas) are
    /// retried for as long as it takes.
    pub max_attempts: i32,
}

impl OutboxSettings {
    pub fn relay_interval(&self) -> Duration {
        Duration::from_millis(self.relay_interval_ms)
    }

    pub fn fast_path_budget(&self) -> Duration {
        Duration::from_millis(self.fast_path_budget_ms)
    }
}

/// Hot-partition detection (aggregator) and the mitigations, each one switchable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotspotSettings {
    /// Authors tracked by the decaying top-k (Space-Saving): memory is bounded by this.
    pub top_k_capacity: usize,
    /// Access counts halve over this long: rates are measured over roughly this window.
    pub half_life_ms: u64,
    /// How often the hot set is recomputed, published to Redis and logged when it changes.
    pub refresh_ms: u64,
    /// An author read at least this often (per second, by one aggregator) is hot.
    pub min_rate_per_s: f64,
    /// At most this many hot authors.
    pub max_hot_authors: usize,
    /// A published hot author stays in the shared set this long without being refreshed.
    pub shared_ttl_ms: u64,
    /// Mitigation 1: hot authors' timeline heads in the aggregator's memory.
    pub near_cache_enabled: bool,
    /// The near-cache's budget in bytes.
    pub near_cache_bytes: usize,
    /// An entry older than this is reloaded even if no invalidation arrived: the bound on how
    /// stale a hot author's timeline can be.
    pub near_cache_ttl_ms: u64,
    /// Newest posts kept per hot author.
    pub near_cache_posts: usize,
    /// Mitigation 2: concurrent reads of one hot author share one round trip.
    pub coalescing_enabled: bool,
    /// Mitigation 3: hot authors are read from replicas of their master.
    pub replica_reads_enabled: bool,
    /// Mitigation 4: ingest keeps a copy of each hot author's timeline on every other master
    /// (another hash tag), and aggregators read one copy, or the original, per request.
    pub key_replicas_enabled: bool,
}

impl HotspotSettings {
    /// Any mitigation on: hot authors take the hot read path.
    pub fn any_mitigation(&self) -> bool {
        self.near_cache_enabled
            || self.coalescing_enabled
            || self.replica_reads_enabled
            || self.key_replicas_enabled
    }

    pub fn half_life(&self) -> Duration {
        Duration::from_millis(self.half_life_ms)
    }

    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms)
    }

    pub fn near_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.near_cache_ttl_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// An `EnvFilter` directive, e.g. `info,shardfeed_ingest=debug`. `RUST_LOG` overrides it.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint of the spans, e.g. `http://127.0.0.1:4317`.
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` wins over it; with
    /// none of the three, no span is exported.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of what is exported; unset: the binary's name (`shardfeed-ingest`,
    /// `shardfeed-aggregator`). `OTEL_SERVICE_NAME`, or a `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`, wins over it.
    pub service_name: Option<String>,
    /// Which traces are recorded and exported. `OTEL_TRACES_SAMPLER` (with
    /// `OTEL_TRACES_SAMPLER_ARG`) wins over it and `sampler_arg`.
    pub sampler: TraceSampler,
    /// The ratio of traces the `*traceidratio` samplers keep, from 0 to 1; only for them.
    pub sampler_arg: Option<f64>,
}

impl TelemetrySettings {
    /// `otlp_endpoint`, unless empty.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref().filter(|e| !e.is_empty())
    }

    /// `service_name`, unless empty.
    pub fn service_name(&self) -> Option<&str> {
        self.service_name.as_deref().filter(|n| !n.is_empty())
    }
}

/// The samplers of the OpenTelemetry specification that need nothing outside the process,
/// named as `OTEL_TRACES_SAMPLER` names them. The `parentbased_*` ones follow the caller's
/// decision (the `traceparent`'s sampled flag) and apply their own only to new traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceSampler {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

impl TraceSampler {
    /// Its name in the settings and in `OTEL_TRACES_SAMPLER`.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceSampler::AlwaysOn => "always_on",
            TraceSampler::AlwaysOff => "always_off",
            TraceSampler::Traceidratio => "traceidratio",
            TraceSampler::ParentbasedAlwaysOn => "parentbased_always_on",
            TraceSampler::ParentbasedAlwaysOff => "parentbased_always_off",
            TraceSampler::ParentbasedTraceidratio => "parentbased_traceidratio",
        }
    }

    /// Whether it takes a ratio (`sampler_arg`).
    pub fn takes_ratio(self) -> bool {
        matches!(
            self,
            TraceSampler::Traceidratio | TraceSampler::ParentbasedTraceidratio
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    /// Largest request or response message, in bytes, in either direction.
    pub max_message_bytes: usize,
    /// Server-side bound on one request; a shorter caller deadline (`grpc-timeout`) wins.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may run after SIGINT/SIGTERM before the server stops anyway.
    pub shutdown_grace_ms: u64,
    /// Bound on requests handled at once per connection.
    pub concurrency_limit_per_connection: usize,
    /// How often readiness (health) probes the stores.
    pub health_probe_interval_ms: u64,
    /// The server's PEM certificate chain; with `tls_key_file`, turns TLS on (both or neither;
    /// empty is unset). Off, the server speaks plaintext HTTP/2 (h2c).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The PEM CA certificate(s) that client certificates must chain to.
    #[serde(default)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// `none`, `optional` or `required`: whether callers present a certificate (mutual TLS);
    /// the latter two need `tls_client_ca_file`.
    pub tls_client_auth: crate::tls::ClientAuth,
}

impl GrpcSettings {
    /// The server's certificate and key files, when TLS is on.
    pub fn tls_identity_files(&self) -> Option<(&Path, &Path)> {
        Self::file(&self.tls_cert_file).zip(Self::file(&self.tls_key_file))
    }

    /// The CA of client certificates, when set.
    pub fn tls_client_ca_file(&self) -> Option<&Path> {
        Self::file(&self.tls_client_ca_file)
    }

    /// A path setting; an empty one (`SHARDFEED_GRPC__TLS_CERT_FILE=`) counts as unset.
    fn file(path: &Option<PathBuf>) -> Option<&Path> {
        path.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

    /// The `grpc.tls_*` settings go together and their files hold what they should. The
    /// message names the setting and the path, never key material.
    pub(super) fn check_tls(&self) -> Result<(), String> {
        use crate::tls::ClientAuth;
        let cert = Self::file(&self.tls_cert_file);
        let key = Self::file(&self.tls_key_file);
        let ca = self.tls_client_ca_file();
        match (cert, key) {
            (Some(_), None) => {
                return Err("grpc.tls_key_file: must be set with grpc.tls_cert_file".into())
            }
            (None, Some(_)) => {
                return Err("grpc.tls_cert_file: must be set with grpc.tls_key_file".into())
            }
            _ => {}
        }
        let tls = cert.is_some();
        match (self.tls_client_auth, ca) {
            (ClientAuth::None, Some(path)) => {
                return Err(format!(
                    "grpc.tls_client_ca_file: {} is set but grpc.tls_client_auth is none; set \
                     it to optional or required, or unset the CA",
                    path.display()
                ))
            }
            (ClientAuth::Optional | ClientAuth::Required, None) => {
                return Err(
                    "grpc.tls_client_auth: optional and required need grpc.tls_client_ca_file"
                        .into(),
                )
            }
            (ClientAuth::Optional | ClientAuth::Required, Some(_)) if !tls => {
                return Err("grpc.tls_client_auth: client certificates need TLS: set \
                     grpc.tls_cert_file and grpc.tls_key_file"
                    .into())
            }
            _ => {}
        }
        if let (Some(cert), Some(key)) = (cert, key) {
            crate::tls::read_certificates("grpc.tls_cert_file", cert)?;
            crate::tls::read_private_key("grpc.tls_key_file", key)?;
        }
        if let Some(ca) = ca {
            crate::tls::read_certificates("grpc.tls_client_ca_file", ca)?;
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    pub fn health_probe_interval(&self) -> Duration {
        Duration::from_millis(self.health_probe_interval_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub listen_addr: SocketAddr,
    /// Where Prometheus scrapes `GET /metrics` (docs/operations.md, Metrics).
    pub metrics_addr: SocketAddr,
    /// Apply pending migrations at start-up. Off when a deploy job runs `shardfeed migrate`.
    pub run_migrations: bool,
    /// Concurrent CreatePosts share one statement and one commit (group commit).
    pub group_commit_enabled: bool,
    /// Posts in one group-commit statement at most.
    pub group_commit_max_batch: usize,
    /// Group-commit statements in flight at once. One gives the largest batches (the posts
    /// that queue while it commits); more let a slow statement not hold the others back.
    pub group_commit_statements: usize,
    /// How long a `request_id` is remembered (AIP-155); a retry later than this is a new
    /// request. Expired keys are purged every `ingest.idempotency_purge_interval_secs`.
    pub idempotency_key_ttl_secs: u64,
    pub idempotency_purge_interval_secs: u64,
    /// Users one user may follow at most: a `Follow` beyond it is `FAILED_PRECONDITION`. It
    /// bounds what one home feed reads.
    pub max_followees: i64,
}

impl IngestSettings {
    pub fn idempotency_key_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_key_ttl_secs)
    }

    pub fn idempotency_purge_interval(&self) -> Duration {
        Duration::from_secs(self.idempotency_purge_interval_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorSettings {
    pub listen_addr: SocketAddr,
    /// Where Prometheus scrapes `GET /metrics` (docs/operations.md, Metrics).
    pub metrics_addr: SocketAddr,
    /// How long one node may take to answer its batch of a feed before its authors are read
    /// from PostgreSQL instead.
    pub node_timeout_ms: u64,
    /// Cache rebuilds from PostgreSQL running at once; a miss beyond that is served from
    /// PostgreSQL without rebuilding.
    pub max_concurrent_rebuilds: usize,
    /// Keep each author's newest-post time in memory (dropped when ingest announces a change
    /// to the author), so a home feed does not read every followee's meta from Redis.
    pub meta_cache_enabled: bool,
    /// The in-memory newest-post times' budget in bytes.
    pub meta_cache_bytes: usize,
    /// A newest-post time older than this is read again even if no announcement came: the
    /// bound on how late a new post can show in feeds when an announcement is lost.
    pub meta_cache_ttl_ms: u64,
    /// Post bodies kept in memory (bodies never change), in bytes; 0 turns it off.
    pub body_cache_bytes: usize,
    /// Users' followee sets kept in memory, in bytes (0 turns it off): dropped when ingest
    /// announces a follow change by the user (ingest counts a change as delivered only once
    /// announced), and never older than `followee_cache_ttl_ms`.
    pub followee_cache_bytes: usize,
    pub followee_cache_ttl_ms: u64,
}

impl AggregatorSettings {
    pub fn node_timeout(&self) -> Duration {
        Duration::from_millis(self.node_timeout_ms)
    }
}
