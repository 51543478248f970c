//! TLS and mutual TLS of `GrpcServer`, over real connections: the server is built from
//! settings as the services build it, with certificates made here, and called with tonic's
//! client. A one-method service answers who `peer_identity` says the caller is.

use std::time::Duration;

use shardfeed_proto::v1::{
    hotspot_service_client::HotspotServiceClient,
    hotspot_service_server::{HotspotService, HotspotServiceServer},
    GetHotAuthorsRequest, GetHotAuthorsResponse, NodeRequests,
};
use shardfeed_server::{auth::AuthLayer, grpc::GrpcServer, Settings};
use shardfeed_testkit::{
    endpoint,
    tls::{client_tls, TestCa, TestPki, LOCAL_NAMES},
    InProcessServer, ServingStatus,
};
use tonic::{
    transport::{Channel, ClientTlsConfig},
    Request, Response, Status,
};

/// Answers with the caller's identity in `nodes[0].node` ("" when there is none).
struct Whoami;

#[tonic::async_trait]
impl HotspotService for Whoami {
    async fn get_hot_authors(
        &self,
        request: Request<GetHotAuthorsRequest>,
    ) -> Result<Response<GetHotAuthorsResponse>, Status> {
        let identity = shardfeed_server::tls::peer_identity(request.extensions());
        Ok(Response::new(GetHotAuthorsResponse {
            nodes: vec![NodeRequests {
                node: identity.unwrap_or_default(),
                requests: 0,
            }],
            ..Default::default()
        }))
    }
}

/// The PKI of a test, and the settings of a TLS server with `client_auth` that probes its
/// health quickly.
fn pki_env(pki: &TestPki, client_auth: &str) -> Vec<(String, String)> {
    let mut env = pki.grpc_env(client_auth);
    env.push((
        "SHARDFEED_GRPC__HEALTH_PROBE_INTERVAL_MS".into(),
        "50".into(),
    ));
    env
}

fn settings(mut env: Vec<(String, String)>) -> Settings {
    env.push(("SHARDFEED_DEV_MODE".into(), "true".into()));
    Settings::load_from(None, env).expect("the TLS settings load")
}

/// A server with the Whoami service and `settings`, connected through `tls`.
async fn serve(settings: &Settings, tls: Option<ClientTlsConfig>) -> InProcessServer {
    let auth = AuthLayer::from_settings(settings).unwrap();
    let mut server = GrpcServer::bind("127.0.0.1:0".parse().unwrap(), settings.grpc.clone(), auth)
        .await
        .expect("the server binds");
    server.add_service(HotspotServiceServer::new(Whoami));
    let addr = server.local_addr();
    let run = |shutdown| server.run(shutdown);
    match tls {
        Some(tls) => InProcessServer::start_tls(addr, tls, run).await,
        None => InProcessServer::start(addr, run).await,
    }
    .expect("the server starts and answers")
}

/// Who the server says the caller of `channel` is ("" for nobody). The call carries an admin
/// token (HotspotService is for admins): TLS is what is under test here.
async fn whoami(channel: Channel) -> Result<String, Status> {
    let dev = Settings::load_from(None, [("SHARDFEED_DEV_MODE".into(), "true".into())]).unwrap();
    let channel = shardfeed_testkit::auth::as_admin(channel, &dev);
    let response = HotspotServiceClient::new(channel)
        .get_hot_authors(GetHotAuthorsRequest { limit: 0 })
        .await?;
    Ok(response.into_inner().nodes.remove(0).node)
}

