//! PostgreSQL: one postmaster per [`PgServer`], in a data dir of its own.

use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::dirs::{file_len, log_tail, InstanceDir};
use crate::ports::PortLease;
use crate::process::{terminate, wait_timeout, LaunchError};
use crate::{spawner, sys};

/// The superuser that initdb creates; with trust auth it needs no password.
const SUPERUSER: &str = "shardfeed";

/// Where the PostgreSQL 15 binaries are unless `SHARDFEED_PG_BINDIR` says otherwise.
const DEFAULT_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// Test settings: durability off (a crash loses a test database, not data anyone needs), room
/// for many pools, small memory.
const SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "200"),
    ("shared_buffers", "16MB"),
    ("logging_collector", "off"),
];

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One PostgreSQL postmaster on 127.0.0.1, with trust auth and superuser `shardfeed`.
///
/// Dropping it shuts the server down (immediate mode) and removes its data dir. If the test
/// process dies instead, the postmaster gets SIGQUIT (immediate shutdown, which also ends its
/// backends) from `PR_SET_PDEATHSIG`.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    bindir: PathBuf,
    /// The (uid, gid) to run as when we are root.
    owner: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
    /// The migrated template database, created on first use by `TestDb`.
    pub(crate) template: tokio::sync::OnceCell<()>,
    /// `CREATE DATABASE ... TEMPLATE` fails when run concurrently on one template.
    pub(crate) copy_lock: tokio::sync::Mutex<()>,
    _lease: PortLease,
    /// Declared last so it is removed only after the server is gone.
    dir: InstanceDir,
}

impl PgServer {
    /// Runs initdb into a fresh temp dir, starts the server on a free port and waits until it
    /// accepts connections.
    pub fn start() -> anyhow::Result<PgServer> {
        let owner = run_as()?;
        let bindir = bindir();
        let dir = InstanceDir::create("pg")?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("giving {} to the postgres user", dir.path().display()))?;
        }
        initdb(&bindir, dir.path(), owner)?;
        let mut last_err = None;
        for _ in 0..10 {
            let lease = PortLease::acquire(false)?;
            match launch(&bindir, dir.path(), lease.port(), owner) {
                Ok(child) => {
                    return Ok(PgServer {
                        port: lease.port(),
                        bindir,
                        owner,
                        child: Mutex::new(Some(child)),
                        template: tokio::sync::OnceCell::new(),
                        copy_lock: tokio::sync::Mutex::new(()),
                        _lease: lease,
                        dir,
                    })
                }
                Err(LaunchError::PortInUse(err)) => last_err = Some(err),
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context("postgres found no free port in 10 tries"))
    }

    /// The TCP port on 127.0.0.1; it stays the same across `stop`/`restart`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://shardfeed@127.0.0.1:{port}/{database}`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(Child::id)
    }

    /// The instance dir: the data dir (`data/`), the unix socket and `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fast shutdown (sessions are ended, nothing is lost); the data dir is kept so that
    /// `restart` brings the same databases back. Stopping a stopped server does nothing.
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut child = self.lock_child();
        if let Some(mut running) = child.take() {
            terminate(&mut running, libc::SIGINT, STOP_TIMEOUT).context("stopping postgres")?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data dir and waits until it accepts
    /// connections. A running server is stopped first.
    pub fn restart(&self) -> anyhow::Result<()> {
        let mut child = self.lock_child();
        if let Some(mut running) = child.take() {
            terminate(&mut running, libc::SIGINT, STOP_TIMEOUT).context("stopping postgres")?;
        }
        let started = launch(&self.bindir, self.dir.path(), self.port, self.owner)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("restarting postgres on port {}", self.port))?;
        *child = Some(started);
        Ok(())
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut running) = self.lock_child().take() {
            // Immediate shutdown: the data dir is about to go anyway.
            if let Err(err) = terminate(&mut running, libc::SIGQUIT, STOP_TIMEOUT) {
                tracing::warn!(error = %err, "could not stop postgres");
            }
        }
    }
}

/// The OS user to run postgres as: none unless we are root, which postgres refuses.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    if sys::euid() != 0 {
        return Ok(None);
    }
    match sys::user_ids("postgres").context("looking up the `postgres` OS user")? {
        Some(ids) => Ok(Some(ids)),
        None => bail!(
            "the tests run as root, which PostgreSQL refuses, and there is no `postgres` OS user \
             to run it as instead: create one (`useradd --system --user-group postgres`; \
             installing Debian's postgresql package also does) or run the tests as a non-root user"
        ),
    }
}

fn bindir() -> PathBuf {
    match std::env::var_os("SHARDFEED_PG_BINDIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(DEFAULT_BINDIR),
    }
}

fn command(
    bindir: &Path,
    program: &str,
    dir: &Path,
    log: File,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bindir.join(program));
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log);
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    Ok(cmd)
}

fn initdb(bindir: &Path, dir: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let log_path = dir.join("initdb.log");
    let log = File::create(&log_path).context("creating initdb.log")?;
    let mut cmd = command(bindir, "initdb", dir, log, owner)?;
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .args(["--no-sync", "--no-instructions"]);
    let mut child = spawner::spawn(cmd, libc::SIGKILL).with_context(|| {
        format!(
            "running {}/initdb (set SHARDFEED_PG_BINDIR to PostgreSQL's bin dir)",
            bindir.display()
        )
    })?;
    match wait_timeout(&mut child, Duration::from_secs(120))? {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("initdb failed ({status})\n{}", log_tail(&log_path, 0, 30)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("initdb took over 120s\n{}", log_tail(&log_path, 0, 30))
        }
    }
}

/// Starts the postmaster and waits until it accepts connections.
fn launch(
    bindir: &Path,
    dir: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> Result<Child, LaunchError> {
    let log_path = dir.join("postgres.log");
    let log_start = file_len(&log_path);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .context("opening postgres.log")
        .map_err(LaunchError::Failed)?;
    let mut cmd = command(bindir, "postgres", dir, log, owner).map_err(LaunchError::Failed)?;
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(dir);
    for (name, value) in SETTINGS {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    // SIGQUIT is postgres' immediate shutdown: the postmaster ends its backends before exiting.
    let mut child = spawner::spawn(cmd, libc::SIGQUIT)
        .with_context(|| format!("running {}/postgres", bindir.display()))
        .map_err(LaunchError::Failed)?;
    match wait_ready(&mut child, dir, port) {
        Ok(()) => Ok(child),
        Err(err) => {
            let _ = terminate(&mut child, libc::SIGQUIT, STOP_TIMEOUT);
            let tail = log_tail(&log_path, log_start, 30);
            let err = err.context(format!("postgres on port {port} did not start\n{tail}"));
            Err(LaunchError::classify(err, &tail))
        }
    }
}

/// Ready means what `pg_ctl -w` checks: postmaster.pid names our child and says "ready". The
/// TCP connect then confirms the port is really ours.
fn wait_ready(child: &mut Child, dir: &Path, port: u16) -> anyhow::Result<()> {
    let pid_file = dir.join("data").join("postmaster.pid");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("postgres exited ({status})");
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
