//! Per-instance directories under `$TMPDIR/shardfeed-testkit/<pid>-<n>-<kind>`.
//!
//! Statics are never dropped and a killed test process drops nothing, so directories can be left
//! behind; the pid in the name lets any later test process remove those of dead processes.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

/// Where every instance directory lives.
pub fn base_dir() -> PathBuf {
    std::env::temp_dir().join("shardfeed-testkit")
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
/// `/var/tmp/shardfeed-<hash of path>` (not created here).
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
