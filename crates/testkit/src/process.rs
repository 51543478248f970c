//! Waiting for and stopping child processes.

use std::ffi::c_int;
use std::io;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys;

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs and reaps. The child is always
/// reaped on return, so its pid is never signalled again after reuse.
pub(crate) fn terminate(child: &mut Child, signal: c_int, grace: Duration) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let _ = sys::send_signal(child.id(), signal);
    // A stopped process would not act on the signal until resumed.
    let _ = sys::send_signal(child.id(), libc::SIGCONT);
    if wait_timeout(child, grace)?.is_none() {
        let _ = child.kill();
        child.wait()?;
    }
    Ok(())
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
