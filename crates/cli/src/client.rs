//! What every command that talks to a running stack shares: the flags that name the services
//! and PostgreSQL, and how to reach the services (TLS, mutual TLS), gRPC channels shared
//! round-robin by workers, PostgreSQL connections, and the `OpError` a failed call is recorded
//! as.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use shardfeed_proto::auth::{with_bearer, AuthChannel, Bearer};
use shardfeed_server::config::PostgresSettings;
use shardfeed_server::{auth::Role, Settings};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::measure::driver::OP_TIMEOUT;
use crate::measure::OpError;

/// The env knobs of `--ingest` and `--aggregator`. Not `SHARDFEED_*`: every such variable is a
/// setting, and an unknown one stops the settings from loading. `shardfeed dev env` sets them.
pub const INGEST_URL_VAR: &str = "SFDEV_INGEST_URL";
pub const AGGREGATOR_URL_VAR: &str = "SFDEV_AGGREGATOR_URL";
/// The env knobs of the `--tls-*` flags, not `SHARDFEED_*` for the same reason.
pub const TLS_CA_VAR: &str = "SFDEV_TLS_CA";
pub const TLS_CERT_VAR: &str = "SFDEV_TLS_CERT";
pub const TLS_KEY_VAR: &str = "SFDEV_TLS_KEY";
pub const TLS_DOMAIN_VAR: &str = "SFDEV_TLS_DOMAIN";

/// A bearer token for the CLI's calls; without it the CLI mints its own (see [`bearer`]).
pub const TOKEN_VAR: &str = "SFDEV_TOKEN";

/// The subject of the token the CLI mints for itself.
pub const CLI_SUBJECT: &str = "shardfeed-cli";

/// How long a token the CLI mints for itself lasts: longer than any bench or simulation.
const CLI_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the CLI's commands send as their credentials: `SFDEV_TOKEN` when set, else an admin
/// token minted with the HS256 key of `settings` (the development key in development mode,
/// which `shardfeed dev env` sets). The demo, the simulation and the benches act for many
/// users and read the hot set, hence admin.
pub fn bearer(settings: &Settings) -> anyhow::Result<Bearer> {
    let token = match std::env::var(TOKEN_VAR) {
        Ok(token) if !token.is_empty() => token,
        _ => shardfeed_server::auth::mint(settings, CLI_SUBJECT, Role::Admin, CLI_TOKEN_TTL)
            .with_context(|| format!("minting the CLI's token (or set {TOKEN_VAR})"))?,
    };
    Bearer::new(&token).with_context(|| format!("{TOKEN_VAR} is not valid header text"))
}
/// `--ingest`: the ingest service.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestFlag {
    /// The ingest service.
    #[arg(
        id = "ingest",
        long = "ingest",
        value_name = "INGEST",
        default_value = "http://127.0.0.1:50051",
        env = INGEST_URL_VAR
    )]
    pub url: String,
}

/// `--aggregator`: the aggregator service.
#[derive(clap::Args, Debug, Clone)]
pub struct AggregatorFlag {
    /// The aggregator service.
    #[arg(
        id = "aggregator",
        long = "aggregator",
        value_name = "AGGREGATOR",
        default_value = "http://127.0.0.1:50052",
        env = AGGREGATOR_URL_VAR
    )]
    pub url: String,
}

/// `--postgres-url`: the stack's PostgreSQL, for what a command reads or writes beside the API.
#[derive(clap::Args, Debug, Clone)]
pub struct PostgresFlag {
    /// The stack's PostgreSQL [default: postgres.url of the settings, i.e.
    /// SHARDFEED_POSTGRES__URL or the local stack's]. TLS as postgres.tls says.
    #[arg(
        id = "postgres_url",
        long = "postgres-url",
        value_name = "POSTGRES_URL"
    )]
    pub url: Option<String>,
}

impl PostgresFlag {
    /// The flag's URL, else the settings' one; TLS and timeouts from the settings.
    pub fn config(&self, settings: &Settings) -> anyhow::Result<PostgresTarget> {
        postgres_target(&settings.postgres, self.url.as_deref())
    }
}

