//! GraphService end to end: idempotent edges, validation, AIP-158 listing, the cached sets.

use shardfeed_proto::v1::{
    FollowRequest, ListFollowersRequest, ListFollowingRequest, UnfollowRequest,
};
use tonic::Code;

use crate::helpers::{assert_field_violation, unique_handle, TestApp};

type Page = Result<(Vec<i64>, String), tonic::Status>;

/// One page of `ListFollowing` or `ListFollowers`.
async fn list(app: &TestApp, followers: bool, user_id: i64, page_size: i32, token: &str) -> Page {
    let page_token = token.to_string();
    let mut graph = app.graph.clone();
    if followers {
        let r = graph
            .list_followers(ListFollowersRequest {
                user_id,
                page_size,
                page_token,
            })
            .await?
            .into_inner();
        Ok((r.user_ids, r.next_page_token))
    } else {
        let r = graph
            .list_following(ListFollowingRequest {
                user_id,
                page_size,
                page_token,
            })
            .await?
            .into_inner();
        Ok((r.user_ids, r.next_page_token))
    }
}

async fn following(app: &TestApp, user_id: i64, page_size: i32, token: &str) -> Page {
    list(app, false, user_id, page_size, token).await
}

async fn followers(app: &TestApp, user_id: i64, page_size: i32, token: &str) -> Page {
    list(app, true, user_id, page_size, token).await
}

