//! What every server has: health, reflection v1 and v1alpha, graceful shutdown.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use shardfeed_server::config::PostgresSettings;

use crate::helpers::TestApp;

#[tokio::test]
async fn reports_serving_when_postgres_answers() {
    let app = TestApp::spawn().await;
    app.wait_for_health(ServingStatus::Serving).await;
    for service in [
        "shardfeed.v1.UserService",
        "shardfeed.v1.GraphService",
        "shardfeed.v1.PostService",
    ] {
        let status = tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let app = TestApp::spawn().await;
    let v1 = shardfeed_testkit::reflection::list_services_v1(app.channel.clone())
        .await
        .unwrap();
    let v1alpha = shardfeed_testkit::reflection::list_services_v1alpha(app.channel.clone())
        .await
        .unwrap();
    for listed in [&v1, &v1alpha] {
        for service in [
            "shardfeed.v1.UserService",
            "shardfeed.v1.GraphService",
            "shardfeed.v1.PostService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                listed.iter().any(|s| s == service),
                "{service} missing from {listed:?}"
            );
        }
    }
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_stops() {
    let app = TestApp::spawn().await;
    app.wait_for_health(ServingStatus::Serving).await;
    // A Watch stream opened before the shutdown is a request in flight: it lives through the
    // drain, and carries the change of status.
    let mut watch = HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Watch answers")
        .into_inner();
    let first = watch.message().await.expect("a status").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let started = Instant::now();
    let stopped = tokio::spawn(app.shutdown());
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a status change within 5 s of the shutdown")
        .expect("the stream stays open during the drain")
        .expect("a status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    // The last request in flight ends: the drain is over.
    drop(watch);
    stopped
        .await
        .expect("the shutdown task")
        .expect("clean shutdown");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn messages_over_the_configured_limit_are_refused() {
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let app = TestApp::spawn_with(db, &[("SHARDFEED_GRPC__MAX_MESSAGE_BYTES", "2048")]).await;
    let s = app
        .users
        .clone()
        .create_user(shardfeed_proto::v1::CreateUserRequest {
            handle: "big_one".into(),
            display_name: "x".repeat(4096),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert_eq!(app.count_users().await, 0);
}

#[tokio::test]
async fn ingest_applies_migrations_at_start_up_when_asked() {
    // An empty database, not the migrated template.
    let pg = &shardfeed_testkit::shared().pg;
    let name = format!("empty_{:08x}", rand::random::<u32>());
    let connect = |url: String| async move {
        shardfeed_server::postgres::connect(&PostgresSettings::from_url(url))
            .await
            .unwrap()
    };
    let admin = connect(pg.url("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();

    let settings_for = |run: &str| {
        let mut env: Vec<(String, String)> = vec![
            ("SHARDFEED_DEV_MODE".into(), "true".into()),
            ("SHARDFEED_POSTGRES__URL".into(), pg.url(&name)),
            ("SHARDFEED_INGEST__LISTEN_ADDR".into(), "127.0.0.1:0".into()),
            (
                "SHARDFEED_INGEST__METRICS_ADDR".into(),
                "127.0.0.1:0".into(),
            ),
            ("SHARDFEED_INGEST__RUN_MIGRATIONS".into(), run.into()),
        ];
        env.push(("SHARDFEED_REDIS__NODES".into(), "127.0.0.1:1".into()));
        env.push(("SHARDFEED_REDIS__CONNECT_TIMEOUT_MS".into(), "100".into()));
        shardfeed_server::Settings::load_from(None, env).unwrap()
    };
    let users_table_exists = || async {
        let client = connect(pg.url(&name)).await;
        let row = client
            .query_one("SELECT to_regclass('public.users') IS NOT NULL", &[])
            .await
            .unwrap();
        row.get::<_, bool>(0)
    };

    // Turned off: the schema is left alone.
    drop(
        shardfeed_ingest::Application::build(settings_for("false"))
            .await
            .unwrap(),
    );
    assert!(!users_table_exists().await);
    // On: applied, and a second start (another replica) is a no-op.
    drop(
        shardfeed_ingest::Application::build(settings_for("true"))
            .await
            .unwrap(),
    );
    assert!(users_table_exists().await);
    drop(
        shardfeed_ingest::Application::build(settings_for("true"))
            .await
            .unwrap(),
    );

    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

/// Start-up with credentials the stores refuse: a clear error naming the settings, never the
/// secret.
#[tokio::test]
async fn a_refused_redis_login_stops_start_up_naming_the_settings() {
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let right = shardfeed_testkit::shared()
        .redis
        .credentials()
        .password
        .clone();
    let refusal = |settings: shardfeed_server::Settings| async move {
        match shardfeed_ingest::Application::build(settings).await {
            Ok(_) => panic!("ingest started with credentials the cluster refuses"),
            Err(err) => format!("{err:#}"),
        }
    };

    let wrong = crate::helpers::settings(&db, &[("SHARDFEED_REDIS__PASSWORD", "not-the-password")]);
    let err = refusal(wrong).await;
    assert!(
        err.contains("WRONGPASS") && err.contains("redis.password"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password") && !err.contains(&right),
        "{err}"
    );

    let mut anonymous = crate::helpers::settings(&db, &[]);
    anonymous.redis.username = None;
    anonymous.redis.password = None;
    let err = refusal(anonymous).await;
    assert!(
        err.contains("NOAUTH") && err.contains("redis.username"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_postgres_login_names_authentication_and_never_serves() {
    let pg = &shardfeed_testkit::shared().pg;
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let url = pg.url_as(pg.user(), "not-the-password", db.name());

    // Migrating at start-up: start-up fails.
    let migrating = crate::helpers::settings(
        &db,
        &[
            ("SHARDFEED_POSTGRES__URL", &url),
            ("SHARDFEED_INGEST__RUN_MIGRATIONS", "true"),
        ],
    );
    let err = match shardfeed_ingest::Application::build(migrating).await {
        Ok(_) => panic!("ingest migrated with a wrong password"),
        Err(err) => format!("{err:#}"),
    };
    assert!(
        err.contains("authentication failed") && err.contains("postgres.url"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password") && !err.contains(pg.password()),
        "{err}"
    );

    // Not migrating: it starts (the pool connects lazily) but never reports SERVING.
    let app = crate::helpers::TestApp::spawn_with(db, &[("SHARDFEED_POSTGRES__URL", &url)]).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = None;
    while Instant::now() < deadline {
        let status = shardfeed_testkit::health(&app.channel, "").await.unwrap();
        assert_ne!(
            status,
            ServingStatus::Serving,
            "SERVING with a refused login"
        );
        last = Some(status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, Some(ServingStatus::NotServing));
    // Not ready, but alive: a liveness probe must not restart it for its store.
    assert_eq!(
        shardfeed_testkit::health(&app.channel, shardfeed_server::grpc::LIVENESS)
            .await
            .unwrap(),
        ServingStatus::Serving
    );
}

/// `redis.tls`: against a cluster that speaks TLS (a test CA's certificate for 127.0.0.1), the
/// services' client routes over TLS to every master, and ingest warms the cache through it. A
/// client without TLS, or one that trusts the platform's roots alone, gets nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_client_speaks_tls_to_a_tls_cluster() {
    use fred::interfaces::{ClusterInterface, KeysInterface};
    let certs = shardfeed_testkit::TestCertificates::for_localhost().unwrap();
    let cluster =
        tokio::task::spawn_blocking(move || shardfeed_testkit::RedisCluster::start_tls(&certs))
            .await
            .unwrap()
            .unwrap();
    let env = cluster.settings_env();
    assert!(env.contains(&("SHARDFEED_REDIS__TLS".into(), "true".into())));
    let settings = shardfeed_server::Settings::load_from(None, env.clone()).unwrap();
    assert_eq!(settings.redis.nodes, cluster.tls_seed_nodes());

    let redis = shardfeed_server::redis::connect_and_wait(&settings.redis, Duration::from_secs(10))
        .await
        .expect("a TLS connection to the cluster");
    // Keys on every master: the topology names the TLS ports, and each is reached over TLS.
    let routing = redis.cached_cluster_state().expect("the cluster's routing");
    let masters: std::collections::BTreeSet<String> = routing
        .unique_primary_nodes()
        .iter()
        .map(|server| format!("{}:{}", server.host, server.port))
        .collect();
    assert_eq!(
        masters,
        cluster.tls_seed_nodes().into_iter().collect(),
        "routed to the TLS ports"
    );
    for i in 0..30 {
        let key = format!("tls-check-{i}");
        let _: () = redis.set(&key, i, None, None, false).await.unwrap();
        let back: i64 = redis.get(&key).await.unwrap();
        assert_eq!(back, i);
    }

    // The ingest service on it: a post is warmed into the cache over TLS.
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let extra: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(crate::helpers::FAST_PATH_ONLY.iter().copied())
        // No replicas to WAIT for.
        .chain([("SHARDFEED_CACHE__MIN_REPLICA_ACKS", "0")])
        .collect();
    let app = TestApp::spawn_with(db, &extra).await;
    let author = app.create_user("tls_author", "TLS").await;
    let post = app.create_post(author.user_id, "over TLS").await;
    // The app's own client of the cluster is a TLS one too.
    assert_eq!(app.timeline_ids(author.user_id).await, vec![post.post_id]);

    // Without TLS, or trusting the platform's roots instead of the test CA: no connection.
    let mut plain = settings.redis.clone();
    plain.tls = false;
    plain.tls_ca_file = None;
    let mut unverified = settings.redis.clone();
    unverified.tls_ca_file = None;
    for (what, settings) in [("plain", plain), ("platform roots", unverified)] {
        let refused =
            shardfeed_server::redis::connect_and_wait(&settings, Duration::from_secs(3)).await;
        assert!(refused.is_err(), "{what} connected to the TLS ports");
    }
}
