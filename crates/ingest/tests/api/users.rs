//! UserService end to end: the happy path, every bad-input rule, idempotency, and outages.

use std::time::Duration;

use futures::future::join_all;
use shardfeed_proto::v1::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, UpdateUserRequest,
};
use shardfeed_testkit::PgServer;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{assert_field_violation, unique_handle, TestApp};

#[tokio::test]
async fn create_get_update_delete_round_trip() {
    let app = TestApp::spawn().await;
    let mut users = app.users.clone();
    let handle = unique_handle("ada");

    let created = app.create_user(&handle, "Ada Lovelace").await;
    assert!(created.user_id > 0);
    assert_eq!(created.handle, handle);
    assert_eq!(created.display_name, "Ada Lovelace");
    assert!(created.create_time.is_some());

    let got = users
        .get_user(GetUserRequest {
            user_id: created.user_id,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(got, created);

    let updated = users
        .update_user(UpdateUserRequest {
            user_id: created.user_id,
            display_name: "Augusta Ada King".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.display_name, "Augusta Ada King");
    assert_eq!(updated.handle, handle);
    assert_eq!(updated.create_time, created.create_time);

    users
        .delete_user(DeleteUserRequest {
            user_id: created.user_id,
        })
        .await
        .unwrap();
    let gone = users
        .get_user(GetUserRequest {
            user_id: created.user_id,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(app.count_users().await, 0);
}

#[tokio::test]
async fn every_bad_create_is_invalid_argument_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let mut users = app.users.clone();
    let ok_handle = unique_handle("ok");
    let cases: Vec<(&str, String, String, String)> = vec![
        ("handle", "ab".into(), "Name".into(), String::new()),
        ("handle", "x".repeat(31), "Name".into(), String::new()),
        ("handle", String::new(), "Name".into(), String::new()),
        ("handle", "Capital".into(), "Name".into(), String::new()),
        ("handle", "with-dash".into(), "Name".into(), String::new()),
        ("handle", "with space".into(), "Name".into(), String::new()),
        ("handle", "ünïcode".into(), "Name".into(), String::new()),
        (
            "display_name",
            ok_handle.clone(),
            String::new(),
            String::new(),
        ),
        (
            "display_name",
            ok_handle.clone(),
            "   ".into(),
            String::new(),
        ),
        (
            "display_name",
            ok_handle.clone(),
            "é".repeat(65),
            String::new(),
        ),
        (
            "display_name",
            ok_handle.clone(),
            "bell\u{7}".into(),
            String::new(),
        ),
        (
            "request_id",
            ok_handle.clone(),
            "Name".into(),
            "not-a-uuid".into(),
        ),
    ];
    for (field, handle, display_name, request_id) in cases {
        let status = users
            .create_user(CreateUserRequest {
                handle: handle.clone(),
                display_name,
                request_id,
            })
            .await
            .expect_err("bad input must be rejected");
        assert_field_violation(&status, field);
    }
    assert_eq!(app.count_users().await, 0, "a rejected request wrote a row");

    // The limits themselves are accepted.
    app.create_user(&unique_handle("x").chars().take(3).collect::<String>(), "é")
        .await;
    app.create_user(
        &format!("{}{}", unique_handle("y"), "_".repeat(19)),
        &"é".repeat(64),
    )
    .await;
    assert_eq!(app.count_users().await, 2);
}

#[tokio::test]
async fn bad_ids_and_bad_updates_are_invalid_argument() {
    let app = TestApp::spawn().await;
    let mut users = app.users.clone();
    let user = app.create_user(&unique_handle("bob"), "Bob").await;

    for user_id in [0, -1, i64::MIN] {
        let s = users
            .get_user(GetUserRequest { user_id })
            .await
            .unwrap_err();
        assert_field_violation(&s, "user_id");
        let s = users
            .update_user(UpdateUserRequest {
                user_id,
                display_name: "X".into(),
            })
            .await
            .unwrap_err();
        assert_field_violation(&s, "user_id");
        let s = users
            .delete_user(DeleteUserRequest { user_id })
            .await
            .unwrap_err();
        assert_field_violation(&s, "user_id");
    }
    for display_name in [String::new(), " \t ".into(), "n".repeat(65)] {
        let s = users
            .update_user(UpdateUserRequest {
                user_id: user.user_id,
                display_name,
            })
            .await
            .unwrap_err();
        assert_field_violation(&s, "display_name");
    }
    let unchanged = users
        .get_user(GetUserRequest {
            user_id: user.user_id,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(unchanged, user);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let app = TestApp::spawn().await;
    let mut users = app.users.clone();
    let missing = 987_654_321;
    let s = users
        .get_user(GetUserRequest { user_id: missing })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    assert!(s.message().contains("987654321"), "{}", s.message());
    let s = users
        .update_user(UpdateUserRequest {
            user_id: missing,
            display_name: "X".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = users
        .delete_user(DeleteUserRequest { user_id: missing })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
}

#[tokio::test]
async fn taken_handle_is_already_exists() {
    let app = TestApp::spawn().await;
    let handle = unique_handle("dup");
    app.create_user(&handle, "First").await;
    let s = app
        .users
        .clone()
        .create_user(CreateUserRequest {
            handle: handle.clone(),
            display_name: "Second".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists);
    assert!(s.message().contains(&handle));
    assert_eq!(app.count_users().await, 1);
}

#[tokio::test]
async fn a_retry_with_the_same_request_id_returns_the_first_result() {
    let app = TestApp::spawn().await;
    let request = CreateUserRequest {
        handle: unique_handle("idem"),
        display_name: "Idempotent".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let first = app
        .users
        .clone()
        .create_user(request.clone())
        .await
        .unwrap()
        .into_inner();
    // Even after the user changed, a retry returns the first result, not ALREADY_EXISTS.
    let user_id = first.user.as_ref().unwrap().user_id;
    app.users
        .clone()
        .update_user(UpdateUserRequest {
            user_id,
            display_name: "Renamed".into(),
        })
        .await
        .unwrap();
    let retry = app
        .users
        .clone()
        .create_user(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, retry);
    assert_eq!(app.count_users().await, 1);
}

#[tokio::test]
async fn concurrent_retries_create_one_user() {
    let app = TestApp::spawn().await;
    let request = CreateUserRequest {
        handle: unique_handle("race"),
        display_name: "Racer".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let results = join_all((0..8).map(|_| {
        let mut users = app.users.clone();
        let request = request.clone();
        async move {
            users
                .create_user(request)
                .await
                .map(|r| r.into_inner().user.unwrap())
        }
    }))
    .await;
    let users: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every retry succeeds"))
        .collect();
    assert!(users.windows(2).all(|w| w[0] == w[1]), "{users:?}");
    assert_eq!(app.count_users().await, 1);
}

#[tokio::test]
async fn a_request_id_reused_for_a_different_request_is_aborted() {
    let app = TestApp::spawn().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    app.users
        .clone()
        .create_user(CreateUserRequest {
            handle: unique_handle("one"),
            display_name: "One".into(),
            request_id: request_id.clone(),
        })
        .await
        .unwrap();
    let s = app
        .users
        .clone()
        .create_user(CreateUserRequest {
            handle: unique_handle("two"),
            display_name: "Two".into(),
            request_id,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Aborted, "{s:?}");
    assert_eq!(app.count_users().await, 1);
}

#[tokio::test]
async fn postgres_down_is_unavailable_and_not_serving_then_recovers() {
    let pg = PgServer::start().expect("own PostgreSQL");
    let app = TestApp::spawn_on(&pg).await;
    app.wait_for_health(ServingStatus::Serving).await;
    let user = app.create_user(&unique_handle("before"), "Before").await;

    pg.stop().expect("stop PostgreSQL");
    let mut users = app.users.clone();
    let s = users
        .create_user(CreateUserRequest {
            handle: unique_handle("during"),
            display_name: "During".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(s.message().contains("PostgreSQL"));
    let s = users
        .get_user(GetUserRequest {
            user_id: user.user_id,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    let s = users
        .update_user(UpdateUserRequest {
            user_id: user.user_id,
            display_name: "X".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    let s = users
        .delete_user(DeleteUserRequest {
            user_id: user.user_id,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    // The rest of the write path answers the same way.
    let other = user.user_id + 1;
    let s = app
        .posts
        .clone()
        .create_post(shardfeed_proto::v1::CreatePostRequest {
            author_id: user.user_id,
            body: "lost?".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    let s = app
        .graph
        .clone()
        .follow(shardfeed_proto::v1::FollowRequest {
            follower_id: user.user_id,
            followee_id: other,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    app.wait_for_health(ServingStatus::NotServing).await;

    pg.restart().expect("restart PostgreSQL");
    app.wait_for_health(ServingStatus::Serving).await;
    // Nothing was half-written while it was down: only the first user exists, no post, no
    // edge, and the outbox holds nothing but what the first user's creation left.
    assert_eq!(app.count_users().await, 1);
    let sql = app.sql().await;
    for table in ["posts", "follows"] {
        let n: i64 = sql
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
    let got = users
        .get_user(GetUserRequest {
            user_id: user.user_id,
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().user.unwrap().display_name, "Before");
}

#[tokio::test]
async fn a_request_that_outlives_the_server_timeout_is_deadline_exceeded() {
    // The caller's own `grpc-timeout` is covered in shardfeed-server's deadline tests; tonic's
    // client enforces that one itself, so here the server's bound is the shorter one.
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let app = TestApp::spawn_with(db, &[("SHARDFEED_GRPC__REQUEST_TIMEOUT_MS", "300")]).await;
    let user = app.create_user(&unique_handle("slow"), "Slow").await;

    // Hold a lock that GetUser's read must wait for, so the call outlives the deadline.
    let locker = app.sql().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let s = app
        .users
        .clone()
        .get_user(GetUserRequest {
            user_id: user.user_id,
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");

    locker.batch_execute("ROLLBACK").await.unwrap();
    let ok = app
        .users
        .clone()
        .get_user(GetUserRequest {
            user_id: user.user_id,
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}
