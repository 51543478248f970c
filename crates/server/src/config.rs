//! The one typed settings tree for both services and the CLI.
//!
//! Layers, later wins: built-in defaults → optional TOML file (`SHARDFEED_CONFIG` or an explicit
//! path) → environment variables `SHARDFEED_<SECTION>__<KEY>` (e.g. `SHARDFEED_POSTGRES__URL`,
//! `SHARDFEED_REDIS__NODES=127.0.0.1:7000,127.0.0.1:7001`). A value that does not parse stops
//! start-up with an error naming the key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Everything configurable, for every binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Explicit development mode: the services then accept the built-in development secrets
    /// (page tokens, the JWT key). Outside it they refuse to start with them.
    pub dev_mode: bool,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub telemetry: TelemetrySettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub grpc: GrpcSettings,
    pub ingest: IngestSettings,
    pub aggregator: AggregatorSettings,
    pub cache: CacheSettings,
    pub outbox: OutboxSettings,
    pub paging: PagingSettings,
    pub hotspot: HotspotSettings,
}

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

/// Page tokens are authenticated with this secret: every replica of a service must share it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingSettings {
    pub token_secret: SecretString,
    /// A file whose content (without a trailing newline) replaces `token_secret`, for secrets
    /// mounted as files (Kubernetes Secrets, compose secrets).
    #[serde(default)]
    pub token_secret_file: Option<PathBuf>,
}

/// Who may call: bearer JWTs (see `auth`), verified against these keys and claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Off, every request is made as an anonymous admin: for measuring what authentication
    /// costs (`shardfeed bench feed`), in development mode only.
    pub enabled: bool,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of its audiences).
    pub audience: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// A shared HS256 key (at least 32 bytes). Unset in development mode means the built-in
    /// development key, which the services refuse outside it.
    #[serde(default)]
    pub hs256_secret: Option<SecretString>,
    /// A file whose content replaces `hs256_secret`.
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// Public keys (PEM), each selected by the `kid` of a token's header: several at once
    /// for rotation.
    #[serde(default)]
    pub public_keys: Vec<PublicKeySettings>,
    /// A JWKS file (`{"keys": [...]}`) of further public keys, selected by `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// With client certificates (`grpc.tls_client_auth`), a request without a bearer token
    /// is made as the verified certificate's identity (its first URI or DNS name, else its
    /// CN) in this role; `none` (the default) requires a token always.
    pub client_cert_role: ClientCertRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertRole {
    None,
    Service,
    Admin,
}

/// One verification key from a PEM file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeySettings {
    pub kid: String,
    /// `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384` or `EdDSA`.
    pub algorithm: String,
    pub file: PathBuf,
}

/// Per-caller rate limits: a token bucket per subject and request class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub enabled: bool,
    /// Reads (feeds, timelines, lookups, lists) by a `user` caller.
    pub user_reads: Quota,
    /// Writes (posts, follows, profile changes) by a `user` caller.
    pub user_writes: Quota,
    /// Reads by a `service` or `admin` caller, which acts for many users.
    pub service_reads: Quota,
    pub service_writes: Quota,
    /// Operator RPCs (`HotspotService`), whoever calls.
    pub operator: Quota,
}

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// An `EnvFilter` directive, e.g. `info,shardfeed_ingest=debug`. `RUST_LOG` overrides it.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint, e.g. `http://127.0.0.1:4317`. Export is off when unset.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user[:password]@host:port/db`; kept secret because it may hold a password.
    pub url: SecretString,
    /// A file whose content (without a trailing newline) replaces `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    pub pool_size: usize,
    /// How long a request may wait for a pooled connection (and for a new one to connect).
    pub connect_timeout_ms: u64,
    /// Server-side `statement_timeout` for every pooled connection.
    pub statement_timeout_ms: u64,
    /// TLS to PostgreSQL: `disable`, `require` (encrypted, the certificate not checked) or
    /// `verify-full` (the certificate must chain to `tls_ca_file`, else to the platform's
    /// roots, and name the host of the URL). Decides alone: an `sslmode` in the URL that says
    /// otherwise is refused.
    #[serde(default)]
    pub tls: PostgresTls,
    /// PEM file of the CA(s) that `verify-full` trusts instead of the platform's roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

