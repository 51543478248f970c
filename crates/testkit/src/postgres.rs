//! PostgreSQL: one postmaster per [`PgServer`], in a data dir of its own.

use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use nix::sys::signal::Signal;
use secrecy::{ExposeSecret, SecretString};
use wait_timeout::ChildExt;

use crate::dirs::{self, file_len, log_tail, InstanceDir};
use crate::ports::{self, PortLease};
use crate::process::{LaunchError, Lifetime, Proc};
use crate::state::{Record, StateDir};
use crate::{spawner, sys};

/// The name of a kept PostgreSQL in its [`StateDir`].
const KEPT_NAME: &str = "postgres";

/// The superuser that initdb creates, with a password (scram-sha-256 auth for every
/// connection, TCP and Unix socket alike).
const SUPERUSER: &str = "shardfeed";

/// Where the PostgreSQL 15 binaries are unless [`BINDIR_VAR`] says otherwise.
const DEFAULT_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// Names PostgreSQL's bin dir. Not `SHARDFEED_…`: every such variable is a setting of the
/// services' configuration, which refuses unknown ones.
pub const BINDIR_VAR: &str = "SFDEV_PG_BINDIR";

/// Test settings: durability off (a crash loses a test database, not data anyone needs), room
/// for many pools, small memory.
const TEST_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "200"),
    ("shared_buffers", "16MB"),
    ("logging_collector", "off"),
];

/// Settings of a kept server (the local stack): durable, room for the services' pools and a
/// benchmark's, no Unix socket (TCP on loopback only).
const KEPT_SETTINGS: &[(&str, &str)] = &[
    ("max_connections", "200"),
    ("logging_collector", "off"),
    ("unix_socket_directories", ""),
];

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One PostgreSQL postmaster on 127.0.0.1, with scram-sha-256 auth and superuser `shardfeed`
/// (a random password for a test's server, the caller's for a kept one).
///
/// A test's server ([`PgServer::start`]): dropping it shuts the server down (immediate mode)
/// and removes its data dir. If the test process dies instead, the postmaster gets SIGQUIT
/// (immediate shutdown, which also ends its backends) from `PR_SET_PDEATHSIG`.
///
/// A kept server ([`PgServer::start_kept`], the local stack) outlives the process: dropping it
/// leaves it running, and its record in the [`StateDir`] lets a later command find and stop it.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    bindir: PathBuf,
    /// The (uid, gid) to run as when we are root.
    owner: Option<(u32, u32)>,
    /// The superuser's.
    password: SecretString,
    /// `-c name=value` settings beyond the lifetime's own (TLS).
    extra_settings: Vec<(String, String)>,
    lifetime: Lifetime,
    /// The data dir (initdb's `-D`).
    data: PathBuf,
    log: PathBuf,
    /// Where the Unix socket goes; a kept server has none.
    socket_dir: Option<PathBuf>,
    child: Mutex<Option<Proc>>,
    /// The migrated template database, created on first use by `TestDb`.
    pub(crate) template: tokio::sync::OnceCell<()>,
    /// `CREATE DATABASE ... TEMPLATE` fails when run concurrently on one template.
    pub(crate) copy_lock: tokio::sync::Mutex<()>,
    _lease: Option<PortLease>,
    /// A test server's instance dir, declared last so it is removed only after the server is
    /// gone.
    dir: Option<InstanceDir>,
}

impl PgServer {
    /// Runs initdb into a fresh temp dir, starts the server on a free port and waits until it
    /// accepts connections.
    pub fn start() -> anyhow::Result<PgServer> {
        PgServer::start_with(None)
    }

