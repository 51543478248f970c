//! Per-instance directories under `$TMPDIR/shardfeed-testkit/<pid>-<n>-<kind>`.
//!
//! Statics are never dropped and a killed test process drops nothing, so directories can be left
//! behind; the pid in the name lets any later test process remove those of dead processes.
//!
//! As root, PostgreSQL runs as the `postgres` OS user, which must reach its data dir: a private
//! `$TMPDIR` (pam_tmpdir's `/tmp/user/0`, or one in root's 0700 home) is not used then, and the
//! dirs go under `/tmp/shardfeed-testkit` instead.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

/// Where every instance directory lives: `$TMPDIR/shardfeed-testkit`, or
/// `/tmp/shardfeed-testkit` when the OS user PostgreSQL runs as cannot reach `$TMPDIR`.
pub fn base_dir() -> PathBuf {
    // Without a `postgres` user to run as, PgServer::start fails with what to do; the dir
    // itself is then the usual one.
    let server_user = crate::postgres::server_user().ok().flatten();
    base_dir_for(&std::env::temp_dir(), server_user)
}

/// [`base_dir`] for a temp dir and the (uid, gid) PostgreSQL runs as when that is not us.
pub(crate) fn base_dir_for(temp_dir: &Path, server_user: Option<(u32, u32)>) -> PathBuf {
    let preferred = temp_dir.join("shardfeed-testkit");
    match server_user {
        Some((uid, gid)) if !reachable_by(&preferred, uid, gid) => {
            PathBuf::from("/tmp/shardfeed-testkit")
        }
        _ => preferred,
    }
}

/// Removes the instance directories of test processes that no longer exist.
///
/// Runs whenever a store starts; exposed for CI scripts that want to tidy up explicitly.
pub fn remove_stale_dirs() -> anyhow::Result<()> {
    let base = base_dir();
    let entries = match fs::read_dir(&base) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", base.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_exists(pid) {
            // Best effort: another test process may be removing it at the same time.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// An instance directory, removed with everything in it on drop.
#[derive(Debug)]
pub(crate) struct InstanceDir(PathBuf);

impl InstanceDir {
    /// Creates a fresh `<pid>-<n>-<kind>` directory, first removing stale ones.
    pub(crate) fn create(kind: &str) -> anyhow::Result<InstanceDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = base_dir();
        if !base.exists() {
            // Sticky and world-writable like /tmp: the postgres user must reach its data dir, and
            // test processes of other users may share it.
            match fs::DirBuilder::new().mode(0o1777).create(&base) {
                Ok(()) => fs::set_permissions(&base, fs::Permissions::from_mode(0o1777))
                    .with_context(|| format!("setting the mode of {}", base.display()))?,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("creating {}", base.display()))
                }
            }
        }
        remove_stale_dirs()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("{}-{n}-{kind}", std::process::id()));
        // A leftover with our pid comes from a dead process whose pid was reused: remove it.
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(InstanceDir(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.0) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %err, "could not remove a testkit dir");
            }
        }
    }
}

/// Whether the OS user `uid` (primary group `gid`) can search every existing dir on the way to
/// `path`, i.e. could reach `path` or create it. Supplementary groups are not considered, so a
/// `false` may be too cautious, never wrong the other way.
pub(crate) fn reachable_by(path: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors()
        .skip(1)
        .filter_map(|dir| fs::metadata(dir).ok())
        .all(|meta| {
            let mode = meta.mode();
            if meta.uid() == uid {
                mode & 0o100 != 0
            } else if meta.gid() == gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        })
}

/// A dir under `/var/tmp` for `path`'s data when other users cannot reach `path`:
/// `/var/tmp/shardfeed-<hash of path>` (not created here: see [`ensure_private_parent`]).
pub(crate) fn outside_home(path: &Path) -> PathBuf {
    // FNV-1a: stable across Rust releases (std's hashers are not), so every command finds
    // the same dir.
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    PathBuf::from(format!("/var/tmp/shardfeed-{hash:016x}"))
}

/// Creates `dir` (mode 0755) if missing and checks that it is a real dir of this process' user
/// that no one else can write to. Its name under `/var/tmp` is predictable, so another local
/// user could have made it first, to swap the data dir or the initdb password file under us.
pub(crate) fn ensure_private_parent(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        // Whatever the umask: the server's user must be able to search it.
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the mode of {}", dir.display()))?,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("creating {}", dir.display())),
    }
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    let euid = crate::sys::euid();
    let problem = if !meta.is_dir() {
        Some("is not a directory (a symlink?)".to_owned())
    } else if meta.uid() != euid {
        Some(format!(
            "belongs to uid {}, not to us (uid {euid})",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "can be written by others (mode {:o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => anyhow::bail!(
            "{} {problem}: refusing to keep the local stack's PostgreSQL data there; remove it \
             (or look at who made it), then run the command again",
            dir.display()
        ),
    }
}

/// The last `max_lines` lines of a log file from byte `from` on, for error messages.
pub fn log_tail(path: &Path, from: u64, max_lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        // Only the end matters; do not slurp a huge log.
        let start = from.max(len.saturating_sub(64 * 1024));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(max_lines)..].join("\n");
            format!("--- last lines of {} ---\n{tail}", path.display())
        }
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

/// The current length of a file, 0 if it does not exist: where a new run's log lines start.
pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[test]
    fn a_temp_dir_the_server_user_cannot_reach_is_not_used() {
        let closed = private_dir();
        // A user that is neither the dir's owner nor in its group: `nobody`'s ids.
        let stranger = Some((65_534, 65_534));
        assert_eq!(
            base_dir_for(closed.path(), stranger),
            Path::new("/tmp/shardfeed-testkit")
        );
        // Running the server as ourselves, or when it can get in, the temp dir is kept.
        assert_eq!(
            base_dir_for(closed.path(), None),
            closed.path().join("shardfeed-testkit")
        );
        fs::set_permissions(closed.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            base_dir_for(closed.path(), stranger),
            closed.path().join("shardfeed-testkit")
        );
    }

    #[test]
    fn the_data_dirs_parent_must_be_ours_and_closed_to_others() {
        let root = private_dir();
        let fresh = root.path().join("fresh");
        ensure_private_parent(&fresh).expect("made here, so ours");
        ensure_private_parent(&fresh).expect("found again");
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o755
        );

        let open = root.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_parent(&open).unwrap_err().to_string();
        assert!(err.contains("written by others"), "{err}");

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let err = ensure_private_parent(&link).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");

        if crate::sys::euid() == 0 {
            let theirs = root.path().join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65_534), Some(65_534)).unwrap();
            let err = ensure_private_parent(&theirs).unwrap_err().to_string();
            assert!(err.contains("belongs to uid 65534"), "{err}");
        }
    }
}
