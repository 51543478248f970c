//! PgServer and TestDb against a real PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use shardfeed_server::config::PostgresSettings;
use shardfeed_testkit::{PgServer, TestDb};
use tokio::task::JoinSet;
use tokio_postgres::Client;

async fn connect(url: &str) -> anyhow::Result<Client> {
    shardfeed_server::postgres::connect(&PostgresSettings::from_url(url)).await
}

async fn user_count(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0)
}

async fn insert_user(client: &Client, handle: &str) {
    client
        .execute(
            "INSERT INTO users (handle, display_name) VALUES ($1, $1)",
            &[&handle],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn pg_server_starts_and_accepts_connections() {
    let started = Instant::now();
    let pg = PgServer::start().unwrap();
    eprintln!("PgServer::start took {:?}", started.elapsed());
    assert_eq!(
        pg.url("postgres"),
        format!(
            "postgres://shardfeed:{}@127.0.0.1:{}/postgres",
            pg.password(),
            pg.port()
        )
    );
    assert!(!format!("{pg:?}").contains(pg.password()), "{pg:?}");
    let client = connect(&pg.url("postgres")).await.unwrap();
    let user: String = client
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "shardfeed");
    let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    assert_eq!(fsync, "off");

    let (pid, dir) = (pg.pid().unwrap(), pg.dir().to_owned());
    drop(client);
    drop(pg);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[tokio::test]
async fn test_dbs_are_migrated_and_isolated() {
    let started = Instant::now();
    let (a, b) = tokio::join!(TestDb::new(), TestDb::new());
    let (a, b) = (a.unwrap(), b.unwrap());
    eprintln!("two TestDb::new took {:?}", started.elapsed());
    assert_ne!(a.name(), b.name());
    assert!(a.url().ends_with(&format!("/{}", a.name())));

    let (ca, cb) = (
        connect(a.url()).await.unwrap(),
        connect(b.url()).await.unwrap(),
    );
    for client in [&ca, &cb] {
        let users: Option<String> = client
            .query_one("SELECT to_regclass('public.users')::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(users.as_deref(), Some("users"));
    }
    insert_user(&ca, "alice").await;
    assert_eq!(user_count(&ca).await, 1);
    assert_eq!(user_count(&cb).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_test_dbs_share_one_migration_and_are_dropped() {
    let pg = Arc::new(PgServer::start().unwrap());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let pg = Arc::clone(&pg);
        tasks.spawn(async move { TestDb::on(&pg).await });
    }
    let dbs: Vec<TestDb> = tasks
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    eprintln!(
        "8 concurrent TestDb::on, migrating the template once, took {:?}",
        started.elapsed()
    );
    let names: HashSet<&str> = dbs.iter().map(TestDb::name).collect();
    assert_eq!(names.len(), 8);

    let admin = connect(&pg.url("postgres")).await.unwrap();
    let test_dbs = || async {
        let count: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'test\\_%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        count
    };
    assert_eq!(test_dbs().await, 8);
    drop(dbs);
    assert_eq!(test_dbs().await, 0, "dropping a TestDb drops its database");
}

#[tokio::test]
async fn stop_and_restart_keep_the_port_and_the_data() {
    let pg = PgServer::start().unwrap();
    let db = TestDb::on(&pg).await.unwrap();
    let client = connect(db.url()).await.unwrap();
    insert_user(&client, "bob").await;
    drop(client);

    let port = pg.port();
    pg.stop().unwrap();
    assert!(pg.pid().is_none());
    assert!(
        connect(db.url()).await.is_err(),
        "connected to a stopped server"
    );
    pg.stop().unwrap(); // stopping twice is fine

    let started = Instant::now();
    pg.restart().unwrap();
    eprintln!("PgServer::restart took {:?}", started.elapsed());
    assert_eq!(pg.port(), port);
    let client = connect(db.url()).await.unwrap();
    assert_eq!(user_count(&client).await, 1);
}

#[tokio::test]
async fn restart_on_a_taken_port_fails_with_the_log_tail() {
    let pg = PgServer::start().unwrap();
    pg.stop().unwrap();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", pg.port())).unwrap();
    let err = format!("{:#}", pg.restart().unwrap_err());
    assert!(err.contains("Address already in use"), "{err}");
    assert!(err.contains("postgres.log"), "{err}");
    drop(squatter);
    pg.restart().unwrap();
    connect(&pg.url("postgres")).await.unwrap();
}

#[test]
fn the_bindir_knob_names_where_postgres_is_looked_for() {
    // A process of its own, since the knob is read from the environment: the stand-in test
    // process fails to start its stores, naming the dir it was pointed at.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shardfeed-testkit-child"))
        .env(shardfeed_testkit::BINDIR_VAR, "/nonexistent/pg/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/pg/bin/initdb") && stderr.contains("SFDEV_PG_BINDIR"),
        "{stderr}"
    );
}

#[test]
fn the_stores_start_when_tmpdir_is_private() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::{Command, Stdio};

    // A TMPDIR closed to other users, like pam_tmpdir's /tmp/user/0 or one in root's home.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let as_root = private.path().metadata().unwrap().uid() == 0;
    // The stand-in test process starts the shared stores and a PostgreSQL of its own there.
    let mut helper = Command::new(env!("CARGO_BIN_EXE_shardfeed-testkit-child"))
        .env("TMPDIR", private.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dirs = Vec::new();
    let mut ready = false;
    for line in BufReader::new(helper.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(dir) = line.strip_prefix("DIR ") {
            dirs.push(std::path::PathBuf::from(dir));
        } else if line == "READY" {
            ready = true;
            break;
        }
    }
    // Without a line on stdin it waits to be killed; its stores die with it.
    let _ = helper.kill();
    let output = helper.wait_with_output().unwrap();
    assert!(
        ready,
        "the stores did not start under a private TMPDIR:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    for dir in &dirs {
        // As root, PostgreSQL runs as `postgres`, who cannot enter the private dir: the dirs
        // go under /tmp. Anyone else's server runs as themselves and uses TMPDIR.
        assert_eq!(
            dir.starts_with(private.path()),
            !as_root,
            "{} (root: {as_root})",
            dir.display()
        );
    }
    shardfeed_testkit::remove_stale_dirs().unwrap();
}

#[tokio::test]
async fn logins_need_the_password_and_scram() {
    let pg = &shardfeed_testkit::shared().pg;
    let db = TestDb::new().await.unwrap();
    assert!(db.url().contains(&format!(":{}@", pg.password())));
    let client = db.connect().await.unwrap();
    let (method, stored): (String, bool) = {
        let row = client
            .query_one(
                "SELECT (SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1), \
                 (SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = current_user)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(method, "scram-sha-256");
    assert!(stored, "the password is stored as a SCRAM verifier");

    let wrong = connect(&pg.url_as(pg.user(), "not-the-password", db.name()))
        .await
        .unwrap_err();
    let text = format!("{wrong:#}");
    assert!(
        text.contains("authentication failed") && text.contains("postgres.url"),
        "{text}"
    );
    assert!(!text.contains(pg.password()), "{text}");
    let none = connect(&format!(
        "postgres://shardfeed@127.0.0.1:{}/{}",
        pg.port(),
        db.name()
    ))
    .await
    .unwrap_err();
    let text = format!("{none:#}");
    assert!(text.contains("password"), "{text}");

    // The migrations, as a service runs them at start-up, name the authentication too.
    let settings = PostgresSettings::from_url(pg.url_as(pg.user(), "wrong", db.name()));
    let err = shardfeed_server::postgres::run_migrations(&settings)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("authentication failed"),
        "{err:#}"
    );
}

/// `postgres.tls` against a server with `ssl = on` and a certificate of a test CA: each mode
/// connects as it says, through single connections and the pool alike.
#[tokio::test]
async fn postgres_tls_modes_are_honoured() {
    use shardfeed_server::config::PostgresTls;
    let certs = shardfeed_testkit::TestCertificates::for_localhost().unwrap();
    let pg = PgServer::start_tls(&certs.cert_pem, &certs.key_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = certs.write_ca(dir.path()).unwrap();
    let settings = |tls: PostgresTls, ca: Option<&std::path::Path>| {
        let mut settings = PostgresSettings::from_url(pg.url("postgres"));
        settings.tls = tls;
        settings.tls_ca_file = ca.map(ToOwned::to_owned);
        settings
    };
    let encrypted = |client: Client| async move {
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    };

    let verified = settings(PostgresTls::VerifyFull, Some(&ca));
    let client = shardfeed_server::postgres::connect(&verified)
        .await
        .unwrap();
    assert!(encrypted(client).await, "verify-full is encrypted");
    let pool = shardfeed_server::postgres::pool(&verified).unwrap();
    let pooled = pool.get().await.unwrap();
    let ssl: bool = pooled
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the pool's connections are encrypted");

    let required = shardfeed_server::postgres::connect(&settings(PostgresTls::Require, None))
        .await
        .unwrap();
    assert!(encrypted(required).await, "require is encrypted");
    let plain = shardfeed_server::postgres::connect(&settings(PostgresTls::Disable, None))
        .await
        .unwrap();
    assert!(!encrypted(plain).await, "disable is not");

    // Not signed by the platform's roots: verify-full without the CA file refuses it.
    let err = shardfeed_server::postgres::connect(&settings(PostgresTls::VerifyFull, None))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("certificate"), "{err:#}");
    // Nor does a certificate for another name pass, though signed by the trusted CA.
    let mut elsewhere = verified.clone();
    elsewhere.url = format!(
        "postgres://{}:{}@not-this-server.example:{}/postgres?hostaddr=127.0.0.1",
        pg.user(),
        pg.password(),
        pg.port()
    )
    .into();
    let err = shardfeed_server::postgres::connect(&elsewhere)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("certificate"), "{err:#}");
}