    /// Like [`PgServer::start`], with `ssl = on` and this certificate and key (PEM): for tests
    /// of `postgres.tls`. Plain connections are still accepted.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> anyhow::Result<PgServer> {
        PgServer::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> anyhow::Result<PgServer> {
        let owner = run_as()?;
        let bindir = bindir();
        let dir = InstanceDir::create("pg")?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("giving {} to the postgres user", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let password = random_password();
        initdb(&bindir, dir.path(), &data, owner, &password, true)?;
        let mut extra_settings = Vec::new();
        if let Some((cert, key)) = tls {
            let cert_path = dir.path().join("server.crt");
            let key_path = dir.path().join("server.key");
            write_private(&cert_path, cert, owner)?;
            write_private(&key_path, key, owner)?;
            extra_settings.push(("ssl".to_owned(), "on".to_owned()));
            extra_settings.push(("ssl_cert_file".to_owned(), path_text(&cert_path)?));
            extra_settings.push(("ssl_key_file".to_owned(), path_text(&key_path)?));
        }
        let mut last_err = None;
        for _ in 0..10 {
            let lease = PortLease::acquire(false)?;
            let mut server = PgServer {
                port: lease.port(),
                bindir: bindir.clone(),
                owner,
                password: SecretString::from(password.clone()),
                extra_settings: extra_settings.clone(),
                lifetime: Lifetime::Test,
                data: data.clone(),
                log: dir.path().join("postgres.log"),
                socket_dir: Some(dir.path().to_owned()),
                child: Mutex::new(None),
                template: tokio::sync::OnceCell::new(),
                copy_lock: tokio::sync::Mutex::new(()),
                _lease: Some(lease),
                dir: None,
            };
            match server.launch() {
                Ok(child) => {
                    *server.child.lock() = Some(child);
                    server.dir = Some(dir);
                    return Ok(server);
                }
                Err(LaunchError::PortInUse(err)) => last_err = Some(err),
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context("postgres found no free port in 10 tries"))
    }

    /// A server that outlives this process (the local stack): data in `data` (initdb'd on
    /// first use), listening on `port`, its log in `state`'s `log/postgres.log` and its record
    /// in `state`. A server already recorded there is taken over as it is (on its port).
    ///
    /// As root the server runs as the `postgres` OS user, which must reach `data`: see
    /// [`kept_data_dir`]. The superuser's password is `password`, set by initdb; data made by
    /// an older shardfeed (trust auth, no password) is refused with what to run.
    pub fn start_kept(
        state: &StateDir,
        data: &Path,
        port: u16,
        password: &str,
    ) -> anyhow::Result<PgServer> {
        let owner = run_as()?;
        state.create()?;
        if trusts_connections(data)? {
            bail!(
                "the local stack's PostgreSQL data in {} was made by an older shardfeed, which \
                 let every connection in without a password: run `shardfeed dev down --purge` \
                 (this deletes the local stack's data), then `shardfeed dev up`",
                data.display()
            );
        }
        let mut server = PgServer {
            port,
            bindir: bindir(),
            owner,
            password: SecretString::from(password),
            extra_settings: Vec::new(),
            lifetime: Lifetime::Kept(state.clone()),
            data: data.to_owned(),
            log: state.log_path(KEPT_NAME),
            socket_dir: None,
            child: Mutex::new(None),
            template: tokio::sync::OnceCell::new(),
            copy_lock: tokio::sync::Mutex::new(()),
            _lease: None,
            dir: None,
        };
        if let Some(record) = state.live(KEPT_NAME)? {
            server.port = record.port;
            *server.child.lock() = Some(Proc::Recorded(record.process));
            return Ok(server);
        }
        if !data.join("PG_VERSION").exists() {
            if let Some(parent) = data.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(data) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("creating {}", data.display()))
                }
            }
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(data, Some(uid), Some(gid))
                    .with_context(|| format!("giving {} to the postgres user", data.display()))?;
            }
            initdb(
                &server.bindir,
                &state.log_dir(),
                data,
                owner,
                password,
                false,
            )?;
        }
        ensure!(
            ports::bindable(port),
            "port {port} is in use by a process this stack did not start"
        );
        let child = server.launch().map_err(anyhow::Error::from)?;
        *server.child.lock() = Some(child);
        Ok(server)
    }

    /// The TCP port on 127.0.0.1; it stays the same across `stop`/`restart`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://shardfeed:{password}@127.0.0.1:{port}/{database}`.
    pub fn url(&self, database: &str) -> String {
        self.url_as(SUPERUSER, self.password(), database)
    }

    /// The URL of `database` with another user and password, e.g. a wrong one.
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The superuser, `shardfeed`.
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        self.password.expose_secret()
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().as_ref().map(Proc::id)
    }

    /// A test server's instance dir: the data dir (`data/`), the unix socket and
    /// `postgres.log`; a kept server's data dir.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(&self.data, InstanceDir::path)
    }

    /// Fast shutdown (sessions are ended, nothing is lost); the data dir is kept so that
    /// `restart` brings the same databases back. Stopping a stopped server does nothing.
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock();
        if let Some(mut running) = child.take() {
            running
                .terminate(Signal::SIGINT, STOP_TIMEOUT)
                .context("stopping postgres")?;
        }
        if let Lifetime::Kept(state) = &self.lifetime {
            state.remove(KEPT_NAME)?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data dir and waits until it accepts
    /// connections. A running server is stopped first.
    pub fn restart(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock();
        if let Some(mut running) = child.take() {
            running
                .terminate(Signal::SIGINT, STOP_TIMEOUT)
                .context("stopping postgres")?;
        }
        let started = self
            .launch()
            .map_err(anyhow::Error::from)
            .with_context(|| format!("restarting postgres on port {}", self.port))?;
        *child = Some(started);
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.lifetime.is_kept() {
            return;
        }
        if let Some(mut running) = self.child.lock().take() {
            // Immediate shutdown: the data dir is about to go anyway.
            if let Err(err) = running.terminate(Signal::SIGQUIT, STOP_TIMEOUT) {
                tracing::warn!(error = %err, "could not stop postgres");
            }
        }
    }
}

