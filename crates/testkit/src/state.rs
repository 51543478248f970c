//! Where a kept stack (the local stack under `<repo>/.local/`) records its processes, so that a
//! later command finds, checks and stops exactly them and nothing else.
//!
//! Layout: `run/<name>.json` (a [`Record`]: pid, start time, port, data dir, stop signal),
//! `run/<name>.pid` (the bare pid, for tools that want only that) and `log/<name>.log`.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::process::{Lifetime, ProcState, ProcessId};

/// A process of the kept stack, as its `run/<name>.json` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub process: ProcessId,
    /// The TCP port it listens on (127.0.0.1).
    pub port: u16,
    /// Its data dir, if it has one.
    pub dir: Option<PathBuf>,
    /// The signal that stops it cleanly, e.g. `SIGINT` (PostgreSQL's fast shutdown).
    pub stop_signal: String,
}

impl Record {
    pub fn new(process: ProcessId, port: u16, dir: Option<PathBuf>, stop: Signal) -> Record {
        Record {
            process,
            port,
            dir,
            stop_signal: stop.as_str().to_owned(),
        }
    }

    pub fn state(&self) -> ProcState {
        self.process.state()
    }
}

/// The state directory of a kept stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// `log/<name>.log`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }

    /// `run/<name>.pid`: the bare pid of a live process.
    pub fn pid_path(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.pid"))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.json"))
    }

    /// Creates `run/` and `log/`.
    pub fn create(&self) -> anyhow::Result<()> {
        for dir in [self.run_dir(), self.log_dir()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn write(&self, name: &str, record: &Record) -> anyhow::Result<()> {
        self.create()?;
        let path = self.record_path(name);
        let json = serde_json::to_string_pretty(record)?;
        fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        let pid = self.pid_path(name);
        fs::write(&pid, format!("{}\n", record.process.pid))
            .with_context(|| format!("writing {}", pid.display()))
    }

    /// The record of `name`, live or not.
    pub fn read(&self, name: &str) -> anyhow::Result<Option<Record>> {
        let path = self.record_path(name);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not a process record", path.display())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The record of `name` if its process still runs (paused counts); a stale record is
    /// removed.
    pub fn live(&self, name: &str) -> anyhow::Result<Option<Record>> {
        match self.read(name)? {
            Some(record) if record.state() != ProcState::Gone => Ok(Some(record)),
            Some(_) => {
                self.remove(name)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        for path in [self.record_path(name), self.pid_path(name)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("removing {}", path.display()))
                }
            }
        }
        Ok(())
    }

    /// The names with a record, sorted.
    pub fn names(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.run_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_owned)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Starts `cmd` as `name`, a process that outlives this one (its own session), with stdin
    /// from /dev/null and its output appended to `log/<name>.log`, and records it (stopped
    /// with SIGTERM). For servers the stores' supervisors don't know, e.g. the services.
    pub fn start(&self, name: &str, mut cmd: Command, port: u16) -> anyhow::Result<Record> {
        self.create()?;
        let log_path = self.log_path(name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let lifetime = Lifetime::Kept(self.clone());
        let proc = lifetime
            .spawn(cmd, Signal::SIGTERM)
            .with_context(|| format!("starting {name}"))?;
        let record = Record::new(proc.process_id()?, port, None, Signal::SIGTERM);
        self.write(name, &record)?;
        Ok(record)
    }

    /// Stops the recorded process `name` with its stop signal (SIGKILL after `grace`) and
    /// removes its record. Returns the record if the process was running.
    pub fn stop(&self, name: &str, grace: Duration) -> anyhow::Result<Option<Record>> {
        let Some(record) = self.live(name)? else {
            return Ok(None);
        };
        let signal = Signal::from_str(&record.stop_signal).unwrap_or(Signal::SIGTERM);
        record
            .process
            .terminate(signal, grace)
            .with_context(|| format!("stopping {name} (pid {})", record.process.pid))?;
        self.remove(name)?;
        Ok(Some(record))
    }
}