/// `--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-domain`: how to reach services that serve TLS
/// (`grpc.tls_*`). TLS is on for an `https://` URL, and for any URL once one of these is given
/// (`http://` then means `https://`); plaintext h2c otherwise.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsFlags {
    /// The CA certificate (PEM) that signed the services' certificates [default for https://:
    /// the system's roots].
    #[arg(id = "tls_ca", long = "tls-ca", value_name = "FILE", env = TLS_CA_VAR)]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, for services that ask for one (mutual TLS).
    #[arg(
        id = "tls_cert",
        long = "tls-cert",
        value_name = "FILE",
        env = TLS_CERT_VAR,
        requires = "tls_key"
    )]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        id = "tls_key",
        long = "tls-key",
        value_name = "FILE",
        env = TLS_KEY_VAR,
        requires = "tls_cert"
    )]
    pub key: Option<PathBuf>,
    /// The name the services' certificates are checked against [default: the URL's host].
    #[arg(
        id = "tls_domain",
        long = "tls-domain",
        value_name = "NAME",
        env = TLS_DOMAIN_VAR
    )]
    pub domain: Option<String>,
}

impl TlsFlags {
    /// The knobs alone (`SFDEV_TLS_*`), for what has no flags of its own (`shardfeed dev`).
    pub fn from_env() -> TlsFlags {
        let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
        TlsFlags {
            ca: var(TLS_CA_VAR).map(PathBuf::from),
            cert: var(TLS_CERT_VAR).map(PathBuf::from),
            key: var(TLS_KEY_VAR).map(PathBuf::from),
            domain: var(TLS_DOMAIN_VAR).and_then(|value| value.into_string().ok()),
        }
    }

    /// Whether a flag asks for TLS.
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.domain.is_some()
    }

    /// The endpoint of `url`, with TLS when the URL or a flag asks for it.
    pub fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        let tls = url.starts_with("https://") || self.any();
        let url = match url.strip_prefix("http://") {
            Some(rest) if tls => format!("https://{rest}"),
            _ => url.to_owned(),
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("{url} is not a valid endpoint"))?;
        if !tls {
            return Ok(endpoint);
        }
        endpoint
            .tls_config(self.client_config()?)
            .with_context(|| format!("TLS to {url} (--tls-*): the certificates do not load"))
    }

    fn client_config(&self) -> anyhow::Result<ClientTlsConfig> {
        let read = |result: Result<Vec<u8>, String>| result.map_err(anyhow::Error::msg);
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(
                shardfeed_server::tls::read_certificates("--tls-ca", ca),
            )?)),
            None => config.with_native_roots(),
        };
        if self.cert.is_some() != self.key.is_some() {
            anyhow::bail!("--tls-cert ({TLS_CERT_VAR}) and --tls-key ({TLS_KEY_VAR}) go together");
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let cert = read(shardfeed_server::tls::read_certificates("--tls-cert", cert))?;
            let key = read(shardfeed_server::tls::read_private_key("--tls-key", key))?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

/// Where and how the CLI connects to PostgreSQL: the parsed URL, and the settings whose TLS
/// it is made with.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub config: tokio_postgres::Config,
    settings: PostgresSettings,
}

/// HTTP/2 connections to one service, handed out round-robin to the workers; every call on
/// them carries the same bearer token.
#[derive(Debug, Clone)]
pub struct Channels {
    channels: Vec<Channel>,
    bearer: Bearer,
}

impl Channels {
    /// `count` channels to `endpoint`, each its own HTTP/2 connection, over TLS as `tls` says,
    /// sending `bearer` with every call; `service` names it in the error when it cannot be
    /// reached.
    pub async fn connect(
        endpoint: &str,
        tls: &TlsFlags,
        count: usize,
        service: &str,
        bearer: &Bearer,
    ) -> anyhow::Result<Self> {
        let endpoint = tls
            .endpoint(endpoint)?
            .connect_timeout(Duration::from_secs(3))
            .timeout(OP_TIMEOUT)
            .tcp_nodelay(true);
        let mut channels = Vec::with_capacity(count);
        for _ in 0..count {
            // One `connect` per channel: each is its own HTTP/2 connection.
            let channel = endpoint.connect().await.with_context(|| {
                format!(
                    "cannot reach the {service} at {}; is the stack up (deploy/local/up.sh)?",
                    endpoint.uri()
                )
            })?;
            channels.push(channel);
        }
        Ok(Channels {
            channels,
            bearer: bearer.clone(),
        })
    }

