//! One `redis-server` in cluster mode, and how it is started.

use parking_lot::Mutex;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use nix::sys::signal::Signal;

use super::topology::wait_until;
use super::RedisCredentials;
use crate::dirs::{file_len, log_tail};
use crate::ports::PortLease;
use crate::process::{LaunchError, Lifetime, Proc, ProcState};
use crate::resp::{self, Reply};
use crate::state::Record;

/// Short, so that failover tests are quick: a master is failed over about 5 s after it dies.
const NODE_TIMEOUT_MS: &str = "3000";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One `redis-server` in cluster mode on 127.0.0.1; its dir keeps `nodes.conf` and `auth.conf`
/// (the ACL user, and how a replica authenticates to its master).
///
/// A test's node is killed (SIGKILL) on drop, and by `PR_SET_PDEATHSIG` if the test process
/// dies. A kept node (the local stack) outlives the process, recorded as `redis-<port>`.
#[derive(Debug)]
pub struct RedisNode {
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    lifetime: Lifetime,
    credentials: Arc<RedisCredentials>,
    /// The TLS port and files of a node of [`super::RedisCluster::start_tls`].
    tls: Option<NodeTls>,
    /// `None` once killed.
    proc: Mutex<Option<Proc>>,
    _lease: Option<PortLease>,
    _tls_lease: Option<PortLease>,
}

/// Where a TLS node listens for TLS clients (its cluster bus is this port + 10000, encrypted
/// too), and its certificate, key and the CA it trusts.
#[derive(Debug, Clone)]
pub(super) struct NodeTls {
    pub(super) port: u16,
    pub(super) files: Arc<TlsFiles>,
}

/// PEM files in a cluster's dir.
#[derive(Debug)]
pub(super) struct TlsFiles {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ca: PathBuf,
}

impl RedisNode {
    /// Starts a test node on a free port (and free bus port) in a subdir of `cluster_dir`.
    pub(super) fn start(
        cluster_dir: &Path,
        credentials: &Arc<RedisCredentials>,
        tls: Option<&Arc<TlsFiles>>,
    ) -> anyhow::Result<RedisNode> {
        let mut last_err = None;
        for _ in 0..10 {
            // A TLS node's cluster bus is its TLS port + 10000.
            let lease = PortLease::acquire(tls.is_none())?;
            let tls_lease = tls.map(|_| PortLease::acquire(true)).transpose()?;
            let dir = cluster_dir.join(lease.port().to_string());
            std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let node = RedisNode {
                port: lease.port(),
                log: dir.join("redis.log"),
                dir: dir.clone(),
                lifetime: Lifetime::Test,
                credentials: credentials.clone(),
                tls: tls.zip(tls_lease.as_ref()).map(|(files, lease)| NodeTls {
                    port: lease.port(),
                    files: files.clone(),
                }),
                proc: Mutex::new(None),
                _lease: Some(lease),
                _tls_lease: tls_lease,
            };
            match node.launch() {
                Ok(proc) => {
                    *node.proc.lock() = Some(proc);
                    return Ok(node);
                }
                Err(LaunchError::PortInUse(err)) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    last_err = Some(err);
                }
                Err(LaunchError::Failed(err)) => return Err(err),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context("redis-server found no free port in 10 tries"))
    }

    /// A kept node on `port` in `dir`, logging to `log`: the recorded one if it still runs
    /// (`proc`), else not started yet (`RedisNode::ensure_running` starts it).
    pub(super) fn kept(
        lifetime: Lifetime,
        port: u16,
        dir: PathBuf,
        log: PathBuf,
        proc: Option<Proc>,
        credentials: &Arc<RedisCredentials>,
    ) -> RedisNode {
        RedisNode {
            port,
            dir,
            log,
            lifetime,
            credentials: credentials.clone(),
            tls: None,
            proc: Mutex::new(proc),
            _lease: None,
            _tls_lease: None,
        }
    }

    /// The name of a kept node's record.
    pub(super) fn record_name(port: u16) -> String {
        format!("redis-{port}")
    }

