//! The ingest service over TLS and mutual TLS (`grpc.tls_*`), with certificates made here:
//! the API, health and reflection answer over TLS; plaintext callers, callers without a
//! client certificate where one is required, and certificates of another CA are refused.

use std::time::Duration;

use shardfeed_proto::v1::{user_service_client::UserServiceClient, CreateUserRequest};
use shardfeed_server::auth::Role;
use shardfeed_testkit::{
    endpoint,
    tls::{client_tls, TestCa, TestPki},
    ServingStatus, TestDb,
};
use tonic::transport::ClientTlsConfig;

use crate::helpers::{unique_handle, TestApp};

/// A new connection to `app` through `tls` (plaintext without), and one CreateUser on it,
/// as a service (with a token) or with no token at all: `Err` whether the handshake or the
/// call failed.
async fn create_user_anew(
    app: &TestApp,
    tls: Option<ClientTlsConfig>,
    token: bool,
) -> Result<i64, String> {
    let channel = endpoint(app.addr(), tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut request = tonic::Request::new(CreateUserRequest {
        handle: unique_handle("tls"),
        display_name: "Over TLS".into(),
        request_id: String::new(),
    });
    if token {
        let token = shardfeed_server::auth::mint(
            &app.settings,
            "tls-test",
            Role::Service,
            Duration::from_secs(600),
        )
        .unwrap();
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let response = UserServiceClient::new(channel)
        .create_user(request)
        .await
        .map_err(|s| format!("call: {s:?}"))?;
    Ok(response.into_inner().user.expect("a user").user_id)
}

#[tokio::test]
async fn tls_serves_the_api_health_and_reflection_and_refuses_plaintext() {
    let pki = TestPki::new().unwrap();
    let (cert, key) = (pki.path("server.pem"), pki.path("server-key.pem"));
    let app = TestApp::spawn_tls(
        TestDb::new().await.unwrap(),
        &[
            ("SHARDFEED_GRPC__TLS_CERT_FILE", &cert),
            ("SHARDFEED_GRPC__TLS_KEY_FILE", &key),
        ],
        client_tls(&pki.ca.cert_pem(), None),
    )
    .await;
    app.wait_for_health(ServingStatus::Serving).await;
    let services = shardfeed_testkit::reflection::list_services_v1(app.channel.clone())
        .await
        .unwrap();
    assert!(
        services.iter().any(|s| s == "shardfeed.v1.UserService"),
        "{services:?}"
    );
    let user = app.create_user(&unique_handle("tls"), "Over TLS").await;
    assert_eq!(app.count_users().await, 1);
    assert!(user.user_id > 0);

    // Both fail in the transport, before authentication: they carry a valid token.
    let plaintext = create_user_anew(&app, None, true).await;
    assert!(
        plaintext
            .as_ref()
            .is_err_and(|e| !e.contains("Unauthenticated")),
        "plaintext h2c got through: {plaintext:?}"
    );
    let other = TestCa::new("another CA").unwrap();
    let distrusting = create_user_anew(&app, Some(client_tls(&other.cert_pem(), None)), true).await;
    assert!(
        distrusting
            .as_ref()
            .is_err_and(|e| e.starts_with("connect")),
        "{distrusting:?}"
    );
    // TLS alone identifies nobody: without a token the call is unauthenticated.
    let tokenless = create_user_anew(&app, Some(client_tls(&pki.ca.cert_pem(), None)), false);
    let tokenless = tokenless.await;
    assert!(
        tokenless
            .as_ref()
            .is_err_and(|e| e.contains("Unauthenticated")),
        "{tokenless:?}"
    );
    // Neither refused caller wrote anything.
    assert_eq!(app.count_users().await, 1);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn required_client_certificates_admit_only_the_cas() {
    let pki = TestPki::new().unwrap();
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        pki.path("ca.pem"),
    );
    let bench = pki.ca.client("spiffe://shardfeed/bench").unwrap();
    let app = TestApp::spawn_tls(
        TestDb::new().await.unwrap(),
        &[
            ("SHARDFEED_GRPC__TLS_CERT_FILE", &cert),
            ("SHARDFEED_GRPC__TLS_KEY_FILE", &key),
            ("SHARDFEED_GRPC__TLS_CLIENT_CA_FILE", &ca),
            ("SHARDFEED_GRPC__TLS_CLIENT_AUTH", "required"),
            // A certificate alone is a service caller.
            ("SHARDFEED_AUTH__CLIENT_CERT_ROLE", "service"),
        ],
        client_tls(&pki.ca.cert_pem(), Some(&bench)),
    )
    .await;
    app.wait_for_health(ServingStatus::Serving).await;
    let author = app.create_user(&unique_handle("mtls"), "Mutual").await;
    let post = app.create_post(author.user_id, "signed and sealed").await;
    assert_eq!(post.author_id, author.user_id);

    let loadgen = pki.ca.client("loadgen.shardfeed.internal").unwrap();
    // No token: the certificate's name is the caller, in the service role (CreateUser is for
    // services and admins only).
    let admitted = create_user_anew(
        &app,
        Some(client_tls(&pki.ca.cert_pem(), Some(&loadgen))),
        false,
    );
    let admitted = admitted.await;
    assert!(admitted.is_ok(), "{admitted:?}");

    let anonymous = create_user_anew(&app, Some(client_tls(&pki.ca.cert_pem(), None)), true).await;
    assert!(
        anonymous.is_err(),
        "no certificate got through: {anonymous:?}"
    );
    let stranger = TestCa::new("another CA")
        .unwrap()
        .client("spiffe://shardfeed/bench")
        .unwrap();
    let foreign = create_user_anew(
        &app,
        Some(client_tls(&pki.ca.cert_pem(), Some(&stranger))),
        true,
    );
    let foreign = foreign.await;
    assert!(
        foreign.is_err(),
        "another CA's certificate got through: {foreign:?}"
    );
    let plaintext = create_user_anew(&app, None, true).await;
    assert!(plaintext.is_err(), "{plaintext:?}");
    // The author and the admitted client's user: nothing of the refused callers.
    assert_eq!(app.count_users().await, 2);
    app.shutdown().await.unwrap();
}