    /// The channel of worker `i`: the channels in turn.
    pub fn get(&self, i: usize) -> AuthChannel {
        with_bearer(self.raw(i), self.bearer.clone())
    }

    /// The channel of worker `i` without credentials (health needs none).
    pub fn raw(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    /// The first `n` channels alone.
    pub fn first(&self, n: usize) -> Channels {
        Channels {
            channels: self.channels[..n.min(self.channels.len())].to_vec(),
            bearer: self.bearer.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }
}

/// A failed gRPC call: kind is its code.
pub fn status_error(status: &tonic::Status) -> OpError {
    OpError::new(format!("{:?}", status.code()), status.message())
}

/// `Code: message`, or the code alone when the message is empty.
pub fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// A failed PostgreSQL call: kind is its SQLSTATE when the server answered.
pub fn pg_error(err: tokio_postgres::Error) -> OpError {
    match err.as_db_error() {
        Some(db) => OpError::new(format!("SQLSTATE {}", db.code().code()), db.message()),
        None if err.is_closed() => OpError::new("ConnectionClosed", err.to_string()),
        None => OpError::new("Postgres", format!("{err:#}")),
    }
}

/// `settings` with `url` instead of theirs (the settings' own when `None`).
pub fn postgres_target(
    settings: &PostgresSettings,
    url: Option<&str>,
) -> anyhow::Result<PostgresTarget> {
    let mut settings = settings.clone();
    if let Some(url) = url {
        settings.url = url.to_owned().into();
    }
    let mut config = shardfeed_server::postgres::client_config(&settings)
        .context("the PostgreSQL URL (--postgres-url or postgres.url) is not valid")?;
    config.connect_timeout(settings.connect_timeout().max(Duration::from_secs(3)));
    config.application_name("shardfeed-cli");
    Ok(PostgresTarget { config, settings })
}

/// host:port/db of the target, without the password.
pub fn describe_postgres(target: &PostgresTarget) -> String {
    let config = &target.config;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => return "(from the given URL)".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

pub async fn connect_postgres(target: &PostgresTarget) -> anyhow::Result<tokio_postgres::Client> {
    shardfeed_server::postgres::connect_with(&target.config, &target.settings)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}; is the stack up (deploy/local/up.sh)?",
                describe_postgres(target)
            )
        })
}