    /// The client port; the cluster bus listens on this plus 10000.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:{port}`, as the node is known in the cluster.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:{tls port}` of a node of [`super::RedisCluster::start_tls`].
    pub fn tls_addr(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|tls| format!("127.0.0.1:{}", tls.port))
    }

    /// The redis-server's pid, unless it was killed.
    pub fn pid(&self) -> Option<u32> {
        self.proc.lock().as_ref().map(Proc::id)
    }

    /// The node's dir: `nodes.conf` (and a test node's `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Running, paused or gone (killed, or never started).
    pub fn state(&self) -> ProcState {
        self.proc
            .lock()
            .as_mut()
            .map_or(ProcState::Gone, Proc::state)
    }

    /// Running and not paused: expected to answer.
    pub fn is_live(&self) -> bool {
        self.state() == ProcState::Running
    }

    pub(super) fn kill(&self) -> anyhow::Result<()> {
        if let Some(mut proc) = self.proc.lock().take() {
            proc.kill().context("killing redis-server")?;
        }
        if let Lifetime::Kept(state) = &self.lifetime {
            state.remove(&Self::record_name(self.port))?;
        }
        Ok(())
    }

    pub(super) fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let mut proc = self.proc.lock();
        let proc = proc
            .as_mut()
            .with_context(|| format!("{} is not running", self.addr()))?;
        proc.signal(signal)
            .with_context(|| format!("signalling {}", self.addr()))
    }

    pub(super) fn restart(&self) -> anyhow::Result<()> {
        self.kill()?;
        self.ensure_running()
    }

    /// Starts the node unless it runs (a paused node counts as running).
    pub(super) fn ensure_running(&self) -> anyhow::Result<()> {
        if self.state() != ProcState::Gone {
            return Ok(());
        }
        if self.lifetime.is_kept() {
            ensure_bindable(self.port)?;
        }
        let proc = self
            .launch()
            .map_err(anyhow::Error::from)
            .with_context(|| format!("starting {}", self.addr()))?;
        *self.proc.lock() = Some(proc);
        Ok(())
    }

    /// Starts redis-server and waits until it answers PING; a kept node is recorded.
    fn launch(&self) -> Result<Proc, LaunchError> {
        let (port, dir) = (self.port, &self.dir);
        let out_path = dir.join("stdout.log");
        let (log_start, out_start) = (file_len(&self.log), file_len(&out_path));
        let spawn = || -> anyhow::Result<Proc> {
            let auth = self.write_auth_conf()?;
            // Early failures (bad arguments) go to stdout before the log file is opened.
            let out = File::options()
                .create(true)
                .append(true)
                .open(&out_path)
                .context("opening stdout.log")?;
            let mut cmd = Command::new("redis-server");
            // The config file first, then the options (which redis-server wants after it).
            cmd.current_dir(dir)
                .arg(&auth)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .args(["--port", &port.to_string()])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
                // A cache: no AOF, no RDB snapshots (PostgreSQL is the source of truth).
                .args(["--appendonly", "no", "--save", ""])
                .arg("--dir")
                .arg(dir)
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--protected-mode",
                    "no",
                    "--daemonize",
                    "no",
                ])
                .arg("--logfile")
                .arg(&self.log)
                // Replicas would otherwise wait 5 s before their first sync.
                .args(["--repl-diskless-sync-delay", "0"])
                // A master pings its replicas every 10 s by default. Until the first ping a
                // new cluster's replication offsets are 0, and nodes leave replicas at offset 0
                // out of CLUSTER SLOTS (see `check_slots_list_replicas`).
                .args(["--repl-ping-replica-period", "1"]);
            if let Some(tls) = &self.tls {
                cmd.args(["--tls-port", &tls.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&tls.files.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.files.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.files.ca)
                    // The bus too; clients need no certificate of their own.
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .args(["--tls-auth-clients", "no"]);
            }
            if self.lifetime.is_kept() {
                // Every shardfeed key has a TTL; under memory pressure the least recently used
                // go first (docs/cache.md explains why readers tolerate a partly evicted
                // author).
                cmd.args(["--maxmemory", "512mb", "--maxmemory-policy", "volatile-lru"]);
            }
            self.lifetime
                .spawn(cmd, Signal::SIGKILL)
                .context("running redis-server (is it on PATH?)")
        };
        let mut proc = spawn().map_err(LaunchError::Failed)?;
        let addr = self.addr();
        let ready = wait_until(START_TIMEOUT, || {
            if let Some(how) = proc.exited() {
                anyhow::bail!("redis-server {how}");
            }
            Ok(matches!(resp::call(&addr, &self.credentials, &["PING"]), Ok(Reply::Status(pong)) if pong == "PONG"))
        })
        .and_then(|()| {
            let record = Record::new(proc.process_id()?, port, Some(dir.clone()), Signal::SIGTERM);
            self.lifetime.record(&Self::record_name(port), record)
        });
        match ready {
            Ok(()) => Ok(proc),
            Err(err) => {
                let _ = proc.kill();
                let tail = format!(
                    "{}\n{}",
                    log_tail(&self.log, log_start, 30),
                    log_tail(&out_path, out_start, 10)
                );
                let err = err.context(format!("redis-server on port {port} did not start\n{tail}"));
                Err(LaunchError::classify(err, &tail))
            }
        }
    }
}

impl RedisNode {
    /// `auth.conf` in the node's dir, readable by its owner alone, so that the password is
    /// on no command line: the `default` user off, the ACL user with every right, and the
    /// same user for a replica's link to its master.
    fn write_auth_conf(&self) -> anyhow::Result<PathBuf> {
        let RedisCredentials { username, password } = &*self.credentials;
        let path = self.dir.join("auth.conf");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        write!(
            file,
            "user default off\n\
             user {username} on >{password} ~* &* +@all\n\
             masteruser {username}\n\
             masterauth {password}\n"
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        if self.lifetime.is_kept() {
            return;
        }
        if let Err(err) = self.kill() {
            tracing::warn!(addr = %self.addr(), error = %err, "could not kill redis-server");
        }
    }
}

/// Checks that `port` and its cluster bus port are free for a kept node.
fn ensure_bindable(port: u16) -> anyhow::Result<()> {
    for p in [port, port + crate::ports::CLUSTER_BUS_OFFSET] {
        ensure!(
            crate::ports::bindable(p),
            "port {p} is in use by a process this stack did not start"
        );
    }
    Ok(())
}
