//! `shardfeed dev`: the local stack without Docker — PostgreSQL, a 6-node Redis Cluster (3
//! masters, 3 replicas), migrations and both services, run by the testkit's supervisors in
//! their kept mode: the processes outlive the command, and `<repo>/.local/` keeps their state
//! (`run/`: pids, ports, data dirs; `log/`; `pg/`, `redis/`: the data), so that `down`,
//! `status` and `chaos` find exactly them and touch nothing else.
//!
//! The stores are authenticated as in production: PostgreSQL's superuser `shardfeed` logs in
//! with a password (scram-sha-256), and the Redis nodes accept the ACL user `shardfeed` alone.
//! Both passwords are fixed development values ([`DEV_PG_PASSWORD`], [`DEV_REDIS_PASSWORD`]),
//! like the page-token development secret: `shardfeed dev env` prints them as settings.

mod chaos;
mod ports;
mod stack;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use clap::{Args, Subcommand};
use shardfeed_server::Settings;

/// The environment knobs of the local stack. Deliberately not `SHARDFEED_…`: the services'
/// configuration reads every `SHARDFEED_*` variable as a setting (`__` separating levels) and
/// refuses unknown ones, so `SHARDFEED_PG_PORT` would make `shardfeed migrate` and both
/// services fail with "unknown field `pg_port`". The CLI's own settings follow the port knobs
/// ([`follow_port_knobs`]).
pub const PG_PORT_VAR: &str = "SFDEV_PG_PORT";
pub const REDIS_BASE_PORT_VAR: &str = "SFDEV_REDIS_BASE_PORT";
pub const INGEST_ADDR_VAR: &str = "SFDEV_INGEST_ADDR";
pub const AGGREGATOR_ADDR_VAR: &str = "SFDEV_AGGREGATOR_ADDR";
pub const START_TIMEOUT_VAR: &str = "SFDEV_START_TIMEOUT";

/// The local stack's PostgreSQL superuser and its password: development values, documented in
/// docs/architecture.md, for a stack that listens on 127.0.0.1 only.
pub const DEV_PG_USER: &str = "shardfeed";
pub const DEV_PG_PASSWORD: &str = "shardfeed-development-postgres-password";
/// The local stack's Redis ACL user and its password (development values too).
pub const DEV_REDIS_USER: &str = "shardfeed";
pub const DEV_REDIS_PASSWORD: &str = "shardfeed-development-redis-password";

