//! No store process outlives its test process, however that process ends.
//!
//! Each test runs the `shardfeed-testkit-child` binary (src/bin), a stand-in test process
//! that starts the shared stores, a PgServer of its own and a database session, reports, and
//! then panics, aborts or is SIGKILLed. We record every descendant process of the helper before
//! it dies and require all of them to be gone shortly after.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use shardfeed_testkit::remove_stale_dirs;

const HELPER_ENV: &str = "SFDEV_TESTKIT_CHILD_MODE";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: u32,
    ppid: u32,
    /// Tells a process from a later one that reused its pid.
    start_time: u64,
    comm: String,
    zombie: bool,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // After the comm: state is field 3 of stat(5), ppid 4, starttime 22.
    Some(Proc {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
        comm,
        zombie: fields.first()? == &"Z",
    })
}

/// Every live process below `root` in the process tree.
fn descendants(root: u32) -> Vec<Proc> {
    let mut children: HashMap<u32, Vec<Proc>> = HashMap::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(proc) = read_proc(pid).filter(|p| !p.zombie) {
            children.entry(proc.ppid).or_default().push(proc);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for child in children.remove(&pid).unwrap_or_default() {
            queue.push(child.pid);
            found.push(child);
        }
    }
    found
}

fn still_running(proc: &Proc) -> bool {
    read_proc(proc.pid).is_some_and(|now| now.start_time == proc.start_time && !now.zombie)
}

/// Runs the helper in `mode`, ends it with `end`, and checks that all its processes are gone.
fn helper_dies_without_leftovers(mode: &str) {
    let mut helper = Command::new(env!("CARGO_BIN_EXE_shardfeed-testkit-child"))
        .args(["--test-threads=1"])
        .env(HELPER_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = helper.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut dirs = Vec::new();
    let mut ready = false;
    for line in BufReader::new(helper.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(dir) = line.strip_prefix("DIR ") {
            dirs.push(PathBuf::from(dir));
        } else if line == "READY" {
            ready = true;
            break;
        }
    }
    if !ready {
        let _ = helper.kill();
        let _ = helper.wait();
        panic!("the helper did not get ready:\n{}", stderr.join().unwrap());
    }

    let procs = descendants(helper.id());
    let count = |comm: &str| procs.iter().filter(|p| p.comm == comm).count();
    assert_eq!(count("redis-server"), 6, "{procs:#?}");
    // Two postmasters, their auxiliary processes and at least one backend.
    assert!(count("postgres") >= 6, "{procs:#?}");
    assert!(dirs.iter().all(|dir| dir.exists()));

    if mode == "sigkill" {
        helper.kill().unwrap();
    } else {
        helper.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let status = helper.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(!status.success(), "the helper succeeded: {stderr}");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<&Proc> = procs.iter().filter(|p| still_running(p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the dead helper ({mode}) are still running: {left:#?}"
        );
        thread::sleep(Duration::from_millis(50));
    }

    // The dirs of a dead process go when anyone next looks.
    remove_stale_dirs().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}

#[test]
fn nothing_survives_a_panicking_test_process() {
    helper_dies_without_leftovers("panic");
}

#[test]
fn nothing_survives_an_aborting_test_process() {
    helper_dies_without_leftovers("abort");
}

#[test]
fn nothing_survives_a_sigkilled_test_process() {
    helper_dies_without_leftovers("sigkill");
}
