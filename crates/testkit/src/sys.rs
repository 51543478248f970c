//! The few libc calls std has no safe wrapper for. Each is a small function of its own so that
//! `unsafe` stays allowed only where it is needed (the workspace denies it).

use std::ffi::{c_int, CString};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child get `signal` when the thread that spawns it exits, so that no store outlives
/// the test process, not even one killed with SIGKILL. The caller must spawn from a thread that
/// lives as long as the process (see `spawner`).
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(cmd: &mut Command, signal: c_int) {
    let parent = std::process::id();
    // SAFETY: the hook runs between fork and exec, where only async-signal-safe calls are
    // allowed: prctl(2) and getppid(2) are system calls taking integers, and the errors are
    // built from raw errno values without allocating. It runs after std's setuid/setgid, which
    // would otherwise clear the death signal.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would ever signal us.
            if std::os::unix::process::parent_id() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Sends `signal` to `pid`. Only call it for a child that has not been waited for, so that the
/// pid cannot have been reused.
#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: u32, signal: c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The effective user id: PostgreSQL refuses to run as root.
#[allow(unsafe_code)]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Looks up an OS user's (uid, gid) by name; `None` if there is no such user.
#[allow(unsafe_code)]
pub(crate) fn user_ids(name: &str) -> io::Result<Option<(u32, u32)>> {
    let name = CString::new(name).map_err(io::Error::other)?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `pwd` and `buf`
    // are writable and `buf.len()` is its true size. getpwnam_r (unlike getpwnam) keeps no
    // static state, so concurrent calls are fine. `result` is either null or points to `pwd`,
    // which getpwnam_r then has initialized; we only read two integers from it.
    unsafe {
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            pwd.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        Ok(Some(((*result).pw_uid, (*result).pw_gid)))
    }
}
