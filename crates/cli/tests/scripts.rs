//! The bootstrap scripts of deploy/local and their environment knobs, run for real from a
//! checkout of their own: a dir closed to other users (like a clone in root's 0700 home) with
//! the scripts copied in, `CARGO_TARGET_DIR` naming a target dir whose `release/shardfeed` is
//! the CLI this test was built with, and stand-ins on `PATH` for the tools a test must not run
//! itself (cargo, buf, npm, the PostgreSQL and Redis binaries where only their presence counts).

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPTS: &[&str] = &[
    "lib.sh", "cli.sh", "down.sh", "up.sh", "test.sh", "lint.sh", "demo.sh",
];

/// A checkout: `Cargo.toml` and `deploy/local/` are what the scripts and `shardfeed dev` look
/// for; `bin/` holds the stand-ins.
struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Checkout {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        fs::write(dir.path().join("Cargo.lock"), "").unwrap();
        let scripts = dir.path().join("deploy/local");
        fs::create_dir_all(&scripts).unwrap();
        for script in SCRIPTS {
            fs::copy(repo.join("deploy/local").join(script), scripts.join(script)).unwrap();
        }
        fs::create_dir(dir.path().join("bin")).unwrap();
        Checkout { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<checkout>/<target>/release/shardfeed` → this test's CLI.
    fn link_cli(&self, target: &str) {
        let release = self.path().join(target).join("release");
        fs::create_dir_all(&release).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_shardfeed"), release.join("shardfeed"))
            .unwrap();
    }

    /// An executable `bin/<name>` with this shell body.
    fn stand_in(&self, name: &str, body: &str) {
        write_executable(&self.path().join("bin").join(name), body);
    }

    /// Runs `deploy/local/<script> args` from `cwd` (default: the checkout), with the stand-ins
    /// first on PATH and `vars` set.
    fn run(&self, script: &str, args: &[&str], vars: &[(&str, String)], cwd: Option<&Path>) -> Run {
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(self.path().join("deploy/local").join(script))
            .args(args)
            .current_dir(cwd.unwrap_or(self.path()))
            .env("PATH", path)
            .env("NO_COLOR", "1")
            // The stack's own knobs come from the test alone.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("SFDEV_PG_BINDIR")
            .env_remove("SFDEV_TEST_SUMMARY_FILE")
            .env_remove("SFDEV_BUF_VERSION")
            .env_remove("SFDEV_PG_PORT")
            .env_remove("SFDEV_REDIS_BASE_PORT");
        for (name, value) in vars {
            cmd.env(name, value);
        }
        Run::of(script, cmd.output().unwrap())
    }
}

struct Run {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(what: &str, output: Output) -> Run {
        Run {
            what: what.to_owned(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }

    fn failed(self) -> Run {
        assert_ne!(self.code, Some(0), "{self}");
        self
    }

    fn says(&self, text: &str) -> bool {
        self.stdout.contains(text) || self.stderr.contains(text)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

fn write_executable(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// PostgreSQL's binaries as far as the scripts look at them: present, with a version.
fn fake_pg_bindir(dir: &Path) -> PathBuf {
    let bindir = dir.join("pg/bin");
    write_executable(&bindir.join("initdb"), "exit 0");
    write_executable(
        &bindir.join("postgres"),
        "echo 'postgres (PostgreSQL) 15.99 stand-in'",
    );
    bindir
}

#[test]
fn test_sh_passes_the_target_dir_and_writes_the_summary_file() {
    let checkout = Checkout::new();
    let bindir = fake_pg_bindir(checkout.path());
    checkout.stand_in("redis-server", "echo 'Redis server v=7.9.9 stand-in'");
    checkout.stand_in("redis-cli", "exit 0");
    // cargo test as two test binaries and the doc tests report it; it fails, as a test would.
    let calls = checkout.path().join("cargo-calls");
    checkout.stand_in(
        "cargo",
        &format!(
            r#"echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR args=$*" >> '{}'
echo 'test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out'
echo 'test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out'
echo 'test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out'
exit 101"#,
            calls.display()
        ),
    );
    let summary = checkout.path().join("summary");
    let run = checkout
        .run(
            "test.sh",
            &["-p", "shardfeed-server"],
            &[
                ("CARGO_TARGET_DIR", "/srv/build/shardfeed".to_owned()),
                ("SFDEV_PG_BINDIR", bindir.display().to_string()),
                ("SFDEV_TEST_SUMMARY_FILE", summary.display().to_string()),
            ],
            None,
        )
        .failed();
    assert_eq!(run.code, Some(101), "cargo's status: {run}");
    assert_eq!(
        fs::read_to_string(&summary).unwrap(),
        "5 passed, 1 failed, 2 skipped\n"
    );
    assert!(run.says("tests: 5 passed, 1 failed, 2 skipped"), "{run}");
    assert!(
        run.says("postgres (PostgreSQL) 15.99 stand-in"),
        "SFDEV_PG_BINDIR: {run}"
    );
    assert_eq!(
        fs::read_to_string(&calls).unwrap(),
        "CARGO_TARGET_DIR=/srv/build/shardfeed args=test --locked -p shardfeed-server\n",
        "a named package is not widened to the workspace"
    );

    // A bin dir without PostgreSQL is an error naming the knob, never passed over.
    let run = checkout
        .run(
            "test.sh",
            &[],
            &[("SFDEV_PG_BINDIR", "/nonexistent/pg/bin".to_owned())],
            None,
        )
        .failed();
    assert!(
        run.says("SFDEV_PG_BINDIR=/nonexistent/pg/bin has no initdb and postgres"),
        "{run}"
    );
    assert_eq!(fs::read_to_string(&calls).unwrap().lines().count(), 1);
}

#[test]
fn lint_sh_uses_the_buf_of_the_version_knob() {
    let checkout = Checkout::new();
    checkout.stand_in("cargo", "exit 0");
    let npm_calls = checkout.path().join("npm-calls");
    checkout.stand_in(
        "npm",
        &format!("echo \"$*\" >> '{}'; exit 1", npm_calls.display()),
    );
    // The deployment files' lint is a script of its own, with tools of its own.
    write_executable(
        &checkout.path().join("deploy/local/lint-deploy.sh"),
        "echo 'deploy lint ran'",
    );
    // A buf installed earlier under .local/tools, of version 9.9.9.
    write_executable(
        &checkout.path().join(".local/tools/node_modules/.bin/buf"),
        r#"if [[ "$1" == --version ]]; then echo 9.9.9; else echo "buf $* ran"; fi"#,
    );
    let run = checkout
        .run(
            "lint.sh",
            &[],
            &[("SFDEV_BUF_VERSION", "9.9.9".to_owned())],
            None,
        )
        .ok();
    assert!(run.says("buf lint ran"), "{run}");
    assert!(
        !npm_calls.exists(),
        "the wanted version was there: no npm install"
    );

    // Another version is installed with npm (which fails here: so does the lint).
    let run = checkout
        .run(
            "lint.sh",
            &[],
            &[("SFDEV_BUF_VERSION", "9.9.8".to_owned())],
            None,
        )
        .failed();
    assert!(run.says("lint: FAILED: buf (not installed)"), "{run}");
    assert!(
        fs::read_to_string(&npm_calls)
            .unwrap()
            .contains("@bufbuild/buf@9.9.8"),
        "{run}"
    );
}

/// `count` free ports in a row (and their Redis bus ports, +10000, when `bus`) below the
/// kernel's ephemeral range, so that `dev up` has nothing to reserve there.
fn free_ports(count: u16, bus: bool, from: u16) -> u16 {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..1000 {
        let base = from + rand::random::<u16>() % 6_000;
        if (base..base + count).all(|p| free(p) && (!bus || free(p + 10_000))) {
            return base;
        }
    }
    panic!("no {count} free ports in a row");
}

/// The stack of a checkout, stopped and purged whatever happens.
struct Down<'a> {
    checkout: &'a Checkout,
    vars: Vec<(&'static str, String)>,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.checkout.run("down.sh", &["--purge"], &self.vars, None);
    }
}

#[test]
fn the_cli_and_migrate_follow_the_port_knobs_from_a_closed_checkout() {
    let checkout = Checkout::new();
    // Relative: resolved against the checkout, not the working dir.
    checkout.link_cli("build");
    let vars = vec![
        ("CARGO_TARGET_DIR", "build".to_owned()),
        ("SFDEV_PG_PORT", free_ports(1, false, 24_000).to_string()),
        (
            "SFDEV_REDIS_BASE_PORT",
            free_ports(6, true, 12_000).to_string(),
        ),
        // Not started (stores only), but `dev up` would reserve them if they were ephemeral.
        ("SFDEV_INGEST_ADDR", "127.0.0.1:30051".to_owned()),
        ("SFDEV_AGGREGATOR_ADDR", "127.0.0.1:30052".to_owned()),
    ];
    let (pg_port, redis_port) = (&vars[1].1, &vars[2].1);
    let down = Down {
        checkout: &checkout,
        vars: vars.clone(),
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let up = checkout
        .run(
            "cli.sh",
            &["dev", "up", "--stores-only"],
            &vars,
            Some(elsewhere.path()),
        )
        .ok();
    assert!(up.says(&format!("port {pg_port}")), "{up}");
    assert!(up.says(&format!("127.0.0.1:{redis_port}")), "{up}");

    let migrate = checkout.run("cli.sh", &["migrate"], &vars, None).ok();
    assert!(migrate.says("migrations: applied"), "{migrate}");
    // The CLI run by hand, with the knob alone: its default URL moves with the stack.
    let by_hand = Command::new(env!("CARGO_BIN_EXE_shardfeed"))
        .arg("migrate")
        .env("SFDEV_PG_PORT", pg_port)
        .env_remove("SHARDFEED_POSTGRES__URL")
        .env_remove("SHARDFEED_CONFIG")
        .output()
        .unwrap();
    let by_hand = Run::of("shardfeed migrate", by_hand).ok();
    assert!(by_hand.says("schema already up to date"), "{by_hand}");

    let env = checkout.run("cli.sh", &["dev", "env"], &vars, None).ok();
    assert!(
        env.says(&format!("@127.0.0.1:{pg_port}/shardfeed"))
            && env.says(&format!("SHARDFEED_REDIS__NODES=127.0.0.1:{redis_port},")),
        "{env}"
    );
    let status = checkout.run("cli.sh", &["dev", "status"], &vars, None).ok();
    assert!(
        status.says(&format!("127.0.0.1:{pg_port}"))
            && status.says("accepts connections")
            && status.says("redis cluster  healthy"),
        "{status}"
    );

    drop(down);
    let status = checkout.run("cli.sh", &["dev", "status"], &vars, None).ok();
    assert!(status.says("postgres       not running"), "{status}");
    assert!(!checkout.path().join(".local/redis").exists());
}
