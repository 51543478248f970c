//! The local stack's knobs, and its stores started, used and stopped on the ports they name.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use shardfeed_server::Settings;
use shardfeed_testkit::{ProcState, RedisCluster};

use super::*;

fn stack_from(root: PathBuf, vars: &[(&str, String)]) -> anyhow::Result<Stack> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    Stack::from_vars(root, |name| vars.get(name).cloned())
}

/// Every knob set, as the process environment of `shardfeed migrate` (or of a service) would
/// hold them next to the stack's settings.
fn process_env(vars: &[(&str, String)], stack: &Stack) -> Vec<(String, String)> {
    vars.iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .chain(stack.client_env())
        .collect()
}

#[test]
fn every_knob_is_honoured_and_the_settings_still_load() {
    let vars = [
        (PG_PORT_VAR, "54349".to_owned()),
        (REDIS_BASE_PORT_VAR, "7200".to_owned()),
        (INGEST_ADDR_VAR, "127.0.0.1:50081".to_owned()),
        (AGGREGATOR_ADDR_VAR, "127.0.0.1:50082".to_owned()),
        (START_TIMEOUT_VAR, "5".to_owned()),
        (
            shardfeed_testkit::BINDIR_VAR,
            "/usr/lib/postgresql/15/bin".to_owned(),
        ),
    ];
    let stack = stack_from("/repo/.local".into(), &vars).unwrap();
    assert_eq!(stack.pg_port, 54349);
    assert_eq!(stack.redis_base_port, 7200);
    assert_eq!(stack.ingest_addr.to_string(), "127.0.0.1:50081");
    assert_eq!(stack.aggregator_addr.to_string(), "127.0.0.1:50082");
    assert_eq!(stack.start_timeout, Duration::from_secs(5));

    let settings = Settings::load_from(None, process_env(&vars, &stack))
        .expect("the knobs leave the configuration alone");
    assert_eq!(
        settings.postgres.url(),
        "postgres://shardfeed:shardfeed-development-postgres-password@127.0.0.1:54349/shardfeed"
    );
    assert_eq!(settings.redis.username.as_deref(), Some(DEV_REDIS_USER));
    assert_eq!(settings.redis.password(), Some(DEV_REDIS_PASSWORD));
    assert_eq!(settings.redis.nodes.len(), 6);
    assert_eq!(settings.redis.nodes[0].to_string(), "127.0.0.1:7200");
    assert_eq!(settings.redis.nodes[5].to_string(), "127.0.0.1:7205");
    assert_eq!(settings.ingest.listen_addr.to_string(), "127.0.0.1:50081");
    assert_eq!(
        settings.aggregator.listen_addr.to_string(),
        "127.0.0.1:50082"
    );
}

#[test]
fn a_knob_named_like_a_setting_would_break_the_configuration() {
    // Why the knobs are not SHARDFEED_…: the configuration refuses the unknown key.
    let err =
        Settings::load_from(None, [("SHARDFEED_PG_PORT".into(), "54349".into())]).unwrap_err();
    assert!(err.to_string().contains("pg_port"), "{err}");
}

#[test]
fn defaults_and_bad_values() {
    let stack = stack_from("/r".into(), &[]).unwrap();
    assert_eq!(
        (stack.pg_port, stack.redis_base_port),
        (54329, 7000),
        "the documented defaults"
    );
    assert_eq!(stack.ingest_addr.to_string(), "127.0.0.1:50051");
    for (name, value, says) in [
        (PG_PORT_VAR, "5432", "refused"),
        (PG_PORT_VAR, "many", "port number"),
        (REDIS_BASE_PORT_VAR, "60000", "too high"),
        (INGEST_ADDR_VAR, "nowhere", "address"),
        (START_TIMEOUT_VAR, "-1", "seconds"),
    ] {
        let err = stack_from("/r".into(), &[(name, value.to_owned())]).unwrap_err();
        assert!(err.to_string().contains(says), "{name}={value}: {err}");
    }
}

