//! Integration tests of the aggregator: the real server, in-process on port 0, against the real
//! Redis Cluster and PostgreSQL started by shardfeed-testkit.

use std::time::Duration;

use shardfeed_aggregator::Application;
use shardfeed_server::Settings;

mod expiry;
mod failures;
mod home;
mod hotspot;
mod model;
mod rebuild;
mod timeline;
use shardfeed_testkit::InProcessServer;
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

struct TestApp {
    channel: Channel,
    _server: InProcessServer,
}

async fn spawn(redis_nodes: &str) -> TestApp {
    let stores = shardfeed_testkit::shared();
    let settings = Settings::load_from(
        None,
        [
            ("SHARDFEED_POSTGRES__URL", stores.pg.url("postgres")),
            ("SHARDFEED_REDIS__NODES", redis_nodes.to_string()),
            (
                "SHARDFEED_REDIS__NAMESPACE",
                shardfeed_testkit::unique_namespace(),
            ),
            (
                "SHARDFEED_AGGREGATOR__LISTEN_ADDR",
                "127.0.0.1:0".to_string(),
            ),
            (
                "SHARDFEED_GRPC__HEALTH_PROBE_INTERVAL_MS",
                "100".to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap();
    let app = Application::build(settings)
        .await
        .expect("aggregator builds");
    let server = InProcessServer::start(app.local_addr(), |s| app.run_until_stopped(s))
        .await
        .unwrap();
    TestApp {
        channel: server.channel.clone(),
        _server: server,
    }
}

async fn wait_for_health(channel: &Channel, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: "shardfeed.v1.FeedService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health stayed {status:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serving_while_the_redis_cluster_answers() {
    let nodes = shardfeed_testkit::shared().redis.seed_nodes().join(",");
    let app = spawn(&nodes).await;
    wait_for_health(&app.channel, ServingStatus::Serving).await;
}

#[tokio::test]
async fn not_serving_while_no_redis_node_answers() {
    // A port nothing listens on: the service starts, but must not claim to be ready.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn(&format!("127.0.0.1:{free}")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_health(&app.channel, ServingStatus::NotServing).await;
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let nodes = shardfeed_testkit::shared().redis.seed_nodes().join(",");
    let app = spawn(&nodes).await;
    let v1 = shardfeed_testkit::reflection::list_services_v1(app.channel.clone())
        .await
        .unwrap();
    let v1alpha = shardfeed_testkit::reflection::list_services_v1alpha(app.channel.clone())
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