/// A new connection to `server` through `tls`, and one call on it: `Err` whether the
/// handshake, the connection or the call failed.
async fn call_anew(
    server: &InProcessServer,
    tls: Option<ClientTlsConfig>,
) -> Result<String, String> {
    let channel = endpoint(server.addr, tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    whoami(channel).await.map_err(|s| format!("call: {s:?}"))
}

#[tokio::test]
async fn tls_serves_the_api_health_and_reflection_and_refuses_plaintext() {
    let pki = TestPki::new().unwrap();
    let settings = settings(pki_env(&pki, "none"));
    let server = serve(&settings, Some(pki.client(None))).await;

    shardfeed_testkit::wait_for_health(
        &server.channel,
        "shardfeed.v1.HotspotService",
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let services = shardfeed_testkit::reflection::list_services_v1(server.channel.clone())
        .await
        .unwrap();
    assert!(
        services.iter().any(|s| s == "shardfeed.v1.HotspotService"),
        "{services:?}"
    );
    // Server-authenticated TLS asks for no client certificate: nobody is identified.
    assert_eq!(whoami(server.channel.clone()).await.unwrap(), "");

    let plaintext = call_anew(&server, None).await;
    assert!(
        plaintext.is_err(),
        "plaintext h2c got through: {plaintext:?}"
    );
    // A client that trusts another CA refuses the server's certificate.
    let other = TestCa::new("another CA").unwrap();
    let distrusting = call_anew(&server, Some(client_tls(&other.cert_pem(), None))).await;
    assert!(distrusting.is_err(), "{distrusting:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn required_client_auth_admits_only_certificates_of_the_ca() {
    let pki = TestPki::new().unwrap();
    let settings = settings(pki_env(&pki, "required"));
    let bench = pki.ca.client("spiffe://shardfeed/bench").unwrap();
    let server = serve(&settings, Some(pki.client(Some(&bench)))).await;

    // The verified certificate's URI name reaches the handler.
    assert_eq!(
        whoami(server.channel.clone()).await.unwrap(),
        "spiffe://shardfeed/bench"
    );
    // A DNS name does too, on a connection of its own.
    let loadgen = pki.ca.client("loadgen.shardfeed.internal").unwrap();
    assert_eq!(
        call_anew(&server, Some(pki.client(Some(&loadgen)))).await,
        Ok("loadgen.shardfeed.internal".to_owned())
    );

    let anonymous = call_anew(&server, Some(pki.client(None))).await;
    assert!(
        anonymous.is_err(),
        "no certificate got through: {anonymous:?}"
    );
    let other = TestCa::new("another CA").unwrap();
    let stranger = other.client("spiffe://shardfeed/bench").unwrap();
    let foreign = call_anew(&server, Some(pki.client(Some(&stranger)))).await;
    assert!(
        foreign.is_err(),
        "another CA's certificate got through: {foreign:?}"
    );
    let plaintext = call_anew(&server, None).await;
    assert!(plaintext.is_err(), "{plaintext:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn optional_client_auth_admits_anonymous_callers_but_not_foreign_certificates() {
    let pki = TestPki::new().unwrap();
    let settings = settings(pki_env(&pki, "optional"));
    let server = serve(&settings, Some(pki.client(None))).await;

    assert_eq!(whoami(server.channel.clone()).await.unwrap(), "");
    let bench = pki.ca.client("spiffe://shardfeed/bench").unwrap();
    assert_eq!(
        call_anew(&server, Some(pki.client(Some(&bench)))).await,
        Ok("spiffe://shardfeed/bench".to_owned())
    );
    let stranger = TestCa::new("another CA")
        .unwrap()
        .client("spiffe://shardfeed/bench")
        .unwrap();
    let foreign = call_anew(&server, Some(pki.client(Some(&stranger)))).await;
    assert!(
        foreign.is_err(),
        "another CA's certificate got through: {foreign:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_tls_settings_the_server_speaks_h2c() {
    let settings = settings(Vec::new());
    assert!(settings.grpc.tls_identity_files().is_none());
    let server = serve(&settings, None).await;
    assert_eq!(whoami(server.channel.clone()).await.unwrap(), "");
    let pki = TestPki::new().unwrap();
    let tls = call_anew(&server, Some(pki.client(None))).await;
    assert!(tls.is_err(), "a TLS client of an h2c server: {tls:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_stops_the_bind() {
    let pki = TestPki::new().unwrap();
    // Another valid key, of another certificate.
    pki.ca
        .server(LOCAL_NAMES)
        .unwrap()
        .write(pki.dir.path(), "other")
        .unwrap();
    let mut env = pki_env(&pki, "none");
    env[1].1 = pki.path("other-key.pem");
    let settings = settings(env);
    let auth = AuthLayer::from_settings(&settings).unwrap();
    let err = GrpcServer::bind("127.0.0.1:0".parse().unwrap(), settings.grpc, auth)
        .await
        .err()
        .expect("a mismatched key is refused");
    let err = format!("{err:#}");
    assert!(
        err.contains("grpc.tls_key_file") && err.contains("other-key.pem"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

#[test]
fn tls_settings_go_together_and_name_the_setting_and_path() {
    let pki = TestPki::new().unwrap();
    let refusal = |pairs: &[(&str, &str)]| {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(None, env).unwrap_err().to_string()
    };
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        pki.path("ca.pem"),
    );

    let err = refusal(&[("SHARDFEED_GRPC__TLS_CERT_FILE", &cert)]);
    assert!(err.contains("grpc.tls_key_file"), "{err}");
    let err = refusal(&[("SHARDFEED_GRPC__TLS_KEY_FILE", &key)]);
    assert!(err.contains("grpc.tls_cert_file"), "{err}");
    let err = refusal(&[
        ("SHARDFEED_GRPC__TLS_CERT_FILE", &cert),
        ("SHARDFEED_GRPC__TLS_KEY_FILE", &key),
        ("SHARDFEED_GRPC__TLS_CLIENT_AUTH", "required"),
    ]);
    assert!(err.contains("grpc.tls_client_ca_file"), "{err}");
    let err = refusal(&[
        ("SHARDFEED_GRPC__TLS_CERT_FILE", &cert),
        ("SHARDFEED_GRPC__TLS_KEY_FILE", &key),
        ("SHARDFEED_GRPC__TLS_CLIENT_CA_FILE", &ca),
    ]);
    assert!(err.contains("grpc.tls_client_auth is none"), "{err}");
    let err = refusal(&[
        ("SHARDFEED_GRPC__TLS_CLIENT_AUTH", "optional"),
        ("SHARDFEED_GRPC__TLS_CLIENT_CA_FILE", &ca),
    ]);
    assert!(err.contains("grpc.tls_cert_file"), "{err}");
    let err = refusal(&[("SHARDFEED_GRPC__TLS_CLIENT_AUTH", "sometimes")]);
    assert!(err.contains("tls_client_auth"), "{err}");

    let missing = pki.path("nothing-here.pem");
    let err = refusal(&[
        ("SHARDFEED_GRPC__TLS_CERT_FILE", &missing),
        ("SHARDFEED_GRPC__TLS_KEY_FILE", &key),
    ]);
    assert!(
        err.contains("grpc.tls_cert_file") && err.contains("nothing-here.pem"),
        "{err}"
    );
    // A key where the certificate belongs, and the reverse: named, and no key material shown.
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let err = refusal(&[
        ("SHARDFEED_GRPC__TLS_CERT_FILE", &key),
        ("SHARDFEED_GRPC__TLS_KEY_FILE", &key),
    ]);
    assert!(
        err.contains("grpc.tls_cert_file") && err.contains("server-key.pem"),
        "{err}"
    );
    let err = refusal(&[
        ("SHARDFEED_GRPC__TLS_CERT_FILE", &cert),
        ("SHARDFEED_GRPC__TLS_KEY_FILE", &cert),
    ]);
    assert!(
        err.contains("grpc.tls_key_file") && err.contains("server.pem"),
        "{err}"
    );
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!err.contains(body), "{err}");

    // Empty paths are unset: plaintext, as by default.
    let s = Settings::load_from(
        None,
        [
            ("SHARDFEED_GRPC__TLS_CERT_FILE".to_owned(), String::new()),
            ("SHARDFEED_GRPC__TLS_KEY_FILE".to_owned(), String::new()),
        ],
    )
    .unwrap();
    assert!(s.grpc.tls_identity_files().is_none());
    let s = settings(pki_env(&pki, "required"));
    assert_eq!(
        s.grpc.tls_client_auth,
        shardfeed_server::tls::ClientAuth::Required
    );
    assert!(s.grpc.tls_client_ca_file().is_some());
}
