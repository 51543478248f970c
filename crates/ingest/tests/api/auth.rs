//! The authentication layer in front of the real ingest service: every refusal says which
//! check failed, the caller's rate limit answers RESOURCE_EXHAUSTED with a RetryInfo, an
//! oversized message is refused before a handler runs, and the service refuses to start with
//! the built-in development secrets outside development mode.

use std::time::Duration;

use base64::Engine;
use shardfeed_proto::auth::{with_bearer, Bearer};
use shardfeed_proto::v1::{
    graph_service_client::GraphServiceClient, post_service_client::PostServiceClient,
    user_service_client::UserServiceClient, CreatePostRequest, GetUserRequest,
    ListFollowingRequest,
};
use shardfeed_server::auth::{sign_hs256, verify::Audience, Claims, Role};
use shardfeed_testkit::TestDb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{settings, TestApp};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        role: Role::User,
        iss: "shardfeed".into(),
        aud: Audience::One("shardfeed".into()),
        exp: now() + 600,
        nbf: now(),
        iat: now(),
    }
}

async fn get_user_with(app: &TestApp, authorization: Option<&str>, user_id: i64) -> tonic::Status {
    let mut request = tonic::Request::new(GetUserRequest { user_id });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    UserServiceClient::new(app.channel.clone())
        .get_user(request)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_bad_token_is_unauthenticated_and_says_why() {
    let app = TestApp::spawn().await;
    let user = app.create_user("auth_probe", "Probe").await;
    let key = shardfeed_server::config::DEV_JWT_SECRET;
    let good = sign_hs256(&claims(&user.user_id.to_string()), key).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(payload.replace("\"role\":\"user\"", "\"role\":\"admin\"")),
        parts[2]
    );
    let expired = {
        let mut c = claims("1");
        (c.iat, c.nbf, c.exp) = (now() - 7200, now() - 7200, now() - 3600);
        sign_hs256(&c, key).unwrap()
    };
    let wrong_audience = {
        let mut c = claims("1");
        c.aud = Audience::One("billing".into());
        sign_hs256(&c, key).unwrap()
    };
    let forged = sign_hs256(&claims("1"), "a-key-somebody-made-up-of-enough-bytes").unwrap();
    let cases = [
        (None, "missing credentials"),
        (
            Some("Basic YWRhOmh1bnRlcjI=".to_owned()),
            "must be `Bearer <JWT>`",
        ),
        (Some("Bearer not.a.jwt".to_owned()), "malformed token"),
        (
            Some(format!("Bearer {forged}")),
            "signature does not verify",
        ),
        (
            Some(format!("Bearer {tampered}")),
            "signature does not verify",
        ),
        (Some(format!("Bearer {expired}")), "expired"),
        (Some(format!("Bearer {wrong_audience}")), "audience"),
    ];
    for (header, says) in cases {
        let status = get_user_with(&app, header.as_deref(), user.user_id).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{header:?}: {status:?}"
        );
        assert!(
            status.message().contains(says),
            "{header:?}: {}",
            status.message()
        );
        if let Some(header) = &header {
            let token = header.rsplit(' ').next().unwrap();
            assert!(!status.message().contains(token), "the token is echoed");
        }
    }
    // Health stays open: the channel carries no credentials.
    app.wait_for_health(shardfeed_testkit::ServingStatus::Serving)
        .await;
}