#[test]
fn the_cli_settings_follow_the_port_knobs_unless_given() {
    let knobs = [(PG_PORT_VAR, "54349"), (REDIS_BASE_PORT_VAR, "7200")];
    let var = |name: &str| {
        knobs
            .iter()
            .find(|(knob, _)| *knob == name)
            .map(|(_, value)| value.to_string())
    };
    // The built-in defaults are the stack on its default ports: they move with it.
    let mut settings = Settings::load_from(None, Vec::new()).unwrap();
    follow_port_knobs(&mut settings, var).unwrap();
    assert_eq!(
        settings.postgres.url(),
        "postgres://shardfeed:shardfeed-development-postgres-password@127.0.0.1:54349/shardfeed"
    );
    assert_eq!(settings.redis.nodes[0], "127.0.0.1:7200");
    assert_eq!(settings.redis.nodes[5], "127.0.0.1:7205");

    // Settings that someone gave stay as they are.
    let given = [
        (
            "SHARDFEED_POSTGRES__URL",
            "postgres://app:pw@db.internal:5433/feeds",
        ),
        ("SHARDFEED_REDIS__NODES", "cache.internal:6379"),
    ];
    let mut settings = Settings::load_from(
        None,
        given.map(|(name, value)| (name.to_owned(), value.to_owned())),
    )
    .unwrap();
    follow_port_knobs(&mut settings, var).unwrap();
    assert_eq!(
        settings.postgres.url(),
        "postgres://app:pw@db.internal:5433/feeds"
    );
    assert_eq!(settings.redis.nodes, ["cache.internal:6379"]);

    // Without the knobs nothing moves; a bad knob is an error, as for `dev up`.
    let mut settings = Settings::load_from(None, Vec::new()).unwrap();
    follow_port_knobs(&mut settings, |_| None).unwrap();
    assert!(settings.postgres.url().contains(":54329/"));
    let err = follow_port_knobs(&mut settings, |name| {
        (name == PG_PORT_VAR).then(|| "5432".to_owned())
    })
    .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test]