impl PostgresSettings {
    /// Only `url` set, everything else as the defaults say: for tools and tests that connect
    /// to one database.
    pub fn from_url(url: impl Into<String>) -> Self {
        let mut settings = Settings::load_from(None, std::iter::empty())
            .expect("the built-in defaults are valid")
            .postgres;
        settings.url = SecretString::from(url.into());
        settings
    }

    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.pool_size == 0 {
            return bad("postgres.pool_size", "must be at least 1");
        }
        // The parser's messages name the option or the position, never the URL's text.
        let url: tokio_postgres::Config = self
            .url()
            .parse()
            .map_err(|e| ConfigError(format!("postgres.url: not a valid PostgreSQL URL: {e}")))?;
        use tokio_postgres::config::SslMode;
        match (url.get_ssl_mode(), self.tls) {
            (SslMode::Require, PostgresTls::Disable) => {
                return bad(
                    "postgres.url",
                    "sets sslmode=require: set postgres.tls (require or verify-full) instead",
                )
            }
            (SslMode::Disable, PostgresTls::Require | PostgresTls::VerifyFull) => {
                return bad(
                    "postgres.url",
                    "sets sslmode=disable, but postgres.tls asks for TLS",
                )
            }
            _ => {}
        }
        if self.tls_ca_file.is_some() && self.tls != PostgresTls::VerifyFull {
            return bad(
                "postgres.tls_ca_file",
                "is only used with postgres.tls = \"verify-full\"",
            );
        }
        Ok(())
    }
}

/// `postgres.tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    #[default]
    Disable,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Seed nodes of the Redis Cluster, `host:port`; the rest is discovered.
    pub nodes: Vec<String>,
    /// Prefix put before every key (outside the hash tag), so several deployments or test runs can
    /// share one cluster without seeing each other's keys. Empty in production.
    pub namespace: String,
    /// Per-command timeout; also bounds how long one node may hold up a read.
    pub command_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// The ACL user to `AUTH` as; without it the password is the `default` user's.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// A file whose content (without a trailing newline) replaces `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS to every node; certificates must chain to `tls_ca_file`, else to the platform's
    /// roots, and name the node's address as the cluster reports it.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA(s) trusted instead of the platform's roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

impl RedisSettings {
    pub fn password(&self) -> Option<&str> {
        self.password.as_ref().map(ExposeSecret::expose_secret)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.nodes.is_empty() {
            return bad("redis.nodes", "needs at least one host:port");
        }
        for node in &self.nodes {
            let valid = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return bad("redis.nodes", &format!("{node:?} is not host:port"));
            }
        }
        if self.command_timeout_ms == 0 {
            return bad("redis.command_timeout_ms", "must be positive");
        }
        if self.username.is_some() && self.password.is_none() {
            return bad(
                "redis.username",
                "needs redis.password (or redis.password_file)",
            );
        }
        if self.tls_ca_file.is_some() && !self.tls {
            return bad("redis.tls_ca_file", "is only used with redis.tls = true");
        }
        Ok(())
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
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
    fn check_tls(&self) -> Result<(), String> {
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

/// Errors that stop start-up: the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: String) -> Self {
        ConfigError(message)
    }
}

const DEFAULTS: &str = r#"
dev_mode = false

[auth]
enabled = true
issuer = "shardfeed"
audience = "shardfeed"
leeway_secs = 30
client_cert_role = "none"

[limits]
enabled = true
user_reads = { per_second = 100, burst = 200 }
user_writes = { per_second = 10, burst = 50 }
service_reads = { per_second = 50000, burst = 100000 }
service_writes = { per_second = 20000, burst = 40000 }
operator = { per_second = 20, burst = 40 }

[telemetry]
log_filter = "info"
log_format = "plain"

[postgres]
url = "postgres://shardfeed:shardfeed-development-postgres-password@127.0.0.1:54329/shardfeed"
pool_size = 16
connect_timeout_ms = 2000
statement_timeout_ms = 5000
tls = "disable"

