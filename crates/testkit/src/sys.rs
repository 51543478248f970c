//! The OS calls std has no wrapper for, through `nix`. The one `unsafe` left is the fork-to-exec
//! hook (`CommandExt::pre_exec` is unsafe by nature); the workspace denies it everywhere else.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{self, Signal};
use nix::unistd::{self, Pid, User};

/// What a store process does between fork and exec.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ExecHook {
    /// Gets the signal when the thread that spawned it exits, so that it cannot outlive the test
    /// process, not even one killed with SIGKILL. The caller spawns from a thread that lives as
    /// long as the process (see `spawner`).
    DieWithParent(Signal),
    /// Leaves the caller's session (setsid), so that neither a Ctrl-C in the terminal nor the
    /// end of the command that started it reaches it: it lives until stopped.
    NewSession,
}

pub(crate) fn set_exec_hook(cmd: &mut Command, hook: ExecHook) {
    let parent = std::process::id();
    // SAFETY: the hook runs between fork and exec, where only async-signal-safe calls are
    // allowed: prctl(2), getppid(2) and setsid(2) are plain system calls, and the errors are
    // built from raw errno values without allocating. It runs after std's setuid/setgid, which
    // would otherwise clear the death signal.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || match hook {
            ExecHook::DieWithParent(signal) => {
                nix::sys::prctl::set_pdeathsig(signal).map_err(io::Error::from)?;
                // The parent may have died before prctl: then nobody would ever signal us.
                if std::os::unix::process::parent_id() != parent {
                    return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
                Ok(())
            }
            ExecHook::NewSession => unistd::setsid().map(drop).map_err(io::Error::from),
        });
    }
}

/// Sends `signal` to `pid`. Callers make sure the pid is still the process they mean: a child
/// not waited for yet, or a recorded process whose start time still matches.
pub(crate) fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(nix::libc::ESRCH))?;
    signal::kill(Pid::from_raw(pid), signal).map_err(io::Error::from)
}

/// The effective user id: PostgreSQL refuses to run as root.
pub(crate) fn euid() -> u32 {
    unistd::geteuid().as_raw()
}

/// An OS user's (uid, gid) by name; `None` if there is no such user.
pub(crate) fn user_ids(name: &str) -> io::Result<Option<(u32, u32)>> {
    let user = User::from_name(name).map_err(io::Error::from)?;
    Ok(user.map(|user| (user.uid.as_raw(), user.gid.as_raw())))
}