#[tokio::test]
async fn a_burst_past_the_rate_limit_is_resource_exhausted_with_retry_info() {
    let db = TestDb::new().await.unwrap();
    let app = TestApp::spawn_with(
        db,
        &[
            ("SHARDFEED_LIMITS__USER_READS__PER_SECOND", "1"),
            ("SHARDFEED_LIMITS__USER_READS__BURST", "5"),
        ],
    )
    .await;
    let user = app.create_user("rate_probe", "Probe").await;
    let mut as_user = UserServiceClient::new(shardfeed_testkit::auth::as_user(
        app.channel.clone(),
        &app.settings,
        user.user_id,
    ));
    let mut answered = 0;
    let mut refused = None;
    for _ in 0..20 {
        match as_user
            .get_user(GetUserRequest {
                user_id: user.user_id,
            })
            .await
        {
            Ok(_) => answered += 1,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("a burst of 20 passes a burst allowance of 5");
    assert!(
        (5..=6).contains(&answered),
        "{answered} answered before the refusal"
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    // Another caller is not held back by this one's bucket, and a service's writes go on.
    let other = app.create_user("rate_other", "Other").await;
    UserServiceClient::new(shardfeed_testkit::auth::as_user(
        app.channel.clone(),
        &app.settings,
        other.user_id,
    ))
    .get_user(GetUserRequest {
        user_id: user.user_id,
    })
    .await
    .expect("another user has a bucket of their own");
    // After the delay the caller is admitted again.
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    as_user
        .get_user(GetUserRequest {
            user_id: user.user_id,
        })
        .await
        .expect("admitted again after the RetryInfo delay");
}

#[tokio::test]
async fn a_five_mib_post_is_refused_before_the_handler_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user("big_body", "Big").await;
    let before = app.count_posts(user.user_id).await;
    let status = PostServiceClient::new(shardfeed_testkit::auth::as_user(
        app.channel.clone(),
        &app.settings,
        user.user_id,
    ))
    .create_post(CreatePostRequest {
        author_id: user.user_id,
        body: "x".repeat(5 << 20),
        request_id: String::new(),
    })
    .await
    .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert_eq!(app.count_posts(user.user_id).await, before);
}

#[tokio::test]
async fn two_hundred_random_page_tokens_are_invalid_argument_and_the_service_still_answers() {
    let app = TestApp::spawn().await;
    let user = app.create_user("token_fuzz", "Fuzz").await;
    let mut graph = app.graph.clone();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for i in 0..200 {
        let len = 1 + (rand::random::<u8>() as usize % 96);
        let bytes: Vec<u8> = (0..len).map(|_| rand::random()).collect();
        // Half base64 of random bytes (what a token looks like), half arbitrary text.
        let page_token = if i % 2 == 0 {
            b64.encode(&bytes)
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let status = graph
            .list_following(ListFollowingRequest {
                user_id: user.user_id,
                page_size: 10,
                page_token: page_token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{page_token:?}: {status:?}"
        );
    }
    graph
        .list_following(ListFollowingRequest {
            user_id: user.user_id,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("the service still answers");
}

#[tokio::test]
async fn outside_development_mode_the_service_refuses_the_built_in_secrets() {
    let db = TestDb::new().await.unwrap();
    let mut s = settings(&db, &[]);
    s.dev_mode = false;
    let err = shardfeed_ingest::Application::build(s.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("paging.token_secret is the built-in development secret"),
        "{err:#}"
    );
    // With secrets of its own it starts, and a token signed with the development key is
    // refused: it is not this deployment's key.
    let own = "this-deployment-jwt-key-of-32-bytes-or-more";
    s.paging.token_secret = "this-deployment-page-token-secret".to_owned().into();
    s.auth.hs256_secret = Some(own.to_owned().into());
    let app = shardfeed_ingest::Application::build(s.clone())
        .await
        .unwrap();
    let server = shardfeed_testkit::InProcessServer::start(app.local_addr(), |stop| {
        app.run_until_stopped(stop)
    })
    .await
    .unwrap();
    let dev_token = sign_hs256(&claims("1"), shardfeed_server::config::DEV_JWT_SECRET).unwrap();
    let status = UserServiceClient::new(with_bearer(
        server.channel.clone(),
        Bearer::new(&dev_token).unwrap(),
    ))
    .get_user(GetUserRequest { user_id: 1 })
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let own_token = sign_hs256(&claims("1"), own).unwrap();
    let status = GraphServiceClient::new(with_bearer(
        server.channel.clone(),
        Bearer::new(&own_token).unwrap(),
    ))
    .list_following(ListFollowingRequest {
        user_id: 1,
        ..Default::default()
    })
    .await
    .unwrap_err();
    // Past authentication, into the handler: the database has no user 1.
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}
