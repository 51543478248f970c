//! PostService end to end, and what each write does to the cache.

use std::time::Duration;

use futures::future::join_all;
use shardfeed_proto::v1::{
    CreatePostRequest, DeletePostRequest, DeleteUserRequest, GetPostRequest,
};
use tonic::Code;

use crate::{
    cache::{eventually, Entry},
    helpers::{assert_field_violation, unique_handle, TestApp},
};

/// The post id epoch of migrations/V2: 2020-01-01T00:00:00Z.
const POST_ID_EPOCH_MS: i64 = 1_577_836_800_000;

fn time_ms(post: &shardfeed_proto::v1::Post) -> i64 {
    let t = post.create_time.as_ref().expect("create_time");
    shardfeed_proto::time::to_ms(t)
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
    let answers = join_all((0..8).map(|_| app.send_create_post(request.clone()))).await;
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

    // The edges go in the deleting transaction; the posts are invisible at once and purged in
    // the background.
    let sql = app.sql().await;
    let edges: i64 = sql
        .query_one(
            "SELECT count(*) FROM follows WHERE follower_id = $1 OR followee_id = $1",
            &[&gone.user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(edges, 0);
    let s = app
        .posts
        .clone()
        .get_post(GetPostRequest {
            post_id: post.post_id,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    eventually(
        Duration::from_secs(10),
        "the deleted user's posts are purged",
        || async {
            let posts: i64 = sql
                .query_one(
                    "SELECT count(*) FROM posts WHERE author_id = $1",
                    &[&gone.user_id],
                )
                .await
                .unwrap()
                .get(0);
            posts == 0
        },
    )
    .await;

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
        .apply(&shardfeed_cache::CacheChange::PostCreated {
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
    let replay = shardfeed_cache::CacheChange::PostCreated {
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

/// One group-commit statement with every kind of post in it: each gets the answer it would get
/// alone, and only the posts that should exist do.
#[tokio::test]
async fn a_group_commit_answers_each_post_as_if_it_were_alone() {
    use shardfeed_ingest::domain::{PostBody, RequestId};
    use shardfeed_ingest::store::posts::{create_many, replay, BatchOutcome, NewPost};

    let app = TestApp::spawn().await;
    let alice = app.create_user(&unique_handle("gc_a"), "A").await;
    let bob = app.create_user(&unique_handle("gc_b"), "B").await;
    let pool = shardfeed_server::postgres::pool(&app.settings.postgres).unwrap();
    let new = |author_id: i64, body: &str, key: Option<uuid::Uuid>| NewPost {
        author_id,
        body: PostBody::parse(body).unwrap(),
        request_id: key.map(RequestId),
    };
    // A key already used by a committed post, before the batch.
    let earlier = uuid::Uuid::new_v4();
    let first = replay(&pool, &new(alice.user_id, "earlier", Some(earlier)))
        .await
        .unwrap()
        .value;
    let twice = uuid::Uuid::new_v4();
    let batch = vec![
        new(alice.user_id, "no key", None),
        new(bob.user_id, "with a key", Some(uuid::Uuid::new_v4())),
        new(
            i64::MAX - 7,
            "nobody wrote this",
            Some(uuid::Uuid::new_v4()),
        ),
        new(alice.user_id, "earlier", Some(earlier)),
        new(alice.user_id, "earlier, but changed", Some(earlier)),
        new(bob.user_id, "twice", Some(twice)),
        new(bob.user_id, "twice", Some(twice)),
        new(bob.user_id, "twice, but changed", Some(twice)),
    ];
    let outcomes = create_many(&pool, &batch).await.unwrap();
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            BatchOutcome::Created(_) => "created",
            BatchOutcome::AuthorMissing => "missing",
            BatchOutcome::KeyTaken => "taken",
        })
        .collect();
    assert_eq!(
        kinds,
        ["created", "created", "missing", "taken", "taken", "created", "taken", "taken"]
    );
    let created: Vec<_> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            BatchOutcome::Created(w) => Some(w),
            _ => None,
        })
        .collect();
    let ids: Vec<i64> = created.iter().map(|w| w.value.post_id).collect();
    assert!(
        created.iter().all(|w| w.pending.is_some()),
        "each has an outbox row"
    );
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "distinct ids: {ids:?}"
    );
    assert!(
        ids.iter().all(|&id| id > first.post_id),
        "ids follow creation order"
    );

    // The posts whose key was taken are answered after the commit, as retries.
    let retry = replay(&pool, &batch[3]).await.unwrap();
    assert_eq!(retry.value, first);
    assert!(retry.pending.is_none(), "a retry changes nothing");
    let err = replay(&pool, &batch[4])
        .await
        .err()
        .expect("a changed body");
    assert_eq!(err.code(), Code::Aborted);
    let twice_post = replay(&pool, &batch[6]).await.unwrap().value;
    assert_eq!(twice_post, created[2].value);
    let err = replay(&pool, &batch[7])
        .await
        .err()
        .expect("a changed body");
    assert_eq!(err.code(), Code::Aborted);

    let sql = app.sql().await;
    let count = |query: &'static str| {
        let sql = &sql;
        async move { sql.query_one(query, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM posts").await, 4);
    assert_eq!(
        count("SELECT count(*) FROM idempotency_keys WHERE operation = 'CreatePost'").await,
        3
    );
    assert_eq!(
        count("SELECT count(*) FROM posts WHERE author_id NOT IN (SELECT user_id FROM users)")
            .await,
        0
    );
}

/// Many concurrent creates through the service (so they share statements): every answer is
/// right, every post is written once and reaches the cache.
#[tokio::test]
async fn concurrent_creates_share_commits_and_each_gets_its_own_answer() {
    let app = TestApp::spawn().await;
    let author = app.create_user(&unique_handle("gc_burst"), "Burst").await;
    let shared_key = uuid::Uuid::new_v4().to_string();
    let answers = join_all((0..96).map(|i| {
        let mut posts = app.posts.clone();
        let request = match i % 4 {
            // Unknown author.
            0 => CreatePostRequest {
                author_id: i64::MAX - i,
                body: format!("nobody {i}"),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
            // All retries of one request.
            1 => CreatePostRequest {
                author_id: author.user_id,
                body: "the same one".into(),
                request_id: shared_key.clone(),
            },
            _ => CreatePostRequest {
                author_id: author.user_id,
                body: format!("post {i}"),
                request_id: if i % 4 == 2 {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    String::new()
                },
            },
        };
        async move { (i, posts.create_post(request).await) }
    }))
    .await;
    let mut shared = Vec::new();
    let mut mine = Vec::new();
    for (i, answer) in answers {
        match i % 4 {
            0 => assert_eq!(answer.unwrap_err().code(), Code::NotFound),
            1 => shared.push(answer.unwrap().into_inner().post.unwrap()),
            _ => {
                let post = answer.unwrap().into_inner().post.unwrap();
                assert_eq!(post.body, format!("post {i}"));
                assert_eq!(post.author_id, author.user_id);
                mine.push(post.post_id);
            }
        }
    }
    assert!(shared.windows(2).all(|w| w[0] == w[1]), "{shared:?}");
    mine.push(shared[0].post_id);
    mine.sort_unstable();
    mine.dedup();
    assert_eq!(mine.len(), 49, "48 posts of their own and one shared");

    let mut in_sql: Vec<i64> = app
        .sql()
        .await
        .query("SELECT post_id FROM posts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    in_sql.sort_unstable();
    assert_eq!(in_sql, mine);
    app.settled().await;
    let mut cached = app.timeline_ids(author.user_id).await;
    cached.sort_unstable();
    assert_eq!(cached, mine);
}

/// Keys are remembered for their TTL and purged after it: a retry after that is a new request.
#[tokio::test]
async fn expired_idempotency_keys_are_purged() {
    use shardfeed_ingest::store::idempotency::purge_expired;

    let app = TestApp::spawn().await;
    let author = app.create_user(&unique_handle("ttl"), "Ttl").await;
    let request = |key: &str| CreatePostRequest {
        author_id: author.user_id,
        body: "remembered".into(),
        request_id: key.to_owned(),
    };
    let (old_key, new_key) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let create = |key: &str| app.send_create_post(request(key));
    let old = create(&old_key).await;
    let new = create(&new_key).await;
    let sql = app.sql().await;
    sql.execute(
        "UPDATE idempotency_keys SET create_time = now() - interval '2 days' WHERE request_id = $1",
        &[&uuid::Uuid::parse_str(&old_key).unwrap()],
    )
    .await
    .unwrap();

    let pool = shardfeed_server::postgres::pool(&app.settings.postgres).unwrap();
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(purge_expired(&pool, day, 100).await.unwrap(), 1);
    assert_eq!(purge_expired(&pool, day, 100).await.unwrap(), 0);

    // The remembered key still answers with its post; the purged one is a new request.
    assert_eq!(create(&new_key).await, new);
    assert_ne!(create(&old_key).await.post_id, old.post_id);
}
