//! What every server has: health, reflection v1 and v1alpha, graceful shutdown.

use shardfeed_proto::v1::{post_service_client::PostServiceClient, GetPostRequest};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

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
async fn rpcs_of_later_milestones_answer_unimplemented() {
    let app = TestApp::spawn().await;
    let s = PostServiceClient::new(app.channel.clone())
        .get_post(GetPostRequest { post_id: 1 })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unimplemented);
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_stops() {
    let app = TestApp::spawn().await;
    app.wait_for_health(ServingStatus::Serving).await;
    let started = std::time::Instant::now();
    app.shutdown().await.expect("clean shutdown");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
