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
        .redis(&cluster.seed_nodes())
        .setting(QUICK_PROBES.0, QUICK_PROBES.1)
        .start()
        .await;
    h.wait_for_health(ServingStatus::Serving).await;
    for node in cluster.seed_nodes() {
        cluster.kill_node(&node).unwrap();
    }
    h.wait_for_health(ServingStatus::NotServing).await;
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
