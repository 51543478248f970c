//! Integration tests of the aggregator: the real server, in-process on port 0, against the real
//! Redis Cluster and PostgreSQL started by shardfeed-testkit.

use shardfeed_testkit::{RedisCluster, ServingStatus};

mod authz;
mod expiry;
mod failures;
mod harness;
mod home;
mod hotspot;
mod model;
mod rebuild;
mod scrape;
mod timeline;

use harness::Harness;

/// Readiness probes every 100 ms, so that health follows the stores quickly.
const QUICK_PROBES: (&str, &str) = ("SHARDFEED_GRPC__HEALTH_PROBE_INTERVAL_MS", "100");

#[tokio::test]
async fn serving_while_the_redis_cluster_answers() {
    let h = Harness::builder()
        .setting(QUICK_PROBES.0, QUICK_PROBES.1)
        .start()
        .await;
    h.wait_for_health(ServingStatus::Serving).await;
}

#[tokio::test]
async fn not_serving_while_no_redis_node_answers() {
    // A cluster of the test's own, to kill: readiness must first see it answer, then not.
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start_with(3, 0))
        .await
        .unwrap()
        .unwrap();
    let h = Harness::builder()
        .redis(&cluster)
        .setting(QUICK_PROBES.0, QUICK_PROBES.1)
        .start()
        .await;
    h.wait_for_health(ServingStatus::Serving).await;
    for node in cluster.seed_nodes() {
        cluster.kill_node(&node).unwrap();
    }
    h.wait_for_health(ServingStatus::NotServing).await;
}

/// Credentials the cluster refuses: the aggregator (which connects in the background) never
/// reports SERVING, and a client with them fails on the credentials.
#[tokio::test]
async fn never_serving_with_a_redis_password_the_cluster_refuses() {
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let mut env = shardfeed_testkit::shared().redis.settings_env();
    env.extend(
        [
            shardfeed_testkit::auth::DEV_MODE,
            ("SHARDFEED_REDIS__PASSWORD", "not-the-password"),
            ("SHARDFEED_POSTGRES__URL", db.url()),
            ("SHARDFEED_AGGREGATOR__LISTEN_ADDR", "127.0.0.1:0"),
            ("SHARDFEED_AGGREGATOR__METRICS_ADDR", "127.0.0.1:0"),
            QUICK_PROBES,
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let settings = shardfeed_server::Settings::load_from(None, env).unwrap();
    let err = shardfeed_server::redis::connect_and_wait(
        &settings.redis,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(shardfeed_server::redis::is_auth_error(&err), "{err:#}");
    assert!(format!("{err:#}").contains("WRONGPASS"), "{err:#}");

    let app = shardfeed_aggregator::Application::build(settings)
        .await
        .unwrap();
    let server =
        shardfeed_testkit::InProcessServer::start(app.local_addr(), |s| app.run_until_stopped(s))
            .await
            .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        let status = shardfeed_testkit::health(&server.channel, "shardfeed.v1.FeedService")
            .await
            .unwrap();
        assert_ne!(
            status,
            ServingStatus::Serving,
            "SERVING with a refused login"
        );
        last = Some(status);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last, Some(ServingStatus::NotServing));
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let h = Harness::start(800).await;
    let v1 = shardfeed_testkit::reflection::list_services_v1(h.channel.clone())
        .await
        .unwrap();
    let v1alpha = shardfeed_testkit::reflection::list_services_v1alpha(h.channel.clone())
        .await
        .unwrap();
    for listed in [&v1, &v1alpha] {
        for service in [
            "shardfeed.v1.FeedService",
            "shardfeed.v1.HotspotService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                listed.iter().any(|s| s == service),
                "{service} missing from {listed:?}"
            );
        }
        assert!(
            !listed.iter().any(|s| s == "shardfeed.v1.UserService"),
            "aggregator serves no ingest RPC"
        );
    }
}