[redis]
nodes = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7004", "127.0.0.1:7005"]
namespace = ""
command_timeout_ms = 1000
connect_timeout_ms = 2000
tls = false

[grpc]
max_message_bytes = 4194304
request_timeout_ms = 10000
shutdown_grace_ms = 10000
concurrency_limit_per_connection = 256
health_probe_interval_ms = 1000
# TLS is off unless tls_cert_file and tls_key_file are set (docs/architecture.md, TLS).
tls_client_auth = "none"

[ingest]
listen_addr = "127.0.0.1:50051"
run_migrations = true
group_commit_enabled = true
group_commit_max_batch = 128
group_commit_statements = 1
idempotency_key_ttl_secs = 86400
idempotency_purge_interval_secs = 60
max_followees = 5000

[aggregator]
listen_addr = "127.0.0.1:50052"
node_timeout_ms = 250
max_concurrent_rebuilds = 8
meta_cache_enabled = true
meta_cache_bytes = 33554432
meta_cache_ttl_ms = 1000
body_cache_bytes = 67108864
followee_cache_bytes = 33554432
followee_cache_ttl_ms = 30000

[cache]
timeline_len = 800
ttl_secs = 604800
min_replica_acks = 1
replica_ack_timeout_ms = 100

[outbox]
relay_enabled = true
fast_path_enabled = true
fast_path_budget_ms = 250
fast_path_batches = 2
relay_interval_ms = 500
batch_size = 256
grace_ms = 2000
retry_base_ms = 500
retry_max_ms = 30000
max_attempts = 5

[hotspot]
top_k_capacity = 1024
half_life_ms = 2000
refresh_ms = 500
min_rate_per_s = 50.0
max_hot_authors = 64
shared_ttl_ms = 5000
near_cache_enabled = true
near_cache_bytes = 67108864
near_cache_ttl_ms = 500
near_cache_posts = 100
coalescing_enabled = true
replica_reads_enabled = true
key_replicas_enabled = true

[paging]
token_secret = "shardfeed-development-page-token-secret"
"#;

/// The page-token secret of the defaults: anyone can read it here, so the services accept it
/// in development mode only.
pub const DEV_PAGE_TOKEN_SECRET: &str = "shardfeed-development-page-token-secret";

/// The JWT key of development mode when no key is configured (`shardfeed token` mints with
/// it). Refused outside development mode.
pub const DEV_JWT_SECRET: &str = "shardfeed-development-jwt-signing-key-not-for-production";

/// The secret in the file `path` (setting `key`), without its trailing line break. The error
/// names the setting and the path, never the content.
fn read_secret(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{key}: cannot read {}: {e}", path.display())))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(ConfigError(format!("{key}: {} is empty", path.display())));
    }
    Ok(SecretString::from(secret.to_owned()))
}