/// Creates `n` users straight in SQL (fast), returning their ids in order.
async fn bulk_users(app: &TestApp, n: i64) -> Vec<i64> {
    let prefix = unique_handle("b");
    app.sql()
        .await
        .query(
            "INSERT INTO users (handle, display_name)
             SELECT $1 || '_' || g, 'bulk' FROM generate_series(1::bigint, $2::bigint) g RETURNING user_id",
            &[&prefix, &n],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn follow_and_unfollow_are_idempotent_and_cached() {
    let app = TestApp::spawn().await;
    let a = app.create_user(&unique_handle("a"), "A").await.user_id;
    let b = app.create_user(&unique_handle("b"), "B").await.user_id;
    let c = app.create_user(&unique_handle("c"), "C").await.user_id;
    app.follow(a, b).await;
    app.follow(a, b).await;
    app.follow(a, c).await;
    assert_eq!(
        following(&app, a, 0, "").await.unwrap(),
        (vec![b, c], String::new())
    );
    assert_eq!(
        followers(&app, b, 0, "").await.unwrap(),
        (vec![a], String::new())
    );

    app.settled().await;
    let cached = app.following_cache(a).await;
    let version_of = |id: i64| {
        cached
            .get(&id.to_string())
            .map(|v| v.parse::<i64>().unwrap())
    };
    assert!(
        version_of(b).unwrap() > 0 && version_of(c).unwrap() > 0,
        "{cached:?}"
    );
    assert_eq!(cached.get("_loaded").map(String::as_str), Some("1"));

    let mut graph = app.graph.clone();
    graph
        .unfollow(UnfollowRequest {
            follower_id: a,
            followee_id: b,
        })
        .await
        .unwrap();
    graph
        .unfollow(UnfollowRequest {
            follower_id: a,
            followee_id: b,
        })
        .await
        .unwrap();
    assert_eq!(following(&app, a, 0, "").await.unwrap().0, vec![c]);
    assert!(followers(&app, b, 0, "").await.unwrap().0.is_empty());
    app.settled().await;
    let cached = app.following_cache(a).await;
    let b_version: i64 = cached[&b.to_string()].parse().unwrap();
    assert!(
        b_version < 0,
        "an unfollow is a negative version: {cached:?}"
    );
    assert!(
        -b_version > version_of(b).unwrap(),
        "and newer than the follow"
    );

    // A late replay of the old follow cannot undo the unfollow.
    app.writer()
        .apply(&shardfeed_cache::CacheChange::Followed {
            follower_id: a,
            followee_id: b,
            version: version_of(b).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(
        app.following_cache(a).await[&b.to_string()],
        b_version.to_string()
    );
}

#[tokio::test]
async fn bad_edges_are_rejected() {
    let app = TestApp::spawn().await;
    let a = app.create_user(&unique_handle("a"), "A").await.user_id;
    let mut graph = app.graph.clone();
    let s = graph
        .follow(FollowRequest {
            follower_id: a,
            followee_id: a,
        })
        .await
        .unwrap_err();
    assert_field_violation(&s, "followee_id");
    let s = graph
        .follow(FollowRequest {
            follower_id: 0,
            followee_id: a,
        })
        .await
        .unwrap_err();
    assert_field_violation(&s, "follower_id");
    let s = graph
        .unfollow(UnfollowRequest {
            follower_id: a,
            followee_id: -2,
        })
        .await
        .unwrap_err();
    assert_field_violation(&s, "followee_id");
    let missing = 987_654_321;
    for (follower_id, followee_id) in [(a, missing), (missing, a)] {
        let s = graph
            .follow(FollowRequest {
                follower_id,
                followee_id,
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
        let s = graph
            .unfollow(UnfollowRequest {
                follower_id,
                followee_id,
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
    }
    let s = following(&app, missing, 0, "").await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let edges: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM follows", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(edges, 0);
}

#[tokio::test]
async fn listings_page_by_aip_158() {
    let app = TestApp::spawn().await;
    let hub = app.create_user(&unique_handle("hub"), "Hub").await.user_id;
    let others = bulk_users(&app, 45).await;
    for id in &others {
        app.follow(hub, *id).await;
    }
    // Default size 20: 20 + 20 + 5, the last token empty.
    let (p1, t1) = following(&app, hub, 0, "").await.unwrap();
    let (p2, t2) = following(&app, hub, 0, &t1).await.unwrap();
    let (p3, t3) = following(&app, hub, 0, &t2).await.unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (20, 20, 5));
    assert!(!t1.is_empty() && !t2.is_empty() && t3.is_empty());
    let walked: Vec<i64> = p1.into_iter().chain(p2).chain(p3).collect();
    assert_eq!(walked, others);
    // An exact multiple ends with an empty token, not an empty extra page.
    let (all, token) = following(&app, hub, 45, "").await.unwrap();
    assert_eq!((all.len(), token.as_str()), (45, ""));

    let s = following(&app, hub, -1, "").await.unwrap_err();
    assert_field_violation(&s, "page_size");
}

#[tokio::test]
async fn page_size_above_1000_is_clamped() {
    let app = TestApp::spawn().await;
    let star = app
        .create_user(&unique_handle("star"), "Star")
        .await
        .user_id;
    let fans = bulk_users(&app, 1005).await;
    app.sql()
        .await
        .execute(
            "INSERT INTO follows (follower_id, followee_id) SELECT unnest($1::bigint[]), $2",
            &[&fans, &star],
        )
        .await
        .unwrap();
    let (page, token) = followers(&app, star, 5000, "").await.unwrap();
    assert_eq!(page.len(), 1000);
    let (rest, last) = followers(&app, star, 5000, &token).await.unwrap();
    assert_eq!((rest.len(), last.as_str()), (5, ""));
}

#[tokio::test]
async fn foreign_garbled_or_tampered_tokens_are_invalid_argument() {
    let app = TestApp::spawn().await;
    let a = app.create_user(&unique_handle("a"), "A").await.user_id;
    let b = app.create_user(&unique_handle("b"), "B").await.user_id;
    let others = bulk_users(&app, 3).await;
    for id in &others {
        app.follow(a, *id).await;
        app.follow(b, *id).await;
    }
    let (_, token) = following(&app, a, 1, "").await.unwrap();
    assert!(!token.is_empty());
    let mut tampered = token.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let truncated = &token[..token.len() - 3];
    for (what, user, bad) in [
        ("another user's token", b, token.as_str()),
        ("garbage", a, "not-a-token"),
        ("truncated", a, truncated),
        ("tampered", a, tampered.as_str()),
    ] {
        let s = following(&app, user, 1, bad).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert_field_violation(&s, "page_token");
    }
    // A ListFollowing token is no good for ListFollowers.
    let s = followers(&app, a, 1, &token).await.unwrap_err();
    assert_field_violation(&s, "page_token");
}

#[tokio::test]
async fn a_user_follows_at_most_the_configured_number_of_users() {
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let app = TestApp::spawn_with(db, &[("SHARDFEED_INGEST__MAX_FOLLOWEES", "3")]).await;
    let reader = app
        .create_user(&unique_handle("many"), "Many")
        .await
        .user_id;
    let authors = bulk_users(&app, 5).await;
    for author in &authors[..3] {
        app.follow(reader, *author).await;
    }
    let outbox = app.outbox_ids_drawn().await;
    let follow = |followee_id| {
        let mut graph = app.graph.clone();
        async move {
            graph
                .follow(FollowRequest {
                    follower_id: reader,
                    followee_id,
                })
                .await
        }
    };
    let s = follow(authors[3]).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(
        s.message().contains("3 users"),
        "the limit is in the message: {s:?}"
    );
    assert_eq!(
        following(&app, reader, 10, "").await.unwrap().0,
        authors[..3]
    );
    assert_eq!(
        app.outbox_ids_drawn().await,
        outbox,
        "a refused follow enqueues nothing"
    );
    // Following someone already followed changes nothing, so it is no violation.
    follow(authors[0]).await.unwrap();
    app.graph
        .clone()
        .unfollow(UnfollowRequest {
            follower_id: reader,
            followee_id: authors[0],
        })
        .await
        .unwrap();
    follow(authors[3]).await.unwrap();
    assert_eq!(
        following(&app, reader, 10, "").await.unwrap().0,
        authors[1..4]
    );
}