#[derive(Args)]
pub struct DevArgs {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(Subcommand)]
enum DevCommand {
    /// Start what is not running: PostgreSQL, the Redis Cluster, then migrations and both
    /// services (built next to this binary), each waited for until healthy.
    Up {
        /// Only PostgreSQL and the Redis Cluster.
        #[arg(long)]
        stores_only: bool,
    },
    /// Stop both services and start them again from the binaries next to this one (the
    /// stores are left running, or started if missing; new migrations are applied): what
    /// `just watch` runs after each rebuild.
    Restart,
    /// Stop exactly what `up` started (found through .local/run/).
    Down {
        /// Also delete the data (PostgreSQL's and Redis'); logs are kept.
        #[arg(long)]
        purge: bool,
    },
    /// What runs, on which port, and whether it is healthy.
    Status,
    /// Show the logs (.local/log/).
    Logs {
        /// Follow (tail -F).
        #[arg(short, long)]
        follow: bool,
        /// Lines per file.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
        /// Components (default: all).
        #[arg(value_enum)]
        components: Vec<stack::Component>,
    },
    /// Break the Redis Cluster on purpose and watch it recover.
    Chaos {
        #[command(subcommand)]
        command: chaos::ChaosCommand,
    },
    /// Print the `export SHARDFEED_…` lines that point the CLI or a service at this stack
    /// (the stores' development credentials included), and `REDISCLI_AUTH` for
    /// `redis-cli --user shardfeed`.
    Env,
    /// Make a CA, a server certificate and a client certificate for local use in DIR, and print
    /// the `export` lines that turn on mutual TLS for the services (`grpc.tls_*`) and the CLI
    /// (`SFDEV_TLS_*`): `eval "$(shardfeed dev certs .local/tls)"`, then `dev up`.
    Certs {
        /// Where the PEM files go (created if missing; files there are replaced).
        dir: PathBuf,
        /// More names (DNS or IP) the server certificate is valid for, besides localhost,
        /// 127.0.0.1 and ::1.
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<String>,
        /// The client certificate's identity: a URI (its URI name) or a DNS name.
        #[arg(long, value_name = "ID", default_value = "spiffe://shardfeed/dev")]
        client: String,
    },
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if let DevCommand::Certs {
        dir,
        server_names,
        client,
    } = &args.command
    {
        // Needs no checkout: the files go where they are asked for.
        for line in certs(dir, server_names, client)? {
            println!("{line}");
        }
        return Ok(());
    }
    let stack = Stack::from_vars(repo_root()?.join(".local"), |name| std::env::var(name).ok())?;
    match args.command {
        DevCommand::Up { stores_only } => {
            ports::reserve(&stack.ports());
            stack::up(&stack, stores_only).await
        }
        DevCommand::Restart => {
            ports::reserve(&stack.ports());
            stack::restart(&stack).await
        }
        DevCommand::Down { purge } => stack::down(&stack, purge),
        DevCommand::Status => stack::status(&stack).await,
        DevCommand::Logs {
            follow,
            lines,
            components,
        } => stack::logs(&stack, follow, lines, &components),
        DevCommand::Chaos { command } => chaos::run(&stack, command).await,
        DevCommand::Env => {
            for (name, value) in stack.shell_env() {
                println!("export {name}={value}");
            }
            Ok(())
        }
        DevCommand::Certs { .. } => unreachable!("handled above"),
    }
}

/// The settings the CLI's own commands use (`migrate`, `sim`, `bench`, `demo`, `token`):
/// [`Settings::load`], with [`follow_port_knobs`] applied from the process environment.
pub fn cli_settings() -> anyhow::Result<Settings> {
    let mut settings = Settings::load()?;
    follow_port_knobs(&mut settings, |name| std::env::var(name).ok())?;
    Ok(settings)
}

/// The built-in defaults of `postgres.url` and `redis.nodes` are the local stack on its
/// default ports. When `SFDEV_PG_PORT` or `SFDEV_REDIS_BASE_PORT` moves the stack, a setting
/// still at its default moves with it, so that `shardfeed migrate` (and every other command)
/// reaches the stack that `dev up` started; a setting given by a file or a `SHARDFEED_*`
/// variable (e.g. from `dev env`) is left as it is.
pub fn follow_port_knobs(
    settings: &mut Settings,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let pg_moved = var(PG_PORT_VAR).is_some();
    let redis_moved = var(REDIS_BASE_PORT_VAR).is_some();
    if !pg_moved && !redis_moved {
        return Ok(());
    }
    // Checks every knob, as `dev up` does; the root is not used here.
    let stack = Stack::from_vars(PathBuf::new(), var)?;
    let defaults = Settings::load_from(None, Vec::new()).context("the built-in settings")?;
    if pg_moved && settings.postgres.url() == defaults.postgres.url() {
        settings.postgres.url = stack.pg_url().into();
    }
    if redis_moved && settings.redis.nodes == defaults.redis.nodes {
        settings.redis.nodes = stack.redis_nodes();
    }
    Ok(())
}

