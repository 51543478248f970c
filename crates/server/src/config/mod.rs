//! The one typed settings tree for both services and the CLI.
//!
//! Layers, later wins: built-in defaults → optional TOML file (`SHARDFEED_CONFIG` or an explicit
//! path) → environment variables `SHARDFEED_<SECTION>__<KEY>` (e.g. `SHARDFEED_POSTGRES__URL`,
//! `SHARDFEED_REDIS__NODES=127.0.0.1:7000,127.0.0.1:7001`). A value that does not parse stops
//! start-up with an error naming the key.
//!
//! The sections live by concern: `security` (who may call: tokens, limits, page tokens,
//! development mode), `stores` (PostgreSQL, Redis) and `services` (the gRPC frame, both
//! services, the cache, the outbox, hot spots, telemetry). The defaults are `defaults.toml`.

mod security;
mod services;
mod stores;

use std::path::Path;

use secrecy::SecretString;
use serde::Deserialize;

pub use security::*;
pub use services::*;
pub use stores::*;

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

/// Errors that stop start-up: the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: String) -> Self {
        ConfigError(message)
    }
}

const DEFAULTS: &str = include_str!("defaults.toml");

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

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        self.validate_security()?;
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
        match (self.telemetry.sampler, self.telemetry.sampler_arg) {
            (sampler, None) if sampler.takes_ratio() => {
                return bad(
                    "telemetry.sampler_arg",
                    "the traceidratio samplers need a ratio from 0 to 1",
                );
            }
            (sampler, Some(_)) if !sampler.takes_ratio() => {
                return bad(
                    "telemetry.sampler_arg",
                    "only the traceidratio samplers take one",
                );
            }
            (_, Some(ratio)) if !(0.0..=1.0).contains(&ratio) => {
                return bad("telemetry.sampler_arg", "must be from 0 to 1");
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