impl Settings {
    /// Defaults, then the file named by `SHARDFEED_CONFIG` (if any), then the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("SHARDFEED_CONFIG").ok();
        Self::load_from(file.as_deref().map(Path::new), std::env::vars())
    }

    /// Defaults, then `file` (must exist when given), then the given `SHARDFEED_*` variables.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("SHARDFEED_") && k != "SHARDFEED_CONFIG")
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("SHARDFEED")
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("redis.nodes")
                .try_parsing(true)
                .source(Some(env)),
        );
        let mut settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        if let Some(path) = &settings.paging.token_secret_file {
            settings.paging.token_secret = read_secret("paging.token_secret_file", path)?;
        }
        if let Some(path) = &settings.postgres.url_file {
            settings.postgres.url = read_secret("postgres.url_file", path)?;
        }
        if let Some(path) = &settings.auth.hs256_secret_file {
            settings.auth.hs256_secret = Some(read_secret("auth.hs256_secret_file", path)?);
        }
        if let Some(path) = &settings.redis.password_file {
            settings.redis.password = Some(read_secret("redis.password_file", path)?);
        }
        // An empty value (`SHARDFEED_REDIS__PASSWORD=`) means none.
        if settings.redis.username.as_deref() == Some("") {
            settings.redis.username = None;
        }
        if settings.redis.password() == Some("") {
            settings.redis.password = None;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The HS256 key tokens are verified (and `shardfeed token` mints) with: the configured
    /// one, else the built-in development key in development mode.
    pub fn hs256_secret(&self) -> Option<&str> {
        match &self.auth.hs256_secret {
            Some(secret) => Some(secret.expose_secret()),
            None if self.dev_mode => Some(DEV_JWT_SECRET),
            None => None,
        }
    }

    /// What a service checks before it starts: outside development mode, no built-in
    /// development secret and at least one way to verify tokens. The error says why and what
    /// to set.
    pub fn refuse_development_secrets(&self) -> Result<(), ConfigError> {
        if self.dev_mode {
            return Ok(());
        }
        if !self.auth.enabled {
            return Err(ConfigError(
                "auth.enabled = false admits anyone as an admin: development mode only".into(),
            ));
        }
        let why = "it is published in the source; set your own (or dev_mode = true, \
                   SHARDFEED_DEV_MODE=true, for local development only)";
        if self.paging.token_secret.expose_secret() == DEV_PAGE_TOKEN_SECRET {
            return Err(ConfigError(format!(
                "paging.token_secret is the built-in development secret: {why}, e.g. \
                 paging.token_secret_file"
            )));
        }
        if self.hs256_secret() == Some(DEV_JWT_SECRET) {
            return Err(ConfigError(format!(
                "auth.hs256_secret is the built-in development key: {why}"
            )));
        }
        if self.hs256_secret().is_none()
            && self.auth.public_keys.is_empty()
            && self.auth.jwks_file.is_none()
        {
            return Err(ConfigError(
                "auth: no key to verify tokens with; set auth.hs256_secret(_file), \
                 auth.public_keys or auth.jwks_file (or dev_mode = true for the built-in \
                 development key)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if let Some(secret) = &self.auth.hs256_secret {
            if secret.expose_secret().len() < 32 {
                return bad("auth.hs256_secret", "must be at least 32 bytes");
            }
        }
        if self.auth.client_cert_role != ClientCertRole::None
            && self.grpc.tls_client_auth == crate::tls::ClientAuth::None
        {
            return bad(
                "auth.client_cert_role",
                "needs client certificates: set grpc.tls_client_auth (and its CA)",
            );
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return bad("auth.issuer", "and auth.audience must not be empty");
        }
        for (name, quota) in [
            ("limits.user_reads", self.limits.user_reads),
            ("limits.user_writes", self.limits.user_writes),
            ("limits.service_reads", self.limits.service_reads),
            ("limits.service_writes", self.limits.service_writes),
            ("limits.operator", self.limits.operator),
        ] {
            if quota.per_second == 0 || quota.burst == 0 {
                return bad(name, "per_second and burst must be positive");
            }
        }
        self.postgres.validate()?;
        self.redis.validate()?;
        if self.grpc.max_message_bytes < 1024 {
            return bad("grpc.max_message_bytes", "must be at least 1024");
        }
        if self.grpc.request_timeout_ms == 0 {
            return bad("grpc.request_timeout_ms", "must be positive");
        }
        if self.grpc.concurrency_limit_per_connection == 0 {
            return bad("grpc.concurrency_limit_per_connection", "must be positive");
        }
        if self.cache.timeline_len == 0 {
            return bad("cache.timeline_len", "must be at least 1");
        }
        if self.cache.ttl_secs == 0 {
            return bad("cache.ttl_secs", "must be positive");
        }
        if self.outbox.batch_size == 0 {
            return bad("outbox.batch_size", "must be at least 1");
        }
        if self.aggregator.meta_cache_ttl_ms == 0 || self.aggregator.meta_cache_ttl_ms > 1000 {
            return bad(
                "aggregator.meta_cache_ttl_ms",
                "must be between 1 and 1000 (the visibility bound)",
            );
        }
        if self.hotspot.top_k_capacity == 0 {
            return bad("hotspot.top_k_capacity", "must be at least 1");
        }
        if self.hotspot.half_life_ms == 0 || self.hotspot.refresh_ms == 0 {
            return bad(
                "hotspot.half_life_ms",
                "and hotspot.refresh_ms must be positive",
            );
        }
        if self.hotspot.min_rate_per_s.is_nan() || self.hotspot.min_rate_per_s <= 0.0 {
            return bad("hotspot.min_rate_per_s", "must be positive");
        }
        if self.hotspot.near_cache_ttl_ms == 0 || self.hotspot.near_cache_ttl_ms > 1000 {
            return bad(
                "hotspot.near_cache_ttl_ms",
                "must be between 1 and 1000 (the visibility bound)",
            );
        }
        if self.hotspot.near_cache_posts == 0 {
            return bad("hotspot.near_cache_posts", "must be at least 1");
        }
        if self.ingest.group_commit_max_batch == 0 || self.ingest.group_commit_statements == 0 {
            return bad(
                "ingest.group_commit_max_batch",
                "and ingest.group_commit_statements must be at least 1",
            );
        }
        if self.ingest.max_followees < 1 {
            return bad("ingest.max_followees", "must be at least 1");
        }
        if self.ingest.idempotency_key_ttl_secs < 60 {
            return bad(
                "ingest.idempotency_key_ttl_secs",
                "must be at least 60 (retries must find their key)",
            );
        }
        if self.ingest.idempotency_purge_interval_secs == 0 {
            return bad("ingest.idempotency_purge_interval_secs", "must be positive");
        }
        if self.aggregator.followee_cache_ttl_ms == 0 {
            return bad("aggregator.followee_cache_ttl_ms", "must be positive");
        }
        if self.outbox.fast_path_budget_ms == 0 {
            return bad("outbox.fast_path_budget_ms", "must be positive");
        }
        if self.outbox.fast_path_batches == 0 {
            return bad("outbox.fast_path_batches", "must be at least 1");
        }
        if self.outbox.retry_base_ms == 0 || self.outbox.retry_max_ms < self.outbox.retry_base_ms {
            return bad(
                "outbox.retry_base_ms",
                "must be positive and at most outbox.retry_max_ms",
            );
        }
        if self.outbox.max_attempts < 1 {
            return bad("outbox.max_attempts", "must be at least 1");
        }
        if self.outbox.relay_interval_ms == 0 {
            return bad("outbox.relay_interval_ms", "must be positive");
        }
        if self.paging.token_secret.expose_secret().len() < 16 {
            return bad("paging.token_secret", "must be at least 16 bytes");
        }
        if self.grpc.health_probe_interval_ms == 0 {
            return bad("grpc.health_probe_interval_ms", "must be positive");
        }
        self.grpc.check_tls().map_err(ConfigError)?;
        if let Some(endpoint) = self.telemetry.otlp_endpoint.as_deref() {
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            if !endpoint.is_empty() && !scheme_ok {
                return bad(
                    "telemetry.otlp_endpoint",
                    "must start with http:// or https://",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secrets_come_from_files_and_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "a-mounted-secret-of-some-length\n").unwrap();
        let url = dir.path().join("url");
        std::fs::write(&url, "postgres://app:hunter2@db:5432/feeds\r\n").unwrap();
        let s = Settings::load_from(
            None,
            env(&[
                (
                    "SHARDFEED_PAGING__TOKEN_SECRET_FILE",
                    secret.to_str().unwrap(),
                ),
                ("SHARDFEED_POSTGRES__URL_FILE", url.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.paging.token_secret.expose_secret(),
            "a-mounted-secret-of-some-length"
        );
        assert_eq!(s.postgres.url(), "postgres://app:hunter2@db:5432/feeds");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("mounted-secret"));

        // A missing or empty file names the setting and the path, not a secret.
        let refusal = |key: &str, path: &std::path::Path| {
            Settings::load_from(None, env(&[(key, path.to_str().unwrap())]))
                .unwrap_err()
                .to_string()
        };
        let err = refusal(
            "SHARDFEED_POSTGRES__URL_FILE",
            &dir.path().join("nothing-here"),
        );
        assert!(
            err.contains("postgres.url_file") && err.contains("nothing-here"),
            "{err}"
        );
        std::fs::write(&secret, "\n").unwrap();
        let err = refusal("SHARDFEED_PAGING__TOKEN_SECRET_FILE", &secret);
        assert!(
            err.contains("paging.token_secret_file") && err.contains("is empty"),
            "{err}"
        );
        // A short secret from a file fails the same check as one set directly.
        std::fs::write(&secret, "short").unwrap();
        let err = refusal("SHARDFEED_PAGING__TOKEN_SECRET_FILE", &secret);
        assert!(err.contains("at least 16 bytes"), "{err}");
    }

    #[test]
    fn redis_credentials_and_tls_come_from_settings_and_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = Settings::load_from(None, env(&[])).unwrap();
        assert!(defaults.redis.username.is_none() && defaults.redis.password.is_none());
        assert!(!defaults.redis.tls && defaults.redis.tls_ca_file.is_none());

        let s = Settings::load_from(
            None,
            env(&[
                ("SHARDFEED_REDIS__USERNAME", "shardfeed"),
                ("SHARDFEED_REDIS__PASSWORD", "redis-hunter2"),
                ("SHARDFEED_REDIS__TLS", "true"),
                ("SHARDFEED_REDIS__TLS_CA_FILE", "/etc/shardfeed/ca.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(s.redis.username.as_deref(), Some("shardfeed"));
        assert_eq!(s.redis.password(), Some("redis-hunter2"));
        assert!(s.redis.tls);
        assert_eq!(
            s.redis.tls_ca_file.as_deref(),
            Some(Path::new("/etc/shardfeed/ca.pem"))
        );
        assert!(!format!("{s:?}").contains("redis-hunter2"));

        // The file wins over the value, as for every other secret.
        let file = dir.path().join("redis-password");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let s = Settings::load_from(
            None,
            env(&[
                ("SHARDFEED_REDIS__PASSWORD", "from-the-env"),
                ("SHARDFEED_REDIS__PASSWORD_FILE", file.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(s.redis.password(), Some("from-the-file"));
        // Empty values are none.
        let s = Settings::load_from(
            None,
            env(&[
                ("SHARDFEED_REDIS__USERNAME", ""),
                ("SHARDFEED_REDIS__PASSWORD", ""),
            ]),
        )
        .unwrap();
        assert!(s.redis.username.is_none() && s.redis.password.is_none());

        let refused = |pairs: &[(&str, &str)]| {
            Settings::load_from(None, env(pairs))
                .unwrap_err()
                .to_string()
        };
        let err = refused(&[("SHARDFEED_REDIS__USERNAME", "shardfeed")]);
        assert!(
            err.contains("redis.username") && err.contains("redis.password"),
            "{err}"
        );
        let err = refused(&[("SHARDFEED_REDIS__TLS_CA_FILE", "/ca.pem")]);
        assert!(err.contains("redis.tls_ca_file"), "{err}");
        let missing = dir.path().join("no-password-here");
        let err = refused(&[("SHARDFEED_REDIS__PASSWORD_FILE", missing.to_str().unwrap())]);
        assert!(
            err.contains("redis.password_file") && err.contains("no-password-here"),
            "{err}"
        );
        let err = refused(&[("SHARDFEED_REDIS__TLS", "maybe")]);
        assert!(err.contains("tls"), "{err}");
    }

    #[test]
    fn postgres_tls_is_one_setting_and_the_url_may_not_contradict_it() {
        let defaults = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(defaults.postgres.tls, PostgresTls::Disable);
        for (value, tls) in [
            ("disable", PostgresTls::Disable),
            ("require", PostgresTls::Require),
            ("verify-full", PostgresTls::VerifyFull),
        ] {
            let s = Settings::load_from(None, env(&[("SHARDFEED_POSTGRES__TLS", value)])).unwrap();
            assert_eq!(s.postgres.tls, tls, "{value}");
        }
        let s = Settings::load_from(
            None,
            env(&[
                ("SHARDFEED_POSTGRES__TLS", "verify-full"),
                (
                    "SHARDFEED_POSTGRES__TLS_CA_FILE",
                    "/etc/shardfeed/pg-ca.pem",
                ),
                (
                    "SHARDFEED_POSTGRES__URL",
                    "postgres://app:pg-hunter2@db:5432/feeds?sslmode=require",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.postgres.tls_ca_file.as_deref(),
            Some(Path::new("/etc/shardfeed/pg-ca.pem"))
        );

        let refused = |pairs: &[(&str, &str)]| {
            Settings::load_from(None, env(pairs))
                .unwrap_err()
                .to_string()
        };
        let err = refused(&[("SHARDFEED_POSTGRES__TLS", "verify-ca")]);
        assert!(err.contains("tls"), "{err}");
        let err = refused(&[
            ("SHARDFEED_POSTGRES__TLS", "require"),
            ("SHARDFEED_POSTGRES__TLS_CA_FILE", "/ca.pem"),
        ]);
        assert!(err.contains("postgres.tls_ca_file"), "{err}");
        let err = refused(&[(
            "SHARDFEED_POSTGRES__URL",
            "postgres://app:pg-hunter2@db:5432/feeds?sslmode=require",
        )]);
        assert!(
            err.contains("postgres.tls") && !err.contains("hunter2"),
            "{err}"
        );
        let err = refused(&[
            ("SHARDFEED_POSTGRES__TLS", "require"),
            (
                "SHARDFEED_POSTGRES__URL",
                "postgres://app:pg-hunter2@db/feeds?sslmode=disable",
            ),
        ]);
        assert!(err.contains("sslmode=disable"), "{err}");
        let err = refused(&[(
            "SHARDFEED_POSTGRES__URL",
            "postgres://app:pg-hunter2@db:notaport/feeds",
        )]);
        assert!(
            err.contains("postgres.url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn defaults_load() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.ingest.listen_addr.port(), 50051);
        assert_eq!(s.aggregator.listen_addr.port(), 50052);
        assert_eq!(s.redis.nodes.len(), 6);
        assert_eq!(s.telemetry.log_format, LogFormat::Plain);
        assert!(s.telemetry.otlp_endpoint.is_none());
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let s = Settings::load_from(
            None,
            env(&[
                ("SHARDFEED_POSTGRES__POOL_SIZE", "3"),
                ("SHARDFEED_REDIS__NODES", "10.0.0.1:7000,10.0.0.2:7001"),
                ("SHARDFEED_TELEMETRY__LOG_FORMAT", "json"),
                ("SHARDFEED_INGEST__RUN_MIGRATIONS", "false"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.postgres.pool_size, 3);
        assert_eq!(s.redis.nodes, vec!["10.0.0.1:7000", "10.0.0.2:7001"]);
        assert_eq!(s.telemetry.log_format, LogFormat::Json);
        assert!(!s.ingest.run_migrations);
    }

    #[test]
    fn file_layer_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("shardfeed-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shardfeed.toml");
        std::fs::write(
            &path,
            "[ingest]\nlisten_addr = \"0.0.0.0:6000\"\n[grpc]\nrequest_timeout_ms = 1234\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&path),
            env(&[("SHARDFEED_INGEST__LISTEN_ADDR", "0.0.0.0:7001")]),
        )
        .unwrap();
        assert_eq!(s.ingest.listen_addr.port(), 7001);
        assert_eq!(s.grpc.request_timeout_ms, 1234);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("SHARDFEED_POSTGRES__POOL_SIZE", "lots", "pool_size"),
            ("SHARDFEED_INGEST__LISTEN_ADDR", "nowhere", "listen_addr"),
            ("SHARDFEED_TELEMETRY__LOG_FORMAT", "xml", "log_format"),
            ("SHARDFEED_REDIS__NODES", "no-port", "redis.nodes"),
            ("SHARDFEED_POSTGRES__POOL_SIZE", "0", "postgres.pool_size"),
        ];
        for (key, value, named) in cases {
            let err = Settings::load_from(None, env(&[(key, value)])).unwrap_err();
            assert!(
                err.to_string().contains(named),
                "{key}={value}: {err} should name {named}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Settings::load_from(None, env(&[("SHARDFEED_GRPC__MAX_MSG", "1")])).unwrap_err();
        assert!(err.to_string().contains("max_msg"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/shardfeed.toml")), env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