/// Writes the local PKI into `dir`/// Writes the local PKI into `dir` and returns the `export` lines that use it (absolute
/// paths, so that they hold from any directory).
fn certs(dir: &Path, server_names: &[String], client: &str) -> anyhow::Result<Vec<String>> {
    let names: Vec<&str> = shardfeed_testkit::tls::LOCAL_NAMES
        .iter()
        .copied()
        .chain(server_names.iter().map(String::as_str))
        .collect();
    let files = shardfeed_testkit::tls::write_local_pki(dir, &names, client)?;
    let absolute = |path: &Path| -> anyhow::Result<String> {
        let path =
            std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        path.to_str()
            .map(str::to_owned)
            .with_context(|| format!("{} is not UTF-8", path.display()))
    };
    eprintln!(
        "wrote {}: ca.pem, server.pem + server-key.pem ({}), client.pem + client-key.pem ({client})",
        dir.display(),
        names.join(", ")
    );
    Ok([
        (
            "SHARDFEED_GRPC__TLS_CERT_FILE",
            absolute(&files.server_cert)?,
        ),
        ("SHARDFEED_GRPC__TLS_KEY_FILE", absolute(&files.server_key)?),
        ("SHARDFEED_GRPC__TLS_CLIENT_CA_FILE", absolute(&files.ca)?),
        ("SHARDFEED_GRPC__TLS_CLIENT_AUTH", "required".to_owned()),
        (crate::client::TLS_CA_VAR, absolute(&files.ca)?),
        (crate::client::TLS_CERT_VAR, absolute(&files.client_cert)?),
        (crate::client::TLS_KEY_VAR, absolute(&files.client_key)?),
    ]
    .into_iter()
    .map(|(name, value)| format!("export {name}={}", shell_word(&value)))
    .collect())
}

/// `value` as one word for `eval`: as it is when nothing in it is special to the shell.
fn shell_word(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-:,@+=".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// The repo whose `.local/` holds the stack: the nearest ancestor of the working dir with
/// `Cargo.toml` and `deploy/local/`.
fn repo_root() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    cwd.ancestors()
        .find(|dir| dir.join("Cargo.toml").is_file() && dir.join("deploy/local").is_dir())
        .map(Path::to_owned)
        .with_context(|| {
            format!(
                "{} is not inside a shardfeed checkout (no Cargo.toml with deploy/local/ above it)",
                cwd.display()
            )
        })
}

/// Where the local stack lives and listens, from the `SFDEV_*` knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// `<repo>/.local`.
    pub root: PathBuf,
    pub pg_port: u16,
    /// The six Redis nodes listen on `redis_base_port..redis_base_port + 6`.
    pub redis_base_port: u16,
    pub ingest_addr: SocketAddr,
    pub aggregator_addr: SocketAddr,
    /// How long each service may take to report SERVING (the stores have fixed bounds).
    pub start_timeout: Duration,
}

const REDIS_NODES: u16 = 6;

impl Stack {
    /// Resolves the knobs through `var` (the process environment, or a test's map).
    pub fn from_vars(root: PathBuf, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Stack> {
        fn parse<T: std::str::FromStr>(
            var: &impl Fn(&str) -> Option<String>,
            name: &str,
            default: T,
            what: &str,
        ) -> anyhow::Result<T> {
            match var(name) {
                None => Ok(default),
                Some(text) => text
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name} must be {what}, got {text:?}")),
            }
        }
        let pg_port: u16 = parse(&var, PG_PORT_VAR, 54329, "a port number")?;
        ensure!(
            pg_port != 5432,
            "{PG_PORT_VAR}=5432 is refused: the local stack never takes the system PostgreSQL port"
        );
        let redis_base_port: u16 = parse(&var, REDIS_BASE_PORT_VAR, 7000, "a port number")?;
        if u32::from(redis_base_port) + u32::from(REDIS_NODES) - 1 + 10_000 > 65_535 {
            bail!(
                "{REDIS_BASE_PORT_VAR}={redis_base_port} is too high (each node also needs its \
                 cluster bus port, port + 10000)"
            );
        }
        let addr = |name, default: &str| -> anyhow::Result<SocketAddr> {
            parse(
                &var,
                name,
                default.parse()?,
                "an address like 127.0.0.1:50051",
            )
        };
        let start_timeout: u64 = parse(&var, START_TIMEOUT_VAR, 60, "a number of seconds")?;
        Ok(Stack {
            root,
            pg_port,
            redis_base_port,
            ingest_addr: addr(INGEST_ADDR_VAR, "127.0.0.1:50051")?,
            aggregator_addr: addr(AGGREGATOR_ADDR_VAR, "127.0.0.1:50052")?,
            start_timeout: Duration::from_secs(start_timeout),
        })
    }