/// Where a kept server's data dir goes: `preferred` when the `postgres` OS user (the server's
/// user when we are root) can reach it; else, since every parent dir must be searchable by
/// that user (a clone in root's 0700 home is not), a dir of its own under `/var/tmp` (kept
/// across reboots, unlike `/tmp`), named after `preferred` so that every command finds the
/// same one. That dir is created here (mode 0755) and must be ours and closed to writes by
/// others: one made by another user is refused.
pub fn kept_data_dir(preferred: &Path) -> anyhow::Result<PathBuf> {
    let Some((uid, gid)) = run_as()? else {
        return Ok(preferred.to_owned());
    };
    if dirs::reachable_by(preferred, uid, gid) {
        return Ok(preferred.to_owned());
    }
    let outside = dirs::outside_home(preferred);
    dirs::ensure_private_parent(&outside)?;
    Ok(outside.join("pg"))
}

/// The (uid, gid) PostgreSQL runs as when that is not us: the `postgres` OS user when we are
/// root (which postgres refuses), else none; `Ok(None)` too when there is no such user.
pub(crate) fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if sys::euid() != 0 {
        return Ok(None);
    }
    sys::user_ids("postgres").context("looking up the `postgres` OS user")
}

/// The OS user to run postgres as: none unless we are root, which postgres refuses.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    if sys::euid() != 0 {
        return Ok(None);
    }
    match server_user()? {
        Some(ids) => Ok(Some(ids)),
        None => bail!(
            "the tests run as root, which PostgreSQL refuses, and there is no `postgres` OS user \
             to run it as instead: create one (`useradd --system --user-group postgres`; \
             installing Debian's postgresql package also does) or run the tests as a non-root user"
        ),
    }
}

fn bindir() -> PathBuf {
    match std::env::var_os(BINDIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(DEFAULT_BINDIR),
    }
}

/// Runs in `/`: the postgres user need not be able to enter our working dir.
fn command(
    bindir: &Path,
    program: &str,
    log: File,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bindir.join(program));
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log);
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    Ok(cmd)
}

/// A password for a test server: letters and digits, so that it goes into a URL as it is.
fn random_password() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// `text` into `path`, readable by its owner alone (`owner` when we are root).
fn write_private(path: &Path, text: &str, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to the postgres user", path.display()))?;
    }
    Ok(())
}

fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Whether the data dir's `pg_hba.conf` lets any connection in with `trust`: data made before
/// the stores were authenticated.
fn trusts_connections(data: &Path) -> anyhow::Result<bool> {
    let hba = data.join("pg_hba.conf");
    let text = match fs::read_to_string(&hba) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err).with_context(|| format!("reading {}", hba.display())),
    };
    Ok(text.lines().any(|line| {
        let line = line.split('#').next().unwrap_or_default();
        line.split_whitespace().last() == Some("trust")
    }))
}

