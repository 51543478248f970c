//! Store processes: children of this process, or processes that an earlier command started and
//! recorded (the local stack); how to start, watch, signal and stop either kind.

use std::fs;
use std::io;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt;

use crate::spawner;
use crate::state::{Record, StateDir};
use crate::sys::{self, ExecHook};

/// How long a store's processes live.
#[derive(Debug, Clone)]
pub(crate) enum Lifetime {
    /// They die with this process (`PR_SET_PDEATHSIG`); tests.
    Test,
    /// They outlive it, each recorded in `state` under its name; the local stack.
    Kept(StateDir),
}

impl Lifetime {
    /// Spawns `cmd`; in a test, `death_signal` is what it gets when this process dies.
    pub(crate) fn spawn(&self, mut cmd: Command, death_signal: Signal) -> io::Result<Proc> {
        match self {
            Lifetime::Test => spawner::spawn(cmd, death_signal).map(Proc::Child),
            Lifetime::Kept(_) => {
                sys::set_exec_hook(&mut cmd, ExecHook::NewSession);
                cmd.spawn().map(Proc::Child)
            }
        }
    }

    /// Records a kept process (a no-op in tests), so that later commands find it.
    pub(crate) fn record(&self, name: &str, record: Record) -> anyhow::Result<()> {
        match self {
            Lifetime::Test => Ok(()),
            Lifetime::Kept(state) => state.write(name, &record),
        }
    }

    pub(crate) fn is_kept(&self) -> bool {
        matches!(self, Lifetime::Kept(_))
    }
}

/// A process named by pid and start time (`/proc/<pid>/stat` field 22, clock ticks since boot):
/// a later process that reuses the pid has another start time, so it is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

/// What `/proc` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    /// Stopped by SIGSTOP: it keeps its sockets but answers nothing.
    Paused,
    /// Exited (or a zombie), or the pid now belongs to another process.
    Gone,
}

impl ProcessId {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: u32) -> Option<ProcessId> {
        let (_, start_time) = stat(pid)?;
        Some(ProcessId { pid, start_time })
    }

    pub fn state(&self) -> ProcState {
        match stat(self.pid) {
            Some((state, start)) if start == self.start_time => state,
            _ => ProcState::Gone,
        }
    }

    /// Sends `signal` unless the process is gone.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.state() == ProcState::Gone {
            return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
        }
        sys::send_signal(self.pid, signal)
    }

    /// Sends `signal` (and SIGCONT, which a paused process needs to act on it), waits up to
    /// `grace` for the exit, then SIGKILLs. Returns once the process is gone.
    pub fn terminate(&self, signal: Signal, grace: Duration) -> io::Result<()> {
        if self.state() == ProcState::Gone {
            return Ok(());
        }
        let _ = self.signal(signal);
        let _ = self.signal(Signal::SIGCONT);
        if self.wait_gone(grace) {
            return Ok(());
        }
        let _ = self.signal(Signal::SIGKILL);
        if self.wait_gone(Duration::from_secs(10)) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "pid {} survived SIGKILL",
                self.pid
            )))
        }
    }

    fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.state() != ProcState::Gone {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// `(state, start time)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(ProcState, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let state = match *fields.first()? {
        "Z" | "X" | "x" => ProcState::Gone,
        "T" | "t" => ProcState::Paused,
        _ => ProcState::Running,
    };
    Some((state, fields.get(19)?.parse().ok()?))
}

/// A store process: our child, or one recorded by an earlier command.
#[derive(Debug)]
pub(crate) enum Proc {
    /// Not reaped until we wait for it, so its pid cannot be reused meanwhile.
    Child(Child),
    Recorded(ProcessId),
}

impl Proc {
    pub(crate) fn id(&self) -> u32 {
        match self {
            Proc::Child(child) => child.id(),
            Proc::Recorded(id) => id.pid,
        }
    }

    /// Pid and start time, for a record.
    pub(crate) fn process_id(&self) -> io::Result<ProcessId> {
        ProcessId::of(self.id()).ok_or_else(|| io::Error::other("the process is gone"))
    }

    pub(crate) fn state(&mut self) -> ProcState {
        match self {
            Proc::Child(child) => match child.try_wait() {
                Ok(None) => ProcessId::of(child.id()).map_or(ProcState::Gone, |id| id.state()),
                _ => ProcState::Gone,
            },
            Proc::Recorded(id) => id.state(),
        }
    }

    /// How it ended, once it has: for error messages.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self {
            Proc::Child(child) => child
                .try_wait()
                .ok()?
                .map(|status| format!("exited ({status})")),
            Proc::Recorded(id) => (id.state() == ProcState::Gone).then(|| "exited".to_owned()),
        }
    }

    pub(crate) fn signal(&mut self, signal: Signal) -> io::Result<()> {
        if self.state() == ProcState::Gone {
            return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
        }
        sys::send_signal(self.id(), signal)
    }

    /// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs. A child is always reaped
    /// on return, so its pid is never signalled again after reuse.
    pub(crate) fn terminate(&mut self, signal: Signal, grace: Duration) -> io::Result<()> {
        match self {
            Proc::Child(child) => {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                let _ = sys::send_signal(child.id(), signal);
                // A stopped process would not act on the signal until resumed.
                let _ = sys::send_signal(child.id(), Signal::SIGCONT);
                if child.wait_timeout(grace)?.is_none() {
                    let _ = child.kill();
                    child.wait()?;
                }
                Ok(())
            }
            Proc::Recorded(id) => id.terminate(signal, grace),
        }
    }

    /// SIGKILL, and reaped (or seen gone) on return.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        match self {
            // Already-exited children are only reaped: kill() never signals a reaped pid.
            Proc::Child(child) => {
                child.kill()?;
                child.wait().map(drop)
            }
            Proc::Recorded(id) => id.terminate(Signal::SIGKILL, Duration::ZERO),
        }
    }
}

/// Why a server did not start.
pub(crate) enum LaunchError {
    /// Someone bound the port between our check and the server's bind: try another port.
    PortInUse(anyhow::Error),
    Failed(anyhow::Error),
}

impl LaunchError {
    /// Tells a lost port race from other failures by the server's log.
    pub(crate) fn classify(err: anyhow::Error, log: &str) -> LaunchError {
        if log.contains("Address already in use") {
            LaunchError::PortInUse(err)
        } else {
            LaunchError::Failed(err)
        }
    }
}

impl From<LaunchError> for anyhow::Error {
    fn from(err: LaunchError) -> anyhow::Error {
        match err {
            LaunchError::PortInUse(err) | LaunchError::Failed(err) => err,
        }
    }
}