    pub fn state(&self) -> shardfeed_testkit::StateDir {
        shardfeed_testkit::StateDir::new(&self.root)
    }

    /// The stack's database, with the development password.
    pub fn pg_url(&self) -> String {
        self.pg_url_of("shardfeed")
    }

    pub fn pg_url_of(&self, database: &str) -> String {
        format!(
            "postgres://{DEV_PG_USER}:{DEV_PG_PASSWORD}@127.0.0.1:{}/{database}",
            self.pg_port
        )
    }

    /// What the stack's Redis nodes accept.
    pub fn redis_credentials(&self) -> shardfeed_testkit::RedisCredentials {
        shardfeed_testkit::RedisCredentials::new(DEV_REDIS_USER, DEV_REDIS_PASSWORD)
            .expect("the development credentials are plain")
    }

    pub fn redis_nodes(&self) -> Vec<String> {
        (0..REDIS_NODES)
            .map(|i| format!("127.0.0.1:{}", self.redis_base_port + i))
            .collect()
    }

    /// Every port the stack listens on, the Redis cluster bus ports included.
    pub fn ports(&self) -> Vec<u16> {
        let redis = (0..REDIS_NODES).map(|i| self.redis_base_port + i);
        std::iter::once(self.pg_port)
            .chain(redis.clone())
            .chain(redis.map(|port| port + 10_000))
            .chain([self.ingest_addr.port(), self.aggregator_addr.port()])
            .collect()
    }

    pub fn redis_dir(&self) -> PathBuf {
        self.root.join("redis")
    }

    /// The settings (`SHARDFEED_*`) that point the CLI and the services at this stack, and the
    /// CLI's own service knobs (`--ingest`, `--aggregator`).
    pub fn client_env(&self) -> Vec<(String, String)> {
        [
            // The local stack is for development: its services and the CLI take the
            // built-in development secrets (and `shardfeed token` signs with its key).
            ("SHARDFEED_DEV_MODE", "true".to_owned()),
            ("SHARDFEED_POSTGRES__URL", self.pg_url()),
            ("SHARDFEED_REDIS__NODES", self.redis_nodes().join(",")),
            ("SHARDFEED_REDIS__USERNAME", DEV_REDIS_USER.to_owned()),
            ("SHARDFEED_REDIS__PASSWORD", DEV_REDIS_PASSWORD.to_owned()),
            (
                "SHARDFEED_INGEST__LISTEN_ADDR",
                self.ingest_addr.to_string(),
            ),
            (
                "SHARDFEED_AGGREGATOR__LISTEN_ADDR",
                self.aggregator_addr.to_string(),
            ),
            (
                crate::client::INGEST_URL_VAR,
                format!("http://{}", self.ingest_addr),
            ),
            (
                crate::client::AGGREGATOR_URL_VAR,
                format!("http://{}", self.aggregator_addr),
            ),
        ]
        .map(|(name, value)| (name.to_owned(), value))
        .into()
    }

    /// [`Stack::client_env`] and `REDISCLI_AUTH` (redis-cli's password variable), for a shell.
    pub fn shell_env(&self) -> Vec<(String, String)> {
        let mut env = self.client_env();
        env.push(("REDISCLI_AUTH".to_owned(), DEV_REDIS_PASSWORD.to_owned()));
        env
    }
}

#[cfg(test)]
mod tests;