/// initdb into `data` with `password` for the superuser and scram-sha-256 for every
/// connection, its output in `log_dir/initdb.log`; `no_sync` for test servers. The password
/// goes through a file next to `data` (readable by the server's user alone), removed after.
fn initdb(
    bindir: &Path,
    log_dir: &Path,
    data: &Path,
    owner: Option<(u32, u32)>,
    password: &str,
    no_sync: bool,
) -> anyhow::Result<()> {
    let log_path = log_dir.join("initdb.log");
    let log = File::create(&log_path).context("creating initdb.log")?;
    let pwfile = data.with_file_name(".initdb-pwfile");
    let _ = fs::remove_file(&pwfile);
    write_private(&pwfile, &format!("{password}\n"), owner)?;
    let ran = run_initdb(bindir, &log_path, log, data, owner, &pwfile, no_sync);
    let _ = fs::remove_file(&pwfile);
    ran
}

fn run_initdb(
    bindir: &Path,
    log_path: &Path,
    log: File,
    data: &Path,
    owner: Option<(u32, u32)>,
    pwfile: &Path,
    no_sync: bool,
) -> anyhow::Result<()> {
    let mut cmd = command(bindir, "initdb", log, owner)?;
    cmd.arg("-D")
        .arg(data)
        .args([
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ])
        .arg(format!("--pwfile={}", path_text(pwfile)?));
    if no_sync {
        cmd.arg("--no-sync");
    }
    let mut child = spawner::spawn(cmd, Signal::SIGKILL).with_context(|| {
        format!(
            "running {}/initdb (set {BINDIR_VAR} to PostgreSQL's bin dir)",
            bindir.display()
        )
    })?;
    match child.wait_timeout(Duration::from_secs(120))? {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("initdb failed ({status})\n{}", log_tail(log_path, 0, 30)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("initdb took over 120s\n{}", log_tail(log_path, 0, 30))
        }
    }
}

impl PgServer {
    /// Starts the postmaster and waits until it accepts connections; a kept one is recorded.
    fn launch(&self) -> Result<Proc, LaunchError> {
        let log_start = file_len(&self.log);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))
            .map_err(LaunchError::Failed)?;
        let mut cmd =
            command(&self.bindir, "postgres", log, self.owner).map_err(LaunchError::Failed)?;
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1"]);
        if let Some(socket_dir) = &self.socket_dir {
            cmd.arg("-k").arg(socket_dir);
        }
        let settings = match self.lifetime {
            Lifetime::Test => TEST_SETTINGS,
            Lifetime::Kept(_) => KEPT_SETTINGS,
        };
        for (name, value) in settings.iter().copied().chain(
            self.extra_settings
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        ) {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        // SIGQUIT is postgres' immediate shutdown: the postmaster ends its backends before
        // exiting.
        let mut child = self
            .lifetime
            .spawn(cmd, Signal::SIGQUIT)
            .with_context(|| format!("running {}/postgres", self.bindir.display()))
            .map_err(LaunchError::Failed)?;
        let ready = wait_ready(&mut child, &self.data, self.port).and_then(|()| {
            let record = Record::new(
                child.process_id()?,
                self.port,
                Some(self.data.clone()),
                Signal::SIGINT,
            );
            self.lifetime.record(KEPT_NAME, record)
        });
        match ready {
            Ok(()) => Ok(child),
            Err(err) => {
                let _ = child.terminate(Signal::SIGQUIT, STOP_TIMEOUT);
                let tail = log_tail(&self.log, log_start, 30);
                let err = err.context(format!(
                    "postgres on port {} did not start\n{tail}",
                    self.port
                ));
                Err(LaunchError::classify(err, &tail))
            }
        }
    }
}

/// Ready means what `pg_ctl -w` checks: postmaster.pid names our child and says "ready". The
/// TCP connect then confirms the port is really ours.
fn wait_ready(child: &mut Proc, data: &Path, port: u16) -> anyhow::Result<()> {
    let pid_file = data.join("postmaster.pid");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(how) = child.exited() {
            bail!("postgres {how}");
        }
        let ready = fs::read_to_string(&pid_file).is_ok_and(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines.first().map(|pid| pid.trim()) == Some(child.id().to_string().as_str())
                && lines.get(7).map(|status| status.trim()) == Some("ready")
        });
        if ready && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("postgres did not accept connections within {READY_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}