async fn a_service_gets_the_start_timeout_to_report_serving() {
    let root = tempfile::tempdir().unwrap();
    let port = free_ports(1, false);
    let vars = [
        (INGEST_ADDR_VAR, format!("127.0.0.1:{port}")),
        (START_TIMEOUT_VAR, "2".to_owned()),
    ];
    let stack = stack_from(root.path().join(".local"), &vars).unwrap();
    let state = stack.state();
    // A "service" that runs but never serves.
    let mut silent = std::process::Command::new("sleep");
    silent.arg("60");
    state.start("ingest", silent, port).unwrap();
    let started = std::time::Instant::now();
    let err = stack::wait_serving(&stack, &state, "ingest")
        .await
        .unwrap_err();
    let waited = started.elapsed();
    state.stop("ingest", Duration::from_secs(5)).unwrap();
    assert!(
        format!("{err:#}").contains(&format!("ingest is not SERVING on 127.0.0.1:{port}")),
        "{err:#}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(15),
        "waited {waited:?} with {START_TIMEOUT_VAR}=2"
    );

    // One that exits is reported at once, with its log.
    let mut failing = std::process::Command::new("sh");
    failing.args(["-c", "echo bad settings >&2; exit 1"]);
    state.start("ingest", failing, port).unwrap();
    let started = std::time::Instant::now();
    let err = stack::wait_serving(&stack, &state, "ingest")
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("exited during start-up") && text.contains("bad settings"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn restart_without_new_binaries_leaves_the_running_services_alone() {
    let root = tempfile::tempdir().unwrap();
    let stack = stack_from(root.path().join(".local"), &[]).unwrap();
    let state = stack.state();
    let mut running = std::process::Command::new("sleep");
    running.arg("60");
    let record = state.start("ingest", running, 50_051).unwrap();
    // The test binary has no service binaries beside it, as after a failed build.
    let err = stack::restart(&stack).await.unwrap_err();
    let still = state.live("ingest").unwrap();
    state.stop("ingest", Duration::from_secs(5)).unwrap();
    assert!(err.to_string().contains("is missing"), "{err:#}");
    assert_eq!(still.map(|r| r.process), Some(record.process));
}

/// A free port whose `count - 1` successors (and their bus ports when `bus`) are free too,
/// below Linux's ephemeral range (32768–60999), like the stack's fixed ports: a port in it can
/// be taken as the source port of any client connection (this test's own among them) between
/// the check and the bind.
fn free_ports(count: u16, bus: bool) -> u16 {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..1000 {
        let base = 11_000 + rand::random::<u16>() % 11_000;
        if (base..base + count).all(|p| free(p) && (!bus || free(p + 10_000))) {
            return base;
        }
    }
    panic!("no {count} free ports in a row");
}

/// Both services, started in this process with the settings `dev up` gives their binaries,
/// listen on the knobs' addresses, report SERVING there, and are where the CLI's service knobs
/// (`dev env`) point.
async fn services_serve_on_the_knob_addresses(stack: &Stack) {
    let env = stack::service_env(stack, |_| false);
    let mut settings = Settings::load_from(None, env.clone()).expect("the services' settings");
    // No knob moves the metrics ports: free ones, beside any stack running here.
    settings.ingest.metrics_addr = "127.0.0.1:0".parse().unwrap();
    settings.aggregator.metrics_addr = "127.0.0.1:0".parse().unwrap();
    let ingest = shardfeed_ingest::Application::build(settings.clone())
        .await
        .expect("ingest starts on the stack");
    let aggregator = shardfeed_aggregator::Application::build(settings)
        .await
        .expect("the aggregator starts on the stack");
    assert_eq!(ingest.local_addr(), stack.ingest_addr);
    assert_eq!(aggregator.local_addr(), stack.aggregator_addr);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let ingest = tokio::spawn(ingest.run_until_stopped(until_stopped(stopped.clone())));
    let aggregator = tokio::spawn(aggregator.run_until_stopped(until_stopped(stopped)));
    let env: HashMap<String, String> = env.into_iter().collect();
    for var in [
        crate::client::INGEST_URL_VAR,
        crate::client::AGGREGATOR_URL_VAR,
    ] {
        let channel = tonic::transport::Endpoint::from_shared(env[var].clone())
            .unwrap()
            .connect_lazy();
        shardfeed_testkit::wait_for_health(
            &channel,
            "",
            shardfeed_testkit::ServingStatus::Serving,
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|err| panic!("{var}={}: {err:#}", env[var]));
    }
    stop.send(true).unwrap();
    ingest.await.unwrap().expect("ingest stops cleanly");
    aggregator
        .await
        .unwrap()
        .expect("the aggregator stops cleanly");
}

/// Kept processes outlive the test: whatever happens, stop them and purge their data.
struct DownOnDrop<'a>(&'a Stack);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = stack::down(self.0, true);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stores_start_on_the_knob_ports_take_migrations_and_stop() {
    let root = tempfile::tempdir().unwrap();
    let vars = [
        (PG_PORT_VAR, free_ports(1, false).to_string()),
        (REDIS_BASE_PORT_VAR, free_ports(6, true).to_string()),
        (
            INGEST_ADDR_VAR,
            format!("127.0.0.1:{}", free_ports(1, false)),
        ),
        (
            AGGREGATOR_ADDR_VAR,
            format!("127.0.0.1:{}", free_ports(1, false)),
        ),
    ];
    // Closed to other users, like a clone in root's home.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let stack = stack_from(root.path().join(".local"), &vars).unwrap();
    let state = stack.state();
    let _down = DownOnDrop(&stack);
    stack::up(&stack, true).await.expect("dev up --stores-only");

    // What `shardfeed migrate` does with the knobs in its environment.
    let settings = Settings::load_from(None, process_env(&vars, &stack)).unwrap();
    let applied = shardfeed_server::postgres::run_migrations(&settings.postgres)
        .await
        .expect("migrations on the knob's port");
    // The services' Redis client gets in with the stack's credentials, and no one without.
    let redis = shardfeed_server::redis::connect_and_wait(&settings.redis, Duration::from_secs(10))
        .await
        .expect("the stack's credentials open the cluster");
    fred::interfaces::ClientLike::quit(&redis).await.unwrap();
    let mut stranger = settings.redis.clone();
    stranger.password = Some("not-the-development-password".to_owned().into());
    let err = shardfeed_server::redis::connect_and_wait(&stranger, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(shardfeed_server::redis::is_auth_error(&err), "{err:#}");
    assert!(!applied.is_empty());
    services_serve_on_the_knob_addresses(&stack).await;
    let pg = state.read("postgres").unwrap().expect("postgres recorded");
    assert_eq!(pg.port, stack.pg_port);
    let data = pg.dir.clone().expect("a data dir");
    if root.path().metadata().unwrap().uid() == 0 {
        // As root, PostgreSQL runs as `postgres`, which cannot enter the 0700 temp dir.
        assert!(
            data.to_string_lossy().starts_with("/var/tmp/shardfeed-"),
            "{}",
            data.display()
        );
    }

    // Up again: everything is found running and left alone.
    stack::up(&stack, true).await.expect("dev up is idempotent");
    assert_eq!(state.read("postgres").unwrap().unwrap().process, pg.process);
    let cluster = {
        let (state, dir, base) = (state.clone(), stack.redis_dir(), stack.redis_base_port);
        let credentials = stack.redis_credentials();
        tokio::task::spawn_blocking(move || {
            RedisCluster::find_kept(&state, &dir, base, &credentials)
        })
        .await
        .unwrap()
        .unwrap()
    };
    // Nodes left running by a stack with other credentials (an older shardfeed's had none) are
    // refused with what to run.
    let refused = {
        let (state, dir, base) = (state.clone(), stack.redis_dir(), stack.redis_base_port);
        let other = shardfeed_testkit::RedisCredentials::new("shardfeed", "another-one").unwrap();
        tokio::task::spawn_blocking(move || RedisCluster::start_kept(&state, &dir, base, &other))
            .await
            .unwrap()
            .unwrap_err()
    };
    assert!(
        format!("{refused:#}").contains("shardfeed dev down --purge"),
        "{refused:#}"
    );
    assert_eq!(cluster.seed_nodes(), stack.redis_nodes());
    cluster.health().expect("the kept cluster is healthy");
    let records: Vec<_> = state
        .names()
        .unwrap()
        .iter()
        .map(|name| state.read(name).unwrap().unwrap())
        .collect();
    assert_eq!(records.len(), 7, "postgres and six nodes");

    stack::down(&stack, true).expect("dev down --purge");
    for record in records {
        assert_eq!(record.state(), ProcState::Gone, "{record:?} survived down");
    }
    assert!(state.names().unwrap().is_empty());
    assert!(!data.exists(), "down --purge removes the data");
    assert!(data.starts_with(&stack.root) || !data.parent().unwrap().exists());
}

/// `dev certs` leaves what its export lines name: settings that load and make a server serve
/// mutual TLS, and `SFDEV_TLS_*` that take the CLI's channels through it.
#[tokio::test]
async fn dev_certs_set_up_mutual_tls_for_the_services_and_the_cli() {
    use crate::client::{Channels, TlsFlags, TLS_CA_VAR, TLS_CERT_VAR, TLS_KEY_VAR};
    let dir = tempfile::tempdir().unwrap();
    let lines = certs(
        &dir.path().join("tls"),
        &["feeds.internal".into()],
        "cli-test",
    )
    .unwrap();
    let exports: HashMap<String, String> = lines
        .iter()
        .map(|line| {
            let (name, value) = line
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
                .unwrap_or_else(|| panic!("not an export line: {line}"));
            (name.to_owned(), value.to_owned())
        })
        .collect();
    assert_eq!(exports["SHARDFEED_GRPC__TLS_CLIENT_AUTH"], "required");
    assert_eq!(shell_word("/srv/pki/ca.pem"), "/srv/pki/ca.pem");
    assert_eq!(shell_word("/my pki/it's.pem"), r"'/my pki/it'\''s.pem'");
    let settings = Settings::load_from(None, exports.clone()).expect("the exports load");
    assert!(settings.grpc.tls_identity_files().is_some());

    let dev = Settings::load_from(None, [("SHARDFEED_DEV_MODE".into(), "true".into())]).unwrap();
    let server = shardfeed_server::grpc::GrpcServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        settings.grpc.clone(),
        shardfeed_server::auth::AuthLayer::from_settings(&dev).unwrap(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let path = |name: &str| Some(PathBuf::from(&exports[name]));
    let client = TlsFlags {
        ca: path(TLS_CA_VAR),
        cert: path(TLS_CERT_VAR),
        key: path(TLS_KEY_VAR),
        domain: None,
    };
    // The CLI's default URL scheme, upgraded by the flags; 127.0.0.1 is in the certificate.
    let url = format!("http://{addr}");
    // Health needs no token; the channels carry one all the same.
    let bearer = crate::client::bearer(&dev).unwrap();
    let channels = Channels::connect(&url, &client, 2, "test server", &bearer)
        .await
        .unwrap();
    for i in 0..2 {
        shardfeed_testkit::wait_for_health(
            &channels.raw(i),
            "",
            shardfeed_testkit::ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    // The extra name is in it too.
    let by_name = TlsFlags {
        domain: Some("feeds.internal".into()),
        ..client.clone()
    };
    let channel = Channels::connect(&url, &by_name, 1, "test server", &bearer)
        .await
        .unwrap();
    shardfeed_testkit::health(&channel.raw(0), "")
        .await
        .unwrap();
    // Without the client certificate the server refuses, and so does a name not in it.
    let anonymous = TlsFlags {
        cert: None,
        key: None,
        ..client.clone()
    };
    let refused = async {
        let channels = Channels::connect(&url, &anonymous, 1, "test server", &bearer).await?;
        anyhow::Ok(shardfeed_testkit::health(&channels.raw(0), "").await?)
    };
    assert!(refused.await.is_err(), "no client certificate got through");
    let wrong_name = TlsFlags {
        domain: Some("elsewhere.internal".into()),
        ..client.clone()
    };
    assert!(
        Channels::connect(&url, &wrong_name, 1, "test server", &bearer)
            .await
            .is_err()
    );

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[test]
fn postgres_data_of_a_stack_without_passwords_is_refused_with_what_to_run() {
    // What an older shardfeed's initdb left: every connection trusted.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("pg");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        "# TYPE DATABASE USER ADDRESS METHOD\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    let state = shardfeed_testkit::StateDir::new(root.path().join(".local"));
    let err = shardfeed_testkit::PgServer::start_kept(&state, &data, free_ports(1, false), "pw")
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("shardfeed dev down --purge") && text.contains("without a password"),
        "{text}"
    );
}

#[test]
fn dev_env_prints_the_credentials_as_settings() {
    let stack = stack_from("/r".into(), &[]).unwrap();
    let env: HashMap<String, String> = stack.shell_env().into_iter().collect();
    assert_eq!(env["SHARDFEED_REDIS__USERNAME"], "shardfeed");
    assert_eq!(env["SHARDFEED_REDIS__PASSWORD"], DEV_REDIS_PASSWORD);
    assert_eq!(env["REDISCLI_AUTH"], DEV_REDIS_PASSWORD);
    assert!(env["SHARDFEED_POSTGRES__URL"].contains(&format!(":{DEV_PG_PASSWORD}@")));
    // The shell lines are settings the services load (REDISCLI_AUTH is no setting).
    Settings::load_from(None, stack.shell_env()).expect("dev env loads");
}