/// The stack's Redis Cluster, as its services see it.
pub async fn connect_redis(settings: &Settings) -> anyhow::Result<fred::clients::Client> {
    shardfeed_server::redis::connect_and_wait(&settings.redis, Duration::from_secs(10))
        .await
        .context("cannot reach the Redis Cluster; is the stack up (deploy/local/up.sh)?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_is_described_without_the_password() {
        let defaults = PostgresSettings::from_url("postgres://shardfeed@127.0.0.1/shardfeed");
        let target = postgres_target(
            &defaults,
            Some("postgres://me:secret@db.example:6543/feeds"),
        )
        .unwrap();
        assert_eq!(describe_postgres(&target), "db.example:6543/feeds");
        assert_eq!(
            target.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert!(!format!("{target:?}").contains("secret"));
        assert!(postgres_target(&defaults, Some("not a url")).is_err());
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        ingest: IngestFlag,
        #[command(flatten)]
        aggregator: AggregatorFlag,
        #[command(flatten)]
        tls: TlsFlags,
    }

    /// The only test that sets these variables (the environment is shared by the test threads).
    #[test]
    fn the_service_knobs_are_honoured_and_leave_the_settings_loadable() {
        use clap::Parser;
        let defaults = Flags::parse_from(["t"]);
        assert_eq!(defaults.ingest.url, "http://127.0.0.1:50051");
        assert!(!defaults.tls.any());
        let knobs = [
            (INGEST_URL_VAR, "http://127.0.0.1:50081"),
            (AGGREGATOR_URL_VAR, "http://127.0.0.1:50082"),
            (TLS_CA_VAR, "/etc/shardfeed/ca.pem"),
            (TLS_CERT_VAR, "/etc/shardfeed/client.pem"),
            (TLS_KEY_VAR, "/etc/shardfeed/client-key.pem"),
            (TLS_DOMAIN_VAR, "ingest.internal"),
            (TOKEN_VAR, "header.payload.signature"),
        ];
        for (name, value) in knobs {
            std::env::set_var(name, value);
        }
        let flags = Flags::parse_from(["t"]);
        let from_env = TlsFlags::from_env();
        let settings = Settings::load();
        // No key to mint with is needed: the knob's token is sent as it is.
        let given = bearer(&Settings::load_from(None, Vec::new()).unwrap());
        for (name, _) in knobs {
            std::env::remove_var(name);
        }
        assert_eq!(flags.ingest.url, "http://127.0.0.1:50081");
        assert_eq!(flags.aggregator.url, "http://127.0.0.1:50082");
        for tls in [&flags.tls, &from_env] {
            assert_eq!(tls.ca.as_deref(), Some("/etc/shardfeed/ca.pem".as_ref()));
            assert_eq!(
                tls.cert.as_deref(),
                Some("/etc/shardfeed/client.pem".as_ref())
            );
            assert_eq!(
                tls.key.as_deref(),
                Some("/etc/shardfeed/client-key.pem".as_ref())
            );
            assert_eq!(tls.domain.as_deref(), Some("ingest.internal"));
        }
        settings.expect("the knobs are no settings");
        let mut sent = tonic::Request::new(());
        sent = tonic::service::Interceptor::call(&mut given.unwrap(), sent).unwrap();
        assert_eq!(
            sent.metadata().get("authorization").unwrap(),
            "Bearer header.payload.signature"
        );
        // A flag still wins over its knob.
        let flags = Flags::parse_from(["t", "--ingest", "http://elsewhere:1"]);
        assert_eq!(flags.ingest.url, "http://elsewhere:1");
    }

    #[test]
    fn tls_follows_the_url_and_the_flags() {
        let plain = TlsFlags::default();
        let endpoint = plain.endpoint("http://127.0.0.1:50051").unwrap();
        assert_eq!(endpoint.uri().scheme_str(), Some("http"));

        let pki = tempfile::tempdir().unwrap();
        let files =
            shardfeed_testkit::tls::write_local_pki(pki.path(), &["localhost"], "cli").unwrap();
        let with_ca = TlsFlags {
            ca: Some(files.ca.clone()),
            ..TlsFlags::default()
        };
        // A TLS flag makes an http:// URL https://.
        let endpoint = with_ca.endpoint("http://127.0.0.1:50051").unwrap();
        assert_eq!(endpoint.uri().scheme_str(), Some("https"));
        assert_eq!(endpoint.uri().authority().unwrap(), "127.0.0.1:50051");
        let endpoint = with_ca.endpoint("https://ingest.internal:443").unwrap();
        assert_eq!(endpoint.uri().scheme_str(), Some("https"));

        // Unreadable or wrong files name the flag and the path, not the content.
        let missing = TlsFlags {
            ca: Some(pki.path().join("nothing.pem")),
            ..TlsFlags::default()
        };
        let err = format!("{:#}", missing.endpoint("https://h:1").unwrap_err());
        assert!(
            err.contains("--tls-ca") && err.contains("nothing.pem"),
            "{err}"
        );
        let swapped = TlsFlags {
            ca: Some(files.ca.clone()),
            cert: Some(files.client_key.clone()),
            key: Some(files.client_key.clone()),
            domain: None,
        };
        let err = format!("{:#}", swapped.endpoint("https://h:1").unwrap_err());
        assert!(
            err.contains("--tls-cert") && err.contains("client-key.pem"),
            "{err}"
        );
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        let half = TlsFlags {
            cert: Some(files.client_cert.clone()),
            ..with_ca.clone()
        };
        let err = format!("{:#}", half.endpoint("https://h:1").unwrap_err());
        assert!(err.contains("go together"), "{err}");
    }

    #[test]
    fn statuses_become_errors_by_code() {
        let err = status_error(&tonic::Status::unavailable("down"));
        assert_eq!(
            (err.kind.as_str(), err.message.as_str()),
            ("Unavailable", "down")
        );
        assert_eq!(status_text(&tonic::Status::not_found("")), "NotFound");
        assert_eq!(
            status_text(&tonic::Status::internal("boom")),
            "Internal: boom"
        );
    }
}
