//! PostService end to end, and what each write does to the cache.

use futures::future::join_all;
use shardfeed_proto::v1::{
    CreatePostRequest, DeletePostRequest, DeleteUserRequest, GetPostRequest,
};
use tonic::Code;

use crate::{
    cache::Entry,
    helpers::{assert_field_violation, unique_handle, TestApp},
};

/// The post id epoch of migrations/V2: 2020-01-01T00:00:00Z.
const POST_ID_EPOCH_MS: i64 = 1_577_836_800_000;

fn time_ms(post: &shardfeed_proto::v1::Post) -> i64 {
    let t = post.create_time.as_ref().expect("create_time");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn create_get_delete_round_trip_with_the_cache_in_step() {
    let app = TestApp::spawn().await;
    let author = app.create_user(&unique_handle("poster"), "Poster").await;
    let post = app.create_post(author.user_id, "hello, feed").await;
    assert_eq!(post.author_id, author.user_id);
    assert_eq!(post.body, "hello, feed");

    let got = app
        .posts
        .clone()
        .get_post(GetPostRequest {
            post_id: post.post_id,
        })
        .await
        .unwrap()
        .into_inner()
        .post
        .unwrap();
    assert_eq!(got, post);

    app.settled().await;
    // Warmed by the fast path: timeline score is the post time, the body is the wire post.
    assert_eq!(
        app.timeline(author.user_id).await,
        vec![(post.post_id, time_ms(&post))]
    );
    assert_eq!(
        app.entry(author.user_id, post.post_id).await,
        Entry::Body(post.clone())
    );
    let meta = app.meta(author.user_id).await;
    assert_eq!(meta.get("loaded").map(String::as_str), Some("1"));
    assert_eq!(meta.get("newest_ms"), Some(&time_ms(&post).to_string()));
    assert_eq!(meta.get("count").map(String::as_str), Some("1"));

    app.posts
        .clone()
        .delete_post(DeletePostRequest {
            post_id: post.post_id,
        })
        .await
        .unwrap();
    let s = app
        .posts
        .clone()
        .get_post(GetPostRequest {
            post_id: post.post_id,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = app
        .posts
        .clone()
        .delete_post(DeletePostRequest {
            post_id: post.post_id,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "deleting twice");
    app.settled().await;
    assert!(app.timeline(author.user_id).await.is_empty());
    assert_eq!(
        app.entry(author.user_id, post.post_id).await,
        Entry::Tombstone
    );
    assert_eq!(
        app.meta(author.user_id)
            .await
            .get("newest_ms")
            .map(String::as_str),
        Some("0")
    );
}

#[tokio::test]
async fn bad_posts_are_invalid_argument_and_write_nothing() {
    let app = TestApp::spawn().await;
    let author = app.create_user(&unique_handle("rules"), "Rules").await;
    let cases: Vec<(&str, i64, String, String)> = vec![
        ("author_id", 0, "ok".into(), String::new()),
        ("author_id", -5, "ok".into(), String::new()),
        ("body", author.user_id, String::new(), String::new()),
        ("body", author.user_id, " \n\t ".into(), String::new()),
        ("body", author.user_id, "ü".repeat(501), String::new()),
        ("body", author.user_id, "nul\0".into(), String::new()),
        ("request_id", author.user_id, "ok".into(), "nope".into()),
    ];
    for (field, author_id, body, request_id) in cases {
        let s = app
            .posts
            .clone()
            .create_post(CreatePostRequest {
                author_id,
                body,
                request_id,
            })
            .await
            .unwrap_err();
        assert_field_violation(&s, field);
    }
    for post_id in [0, -1] {
        let s = app
            .posts
            .clone()
            .get_post(GetPostRequest { post_id })
            .await
            .unwrap_err();
        assert_field_violation(&s, "post_id");
        let s = app
            .posts
            .clone()
            .delete_post(DeletePostRequest { post_id })
            .await
            .unwrap_err();
        assert_field_violation(&s, "post_id");
    }
    let s = app
        .posts
        .clone()
        .create_post(CreatePostRequest {
            author_id: 987_654_321,
            body: "who am I".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let count: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM posts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    // 500 scalar values is the limit, not over it.
    app.create_post(author.user_id, &"ü".repeat(500)).await;
}

#[tokio::test]
async fn post_ids_are_unique_and_ordered_by_creation_time() {
    let app = TestApp::spawn().await;
    let author = app.create_user(&unique_handle("order"), "Order").await;
    let mut last = 0;
    for i in 0..20 {
        let post = app.create_post(author.user_id, &format!("post {i}")).await;
        assert!(
            post.post_id > last,
            "ids grow: {} after {last}",
            post.post_id
        );
        assert_eq!(
            (post.post_id >> 22) + POST_ID_EPOCH_MS,
            time_ms(&post),
            "the id carries its time"
        );
        last = post.post_id;
    }
    // Concurrent creates never collide.
    let posts = join_all((0..32).map(|i| {
        let mut posts = app.posts.clone();
        async move {
            posts
                .create_post(CreatePostRequest {
                    author_id: author.user_id,
                    body: format!("burst {i}"),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .post
                .unwrap()
                .post_id
        }
    }))
    .await;
    let unique: std::collections::HashSet<_> = posts.iter().collect();
    assert_eq!(unique.len(), posts.len());
}

#[tokio::test]
async fn request_id_makes_create_post_idempotent() {
    let app = TestApp::spawn().await;
    let author = app.create_user(&unique_handle("idem"), "Idem").await;
    let request = CreatePostRequest {
        author_id: author.user_id,
        body: "once".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    // Concurrent duplicates: one post, the same answer for all.
    let answers = join_all((0..8).map(|_| {
        let mut posts = app.posts.clone();
        let request = request.clone();
        async move {
            posts
                .create_post(request)
                .await
                .unwrap()
                .into_inner()
                .post
                .unwrap()
        }
    }))
    .await;
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let retry = app
        .posts
        .clone()
        .create_post(request.clone())
        .await
        .unwrap()
        .into_inner()
        .post
        .unwrap();
    assert_eq!(retry, answers[0]);
    let count: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM posts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    app.settled().await;
    assert_eq!(
        app.timeline_ids(author.user_id).await,
        vec![answers[0].post_id]
    );

    let s = app
        .posts
        .clone()
        .create_post(CreatePostRequest {
            body: "twice?".into(),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(
        s.code(),
        Code::Aborted,
        "same request_id, different body: {s:?}"
    );
}

#[tokio::test]
async fn timelines_are_trimmed_to_the_configured_length() {
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let app = TestApp::spawn_with(db, &[("SHARDFEED_CACHE__TIMELINE_LEN", "5")]).await;
    let author = app.create_user(&unique_handle("trim"), "Trim").await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            app.create_post(author.user_id, &format!("p{i}"))
                .await
                .post_id,
        );
    }
    app.settled().await;
    assert_eq!(app.timeline_ids(author.user_id).await, ids[3..].to_vec());
    for dropped in &ids[..3] {
        assert_eq!(
            app.entry(author.user_id, *dropped).await,
            Entry::Missing,
            "body of a trimmed post"
        );
    }
    assert_eq!(
        app.meta(author.user_id)
            .await
            .get("count")
            .map(String::as_str),
        Some("5")
    );
}

#[tokio::test]
async fn deleting_a_user_removes_their_posts_follows_and_cache() {
    let app = TestApp::spawn().await;
    let gone = app.create_user(&unique_handle("gone"), "Gone").await;
    let fan = app.create_user(&unique_handle("fan"), "Fan").await;
    let idol = app.create_user(&unique_handle("idol"), "Idol").await;
    let post = app.create_post(gone.user_id, "soon gone").await;
    app.follow(fan.user_id, gone.user_id).await;
    app.follow(gone.user_id, idol.user_id).await;

    app.users
        .clone()
        .delete_user(DeleteUserRequest {
            user_id: gone.user_id,
        })
        .await
        .unwrap();

    let sql = app.sql().await;
    let posts: i64 = sql
        .query_one(
            "SELECT count(*) FROM posts WHERE author_id = $1",
            &[&gone.user_id],
        )
        .await
        .unwrap()
        .get(0);
    let edges: i64 = sql
        .query_one(
            "SELECT count(*) FROM follows WHERE follower_id = $1 OR followee_id = $1",
            &[&gone.user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((posts, edges), (0, 0));
    let s = app
        .posts
        .clone()
        .get_post(GetPostRequest {
            post_id: post.post_id,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);

    app.settled().await;
    assert!(!app.key_exists(app.layout.timeline(gone.user_id)).await);
    assert!(!app.key_exists(app.layout.posts(gone.user_id)).await);
    assert!(!app.key_exists(app.layout.following(gone.user_id)).await);
    assert_eq!(
        app.meta(gone.user_id).await.get("gone").map(String::as_str),
        Some("1")
    );

    // A late replay of the create cannot bring the post back.
    let writer = app.writer();
    writer
        .apply(&shardfeed_core::cache::CacheChange::PostCreated {
            author_id: gone.user_id,
            post_id: post.post_id,
            time_ms: time_ms(&post),
            body: post.body.clone(),
        })
        .await
        .unwrap();
    assert!(app.timeline(gone.user_id).await.is_empty());
}

#[tokio::test]
async fn a_replayed_create_never_resurrects_a_deleted_post() {
    let app = TestApp::spawn().await;
    let author = app.create_user(&unique_handle("zombie"), "Zombie").await;
    let post = app.create_post(author.user_id, "delete me").await;
    let keep = app.create_post(author.user_id, "keep me").await;
    app.posts
        .clone()
        .delete_post(DeletePostRequest {
            post_id: post.post_id,
        })
        .await
        .unwrap();
    app.settled().await;
    // The outbox relay (or a second replica) delivers the create again, late.
    let replay = shardfeed_core::cache::CacheChange::PostCreated {
        author_id: author.user_id,
        post_id: post.post_id,
        time_ms: time_ms(&post),
        body: post.body.clone(),
    };
    let writer = app.writer();
    for result in writer.apply_all(&[replay.clone(), replay]).await {
        result.unwrap();
    }
    assert_eq!(app.timeline_ids(author.user_id).await, vec![keep.post_id]);
    assert_eq!(
        app.entry(author.user_id, post.post_id).await,
        Entry::Tombstone
    );
    let s = app
        .posts
        .clone()
        .get_post(GetPostRequest {
            post_id: post.post_id,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
}

#[tokio::test]
async fn nodes_that_lost_their_scripts_are_warmed_all_the_same() {
    use fred::interfaces::LuaInterface;
    let db = shardfeed_testkit::TestDb::new().await.unwrap();
    let app = TestApp::spawn_with(db, crate::helpers::FAST_PATH_ONLY).await;
    let author = app
        .create_user(&unique_handle("noscript"), "NoScript")
        .await;
    // As after a restart or a failover to a node that never ran the scripts.
    let _: () = app.redis.script_flush_cluster(false).await.unwrap();
    let post = app.create_post(author.user_id, "still warm").await;
    assert_eq!(app.timeline_ids(author.user_id).await, vec![post.post_id]);
}
