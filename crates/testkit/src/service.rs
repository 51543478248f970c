//! A service under test as a process of its own, for what is global to a process (the tracing
//! subscriber, the telemetry export): like the stores' processes, it cannot outlive the test
//! process.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use tonic::transport::Channel;
use wait_timeout::ChildExt;

use crate::dirs::{log_tail, InstanceDir};
use crate::ports::PortLease;
use crate::{spawner, sys, ServingStatus};

/// How long a service may take to report SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopped service may take to drain and flush before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A service binary running as a child of the test process, on a free port of 127.0.0.1. It
/// gets SIGKILL if the test process dies, and SIGTERM (then SIGKILL) when dropped; its output
/// goes to a log file whose tail [`ServiceProcess::log`] returns.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _port: PortLease,
    _dir: InstanceDir,
}

impl ServiceProcess {
    /// Starts `binary` (with `args`) with the settings `env` and the listen address setting
    /// `listen_var` (e.g. `SHARDFEED_INGEST__LISTEN_ADDR`) on a free port (and the metrics
    /// address of that section on any free port, unless `env` sets it), and waits until its
    /// health reports SERVING. The `SHARDFEED_*` and `OTEL_*` variables of the test process
    /// are not passed on: `env` alone configures it.
    pub async fn start(
        binary: &Path,
        args: &[&str],
        listen_var: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<ServiceProcess> {
        let name = binary
            .file_name()
            .map_or_else(|| "service".into(), |n| n.to_string_lossy().into_owned());
        for _ in 0..3 {
            let dir = InstanceDir::create(&name)?;
            let port = PortLease::acquire(false)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port.port()));
            let log = dir.path().join("service.log");
            let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let mut cmd = Command::new(binary);
            cmd.args(args)
                .stdout(out.try_clone()?)
                .stderr(out)
                .env("NO_COLOR", "1");
            for (name, _) in std::env::vars_os() {
                let inherited = name.to_string_lossy();
                if inherited.starts_with("SHARDFEED_") || inherited.starts_with("OTEL_") {
                    cmd.env_remove(&name);
                }
            }
            cmd.envs(env.iter().map(|(k, v)| (k, v)))
                .env(listen_var, addr.to_string());
            // The metrics listener on a port of its own too (not the stack's 9091/9092).
            if let Some(metrics_var) = listen_var
                .strip_suffix("LISTEN_ADDR")
                .map(|section| format!("{section}METRICS_ADDR"))
            {
                if !env.iter().any(|(k, _)| *k == metrics_var) {
                    cmd.env(metrics_var, "127.0.0.1:0");
                }
            }
            let child = spawner::spawn(cmd, Signal::SIGKILL)
                .with_context(|| format!("starting {}", binary.display()))?;
            let mut service = ServiceProcess {
                child,
                addr,
                log,
                _port: port,
                _dir: dir,
            };
            match service.wait_serving().await {
                Ok(()) => return Ok(service),
                Err(err) if service.log().contains("Address already in use") => {
                    tracing::debug!(error = %err, "{name}: lost the port; another one");
                }
                Err(err) => {
                    let log = service.log();
                    return Err(err.context(format!("{name} did not start; its log:\n{log}")));
                }
            }
        }
        bail!("{name}: no free port after 3 tries")
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and its address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A channel to it.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(crate::endpoint(self.addr, None)?.connect().await?)
    }

    /// The last lines of its output.
    pub fn log(&self) -> String {
        log_tail(&self.log, 0, 60)
    }

    /// SIGTERM, as an orchestrator stops it: it drains and flushes; SIGKILL after a grace.
    /// Returns how it ended.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let _ = sys::send_signal(self.child.id(), Signal::SIGTERM);
        match self.child.wait_timeout(STOP_GRACE)? {
            Some(status) => Ok(status),
            None => {
                let _ = self.child.kill();
                Ok(self.child.wait()?)
            }
        }
    }

    async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("it exited ({status}) after {last}");
            }
            if let Ok(channel) = crate::endpoint(self.addr, None)?.connect().await {
                match crate::health(&channel, "").await {
                    Ok(ServingStatus::Serving) => return Ok(()),
                    Ok(status) => last = format!("{status:?}"),
                    Err(status) => last = format!("no answer ({})", status.message()),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("not SERVING within {START_TIMEOUT:?} (last: {last})")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
